"""A simulated SDSS sky written in the exact SDSS file formats and layout (frames, irg jpegs, calibObj sweeps).

Geometry: fields step along the scan great circle of the real reference field (run 8162 camcol 6 field 80, whose
r-band WCS is the template), consecutive fields overlapping by ~128 rows (scaled with the frame height). Each
field owns the central band of rows of its frame ("cell"); the objects of a cell are drawn from a generator
seeded by (seed, run, camcol, field), placed on the sky, and rendered into every band of every frame they fall
in through that band's own WCS (bands are offset by several pixels, as in real frames). The truth of every
object goes to ``paths.sim_truth``; catalogued objects (detected at S/N > 5 and within the real sweeps' magnitude
limits) go to the calibObj sweeps under the field that owns them. Saturated cores and bleed trails are
interpolated over along rows, as in real frames. As photo does, the catalog's PSF and model fluxes, and so the star/galaxy type, are
measured on the very pixels written to the frames (each object on its own frame, after perfect deblending;
``paths.sim_measurements`` keeps them per frame); objects no rendered frame covers get independent noise
draws of the same size. Physics lives in ``stargal.sky_models``.
"""

from __future__ import annotations

import functools
import io
import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.wcs import WCS

from . import sdss, sky_models
from .config import BANDS, FIELD_OVERLAP_ROWS, FRAME_SHAPE, PIXEL_SCALE_ARCSEC, SEED, FieldSet
from .errors import StargalError
from .fsio import load_npy, save_npy, write_bytes
from .parallel import map_tasks
from .paths import DataPaths, FieldId
from .tables import write_table

log = logging.getLogger("stargal")

# measured: r-band WCS of the real frame 301/8162/6/80, the template of the simulated geometry
TEMPLATE_FIELD = 80
TEMPLATE_CRVAL = (331.709414401, 26.9626508189)
TEMPLATE_CD = np.array([[-3.01982932672e-05, 0.000105743143543], [0.000105764935177, 3.01923666993e-05]])
TEMPLATE_TAI_R = 4765227539.34  # r-band TAI of the template frame's first row (s)
ROW_SECONDS = 0.026322  # drift-scan row clock (C_OBS, microseconds per row in the header)
# measured on 8162-6-80: offset (dx, dy) in pixels of each band relative to r (same sky -> band pixel - r pixel)
BAND_OFFSETS = {"u": (2.8, 6.0), "g": (2.1, 12.6), "r": (0.0, 0.0), "i": (2.6, 2.6), "z": (2.3, 7.6)}
# the camera's filter rows: header FRAME = field + FRAME_STAGGER, CCDLOC = 10 * CAMROW + camcol
FRAME_STAGGER = {"r": 0, "i": 2, "u": 4, "z": 6, "g": 8}
CAMROW = {"r": 1, "i": 2, "u": 3, "z": 4, "g": 5}
# seconds after the r band that each band's filter row sees the same sky (template TAI differences)
BAND_TAI_OFFSET = {"r": 0.0, "i": 71.64, "u": 143.29, "z": 214.94, "g": 286.59}
# measured: calibration of the template frames (nanomaggies per count) and its inverse variance
NMGY = {"u": 0.0148024, "g": 0.00376789, "r": 0.0052619, "i": 0.00655866, "z": 0.0328756}
NMGYIVAR = {"u": 0.332729, "g": 0.0737074, "r": 0.187593, "i": 0.338535, "z": 8.45661}
SATURATION_DN = (50000.0, 55000.0)
DETECTION_SNR = 5.0
# the sweeps list only objects brighter than these PSF magnitudes (u g r i z) in at least one band; measured:
# 99.1 % of the real calibObj-004510-4-star rows pass, the rest within 0.06 mag (tests/test_calibration.py)
SWEEP_PSF_MAG_LIMITS = (22.5, 22.5, 22.5, 22.0, 21.5)
SOFTBIAS = 1000
SIMULAT_COMMENT = "simulated by stargal, not SDSS data"

TRUTH_DTYPE = np.dtype(
    [
        ("field", "i4"),  # field that owns the object (the catalog lists it there if catalogued)
        ("id", "i4"),  # catalog ID within that field; -1 when not catalogued (below the detection limit)
        ("ra", "f8"),
        ("dec", "f8"),
        ("x", "f8"),  # 0-based column in the owning field's r frame
        ("y", "f8"),  # 0-based row
        ("cls", "U6"),  # true class: star or galaxy
        ("label", "i1"),  # true class as label: 0 galaxy, 1 star
        ("objc_type", "i4"),  # catalog OBJC_TYPE (photo's psf-model rule on measured fluxes); 0 if not catalogued
        ("u", "f4"),  # true magnitudes
        ("g", "f4"),
        ("r", "f4"),
        ("i", "f4"),
        ("z", "f4"),
        ("re_arcsec", "f4"),
        ("q", "f4"),
        ("pa_deg", "f4"),
        ("bulge_frac", "f4"),
        ("redshift", "f4"),
    ]
)


