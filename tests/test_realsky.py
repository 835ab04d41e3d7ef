"""The real-sky evaluation: stellar locus, PSF maps, source measurement, the evaluation's cores and runner."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import toy_models as toy
from conftest import TINY_SHAPE
from scipy.spatial import cKDTree

from stargal import detection, fidelity, locus, realsky, sdss, simulate, sky_models
from stargal.config import BANDS, FieldSet
from stargal.cube import read_cube
from stargal.errors import StargalError
from stargal.fsio import read_json
from stargal.geometry import unit_vectors
from stargal.paths import PRETRAINED, PRETRAINED_MODEL_DIR, PROJECT_ROOT, DataPaths, FieldId
from stargal.psf import (
    PSFMap,
    fit_psf_map,
    measure_psf_map,
    outside_trained_range,
    pixel_noise,
    trained_psf_range,
    widen_psf,
)
from stargal.sim_formats import TRUTH_DTYPE
from stargal.tables import read_table

# one worker for the module: its module-scoped fields (a full-size simulated one, the real 4510-4-30) are then
# made once, not once per worker
pytestmark = pytest.mark.xdist_group("realsky")


def test_locus_curve_points_are_on_it_and_offsets_are_not():
    gr, ri = locus.locus_curve(50)
    assert np.all(locus.locus_distance(gr, ri) < 3e-3)  # the curve is sampled at 2000 points
    # 0.3 mag off the curve, perpendicular-ish (straight up in r-i on the blue part)
    blue = gr < 1.0
    assert np.all(locus.locus_distance(gr[blue], ri[blue] + 0.3) > locus.LOCUS_TOLERANCE)
    assert np.isnan(locus.locus_distance(np.array([np.nan]), np.array([0.2]))[0])


def test_reddening_is_recovered_from_reddened_stars():
    rng = np.random.default_rng(0)
    gr, ri = locus.locus_curve(400)
    pick = rng.choice(len(gr), 300)
    ebv = 0.8
    g_r = gr[pick] + locus.REDDENING[0] * ebv + rng.normal(0, 0.03, 300)
    r_i = ri[pick] + locus.REDDENING[1] * ebv + rng.normal(0, 0.03, 300)
    assert locus.fit_reddening(g_r, r_i) == pytest.approx(ebv, abs=0.1)
    assert locus.fit_reddening(np.array([]), np.array([])) == 0.0


def test_ri_residual_is_the_offset_from_the_locus_on_its_blue_branch():
    gr, ri = locus.locus_curve(200)
    blue = (gr >= 0.25) & (gr <= 1.05)
    np.testing.assert_allclose(locus.ri_residual(gr[blue], ri[blue]), 0.0, atol=2e-3)
    np.testing.assert_allclose(locus.ri_residual(gr[blue], ri[blue] + 0.1), 0.1, atol=2e-3)
    ebv = 0.5  # reddened stars are measured against the reddened locus
    reddened = locus.ri_residual(gr[blue] + locus.REDDENING[0] * ebv, ri[blue] + locus.REDDENING[1] * ebv, ebv)
    np.testing.assert_allclose(reddened, 0.0, atol=2e-3)
    # red M dwarfs (g-r levels off, r-i runs on) and blue sources off the branch, and missing colours: NaN
    assert np.isnan(locus.ri_residual(np.array([1.38, 0.0, np.nan]), np.array([1.2, -0.1, 0.2]))).all()


def test_fractions_intervals_and_quadrants():
    f = realsky.fraction(np.array([1, 1, 0, 1], bool))
    assert (f["n"], f["k"], f["fraction"]) == (4, 3, 0.75) and f["low"] < 0.75 < f["high"]
    assert realsky.fraction(np.zeros(0, bool))["fraction"] is None
    q = realsky.quadrant(np.array([10, 1500, 10, 1500]), np.array([10, 10, 1000, 1000]), (1489, 2048))
    assert q.tolist() == [0, 1, 2, 3]
    rows = realsky.by_bins(np.array([1, 0, 1, 1], bool), np.array([15.0, 21.5, 22.5, np.nan]), realsky.RECALL_BINS)
    assert [r["n"] for r in rows] == [1, 1, 1]  # the NaN magnitude is in no bin
    two = realsky.two_sided(np.array([1, 1, 1, 0], bool), np.array([0, 0, 1], bool))
    assert two["star_recall"]["fraction"] == 0.75 and two["non_catalog_called_star"]["k"] == 1
    assert -1 <= two["mcc"] <= 1
    bright = realsky.saturating_check(np.array([1, 0, 1, 1], bool), np.array([13.0, 15.9, 16.0, np.nan]))
    assert (bright["n"], bright["k"]) == (2, 1)  # r = 16 and a NaN magnitude are not "brighter than 16"


def _quadrants(*counts: tuple[int, int]) -> list[dict]:
    return [{"k": k, "n": n} for k, n in counts]


def test_quadrant_p_value_tells_counting_noise_from_a_failing_quadrant():
    from scipy.stats import chi2_contingency

    assert realsky.quadrant_p_value(_quadrants((10, 20), (10, 20), (10, 20), (10, 20))) == 1.0
    assert realsky.quadrant_p_value(_quadrants((20, 20), (19, 20), (20, 20), (5, 20))) < 0.001
    # a 10-point gap on a few dozen stars is what chance gives often
    assert realsky.quadrant_p_value(_quadrants((9, 11), (7, 8), (7, 10), (5, 7))) > 0.5
    assert realsky.quadrant_p_value(_quadrants((5, 5), (7, 7), (0, 0), (3, 3))) is None  # all on: nothing to test
    assert realsky.quadrant_p_value(_quadrants((3, 5), (0, 0), (0, 0), (0, 0))) is None  # one quadrant
    # with many sources it agrees with the asymptotic chi-square test
    big = ((1492, 1704), (1612, 1887), (1402, 1582), (1373, 1568))
    asymptotic = chi2_contingency(np.array([[k, n - k] for k, n in big]))[1]
    assert realsky.quadrant_p_value(_quadrants(*big)) == pytest.approx(asymptotic, abs=0.01)


def test_psf_map_follows_a_gradient_and_refuses_a_starless_frame():
    rng = np.random.default_rng(1)
    n, shape = 200, (1000, 2000)
    x, y = rng.uniform(0, shape[1], n), rng.uniform(0, shape[0], n)
    xn = (x - (shape[1] - 1) / 2) / (shape[1] / 2)
    r50 = np.stack([2.0 + 0.2 * xn + rng.normal(0, 0.02, n)] * 5, 1)
    r50[:5] = 9.0  # galaxies that slipped in: clipped
    pmap = fit_psf_map(r50, x, y, np.ones(n, bool), shape, "ugriz")
    at = pmap.at(np.array([0.0, (shape[1] - 1) / 2, shape[1] - 1.0]), np.full(3, shape[0] / 2))
    np.testing.assert_allclose(at[:, 2], [1.8, 2.0, 2.2], atol=0.02)
    again = PSFMap.from_dict(pmap.to_dict())
    np.testing.assert_array_equal(again.coefficients, pmap.coefficients)
    far = pmap.at(np.array([1e6]), np.array([0.0]))  # clamped, never extrapolated wildly
    assert np.all(far <= 2.0 * 1.25 + 1e-6)
    with pytest.raises(StargalError, match="no star"):
        fit_psf_map(r50, x, y, np.zeros(n, bool), shape, "ugriz")
    with pytest.raises(StargalError, match="PSF map"):
        PSFMap.from_dict({"version": 1, "terms": ["1"]}, "x.json")


def test_trained_psf_range_and_a_field_outside_it():
    rng = np.random.default_rng(2)
    r50 = np.stack([rng.uniform(1.5, 2.5, 10_000) * f for f in (1.2, 1.1, 1.0, 1.05, 1.1)], 1)
    trained = trained_psf_range(r50, "ugriz")
    assert trained["bands"] == "ugriz" and trained["percentiles"] == [0.5, 99.5]
    np.testing.assert_allclose(trained["low"], [1.5 * f for f in (1.2, 1.1, 1.0, 1.05, 1.1)], rtol=0.01)
    np.testing.assert_allclose(trained["high"], [2.5 * f for f in (1.2, 1.1, 1.0, 1.05, 1.1)], rtol=0.01)
    assert outside_trained_range(np.array([2.4, 2.2, 2.0, 2.1, 2.2]), trained, "ugriz") == []
    # worse seeing in r and a band sharper than any training field
    assert outside_trained_range(np.array([2.4, 2.2, 3.1, 2.1, 1.2]), trained, "ugriz") == [
        f"r 3.10 px > {trained['high'][2]:.2f}",
        f"z 1.20 px < {trained['low'][4]:.2f}",
    ]
    with pytest.raises(ValueError, match="other bands"):
        outside_trained_range(np.ones(3), trained_psf_range(r50[:, :3], "gri"), "ugr")
    with pytest.raises(ValueError, match="malformed"):
        outside_trained_range(np.ones(5), {"bands": "ugriz", "low": [1.0] * 5}, "ugriz")
    with pytest.raises(ValueError, match="r50"):
        trained_psf_range(r50[:0], "ugriz")


def test_widen_psf_blurs_stars_and_keeps_the_pixel_noise():
    rng = np.random.default_rng(3)
    rows, cols, sigma = 200, 300, 1.3
    yy, xx = np.mgrid[0:rows, 0:cols]
    star = np.exp(-0.5 * ((xx - 150) ** 2 + (yy - 100) ** 2) / sigma**2)
    data = np.stack([1000 * star / star.sum(), rng.normal(0, 0.05, (rows, cols))]).astype(np.float32)  # star; sky
    data[1, :10] = np.nan  # no data along one edge
    r50 = np.full(2, 1.1774 * sigma)
    wide = widen_psf(data, r50, 1.5, np.random.default_rng(0))
    assert wide.dtype == np.float32 and wide.shape == data.shape
    np.testing.assert_array_equal(np.isnan(wide), np.isnan(data))
    # the star's second moment grows 1.5 times (a Gaussian convolved with a Gaussian)
    cut = wide[0, 80:121, 130:171]
    w = np.clip(cut, 0, None)
    dy, dx = np.mgrid[-20:21, -20:21]
    assert np.sqrt((w * (dx**2 + dy**2)).sum() / w.sum() / 2) == pytest.approx(1.5 * sigma, rel=0.06)
    assert wide[0].sum() == pytest.approx(1000, rel=1e-3)  # flux kept
    # the sky keeps its noise, white as on a worse night: per pixel and summed over a source-sized box
    assert np.nanstd(wide[1]) == pytest.approx(0.05, rel=0.05)
    boxes = wide[1, 20:, :].reshape(18, 10, 30, 10).sum(axis=(1, 3))
    assert np.std(boxes) == pytest.approx(0.05 * 10, rel=0.15)
    np.testing.assert_array_equal(widen_psf(data, r50, 1.0, rng), data)
    with pytest.raises(ValueError, match="scale"):
        widen_psf(data, r50, 0.9, rng)


ONE_FIELD = FieldSet(301, 8162, 6, (80,), (80,), (), ())
ONE_FIELD_SEED = 8  # field 80 of seed 8: |b| = 58 deg, 0.94" seeing, an ordinary high-latitude field


@pytest.fixture(scope="module")
def one_field(tmp_path_factory):
    """One full-size simulated field, aligned (with its PSF map), its sources matched to the truth."""
    from stargal.stages.alignment import FieldTask, process_field
    from stargal.stages.simulate import simulate_sky

    paths = DataPaths(tmp_path_factory.mktemp("one_field") / "data")
    simulate_sky(paths, ONE_FIELD, seed=ONE_FIELD_SEED, workers=2)
    fid = FieldId(301, 8162, 6, 80)
    process_field(FieldTask(str(paths.root), fid))
    truth = read_table(paths.sim_truth(301, 8162, 6), dtype=TRUTH_DTYPE)
    cube = read_cube(paths.cube(fid))
    s = detection.measure_sources(np.asarray(cube.data, np.float32), cube.bands)
    ra, dec = cube.wcs.celestial.wcs_pix2world(s.x, s.y, 0)
    d, idx = cKDTree(unit_vectors(truth["ra"], truth["dec"])).query(unit_vectors(ra, dec))
    matched = d < 1.0 / 206265  # within 1" (chord on the unit sphere)
    m = s.magnitude[matched]
    return {
        "paths": paths,
        "fid": fid,
        "sources": s,
        "gr": m[:, 1] - m[:, 2],
        "ri": m[:, 2] - m[:, 3],
        "r": m[:, 2],
        "pointlike": s.star[matched],
        "star": truth["label"][idx[matched]] == 1,
    }


@pytest.mark.slow
def test_locus_check_passes_on_simulated_stars_and_fails_on_galaxies(one_field):
    s = one_field
    quad = np.zeros(len(s["r"]), np.int8)
    # a perfect classifier (the simulator's truth) as the "model"
    check = realsky.locus_check(s["gr"], s["ri"], s["r"], s["star"], s["pointlike"], quad)
    assert check["called_star"]["n"] >= 30 and check["called_galaxy"]["n"] >= 15
    # measured colours (not the true ones): most true stars lie on the locus, and clearly more of them than of
    # the galaxies, several of which have star-like colours at these magnitudes (of the 17-23 galaxies a field
    # holds at 16 < r < 20, 33-72 % over sky seeds 7-11, 12-56 points fewer than of its stars, 81-97 %)
    assert check["called_star"]["fraction"] >= 0.8
    assert check["called_galaxy"]["fraction"] <= check["called_star"]["fraction"] - 0.1
    # a classifier calling everything star fails the test
    everything = realsky.locus_check(s["gr"], s["ri"], s["r"], np.ones(len(s["r"]), bool), s["pointlike"], quad)
    assert everything["called_star"]["fraction"] < check["called_star"]["fraction"] - 0.03


@pytest.mark.slow
def test_psf_map_of_a_simulated_cube_follows_its_stars(one_field):
    paths, fid, s = one_field["paths"], one_field["fid"], one_field["sources"]
    pmap = PSFMap.from_dict(read_json(paths.psf_map(fid)))
    assert pmap.bands == "ugriz" and pmap.stars >= 30
    at = pmap.at(s.x[s.star], s.y[s.star])
    # u: most stars are faint in u, their u sizes scatter by 40 %, so the median of ~30 is uncertain by ~8 %
    rtol = np.array([0.15, 0.05, 0.05, 0.05, 0.05])
    assert np.all(np.abs(np.median(at, 0) / np.nanmedian(s.r50[s.star], 0) - 1) <= rtol)
    # and the map follows the simulator's own PSF: a wider core gives wider stars
    cond = simulate.field_conditions(ONE_FIELD_SEED, 8162, 6, 80)
    ratio = np.array([cond.seeing[b] for b in "ugriz"]) / cond.seeing["r"]
    np.testing.assert_allclose(pmap.coefficients[:, 0] / pmap.coefficients[2, 0], ratio, rtol=0.12)


def test_single_band_sources_are_artefacts():
    """Seen in r alone: a cosmic ray or hot pixel; the reddest star (g-r 1.6, r-i 2.5) or a faint noisy source
    is not; a band without data decides nothing."""
    flux = np.array(
        [
            [0.0, 0.1, 100.0, -0.2, 0.0],  # a spike in r
            [1.0, 22.9, 100.0, 1000.0, 2000.0],  # an M dwarf: g-r 1.6, r-i 2.5
            [0.0, 0.4, 1.0, 0.3, 0.0],  # faint: g and i within the noise but above 5 % of r
            [0.0, np.nan, 100.0, 0.0, 0.0],  # g not covered
            [0.0, 0.0, -1.0, 0.0, 0.0],  # no r flux
        ]
    )
    assert detection.single_band(flux, "ugriz").tolist() == [True, False, False, False, False]


def test_detection_finds_sources_sizes_and_stars():
    data, _, xs, ys, kinds = toy.toy_cube(shape=(200, 300), n=30, seed=5)
    s = detection.measure_sources(data, "ugriz")
    d = np.hypot(xs[:, None] - s.x[None], ys[:, None] - s.y[None])
    assert np.all(d.min(axis=1) < 1.0)  # every source found at its position
    nearest = d.argmin(axis=1)
    star = kinds == "star"
    # the toy stars are Gaussians of sigma 1.1 px: half-light radius 1.1774 x 1.1
    assert s.stellar_r50[2] == pytest.approx(1.1774 * 1.1, rel=0.08)
    assert np.all(s.r50[nearest[~star], 2] > 1.3 * s.stellar_r50[2])
    assert s.star[nearest[star]].mean() > 0.8 and not s.star[nearest[~star]].any()
    # PSF-weighted fluxes of the stars, corrected with the stars themselves, give their colours
    flux = s.flux[nearest[star]]
    np.testing.assert_allclose(np.median(flux / flux[:, [2]], 0), toy.SED / toy.SED[2], rtol=0.05)


def _point_sources(snr: np.ndarray, positions: np.ndarray, shape=(400, 600), sigma=1.5, seed=3) -> np.ndarray:
    """Unit-noise image with Gaussian stars of the given PSF signal-to-noise (the optimal, matched-filter one)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 1.0, shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for s, (x, y) in zip(snr, positions, strict=True):
        flux = s * np.sqrt(4 * np.pi * sigma**2)  # the noise of an optimal PSF fit is sqrt(4 pi sigma^2) x rms
        image += (flux / (2 * np.pi * sigma**2) * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2)).astype(
            np.float32
        )
    return image


