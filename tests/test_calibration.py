"""The simulated sky against the real SDSS sample: noise, seeing, band offsets, formats (skipped without it)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import TINY, TINY_SHAPE

from stargal import sdss
from stargal.config import BANDS
from stargal.paths import FieldId
from stargal.sky_calibration import (
    REAL_FIELDS,
    band_offsets,
    measure_real_sample,
    point_source_fwhm,
    robust_sigma,
)
from stargal.stages.calibration import run_calibration

# every test here compares with the real SDSS sample
# one worker for the module: the real sample's statistics (module fixtures) are then measured once
pytestmark = [pytest.mark.real, pytest.mark.xdist_group("calibration")]

# keys astropy manages itself when writing float images (it drops BZERO/BSCALE of unscaled data)
ASTROPY_MANAGED = {"BZERO", "BSCALE"}


def real_frames(sample_dir, index: int, bands=BANDS) -> dict:
    folder, run, camcol, field = REAL_FIELDS[index]
    return {b: sdss.read_frame(sample_dir / folder / sdss.frame_filename(b, run, camcol, field)) for b in bands}


_SIM_CACHE: dict = {}


def sim_frames(paths, field: int) -> dict:
    """The tiny sky's frames of one field (read once per session: the tiny sky is read-only)."""
    key = (str(paths.root), field)
    if key not in _SIM_CACHE:
        fid = FieldId(TINY.rerun, TINY.run, TINY.camcol, field)
        _SIM_CACHE[key] = {b: sdss.read_frame(paths.frame(fid, b)) for b in BANDS}
    return _SIM_CACHE[key]


@pytest.fixture(scope="module")
def real(sample_dir):
    """Real frames: all bands of 8162-6-80 (cached with the statistics), r and i of 4510-4-30."""
    return [measure_real_sample(str(sample_dir.resolve()))[1], real_frames(sample_dir, 1, ("r", "i"))]


@pytest.fixture(scope="module")
def real_stats(sample_dir):
    """Per-band statistics of the real fields (background sigma, point-source FWHM, band offsets)."""
    return measure_real_sample(str(sample_dir.resolve()))[0]


def test_background_sigma_within_20_percent(real_stats, tiny_sky):
    for b in BANDS:
        real_sigma = np.median([stats[b]["sigma"] for stats in real_stats.values()])
        for f in TINY.fields:
            s = robust_sigma(sim_frames(tiny_sky, f)[b].image)
            assert s == pytest.approx(real_sigma, rel=0.2), (b, f, s, real_sigma)


def test_star_fwhm_within_real_range(real_stats, tiny_sky, sample_dir):
    # real: point sources of the two sample fields, and the real catalog's PSF_FWHM spread (5-95 %)
    real_fwhm = [stats[b]["fwhm"] for stats in real_stats.values() for b in BANDS]
    star = sdss.read_catalog(sample_dir / REAL_FIELDS[1][0] / "calibObj-004510-4-star.fits.gz")
    lo = min(min(real_fwhm), np.percentile(star["PSF_FWHM"], 5))
    # the README's typical SDSS seeing reaches 1.6"; a simulated field must stay within what real fields show
    hi = max(max(real_fwhm), 1.6)
    for f in TINY.fields:
        frames = sim_frames(tiny_sky, f)
        fw = point_source_fwhm(frames["r"].image, robust_sigma(frames["r"].image))
        assert fw["n"] >= 5
        assert 0.9 * lo <= fw["fwhm"] <= 1.1 * hi, (f, fw, lo, hi)
    sim_cat = sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, "star"))
    med = np.median(sim_cat["PSF_FWHM"], axis=0)
    real_med = np.median(star["PSF_FWHM"], axis=0)
    assert ((med > 0.9 * real_med) & (med < 1.6)).all(), (med, real_med)


@pytest.fixture(scope="module")
def real_offsets(sample_dir) -> dict:
    """Every real field's band offsets (dx, dy) from r (pixels; from the frames' WCS headers alone)."""
    from astropy.io import fits

    from stargal.stages.realsky import discover

    sizes: dict = {b: [] for b in BANDS if b != "r"}
    for field in discover(sample_dir):
        fid = field.fid
        wcs = {
            b: sdss.quiet_wcs(fits.getheader(field.folder / sdss.frame_filename(b, fid.run, fid.camcol, fid.field)))
            for b in BANDS
        }
        for b in sizes:
            offset = band_offsets(wcs["r"], wcs[b], (1489, 2048))
            sizes[b].append((offset["dx"], offset["dy"]))
    return sizes


