"""The stellar locus in the g-r / r-i colour-colour plane, and how far sources lie from it.

Main-sequence stars lie on a tight curve there; galaxies do not. The curve is the published fit of
Jurić et al. (2008, ApJ 673, 864): g-r = 1.39 (1 - exp(-4.9 t^3 - 2.45 t^2 - 1.68 t - 0.050)), t = r-i.
Dust reddens a field's stars along (E(g-r), E(r-i)) = (1.018, 0.587) E(B-V) (Schlafly & Finkbeiner 2011,
R_V = 3.1); ``fit_reddening`` finds the E(B-V) that puts the most of a field's point-like sources (chosen
by size, not by any classifier) on the curve. Pure functions.
"""

from __future__ import annotations

import numpy as np

REDDENING = np.array([3.303 - 2.285, 2.285 - 1.698])  # E(g-r), E(r-i) per unit E(B-V)
LOCUS_TOLERANCE = 0.15  # mag: "on the locus"
FIT_TOLERANCE = 0.10
MAX_EBV = 3.0
# unreddened g-r of the locus's blue branch, where g-r fixes r-i (redder, g-r levels off at 1.39 and no longer does)
BLUE_BRANCH_GR = (0.2, 1.1)


def locus_curve(points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(g-r, r-i) along the unreddened stellar locus, r-i from -0.3 to 1.9."""
    ri = np.linspace(-0.3, 1.9, points)
    gr = 1.39 * (1 - np.exp(-4.9 * ri**3 - 2.45 * ri**2 - 1.68 * ri - 0.050))
    return gr, ri


def locus_distance(gr: np.ndarray, ri: np.ndarray, ebv: float = 0.0, points: int = 2000) -> np.ndarray:
    """Shortest distance (mag) of each (g-r, r-i) from the locus reddened by ``ebv``; NaN for NaN colours."""
    gr, ri = np.asarray(gr, np.float64), np.asarray(ri, np.float64)
    lgr, lri = locus_curve(points)
    lgr, lri = lgr + REDDENING[0] * ebv, lri + REDDENING[1] * ebv
    out = np.full(gr.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(gr) & np.isfinite(ri))
    for start in range(0, len(ok), 1024):  # bounded memory: 1024 x points distances at a time
        idx = ok[start : start + 1024]
        out[idx] = np.hypot(gr[idx, None] - lgr[None], ri[idx, None] - lri[None]).min(1)
    return out


def fit_reddening(gr: np.ndarray, ri: np.ndarray, step: float = 0.01) -> float:
    """The E(B-V) in [0, MAX_EBV] that puts the most sources within FIT_TOLERANCE of the reddened locus
    (the smallest such value on ties); 0 when there are no sources."""
    gr, ri = np.asarray(gr, np.float64), np.asarray(ri, np.float64)
    ok = np.isfinite(gr) & np.isfinite(ri)
    if not ok.any():
        return 0.0
    grid = np.arange(0.0, MAX_EBV + step / 2, step)
    counts = [int((locus_distance(gr[ok], ri[ok], e, points=400) < FIT_TOLERANCE).sum()) for e in grid]
    return float(grid[int(np.argmax(counts))])


def ri_residual(gr: np.ndarray, ri: np.ndarray, ebv: float = 0.0) -> np.ndarray:
    """r-i less the locus's r-i at the same g-r (both dereddened by ``ebv``), for sources on the blue branch
    (BLUE_BRANCH_GR); NaN elsewhere. For a field's stars, its spread is the scatter of their colours about
    the locus: what photometry alone takes from the locus test."""
    gr0 = np.asarray(gr, np.float64) - REDDENING[0] * ebv
    ri0 = np.asarray(ri, np.float64) - REDDENING[1] * ebv
    lgr, lri = locus_curve()  # g-r rises monotonically with r-i along the whole curve
    with np.errstate(invalid="ignore"):
        blue = (gr0 >= BLUE_BRANCH_GR[0]) & (gr0 <= BLUE_BRANCH_GR[1])
    return np.where(blue, ri0 - np.interp(gr0, lgr, lri), np.nan)