def _found(x, y, positions) -> np.ndarray:
    if len(x) == 0:
        return np.zeros(len(positions), bool)
    return np.hypot(positions[:, :1] - x[None], positions[:, 1:] - y[None]).min(1) < 2.0


def test_faint_detection_reaches_a_psf_signal_to_noise_of_five_and_keeps_every_bright_source():
    grid = np.array([(40 + 60 * i, 40 + 55 * j) for i in range(10) for j in range(7)], float)
    snr = np.linspace(3.0, 20.0, len(grid))
    image = _point_sources(snr, grid)
    bx, by, _ = detection.detect(image, 1.0)
    fx, fy, _ = detection.detect(image, 1.0, faint=True)
    bright, faint = _found(bx, by, grid), _found(fx, fy, grid)
    assert faint[snr >= 6].all() and faint[snr < 4].mean() < 0.5  # SDSS's limit: 5 sigma in a matched filter
    assert not bright[snr < 8].any()  # the bright detection stops far above it
    assert len(fx) - faint.sum() <= 1  # pure noise peaks over 240,000 pixels: at most one
    # the faint pass adds sources and never moves or drops a bright one
    np.testing.assert_array_equal(fx[: len(bx)], bx)
    # a close pair of bright stars (3.3 sigma apart) stays two sources, as the matched filter alone would merge
    pair = np.array([[200.0, 200.0], [205.0, 200.0]])
    image = _point_sources(np.array([60.0, 60.0]), pair)
    fx, fy, _ = detection.detect(image, 1.0, faint=True)
    assert _found(fx, fy, pair[:1]).all() and _found(fx, fy, pair[1:]).all() and len(fx) == 2


