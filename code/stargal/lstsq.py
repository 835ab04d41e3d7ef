"""Small linear least-squares fits that give the same bits on every processor.

``numpy.linalg.lstsq`` and matrix products run the BLAS/LAPACK kernels OpenBLAS picks for the processor (vector
width, fused multiply-add), so their last bits differ from one machine to another, and with them the PSF maps and
pixel maps fitted with them, the cubes and datasets built on those, and the content digests that should show two
builds are the same. Here the normal equations are summed with numpy's fixed pairwise summation and solved by
Gaussian elimination in Python floats: the same inputs give the same bits anywhere. For the few, well-conditioned
polynomial terms stargal fits (at most 16), the normal equations lose nothing that matters.
"""

from __future__ import annotations

import numpy as np


def least_squares(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Coefficients [k] (or [k, m]) minimising ``|design @ c - target|`` for design [n, k], target [n] (or [n, m]).

    Raises ValueError when the design does not determine them (fewer independent rows than terms)."""
    design = np.asarray(design, np.float64)
    target = np.asarray(target, np.float64)
    columns = [np.ascontiguousarray(design[:, j]) for j in range(design.shape[1])]
    targets = target[:, None] if target.ndim == 1 else target
    gram = [[float(np.sum(a * b)) for b in columns] for a in columns]
    rhs = [[float(np.sum(a * np.ascontiguousarray(t))) for t in targets.T] for a in columns]
    solution = np.array(_solve(gram, rhs), np.float64)
    return solution[:, 0] if target.ndim == 1 else solution


def evaluate(design: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """``design @ coefficients`` (design [n, k], coefficients [k] or [k, m]), term by term in a fixed order."""
    design = np.asarray(design, np.float64)
    coefficients = np.asarray(coefficients, np.float64)
    out = np.zeros((design.shape[0], *coefficients.shape[1:]), np.float64)
    for j in range(design.shape[1]):
        term = design[:, j, None] * coefficients[j] if coefficients.ndim == 2 else design[:, j] * coefficients[j]
        out += term
    return out


def _solve(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    """x with a x = b (a [k, k], b [k, m], Python floats), by Gaussian elimination with partial pivoting."""
    k = len(a)
    a = [row[:] + rhs[:] for row, rhs in zip(a, b, strict=True)]
    scale = max((abs(v) for row in a for v in row[:k]), default=0.0)
    for col in range(k):
        pivot = max(range(col, k), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) <= 1e-13 * scale:
            raise ValueError(f"least squares: {k} terms are not determined by the data (singular normal equations)")
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, k):
            factor = a[r][col] / a[col][col]
            if factor:
                a[r] = [x - factor * y for x, y in zip(a[r], a[col], strict=True)]
    x = [[0.0] * (len(a[0]) - k) for _ in range(k)]
    for r in range(k - 1, -1, -1):
        for m in range(len(x[r])):
            acc = a[r][k + m] - sum(a[r][c] * x[c][m] for c in range(r + 1, k))
            x[r][m] = acc / a[r][r]
    return x
