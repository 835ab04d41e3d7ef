"""Is there a source at a position? A PSF-matched filter's signal-to-noise there, over the bands, and whether
the filter's response peaks there (pure: arrays in, arrays out).

The network was trained on catalogued objects only; at a position with no source (blank sky, a mistyped
coordinate, an object too faint for this frame) its p_star means nothing, yet it is a number between 0 and 1
like any other. predict.py therefore classifies a position a user gives only where the frame shows a source:
the PSF-weighted sums of the pixels around it, divided by the filter's noise and combined over the bands
(``detection_snr``), reach ``MIN_SNR``.

The noise is measured, not modelled: aligned cubes are resampled, so neighbouring pixels' noise is correlated
and the per-pixel scatter underestimates the noise of a weighted sum (by 1.4-1.8 times in u, g, i and z of
real SDSS frames; 1.1 in r, the band the others are resampled onto). Instead the filter is applied at
``CALIBRATION_POSITIONS`` random places of the same cube, and the sigma-clipped median and scatter of its
response there (astropy: the sources among those places clipped away, which matters in crowded fields) are
its zero point and noise. Both run on the cube less its local background (``local_background_subtracted``:
sep's mesh of 16-pixel cells), so that the halo of a bright star is not taken for a source (``bench/halo_presence.py``
measures both on the real sample). Pure noise passes in 0.7 % of places (white noise in five bands, 2026-12-07;
0.6 % in theory).

S/N alone is not enough near a bright star: 6-15 pixels out its own PSF wing passes it, and a position there is
blank sky whose p_star would mean nothing. A source at the position makes the response peak there, so the
response curves down around it: its Laplacian there is negative. A star's profile f(r) falls off convexly beyond
its core, and its Laplacian, f'' + f'/r, is positive wherever f falls as a power of r (and on a Gaussian core
beyond 1.4 sigma). So ``shows_source`` also asks the Laplacian of the response at the position
(``response_curvature``, over CURVATURE_STEP pixels) to be negative. A faint source on a wing passes where its
own curvature outweighs the wing's: not a local maximum of the response nearby, which a faint source beside a
much brighter one does not make (on the real sample, asking for one refused 13 % of the Galactic-plane field's
detected sources of r 20-21, the Laplacian 0.9 %). What it lets through: places on a saturated star's
diffraction spikes and at the rim of its flat core, and places 15-40 pixels out where the wing curves less than
the noise does (``bench/halo_presence.py`` measures it all on the real sample); predict.py refuses those within
64 pixels of a saturated core that neither stand above the star's light nor are detected
(``stargal.predict.in_bright_star_light``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep
from astropy.stats import sigma_clipped_stats

from . import patches

MIN_SNR = 3.5  # the combined S/N a position needs to be classified (predict.py --min-snr): pure noise passes 0.7 %
WINDOW = 9  # pixels: the filter's support, +-2.2 sigma of the widest SDSS seeing
CALIBRATION_POSITIONS = 20_000
GAUSSIAN_R50_TO_SIGMA = 1.0 / np.sqrt(2.0 * np.log(2.0))  # a Gaussian's half-light radius is 1.1774 sigma
_CHUNK = 8192
# pixels: sep's background mesh. Fine enough to follow a bright star's halo 18-40" out (of the blank places there in
# 8162-6-80, 17 % passed on the frame's own background, 4 % on 16-pixel cells: bench/halo_presence.py), coarse
# enough that a faint source barely moves it
BACKGROUND_CELL = 16
DEFAULT_R50_PX = 2.0  # without a PSF map: SDSS's median seeing (1.4") as a half-light radius in pixels
# pixels: the Laplacian's step, about the width of a point source's response. At 1 pixel more blank places on
# wings pass (6-15 pixels from the stars of r < 16 of 4510-4-30: 5.2 %, against 3.8 % at 2); at 3 the step reaches
# further into close neighbours' light (17 of the Galactic-plane field's 7,115 detected sources of r < 20 refused,
# against 7 at 2): bench/halo_presence.py --curvature-step
CURVATURE_STEP = 2


@dataclass(frozen=True)
class FilterNoise:
    """The filter's response on (mostly) blank sky, per band: its median and robust standard deviation."""

    zero: np.ndarray  # float64 [bands]
    sigma: np.ndarray  # float64 [bands]


def local_background_subtracted(data: np.ndarray) -> np.ndarray:
    """float32 [bands, H, W]: each band less sep's BACKGROUND_CELL mesh background (3 x 3 median filtered);
    non-finite pixels are left out of the mesh and stay non-finite."""
    return local_backgrounds(data)[0]