def test_sources_split_from_a_blend_are_marked_deblended_and_lone_ones_not():
    pair = np.array([[200.0, 200.0], [205.0, 200.0]])  # 3.3 sigma apart: one blend, split in two
    lone = np.array([[400.0, 100.0], [100.0, 300.0]])
    image = _point_sources(np.array([60.0, 60.0, 60.0, 30.0]), np.r_[pair, lone])
    x, y, flag = detection.detect(image, 1.0, faint=True)
    sources = detection.Sources(x, y, flag, *(np.zeros((len(x), 5)),) * 2, np.zeros(5), np.zeros(len(x), bool))

    def at(positions):  # the sources within 2 px of any of the positions
        return np.hypot(positions[:, :1] - x[None], positions[:, 1:] - y[None]).min(0) < 2.0

    assert len(sources) == 4 and at(pair).sum() == 2 and at(lone).sum() == 2
    assert sources.deblended[at(pair)].all() and not sources.deblended[at(lone)].any()


def test_faint_detection_finds_most_catalogued_simulated_objects_and_little_else(one_field):
    paths, fid = one_field["paths"], one_field["fid"]
    cube = read_cube(paths.cube(fid))
    truth = read_table(paths.sim_truth(301, 8162, 6), dtype=TRUTH_DTYPE)
    every = cKDTree(unit_vectors(truth["ra"], truth["dec"]))
    truth = truth[truth["field"] == fid.field]
    catalogued = truth["id"] >= 0
    found, spurious = {}, {}
    for faint, sources in ((False, one_field["sources"]), (True, None)):
        s = sources or detection.measure_sources(np.asarray(cube.data, np.float32), cube.bands, faint=True)
        ra, dec = cube.wcs.celestial.wcs_pix2world(s.x, s.y, 0)
        d, _ = cKDTree(unit_vectors(ra, dec)).query(unit_vectors(truth["ra"], truth["dec"]))
        found[faint] = d < 1.5 / 206265
        spurious[faint] = every.query(unit_vectors(ra, dec))[0] > 1.5 / 206265  # no simulated object within 1.5"
    # the catalog lists what SDSS's detection finds: the faint detection finds most of it, the bright one half
    assert found[True][catalogued].mean() >= 0.75 and found[False][catalogued].mean() <= 0.65
    stars_22 = (truth["cls"] == "star") & (truth["r"] >= 22.0) & (truth["r"] < 22.5)

    assert found[True][stars_22].mean() >= found[False][stars_22].mean() + 0.3
    assert spurious[True].mean() <= 0.02  # noise peaks and shreds


def _load_bench(name: str):
    """The module of bench/NAME.py (benches are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_faint_stars_bench_tabulates_a_simulated_field(one_field, tmp_path, capsys):
    bench = _load_bench("faint_stars")
    args = ["--data-dir", str(one_field["paths"].root), "--fields", "80", "--sample", str(tmp_path / "absent"), "-q"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| simulated 80 |")]
    assert len(rows) == 1
    # SDSS's labels against the simulated truth: pure for bright stars, impure beyond r = 22
    second = out[next(i for i, line in enumerate(out) if line.startswith("simulated fields:")) :]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in second if line.startswith("| ")]
    truth = {row[0]: row for row in cells}
    assert float(truth["< 21"][2].split(" %")[0]) >= 95
    assert float(truth["22-22.5"][2].split(" %")[0]) < float(truth["< 21"][2].split(" %")[0])
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert int(cells[1]) >= 150  # catalog stars classified (180 on simulator version 8)
    bright, found = cells[2], cells[-1]  # r < 21 and those the detection finds: "98.5 % (130/132)"
    assert float(bright.split(" %")[0]) >= 90 and float(found.split(" %")[0]) >= 85


def test_blank_sky_bench_counts_what_the_source_check_drops_and_how_it_is_classified():
    bench = _load_bench("blank_sky")
    d = {
        "r": np.array([23.5, 24.0, 22.5, 22.1, 20.0, 18.0]),
        "no_source": np.array([True, True, False, False, False, False]),
        "right": np.array([True, False, True, False, True, True]),
    }
    rows = {row[0]: row[1:] for row in bench.table_rows(d)}
    assert rows["no_source"][:2] == [2, "23.50-24.00"] and rows["no_source"][2].endswith("(1/2)")
    assert rows["others with r >= 22"][:2] == [2, "22.10-22.50"] and rows["others with r >= 22"][2].endswith("(1/2)")
    assert rows["all others"][0] == 4 and rows["all others"][2].endswith("(3/4)")


@pytest.mark.slow
def test_blank_sky_bench_on_a_simulated_field(one_field, tmp_path, capsys):
    from stargal.stages.alignment import run_alignment

    bench = _load_bench("blank_sky")
    paths = DataPaths(tmp_path / "data")  # a copy: stage 01 adds the field's objects table
    shutil.copytree(one_field["paths"].root, paths.root)
    run_alignment(paths, ONE_FIELD, workers=1, reports=False)
    assert bench.main(["--data-dir", str(paths.root), "--fields", "80", "-q"]) == 0
    rows = {
        cells[0]: cells[1:]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])[1].isdigit()
    }
    # nearly every catalogued object shows a source where it is listed, and the rest are fainter than r = 22
    others, dropped = int(rows["all others"][0]), int(rows["no_source"][0])
    assert others >= 500 and dropped <= 0.02 * others
    if dropped:
        assert float(rows["no_source"][1].split("-")[0]) >= 22
    assert float(rows["all others"][2].split(" %")[0]) >= 85


@pytest.mark.slow
def test_locus_scatter_bench_tabulates_a_simulated_field(one_field, tmp_path, capsys):
    bench = _load_bench("locus_scatter")
    args = ["--simulated", str(one_field["paths"].root), "--fields", "80", "80", "--sample", str(tmp_path / "no"), "-q"]
    assert bench.main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| simulated 80 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert float(cells[2].split(" %")[0]) >= 80  # the simulated stars lie on the locus
    # measured on simulated fields 375-379 (seed 42): the stars' r-i scatter about the locus 0.05-0.07 mag, the
    # median within 0.11 of it (the real high-latitude fields: 0.025-0.039, within 0.04)
    assert int(cells[3]) >= 10 and abs(float(cells[4])) < 0.15 and 0.02 < float(cells[5]) < 0.1
    # the same stars in apertures on the cube and on the frames it was aligned from: the alignment keeps colours
    on_cube, on_frames = float(cells[6]), float(cells[7])
    assert 0.02 < on_cube < 0.1 and abs(on_frames - on_cube) < 0.01
    with pytest.raises(SystemExit):
        bench.main(["--simulated", str(one_field["paths"].root), "-q"])  # --fields missing


def _shape_fits(data: np.ndarray, bands: str) -> dict:
    """Per band g, r, i: the PSF model fits (rms, wing share, FWHM) of the cube's stacked stars, per core beta."""
    ee = np.asarray(fidelity.measure_cube(data, bands)["encircled_energy"])
    return {
        band: {beta: fidelity.fit_psf_shape(ee[bands.index(band)], beta) for beta in fidelity.CORE_BETAS}
        for band in "gri"
    }


def _best_beta(fits: list[dict]) -> float:
    """The core beta with the least summed rms over every field and band of ``fits``."""
    return min(fidelity.CORE_BETAS, key=lambda beta: sum(f[band][beta][0] for f in fits for band in f))


@pytest.mark.slow
def test_simulated_stars_recover_the_psf_shape_they_were_drawn_with(one_field):
    """The shape fit reads a simulated field's core beta and wing shares back from its stacked stars."""
    paths, fid = one_field["paths"], one_field["fid"]
    cube = read_cube(paths.cube(fid))
    fits = _shape_fits(np.asarray(cube.data, np.float32), cube.bands)
    assert _best_beta([fits]) == sky_models.PSF_CORE_BETA
    drawn = simulate.field_conditions(ONE_FIELD_SEED, 8162, 6, 80).wing
    for band, by_beta in fits.items():
        assert by_beta[sky_models.PSF_CORE_BETA][1] == pytest.approx(drawn[band], abs=0.05), band


@pytest.fixture(scope="module")
def real_4510(sample_dir, tmp_path_factory):
    """4510-4-30 of the sample, aligned, with its star sweep."""
    from stargal.stages.realsky import discover, prepare_field

    field = next(f for f in discover(sample_dir / "004510-4-0030") if f.star_catalog is not None)
    paths = DataPaths(tmp_path_factory.mktemp("real_4510") / "data")
    prepare_field(paths, field)
    return field, read_cube(paths.cube(field.fid))


@pytest.mark.real
def test_real_psf_cores_have_the_simulators_shape(real_4510, sample_dir, tmp_path):
    """Stacks of real stars (4510-4-30 and 8162-6-80, g r i) are fitted best by the simulator's core beta (4,
    not the near-Gaussian 6 of simulator version 5), with wing shares inside the range it draws."""
    from stargal.stages.realsky import discover, prepare_field

    if not (sample_dir / "008162-6-0080").is_dir():
        pytest.skip("the sample lacks field 8162-6-80")
    paths = DataPaths(tmp_path / "data")
    field = discover(sample_dir / "008162-6-0080")[0]
    prepare_field(paths, field)
    cubes = [real_4510[1], read_cube(paths.cube(field.fid))]
    fits = [_shape_fits(np.asarray(c.data, np.float32), c.bands) for c in cubes]
    assert _best_beta(fits) == sky_models.PSF_CORE_BETA
    lo, hi = sky_models.PSF_WING_FRACTION
    for f in fits:
        for band, by_beta in f.items():
            assert lo - 0.03 <= by_beta[sky_models.PSF_CORE_BETA][1] <= hi + 0.03, band


