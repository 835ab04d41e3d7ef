"""The simulated SDSS sky: formats, layout, geometry, determinism and basic physics."""

from __future__ import annotations

import bz2
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import TINY, TINY_SHAPE

from stargal import sdss, sim_formats, simulate, sky_models
from stargal.config import BANDS, FieldSet
from stargal.errors import StargalError
from stargal.paths import DataPaths, FieldId
from stargal.stages.simulate import simulate_sky
from stargal.tables import read_table


def fid(field: int) -> FieldId:
    return FieldId(TINY.rerun, TINY.run, TINY.camcol, field)


def open_raw(path):
    """Open a frame with plain astropy, as a user would (bz2 decompressed in memory)."""
    return fits.open(io.BytesIO(bz2.decompress(path.read_bytes())))


def test_files_and_layout(tiny_sky):
    for f in TINY.fields:
        for b in BANDS:
            assert tiny_sky.frame(fid(f), b).name == f"frame-{b}-008162-6-{f:04d}.fits.bz2"
            assert tiny_sky.frame(fid(f), b).exists()
        assert tiny_sky.irg_jpeg(fid(f)).exists()
    for kind in ("gal", "star"):
        assert tiny_sky.catalog(301, 8162, 6, kind).exists()
    assert tiny_sky.sim_truth(301, 8162, 6).exists()


def test_frame_opens_with_astropy_and_has_real_keys(tiny_sky):
    with open_raw(tiny_sky.frame(fid(81), "g")) as hdul:
        h = hdul[0].header
        assert hdul[0].data.dtype == np.dtype(">f4")
        assert hdul[0].data.shape == TINY_SHAPE
        assert len(hdul) >= 3  # calibration vector and sky grid follow, as in real frames
        assert hdul[1].data.shape == (TINY_SHAPE[1],)
    for key in ("RUN", "CAMCOL", "FRAME", "FILTER", "BUNIT", "NMGY", "EXPTIME", "RERUN", "CCDLOC", "RADECSYS", "TAI"):
        assert key in h, key
    assert h["SIMULAT"] is True
    assert h["RUN"] == 8162 and h["CAMCOL"] == 6 and h["FILTER"].strip() == "g"
    assert h["FRAME"] == 81 + 8 and h["CCDLOC"] == 56  # g is the fifth filter row
    assert h["BUNIT"].strip() == "nanomaggy"
    assert h["CTYPE1"] == "RA---TAN" and "CD1_1" in h and "CD2_2" in h
    assert "Floats truncated at 10 binary digits with FLOATCOMPRESS" in str(h["COMMENT"])


def test_frame_staggering_matches_real_camera(tiny_sky):
    expected = {"r": 0, "i": 2, "u": 4, "z": 6, "g": 8}
    for b, d in expected.items():
        frame = sdss.read_frame(tiny_sky.frame(fid(80), b))
        assert frame.header["FRAME"] == 80 + d
        assert frame.band == b and frame.simulated


def test_wcs_pixel_scale_and_scan_direction(tiny_sky):
    frame = sdss.read_frame(tiny_sky.frame(fid(80), "r"))
    cd = frame.wcs.wcs.cd
    scale = np.sqrt(abs(np.linalg.det(cd))) * 3600
    assert scale == pytest.approx(0.396, rel=1e-3)
    # rows run along the scan: the next field's r frame starts ~overlap rows before this one ends
    nxt = sdss.read_frame(tiny_sky.frame(fid(81), "r"))
    ra, dec = nxt.wcs.wcs_pix2world([[300.0, 0.0]], 0)[0]
    x, y = frame.wcs.wcs_world2pix([[ra, dec]], 0)[0]
    assert x == pytest.approx(300.0, abs=0.01)
    assert y == pytest.approx(TINY_SHAPE[0] - simulate.overlap_rows(TINY_SHAPE), abs=0.01)


def test_image_values_mimic_float_truncation_and_counts(tiny_sky):
    frame = sdss.read_frame(tiny_sky.frame(fid(82), "r"))
    bits = frame.image.view(np.uint32) & np.uint32((1 << 14) - 1)
    assert not bits.any()  # at most 10 significant binary digits
    assert np.isfinite(frame.image).all()
    med = np.median(frame.image)
    assert abs(med) < 0.02


def test_band_offsets_present_and_small_drift(tiny_sky):
    frames = {b: sdss.read_frame(tiny_sky.frame(fid(81), b)) for b in BANDS}
    from stargal.sky_calibration import band_offsets

    cond = simulate.field_conditions(7, 8162, 6, 81)
    for b, ((x_lo, x_hi), (y_lo, y_hi)) in simulate.BAND_OFFSETS.items():
        off = band_offsets(frames["r"].wcs, frames[b].wcs, TINY_SHAPE, step=50)
        # the field's drawn offset is what the frames' WCS say, within the real sky's range
        assert off["dx"] == pytest.approx(cond.offsets[b][0], abs=0.1)
        assert off["dy"] == pytest.approx(cond.offsets[b][1], abs=0.1)
        assert x_lo - 0.1 <= off["dx"] <= x_hi + 0.1 and y_lo - 0.1 <= off["dy"] <= y_hi + 0.1
        assert off["drift"] < 0.5


