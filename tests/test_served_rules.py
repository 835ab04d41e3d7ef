"""The sources predict.py refuses to classify, one rule for --detect, for positions and for the real-sky evaluation
(``stargal.predict.detected_refusals``, ``unshown_noise_peaks``)."""

from __future__ import annotations

import numpy as np
import pytest
import toy_models as toy

from stargal import detection
from stargal.cube import read_cube, write_cube
from stargal.fsio import read_json
from stargal.paths import FieldId
from stargal.predict import detected_refusals
from stargal.psf import TERMS, PSFMap
from stargal.stages.predict import load_bundle
from stargal.stages.realsky import SampleField, _catalog_checks, evaluate_cube

P = 15


def _noisy_column_cube(shape=(200, 160), column=100, seed=1):
    """float32 [5, rows, cols] of unit noise, r's columns ``column`` and the next at three times it (camcol 6's r CCD
    has two at 1.25-1.4 times), with (x, y) of: a peak of matched-filter S/N 7 in r on the frame's noise (2.3 on the
    columns') and 1 in g and i; a source of S/N 7 in every band on the same columns; the same peak on ordinary
    columns; a bright star centred one pixel from the left border."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 1.0, (5, *shape))
    data[2, :, column : column + 2] *= 3.0
    x = np.array([column + 0.3, column + 0.3, 40.3, 1.0])
    y = np.array([60.0, 140.0, 100.0, 100.0])
    peak = {1: 1.0, 2: 7.0, 3: 1.0}  # g, r, i
    for band in range(5):
        for k in (0, 2):
            data[band] += toy.faint_source(shape, x[k], y[k], peak.get(band, 0.0), 1.0)
        data[band] += toy.faint_source(shape, x[1], y[1], 7.0, 1.0)
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        data[band] += 200.0 * np.exp(-0.5 * ((xx - x[3]) ** 2 + (yy - y[3]) ** 2) / 1.3**2)
    return data.astype(np.float32), x, y


def test_detected_refusals_spares_a_noisy_column_source_the_other_bands_show():
    """On a noisy r column a peak seen in r alone (S/N 1 in g and i) is an artefact, a source seen in every band is
    not (as for positions); the same peak on ordinary columns is not; a source in r alone anywhere is (a cosmic
    ray); one centred a pixel from the border is edge."""
    data, x, y = _noisy_column_cube()
    flux = np.ones((4, 5))
    flux[2, [1, 3]] = 0.01  # g and i 1 % of r: seen in r alone
    artefact, edge = detected_refusals(data, x, y, flux, "ugriz")
    assert artefact.tolist() == [True, False, True, False]
    assert edge.tolist() == [False, False, False, True]
    # the same peaks are what detection.noise_peaks marks on r alone: the other bands decide
    image, rms = detection.background_subtracted(data[2])
    assert detection.noise_peaks(image, x, y, rms)[:3].tolist() == [True, True, False]


@pytest.fixture(scope="module")
def pad_bundle():
    return load_bundle(toy.trained_toy_model_dir(None, P, "pad"), "keras")


def _pmap(shape, r50=2.0):
    coefficients = np.zeros((5, len(TERMS)))
    coefficients[:, 0] = r50
    return PSFMap("ugriz", shape, coefficients, 20)


def test_real_sky_evaluation_leaves_out_what_detect_refuses(tmp_path, pad_bundle):
    """The real-sky evaluation classifies only what predict.py --detect serves: a noise peak of a noisy r column that
    the other bands do not show is an artefact and a source the border cuts is edge, both left out; a source every
    band shows on the same columns, and the toy sources, are evaluated."""
    data, wcs, xs, ys, kinds = toy.toy_cube(shape=(200, 300), n=24, seed=3)
    shape = data.shape[1:]
    column = max(range(20, shape[1] - 20), key=lambda c: np.abs(xs - c).min())
    rows = sorted(range(20, shape[0] - 20), key=lambda r: -np.hypot(xs - column, ys - r).min())
    y0 = rows[0]
    y1 = next(r for r in rows if abs(r - y0) > 20)
    rng = np.random.default_rng(2)
    data[2, :, column : column + 2] += rng.normal(0.0, np.sqrt(3.0) * toy.NOISE[2], (shape[0], 2))  # 2x the noise
    y_edge = max(range(20, shape[0] - 20), key=lambda r: np.hypot(xs, ys - r).min())
    for band in range(5):
        peak = {1: 1.5, 2: 7.0, 3: 1.5}.get(band, 0.0)
        data[band] += toy.faint_source(shape, column + 0.3, y0, peak, toy.NOISE[band]).astype(np.float32)
        data[band] += toy.faint_source(shape, column + 0.3, y1, 7.0, toy.NOISE[band]).astype(np.float32)
    data += toy.source_image(shape, 0.8, y_edge, 80.0, "star", rng)
    path = tmp_path / "cube.fits"
    write_cube(path, data, wcs, "ugriz", {"REFBAND": "r", "SIMULAT": True})
    cube = read_cube(path)
    field = SampleField(FieldId(301, 1, 1, 1), tmp_path, None)
    evaluated = evaluate_cube(field, pad_bundle, cube, np.asarray(cube.data, np.float32), _pmap(shape))
    table, result = evaluated["table"], evaluated["result"]
    status = np.asarray(table["status"])

    def at(x, y):
        near = np.hypot(np.asarray(table["x"]) - x, np.asarray(table["y"]) - y) < 2.5
        assert near.sum() == 1, (x, y)
        return status[near][0]

    assert at(column + 0.3, y0) == "artefact" and at(column + 0.3, y1) == "ok" and at(0.8, y_edge) == "edge"
    inside = np.hypot(xs[:, None] - table["x"][None], ys[:, None] - table["y"][None]).argmin(axis=1)
    assert (status[inside] == "ok").all()
    assert result["classified"] == int((status == "ok").sum()) < result["sources"]


def test_a_catalog_star_found_only_as_a_refused_source_is_a_missed_star(tmp_path, pad_bundle):
    """Recall on the stars detected: a catalog star whose only detected source predict.py refuses (here at the frame's
    border) stays in the denominator as a miss, counted apart, rather than leaving it unseen."""
    data, wcs, xs, ys, kinds = toy.toy_cube(shape=(200, 300), n=24, seed=3)
    shape = data.shape[1:]
    y_edge = max(range(20, shape[0] - 20), key=lambda r: np.hypot(xs, ys - r).min())
    data += toy.source_image(shape, 0.8, y_edge, 80.0, "star", np.random.default_rng(4))
    path = tmp_path / "cube.fits"
    write_cube(path, data, wcs, "ugriz", {"REFBAND": "r", "SIMULAT": True})
    cube = read_cube(path)
    stars = np.flatnonzero(kinds == "star")
    sx, sy = np.r_[xs[stars], 0.8], np.r_[ys[stars], y_edge]
    catalog = np.zeros(len(sx), dtype=[("RA", "f8"), ("DEC", "f8"), ("FIELD", "i4"), ("PSFFLUX", "f4", 5)])
    catalog["RA"], catalog["DEC"] = wcs.wcs_pix2world(sx, sy, 0)
    catalog["FIELD"], catalog["PSFFLUX"] = 1, 10.0  # r 20
    # the detected sources: the catalog stars' own, the edge one refused
    ra, dec = catalog["RA"], catalog["DEC"]
    refused = np.zeros(len(sx), bool)
    refused[-1] = True
    ok = ~refused
    quad = np.zeros(len(sx), np.int8)
    detected = (ra, dec, np.full(len(sx), 20.0), quad, ok, np.zeros(len(sx), bool), refused)
    field = SampleField(FieldId(301, 1, 1, 1), tmp_path, tmp_path / "calibObj-000001-1-star.fits.gz")
    data32 = np.asarray(cube.data, np.float32)
    check, _ = _catalog_checks(field, catalog, pad_bundle, data32, cube, _pmap(shape), detected, ok.copy())
    assert check["stars_detected_refused"] == 1
    overall = check["recall_detected"]["overall"]
    assert overall["n"] == len(sx) and overall["k"] <= len(sx) - 1
    assert check["recall"]["overall"]["n"] == len(sx)  # every catalog star classified at its position, as before


@pytest.mark.real
def test_real_1035_noise_peak_is_judged_on_the_detections_r_image_by_position_too(sample_dir, tmp_path):
    """On the real 1035-6-17, a source of r 22.6 on the noisy r columns 631-632 that no other band shows (combined S/N
    0.8) reaches matched-filter S/N 4.9 on its columns' noise on the r band the detection found it on, 5.1 over the
    presence test's finer local sky: --detect marked it a noise peak, while by position it was classified (p_star
    0.97). Both now judge it on the detection's r image: an artefact either way."""
    from stargal import predict as positions
    from stargal.config import BANDS, FieldSet
    from stargal.paths import DataPaths
    from stargal.stages.alignment import run_alignment

    paths = DataPaths(tmp_path / "data")
    fid = FieldId(301, 1035, 6, 17)
    for band in BANDS:
        link = paths.frame(fid, band)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(sample_dir / "001035-6-0017" / link.name)
    run_alignment(paths, FieldSet(301, 1035, 6, (17,), (), (), ()), workers=1, reports=False)
    cube = read_cube(paths.cube(fid))
    data = np.ascontiguousarray(np.asarray(cube.data, np.float32))
    pmap = PSFMap.from_dict(read_json(paths.psf_map(fid)))
    sources = detection.measure_sources(data, cube.bands, faint=True)
    k = int(np.argmin(np.hypot(sources.x - 631.5, sources.y - 868.5)))
    x, y = sources.x[k : k + 1], sources.y[k : k + 1]
    assert np.hypot(x[0] - 631.5, y[0] - 868.5) < 1 and not detection.single_band(sources.flux[k : k + 1]).any()
    artefact, edge = detected_refusals(data, x, y, sources.flux[k : k + 1], cube.bands, pmap)
    faint, off_peak, by_position = positions._no_source(data, x, y, pmap, 3.5, cube.bands)
    assert artefact.tolist() == [True] and not edge.any()
    assert not (faint | off_peak).any() and by_position.tolist() == [True]