@pytest.mark.real
def test_photometry_reproduces_the_sdss_psf_magnitudes_of_real_stars(real_4510):
    from astropy.coordinates import SkyCoord

    from stargal import sdss
    from stargal.config import BANDS

    field, cube = real_4510
    s = detection.measure_sources(np.asarray(cube.data, np.float32), cube.bands)
    catalog = sdss.read_catalog(field.star_catalog)
    ra, dec = cube.wcs.celestial.wcs_pix2world(s.x, s.y, 0)
    index, distance, _ = SkyCoord(ra, dec, unit="deg").match_to_catalog_sky(
        SkyCoord(catalog["RA"], catalog["DEC"], unit="deg")
    )
    matched = (distance.arcsec < 1.0) & s.star  # the field's bright unsaturated catalog stars
    assert matched.sum() >= 15
    for b, band in enumerate(cube.bands):
        theirs = sdss.magnitude(catalog["PSFFLUX"][index[matched], BANDS.index(band)])
        offset = np.nanmedian(s.magnitude[matched, b] - theirs)
        assert abs(offset) < 0.05, f"{band}: our magnitudes differ from SDSS's PSF magnitudes by {offset:+.3f}"


@pytest.mark.real
def test_real_bands_are_registered_on_their_stars(sample_dir, tmp_path):
    """7264-3-111's g frame sits 0.3 px off its WCS: stage 01 measures it, shifts g onto r's stars and says so
    in the cube's header; afterwards every band's stars lie within 0.08 px of r's."""
    from stargal.stages.realsky import discover, prepare_field

    if not (sample_dir / "007264-3-0111").is_dir():
        pytest.skip("the sample lacks field 7264-3-111")
    field = discover(sample_dir / "007264-3-0111")[0]
    paths = DataPaths(tmp_path / "data")
    prepare_field(paths, field)
    cube = read_cube(paths.cube(field.fid))
    assert np.hypot(cube.header["REGDX_g"], cube.header["REGDY_g"]) > 0.2
    assert cube.header["REGDX_r"] == 0 and cube.header["REGDY_r"] == 0
    offsets = detection.band_offsets(np.asarray(cube.data, np.float32), cube.bands)
    for band, (dx, dy, n) in zip(cube.bands, offsets, strict=True):
        assert n >= detection.MIN_OFFSET_STARS and np.hypot(dx, dy) < 0.08, band


def test_compare_bench_pools_the_labelled_check_over_the_fields_that_have_it():
    from sklearn.metrics import matthews_corrcoef

    bench = _load_bench("compare_real_sky")
    matrices = ([[8, 2], [1, 9]], [[5, 0], [3, 2]])  # [[tn, fp], [fn, tp]] of two fields
    record = {"fields": [{"labelled": {"overall": {"confusion_matrix": m}}} for m in matrices] + [{"locus": {}}]}
    truth = np.r_[np.zeros(8 + 2 + 5), np.ones(1 + 9 + 3 + 2)]
    called = np.r_[np.zeros(8), np.ones(2), np.zeros(5), np.zeros(1), np.ones(9), np.zeros(3), np.ones(2)]
    assert bench._labelled(record, "accuracy") == pytest.approx((truth == called).mean())
    assert bench._labelled(record, "mcc") == pytest.approx(matthews_corrcoef(truth, called))
    assert bench._labelled({"fields": [{"locus": {}}]}, "mcc") is None


def test_noisier_sky_scales_the_pixel_noise_and_keeps_missing_pixels():
    bench = _load_bench("worse_seeing")
    rng = np.random.default_rng(5)
    cube = rng.normal(0.0, [[[0.02]], [[0.05]]], (2, 300, 300)).astype(np.float32)
    cube[1, :10, :10] = np.nan
    noisy = bench.noisier(cube, 2.0, np.random.default_rng(6))
    assert noisy.dtype == np.float32 and np.isnan(noisy[1, :10, :10]).all() and np.isfinite(noisy[0]).all()
    for b, sigma in enumerate((0.02, 0.05)):
        assert np.nanstd(noisy[b]) == pytest.approx(2 * sigma, rel=0.03)


def test_injected_sources_look_like_the_fields_own_and_get_photos_labels(one_field):
    """bench/inject_real.py: stars injected at a field's PSF map measure as its own stars do; bright injected
    stars are labelled star and bright extended galaxies galaxy; objects far below the sweeps' limit are not
    catalogued; the labels' fluxes take in a neighbour's light on the field's pixels and not on noise alone."""
    bench = _load_bench("inject_real")
    field = bench.load_field(one_field["paths"], "8162-6-80", 25, 0.03)
    data, pmap, shape = field.data, field.pmap, field.data.shape[1:]
    # the frames' noise, as photo sees it: r is the reference grid; resampling smoothed the other bands' noise
    cube_noise = np.array([pixel_noise(band[np.isfinite(band)]) for band in data])
    assert field.sigma[2] == pytest.approx(cube_noise[2], rel=0.02)
    assert (field.sigma[[0, 1, 3, 4]] > 1.15 * cube_noise[[0, 1, 3, 4]]).all()
    rng = np.random.default_rng(0)
    stars = sky_models.draw_stars(rng, 6000)
    stars = stars[(stars["mag"][:, 2] > 16) & (stars["mag"][:, 2] < 19.5)][:400]
    galaxies = sky_models.draw_galaxies(rng, 3000)
    galaxies = galaxies[(galaxies["mag"][:, 2] > 16) & (galaxies["mag"][:, 2] < 19.5) & (galaxies["re"] > 1.0)][:100]
    faint = sky_models.draw_stars(rng, 100)
    faint["mag"] = 26.0
    pop = np.concatenate([stars, galaxies, faint])
    x = rng.uniform(30, shape[1] - 30, 4 * len(pop))
    y = rng.uniform(30, shape[0] - 30, 4 * len(pop))
    on_free = field.free[np.round(y).astype(int), np.round(x).astype(int)]
    assert on_free.mean() > 0.6  # most of a high-latitude frame is sky
    x, y = x[on_free][: len(pop)], y[on_free][: len(pop)]
    injected, psf_flux, model_flux, psf_err = bench.inject(data, pmap, field.sky_to_pix, pop, x, y, field.sigma, rng)
    assert injected.shape == data.shape and not np.shares_memory(injected, data)
    measured = measure_psf_map(injected, "ugriz").centre()  # now ~10 injected stars to each of the field's
    np.testing.assert_allclose(measured[1:], pmap.centre()[1:], rtol=0.04)  # g r i z
    listed = simulate.detected(psf_flux, psf_err)
    kind = simulate.star_galaxy_type(psf_flux, model_flux, psf_err)
    n_star, n_gal = len(stars), len(galaxies)
    assert listed[: n_star + n_gal].all() and not listed[n_star + n_gal :].any()
    assert np.mean(kind[:n_star] == 6) >= 0.95 and np.mean(kind[n_star : n_star + n_gal] == 3) >= 0.9
    # faint stars injected onto the field's bright sources: measured on the pixels, the neighbour's light is in
    # their fluxes; measured on independent noise (labels_on_sky=False), only their own light and noise
    src = one_field["sources"]
    bright = np.flatnonzero((src.magnitude[:, 2] > 16) & (src.magnitude[:, 2] < 18))[:20]
    faint = sky_models.draw_stars(rng, len(bright))
    faint["mag"] = 21.0
    true_r = 10 ** (-0.4 * (21.0 - 22.5))
    for on_sky in (True, False):
        _, psf_flux, _, psf_err = bench.inject(
            data, pmap, field.sky_to_pix, faint, src.x[bright], src.y[bright], field.sigma, rng, on_sky
        )
        pull = (psf_flux[:, 2] - true_r) / psf_err[:, 2]
        assert (np.median(pull) > 20) if on_sky else (np.abs(pull) < 5).all()


def _tiny_dataset(paths: DataPaths, name: str, n: int = 6, size: int = 25) -> None:
    """A sealed stand-in for a prepared dataset: ``n`` patches per split."""
    from stargal import fsio
    from stargal.tables import OBJECT_DTYPE, write_table

    rng = np.random.default_rng(0)
    counts = {}
    with fsio.OutputSet(paths.dataset_json(name)) as out:
        for split in ("train", "val", "test"):
            y = np.arange(n, dtype=np.uint8) % 2
            fsio.save_npy(out.path(paths.split_x(name, split)), rng.normal(size=(n, size, size, 5)).astype(np.float32))
            fsio.save_npy(out.path(paths.split_y(name, split)), y)
            fsio.save_npy(out.path(paths.split_psf(name, split)), np.full((n, 5), 2.0, np.float32))
            write_table(out.path(paths.split_objects(name, split)), np.zeros(n, OBJECT_DTYPE))
            counts[split] = {"n": n, "stars": int(y.sum()), "galaxies": n - int(y.sum()), "star_fraction": 0.5}
        out.commit(
            {"name": name, "patch_size": size, "counts": counts, "normalisation": {"center": [0] * 5, "scale": [1] * 5}}
        )
    fsio.write_text(paths.latest_dataset, name + "\n")


INJECT_CAP = 600  # objects per draw where models are scored: ~200-250 catalogued (uncapped, ~1,800 and ~700)