def test_catalog_dtypes_like_real(tiny_sky):
    for kind, objc in (("gal", 3), ("star", 6)):
        cat = sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, kind), columns=(*sdss.CATALOG_COLUMNS, "ROWC", "COLC"))
        assert len(cat) > 20
        assert set(np.unique(cat["OBJC_TYPE"])) == {objc}
        assert cat["PSFFLUX"].shape[1:] == (5,) and cat["PSFFLUX"].dtype == np.float32
        assert cat["RA"].dtype == np.float64 and cat["ID"].dtype == np.int16 and cat["RUN"].dtype == np.int16
        assert cat["CAMCOL"].dtype == np.uint8 and str(cat["RERUN"][0]).strip("b'") == "301"
    with fits.open(tiny_sky.catalog(301, 8162, 6, "star")) as hdul:
        assert hdul[0].header["SIMULAT"] is True
        assert hdul[1].columns["PSF_FWHM"].format == "5E"


def test_each_object_listed_once_under_its_field(tiny_sky):
    gal = sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, "gal"))
    star = sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, "star"))
    both = np.concatenate([gal, star])
    keys = both["FIELD"].astype(np.int64) * 100000 + both["ID"]
    assert len(np.unique(keys)) == len(both)
    # positions are distinct objects too (no duplicated sky positions across fields)
    assert len(np.unique(np.round(both["RA"], 7) + 1000 * np.round(both["DEC"], 7))) == len(both)
    # catalogued neighbours of the simulated fields are listed as well (real sweeps cover the whole run)
    assert set(np.unique(both["FIELD"])) >= set(TINY.fields)


def test_catalog_positions_fall_in_owning_frame_and_overlap_objects_in_two_frames(tiny_sky):
    cat = np.concatenate([sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, k)) for k in ("gal", "star")])
    frames = {f: sdss.read_frame(tiny_sky.frame(fid(f), "r")) for f in TINY.fields}
    in_two = 0
    for f in (81, 82):
        own = cat[cat["FIELD"] == f]
        x, y = frames[f].wcs.wcs_world2pix(own["RA"], own["DEC"], 0)
        assert ((x > -0.5) & (x < TINY_SHAPE[1] - 0.5) & (y > -0.5) & (y < TINY_SHAPE[0] - 0.5)).all()
        xn, yn = frames[f + 1].wcs.wcs_world2pix(own["RA"], own["DEC"], 0)
        in_two += int(((yn > 0) & (yn < TINY_SHAPE[0] - 1) & (xn > 0) & (xn < TINY_SHAPE[1] - 1)).sum())
    assert in_two > 0


def test_overlap_pixels_show_the_same_sources(tiny_sky):
    """The rows shared by consecutive fields image the same sky (with independent noise)."""
    from scipy.ndimage import gaussian_filter

    a = gaussian_filter(sdss.read_frame(tiny_sky.frame(fid(81), "r")).image, 2.0)
    b = gaussian_filter(sdss.read_frame(tiny_sky.frame(fid(82), "r")).image, 2.0)
    ov = simulate.overlap_rows(TINY_SHAPE)
    same = np.corrcoef(a[-ov:].ravel(), b[:ov].ravel())[0, 1]
    other = np.corrcoef(a[:ov].ravel(), b[:ov].ravel())[0, 1]
    assert same > 0.3
    assert abs(other) < 0.1


def test_truth_table_and_star_fraction(tiny_sky):
    truth = read_table(tiny_sky.sim_truth(301, 8162, 6), dtype=sim_formats.TRUTH_DTYPE)
    assert set(np.unique(truth["cls"])) == {"star", "galaxy"}
    listed = truth[truth["id"] > 0]
    cat = np.concatenate([sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, k)) for k in ("gal", "star")])
    assert len(listed) == len(cat)
    # uncatalogued objects (past the detection limit) are rendered too
    assert (truth["id"] < 0).sum() > 0.3 * len(listed)
    assert np.nanmin(truth["r"][truth["id"] < 0]) < 24
    frac = (cat["OBJC_TYPE"] == 6).mean()
    assert 0.2 < frac < 0.75  # star density follows each field's drawn Galactic latitude
    # true stars mostly carry the star type; bright galaxies the galaxy type
    assert (listed["objc_type"][listed["label"] == 1] == 6).mean() > 0.9
    bright_gal = (listed["label"] == 0) & (listed["r"] < 20.5)
    assert (listed["objc_type"][bright_gal] == 3).mean() > 0.9


def test_catalog_fluxes_match_truth(tiny_sky):
    truth = read_table(tiny_sky.sim_truth(301, 8162, 6), dtype=sim_formats.TRUTH_DTYPE)
    star = sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, "star"))
    key = {(int(t["field"]), int(t["id"])): t for t in truth[truth["id"] > 0]}
    rmag = sdss.magnitude(star["PSFFLUX"][:, 2])
    true_r = np.array([key[(int(f), int(i))]["r"] for f, i in zip(star["FIELD"], star["ID"], strict=True)])
    bright = true_r < 20
    assert bright.sum() > 5
    assert np.median(np.abs(rmag[bright] - true_r[bright])) < 0.05


def test_rendered_star_flux_and_position(tiny_sky):
    """A bright isolated catalog star: pixel sum near its flux, centroid at its WCS position (sub-pixel)."""
    truth = read_table(tiny_sky.sim_truth(301, 8162, 6), dtype=sim_formats.TRUTH_DTYPE)
    checked = 0
    for field in (81, 82):
        frame = sdss.read_frame(tiny_sky.frame(fid(field), "i"))
        checked += _check_isolated_stars(frame, truth)
    assert checked >= 2