def test_a_position_the_border_cuts_is_edge_as_detect_marks_it(pad_bundle):
    """A --ra/--dec or --csv position centred within detection.EDGE_PX of the border is ``edge``, the status --detect
    gives the same source: given by position, 4510-4-30's sources 1.3-1.8 px from its left border were served (one a
    star at p_star 0.998) with half their patch beyond the frame. Catalogued and detected positions (min_snr 0) are
    left to the edge policy."""
    from stargal.predict import classify

    data, wcs, xs, ys, _ = toy.toy_cube(shape=(200, 300), n=24, seed=3)
    shape = data.shape[1:]
    y_edge = max(range(20, shape[0] - 20), key=lambda r: np.hypot(xs, ys - r).min())
    data += toy.source_image(shape, 0.8, y_edge, 80.0, "star", np.random.default_rng(4))
    inside = int(np.argmin(np.abs(xs - shape[1] / 2)))
    px, py = np.array([0.8, xs[inside]]), np.array([y_edge, ys[inside]])
    ra, dec = wcs.wcs_pix2world(px, py, 0)
    kwargs = {"patch_size": P, "edge": pad_bundle.edge, "threshold": pad_bundle.threshold, "bands": "ugriz"}
    given = classify(pad_bundle.model, data, wcs, ra, dec, min_snr=3.5, **kwargs)
    assert given.status.tolist() == ["edge", "ok"] and np.isnan(given.p_star[0]) and given.label[0] == ""
    _, edge = detected_refusals(data, px, py, np.ones((2, 5)), "ugriz")
    assert edge.tolist() == [True, False]  # what --detect says of the same two
    assert set(classify(pad_bundle.model, data, wcs, ra, dec, min_snr=0.0, **kwargs).status) == {"ok"}