def _table_rows(out: str, start: str) -> list[list[str]]:
    """The cells of the Markdown table rows of ``out`` that start with ``start``."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith(start)]


@pytest.mark.slow
def test_inject_bench_extends_a_dataset_and_scores_a_model_on_fresh_injections(one_field, tmp_path, capsys):
    """Building and scoring inject --max-objects of each draw (the scores' margins hold for a random third); the
    label shift, a median of faint objects' fluxes, takes every object of its draw. Each of the two runs with
    --background field white scores both backgrounds (the model loaded once)."""
    from stargal.dataset import load_dataset

    bench = _load_bench("inject_real")
    base, out = DataPaths(tmp_path / "base"), DataPaths(tmp_path / "out")
    _tiny_dataset(base, "tiny")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "real").symlink_to(one_field["paths"].root)  # as real_sky.py lays out its fields
    real = str(tmp_path / "data")
    args = ["--data-dir", real, "--base-data-dir", str(base.root), "--out", str(out.root), "--fields", "8162-6-80"]
    cap = ["--max-objects", str(INJECT_CAP)]
    capsys.readouterr()
    assert bench.main([*args, "--draws", "1", "--val-draws", "1", *cap]) == 0
    data = load_dataset(out, "tiny_inj")  # sealed, shapes and labels checked
    added = {s: len(data[s]["y"]) - 6 for s in ("train", "val", "test")}
    # each draw injected the cap's objects, and every one it catalogued became a patch of its split
    drawn = re.findall(r"8162-6-80 draw (\d+): (\d+) injected, (\d+) catalogued", capsys.readouterr().err)
    assert drawn == [("0", str(INJECT_CAP), str(added["train"])), ("1000", str(INJECT_CAP), str(added["val"]))]
    assert added["train"] > INJECT_CAP // 4 and added["val"] > INJECT_CAP // 4 and added["test"] == 0
    assert data["meta"]["counts"]["train"]["n"] == len(data["train"]["y"])
    assert data["meta"]["injection"]["patches"] == {"train": added["train"], "val": added["val"]}
    assert data["meta"]["injection"]["max_objects"] == INJECT_CAP
    injected = data["train"]["x"][6:]
    assert np.abs(injected[:, 12, 12, 2]).mean() > 5 * np.abs(injected[:, 0, 0, 2]).mean()  # centred on sources
    np.testing.assert_array_equal(data["test"]["x"], load_dataset(base, "tiny")["test"]["x"])
    capsys.readouterr()
    evaluate = ["--data-dir", real, "--fields", "8162-6-80", "--val-draws", "1", "--evaluate"]
    assert bench.main([*evaluate, str(tmp_path / "no-model")]) == 1
    assert "no-model" in capsys.readouterr().err
    # the shipped model on fresh injections into a simulated field: labels and patches line up; and the control:
    # on white noise, with labels on those pixels, injections score as a simulated catalogue does
    assert bench.main([*evaluate, "pretrained", "--background", "field", "white", *cap]) == 0
    rows = {cells[2]: cells for cells in _table_rows(capsys.readouterr().out, "| stargal-pretrained | 8162-6-80 |")}
    assert list(rows) == ["field", "white"]
    assert int(rows["field"][3]) > INJECT_CAP // 4 and float(rows["field"][4]) > 0.6  # MCC
    assert float(rows["field"][5].split("%")[0]) > 95  # bright stars called star
    assert float(rows["white"][4]) > 0.8
    assert bench.main([*evaluate, "pretrained", "--ebv", "8162-6-80:0.03"]) == 1
    assert "--ebv '8162-6-80:0.03'" in capsys.readouterr().err
    # the field's faint sources add light to faint objects' model fluxes; white noise adds none
    shift = ["--data-dir", real, "--fields", "8162-6-80", "--val-draws", "1", "--label-shift"]
    assert bench.main([*shift, "--background", "field", "white"]) == 0
    rows = {cells[1]: cells for cells in _table_rows(capsys.readouterr().out, "| 8162-6-80 |")}
    assert list(rows) == ["field", "white"]
    assert all(int(cells[2]) > 100 for cells in rows.values())
    excess = {background: float(cells[7]) for background, cells in rows.items()}
    assert abs(excess["white"]) < 0.02 and excess["field"] > excess["white"] + 0.03
    with pytest.raises(SystemExit):
        bench.main(["--data-dir", real])  # neither building nor evaluating
    with pytest.raises(SystemExit):
        bench.main([*args, "--background", "white"])  # a control, not training data
    with pytest.raises(SystemExit):
        bench.main([*args, "--max-objects", "0"])


@pytest.mark.slow
def test_residual_bench_without_the_sky_residual_leaves_faint_labels_as_on_noise(monkeypatch, capsys):
    """bench/residual_shift.py: field 80 simulated without its sky residual, and without its stars' aureoles
    (light too), adds no light to faint injected objects (with both, the inject bench's test above finds more
    than 0.03)."""
    import sys

    from stargal import sky_models

    monkeypatch.setitem(sys.modules, "inject_real", _load_bench("inject_real"))
    monkeypatch.setattr(sky_models, "AUREOLE_PER_EFOLD", dict.fromkeys(sky_models.AUREOLE_PER_EFOLD, 0.0))
    bench = _load_bench("residual_shift")
    assert bench.main(["--scales", "0", "--seeds", "8", "--draws", "1"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 8 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[2]) > 100 and abs(float(cells[7])) < 0.02
    with pytest.raises(SystemExit):
        bench.main(["--scales", "-1"])


def test_aureole_profile_is_flat_for_an_r2_halo_and_falls_without_one():
    """fidelity.aureole_profile reads an r^-2 halo as flat (I r^2 constant) and a Gaussian PSF as falling fast,
    whatever the sources' brightness, and ignores sources too near the edges."""
    size = 401
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - 200.3, yy - 199.6)
    halo = 50.0 / np.maximum(r, 1.0) ** 2
    compact = 50.0 * np.exp(-0.5 * (r / 6.0) ** 2)
    radii = fidelity.AUREOLE_RADII
    flat = fidelity.aureole_profile(halo, np.array([200.3]), np.array([199.6]))
    np.testing.assert_allclose(flat, 1.0, rtol=0.02)
    assert fidelity.aureole_profile(compact, np.array([200.3]), np.array([199.6]))[2] < 1e-3
    assert np.isnan(fidelity.aureole_profile(halo, np.array([20.0]), np.array([199.6]))).all()
    assert len(flat) == len(radii)


@pytest.mark.slow
def test_aureole_level_bench_reads_back_a_simulated_fields_drawn_aureole(one_field, tmp_path, capsys):
    """bench/aureole_level.py measures on a simulated field's brightest catalog stars the aureole it was drawn
    with (the simulator's constants came from the same measurement on the real 4510-4-30)."""
    bench = _load_bench("aureole_level")
    args = ["--sim-data-dir", str(one_field["paths"].root), "--fields", "80", "--sample", str(tmp_path / "no"), "-q"]
    assert bench.main(args) == 0
    drawn = simulate.field_conditions(ONE_FIELD_SEED, 8162, 6, 80).aureole
    lines = capsys.readouterr().out.splitlines()
    for band in "gri":
        row = next(line for line in lines if line.startswith(f"| simulated 80 | {band} |"))
        near = [float(c) for c in row.strip("|").split("|")[2:4]]  # 30 and 42 px, where the aureole dominates
        assert np.median(near) == pytest.approx(drawn[band], rel=0.35), band


def test_photo_sky_bench_reads_pedestals_and_recovers_a_known_slope():
    """bench/photo_sky.py: the annulus median is the pedestal about a star (its own light, inside 15 px, aside),
    NaN where the annulus leaves the frame; the fitted slope of photo's sky on it is recovered."""
    bench = _load_bench("photo_sky")
    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 0.01, (300, 400))
    image[:, 200:] += 0.05  # a pedestal under the right half
    yy, xx = np.mgrid[:300, :400]
    for x, y in ((100, 150), (300, 150)):
        image += 50.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))  # a bright star, inside 15 px
    ped = bench.pedestals(image, np.array([100.0, 300.0, 20.0]), np.array([150.0, 150.0, 150.0]))
    np.testing.assert_allclose(ped[:2], [0.0, 0.05], atol=0.003)
    assert np.isnan(ped[2])  # 20 px from the edge: no whole annulus
    pedestal = rng.uniform(-0.01, 0.01, 200)
    fit, lo, hi = bench.slope(pedestal, 0.8 * pedestal + 0.002 + rng.normal(0, 0.001, 200))
    assert abs(fit - 0.8) < 0.05 and lo < fit < hi and hi - lo < 0.1


def test_pedestal_recall_bench_measures_pedestals_in_sigma_and_splits_recall():
    """bench/pedestal_recall.py: a star on a neighbour's light reads its pedestal in units of the noise, one on
    bare sky about zero, one at the frame's edge too (from the pixels there are), and the recall splits on it."""
    bench = _load_bench("pedestal_recall")
    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 0.02, (200, 300)).astype(np.float32)
    image[:, 150:] += 0.01  # half a sigma of light under the right half
    ped = bench.local_pedestals(image, np.array([60.0, 220.0, 2.0, 150.0]), np.array([100.0, 100.0, 100.0, -500.0]))
    np.testing.assert_allclose(ped[:3], [0.0, 0.5, 0.0], atol=0.1)
    assert np.isnan(ped[3])  # off the frame: no pixels
    called = np.array([False, True, True, True, True])
    first_rows = np.array([True, False, True, False, True])
    row = bench.recall_row("f", np.array([0.5, 0.6, 0.0, 0.1, np.nan]), called, 0.3, first_rows)
    assert row == ["f", "4", "50.0%", "50.0% (1/2)", "100.0% (2/2)", "50.0% (1/2)", "100.0% (2/2)"]


