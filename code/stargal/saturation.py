"""Which sources of an aligned cube have saturated r-band cores (pure: arrays in, arrays out).

Stars brighter than r of about 14 fill the CCD's wells (50,000-55,000 DN); the frames pipeline then either leaves
their core at the saturation level or interpolates over it along the rows, often alternating row by row, and
bleeds the excess along the column. A PSF-weighted flux of such a core is 0.1-3 mag too faint, and the frames
carry no mask to say so (photo's masks are separate fpM files). So the core itself is read, around each source's
pixel, in the r band over the source's local sky level:

- ``flat``: a pixel within CORE_RADIUS reaches SATURATION_FLOOR, under every r frame's saturation level (the
  lowest real level, 50,000 DN less the soft bias and the sky, is 233 nanomaggies at the smallest r calibration
  of the six real sample fields; the flat cores of 1035-6-17 sit at 255-290, the simulator's at 240 or more),
  above the brightest unsaturated star's peak in the catalog-checked 4510-4-30 (215);
- ``hollow``: the source's own pixel is under HOLLOW_RATIO of the brightest pixel within CORE_RADIUS, where the
  interpolation left a trough between bright rims (a star's or a galaxy's light peaks where it is centred);
- ``truncated``: its PSF-weighted flux is under TRUNCATED_RATIO of its flux within APERTURE_RADIUS (the field's
  stars, which the PSF-weighted fluxes are scaled to, give 1): the core lacks light its surroundings have.

- ``masked``: a pixel within CORE_RADIUS holds no data (NaN or inf: stage 01 masks a frame's non-finite pixels, as
  some reductions leave saturated cores) while the core's other pixels reach BRIGHT_FRACTION of SATURATION_FLOOR: a
  core whose brightest pixels are missing has no measured flux.

``hollow`` and ``truncated`` count only for a source bright enough to saturate (``bright``): its flux within
APERTURE_RADIUS, as a star as wide as the field's, would peak at BRIGHT_FRACTION of SATURATION_FLOOR or more (the
interpolation takes the core's light out of that aperture too, so it is a loose bound), and its PSF-weighted flux
at CORE_FRACTION or more (r of about 16.5 or brighter: every saturated core of the real sample reads brighter
than 16.4), so that a faint source beside a bright star, whose aperture holds the star's light, is not flagged. A galaxy that bright (under one per frame) would pass ``truncated`` too: its PSF-weighted
flux is no total flux either. ``bench/saturation.py`` measures the rule on the real sample (4510-4-30's catalog
flags) and on the simulated sky (whose saturated pixels are known).
"""

from __future__ import annotations

import numpy as np

from .detection import gaussian_fluxes

SATURATION_FLOOR = 230.0  # nanomaggies over the sky, r band (module docstring)
CORE_RADIUS = 4.0  # pixels: the saturated cores and the rims their interpolation leaves
APERTURE_RADIUS = 8.0  # pixels: the aperture the PSF-weighted fluxes are scaled to (detection.CORRECTION_RADIUS)
BRIGHT_FRACTION = 0.25
CORE_FRACTION = 0.1
HOLLOW_RATIO = 0.6
TRUNCATED_RATIO = 0.75
_CHUNK = 4096  # sources per step: 17 x 17 stamps of 4096 sources are 5 MB of float32