def _check_isolated_stars(frame, truth) -> int:
    stars = truth[
        (truth["label"] == 1) & (truth["i"] > 16.5) & (truth["i"] < 18.7)
    ]  # noise: 3 % of the flux over the stamp
    x, y = frame.wcs.wcs_world2pix(stars["ra"], stars["dec"], 0)
    allx, ally = frame.wcs.wcs_world2pix(truth["ra"], truth["dec"], 0)
    checked = 0
    for xi, yi, mag in zip(x, y, stars["i"], strict=True):
        if not (15 < xi < TINY_SHAPE[1] - 16 and 15 < yi < TINY_SHAPE[0] - 16):
            continue
        d = np.hypot(allx - xi, ally - yi)
        if ((d > 0.01) & (d < 15) & (truth["i"] < mag + 3)).any():  # a neighbour would bias the sums
            continue
        ix, iy = int(round(xi)), int(round(yi))
        stamp = frame.image[iy - 12 : iy + 13, ix - 12 : ix + 13].astype(np.float64)
        # less the local sky: the frames keep a smooth sky residual, worth a faint star's flux over 625 pixels
        box = frame.image[max(iy - 20, 0) : iy + 21, max(ix - 20, 0) : ix + 21].astype(np.float64)
        by, bx = np.mgrid[
            max(iy - 20, 0) : max(iy - 20, 0) + box.shape[0], max(ix - 20, 0) : max(ix - 20, 0) + box.shape[1]
        ]
        stamp = stamp - np.median(box[np.hypot(bx - xi, by - yi) > 14])
        flux = 10 ** (-0.4 * (mag - 22.5))
        assert stamp.sum() == pytest.approx(flux, rel=0.12)
        # centroid weighted by a window centred on the WCS position: unbiased by noise and pixel grid
        yy, xx = np.mgrid[iy - 12 : iy + 13, ix - 12 : ix + 13]
        w = stamp * np.exp(-0.5 * ((xx - xi) ** 2 + (yy - yi) ** 2) / 2.5**2)
        assert xi + (w * (xx - xi)).sum() / w.sum() == pytest.approx(xi, abs=0.1)
        assert yi + (w * (yy - yi)).sum() / w.sum() == pytest.approx(yi, abs=0.1)
        checked += 1
    return checked


@pytest.mark.slow
def test_deterministic_and_subset_independent(tiny_sky, tmp_path):
    """Simulating one field alone gives the same pixels as the same field in the tiny sky."""
    paths = DataPaths(tmp_path / "one")
    fs = FieldSet(rerun=301, run=8162, camcol=6, fields=(82,), train_fields=(82,), val_fields=(), test_fields=())
    summary = simulate_sky(paths, fs, seed=7, shape=TINY_SHAPE, frames_only=True)
    assert summary["simulated_fields"] == [82]
    assert not paths.catalog(301, 8162, 6, "gal").exists()
    for b in ("u", "r"):
        a = sdss.read_frame(paths.frame(fid(82), b)).image
        ref = sdss.read_frame(tiny_sky.frame(fid(82), b)).image
        np.testing.assert_array_equal(a, ref)
    # another seed gives another sky
    other = simulate.render_field(simulate.FieldTask(str(tmp_path), 301, 8162, 6, 82, 8, TINY_SHAPE))
    assert not np.array_equal(other["images"]["r"], sdss.read_frame(paths.frame(fid(82), "r")).image)


def test_idempotent_skip_and_force(tiny_data):
    path = tiny_data.frame(fid(80), "r")
    before = path.stat().st_mtime_ns
    summary = simulate_sky(tiny_data, TINY, seed=7, shape=TINY_SHAPE)
    assert summary["simulated_fields"] == [] and summary["skipped_fields"] == list(TINY.fields)
    assert path.stat().st_mtime_ns == before
    fs = FieldSet(rerun=301, run=8162, camcol=6, fields=(80,), train_fields=(80,), val_fields=(), test_fields=())
    summary = simulate_sky(tiny_data, fs, seed=7, shape=TINY_SHAPE, force=True)
    assert summary["simulated_fields"] == [80]
    # the catalog still covers every simulated field present, not only the forced one
    cat = sdss.read_catalog(tiny_data.catalog(301, 8162, 6, "gal"))
    assert set(TINY.fields) <= set(np.unique(cat["FIELD"]))


def test_bad_arguments(tmp_path):
    with pytest.raises(StargalError):
        simulate_sky(DataPaths(tmp_path), TINY, shape=(10, 10))
    # a shape whose rendering would not fit in memory: one line up front, not the out-of-memory killer
    with pytest.raises(StargalError, match=r"^shape 100000 100000: .* needs about 1862\.\d GiB of memory"):
        simulate_sky(DataPaths(tmp_path), TINY, shape=(100_000, 100_000))
    assert not any(tmp_path.iterdir())