def test_source_counts_bench_scales_star_counts_to_the_pole():
    """bench/source_counts.py: each field's catalog stars per r bin, times its sin|b|, averaged over fields."""
    bench = _load_bench("source_counts")
    r = np.array([17.0, 19.0, 19.5, 21.5, 30.0, 17.0, 22.2])  # r 30: below every bin
    catalog = np.zeros(len(r), dtype=[("FIELD", "i4"), ("PSFFLUX", "f4", 5)])
    catalog["FIELD"] = [1, 1, 1, 1, 1, 2, 2]
    catalog["PSFFLUX"][:, 2] = 10 ** (-0.4 * (r - 22.5))
    sin_b = np.where(catalog["FIELD"] == 1, 0.5, 1.0)
    # field 1: 1, 2, 0, 1, 0 times 0.5; field 2: 1, 0, 0, 0, 1
    np.testing.assert_allclose(bench.catalog_star_counts(catalog, sin_b), [0.75, 0.5, 0.0, 0.25, 0.5], atol=1e-6)


@pytest.mark.slow
def test_source_counts_bench_counts_a_simulated_fields_galaxies(one_field, tmp_path, capsys):
    bench = _load_bench("source_counts")
    args = ["--sim-data-dir", str(one_field["paths"].root), "--fields", "80", "--seed", str(ONE_FIELD_SEED)]
    args += ["--min-latitude", "0", "--sample", str(tmp_path / "absent"), "-q"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in out if "| sim" in line
    }
    stars, sources = rows["simulated, b beyond 0 deg"], rows["simulated, b beyond 0 deg (mean)"]
    assert sources[1] == "1"
    truth = read_table(one_field["paths"].sim_truth(301, 8162, 6), dtype=TRUTH_DTYPE)
    own = truth[truth["field"] == 80]
    # the non-catalog sources at r 21-22 are the field's galaxies there (their r measured, not true: loosely)
    galaxies = np.sum((own["label"] == 0) & (own["r"] >= 21) & (own["r"] < 22))
    assert 0.5 * galaxies <= float(sources[4]) <= 1.5 * galaxies
    # the star sweep's field-80 stars at r 21-22 (PSF magnitude), scaled by the field's drawn sin|b|
    from stargal import sdss

    sweep = sdss.read_catalog(one_field["paths"].catalog(301, 8162, 6, "star"))
    r = sdss.magnitude(sweep["PSFFLUX"][sweep["FIELD"] == 80, 2])
    sin_b = np.sin(np.radians(simulate.field_conditions(ONE_FIELD_SEED, 8162, 6, 80).latitude))
    assert float(stars[4]) == pytest.approx(np.sum((r >= 21) & (r < 22)) * sin_b, abs=0.05)


def test_source_counts_bench_finds_entries_listed_for_one_band_alone():
    """An entry within one band's sweep limit and far beyond the others' (or without flux there) is lone; one
    near another band's limit, or within two limits, is not."""
    bench = _load_bench("source_counts")
    mags = np.array(
        [
            [22.0, np.nan, np.nan, np.nan, np.nan],  # u alone
            [np.nan, 25.0, 26.0, 24.0, 21.0],  # z alone: the others 1.5 mag or more beyond their limits
            [np.nan, 25.0, 23.5, 24.0, 21.0],  # z, but r within 1.5 mag of its limit: not lone
            [22.0, 22.0, 22.0, 21.0, 20.0],  # an ordinary star
        ]
    )
    catalog = np.zeros(len(mags), dtype=[("FIELD", "i4"), ("PSFFLUX", "f4", 5)])
    catalog["FIELD"] = [1, 1, 2, 2]
    catalog["PSFFLUX"] = np.where(np.isfinite(mags), 10 ** (-0.4 * (mags - 22.5)), 0.0)
    np.testing.assert_allclose(bench.lone_band_entries(catalog), [0.5, 0.0, 0.0, 0.0, 0.5])


def test_star_widths_bench_takes_median_ratios_per_bin_and_band():
    bench = _load_bench("star_widths")
    r50 = np.array([[2.0, 2.0], [2.2, 3.0], [1.8, 5.0], [2.0, 2.0]])
    psf = np.full((4, 2), 2.0)
    r = np.array([19.0, 21.0, 21.2, 19.5])
    select = np.array([True, True, True, False])  # the last is no catalog star
    out = bench.width_ratios(r50, psf, r, select, bins=((18.0, 20.0), (20.5, 21.5), (21.5, 22.5)))
    np.testing.assert_allclose(out[:2], [[1.0, 1.0], [1.0, 2.0]])  # medians of (1.1, 0.9) and (1.5, 2.5)
    assert np.isnan(out[2]).all()  # no star in the faintest bin


def test_a_clipped_mean_level_does_not_snap_to_the_quantisation_steps_as_a_median_does():
    rng = np.random.default_rng(3)
    image = np.round(rng.normal(0.1, 1.0, (120, 120)))  # a pedestal of 0.1 sigma, quantised in whole sigma
    image[55:66, 55:66] += 50.0  # a source inside the annulus' hole, and one bright pixel in the annulus
    image[60, 75] = 500.0
    x, y = np.array([60.0]), np.array([60.0])
    median = detection.annulus_stats(image, x, y, (12.0, 40.0))[0]
    clipped = detection.annulus_stats(image, x, y, (12.0, 40.0), clip=3.0)[0]
    assert median[0] == 0.0  # snapped to a step
    assert clipped[0] == pytest.approx(0.1, abs=0.04)


def test_half_light_radius_over_a_local_level_takes_the_pedestal_out():
    yy, xx = np.mgrid[:80, :80]
    star = (100.0 * np.exp(-((xx - 40.2) ** 2 + (yy - 39.7) ** 2) / (2 * 1.5**2))).astype(np.float32)
    x, y = np.array([40.2, 40.2]), np.array([39.7, 39.7])
    plain = detection.half_light_radii(star, x[:1], y[:1])[0]
    on_pedestal = detection.half_light_radii(star + np.float32(0.5), x[:1], y[:1])[0]
    over = detection.half_light_radii_over(star + np.float32(0.5), x, y, np.array([0.5, np.nan]))
    assert on_pedestal > 1.1 * plain  # a pedestal of 0.5 % of the peak widens the measurement
    assert over[0] == pytest.approx(plain, rel=1e-3) and np.isnan(over[1])
    # the PSF-weighted flux over the level found about the source: the pedestal no longer brightens it
    flux = 2 * np.pi * 1.5**2 * 100.0
    level = detection.local_sky_levels(star + np.float32(0.5), x, y)
    np.testing.assert_allclose(level, 0.5, atol=1e-3)
    plain_flux = detection.gaussian_fluxes(star + np.float32(0.5), x[:1], y[:1], 1.5)[0]
    assert plain_flux - flux == pytest.approx(0.5 * 4 * np.pi * 1.5**2, rel=0.02)  # the level under the template
    local = detection.local_gaussian_fluxes(star + np.float32(0.5), x[:1], y[:1], 1.5, level[:1])
    assert local[0] == pytest.approx(flux, rel=1e-3)
    corner = detection.local_sky_levels(star + np.float32(0.5), np.array([0.0]), np.array([0.0]))
    assert corner[0] == pytest.approx(0.5, abs=1e-3)  # a quarter annulus still has its 100 pixels
    tiny = detection.local_sky_levels(np.full((10, 10), 0.5, np.float32), np.array([5.0]), np.array([5.0]))
    assert tiny[0] == 0.0  # no annulus in the frame: the background mesh's level


def test_local_levels_bench_summarises_the_levels_faint_sources_sit_on():
    bench = _load_bench("local_levels")
    levels = np.array([-0.2, -0.05, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, np.nan, 0.04])
    p10, p50, p90, below, above = bench.level_summary(levels)
    assert p50 == pytest.approx(0.03) and p10 <= -0.05 and p90 >= 0.2
    assert below == pytest.approx(0.1) and above == pytest.approx(0.3)  # of the 10 finite levels
    # the annulus median: a source on light sits on it, one off it on zero, one at the edge on nothing
    image = np.zeros((100, 200))
    image[:, 100:] = 0.5
    got = fidelity.local_levels(image, np.array([40.0, 160.0, 3.0]), np.array([50.0, 50.0, 50.0]), (8.0, 25.0))
    np.testing.assert_allclose(got[:2], [0.0, 0.5])
    assert np.isnan(got[2])


def test_size_magnitude_figure_draws_a_crowded_field_no_larger_than_the_others(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from stargal.plots import fidelity as fplots

    drawn, scatter = [], Axes.scatter
    monkeypatch.setattr(Axes, "scatter", lambda ax, x, y, **kw: drawn.append(len(x)) or scatter(ax, x, y, **kw))
    rng = np.random.default_rng(1)

    def field(n):
        return {
            "size_magnitude": {"r": rng.uniform(14, 22, n).tolist(), "r50_over_stellar": rng.uniform(1, 3, n).tolist()}
        }

    measured = {"real": {"plane": field(13000), "pole": field(300)}, "simulated": {"80": field(500)}}
    assert fplots.plot_size_magnitude(tmp_path / "size_magnitude.png", measured).stat().st_size > 0
    assert drawn == [fplots.SIZE_MAGNITUDE_POINTS, 300, 500]  # the plane's 13,000 would hide the pole's 300


def test_a_sample_field_without_all_five_frames_is_named_not_skipped_silently(tmp_path, caplog):
    from stargal.stages.realsky import discover

    for field, bands in ((30, "ugriz"), (31, "ugri")):
        for b in bands:
            (tmp_path / sdss.frame_filename(b, 4510, 4, field)).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="stargal"):
        fields = discover(tmp_path)
    assert [f.fid.field for f in fields] == [30]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}: field 301/4510/4/31 lacks the z frame(s): not evaluated"
    ]


