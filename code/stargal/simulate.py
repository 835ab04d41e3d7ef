"""The simulated SDSS sky, rendered: geometry, observing conditions, objects and their catalog measurements,
and one field's noisy frames. Arrays in, arrays out; no files (``stargal.stages.simulate`` writes them in the
SDSS formats of ``stargal.sim_formats``).

Geometry: fields step along the scan great circle of the real reference field (run 8162 camcol 6 field 80,
whose r-band WCS is the template), consecutive fields overlapping by ~128 rows (scaled with the frame height).
Each field owns the central band of rows of its frame ("cell"); the objects of a cell are drawn from a
generator seeded by (seed, run, camcol, field), placed on the sky, and rendered into every band of every frame
they fall in through that band's own WCS (bands are offset by several pixels, as in real frames). Catalogued
objects are those detected at S/N > 5 and within the real sweeps' magnitude limits. Saturated cores and bleed
trails are interpolated over along rows, as in real frames. As photo does, the catalog's PSF and model fluxes,
and so the star/galaxy type, are measured on the very pixels of the frames (each object on its own frame,
after perfect deblending); objects no rendered frame covers get independent noise draws of the same size.
Physics (profiles, populations, detector effects) lives in ``stargal.sky_models``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from . import sky_models
from .config import (
    BANDS,
    DEFAULT_SEEING,
    FIELD_OVERLAP_ROWS,
    FRAME_SHAPE,
    OBJC_TYPE_GALAXY,
    OBJC_TYPE_STAR,
    PIXEL_SCALE_ARCSEC,
)
from .geometry import east_north, unit_vectors
from .sim_formats import MEASURED_DTYPE, SOFTBIAS

# measured: r-band WCS of the real frame 301/8162/6/80, the template of the simulated geometry
TEMPLATE_FIELD = 80
TEMPLATE_CRVAL = (331.709414401, 26.9626508189)
TEMPLATE_CD = np.array([[-3.01982932672e-05, 0.000105743143543], [0.000105764935177, 3.01923666993e-05]])
TEMPLATE_TAI_R = 4765227539.34  # r-band TAI of the template frame's first row (s)
ROW_SECONDS = 0.026322  # drift-scan row clock (C_OBS, microseconds per row in the header)
# measured on the six real fields: the offset (dx, dy) in pixels of each band relative to r (same sky -> band
# pixel - r pixel) differs from field to field; a field draws each band's offset uniformly within these ranges
# (slightly widened), so the sub-pixel shifts that alignment interpolates over vary as on the real sky
BAND_OFFSETS = {
    "u": ((0.0, 6.0), (4.5, 9.5)),
    "g": ((-1.5, 6.0), (9.0, 13.0)),
    "r": ((0.0, 0.0), (0.0, 0.0)),
    "i": ((-2.5, 3.5), (2.3, 3.8)),
    "z": ((-3.0, 4.5), (6.3, 8.1)),
}
# seconds after the r band that each band's filter row sees the same sky (template TAI differences)
BAND_TAI_OFFSET = {"r": 0.0, "i": 71.64, "u": 143.29, "z": 214.94, "g": 286.59}
# measured: calibration of the template frames (nanomaggies per count)
NMGY = {"u": 0.0148024, "g": 0.00376789, "r": 0.0052619, "i": 0.00655866, "z": 0.0328756}
SATURATION_DN = (50000.0, 55000.0)
DETECTION_SNR = 5.0
# the sweeps list only objects brighter than these PSF magnitudes (u g r i z) in at least one band; measured:
# 99.1 % of the real calibObj-004510-4-star rows pass, the rest within 0.06 mag (tests/test_calibration.py)
SWEEP_PSF_MAG_LIMITS = (22.5, 22.5, 22.5, 22.0, 21.5)
# measured: the real star sweep of run 4510 camcol 4 lists 6.0 entries per field detected in u alone and 6.8 in z
# alone (bench/source_counts.py); photo types them star (point-like noise peaks and unflagged cosmic rays: no light
# in the other bands). Their catalog PSF S/N is 1-6 (photo's peak detection finds fainter ones than this
# simulator's S/N > 5), so they are drawn just above that limit and a third to a half of them are listed
SINGLE_BAND_ENTRIES = {"u": 6.0, "z": 6.8}
SINGLE_BAND_SNR = (5.0, 8.0)
NO_LIGHT_MAG = 99.0  # no flux at all in a band
# E(B-V) x sin|b|: the cosecant law of the dust layer (about 0.02 at the poles, ~0.1 at b = 23 deg)
REDDENING_PER_CSC_B = 0.025
LOW_LATITUDE_FRACTION = 0.07  # fields within 10 deg of the Galactic plane
# the smooth sky-subtraction residual's amplitude per band, in units of the background sigma (drawn uniformly);
# the 64-pixel background mesh of real frames varies by 0.03-0.7 sigma, but most of that is sources' light
SKY_RESIDUAL_SIGMA = (0.015, 0.175)
# the PSF aureole is rendered down to this fraction of the background sigma (objects to 0.15)
AUREOLE_THRESHOLD_SIGMA = 0.02
# seeing "survey" (config.SEEING_DRAWS): SDSS's r-band PSF width has quartiles 1.30 / 1.43 / 1.58" (DR1; taken
# as the catalog's PSF_FWHM measure); drawn log-normal about its median, widened (0.2 against its 0.145) so
# that the sample's good-seeing fields stay represented, clipped to 0.95-2.4"
SURVEY_PSF_FWHM_MEDIAN = 1.43
SURVEY_SEEING_LOG_SIGMA = 0.2
SURVEY_PSF_FWHM_RANGE = (0.95, 2.4)


# ----------------------------------------------------------------------------------------------------------
# Geometry


def _rng(seed: int, run: int, camcol: int, field: int, stream: int) -> np.random.Generator:
    """The generator of one field's stream: independent of which other fields are simulated.

    Field -1 (the neighbour of field 0) maps to a distinct non-negative key, as seed sequences need.
    """
    key = field if field >= 0 else 1_000_000 - field
    return np.random.default_rng([seed, run, camcol, key, stream])


def overlap_rows(shape: tuple[int, int]) -> int:
    """Rows two consecutive fields share: ~128 for a full frame, scaled with the frame height."""
    return max(4, round(FIELD_OVERLAP_ROWS * shape[0] / FRAME_SHAPE[0]))


def field_step_rows(shape: tuple[int, int]) -> int:
    """Rows from one field's first row to the next field's."""
    return shape[0] - overlap_rows(shape)


def _crpix(shape: tuple[int, int]) -> tuple[float, float]:
    """1-based reference pixel at the frame centre (1025, 745 for a full frame, as in real frames)."""
    return shape[1] / 2 + 1, (shape[0] + 1) / 2


def r_band_geometry(field: int, shape: tuple[int, int]) -> tuple[tuple[float, float], np.ndarray]:
    """(CRVAL, CD) of a field's r frame: the template moved along the scan great circle by whole field steps."""
    p0 = unit_vectors(*TEMPLATE_CRVAL)
    e0, n0 = east_north(p0)
    t0 = TEMPLATE_CD[0, 1] * e0 + TEMPLATE_CD[1, 1] * n0  # rows run along the scan
    t0 /= np.sqrt(np.sum(t0 * t0))  # sums and products, not BLAS: the same bits on every processor
    row_deg = float(np.hypot(TEMPLATE_CD[0, 1], TEMPLATE_CD[1, 1]))  # the template's own row length
    s = np.radians((field - TEMPLATE_FIELD) * field_step_rows(shape) * row_deg)
    p = np.cos(s) * p0 + np.sin(s) * t0
    t = -np.sin(s) * p0 + np.cos(s) * t0
    e, n = east_north(p)
    delta = np.arctan2(np.sum(t * n), np.sum(t * e)) - np.arctan2(np.sum(t0 * n0), np.sum(t0 * e0))
    rot = np.array([[np.cos(delta), -np.sin(delta)], [np.sin(delta), np.cos(delta)]])
    ra = np.degrees(np.arctan2(p[1], p[0])) % 360
    dec = np.degrees(np.arcsin(p[2]))
    return (float(ra), float(dec)), sky_models.mat2(rot, TEMPLATE_CD)