def test_band_offsets_like_real(real_offsets, tiny_sky):
    # the simulator (since version 5) draws each field's offsets within the range of the real fields (widened a little)
    assert len(real_offsets["u"]) >= 2
    for f in TINY.fields:
        frames = sim_frames(tiny_sky, f)
        for b, real in real_offsets.items():
            real = np.array(real)
            offset = band_offsets(frames["r"].wcs, frames[b].wcs, TINY_SHAPE, step=40)
            for axis, value in enumerate((offset["dx"], offset["dy"])):
                lo, hi = real[:, axis].min(), real[:, axis].max()
                assert lo - 1.6 <= value <= hi + 1.6, (b, f, "xy"[axis], value, lo, hi)
            assert offset["size"] > 2.0  # several pixels: bands are not aligned


def test_same_reader_same_formats(real, tiny_sky, sample_dir):
    sim = sim_frames(tiny_sky, 81)
    for b in BANDS:
        r, s = real[0][b], sim[b]
        assert r.image.dtype == s.image.dtype == np.float32
        missing = [k for k in r.header if k not in s.header and k not in ASTROPY_MANAGED]
        assert not missing, missing
        assert s.header["FRAME"] - 81 == r.header["FRAME"] - 80  # the same filter-row staggering
        assert s.header["CCDLOC"] == r.header["CCDLOC"]
        for key in ("BUNIT", "EXPTIME", "RADECSYS", "CTYPE1", "CTYPE2", "CRPIX1"):
            if key != "CRPIX1":
                assert s.header[key] == r.header[key], key
        assert s.simulated and not r.simulated
    columns = (*sdss.CATALOG_COLUMNS, "ROWC", "COLC")
    real_cat = sdss.read_catalog(sample_dir / REAL_FIELDS[1][0] / "calibObj-004510-4-star.fits.gz", columns=columns)
    for kind in ("star", "gal"):
        sim_cat = sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, kind), columns=columns)
        assert sim_cat.dtype == real_cat.dtype


def test_catalog_rowc_colc_convention_like_real(real, sample_dir, tiny_sky):
    """ROWC/COLC are pixel coordinates + 0.5 in the field's own band frame, in both catalogs."""
    columns = (*sdss.CATALOG_COLUMNS, "ROWC", "COLC")
    real_cat = sdss.read_catalog(sample_dir / REAL_FIELDS[1][0] / "calibObj-004510-4-star.fits.gz", columns=columns)
    real_cat = real_cat[real_cat["FIELD"] == 30]
    sim_cat = sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, "star"), columns=columns)
    sim_cat = sim_cat[sim_cat["FIELD"] == 81]
    for cat, frames in ((real_cat, real[1]), (sim_cat, sim_frames(tiny_sky, 81))):
        for b in ("r", "i"):
            bi = BANDS.index(b)
            x, y = frames[b].wcs.wcs_world2pix(cat["RA"], cat["DEC"], 0)
            assert np.median(cat["COLC"][:, bi] - x) == pytest.approx(0.5, abs=0.1)
            assert np.median(cat["ROWC"][:, bi] - y) == pytest.approx(0.5, abs=0.1)


def test_sweep_magnitude_limits_like_real(sample_dir, tiny_sky):
    """The simulated sweeps apply the real sweeps' PSF-magnitude limits, measured on the real star sweep."""
    from stargal.simulate import SWEEP_PSF_MAG_LIMITS, in_sweep

    real_cat = sdss.read_catalog(sample_dir / REAL_FIELDS[1][0] / "calibObj-004510-4-star.fits.gz")
    assert in_sweep(real_cat["PSFFLUX"].astype(np.float64)).mean() > 0.985
    # and the limits are not looser than needed: every band's limit is reached by real rows near it
    with np.errstate(divide="ignore", invalid="ignore"):
        mags = 22.5 - 2.5 * np.log10(real_cat["PSFFLUX"].astype(np.float64))
    for bi, limit in enumerate(SWEEP_PSF_MAG_LIMITS):
        assert np.nanmax(mags[:, bi][mags[:, bi] < limit]) > limit - 0.05
    for kind in ("gal", "star"):
        sim_cat = sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, kind))
        assert in_sweep(sim_cat["PSFFLUX"].astype(np.float64)).all()


def test_calibration_report_and_plot(sample_dir, tiny_data):
    result = run_calibration(sample_dir, tiny_data, dataclasses.replace(TINY, fields=(81,)), crop=200)
    report = tiny_data.reports("simulation")
    png = report / "real_vs_simulated.png"
    assert (report / "calibration.json").exists()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for b in BANDS:
        assert result["summary"][b]["sigma_ratio_median"] == pytest.approx(1.0, abs=0.2)