def test_a_field_twice_and_a_sweep_of_no_field_are_named(tmp_path, caplog):
    """Two copies of one field: one was evaluated without a word; a sweep of another camcol was ignored so."""
    from stargal.stages.realsky import discover

    for copy in ("a", "b"):
        (tmp_path / copy).mkdir()
        for b in "ugriz":
            (tmp_path / copy / sdss.frame_filename(b, 4510, 4, 30)).write_bytes(b"")
    (tmp_path / sdss.catalog_filename(4510, 3, "star")).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="stargal"):
        fields = discover(tmp_path)
    assert [(f.fid.field, f.folder.name) for f in fields] == [(30, "a")]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'b'}: field 301/4510/4/30 is also in {tmp_path / 'a'}: evaluated from the first only",
        f"{tmp_path / sdss.catalog_filename(4510, 3, 'star')}: no field of run 4510 camcol 3 in the folder: not used",
    ]


def test_a_missing_or_wrong_sample_folder_is_named(tmp_path):
    from stargal.stages.realsky import discover

    with pytest.raises(StargalError, match=rf"--sample {tmp_path / 'nope'}: no such folder .*STARGAL_SAMPLE_DIR"):
        discover(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(StargalError, match=rf"--sample {tmp_path / 'file'}: not a folder of SDSS frames"):
        discover(tmp_path / "file")
    data = tmp_path / "data"  # the script refuses it before it makes (and locks) its data folder
    script = [sys.executable, str(PROJECT_ROOT / "code" / "real_sky.py"), "--data-dir", str(data), "-q"]
    done = subprocess.run([*script, "--sample", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith(f"real_sky.py: error: --sample {tmp_path / 'nope'}: no such")
    assert not data.exists()


def test_an_out_that_is_a_file_is_refused_before_any_field_is_evaluated(tmp_path):
    from stargal.stages.realsky import run_real_sky

    out = tmp_path / "results"
    out.write_text("")
    with pytest.raises(StargalError, match=rf"--out {out}: a file, not a folder"):
        run_real_sky(DataPaths(tmp_path / "data"), tmp_path / "no-sample", out=out)


# ---------------------------------------------------------------------------------------------------------
# real_sky.py on a data folder used before, on simulated fields, and where its --out may go

FIELD_80 = FieldId(301, 8162, 6, 80)


def _sample(folder, sky: DataPaths):
    """A sample folder of links to a data folder's field 8162-6-80: its five frames and its camcol's sweeps."""
    folder.mkdir(parents=True)
    for path in [sky.frame(FIELD_80, b) for b in BANDS] + [sky.catalog(301, 8162, 6, k) for k in ("star", "gal")]:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="module")
def two_samples(tiny_sky, tmp_path_factory):
    """Two samples of field 8162-6-80 from two simulations (seeds 7 and 9): the same file names, other skies."""
    from stargal.stages.simulate import simulate_sky

    other = DataPaths(tmp_path_factory.mktemp("other_sky"))
    simulate_sky(other, FieldSet(301, 8162, 6, (80,), (80,), (), ()), seed=9, shape=TINY_SHAPE)
    root = tmp_path_factory.mktemp("samples")
    return _sample(root / "seed7", tiny_sky), _sample(root / "seed9", other)


def _frames_of(paths: DataPaths) -> list[bytes]:
    return [paths.real_fields.frame(FIELD_80, b).read_bytes() for b in BANDS]


@pytest.mark.slow
def test_real_sky_on_a_data_folder_used_for_another_sample_and_simulated_fields_marked(
    two_samples, tmp_path, caplog, capsys
):
    """A second sample with a field of the same name replaces the first one's frames (no --force needed), --force
    copies and aligns them again, and a simulated field is never called real: console, json and markdown."""
    from stargal import fsio
    from stargal.stages.realsky import run_real_sky

    first, second = two_samples
    paths, out = DataPaths(tmp_path / "data"), tmp_path / "real_sky"
    one = run_real_sky(paths, first, model=PRETRAINED, out=out)
    assert _frames_of(paths) == [(first / n).read_bytes() for n in _frame_names()]
    with caplog.at_level(logging.INFO, logger="stargal"):
        two = run_real_sky(paths, second, model=PRETRAINED, out=out)
    assert not two["skipped"] and _frames_of(paths) == [(second / n).read_bytes() for n in _frame_names()]
    assert two["fields"][0]["sources"] != one["fields"][0]["sources"]  # the second sky's, not the first's
    messages = [r.getMessage() for r in caplog.records]
    assert "simulated field 301/8162/6/80: frames, alignment, PSF, sources, classification" in messages
    assert any(m.startswith(f"5 file(s) of the data folder differ from those in --source {second}") for m in messages)
    assert not any("real field" in m for m in messages)
    # every place the field is named marks it simulated
    record = read_json(out / "real_sky.json")
    assert [(f["label"], f["simulated"]) for f in record["fields"]] == [("8162-6-80", True)]
    assert "applied to 1 simulated field (frames flagged SIMULAT = T" in record["summary"]
    assert all(row[0].startswith("8162-6-80 (simulated)") for t in record["tables"] for row in t["rows"])
    md = (out / "real_sky.md").read_text()
    assert md.startswith(f"# Real-sky evaluation of {PRETRAINED_MODEL_DIR.name} on 1 simulated field\n")
    assert "## 8162-6-80 (simulated): star fraction called per r bin" in md
    assert "real SDSS field" not in md and "real field" not in md
    # --force copies the frames again (and aligns them again), through the script
    before = [paths.real_fields.frame(FIELD_80, b).stat().st_ino for b in BANDS]
    cube_before = paths.real_fields.cube(FIELD_80).stat().st_mtime_ns
    argv = ["--sample", str(second), "--data-dir", str(paths.root), "--model", PRETRAINED, "--out", str(out)]
    script = _load_real_sky_script()
    try:
        assert script.main([*argv, "--force"]) == 0
    finally:
        fsio.release_folder_locks()
    assert "model stargal-pretrained: 1 simulated field evaluated in" in capsys.readouterr().out
    assert all(paths.real_fields.frame(FIELD_80, b).stat().st_ino != i for b, i in zip(BANDS, before, strict=True))
    assert paths.real_fields.cube(FIELD_80).stat().st_mtime_ns != cube_before


def _frame_names() -> list[str]:
    return [sdss.frame_filename(b, 8162, 6, 80) for b in BANDS]


def _load_real_sky_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_sky_script", PROJECT_ROOT / "code" / "real_sky.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.real
@pytest.mark.slow
def test_real_sky_takes_the_real_field_after_a_simulated_one_of_the_same_name(two_samples, sample_dir, tmp_path):
    """The audit's path: a data folder that evaluated the simulated 8162-6-80, then the real sample's."""
    from stargal.stages.realsky import run_real_sky

    paths, out = DataPaths(tmp_path / "data"), tmp_path / "real_sky"
    run_real_sky(paths, two_samples[0], model=PRETRAINED, out=out)
    real = run_real_sky(paths, sample_dir / "008162-6-0080", model=PRETRAINED, out=out)
    field = real["fields"][0]
    assert not field["simulated"] and field["sources"] > 1000 and field["locus"]["ebv"] < 0.06
    assert _frames_of(paths) == [(sample_dir / "008162-6-0080" / n).read_bytes() for n in _frame_names()]
    assert "applied to 1 real SDSS field." in real["summary"] and "simulated)" not in (out / "real_sky.md").read_text()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda d: d / "real" / "aligned" / "301", "lies in the data folder .*; name a folder in .*reports or outside"),
        (lambda d: d / "results", "lies in the data folder"),
        (lambda d: PRETRAINED_MODEL_DIR.parent / "real_sky_test_out", "lies in the project's models folder"),
        (lambda d: PRETRAINED_MODEL_DIR, "lies in the project's models folder"),
    ],
)
def test_an_out_in_the_data_folder_or_the_models_folder_is_refused(tmp_path, where, message):
    from stargal.stages.realsky import run_real_sky

    data = tmp_path / "data"
    out = where(data)
    with pytest.raises(StargalError, match=rf"^--out {out}: {message}"):
        run_real_sky(DataPaths(data), tmp_path / "no-sample", out=out)
    assert not out.exists() or out == PRETRAINED_MODEL_DIR


def test_an_out_in_the_data_folder_is_one_line_from_the_script_and_reports_is_allowed(tmp_path):
    from stargal.stages.realsky import check_out_folder

    data = tmp_path / "data"
    run = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "code" / "real_sky.py"), "--data-dir", str(data), "--sample",
         str(tmp_path), "--out", str(data / "sas")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert f"error: --out {data / 'sas'}: lies in the data folder {data}" in run.stderr
    for allowed in (data / "reports" / "real_sky_b", tmp_path / "elsewhere"):
        check_out_folder(allowed, DataPaths(data))  # no error
    other = DataPaths(tmp_path / "other-data")  # another data folder a stage has run on (its lock file)
    other.sas.mkdir(parents=True)
    other.lock_file.touch()
    with pytest.raises(StargalError, match=f"^--out {re.escape(str(other.sas))}: lies in the data folder "):
        check_out_folder(other.sas, DataPaths(data))
    check_out_folder(other.reports() / "real_sky_b", DataPaths(data))  # no error