def test_seeing_draws_the_sample_by_default_and_the_survey_on_request():
    fields = range(300, 1300)

    def catalog_fwhm(seeing: str) -> np.ndarray:
        core = [simulate.field_conditions(42, 8162, 6, f, seeing).seeing["r"] for f in fields]
        return np.asarray(core) * sky_models.CATALOG_FWHM_FACTOR

    default, sample_80 = (
        simulate.field_conditions(42, 8162, 6, 80),
        simulate.field_conditions(42, 8162, 6, 80, "sample"),
    )
    assert (default.seeing, default.sigma, default.offsets) == (sample_80.seeing, sample_80.sigma, sample_80.offsets)
    sample, survey = catalog_fwhm("sample"), catalog_fwhm("survey")
    # the survey's r-band PSF width: quartiles 1.30 / 1.43 / 1.58" (the draw is a little wider on purpose)
    q1, median, q3 = np.percentile(survey, [25, 50, 75])
    assert median == pytest.approx(1.43, abs=0.03)
    assert 1.2 < q1 < 1.3 and 1.58 < q3 < 1.7
    assert survey.min() >= 0.95 - 1e-9 and survey.max() <= 2.4 + 1e-9 and (survey > 2.0).mean() > 0.02
    assert np.median(sample) < 1.25 and sample.max() < 1.8  # the default sky keeps the sample's good seeing
    for seeing in ("sample", "survey"):  # the bands' ratios to r are drawn alike in both
        conds = [simulate.field_conditions(42, 8162, 6, f, seeing) for f in range(300, 500)]
        u_to_r = np.median([c.seeing["u"] / c.seeing["r"] for c in conds])
        assert u_to_r == pytest.approx(sky_models.PSF_BAND_FACTOR["u"], rel=0.02)
    with pytest.raises(ValueError, match="seeing 'median'"):
        simulate.field_conditions(42, 8162, 6, 80, "median")
    with pytest.raises(StargalError, match="seeing 'median': one of sample, survey"):
        simulate_sky(DataPaths(Path("/nonexistent")), TINY, shape=TINY_SHAPE, seeing="median")


def test_mixed_seeing_draws_odd_fields_as_the_survey_and_even_ones_as_the_sample():
    for field in (300, 301, 302, 303, 377):
        mixed = simulate.field_conditions(42, 8162, 6, field, "mixed")
        alike = simulate.field_conditions(42, 8162, 6, field, "survey" if field % 2 else "sample")
        other = simulate.field_conditions(42, 8162, 6, field, "sample" if field % 2 else "survey")
        assert repr(mixed) == repr(alike)  # every condition, not only the seeing: the same field as in that sky
        assert mixed.seeing["r"] != other.seeing["r"]
    # what a field holds follows from its conditions: the same truth as in the sky drawn wholly its way
    mixed, survey = (simulate.cell_truth(42, 8162, 6, 301, TINY_SHAPE, s) for s in ("mixed", "survey"))
    assert len(mixed.pop) > 0
    for name in ("ra", "dec", "psf_true", "model_true", "psf_fwhm"):
        np.testing.assert_array_equal(getattr(mixed, name), getattr(survey, name))
    assert (
        simulate.field_seeing_draw("sample", 301) == "sample" and simulate.field_seeing_draw("mixed", 300) == "sample"
    )
    with pytest.raises(ValueError, match="seeing 'mixed': one of sample, survey"):
        simulate.draw_seeing_r(np.random.default_rng(0), "mixed")  # a field's draw, never "mixed" itself


def test_saturation_bleeds_along_columns():
    img = np.zeros((60, 20), np.float32)
    img[30, 10] = 1000.0
    img[29:32, 9:12] += 200.0
    total = img.sum()
    sky_models.saturate(img, 100.0)
    assert img.max() <= 100.0
    assert img.sum() == pytest.approx(total, rel=1e-5)  # charge is conserved
    assert (img[:, 10] >= 100.0).sum() > 3  # a trail along the column
    assert (img[30, :] > 0).sum() <= 3  # but not along the row


def test_mog_profiles_normalised():
    for n in (1.0, 4.0):
        amp, var = sky_models.sersic_mog(n)
        assert amp.sum() == pytest.approx(1.0)
        # half the light within the half-light radius (circular Gaussians: 1 - exp(-r^2 / 2v))
        assert (amp * (1 - np.exp(-0.5 / var))).sum() == pytest.approx(0.5, abs=0.05)
    amp, var = sky_models.moffat_mog(3.0)
    r = np.linspace(0, 1, 2001)
    prof = (amp / (2 * np.pi * var) * np.exp(-0.5 * r[:, None] ** 2 / var)).sum(1)
    fwhm = 2 * r[np.argmin(np.abs(prof - prof[0] / 2))]
    assert fwhm == pytest.approx(1.0, abs=0.02)


def test_parallel_workers_give_identical_frames(tmp_path, tiny_sky):
    paths = DataPaths(tmp_path / "par")
    fs = FieldSet(rerun=301, run=8162, camcol=6, fields=(80, 83), train_fields=(80, 83), val_fields=(), test_fields=())
    simulate_sky(paths, fs, seed=7, shape=TINY_SHAPE, workers=2, frames_only=True)
    for f in (80, 83):
        np.testing.assert_array_equal(
            sdss.read_frame(paths.frame(fid(f), "z")).image, sdss.read_frame(tiny_sky.frame(fid(f), "z")).image
        )


def test_field_zero_and_small_frames(tmp_path):
    """Field 0 has a neighbour -1 (its cell must still be seedable); small frames scale the overlap down."""
    out = simulate.render_field(simulate.FieldTask(str(tmp_path), 301, 8162, 6, 0, 3, (100, 120)))
    assert out["images"]["r"].shape == (100, 120)
    assert simulate.overlap_rows((100, 120)) == round(128 * 100 / 1489)
    assert simulate.overlap_rows((1489, 2048)) == 128


