"""Least squares with the same bits on every processor: agrees with numpy's, and OpenBLAS's kernel choice
(``OPENBLAS_CORETYPE``) does not move its last bit, nor that of the PSF and pixel maps fitted with it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from stargal.lstsq import evaluate, least_squares
from stargal.paths import PROJECT_ROOT


def _problem(n: int = 200, k: int = 4, m: int | None = None, seed: int = 1):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    design = np.stack([np.ones(n), x, y, x**2, x * y, y**2][:k], -1)
    shape = (n,) if m is None else (n, m)
    return design, design @ rng.normal(size=(k,) if m is None else (k, m)) + rng.normal(0, 0.01, shape)


@pytest.mark.parametrize("k, m", [(1, None), (4, None), (6, 2)])
def test_least_squares_agrees_with_numpy(k, m):
    design, target = _problem(k=k, m=m)
    ours = least_squares(design, target)
    theirs = np.linalg.lstsq(design, target, rcond=None)[0]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(evaluate(design, ours), design @ ours, rtol=1e-13, atol=1e-13)


def test_an_undetermined_fit_is_refused():
    design, target = _problem(k=3)
    design[:, 2] = 2 * design[:, 1]  # two terms that the data cannot tell apart
    with pytest.raises(ValueError, match="not determined"):
        least_squares(design, target)


FITS_SCRIPT = """
import numpy as np
from astropy.wcs import WCS
from stargal import align, psf
from stargal.lstsq import least_squares
rng = np.random.default_rng(7)
n = 300
x, y = rng.uniform(0, 2048, n), rng.uniform(0, 1489, n)
r50 = 1.8 + 0.1 * ((x / 2048) ** 2)[:, None] + rng.normal(0, 0.05, (n, 5))
pmap = psf.fit_psf_map(r50, x, y, np.ones(n, bool), (1489, 2048), "ugriz")
w = [WCS(naxis=2) for _ in range(2)]
for k, wcs in enumerate(w):
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [1025.0 + 2.6 * k, 745.0 + 12.6 * k]
    wcs.wcs.crval = [331.7, 26.96]
    wcs.wcs.cd = np.array([[-1.1e-4, 1e-7 * k], [2e-7, 1.1e-4]])
pixel_map = align.measure_map(w[0], w[1], (1489, 2048), max_degree=3, tolerance=0.0)
design = np.polynomial.polynomial.polyvander2d(x / 2048, y / 1489, [3, 3])
print(pmap.coefficients.tobytes().hex(), pixel_map.cx.tobytes().hex(), least_squares(design, r50).tobytes().hex())
"""


def test_fits_have_the_same_bits_whichever_kernels_openblas_picks():
    outputs = set()
    for coretype in (None, "Prescott", "Haswell"):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        if coretype:
            env["OPENBLAS_CORETYPE"] = coretype
        env["PYTHONPATH"] = str(PROJECT_ROOT / "code")
        run = subprocess.run([sys.executable, "-c", FITS_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.add(run.stdout)
    assert len(outputs) == 1