def _saturated_star_cube(seed: int = 3, flux: float = 10_000.0, halo: float = 30.0, saturate: bool = True):
    """(data, wcs, star, faint): toy noise, a star of ``flux`` (r 12.5) saturated in r as the simulator saturates one
    (clipped at 260 nanomaggies, bled along its column, interpolated over along the rows; not with ``saturate``
    False) with a power-law halo (``halo`` at its centre) in every band, and a faint star (matched-filter S/N 12 per
    band) on its halo 30 px out."""
    from stargal import sky_models

    shape = (200, 240)
    rng = np.random.default_rng(seed)
    data = (rng.normal(size=(5, *shape)) * toy.NOISE[:, None, None]).astype(np.float32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    star, faint = (120.3, 100.2), (141.7, 120.8)
    r2 = (xx - star[0]) ** 2 + (yy - star[1]) ** 2
    light = flux * np.exp(-0.5 * r2 / 1.4**2) / (2 * np.pi * 1.4**2) + halo * (1 + r2 / 9.0) ** -1.5
    for band in range(5):
        data[band] += (toy.SED[band] * light).astype(np.float32)
        data[band] += toy.faint_source(shape, *faint, 12.0, toy.NOISE[band]).astype(np.float32)
    if saturate:
        sky_models.saturate(data[2], 260.0)
        sky_models.interpolate_rows(data[2], sky_models.saturation_mask(data[2], 260.0))
    return data, toy.toy_wcs(shape), star, faint


def test_blank_places_in_a_saturated_stars_light_are_off_peak_a_source_there_is_classified(pad_bundle):
    """Places 8-60 px from a saturated star along rows, columns and diagonals, no source there: its halo lifts the
    presence test's S/N, and noise curves it down, so 12 of them were classified (of 4510-4-30's 360 such places, 14,
    10 with no source within 8 px). Now none is: they are off_peak, without p_star or label. A faint star on the halo
    stands above it and is classified; the saturated star itself is left to the other tests, as --detect classifies
    it."""
    from stargal.predict import classify

    data, wcs, star, faint = _saturated_star_cube()
    radii = np.arange(8.0, 61.0, 2.0)
    ways = [(1, 0), (-1, 0), (0, 1), (0, -1), *((a / np.sqrt(2), b / np.sqrt(2)) for a in (1, -1) for b in (1, -1))]
    x = np.concatenate([star[0] + dx * radii for dx, _ in ways])
    y = np.concatenate([star[1] + dy * radii for _, dy in ways])
    blank = (np.hypot(x - faint[0], y - faint[1]) > 4) & (x > 3) & (y > 3) & (x < 236) & (y < 196)
    x, y = np.r_[x[blank], faint[0], star[0]], np.r_[y[blank], faint[1], star[1]]
    ra, dec = wcs.wcs_pix2world(x, y, 0)
    kwargs = {"patch_size": P, "edge": pad_bundle.edge, "threshold": pad_bundle.threshold, "bands": "ugriz"}
    pred = classify(pad_bundle.model, data, wcs, ra, dec, min_snr=3.5, **kwargs)
    status = pred.status[:-2]
    assert not (status == "ok").any() and set(status) <= {"no_source", "off_peak", "artefact"}
    assert (status == "off_peak").sum() >= 10 and np.isnan(pred.p_star[:-2]).all() and not pred.label[:-2].any()
    assert pred.status[-2:].tolist() == ["ok", "ok"] and np.isfinite(pred.p_star[-2:]).all()


def test_blank_places_in_a_bright_unsaturated_stars_light_are_off_peak(pad_bundle):
    """Places 8-40 px from an unsaturated star of r 15 (r peak 84 nanomaggies) along rows, columns and diagonals, no
    source there: its halo lifts the presence test's S/N as a saturated star's does, and 8 were classified (of the
    real fields' blank places 20-40 px from stars brighter than r 16, 2.8-5.2 %). Now none is; the faint star on
    its halo and the bright star itself are still classified."""
    from stargal.predict import classify

    data, wcs, star, faint = _saturated_star_cube(flux=1_000.0, halo=6.0, saturate=False)
    radii = np.arange(8.0, 41.0, 2.0)
    ways = [(1, 0), (-1, 0), (0, 1), (0, -1), *((a / np.sqrt(2), b / np.sqrt(2)) for a in (1, -1) for b in (1, -1))]
    x = np.concatenate([star[0] + dx * radii for dx, _ in ways])
    y = np.concatenate([star[1] + dy * radii for _, dy in ways])
    blank = np.hypot(x - faint[0], y - faint[1]) > 4
    x, y = np.r_[x[blank], faint[0], star[0]], np.r_[y[blank], faint[1], star[1]]
    ra, dec = wcs.wcs_pix2world(x, y, 0)
    kwargs = {"patch_size": P, "edge": pad_bundle.edge, "threshold": pad_bundle.threshold, "bands": "ugriz"}
    pred = classify(pad_bundle.model, data, wcs, ra, dec, min_snr=3.5, **kwargs)
    assert not (pred.status[:-2] == "ok").any() and np.isnan(pred.p_star[:-2]).all()
    assert pred.status[-2:].tolist() == ["ok", "ok"] and np.isfinite(pred.p_star[-2:]).all()