def test_frame_header_builds_and_writes_without_astropy_warnings(tmp_path):
    """Long-valued cards carry comments already cut to 80 columns (as in real headers): no VerifyWarning."""
    import warnings

    from stargal import sdss

    cond = simulate.field_conditions(1, 8162, 6, 80)
    wcs = simulate.band_wcs(80, "r", TINY_SHAPE, cond)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tai = simulate.frame_tai(80, "r", TINY_SHAPE)
        header = sim_formats.frame_header(fid(80), "r", wcs, cond.nmgy["r"], tai)
        sdss.write_frame(tmp_path / "f.fits.bz2", np.zeros(TINY_SHAPE, np.float32), header)
    assert str(header.cards["PCALIB"]).endswith("/ Value o") and len(str(header.cards["PSKY"])) == 80


def _one_object(star: bool, re: float = 1.0, bulge_frac: float = 0.0) -> np.ndarray:
    pop = simulate.cell_truth(7, 8162, 6, 81, TINY_SHAPE).pop[:1].copy()
    pop["star"], pop["re"], pop["q"], pop["pa"] = star, re, 0.7, 30.0
    pop["bulge_frac"], pop["bulge_re"], pop["bulge_q"] = bulge_frac, 0.5 * re, 0.8
    return pop


def test_measure_fluxes_noiseless_profiles():
    """Without noise the PSF fit of a star and the model fit of anything return the flux; an extended
    galaxy's PSF flux falls short by more than photo's 0.145 mag star/galaxy margin."""
    sky_to_pix = np.eye(2) / 0.396
    noise = np.zeros((60, 60), np.float32)
    x, y, flux = np.array([30.3]), np.array([29.8]), np.array([50.0])
    for pop, extended in ((_one_object(True), False), (_one_object(False, re=1.5, bulge_frac=0.3), True)):
        family = sky_models.measurement_family(pop, "r", sky_models.PSF(3.0, 0.1), sky_to_pix)
        psf, model = sky_models.measure_fluxes(noise, x, y, flux, family)
        assert model[0] == pytest.approx(50.0, rel=1e-4)
        diff = -2.5 * np.log10(psf[0] / model[0])
        assert (diff > 0.145) == extended
        if not extended:
            assert psf[0] == pytest.approx(50.0, rel=1e-4)
    # centre pixel outside the frame: not measured
    psf, model = sky_models.measure_fluxes(noise, np.array([-3.0]), y, flux, family)
    assert np.isnan(psf[0]) and np.isnan(model[0])


def test_measured_psf_flux_is_the_psf_weighted_sum_of_the_frame_noise():
    """The catalog's PSF flux error is the linear PSF fit of the given noise pixels, computed independently."""
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.05, (50, 50)).astype(np.float32)
    pop = _one_object(True)
    family = sky_models.measurement_family(pop, "g", sky_models.PSF(2.8, 0.1), np.eye(2) / 0.396)
    x, y = np.array([24.6]), np.array([25.2])
    psf, model = sky_models.measure_fluxes(noise, x, y, np.array([2.0]), family)
    amp, cov = family[0]
    yy, xx = np.mgrid[:50, :50]
    d = np.stack([xx - x[0], yy - y[0]], -1)[..., None, :]  # [50, 50, 1, 2]
    inv = np.linalg.inv(cov[0])
    q = np.einsum("...ki,kij,...kj->...k", d, inv, d)
    p = (amp[0] / (2 * np.pi * np.sqrt(np.linalg.det(cov[0]))) * np.exp(-0.5 * q)).sum(-1)
    p[np.hypot(xx - 25, yy - 25) > 12] = 0  # beyond any stamp the weights are negligible anyway
    expected = 2.0 + (p * noise).sum() / (p * p).sum()
    assert psf[0] == pytest.approx(expected, abs=2e-3)
    assert np.isfinite(model[0])


def test_catalog_fluxes_are_those_measured_on_the_frames(tiny_sky):
    """Each catalogued object's PSFFLUX comes from the frame pixels (its own frame's measurement table),
    so the star/galaxy label is a function of the very pixels a patch shows, as in SDSS."""
    truth = read_table(tiny_sky.sim_truth(301, 8162, 6), dtype=sim_formats.TRUTH_DTYPE)
    cat = np.concatenate([sdss.read_catalog(tiny_sky.catalog(301, 8162, 6, k)) for k in ("gal", "star")])
    ivar = np.concatenate([fits.getdata(tiny_sky.catalog(301, 8162, 6, k), 1)["PSFFLUX_IVAR"] for k in ("gal", "star")])
    checked = 0
    for field in TINY.fields:
        rows = np.load(tiny_sky.sim_measurements(fid(field)))
        own = rows[rows["cell"] == field]
        cell_truth = truth[truth["field"] == field]  # in the cell's object order
        ids = cell_truth["id"][own["index"]]
        listed = (ids > 0) & np.isfinite(own["psfflux"]).all(1)  # centred inside every band's frame
        by_id = {int(i): k for k, i in enumerate(cat["ID"]) if cat["FIELD"][k] == field}
        at = np.array([by_id[int(i)] for i in ids[listed]])
        np.testing.assert_allclose(cat["PSFFLUX"][at], own["psfflux"][listed], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cat["MODELFLUX"][at], own["modelflux"][listed], rtol=1e-5, atol=1e-6)
        types = simulate.star_galaxy_type(own["psfflux"][listed], own["modelflux"][listed], ivar[at] ** -0.5)
        np.testing.assert_array_equal(cat["OBJC_TYPE"][at], types)
        checked += int(listed.sum())
    assert checked > 100