def local_backgrounds(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``local_background_subtracted``'s cube, float64 [bands]: each band's background rms, sep's over the same
    mesh; NaN for a band without data)."""
    out = np.empty(data.shape, np.float32)
    rms = np.full(data.shape[0], np.nan)
    for band, image in enumerate(data):
        bad = ~np.isfinite(image)
        if bad.all():
            out[band] = image
            continue
        # in place in the output's plane: each full-frame temporary cost up to a second of fresh memory in a new
        # process (predict.py), for the same values to the bit
        plane = out[band]
        np.copyto(plane, image)
        plane[bad] = 0.0
        mesh = sep.Background(plane, mask=bad, bw=BACKGROUND_CELL, bh=BACKGROUND_CELL, fw=3, fh=3)
        mesh.subfrom(plane)
        np.copyto(plane, image, where=bad)
        rms[band] = mesh.globalrms
    return out, rms


def matched_response(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, r50: np.ndarray) -> np.ndarray:
    """PSF-weighted sums float64 [n, bands] at pixels (rows, cols) of a cube [bands, H, W]: sum(w * I) /
    sqrt(sum(w^2)) with w a Gaussian of half-light radius ``r50`` [n, bands] (pixels); pixels outside the
    frame or without data count as 0."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    r50 = np.maximum(np.asarray(r50, np.float64), 0.5)
    offsets2 = ((np.arange(WINDOW) - WINDOW // 2) ** 2)[None, :, None]
    out = np.empty((len(rows), data.shape[0]), np.float64)
    for start in range(0, len(rows), _CHUNK):  # bounded memory for any number of positions
        stop = start + _CHUNK
        cut = patches.extract_patches(data, rows[start:stop], cols[start:stop], WINDOW).data  # [m, W, W, bands]
        # the Gaussian is separable, w = g(row) g(column): 9 exponentials per position and band instead of 81
        g = np.exp(-offsets2 / (2.0 * (r50[start:stop, None, :] * GAUSSIAN_R50_TO_SIGMA) ** 2))  # [m, W, bands]
        summed_over_rows = np.einsum("mib,mijb->mjb", g, cut)
        out[start:stop] = np.einsum("mjb,mjb->mb", g, summed_over_rows) / (g**2).sum(axis=1)  # sqrt(sum w^2)
    return out


def filter_noise(data: np.ndarray, r50_at, n: int = CALIBRATION_POSITIONS, seed: int = 0) -> FilterNoise:
    """The filter's zero point and noise per band, from its response at ``n`` random pixels of the cube where
    every band has data; ``r50_at(cols, rows)`` gives the PSF half-light radius there [n, bands]."""
    rng = np.random.default_rng(seed)
    _, rows, cols = data.shape
    r, c = rng.integers(0, rows, n), rng.integers(0, cols, n)
    covered = np.all(np.isfinite(data[:, r, c]), axis=0)
    r, c = r[covered], c[covered]
    if len(r) < 100:
        return FilterNoise(np.zeros(data.shape[0]), np.full(data.shape[0], np.inf))  # nothing to measure: no check
    response = matched_response(data, r, c, r50_at(c, r))
    # sources among the random places: clipped away, or a crowded field's would inflate the noise
    _, zero, sigma = sigma_clipped_stats(response, axis=0, sigma=3.0, maxiters=10, stdfunc="mad_std")
    return FilterNoise(np.asarray(zero, np.float64), np.where(sigma > 0, sigma, np.inf))


def detection_snr(
    data: np.ndarray, rows: np.ndarray, cols: np.ndarray, r50: np.ndarray, noise: FilterNoise
) -> np.ndarray:
    """The bands' combined S/N float64 [n] at pixels (rows, cols): sqrt(sum over bands of max(S/N, 0)^2), the
    chi-square detection statistic of Szalay, Connolly & Szokoly (1999), which sees a source faint in several
    bands; a band without a noise measure (blank or constant) counts as no signal."""
    return combined_snr(band_snr(data, rows, cols, r50, noise))


def band_snr(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, r50: np.ndarray, noise: FilterNoise) -> np.ndarray:
    """float64 [n, bands]: each band's S/N of the matched filter at pixels (rows, cols); 0 where it has no noise
    measure or no data."""
    return np.nan_to_num((matched_response(data, rows, cols, r50) - noise.zero) / noise.sigma, nan=0.0)


def combined_snr(snr: np.ndarray) -> np.ndarray:
    """float64 [n]: ``detection_snr`` of per-band S/N values [n, bands]."""
    return np.sqrt(np.sum(np.clip(snr, 0.0, None) ** 2, axis=1))


def response_curvature(
    data: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    r50: np.ndarray,
    noise: FilterNoise,
    step: int = CURVATURE_STEP,
) -> np.ndarray:
    """The Laplacian float64 [n] of ``detection_snr`` at pixels (rows, cols), from its values ``step`` pixels to
    either side in rows and columns (S/N per square pixel): negative where the response peaks, positive on a
    bright star's wing. The PSF at the position serves the four places beside it too."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    around = [(rows + dr, cols + dc) for dr, dc in ((step, 0), (-step, 0), (0, step), (0, -step))]
    side = sum(detection_snr(data, r, c, r50, noise) for r, c in around)
    return (side - 4.0 * detection_snr(data, rows, cols, r50, noise)) / step**2


def source_refusals(
    data: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    r50: np.ndarray,
    noise: FilterNoise,
    min_snr: float,
    step: int = CURVATURE_STEP,
) -> tuple[np.ndarray, np.ndarray]:
    """bool [n] masks (faint, off_peak) at pixels (rows, cols): ``detection_snr`` below ``min_snr``; reached, but
    the response does not curve down there (``response_curvature`` >= 0), as on a bright star's wing."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    r50 = np.asarray(r50)
    faint = detection_snr(data, rows, cols, r50, noise) < min_snr
    off_peak = np.zeros_like(faint)
    if (passed := np.flatnonzero(~faint)).size:  # only these: most blank places fail the cheaper S/N test
        off_peak[passed] = response_curvature(data, rows[passed], cols[passed], r50[passed], noise, step) >= 0.0
    return faint, off_peak


def shows_source(
    data: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    r50: np.ndarray,
    noise: FilterNoise,
    min_snr: float,
    step: int = CURVATURE_STEP,
) -> np.ndarray:
    """bool [n]: the frame shows a source at pixels (rows, cols): ``detection_snr`` reaches ``min_snr`` and the
    response curves down there (``response_curvature`` < 0), which a bright star's wing does not."""
    faint, off_peak = source_refusals(data, rows, cols, r50, noise, min_snr, step)
    return ~(faint | off_peak)