# ----------------------------------------------------------------------------------------------------------
# Geometry


def _rng(seed: int, run: int, camcol: int, field: int, stream: int) -> np.random.Generator:
    """The generator of one field's stream: independent of which other fields are simulated.

    Field -1 (the neighbour of field 0) maps to a distinct non-negative key, as seed sequences need.
    """
    key = field if field >= 0 else 1_000_000 - field
    return np.random.default_rng([seed, run, camcol, key, stream])


def overlap_rows(shape: tuple[int, int]) -> int:
    return max(4, round(FIELD_OVERLAP_ROWS * shape[0] / FRAME_SHAPE[0]))


def field_step_rows(shape: tuple[int, int]) -> int:
    return shape[0] - overlap_rows(shape)


def _unit(ra: float, dec: float) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _east_north(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ra = np.arctan2(p[1], p[0])
    dec = np.arcsin(np.clip(p[2], -1, 1))
    east = np.array([-np.sin(ra), np.cos(ra), 0.0])
    north = np.array([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)])
    return east, north


def _crpix(shape: tuple[int, int]) -> tuple[float, float]:
    """1-based reference pixel at the frame centre (1025, 745 for a full frame, as in real frames)."""
    return shape[1] / 2 + 1, (shape[0] + 1) / 2


def r_band_geometry(field: int, shape: tuple[int, int]) -> tuple[tuple[float, float], np.ndarray]:
    """(CRVAL, CD) of a field's r frame: the template moved along the scan great circle by whole field steps."""
    p0 = _unit(*TEMPLATE_CRVAL)
    e0, n0 = _east_north(p0)
    t0 = TEMPLATE_CD[0, 1] * e0 + TEMPLATE_CD[1, 1] * n0  # rows run along the scan
    t0 /= np.linalg.norm(t0)
    row_deg = float(np.hypot(TEMPLATE_CD[0, 1], TEMPLATE_CD[1, 1]))  # the template's own row length
    s = np.radians((field - TEMPLATE_FIELD) * field_step_rows(shape) * row_deg)
    p = np.cos(s) * p0 + np.sin(s) * t0
    t = -np.sin(s) * p0 + np.cos(s) * t0
    e, n = _east_north(p)
    delta = np.arctan2(t @ n, t @ e) - np.arctan2(t0 @ n0, t0 @ e0)
    rot = np.array([[np.cos(delta), -np.sin(delta)], [np.sin(delta), np.cos(delta)]])
    ra = np.degrees(np.arctan2(p[1], p[0])) % 360
    dec = np.degrees(np.arcsin(p[2]))
    return (float(ra), float(dec)), rot @ TEMPLATE_CD


def make_wcs(crval, cd, crpix) -> WCS:
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
    """Observing conditions and calibration of one simulated field (drawn from the field's own seed)."""

    seeing: dict  # rendered Moffat FWHM per band, arcsec
    sigma: dict  # background sigma per band, nanomaggies
    nmgy: dict
    saturation: dict  # saturation level per band, nanomaggies above sky
    offsets: dict  # band -> (dx, dy) relative to r, pixels
    distortion: dict  # band -> 2x2 matrix (I + E) mapping r pixel offsets to band pixel offsets


def field_conditions(seed: int, run: int, camcol: int, field: int) -> FieldConditions:
    rng = _rng(seed, run, camcol, field, 1)
    # catalog-convention r seeing 0.95-1.55" (skewed towards good seeing), rendered FWHM ~10 % narrower
    seeing_r = (0.95 + 0.6 * rng.beta(1.5, 3.0)) / sky_models.CATALOG_FWHM_FACTOR
    seeing, sigma, nmgy, sat, offsets, dist = {}, {}, {}, {}, {}, {}
    for b in BANDS:
        seeing[b] = float(seeing_r * sky_models.SEEING_BAND_FACTOR[b] * (1 + rng.normal(0, 0.02) * (b != "r")))
        lo, hi = sky_models.BACKGROUND_SIGMA[b]
        sigma[b] = float(rng.uniform(lo, hi))
        nmgy[b] = float(NMGY[b] * (1 + rng.normal(0, 0.01)))
        sky_dn = sigma[b] ** 2 * sky_models.GAIN[b] / nmgy[b] ** 2  # Poisson sky: var_DN = sky_DN / gain
        sat[b] = float((rng.uniform(*SATURATION_DN) - sky_dn - SOFTBIAS) * nmgy[b])
        if b == "r":
            offsets[b] = (0.0, 0.0)
            dist[b] = np.eye(2)
        else:
            dx, dy = BAND_OFFSETS[b]
            offsets[b] = (float(dx + rng.normal(0, 0.15)), float(dy + rng.normal(0, 0.15)))
            # a tiny rotation and scale difference: offsets drift by a few tenths of a pixel across the frame
            a, s = rng.uniform(-4.5e-4, 4.5e-4), rng.uniform(-2.5e-4, 2.5e-4)
            dist[b] = np.array([[1 + s, -a], [a, 1 + s]])
    return FieldConditions(seeing, sigma, nmgy, sat, offsets, dist)


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
    return make_wcs((float(ra), float(dec)), cd @ np.linalg.inv(m), crpix)


