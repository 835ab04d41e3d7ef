"""Cut P x P x bands patches centred on objects out of an aligned cube (pure, vectorised).

Centring convention: pixel ``i`` (0-based) covers coordinates ``[i - 0.5, i + 0.5)``, so an object at
column ``x`` and row ``y`` is centred on pixel ``(floor(y + 0.5), floor(x + 0.5))`` -- the nearest pixel
centre, ties rounded up. The patch spans rows ``row - P//2 .. row + P//2`` (odd ``P``), and likewise
columns; its last axis follows the cube's band order.

Edge policy: a patch that crosses the frame edge is either kept with the outside pixels set to 0
(``pad``; the images are sky-subtracted, so 0 is the background level) and flagged ``edge_padded``,
or its object is dropped (``drop``, see ``inside_frame``). Pixels where a band does not cover the frame
(NaN in the cube), and any +-inf a cube may hold, are also set to 0 and counted per patch (``nan_pixels``,
counting pixel-band values), so no non-finite value ever reaches a training array unflagged.

Only the patch pixels are read, so a memory-mapped cube costs no more than the patches themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import StargalError

EDGE_POLICIES = ("pad", "drop")
_CHUNK = 2048  # objects per gather, to bound the index arrays' memory


@dataclass
class Patches:
    data: np.ndarray  # float32 [n, P, P, bands]
    edge_padded: np.ndarray  # bool [n]: some pixels lie outside the frame and were set to 0
    nan_pixels: np.ndarray  # int32 [n]: pixel-band values that were NaN or +-inf in the cube and set to 0


def check_patch_size(size: int, frame_shape: tuple[int, int] | None = None) -> int:
    """Validate an odd, positive patch size no larger than the frame; return it."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise StargalError(f"--patch-size {size!r}: must be an integer")
    if size < 1 or size % 2 == 0:
        raise StargalError(f"--patch-size {size}: must be a positive odd number (the patch is centred on a pixel)")
    if frame_shape is not None and size > min(frame_shape):
        raise StargalError(f"--patch-size {size}: larger than the frame ({frame_shape[0]} x {frame_shape[1]} pixels)")
    return int(size)


def check_edge_policy(edge: str) -> str:
    """``edge`` if it is one of EDGE_POLICIES, else StargalError."""
    if edge not in EDGE_POLICIES:
        raise StargalError(f"--edge {edge!r}: must be one of {', '.join(EDGE_POLICIES)}")
    return edge


def pixel_centres(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (int64) of the pixels whose centres are nearest to 0-based positions (x, y)."""
    rows = np.floor(np.asarray(y, dtype=np.float64) + 0.5).astype(np.int64)
    cols = np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)
    return rows, cols


def inside_frame(rows: np.ndarray, cols: np.ndarray, size: int, frame_shape: tuple[int, int]) -> np.ndarray:
    """True where the whole ``size`` x ``size`` patch centred on (row, col) lies inside the frame."""
    half = size // 2
    n_rows, n_cols = frame_shape
    rows, cols = np.asarray(rows), np.asarray(cols)
    return (rows - half >= 0) & (rows + half < n_rows) & (cols - half >= 0) & (cols + half < n_cols)


def edge_distance(rows: np.ndarray, cols: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    """Pixels from (row, col) to the nearest frame edge (negative outside): prefers interior copies."""
    n_rows, n_cols = frame_shape
    rows, cols = np.asarray(rows), np.asarray(cols)
    return np.minimum.reduce([rows, cols, n_rows - 1 - rows, n_cols - 1 - cols])


def extract_patches(
    cube: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int, out: np.ndarray | None = None
) -> Patches:
    """Patches ``[n, size, size, bands]`` float32 of ``cube`` (``[bands, H, W]``) centred on (rows, cols).

    Pixels outside the frame and non-finite pixels become 0 (see the module docstring). ``out``, if given, is a
    preallocated float32 array of the right shape (e.g. a slice of a split's array) to fill in place.
    """
    if cube.ndim != 3:
        raise ValueError(f"cube must be [bands, rows, columns], got shape {cube.shape}")
    check_patch_size(size)
    n_bands, n_rows, n_cols = cube.shape
    rows = np.asarray(rows, dtype=np.int64).ravel()
    cols = np.asarray(cols, dtype=np.int64).ravel()
    n = rows.size
    if cols.size != n:
        raise ValueError("rows and cols differ in length")
    if out is None:
        out = np.empty((n, size, size, n_bands), dtype=np.float32)
    elif out.shape != (n, size, size, n_bands) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {(n, size, size, n_bands)}, got {out.dtype} {out.shape}")
    edge_padded = np.zeros(n, dtype=bool)
    nan_pixels = np.zeros(n, dtype=np.int32)
    offsets = np.arange(size, dtype=np.int64) - size // 2
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        rr = rows[start:stop, None, None] + offsets[None, :, None]  # [m, P, 1]
        cc = cols[start:stop, None, None] + offsets[None, None, :]  # [m, 1, P]
        row_ok = (rr >= 0) & (rr < n_rows)
        col_ok = (cc >= 0) & (cc < n_cols)
        inside = row_ok & col_ok  # [m, P, P]
        edge_padded[start:stop] = ~inside.all(axis=(1, 2))
        # Clip so every index is valid, gather by flat index (np.take on 1-D is the fastest gather),
        # then zero what lies outside the frame.
        flat = np.clip(rr, 0, n_rows - 1) * n_cols + np.clip(cc, 0, n_cols - 1)
        outside = ~inside
        block = out[start:stop]
        nans = np.zeros(stop - start, dtype=np.int32)
        for b in range(n_bands):
            values = np.take(cube[b].reshape(-1), flat).astype(np.float32, copy=False)  # only these pixels
            values[outside] = 0.0
            bad = ~np.isfinite(values)  # NaN (no data) and +-inf alike: counted, set to 0
            nans += bad.sum(axis=(1, 2), dtype=np.int32)
            values[bad] = 0.0
            block[..., b] = values
        nan_pixels[start:stop] = nans
    return Patches(out, edge_padded, nan_pixels)