def test_type_sums_the_bands_an_object_is_detected_in():
    """photo's OBJC_TYPE rule sums the fluxes of the bands in which the object is detected: an object seen in z
    alone is typed by z, whatever noise the other bands' fluxes hold; it is detected and listed."""
    err = np.full((2, 5), 1.0)
    psf = np.array([[0.0, 0.5, 0.5, 0.5, 8.0], [0.0, 6.0, 6.0, 6.0, 0.0]])
    model = np.array([[0.0, 3.0, 3.0, 3.0, 8.2], [0.0, 6.2, 6.1, 6.3, 0.0]])
    # g+r+i alone would call the first a galaxy (psf 1.5 against model 9): z, its only detection, says star
    np.testing.assert_array_equal(simulate.star_galaxy_type(psf, model, err), [6, 6])
    np.testing.assert_array_equal(simulate.detected_bands(psf, err)[0], [False, False, False, False, True])
    assert simulate.detected(psf * 10, err).all() and not simulate.detected(psf * 0.1, err).any()
    galaxy = np.array([[0.0, 0.0, 6.0, 7.0, 0.0]])
    assert simulate.star_galaxy_type(galaxy, galaxy * 1.2, np.ones((1, 5)))[0] == 3


def test_single_band_entries_have_light_in_one_band_near_the_detection_limit():
    """The noise peaks photo lists from one band: u and z point sources at the real sweep's rate, S/N 5-8 there,
    no light elsewhere, typed star when listed."""
    cond = simulate.field_conditions(42, 8162, 6, 300, "sample")
    entries = simulate.single_band_entries(np.random.default_rng(1), cond, 50.0)
    lit = entries["mag"] < simulate.NO_LIGHT_MAG
    assert entries["star"].all() and (lit.sum(1) == 1).all()
    for band, per_field in simulate.SINGLE_BAND_ENTRIES.items():
        k = BANDS.index(band)
        n = int(lit[:, k].sum())
        assert abs(n - 50 * per_field) < 4 * np.sqrt(50 * per_field)
        fwhm_px = cond.seeing[band] / simulate.PIXEL_SCALE_ARCSEC
        error = cond.sigma[band] * np.sqrt(4 * np.pi) * fwhm_px / np.sqrt(8 * np.log(2))
        snr = 10 ** (-0.4 * (entries["mag"][lit[:, k], k] - 22.5)) / error
        assert snr.min() >= 5.0 - 1e-6 and snr.max() <= 8.0 + 1e-6
    flux = np.where(lit, 10 ** (-0.4 * (entries["mag"] - 22.5)), 0.0)
    err = np.full_like(flux, 1e-3)
    assert (simulate.star_galaxy_type(flux, flux, err) == 6).all()


def test_saturated_pixels_are_interpolated_along_rows_like_real_frames():
    """Saturated cores and their bleed trail, grown by a pixel, are replaced by row-wise linear interpolation."""
    img = np.zeros((30, 20), np.float32)
    img[10:13, 8:11] = 500.0
    sky_models.saturate(img, 100.0)
    mask = sky_models.saturation_mask(img, 100.0)
    assert mask[:, 7].any() and mask[:, 11].any()  # one column either side
    assert mask[img >= 100.0].all() and mask.sum() > (img >= 100.0).sum()
    noisy = img + np.random.default_rng(0).normal(0, 1, img.shape).astype(np.float32)
    before = noisy.copy()
    sky_models.interpolate_rows(noisy, mask)
    np.testing.assert_array_equal(noisy[~mask], before[~mask])  # unmasked pixels untouched
    row = int(np.flatnonzero(mask.any(1))[0])
    bad = np.flatnonzero(mask[row])
    left, right = bad[0] - 1, bad[-1] + 1
    expected = np.interp(bad, [left, right], [before[row, left], before[row, right]])
    np.testing.assert_allclose(noisy[row, bad], expected, rtol=1e-6)
    assert noisy.max() < 20  # no saturated level survives: the core is interpolated, as photo does


@pytest.mark.real
def test_real_saturated_cores_keep_pixels_at_the_simulated_level(sample_dir):
    """The simulator saturates at the real level: 1035-6-17's brightest star keeps a flat core (the frames
    interpolate over some saturated rows, not all) at the level the simulator clips at (its DN range less the
    sky and soft bias, in nanomaggies; flat-fielding spreads real values by a few per cent)."""
    path = sample_dir / "001035-6-0017" / "frame-r-001035-6-0017.fits.bz2"
    if not path.exists():
        pytest.skip(f"{path.name} not in the sample")
    with fits.open(path) as hdul:
        image, nmgy = hdul[0].data, hdul[0].header["NMGY"]
    row, col = np.unravel_index(np.argmax(image), image.shape)
    core = image[row - 10 : row + 11, col - 10 : col + 11]
    lo = (simulate.SATURATION_DN[0] - sim_formats.SOFTBIAS - 300.0) * nmgy * 0.95  # sky ~100-300 DN
    hi = (simulate.SATURATION_DN[1] - sim_formats.SOFTBIAS) * nmgy * 1.1
    assert ((core > lo) & (core < hi)).sum() >= 6