# ----------------------------------------------------------------------------------------------------------
# Objects of one field's cell


def _cell_population(seed: int, run: int, camcol: int, field: int, shape: tuple[int, int]) -> np.ndarray:
    """True objects owned by a field: population draws at positions in the field's r-frame pixel grid."""
    rng = _rng(seed, run, camcol, field, 0)
    rows, cols = shape
    step = field_step_rows(shape)
    margin = 20
    area_frac = step * (cols + 2 * margin) / ((FRAME_SHAPE[0] - FIELD_OVERLAP_ROWS) * FRAME_SHAPE[1])
    n_star = rng.poisson(area_frac * sky_models.expected_count(limit=22.5, **_counts(sky_models.STAR_COUNTS)))
    n_gal = rng.poisson(area_frac * sky_models.expected_count(limit=22.5, **_counts(sky_models.GALAXY_COUNTS)))
    pop = np.concatenate([sky_models.draw_stars(rng, n_star), sky_models.draw_galaxies(rng, n_gal)])
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
def cell_truth(seed: int, run: int, camcol: int, field: int, shape: tuple[int, int]) -> CellTruth:
    pop = _cell_population(seed, run, camcol, field, shape)
    cond = field_conditions(seed, run, camcol, field)
    crval, cd = r_band_geometry(field, shape)
    w_r = make_wcs(crval, cd, _crpix(shape))
    ra, dec = w_r.wcs_pix2world(pop["x"], pop["y"], 0)
    sky_to_pix = np.linalg.inv(cd * 3600.0)
    rng = _rng(seed, run, camcol, field, 2)
    n = len(pop)
    psf_true, model_true, psf_err, model_err, fwhm = (np.zeros((n, 5)) for _ in range(5))
    for bi, b in enumerate(BANDS):
        flux = 10 ** (-0.4 * (pop["mag"][:, bi] - 22.5))
        ratio, area_psf, area_model = sky_models.psf_flux_ratio(pop, b, cond.seeing[b] / PIXEL_SCALE_ARCSEC, sky_to_pix)
        psf_true[:, bi] = flux * ratio
        model_true[:, bi] = flux
        poisson = np.clip(flux, 0, None) * cond.nmgy[b] / sky_models.GAIN[b]
        psf_err[:, bi] = np.sqrt(cond.sigma[b] ** 2 * area_psf + poisson)
        model_err[:, bi] = np.sqrt(cond.sigma[b] ** 2 * area_model + poisson)
        # photo's PSF_FWHM: ~10 % wider than the rendered Moffat, with the catalog's own band ratios
        cat_fwhm = cond.seeing["r"] * sky_models.CATALOG_FWHM_FACTOR * sky_models.CATALOG_BAND_FACTOR[b]
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
) -> Cell:
    """A cell's catalog: ``measured`` (PSF, model) fluxes [n, 5] from the rendered frames (NaN: not measured)
    take precedence; objects or bands no frame measured use independent noise draws."""
    t = cell_truth(seed, run, camcol, field, shape)
    psfflux, modelflux = t.psf_unmeasured, t.model_unmeasured
    if measured is not None:
        psf_m, model_m = measured
        psfflux = np.where(np.isfinite(psf_m), psf_m, psfflux)
        modelflux = np.where(np.isfinite(model_m), model_m, modelflux)
    # detection: S/N > 5 in g, r or i; the sweeps' magnitude limits; only objects centred on the camcol's
    # columns are catalogued (the others are rendered all the same)
    snr = (psfflux / t.psf_err)[:, 1:4].max(1)
    inside = (t.pop["x"] >= -0.5) & (t.pop["x"] < shape[1] - 0.5)
    catalogued = (snr > DETECTION_SNR) & in_sweep(psfflux) & inside
    ids = np.full(len(t.pop), -1, np.int64)
    ids[catalogued] = np.arange(1, catalogued.sum() + 1)
    objc = np.where(catalogued, star_galaxy_type(psfflux, modelflux), 0)
    ivar_psf, ivar_model = 1 / t.psf_err**2, 1 / t.model_err**2
    return Cell(field, t.pop, t.ra, t.dec, catalogued, ids, objc, psfflux, ivar_psf, modelflux, ivar_model, t.psf_fwhm)


def in_sweep(psfflux: np.ndarray) -> np.ndarray:
    """True for objects whose PSF flux [n, 5] (nanomaggies) passes the sweeps' limit in at least one band."""
    limits = 10 ** (-0.4 * (np.asarray(SWEEP_PSF_MAG_LIMITS) - 22.5))
    return (psfflux > limits).any(1)