def saturation_tests(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    level: np.ndarray,
    psf_flux: np.ndarray,
    sigma: float,
    floor: float = SATURATION_FLOOR,
) -> dict[str, np.ndarray]:
    """The tests of the module docstring, each bool [n]: ``flat``, ``hollow``, ``truncated``, ``masked`` and ``bright``.

    ``image``: the r band [rows, cols], nanomaggies over its background (NaN counts as 0); ``x``, ``y``: 0-based
    pixel positions; ``level``: each source's local sky level in ``image``; ``psf_flux``: its PSF-weighted flux,
    scaled to APERTURE_RADIUS on the field's stars; ``sigma``: the stars' Gaussian width, pixels; ``floor``: the
    lowest level saturation can leave a pixel at."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    half = int(APERTURE_RADIUS)
    offsets = np.arange(-half, half + 1)
    d2 = offsets[None, :] ** 2 + offsets[:, None] ** 2
    core, aperture = d2 <= CORE_RADIUS**2, d2 <= APERTURE_RADIUS**2
    image = np.asarray(image, np.float32)
    missing = np.pad(~np.isfinite(image), half)  # no data: NaN reads as 0 below, so remembered here
    padded = np.pad(np.nan_to_num(image), half)
    rows, cols = image.shape
    ix = np.clip(np.floor(x + 0.5).astype(np.int64), 0, cols - 1)
    iy = np.clip(np.floor(y + 0.5).astype(np.int64), 0, rows - 1)
    peak, centre, summed = (np.zeros(n, np.float32) for _ in range(3))
    holed = np.zeros(n, bool)
    for start in range(0, n, _CHUNK):
        part = slice(start, min(start + _CHUNK, n))
        index = (iy[part, None, None] + offsets[:, None] + half, ix[part, None, None] + offsets[None, :] + half)
        holed[part] = (missing[index] & core).any((1, 2))
        stamps = padded[index]
        stamps -= np.asarray(level[part], np.float32)[:, None, None]
        peak[part] = np.where(core, stamps, -np.inf).max((1, 2))
        centre[part] = stamps[:, half, half]
        summed[part] = np.where(aperture, stamps, 0).sum((1, 2), dtype=np.float64)
    peak_of_star = 1.0 / (2 * np.pi * sigma**2)  # a Gaussian star's peak pixel per unit flux
    psf_flux = np.asarray(psf_flux, np.float64)
    with np.errstate(invalid="ignore"):
        return {
            "flat": peak >= floor,
            "hollow": centre < HOLLOW_RATIO * peak,
            "truncated": ~(psf_flux >= TRUNCATED_RATIO * summed),  # NaN flux: no core measured
            "masked": holed & (peak >= BRIGHT_FRACTION * floor),
            "bright": (summed * peak_of_star >= BRIGHT_FRACTION * floor)
            & (psf_flux * peak_of_star >= CORE_FRACTION * floor),
        }


def saturated(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    level: np.ndarray,
    psf_flux: np.ndarray,
    sigma: float,
    floor: float = SATURATION_FLOOR,
) -> np.ndarray:
    """bool [n]: sources whose r-band core is saturated (``saturation_tests``: flat, masked, or bright and hollow or
    truncated); their PSF-weighted flux is a lower limit, not a measurement."""
    t = saturation_tests(image, x, y, level, psf_flux, sigma, floor)
    return t["flat"] | t["masked"] | (t["bright"] & (t["hollow"] | t["truncated"]))


def bright_cores(
    image: np.ndarray, sigma: float, floor: float = SATURATION_FLOOR
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, flux, saturated) [n]: the bright cores of a background-subtracted r image, without a source list.

    Candidates are the groups (8-connected) of pixels at CORE_FRACTION of ``floor`` or more, or without data: an
    interpolated core can peak at a tenth of the level (4510-4-30's five, of r_psfmag 11.8-14.7, peak at 29-156
    nanomaggies), and an unsaturated star peaks there from r of about 16.5. Each group's light-weighted centre, which
    for a hollow core lies in its trough, gets its PSF-weighted flux (``gaussian_fluxes``, ``sigma`` the stars'
    Gaussian width in pixels) and is judged by ``saturated`` over a sky level of 0. A bright star can leave several
    such groups (its core and its bleed trail): each is listed."""
    from scipy import ndimage

    image = np.asarray(image, np.float32)
    candidate = ~(image < CORE_FRACTION * floor)  # NaN compares False: pixels without data kept
    labels, n = ndimage.label(candidate, structure=np.ones((3, 3), bool))
    if not n:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool)
    group = labels[candidate] - 1
    py, px = np.nonzero(candidate)
    value = np.nan_to_num(image[candidate], nan=0.0, posinf=0.0, neginf=0.0).astype(np.float64)
    weight = np.maximum(value, 0.0)
    total = np.bincount(group, weight, minlength=n)
    count = np.bincount(group, minlength=n)
    # a group of pixels without data only (weight 0): its plain mean
    safe = np.where(total > 0, total, 1.0)
    x = np.where(total > 0, np.bincount(group, weight * px, n) / safe, np.bincount(group, px, n) / count)
    y = np.where(total > 0, np.bincount(group, weight * py, n) / safe, np.bincount(group, py, n) / count)
    clean = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    flux = gaussian_fluxes(clean, x, y, sigma)
    flagged = saturated(image, x, y, np.zeros(len(x)), flux, sigma, floor)
    return x, y, flux, flagged