SKY_RESIDUAL = sky_models.sky_residual  # unpatched, however often a test patches it


def _render_with_residual_scale(monkeypatch, scale: float) -> dict:
    def scaled(rng: np.random.Generator, shape: tuple[int, int], modes: int = 8) -> np.ndarray:
        return SKY_RESIDUAL(rng, shape, modes) * np.float32(scale)

    monkeypatch.setattr(sky_models, "sky_residual", scaled)
    return simulate.render_field(simulate.FieldTask("unused", 301, 8162, 6, 82, 7, TINY_SHAPE))


def test_catalog_fluxes_leave_out_the_frames_smooth_sky_residual(monkeypatch):
    """photo measures its objects against its own local sky, which takes out the smooth pedestals the frames'
    sky model leaves (bench/photo_sky.py): scaling the residual changes the pixels but no catalog flux."""
    once, twice = (_render_with_residual_scale(monkeypatch, s) for s in (1.0, 2.0))
    np.testing.assert_array_equal(once["measured"]["index"], twice["measured"]["index"])
    for column in ("psfflux", "modelflux"):
        np.testing.assert_array_equal(once["measured"][column], twice["measured"][column])
    assert np.abs(once["images"]["r"] - twice["images"]["r"]).max() > 1e-3  # the residual is in the frame


def test_undetectable_objects_are_not_counted_twice_but_lend_their_light_to_neighbours(monkeypatch):
    """Objects below the detection limit on average are measured on a background holding their own light:
    their catalog fluxes stay unbiased (their light is not added twice), and the other objects' fluxes pick it up
    (photo deblends only the sources it detects)."""
    task = simulate.FieldTask("unused", 301, 8162, 6, 82, 7, TINY_SHAPE)
    out = simulate.render_field(task)
    cell = simulate.cell_truth(7, 8162, 6, 82, TINY_SHAPE)
    own = out["measured"][out["measured"]["cell"] == 82]
    true_flux, err = cell.psf_true[own["index"]], cell.psf_err[own["index"]]
    faint = ~simulate.detected_bands(true_flux, err).any(1)
    ok = np.isfinite(own["psfflux"]).all(1)
    assert (ok & faint).sum() > 40 and np.median(true_flux[ok & faint, 2] / err[ok & faint, 2]) > 1.0
    # counted twice, a faint object's flux would be off by its whole true flux (median S/N above 1 in r)
    assert abs(np.median((own["psfflux"] - true_flux)[ok & faint, 2] / err[ok & faint, 2])) < 0.3
    # with every object detectable, none lends its light: the others' model fluxes are lower
    monkeypatch.setattr(simulate, "DETECTION_SNR", -np.inf)
    alone = simulate.render_field(task)["measured"]
    alone = alone[alone["cell"] == 82]
    np.testing.assert_array_equal(alone["index"], own["index"])
    gained = (own["modelflux"] - alone["modelflux"])[ok & ~faint][:, 1:4].sum(1)
    touched = gained != 0  # objects with an undetectable neighbour inside their stamps
    assert touched.sum() > 10 and np.mean(gained[touched] > 0) > 0.7 and gained.sum() > 0


def test_bright_stars_have_the_real_psf_aureole():
    """Real SDSS PSFs hold an r^-2 aureole of scattered light out to 100+ px (bench/fidelity.py, psf_aureole.png): a rendered
    bright star's light per e-fold of radius stays at the field's drawn share from 30 to 150 px, where the core
    and wings alone fall 30-100 times lower."""
    cond = simulate.field_conditions(7, 8162, 6, 82)
    star = np.zeros(1, sky_models.POPULATION_DTYPE)
    star["star"], star["q"], star["mag"] = True, 1.0, 13.0
    size = 301
    image = np.zeros((size, size), np.float32)
    sky_to_pix = np.diag([-1.0, 1.0]) / simulate.PIXEL_SCALE_ARCSEC
    centre = np.array([size // 2], np.float64)
    simulate._render_objects(image, star, centre, centre, cond, "i", sky_to_pix)
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size // 2, xx - size // 2)
    flux = 10 ** (-0.4 * (13.0 - 22.5))
    for r_in in (30, 45, 70, 100, 130):
        ring = (radius >= r_in) & (radius < r_in * 1.2)
        per_efold = image[ring].mean() * 2 * np.pi * (r_in * 1.1) ** 2 / flux
        assert per_efold == pytest.approx(cond.aureole["i"], rel=0.25), r_in
    assert cond.aureole["i"] > 0.015  # real i-band aureoles hold 0.027-0.032 per e-fold (4510-4-30)
    # the aureole's own draw leaves every other condition of the field as it was
    assert simulate.field_conditions(7, 8162, 6, 82).seeing == cond.seeing


@pytest.mark.slow
@pytest.mark.xdist_group("demo_field_80")
def test_the_same_sky_to_the_bit_whichever_kernels_openblas_picks(demo_field_80, tmp_path):
    """The simulator's geometry (each field's WCS, the sky-to-pixel maps, galaxies' covariances) avoids numpy's
    BLAS calls, whose last bits depend on the kernels OpenBLAS picks for the processor: rebuilt on another
    machine (AVX-512 or not: OPENBLAS_CORETYPE stands in for it here), the frames and sweeps are the same. The
    fixture's field 80 was drawn under the newest kernels this processor runs; here it is drawn under the oldest
    (full size: a smaller frame hid the difference)."""
    import os
    import subprocess
    import sys

    from stargal.paths import PROJECT_ROOT

    data = tmp_path / "prescott"
    run = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "code" / "00_download.py"), "--data-dir", str(data), "--source",
         "simulated", "--fields", "80", "-q"],
        env=os.environ | {"OPENBLAS_CORETYPE": "Prescott"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr

    def contents(root):
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in ("manifest.json", ".lock"))
        return {p.relative_to(root): p.read_bytes() for p in files}

    default = contents(demo_field_80.root)
    assert len(default) >= 8  # five frames, the irg picture, two sweeps and the simulation's truth
    assert contents(data) == default