def star_galaxy_type(psfflux: np.ndarray, modelflux: np.ndarray) -> np.ndarray:
    """photo's OBJC_TYPE rule on the summed g+r+i fluxes [n, 5]: 3 (galaxy) when psfmag - modelmag > 0.145, else 6."""
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = -2.5 * np.log10(
            np.clip(psfflux[:, 1:4].sum(1), 1e-6, None) / np.clip(modelflux[:, 1:4].sum(1), 1e-6, None)
        )
    return np.where(diff > 0.145, 3, 6)


# ----------------------------------------------------------------------------------------------------------
# Frames


def _frame_header(fid: FieldId, band: str, wcs: WCS, cond: FieldConditions, shape: tuple[int, int]) -> fits.Header:
    """A header with the keys, order and style of a real frame's HDU0."""
    tai = TEMPLATE_TAI_R + (fid.field - TEMPLATE_FIELD) * field_step_rows(shape) * ROW_SECONDS + BAND_TAI_OFFSET[band]
    day_s = tai % 86400
    hh, mm, ss = int(day_s // 3600), int(day_s % 3600 // 60), day_s % 60
    ra0, dec0 = wcs.wcs_pix2world([[0.5, 0.5]], 1)[0]
    cards = [
        ("EXTEND", True, "Extensions may be present"),
        ("BZERO", 0.0, "Set by MRD_SCALE"),
        ("BSCALE", 1.0, "Set by MRD_SCALE"),
        ("TAI", round(tai, 2), "1st row Number of seconds since Nov 17 1858"),
        ("RA", round(float(ra0), 5), "1st row RA of telescope boresight (deg)"),
        ("DEC", round(float(dec0), 6), "1st row Dec of telescope boresight (degrees)"),
        ("SPA", 73.962, "1st row Cam col position angle wrt N (deg)"),
        ("IPA", 16.053, "1st row Inst rotator position angle (deg)"),
        ("IPARATE", -0.0015, "1st row Inst rotator anglr velocity (deg/sec)"),
        ("AZ", 294.96709, "1st row Azimuth (encoder) of tele (0=N?) (deg)"),
        ("ALT", 75.604253, "1st row Altitude (encoder) of tele (degrees)"),
        ("FOCUS", 85.7, "1st row - Focus piston (microns?)"),
        ("DATE-OBS", "2009-11-18", "1st row - TAI date"),
        ("TAIHMS", f"{hh:02d}:{mm:02d}:{ss:05.2f}", "1st row TAI time HH:MM:SS.SS"),
        ("COMMENT", "TAI,RA,DEC,SPA,IPA,IPARATE,AZ,ALT,FOCUS at reading of col 0, row 0", None),
        ("ORIGIN", "SDSS", None),
        ("TELESCOP", "2.5m", None),
        ("TIMESYS", "TAI", None),
        ("RUN", fid.run, "Run number"),
        ("FRAME", fid.field + FRAME_STAGGER[band], "Frame sequence number within the run"),
        ("CCDLOC", 10 * CAMROW[band] + fid.camcol, "Survey location of CCD (e.g., rowCol)"),
        ("STRIPE", 70, "Stripe index number (23 <--> eta=0)"),
        ("STRIP", "N", "Strip in the stripe being tracked."),
        ("FLAVOR", "science", "Flavor of this run"),
        ("OBSERVER", "simulate", "Observer"),
        ("SYS_SCN", "mean", "System of the scan great circle (e.g., mean)"),
        ("EQNX_SCN", 2000.0, "Equinox of the scan great circle. (years)"),
        ("NODE", 95.0, "RA of the great circle's ascending node (deg)"),
        ("INCL", -30.0, "Great circle's inclination wrt cel. eq. (deg)"),
        ("XBORE", -22.74, "Boresight x offset from the array center (mm)"),
        ("YBORE", 0.0, "Boresight x offset from the array center (mm)"),
        ("OBJECT", "70 N", "e.g., 'stripe 50.6 degrees, north strip'"),
        ("EXPTIME", "53.907456", "Exposure time (seconds)"),
        ("SYSTEM", "FK5", "System of the TCC coordinates (e.g., mean)"),
        ("CCDMODE", "DRIFT", "'STARING' or 'DRIFT'"),
        ("C_OBS", 26322, "CCD row clock rate (usec/row)"),
        ("COLBIN", 1, "Binning factor perpendicular to the columns"),
        ("ROWBIN", 1, "Binning factor perpendicular to the rows"),
        ("DAVERS", "v15_13_1", "Version of DA software"),
        ("SCDMETHD", "sqrtDynamic", "scdMethod"),
        ("SCDWIDTH", 1280, "scdDisplayWidth"),
        ("SCDDECMF", 1, "scdDecimateFactor"),
        ("SCDOFSET", 410, "scdDisplayOffset"),
        ("SCDDYNTH", -19, "scdDynamicThresh"),
        ("SCDSTTHL", 30, "scdStaticThreshL"),
        ("SCDSTTHR", 30, "scdStaticThreshR"),
        ("SCDREDSZ", 480, "scdReduceSize"),
        ("SCDSKYL", 1333, "scdSkyLeft"),
        ("SCDSKYR", 1328, "scdSkyRight"),
        ("COMMENT", "CCD-specific parameters", None),
        ("CAMROW", CAMROW[band], "Row in the imaging camera"),
        ("BADLINES", 0, "Number of bad lines in frame"),
        ("EQUINOX", 2000.0, ""),
        ("SOFTBIAS", SOFTBIAS, 'software "bias" added to all DN'),
        ("BUNIT", "nanomaggy", "1 nanomaggy = 3.631e-6 Jy"),
        ("FILTER", band, "filter used"),
        ("CAMCOL", fid.camcol, "column in the imaging camera"),
        ("VERSION", "v5_6_3", None),
        ("DERV_VER", "NOCVS:v8_23", None),
        ("ASTR_VER", "NOCVS:v5_24", None),
        ("ASTRO_ID", "2009-11-21T14:58:39 12217", None),
        ("BIAS_ID", "PS", None),
        ("FRAME_ID", "2010-08-11T10:31:59 16347", None),
        ("KO_VER", "devel", None),
        ("PS_ID", f"2009-11-21T11:35:46 28205 camCol {fid.camcol}", None),
        ("ATVSN", "NOCVS:v5_24", "ASTROTOOLS version tag"),
        ("RADECSYS", "ICRS", "International Celestial Ref. System"),
        ("CTYPE1", "RA---TAN", "Coordinate type"),
        ("CTYPE2", "DEC--TAN", "Coordinate type"),
        ("CUNIT1", "deg", "Units"),
        ("CUNIT2", "deg", "Units"),
        ("CRPIX1", float(wcs.wcs.crpix[0]), "X of reference pixel"),
        ("CRPIX2", float(wcs.wcs.crpix[1]), "Y of reference pixel"),
        ("CRVAL1", float(wcs.wcs.crval[0]), "RA of reference pixel (deg)"),
        ("CRVAL2", float(wcs.wcs.crval[1]), "Dec of reference pixel (deg)"),
        ("CD1_1", float(wcs.wcs.cd[0, 0]), "RA deg per column pixel"),
        ("CD1_2", float(wcs.wcs.cd[0, 1]), "RA deg per row pixel"),
        ("CD2_1", float(wcs.wcs.cd[1, 0]), "Dec deg per column pixel"),
        ("CD2_2", float(wcs.wcs.cd[1, 1]), "Dec deg per row pixel"),
        ("HISTORY", "GSSSPUTAST: simulated astrometry", None),
        ("COMMENT", "Calibration parameters", None),
        ("COMMENT", "Floats truncated at 10 binary digits with FLOATCOMPRESS", None),
        ("NMGY", round(cond.nmgy[band], 8), "Calibration factor [nMgy per count]"),
        ("NMGYIVAR", NMGYIVAR[band], "Calibration factor inverse variance"),
        ("VERSIDL", "7.0", "Version of IDL"),
        ("VERSUTIL", "v5_5_5", "Version of idlutils"),
        ("VERSPOP", "v1_11_1", "Version of photoop product"),
        ("PCALIB", "/clusterfs/riemann/raid006/dr8/groups/boss/calib/dr8_final", "Value o"),
        ("PSKY", "/clusterfs/riemann/raid006/dr8/groups/boss/photo/sky", "Value of PHOT"),
        ("RERUN", str(fid.rerun), "rerun"),
        ("SIMULAT", True, SIMULAT_COMMENT),
    ]
    h = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # long comments are cut to the card, as in real headers
        for key, value, comment in cards:
            if key == "COMMENT":
                h.add_comment(value)
            elif key == "HISTORY":
                h.add_history(value)
            else:
                h[key] = (value, comment) if comment is not None else value
        h = fits.Header.fromstring(h.tostring())
    return h


@dataclass(frozen=True)
class FieldTask:
    root: str
    rerun: int
    run: int
    camcol: int
    field: int
    seed: int
    shape: tuple[int, int]


MEASURED_DTYPE = np.dtype([("cell", "i4"), ("index", "i4"), ("psfflux", "f8", (5,)), ("modelflux", "f8", (5,))])


def render_field(task: FieldTask) -> dict:
    """Noisy float32 images (band -> array) and headers of one field, the catalog fluxes of the objects
    measured on those very pixels (MEASURED_DTYPE rows), plus render statistics."""
    shape = task.shape
    cond = field_conditions(task.seed, task.run, task.camcol, task.field)
    fid = FieldId(task.rerun, task.run, task.camcol, task.field)
    cells = [
        cell_truth(task.seed, task.run, task.camcol, f, shape) for f in (task.field - 1, task.field, task.field + 1)
    ]
    pop = np.concatenate([c.pop for c in cells])
    ra = np.concatenate([c.ra for c in cells])
    dec = np.concatenate([c.dec for c in cells])
    owner = np.concatenate([np.full(len(c.pop), k) for k, c in enumerate(cells)])
    psf_meas, model_meas = np.full((len(pop), 5), np.nan), np.full((len(pop), 5), np.nan)
    images, headers, extras = {}, {}, {}
    for bi, b in enumerate(BANDS):
        rng = _rng(task.seed, task.run, task.camcol, task.field, 10 + bi)
        wcs = band_wcs(task.field, b, shape, cond)
        x, y = wcs.wcs_world2pix(ra, dec, 0)
        near = (x > -200) & (x < shape[1] + 200) & (y > -200) & (y < shape[0] + 200)
        image = np.zeros(shape, np.float32)
        sky_to_pix = np.linalg.inv(wcs.wcs.cd * 3600.0)  # (east, north) arcsec -> pixel offsets
        sigma = cond.sigma[b]
        fwhm_px = cond.seeing[b] / PIXEL_SCALE_ARCSEC
        for group in _shape_groups(pop[near]):
            sub = pop[near][group]
            amp, cov, _ = sky_models.object_gaussians(sub, b, fwhm_px, sky_to_pix)
            radius = sky_models.stamp_radius(amp, cov, 0.15 * sigma)
            sky_models.render(image, x[near][group], y[near][group], amp, cov, radius)
        sky_models.saturate(image, cond.saturation[b])
        saturated = sky_models.saturation_mask(image, cond.saturation[b])
        var = sigma**2 + np.clip(image, 0, None) * (cond.nmgy[b] / sky_models.GAIN[b])
        noise = rng.standard_normal(shape, dtype=np.float32) * np.sqrt(var, dtype=np.float32)
        image += noise
        sky_models.interpolate_rows(image, saturated)  # saturated cores and bleed trails, as in real frames
        # the catalog's fluxes come from these pixels, as photo measures the frames it writes
        for k, c in enumerate(cells):
            mine = owner == k
            family = sky_models.measurement_family(c.pop, b, fwhm_px, sky_to_pix)
            psf_meas[mine, bi], model_meas[mine, bi] = sky_models.measure_fluxes(
                noise, x[mine], y[mine], c.model_true[:, bi], family
            )
        calib, sky_dn = _calibration(rng, cond, b, shape)
        image = sky_models.quantize_counts(image, sky_dn, calib)
        images[b] = sky_models.truncate_floats(image)
        extras[b] = _calibration_hdus(calib, sky_dn, shape)
        headers[b] = _frame_header(fid, b, wcs, cond, shape)
    keep = np.isfinite(psf_meas).any(1)
    measured = np.zeros(int(keep.sum()), MEASURED_DTYPE)
    measured["cell"] = np.array([c.field for c in cells])[owner[keep]]
    measured["index"] = np.concatenate([np.arange(len(c.pop)) for c in cells])[keep]
    measured["psfflux"], measured["modelflux"] = psf_meas[keep], model_meas[keep]
    return {
        "images": images,
        "headers": headers,
        "extras": extras,
        "cond": cond,
        "measured": measured,
        "n_objects": len(pop),
    }


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


def _calibration_hdus(calib: np.ndarray, sky_dn: np.ndarray, shape: tuple[int, int]) -> list:
    """HDU1 (calibration vector) and HDU2 (sky grid, decimated 8x, with interpolation coordinates) as in frames."""
    hdu1 = fits.ImageHDU(calib.astype(np.float32))
    grid = sky_dn[::8, ::8].astype(np.float32)
    xinterp = ((np.arange(shape[1]) - 3.5) / 8).astype(np.float32)
    yinterp = ((np.arange(shape[0]) - 3.5) / 8).astype(np.float32)
    cols = [
        fits.Column(name="ALLSKY", format=f"{grid.size}E", dim=f"({grid.shape[1]},{grid.shape[0]})", array=grid[None]),
        fits.Column(name="XINTERP", format=f"{shape[1]}E", array=xinterp[None]),
        fits.Column(name="YINTERP", format=f"{shape[0]}E", array=yinterp[None]),
    ]
    return [hdu1, fits.BinTableHDU.from_columns(cols)]


def _shape_groups(pop: np.ndarray) -> list[np.ndarray]:
    """Indices of stars, pure disks, pure bulges and bulge+disk galaxies (each renders with its own MoG)."""
    bt = pop["bulge_frac"]
    groups = [pop["star"], ~pop["star"] & (bt <= 0), ~pop["star"] & (bt >= 1), ~pop["star"] & (bt > 0) & (bt < 1)]
    return [np.flatnonzero(g) for g in groups if g.any()]


def simulate_field(task: FieldTask) -> dict:
    """Render one field and write its five frames and irg jpeg; returns counts and timing."""
    start = time.perf_counter()
    paths = DataPaths.at(task.root)
    fid = FieldId(task.rerun, task.run, task.camcol, task.field)
    out = render_field(task)
    save_npy(paths.sim_measurements(fid), out["measured"])

    def write(b: str) -> None:
        sdss.write_frame(paths.frame(fid, b), out["images"][b], out["headers"][b], extra_hdus=out["extras"][b])

    # bz2 compression dominates and releases the GIL: compress the bands on two threads
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write, BANDS))
    write_bytes(paths.irg_jpeg(fid), irg_jpeg_bytes(out["images"], out["cond"]))
    return {"field": task.field, "objects_rendered": out["n_objects"], "seconds": time.perf_counter() - start}


