"""Measurements that compare simulated frames with real ones, applied identically to both.

Functions on images, WCSs and catalogs that write no files: robust background sigma, band offsets measured
through the WCS, star FWHM from Gaussian fits to point sources, and the real-versus-simulated comparison.
``stargal.stages.calibration`` writes the results and the figure.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from astropy.wcs import WCS
from scipy.ndimage import maximum_filter
from scipy.optimize import least_squares

from . import sdss
from .config import BANDS, PIXEL_SCALE_ARCSEC
from .normalise import MAD_TO_SIGMA


def robust_sigma(image: np.ndarray, clip: float = 3.0, iterations: int = 5) -> float:
    """MAD_TO_SIGMA * MAD of the sigma-clipped pixels (sources and bleed trails clipped away)."""
    x = np.asarray(image, dtype=np.float64)[::3, ::3].ravel()
    x = x[np.isfinite(x)]
    for _ in range(iterations):
        med = np.median(x)
        sig = MAD_TO_SIGMA * np.median(np.abs(x - med))
        x = x[np.abs(x - med) < clip * sig]
    return float(MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))))


def band_offsets(ref_wcs: WCS, band_wcs: WCS, shape: tuple[int, int], step: int = 64) -> dict:
    """Pixel offset (band - reference) of the same sky position over a grid of the reference frame."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows:step, 0:cols:step]
    ra, dec = ref_wcs.wcs_pix2world(xx.ravel(), yy.ravel(), 0)
    x, y = band_wcs.wcs_world2pix(ra, dec, 0)
    dx, dy = x - xx.ravel(), y - yy.ravel()
    return {
        "dx": float(np.mean(dx)),
        "dy": float(np.mean(dy)),
        "size": float(np.hypot(np.mean(dx), np.mean(dy))),
        "drift": float(max(np.ptp(dx), np.ptp(dy))),
    }


def _gauss2d(params, yy, xx):
    amp, x0, y0, sigma, bkg = params
    return amp * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / sigma**2) + bkg


def fit_fwhm(image: np.ndarray, x: float, y: float, half: int = 7) -> float:
    """FWHM (arcsec) of a circular Gaussian fitted to the pixels around (x, y); NaN if it fails or is cut."""
    ix, iy = int(round(x)), int(round(y))
    rows, cols = image.shape
    if ix - half < 0 or iy - half < 0 or ix + half >= cols or iy + half >= rows:
        return float("nan")
    stamp = np.asarray(image[iy - half : iy + half + 1, ix - half : ix + half + 1], dtype=np.float64)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    p0 = [max(stamp.max(), 1e-6), x - ix, y - iy, 1.2, 0.0]
    try:
        fit = least_squares(
            lambda p: (_gauss2d(p, yy, xx) - stamp).ravel(),
            p0,
            bounds=([0, -3, -3, 0.3, -np.inf], [np.inf, 3, 3, 8, np.inf]),
        )
    except ValueError:
        return float("nan")
    if not fit.success:
        return float("nan")
    return float(2.3548 * fit.x[3] * PIXEL_SCALE_ARCSEC)


def star_fwhm_from_positions(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """FWHM (arcsec, NaN where a fit fails) of the sources at (x, y)."""
    return np.array([fit_fwhm(image, xi, yi) for xi, yi in zip(x, y, strict=True)])


def point_source_fwhm(image: np.ndarray, sigma: float, max_sources: int = 60) -> dict:
    """Stellar FWHM of a frame without a catalog: fit isolated bright peaks; stars form the narrow end.

    Returns the 20th percentile (stars are the most compact sources) and the number of fitted peaks.
    """
    img = np.asarray(image, dtype=np.float32)
    peaks = (img == maximum_filter(img, size=15)) & (img > 20 * sigma)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-img[ys, xs])[:max_sources]
    fw = star_fwhm_from_positions(img, xs[order].astype(float), ys[order].astype(float))
    fw = fw[np.isfinite(fw)]
    if len(fw) == 0:
        return {"fwhm": float("nan"), "n": 0}
    return {"fwhm": float(np.percentile(fw, 20)), "n": int(len(fw))}


# ----------------------------------------------------------------------------------------------------------
# Real sample frames and simulated frames, measured the same way (``stargal.stages.calibration`` writes them)

REAL_FIELDS = (("008162-6-0080", 8162, 6, 80), ("004510-4-0030", 4510, 4, 30))


def measure_frames(frames: dict) -> dict:
    """Per-band statistics of one field's frames (band -> sdss.Frame)."""
    out = {}
    for b, fr in frames.items():
        sigma = robust_sigma(fr.image)
        fw = point_source_fwhm(fr.image, sigma)
        out[b] = {
            "sigma": sigma,
            "fwhm": fw["fwhm"],
            "fwhm_sources": fw["n"],
            "offset": band_offsets(frames["r"].wcs, fr.wcs, fr.image.shape),
            "max": float(np.nanmax(fr.image)),
        }
    return out


@functools.lru_cache(maxsize=2)
def measure_real_sample(sample_dir: str) -> tuple[dict, dict]:
    """Statistics of the real sample fields (cached: reading and fitting them takes seconds), and field 80's frames."""
    real, first = {}, None
    for folder, run, camcol, field in REAL_FIELDS:
        frames = {
            b: sdss.read_frame(Path(sample_dir) / folder / sdss.frame_filename(b, run, camcol, field)) for b in BANDS
        }
        real[folder] = measure_frames(frames)
        first = first or frames
    return real, first


def compare(real: dict, sim: dict) -> dict:
    """Per band: the ranges of background sigma, star FWHM and band offset over the real and the simulated
    fields (``measure_frames`` results keyed by field), and the median sigma ratio."""
    summary = {}
    for b in BANDS:
        rs = [real[k][b]["sigma"] for k in real]
        ss = [sim[k][b]["sigma"] for k in sim]
        rf = [real[k][b]["fwhm"] for k in real]
        sf = [sim[k][b]["fwhm"] for k in sim]
        ro = [real[k][b]["offset"]["size"] for k in real]
        so = [sim[k][b]["offset"]["size"] for k in sim]
        summary[b] = {
            "sigma_real": [min(rs), max(rs)],
            "sigma_simulated": [min(ss), max(ss)],
            "sigma_ratio_median": float(np.median(ss) / np.median(rs)),
            "fwhm_real": [min(rf), max(rf)],
            "fwhm_simulated": [float(np.nanmin(sf)), float(np.nanmax(sf))],
            "offset_real": [min(ro), max(ro)],
            "offset_simulated": [min(so), max(so)],
        }
    return summary