def _mixed_sample(folder, frames_from, sweeps_from):
    """A sample folder holding field 8162-6-80's frames from one folder and the camcol's sweeps from another."""
    folder.mkdir(parents=True)
    for name in _frame_names():
        (folder / name).symlink_to(frames_from / name)
    for kind in ("star", "gal"):
        name = sdss.catalog_filename(8162, 6, kind)
        (folder / name).symlink_to(sweeps_from / name)
    return folder


def test_a_sweep_of_another_simulated_sky_is_refused_not_scored(two_samples, tmp_path):
    """Frames of one simulation beside the sweeps of another (the same names) gave a labelled check of accuracy 0.44
    and MCC -0.21, exit 0: the frames scored against labels of objects that are not in them."""
    from stargal.stages.realsky import run_real_sky

    sample = _mixed_sample(tmp_path / "mixed", two_samples[0], two_samples[1])
    out = tmp_path / "real_sky"
    star = sample / sdss.catalog_filename(8162, 6, "star")
    with pytest.raises(
        StargalError, match=rf"^{re.escape(str(star))}: only \d+ of the \d+ objects brighter than r = 20"
    ):
        run_real_sky(DataPaths(tmp_path / "data"), sample, model=PRETRAINED, out=out)
    assert not out.exists()


@pytest.mark.real
def test_a_simulated_sweep_beside_real_frames_is_refused(two_samples, sample_dir, tmp_path):
    from stargal.stages.realsky import run_real_sky

    sample = _mixed_sample(tmp_path / "mixed", sample_dir / "008162-6-0080", two_samples[0])
    star = sample / sdss.catalog_filename(8162, 6, "star")
    with pytest.raises(StargalError, match=rf"^{re.escape(str(star))}: a sweep of the simulated sky, but the frames"):
        run_real_sky(DataPaths(tmp_path / "data"), sample, model=PRETRAINED, out=tmp_path / "real_sky")


def test_a_sample_field_that_cannot_be_aligned_names_the_sample_folder(two_samples, tmp_path):
    """One band of another sky in a sample: the error named only the copy under data/real, not the file to mend."""
    from stargal.stages.realsky import run_real_sky

    sample = tmp_path / "mixed"
    sample.mkdir()
    for band in BANDS:  # the g frame of the other simulation: the same name, another sky's pixels
        source = two_samples[1] if band == "g" else two_samples[0]
        name = sdss.frame_filename(band, 8162, 6, 80)
        (sample / name).symlink_to(source / name)
    with pytest.raises(StargalError, match=rf"^{re.escape(str(sample))}: field 8162-6-80 of the sample cannot be"):
        run_real_sky(DataPaths(tmp_path / "data"), sample, model=PRETRAINED, out=tmp_path / "real_sky")


def test_sweep_mismatch_counts_the_bright_objects_on_sources():
    r = np.array([15.0, 18.0, 19.9, 20.0, 22.0, np.nan] + [19.0] * 8)
    on = np.array([True, True, False, False, False, False] + [True] * 8)
    assert realsky.sweep_mismatch(on, r) is None  # 10 of 11 bright objects on a source
    assert realsky.sweep_mismatch(~on, r) == (1, 11, 20.0)  # the frames' sources miss all but one
    assert realsky.sweep_mismatch(np.zeros(3, bool), np.array([15.0, 16.0, 17.0])) is None  # too few to say


def test_sweep_mismatch_counts_fainter_objects_where_too_few_are_bright():
    """A galaxy sweep places a few objects brighter than r = 20 in a small frame: another sky's passed unseen,
    and the labelled check scored the frames against it (accuracy 0.70, MCC -0.06, exit status 0)."""
    r = np.array([18.5, 19.2, 19.8, 20.3, 20.7, 21.1, 21.4, 21.6, 21.8, 21.9, 22.3, 23.0])
    assert realsky.sweep_mismatch(np.zeros(12, bool), r) == (0, 10, 22.0)  # another sky's: 0 of 10 to r = 22
    own = np.array([True] * 8 + [False] * 4)
    assert realsky.sweep_mismatch(own, r) is None  # 8 of 10 on a source
    assert realsky.sweep_mismatch(np.zeros(5, bool), r[:5]) is None  # too few to say, even to r = 22


def test_a_galaxy_sweep_of_another_simulated_sky_beside_the_right_star_sweep_is_refused(two_samples, tmp_path):
    """The star sweep the frames' own, the galaxy sweep another sky's under the same name: the bright-object test
    found too few bright galaxies in the frame to say, and the labelled check was scored, exit status 0."""
    from stargal.stages.realsky import run_real_sky

    sample = _mixed_sample(tmp_path / "mixed", two_samples[0], two_samples[0])
    galaxy = sample / sdss.catalog_filename(8162, 6, "gal")
    galaxy.unlink()
    galaxy.symlink_to(two_samples[1] / galaxy.name)
    out = tmp_path / "real_sky"
    with pytest.raises(StargalError, match=rf"^{re.escape(str(galaxy))}: only \d+ of the \d+ objects brighter than"):
        run_real_sky(DataPaths(tmp_path / "data"), sample, model=PRETRAINED, out=out)
    assert not out.exists()


def test_a_galaxy_sweep_without_its_star_sweep_is_one_line_and_makes_no_data_folder(tmp_path):
    """Frames and the galaxy sweep alone: the sweep was not used, the run gave no labelled check and no word of
    it, exit status 0."""
    sample = tmp_path / "sample"
    (sample / "sweeps").mkdir(parents=True)
    for b in BANDS:
        (sample / sdss.frame_filename(b, 8162, 6, 80)).write_bytes(b"")
    galaxy = sample / "sweeps" / sdss.catalog_filename(8162, 6, "gal")
    galaxy.write_bytes(b"")
    data = tmp_path / "data"
    script = [sys.executable, str(PROJECT_ROOT / "code" / "real_sky.py"), "--data-dir", str(data), "-q"]
    done = subprocess.run([*script, "--sample", str(sample)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"real_sky.py: error: {galaxy}: the galaxy sweep of run 8162 camcol 6 without its ")
    assert sdss.catalog_filename(8162, 6, "star") in done.stderr
    assert not data.exists()
    # with the star sweep anywhere in the folder, or the galaxy sweep of a camcol with no frames, no refusal
    from stargal.stages.realsky import require_star_sweeps

    (sample / sdss.catalog_filename(8162, 6, "star")).write_bytes(b"")
    require_star_sweeps(sample)
    (sample / sdss.catalog_filename(8162, 5, "gal")).write_bytes(b"")
    require_star_sweeps(sample)


def test_frames_and_sweeps_under_another_compression_are_named_not_skipped_silently(tmp_path):
    """Gunzipped sweeps beside the frames: no catalog or labelled check and not a word about it, exit status 0."""
    sample = tmp_path / "sample"
    sample.mkdir()
    for b in BANDS:
        (sample / sdss.frame_filename(b, 8162, 6, 80)).write_bytes(b"")
    (sample / "frame-g-008162-6-0080.fits").write_bytes(b"")  # a look at a frame beside it: misses nothing
    for kind in ("gal", "star"):  # gunzipped
        (sample / sdss.catalog_filename(8162, 6, kind).removesuffix(".gz")).write_bytes(b"")
    data = tmp_path / "data"
    script = [sys.executable, str(PROJECT_ROOT / "code" / "real_sky.py"), "--data-dir", str(data), "-q"]
    done = subprocess.run([*script, "--sample", str(sample)], capture_output=True, text=True, timeout=300)
    assert done.stderr.startswith(
        f"{sample / 'calibObj-008162-6-gal.fits'} and 1 other SDSS file(s): not used: real_sky.py takes SDSS frames as "
        "frame-*.fits.bz2 and sweeps as calibObj-*.fits.gz"
    ), done.stderr
    assert "frame-g-008162-6-0080.fits:" not in done.stderr


def test_a_galaxy_sweep_listing_nothing_under_the_field_is_refused_not_scored(two_samples, tmp_path):
    """A galaxy sweep with the field's own rows missing (listed under another field): the labelled check scored the
    star sweep alone and called its recall "accuracy", exit status 0."""
    import gzip

    from astropy.io import fits

    from stargal.stages.realsky import run_real_sky

    sample = _mixed_sample(tmp_path / "mixed", two_samples[0], two_samples[0])
    galaxy = sample / sdss.catalog_filename(8162, 6, "gal")
    with fits.open(gzip.open(galaxy.resolve())) as hdul:
        hdul[1].data["FIELD"][hdul[1].data["FIELD"] == 80] = 79
        galaxy.unlink()
        with gzip.open(galaxy, "wb") as fh:
            hdul.writeto(fh)
    out = tmp_path / "real_sky"
    with pytest.raises(StargalError, match=rf"^{re.escape(str(galaxy))}: lists no object under field 80, so"):
        run_real_sky(DataPaths(tmp_path / "data"), sample, model=PRETRAINED, out=out)
    assert not out.exists()


def test_the_labelled_table_per_r_counts_the_objects_without_r_flux_too():
    """The table's r bins held one star fewer than the field's count: the object without r flux was in the
    record but in no column."""
    from stargal.stages.realsky import _labelled_rows_by_r

    entry = {"k": 1, "n": 1, "fraction": 1.0, "low": 0.2, "high": 1.0}
    check = {"by_r": [{"bin": "no r flux", "stars_called_star": entry, "galaxies_called_star": None}]}
    stars, galaxies = _labelled_rows_by_r("8162-6-375", check)
    assert stars[:2] == ["8162-6-375", "stars"] and stars[-1] != "-" and stars[2:-1] == ["-", "-", "-"]