def irg_jpeg_bytes(images: dict, cond: FieldConditions) -> bytes:
    """An SDSS-style colour jpeg: i, r, g as red, green, blue with an asinh (Lupton) stretch, north-up flipped."""
    from PIL import Image

    def on_r_grid(b: str) -> np.ndarray:
        dx, dy = (round(v) for v in cond.offsets[b])
        return np.roll(images[b], (-dy, -dx), axis=(0, 1))

    rgb = np.stack([on_r_grid("i") * 1.0, on_r_grid("r") * 1.25, on_r_grid("g") * 2.0], -1).astype(np.float32)
    total = np.clip(rgb.mean(-1, keepdims=True), 1e-6, None)
    q, alpha = 8.0, 3.0
    scaled = rgb * (np.arcsinh(alpha * q * total) / (q * total))
    byte = np.clip(scaled * 255 / 1.2, 0, 255).astype(np.uint8)[::-1]
    buf = io.BytesIO()
    Image.fromarray(byte, "RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------
# Catalogs and truth


def _catalog_columns(cells: list[Cell], kind: str, rerun: int, run: int, camcol: int, shape, seed: int) -> dict:
    want = 3 if kind == "gal" else 6
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
        cond = field_conditions(seed, run, camcol, cell.field)
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
    cat = {k: np.concatenate(v) for k, v in rows.items()}
    n = len(cat["ID"])
    return {
        "RUN": np.full(n, run, np.int16),
        "RERUN": np.full(n, str(rerun), dtype="S3"),
        "CAMCOL": np.full(n, camcol, np.uint8),
        "FIELD": cat["FIELD"].astype(np.int16),
        "ID": cat["ID"].astype(np.int16),
        "OBJC_TYPE": cat["OBJC_TYPE"].astype(np.int32),
        "OBJC_FLAGS": np.zeros(n, np.int32),
        "ROWC": cat["ROWC"].astype(np.float32),
        "COLC": cat["COLC"].astype(np.float32),
        "RA": cat["RA"].astype(np.float64),
        "DEC": cat["DEC"].astype(np.float64),
        "PSF_FWHM": cat["PSF_FWHM"].astype(np.float32),
        "EXTINCTION": np.zeros((n, 5), np.float32),
        "SKYFLUX": cat["SKYFLUX"].astype(np.float32),
        "PSFFLUX": cat["PSFFLUX"].astype(np.float32),
        "PSFFLUX_IVAR": cat["PSFFLUX_IVAR"].astype(np.float32),
        "MODELFLUX": cat["MODELFLUX"].astype(np.float32),
        "MODELFLUX_IVAR": cat["MODELFLUX_IVAR"].astype(np.float32),
        "CALIB_STATUS": np.ones((n, 5), np.int32),
        "NMGYPERCOUNT": cat["NMGYPERCOUNT"].astype(np.float32),
        "RESOLVE_STATUS": np.full(n, 257, np.int32),
    }


def truth_table(cells: list[Cell]) -> np.ndarray:
    parts = []
    for c in cells:
        t = np.zeros(len(c.pop), TRUTH_DTYPE)
        t["field"] = c.field
        t["id"] = c.ids
        t["ra"], t["dec"] = c.ra, c.dec
        t["x"], t["y"] = c.pop["x"], c.pop["y"]
        t["cls"] = np.where(c.pop["star"], "star", "galaxy")
        t["label"] = c.pop["star"].astype(np.int8)
        t["objc_type"] = c.objc_type
        for bi, b in enumerate(BANDS):
            t[b] = c.pop["mag"][:, bi]
        t["re_arcsec"], t["q"], t["pa_deg"] = c.pop["re"], c.pop["q"], c.pop["pa"]
        t["bulge_frac"], t["redshift"] = c.pop["bulge_frac"], c.pop["redshift"]
        parts.append(t)
    return np.concatenate(parts) if parts else np.zeros(0, TRUTH_DTYPE)


def _existing_simulated_fields(paths: DataPaths, fs: FieldSet) -> set[int]:
    folder = paths.frame(FieldId(fs.rerun, fs.run, fs.camcol, 0), "r").parent
    found = set()
    for p in folder.glob("frame-r-*.fits.bz2") if folder.is_dir() else []:
        info = sdss.parse_filename(p.name)
        if info and info["run"] == fs.run and info["camcol"] == fs.camcol:
            found.add(info["field"])
    return found


def _load_measurements(path: Path) -> np.ndarray:
    rows = load_npy(path)
    if rows.dtype != MEASURED_DTYPE:
        raise StargalError(f"{path}: not a simulation measurement table (rerun stage 00 with --force)")
    return rows


def write_catalogs(paths: DataPaths, fs: FieldSet, fields: list[int], *, seed: int, shape: tuple[int, int]) -> dict:
    """calibObj gal/star sweeps and the truth table for the cells of ``fields`` and their neighbours."""
    cell_fields = sorted({f + d for f in fields for d in (-1, 0, 1)})
    measured_by_frame = {}
    for f in fields:
        path = paths.sim_measurements(FieldId(fs.rerun, fs.run, fs.camcol, f))
        if path.exists():
            measured_by_frame[f] = _load_measurements(path)
    cells = []
    for f in cell_fields:
        n = len(cell_truth(seed, fs.run, fs.camcol, f, shape).pop)
        cells.append(make_cell(seed, fs.run, fs.camcol, f, shape, cell_measurements(measured_by_frame, f, n)))
    header = fits.Header()
    header["SIMULAT"] = (True, SIMULAT_COMMENT)
    counts = {}
    for kind in sdss.CATALOG_KINDS:
        cols = _catalog_columns(cells, kind, fs.rerun, fs.run, fs.camcol, shape, seed)
        sdss.write_catalog(paths.catalog(fs.rerun, fs.run, fs.camcol, kind), cols, header=header)
        counts[kind] = len(cols["ID"])
    write_table(paths.sim_truth(fs.rerun, fs.run, fs.camcol), truth_table(cells))
    per_field = {}
    for c in cells:
        per_field[c.field] = {
            "stars": int((c.objc_type == 6).sum()),
            "galaxies": int((c.objc_type == 3).sum()),
            "true_stars": int((c.catalogued & c.pop["star"]).sum()),
            "uncatalogued": int((~c.catalogued).sum()),
        }
    return {"catalog_rows": counts, "cells": per_field}


def simulate_sky(
    paths: DataPaths,
    fieldset: FieldSet,
    *,
    seed: int = SEED,
    shape: tuple[int, int] = FRAME_SHAPE,
    frames_only: bool = False,
    force: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
) -> dict:
    """Write the simulated equivalent of an SDSS download of ``fieldset`` into ``paths``; returns a summary.

    Fields are rendered in parallel on ``workers`` local processes or, given ``scheduler``, on that Dask
    cluster (whose workers must share ``paths``' folder); the catalogs are written here. Files are identical.
    """
    start = time.perf_counter()
    shape = (int(shape[0]), int(shape[1]))
    if shape[0] < 64 or shape[1] < 64:
        raise StargalError(f"shape {shape}: simulated frames need at least 64 x 64 pixels")
    if not fieldset.fields:
        raise StargalError("fields: no fields to simulate")
    fields = sorted(set(fieldset.fields))
    todo = []
    for f in fields:
        fid = FieldId(fieldset.rerun, fieldset.run, fieldset.camcol, f)
        outputs = [paths.frame(fid, b) for b in BANDS] + [paths.irg_jpeg(fid), paths.sim_measurements(fid)]
        if force or not all(p.exists() for p in outputs):
            todo.append(FieldTask(str(paths.root), fieldset.rerun, fieldset.run, fieldset.camcol, f, seed, shape))
    results = map_tasks(simulate_field, todo, workers=workers, scheduler=scheduler, description="simulating fields")
    summary: dict = {
        "fields": fields,
        "simulated_fields": [r["field"] for r in results],
        "skipped_fields": [f for f in fields if f not in {r["field"] for r in results}],
        "field_seconds": {r["field"]: round(r["seconds"], 2) for r in results},
        "files_written": 7 * len(results),
    }
    if not frames_only:
        cat_paths = [paths.catalog(fieldset.rerun, fieldset.run, fieldset.camcol, k) for k in sdss.CATALOG_KINDS]
        truth = paths.sim_truth(fieldset.rerun, fieldset.run, fieldset.camcol)
        if force or results or not all(p.exists() for p in [*cat_paths, truth]):
            all_fields = sorted(set(fields) | _existing_simulated_fields(paths, fieldset))
            cat = write_catalogs(paths, fieldset, all_fields, seed=seed, shape=shape)
            summary["catalog_rows"] = cat["catalog_rows"]
            summary["counts"] = {f: cat["cells"][f] for f in fields}
            summary["files_written"] += 3
    summary["seconds"] = round(time.perf_counter() - start, 2)
    log.info("simulated %d field(s) of %s in %.1f s", len(results), fieldset.label, summary["seconds"])
    return summary