def make_wcs(crval, cd, crpix) -> WCS:
    """A TAN WCS with the given reference point, CD matrix and (1-based) reference pixel."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crpix = list(crpix)
    w.wcs.crval = list(crval)
    w.wcs.cd = np.asarray(cd)
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    return w


@dataclass(frozen=True)
class FieldConditions:
    """Observing conditions, sky and calibration of one simulated field (drawn from the field's own seed)."""

    seeing: dict  # band -> PSF core FWHM at the frame centre, arcsec
    wing: dict  # band -> share of the PSF's light in its power-law wings
    psf_variation: dict  # band -> (a, c, d): FWHM x (1 + a x' + c (x'^2 - 1/3) + d y'), x', y' in [-1, 1]
    sigma: dict  # background sigma per band, nanomaggies
    nmgy: dict
    saturation: dict  # saturation level per band, nanomaggies above sky
    offsets: dict  # band -> (dx, dy) relative to r, pixels
    distortion: dict  # band -> 2x2 matrix (I + E) mapping r pixel offsets to band pixel offsets
    latitude: float  # |Galactic latitude| the field stands for, degrees: sets star density and dust
    ebv: float  # E(B-V) reddening every object behind it
    sky_residual: dict  # band -> amplitude (in units of sigma) of the smooth sky-subtraction residual
    aureole: dict  # band -> share of a star's flux per e-fold of radius in the PSF's r^-2 aureole


def draw_seeing_r(rng: np.random.Generator, seeing: str) -> float:
    """A field's r-band PSF core FWHM (arcsec), drawn as ``seeing`` ("sample" or "survey") says."""
    if seeing == "sample":
        # measured on the six real fields: r-band core FWHM 0.95-1.4" (stellar r50 1.55-2.2 px); drawn
        # 0.81-1.66", most fields near 1.1"
        return float(0.81 + 0.855 * rng.beta(2.0, 3.5))
    if seeing == "survey":
        catalog_fwhm = SURVEY_PSF_FWHM_MEDIAN * np.exp(rng.normal(0.0, SURVEY_SEEING_LOG_SIGMA))
        return float(np.clip(catalog_fwhm, *SURVEY_PSF_FWHM_RANGE) / sky_models.CATALOG_FWHM_FACTOR)
    raise ValueError(f"seeing {seeing!r}: one of sample, survey")


def field_seeing_draw(seeing: str, field: int) -> str:
    """The draw one field's seeing comes from: ``seeing`` itself, or for "mixed" "survey" on odd fields and
    "sample" on even ones (half the fields each way, interleaved so that every split gets both; each field is
    then the same as in the sky drawn wholly its way)."""
    if seeing != "mixed":
        return seeing
    return "survey" if field % 2 else "sample"


def field_conditions(seed: int, run: int, camcol: int, field: int, seeing: str = DEFAULT_SEEING) -> FieldConditions:
    """The seeing, noise, calibration, saturation and band offsets of one field (its own seed; ``seeing``: how
    its seeing is drawn, one of ``SEEING_DRAWS``)."""
    rng = _rng(seed, run, camcol, field, 1)
    seeing_r = draw_seeing_r(rng, field_seeing_draw(seeing, field))
    # most SDSS fields lie far from the Galactic plane; a few cross it (crowded, reddened)
    low = rng.random() < LOW_LATITUDE_FRACTION
    sin_b = (
        rng.uniform(np.sin(np.radians(1.0)), np.sin(np.radians(10.0)))
        if low
        else rng.uniform(np.sin(np.radians(10.0)), 1.0)
    )
    latitude = float(np.degrees(np.arcsin(sin_b)))
    ebv = float(min(REDDENING_PER_CSC_B / sin_b * rng.uniform(0.6, 1.4), 3.0))
    seeing, wing, variation, sigma, nmgy, sat, offsets, dist, residual = ({} for _ in range(9))
    for b in BANDS:
        factor = 1.0 if b == "r" else sky_models.PSF_BAND_FACTOR[b] * (1 + rng.normal(0, sky_models.PSF_BAND_SCATTER))
        seeing[b] = float(seeing_r * np.clip(factor, 0.85, 1.5))
        wing[b] = float(rng.uniform(*sky_models.PSF_WING_FRACTION))
        # measured: stars' sizes change by up to +-7 % from the frame's centre to its edges
        variation[b] = tuple(float(v) for v in (rng.normal(0, 0.035), rng.normal(0, 0.03), rng.normal(0, 0.02)))
        lo, hi = sky_models.BACKGROUND_SIGMA[b]
        sigma[b] = float(rng.uniform(lo, hi))
        nmgy[b] = float(NMGY[b] * (1 + rng.normal(0, 0.01)))
        sky_dn = sigma[b] ** 2 * sky_models.GAIN[b] / nmgy[b] ** 2  # Poisson sky: var_DN = sky_DN / gain
        sat[b] = float((rng.uniform(*SATURATION_DN) - sky_dn - SOFTBIAS) * nmgy[b])
        # half the amplitude first drawn (0.03-0.35 sigma): at that, the field's own pixels move faint objects'
        # fluxes and types as much as real frames' do (bench/inject_real.py --label-shift, bench/residual_shift.py)
        residual[b] = float(rng.uniform(*SKY_RESIDUAL_SIGMA))
        if b == "r":
            offsets[b] = (0.0, 0.0)
            dist[b] = np.eye(2)
        else:
            (x_lo, x_hi), (y_lo, y_hi) = BAND_OFFSETS[b]
            offsets[b] = (float(rng.uniform(x_lo, x_hi)), float(rng.uniform(y_lo, y_hi)))
            # a tiny rotation and scale difference: offsets drift by a few tenths of a pixel across the frame
            a, s = rng.uniform(-4.5e-4, 4.5e-4), rng.uniform(-2.5e-4, 2.5e-4)
            dist[b] = np.array([[1 + s, -a], [a, 1 + s]])
    # its own stream, so that every draw above stays as it was before the aureole
    aureole_scale = _rng(seed, run, camcol, field, 3).uniform(*sky_models.AUREOLE_FIELD_SCALE)
    aureole = {b: float(sky_models.AUREOLE_PER_EFOLD[b] * aureole_scale) for b in BANDS}
    return FieldConditions(seeing, wing, variation, sigma, nmgy, sat, offsets, dist, latitude, ebv, residual, aureole)


def psf_at(cond: FieldConditions, band: str, x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> sky_models.PSF:
    """The band's PSF at 0-based frame positions (x, y): its core FWHM varies smoothly across the frame."""
    a, c, d = cond.psf_variation[band]
    xn = np.clip((np.asarray(x, np.float64) - (shape[1] - 1) / 2) / (shape[1] / 2), -1.2, 1.2)
    yn = np.clip((np.asarray(y, np.float64) - (shape[0] - 1) / 2) / (shape[0] / 2), -1.2, 1.2)
    scale = np.clip(1 + a * xn + c * (xn**2 - 1 / 3) + d * yn, 0.8, 1.25)
    return sky_models.PSF(cond.seeing[band] / PIXEL_SCALE_ARCSEC * scale, cond.wing[band])


def band_wcs(field: int, band: str, shape: tuple[int, int], cond: FieldConditions) -> WCS:
    """WCS of a band's frame: band pixel = c + (I+E) (r pixel - c + offset), written with CRPIX at the centre."""
    crval, cd = r_band_geometry(field, shape)
    crpix = _crpix(shape)
    w_r = make_wcs(crval, cd, crpix)
    if band == "r":
        return w_r
    m = cond.distortion[band]
    dx, dy = cond.offsets[band]
    ra, dec = w_r.wcs_pix2world([[crpix[0] - dx, crpix[1] - dy]], 1)[0]
    return make_wcs((float(ra), float(dec)), sky_models.mat2(cd, sky_models.inv2(m)), crpix)


def frame_tai(field: int, band: str, shape: tuple[int, int]) -> float:
    """TAI (seconds since 1858-11-17) at which a band's frame of ``field`` reads its first row: the drift scan
    reaches each field a whole number of field steps after the template, each filter row a fixed time apart."""
    return TEMPLATE_TAI_R + (field - TEMPLATE_FIELD) * field_step_rows(shape) * ROW_SECONDS + BAND_TAI_OFFSET[band]


# ----------------------------------------------------------------------------------------------------------
# Objects of one field's cell


def _cell_population(
    seed: int, run: int, camcol: int, field: int, shape: tuple[int, int], seeing: str = DEFAULT_SEEING
) -> np.ndarray:
    """True objects owned by a field: population draws at positions in the field's r-frame pixel grid."""
    rng = _rng(seed, run, camcol, field, 0)
    rows, cols = shape
    step = field_step_rows(shape)
    margin = 20
    area_frac = step * (cols + 2 * margin) / ((FRAME_SHAPE[0] - FIELD_OVERLAP_ROWS) * FRAME_SHAPE[1])
    cond = field_conditions(seed, run, camcol, field, seeing)
    expected_stars, expected_galaxies = expected_object_counts(cond.latitude, area_frac)
    n_star = rng.poisson(expected_stars)
    n_gal = rng.poisson(expected_galaxies)
    pop = np.concatenate([sky_models.draw_stars(rng, n_star), sky_models.draw_galaxies(rng, n_gal)])
    pop["mag"] += cond.ebv * np.array([sky_models.EXTINCTION_R[b] for b in BANDS])
    pop = np.concatenate([pop, single_band_entries(rng, cond, area_frac)])
    pop = pop[rng.permutation(len(pop))]
    n = len(pop)
    y0 = overlap_rows(shape) / 2 - 0.5
    pop["x"] = rng.uniform(-margin - 0.5, cols - 0.5 + margin, n)
    pop["y"] = rng.uniform(y0, y0 + step, n)
    # close pairs: some objects sit 0.8-4" from another one, so blends occur beyond chance alignments
    pair = np.flatnonzero(rng.random(n) < 0.06)
    if n > 1 and len(pair):
        host = rng.integers(0, n, len(pair))
        sep = rng.uniform(0.8, 4.0, len(pair)) / PIXEL_SCALE_ARCSEC
        ang = rng.uniform(0, 2 * np.pi, len(pair))
        pop["x"][pair] = pop["x"][host] + sep * np.cos(ang)
        pop["y"][pair] = np.clip(pop["y"][host] + sep * np.sin(ang), y0, y0 + step - 1e-6)
    return pop


def single_band_entries(rng: np.random.Generator, cond: FieldConditions, area_frac: float) -> np.ndarray:
    """Point sources with light in one band only, near photo's detection limit there: the noise peaks and
    unflagged cosmic rays photo detects in a single band and types star (SINGLE_BAND_ENTRIES per field)."""
    parts = []
    for band, per_field in SINGLE_BAND_ENTRIES.items():
        n = rng.poisson(per_field * area_frac)
        entries = sky_models.draw_stars(rng, n)
        # PSF-flux error of a Gaussian PSF of the band's FWHM: sigma x sqrt(4 pi) x PSF sigma
        fwhm_px = cond.seeing[band] / PIXEL_SCALE_ARCSEC
        error = cond.sigma[band] * np.sqrt(4 * np.pi) * fwhm_px / (2 * np.sqrt(2 * np.log(2)))
        flux = rng.uniform(*SINGLE_BAND_SNR, n) * error
        entries["mag"] = NO_LIGHT_MAG
        entries["mag"][:, BANDS.index(band)] = 22.5 - 2.5 * np.log10(flux)
        parts.append(entries)
    return np.concatenate(parts)


def expected_object_counts(latitude: float, area_frac: float) -> tuple[float, float]:
    """Expected stars and galaxies (to r = 22.5) on ``area_frac`` of a field's own area at |b| = ``latitude``
    (degrees): stars follow csc|b| up to the Galactic plane's crowding."""
    crowding = min(1 / np.sin(np.radians(latitude)), sky_models.MAX_STAR_DENSITY)
    return (
        crowding * area_frac * sky_models.expected_count(limit=22.5, **_counts(sky_models.STAR_COUNTS)),
        area_frac * sky_models.expected_count(limit=22.5, **_counts(sky_models.GALAXY_COUNTS)),
    )


def _counts(spec: dict) -> dict:
    return {"total_bright": spec["per_field"], "edges": spec["edges"], "slopes": spec["slopes"]}


@dataclass(frozen=True)
class CellTruth:
    """A field's own objects: sky positions, true PSF and model fluxes [n, 5], their errors, catalog PSF_FWHM,
    and independent noise draws for objects that no rendered frame measures."""

    field: int
    pop: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    psf_true: np.ndarray
    model_true: np.ndarray
    psf_err: np.ndarray
    model_err: np.ndarray
    psf_fwhm: np.ndarray
    psf_unmeasured: np.ndarray
    model_unmeasured: np.ndarray


@dataclass
class Cell:
    """A field's own objects with sky positions and their catalog measurements."""

    field: int
    pop: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    catalogued: np.ndarray  # bool: detected, inside the camcol's columns
    ids: np.ndarray  # catalog ID (1-based) or -1
    objc_type: np.ndarray
    psfflux: np.ndarray  # [n, 5] measured
    psfflux_ivar: np.ndarray
    modelflux: np.ndarray
    modelflux_ivar: np.ndarray
    psf_fwhm: np.ndarray  # [n, 5]


@functools.lru_cache(maxsize=8)
def cell_truth(
    seed: int, run: int, camcol: int, field: int, shape: tuple[int, int], seeing: str = DEFAULT_SEEING
) -> CellTruth:
    """The true objects a field owns, their sky positions and true fluxes (cached: every frame that
    shows them asks)."""
    pop = _cell_population(seed, run, camcol, field, shape, seeing)
    cond = field_conditions(seed, run, camcol, field, seeing)
    crval, cd = r_band_geometry(field, shape)
    w_r = make_wcs(crval, cd, _crpix(shape))
    ra, dec = w_r.wcs_pix2world(pop["x"], pop["y"], 0)
    sky_to_pix = sky_models.inv2(cd * 3600.0)
    rng = _rng(seed, run, camcol, field, 2)
    n = len(pop)
    psf_true, model_true, psf_err, model_err, fwhm = (np.zeros((n, 5)) for _ in range(5))
    for bi, b in enumerate(BANDS):
        flux = 10 ** (-0.4 * (pop["mag"][:, bi] - 22.5))
        psf = psf_at(cond, b, pop["x"], pop["y"], shape)
        ratio, area_psf, area_model = sky_models.psf_flux_ratio(pop, b, psf, sky_to_pix)
        psf_true[:, bi] = flux * ratio
        model_true[:, bi] = flux
        poisson = np.clip(flux, 0, None) * cond.nmgy[b] / sky_models.GAIN[b]
        psf_err[:, bi] = np.sqrt(cond.sigma[b] ** 2 * area_psf + poisson)
        model_err[:, bi] = np.sqrt(cond.sigma[b] ** 2 * area_model + poisson)
        # photo's PSF_FWHM, arcsec: a little wider than the core, as its model includes the wings
        cat_fwhm = psf.fwhm_px * PIXEL_SCALE_ARCSEC * sky_models.CATALOG_FWHM_FACTOR
        fwhm[:, bi] = cat_fwhm * (1 + rng.normal(0, 0.01, n))
    # psf and model fluxes are measured on the same pixels: strongly correlated errors
    common = rng.standard_normal((n, 5))
    own_p, own_m = rng.standard_normal((n, 5)), rng.standard_normal((n, 5))
    psf_unmeasured = psf_true + psf_err * (0.9 * common + 0.436 * own_p)
    model_unmeasured = model_true + model_err * (0.9 * common + 0.436 * own_m)
    return CellTruth(
        field, pop, ra, dec, psf_true, model_true, psf_err, model_err, fwhm, psf_unmeasured, model_unmeasured
    )


def make_cell(
    seed: int,
    run: int,
    camcol: int,
    field: int,
    shape: tuple[int, int],
    measured: tuple[np.ndarray, np.ndarray] | None = None,
    seeing: str = DEFAULT_SEEING,
) -> Cell:
    """A cell's catalog: ``measured`` (PSF, model) fluxes [n, 5] from the rendered frames (NaN: not measured)
    take precedence; objects or bands no frame measured use independent noise draws."""
    t = cell_truth(seed, run, camcol, field, shape, seeing)
    psfflux, modelflux = t.psf_unmeasured, t.model_unmeasured
    if measured is not None:
        psf_m, model_m = measured
        psfflux = np.where(np.isfinite(psf_m), psf_m, psfflux)
        modelflux = np.where(np.isfinite(model_m), model_m, modelflux)
    # detection: S/N > 5 in any band; the sweeps' magnitude limits; only objects centred on the camcol's
    # columns are catalogued (the others are rendered all the same)
    inside = (t.pop["x"] >= -0.5) & (t.pop["x"] < shape[1] - 0.5)
    catalogued = detected(psfflux, t.psf_err) & inside
    ids = np.full(len(t.pop), -1, np.int64)
    ids[catalogued] = np.arange(1, catalogued.sum() + 1)
    objc = np.where(catalogued, star_galaxy_type(psfflux, modelflux, t.psf_err), 0)
    ivar_psf, ivar_model = 1 / t.psf_err**2, 1 / t.model_err**2
    return Cell(field, t.pop, t.ra, t.dec, catalogued, ids, objc, psfflux, ivar_psf, modelflux, ivar_model, t.psf_fwhm)


def detected_bands(psfflux: np.ndarray, psf_err: np.ndarray) -> np.ndarray:
    """bool [n, 5]: the bands in which photo detects each object (PSF S/N > 5; photo detects in every band, so
    the sweeps list objects seen in u or z alone too). NaN fluxes: not detected."""
    with np.errstate(invalid="ignore"):
        return np.asarray(psfflux) / np.asarray(psf_err) > DETECTION_SNR


def detected(psfflux: np.ndarray, psf_err: np.ndarray) -> np.ndarray:
    """True for objects photo detects (in any band) and the sweeps list, from measured PSF fluxes and their
    errors [n, 5] (NaN fluxes: not detected)."""
    return detected_bands(psfflux, psf_err).any(1) & in_sweep(psfflux)


def in_sweep(psfflux: np.ndarray) -> np.ndarray:
    """True for objects whose PSF flux [n, 5] (nanomaggies) passes the sweeps' limit in at least one band."""
    limits = 10 ** (-0.4 * (np.asarray(SWEEP_PSF_MAG_LIMITS) - 22.5))
    return (psfflux > limits).any(1)


def star_galaxy_type(psfflux: np.ndarray, modelflux: np.ndarray, psf_err: np.ndarray) -> np.ndarray:
    """photo's OBJC_TYPE rule on the fluxes [n, 5] summed over the bands in which the object is detected (SDSS
    DR17, algorithms/classify; all five bands for an object detected in none): galaxy (3) when psfmag - modelmag
    > 0.145, else star (6)."""
    bands = detected_bands(psfflux, psf_err)
    bands = np.where(bands.any(1, keepdims=True), bands, True)
    with np.errstate(divide="ignore", invalid="ignore"):
        psf_sum = np.where(bands, psfflux, 0.0).sum(1)
        model_sum = np.where(bands, modelflux, 0.0).sum(1)
        diff = -2.5 * np.log10(np.clip(psf_sum, 1e-6, None) / np.clip(model_sum, 1e-6, None))
    return np.where(diff > 0.145, OBJC_TYPE_GALAXY, OBJC_TYPE_STAR)


# ----------------------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class FieldTask:
    """One field to render (picklable for worker processes): its identity, seed, frame shape, seeing draw, and
    the data folder the runner writes it to."""

    root: str
    rerun: int
    run: int
    camcol: int
    field: int
    seed: int
    shape: tuple[int, int]
    seeing: str = DEFAULT_SEEING


def render_field(task: FieldTask) -> dict:
    """One field, rendered: noisy float32 images (band -> array, nanomaggies, truncated as FLOATCOMPRESS does),
    each band's WCS and calibration (per-column nanomaggies per DN, sky in DN), the field's conditions, the
    catalog fluxes of the objects measured on those very pixels (``sim_formats.MEASURED_DTYPE`` rows), and the
    number of objects rendered. No files: ``stargal.stages.simulate`` writes them."""
    shape = task.shape
    cond = field_conditions(task.seed, task.run, task.camcol, task.field, task.seeing)
    cells = [
        cell_truth(task.seed, task.run, task.camcol, f, shape, task.seeing)
        for f in (task.field - 1, task.field, task.field + 1)
    ]
    pop = np.concatenate([c.pop for c in cells])
    # objects below photo's detection limit on average: their light stays in the catalogued objects' fluxes
    faint = np.concatenate([~detected_bands(c.psf_true, c.psf_err).any(1) for c in cells])
    ra = np.concatenate([c.ra for c in cells])
    dec = np.concatenate([c.dec for c in cells])
    owner = np.concatenate([np.full(len(c.pop), k) for k, c in enumerate(cells)])
    psf_meas, model_meas = np.full((len(pop), 5), np.nan), np.full((len(pop), 5), np.nan)
    images, wcs_of, calibration = {}, {}, {}
    for bi, b in enumerate(BANDS):
        rng = _rng(task.seed, task.run, task.camcol, task.field, 10 + bi)
        wcs = band_wcs(task.field, b, shape, cond)
        x, y = wcs.wcs_world2pix(ra, dec, 0)
        near = (x > -200) & (x < shape[1] + 200) & (y > -200) & (y < shape[0] + 200)
        image = np.zeros(shape, np.float32)
        sky_to_pix = sky_models.inv2(wcs.wcs.cd * 3600.0)  # (east, north) arcsec -> pixel offsets
        sigma = cond.sigma[b]
        undetectable, detectable = near & faint, near & ~faint
        _render_objects(image, pop[undetectable], x[undetectable], y[undetectable], cond, b, sky_to_pix)
        undetected_light = image.copy()
        _render_objects(image, pop[detectable], x[detectable], y[detectable], cond, b, sky_to_pix)
        sky_models.saturate(image, cond.saturation[b])
        saturated = sky_models.saturation_mask(image, cond.saturation[b])
        var = sigma**2 + np.clip(image, 0, None) * (cond.nmgy[b] / sky_models.GAIN[b])
        noise = rng.standard_normal(shape, dtype=np.float32) * np.sqrt(var, dtype=np.float32)
        image += noise
        residual = sky_models.sky_residual(_rng(task.seed, task.run, task.camcol, task.field, 20 + bi), shape)
        residual *= np.float32(cond.sky_residual[b] * sigma)
        image += residual
        sky_models.interpolate_rows(image, saturated)  # saturated cores and bleed trails, as in real frames
        # the catalog's fluxes: each object's own light on the frame's noise and undetected sources' light, as
        # photo measures after deblending the sources it detects; not on the smooth residual, which photo's own
        # local sky takes out (its sky follows the frames' pedestals, bench/photo_sky.py)
        background = noise + undetected_light
        for k, c in enumerate(cells):
            mine = owner == k
            family = sky_models.measurement_family(c.pop, b, psf_at(cond, b, x[mine], y[mine], shape), sky_to_pix)
            own_light = np.where(faint[mine], 0.0, c.model_true[:, bi])  # a faint object's is in the background
            psf_meas[mine, bi], model_meas[mine, bi] = sky_models.measure_fluxes(
                background, x[mine], y[mine], own_light, family
            )
        calib, sky_dn = _calibration(rng, cond, b, shape)
        image = sky_models.quantize_counts(image, sky_dn, calib)
        images[b] = sky_models.truncate_floats(image)
        calibration[b] = (calib, sky_dn)
        wcs_of[b] = wcs
    keep = np.isfinite(psf_meas).any(1)
    measured = np.zeros(int(keep.sum()), MEASURED_DTYPE)
    measured["cell"] = np.array([c.field for c in cells])[owner[keep]]
    measured["index"] = np.concatenate([np.arange(len(c.pop)) for c in cells])[keep]
    measured["psfflux"], measured["modelflux"] = psf_meas[keep], model_meas[keep]
    return {
        "images": images,
        "wcs": wcs_of,
        "calibration": calibration,
        "cond": cond,
        "measured": measured,
        "n_objects": len(pop),
    }


def _render_objects(
    image: np.ndarray,
    pop: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    cond: FieldConditions,
    band: str,
    sky_to_pix: np.ndarray,
) -> None:
    """Add the objects ``pop`` at frame positions (x, y) to ``image`` (nanomaggies) in ``band``, with their
    PSF aureoles."""
    threshold = 0.15 * cond.sigma[band]
    for group in _shape_groups(pop):
        psf = psf_at(cond, band, x[group], y[group], image.shape)
        amp, cov, _ = sky_models.object_gaussians(pop[group], band, psf, sky_to_pix)
        radius = sky_models.stamp_radius(amp, cov, threshold)
        sky_models.render(image, x[group], y[group], amp, cov, radius)
    flux = 10 ** (-0.4 * (pop["mag"][:, BANDS.index(band)] - 22.5))
    amp, cov = sky_models.aureole_gaussians(flux, cond.aureole[band])
    # rendered further out than the objects: faint as it is, it spreads over thousands of pixels around each
    # bright star; only the bright objects' aureoles rise above that anywhere
    threshold = AUREOLE_THRESHOLD_SIGMA * cond.sigma[band]
    visible = np.flatnonzero(amp[:, 0] / (2 * np.pi * sky_models.AUREOLE_SIGMAS_PX[0] ** 2) > threshold)
    if visible.size:
        radius = sky_models.stamp_radius(amp[visible], cov[visible], threshold)
        sky_models.render(image, x[visible], y[visible], amp[visible], cov[visible], radius)


def cell_measurements(
    measured_by_frame: dict[int, np.ndarray], field: int, n: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(PSF, model) fluxes [n, 5] of cell ``field``'s objects from the rendered frames' measurements: its own
    frame first, then its neighbours (objects in the overlap rows); NaN where no frame measured them."""
    psf, model = np.full((n, 5), np.nan), np.full((n, 5), np.nan)
    found = False
    for frame in (field, field - 1, field + 1):
        rows = measured_by_frame.get(frame)
        if rows is None:
            continue
        rows = rows[rows["cell"] == field]
        fill = ~np.isfinite(psf[rows["index"]])
        psf[rows["index"]] = np.where(fill, rows["psfflux"], psf[rows["index"]])
        model[rows["index"]] = np.where(fill, rows["modelflux"], model[rows["index"]])
        found = True
    return (psf, model) if found else None


def _calibration(rng: np.random.Generator, cond: FieldConditions, band: str, shape: tuple[int, int]):
    """Per-column calibration (nanomaggies per DN: NMGY times a smooth flat-field) and the sky in DN."""
    cols = np.linspace(-1, 1, shape[1])
    c1, c2 = rng.normal(0, 0.01, 2)
    calib = cond.nmgy[band] * (1 + c1 * cols + c2 * (cols**2 - 1 / 3))
    sky0 = cond.sigma[band] ** 2 * sky_models.GAIN[band] / cond.nmgy[band] ** 2
    gy, gx = rng.normal(0, 0.15, 2)
    rows = np.linspace(-1, 1, shape[0])
    sky_dn = sky0 + gy * rows[:, None] + gx * cols[None, :]
    return calib.astype(np.float64), sky_dn


def _shape_groups(pop: np.ndarray) -> list[np.ndarray]:
    """Indices of stars, pure disks, pure bulges and bulge+disk galaxies (each renders with its own MoG)."""
    bt = pop["bulge_frac"]
    groups = [pop["star"], ~pop["star"] & (bt <= 0), ~pop["star"] & (bt >= 1), ~pop["star"] & (bt > 0) & (bt < 1)]
    return [np.flatnonzero(g) for g in groups if g.any()]


# ----------------------------------------------------------------------------------------------------------
# Catalogs and truth


def catalog_rows(
    cells: list[Cell], kind: str, run: int, camcol: int, shape: tuple[int, int], seed: int, seeing: str = DEFAULT_SEEING
) -> dict:
    """The catalogued objects of ``kind`` (gal or star, by OBJC_TYPE) in ``cells``, as the calibObj values
    (ROWC/COLC in each band's frame, calibration, sky per square arcsec); ``sim_formats.calibobj_columns`` types
    them."""
    want = OBJC_TYPE_GALAXY if kind == "gal" else OBJC_TYPE_STAR
    rows = {
        k: []
        for k in (
            "FIELD",
            "ID",
            "OBJC_TYPE",
            "RA",
            "DEC",
            "PSF_FWHM",
            "PSFFLUX",
            "PSFFLUX_IVAR",
            "MODELFLUX",
            "MODELFLUX_IVAR",
            "ROWC",
            "COLC",
            "NMGYPERCOUNT",
            "SKYFLUX",
        )
    }
    for cell in cells:
        sel = cell.catalogued & (cell.objc_type == want)
        cond = field_conditions(seed, run, camcol, cell.field, seeing)
        rowc, colc = np.zeros((sel.sum(), 5)), np.zeros((sel.sum(), 5))
        for bi, b in enumerate(BANDS):
            x, y = band_wcs(cell.field, b, shape, cond).wcs_world2pix(cell.ra[sel], cell.dec[sel], 0)
            colc[:, bi], rowc[:, bi] = x + 0.5, y + 0.5  # photo's pixel centres are at .5
        rows["FIELD"].append(np.full(sel.sum(), cell.field))
        rows["ID"].append(cell.ids[sel])
        rows["OBJC_TYPE"].append(cell.objc_type[sel])
        rows["RA"].append(cell.ra[sel])
        rows["DEC"].append(cell.dec[sel])
        rows["PSF_FWHM"].append(cell.psf_fwhm[sel])
        rows["PSFFLUX"].append(cell.psfflux[sel])
        rows["PSFFLUX_IVAR"].append(cell.psfflux_ivar[sel])
        rows["MODELFLUX"].append(cell.modelflux[sel])
        rows["MODELFLUX_IVAR"].append(cell.modelflux_ivar[sel])
        rows["ROWC"].append(rowc)
        rows["COLC"].append(colc)
        rows["NMGYPERCOUNT"].append(np.tile([cond.nmgy[b] for b in BANDS], (sel.sum(), 1)))
        sky = [cond.sigma[b] ** 2 * sky_models.GAIN[b] / cond.nmgy[b] / PIXEL_SCALE_ARCSEC**2 for b in BANDS]
        rows["SKYFLUX"].append(np.tile(sky, (sel.sum(), 1)))  # nanomaggies per square arcsec
    return {k: np.concatenate(v) for k, v in rows.items()}