def test_a_frame_filed_under_another_rerun_is_refused(tiny_sky, tmp_path):
    """A frame's name carries no rerun, its folder does: rerun 301's frames filed (by a copy, or a local source
    asked for --rerun 40) under rerun 40 were aligned as rerun 40's, every id made of them naming another rerun.
    Their header RERUN ('301', text as in real frames) is read against the folder's rerun, as a sweep's RERUN is."""
    from stargal.stages.alignment import read_field_frames

    other = DataPaths(tmp_path / "data")
    moved = FieldId(40, TINY.run, TINY.camcol, 81)
    for b in BANDS:
        other.frame(moved, b).parent.mkdir(parents=True, exist_ok=True)
        other.frame(moved, b).write_bytes(tiny_sky.frame(fid(81), b).read_bytes())
    frame = sdss.read_frame(other.frame(moved, "g"))
    assert frame.header["RERUN"] == "301"
    assert sdss.frame_identity_problems(frame, "g", TINY.run, TINY.camcol, 81) == ["RERUN is 301, expected 40"]
    assert sdss.frame_identity_problems(frame, "g", TINY.run, TINY.camcol, 81, rerun=301) == []
    assert sdss.header_identity_problems(frame.header, "g", TINY.run, TINY.camcol, 81, rerun=40) == [
        "RERUN is 301, expected 40"
    ]
    assert sdss.frame_identity_problems(sdss.read_frame(tiny_sky.frame(fid(81), "g")), "g", 8162, 6, 81) == []
    with pytest.raises(StargalError, match="RERUN is 301, expected 40"):
        read_field_frames(other, moved, "r")
    read_field_frames(tiny_sky, fid(81), "r")  # in its own rerun's folder: accepted


def _sample_file_filed_as(sample_dir: Path, name: str, path: Path) -> Path:
    """A copy of 4510-4-30's sample file ``name`` at ``path`` (a SAS layout place); skips when the sample lacks it."""
    source = sample_dir / "004510-4-0030" / name
    if not source.exists():
        pytest.skip(f"{name} not in the sample")
    path.parent.mkdir(parents=True)
    path.write_bytes(source.read_bytes())
    return path


@pytest.mark.real
def test_a_real_frame_filed_under_another_rerun_is_refused(sample_dir, tmp_path):
    """Real frames write RERUN as text ('301'): read as the integer 301, against the rerun folder they are in."""
    relpath = sdss.frame_relpath("r", 40, 4510, 4, 30)
    frame = sdss.read_frame(_sample_file_filed_as(sample_dir, "frame-r-004510-4-0030.fits.bz2", tmp_path / relpath))
    assert sdss.frame_identity_problems(frame, "r", 4510, 4, 30) == ["RERUN is 301, expected 40"]
    assert sdss.frame_identity_problems(frame, "r", 4510, 4, 30, rerun=301) == []
    assert sdss.header_identity_problems(frame.header, "r", 4510, 4, 30, rerun=301) == []


def test_a_sweep_filed_under_another_rerun_is_refused(tiny_sky, tmp_path):
    """As frames: a sweep of rerun 301 copied into rerun 40's sweep folder was read as rerun 40's, its objects given
    rerun 40's ids; its RERUN column ('301', text as in real sweeps) is read against the folder's rerun."""
    name = sdss.catalog_filename(TINY.run, TINY.camcol, "star")
    moved = tmp_path / "sas" / sdss.catalog_relpath(40, TINY.run, TINY.camcol, "star")
    moved.parent.mkdir(parents=True)
    moved.write_bytes(tiny_sky.catalog(301, TINY.run, TINY.camcol, "star").read_bytes())
    with pytest.raises(StargalError, match="rows of RERUN 301, but the file is in rerun 40's folder"):
        sdss.read_catalog(moved)
    assert len(sdss.read_catalog(tiny_sky.catalog(301, TINY.run, TINY.camcol, "star"))) > 0
    elsewhere = tmp_path / "any" / name  # outside the SAS layout: no rerun to compare with
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(moved.read_bytes())
    assert len(sdss.read_catalog(elsewhere)) > 0


@pytest.mark.real
def test_a_real_sweep_filed_under_another_rerun_is_refused(sample_dir, tmp_path):
    own, other = (
        _sample_file_filed_as(
            sample_dir, "calibObj-004510-4-star.fits.gz", tmp_path / sdss.catalog_relpath(rerun, 4510, 4, "star")
        )
        for rerun in (301, 40)
    )
    assert len(sdss.read_catalog(own)) == 5232
    with pytest.raises(StargalError, match="rows of RERUN 301, but the file is in rerun 40's folder"):
        sdss.read_catalog(other)
