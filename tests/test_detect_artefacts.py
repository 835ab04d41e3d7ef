"""predict.py --detect on sources no astronomer would classify: here, sources the frame's border cuts."""

from __future__ import annotations

import numpy as np
import pytest
import toy_models as toy

from stargal import detection, patches, presence
from stargal.cube import read_cube, write_cube
from stargal.paths import DataPaths
from stargal.stages.predict import run_predict

P = 15


@pytest.fixture(scope="module")
def pad_model_dir():
    """A toy model with the ``pad`` edge policy (as the shipped model's): patches crossing the border are classified."""
    return toy.trained_toy_model_dir(None, P, "pad")


def _predict_on(tmp_path, data, wcs, model_dir, **where):
    """predict.py's classification of a cube written from ``data`` (ugriz, simulated), at ``where`` (detect=True, or
    ra= and dec=)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cube.fits"
    write_cube(path, data, wcs, "ugriz", {"REFBAND": "r", "SIMULAT": True})
    _, pred = run_predict(
        DataPaths(tmp_path / "data"), model=str(model_dir), cube_path=str(path), out=str(tmp_path / "out.csv"), **where
    )
    return pred


def test_at_frame_edge_marks_sources_centred_within_two_pixels_of_the_border():
    x = np.array([0.4, 1.9, 2.1, 120.0, 238.2, 120.0, 120.0, 120.0])
    y = np.array([80.0, 80.0, 80.0, 80.0, 80.0, 0.0, 157.5, 150.0])
    edge = detection.at_frame_edge(x, y, (160, 240))
    assert edge.tolist() == [True, True, False, False, True, True, True, False]


def test_detect_flags_a_source_cut_by_the_frame_border_as_edge(tmp_path, pad_model_dir):
    """A star centred on the frame's first row and one on its first column are found by sep, but half their light
    lies beyond the border: status edge, no p_star or label (on the real fields the shipped model called 16 of 18
    such sources star, against half of those further in); the isolated toy sources inside are classified as
    before."""
    data, wcs, xs, ys, kinds = toy.toy_cube()
    shape = data.shape[1:]
    rng = np.random.default_rng(5)
    cut = [(70.0, 0.6), (0.8, 100.0)]  # (x, y): at least 12 px from every toy source (toy_cube's margin)
    for x, y in cut:
        data += toy.source_image(shape, x, y, 80.0, "star", rng)
    pred = _predict_on(tmp_path, data, wcs, pad_model_dir, detect=True)
    for x, y in cut:
        at = np.hypot(pred.x - x, pred.y - y) < 2.5
        assert at.sum() == 1, (x, y)
        assert pred.status[at][0] == "edge" and np.isnan(pred.p_star[at][0]) and pred.label[at][0] == ""
    d = np.hypot(xs[:, None] - pred.x[None], ys[:, None] - pred.y[None])
    inside = d.argmin(axis=1)
    assert np.all(d.min(axis=1) < 1.0) and not (pred.status[inside] == "edge").any()
    assert pred.counts()["edge"] == len(cut)


@pytest.mark.real
def test_real_4510_left_column_sources_are_edge_and_on_no_catalog_star(sample_dir):
    """On the real 4510-4-30 sep finds sources centred on the frame's first two columns that the shipped model,
    given them, called star (p_star 0.998 for a streak one pixel wide in the second column); none of them is a
    catalog star. They are marked edge; every catalog star the detection finds is not."""
    from astropy.io import fits

    from stargal.geometry import sky_to_pixel
    from stargal.sdss import read_frame

    folder = sample_dir / "004510-4-0030"
    r_frame = read_frame(folder / "frame-r-004510-4-0030.fits.bz2")
    frame, wcs = np.asarray(r_frame.image, np.float32), r_frame.wcs
    with fits.open(folder / "calibObj-004510-4-star.fits.gz") as hdul:
        ra, dec = np.asarray(hdul[1].data["RA"]), np.asarray(hdul[1].data["DEC"])
    sources = detection.measure_sources(frame[None], "r", faint=True)
    edge = detection.at_frame_edge(sources.x, sources.y, frame.shape)
    sx, sy = sky_to_pixel(wcs, ra, dec)
    on_star = np.hypot(sources.x[:, None] - sx[None], sources.y[:, None] - sy[None]).min(axis=1) < 2.5
    left = edge & (sources.x < 2)
    assert 2 <= left.sum() <= 5 and not (left & on_star).any()
    streak = np.flatnonzero(left & (np.abs(sources.y - 711.6) < 2))
    assert len(streak) == 1  # the second column's one-pixel streak
    assert 0 < edge.sum() <= 10 and on_star.sum() > 100 and not (edge & on_star).any()


def test_noise_peaks_marks_faint_sources_significant_only_on_the_frames_noise():
    """Two columns at twice the noise (as the r CCD of camcol 6 has at 1.3-1.4 times): a source of matched-filter
    S/N 7 on the frame's noise is 4 on theirs, a noise peak's level; the same source on an ordinary column, and a
    bright one on the noisy columns, are sources."""
    rng = np.random.default_rng(1)
    shape = (400, 200)
    image = rng.normal(0.0, 1.0, shape)
    image[:, 100:102] *= 2.0
    x = np.array([100.0, 100.0, 50.0])
    y = np.array([100.0, 300.0, 200.0])
    for xk, yk, snr in zip(x, y, (7.0, 30.0, 7.0), strict=True):
        image += toy.faint_source(shape, xk, yk, snr, 1.0)
    sigma = detection.column_noise(image, 1.0)
    assert 1.8 < sigma[100] / np.median(sigma) < 2.4 and abs(np.median(sigma) - 1) < 0.05
    assert detection.noise_peaks(image.astype(np.float32), x, y, 1.0).tolist() == [True, False, False]


@pytest.mark.real
def test_real_4510_faint_sources_on_its_noisy_column_are_noise_peaks(sample_dir):
    """The r frame of 4510-4-30 has two columns (832-833) at 1.4 times the noise; the faint detection finds 7 sources
    on them (0.7 expected): two real (r 19.9, a catalog star, and 20.6) and five of r 22.8-23.0, on no catalog
    star, which the shipped model classified (three star). Those five, and no catalog star, are noise peaks."""
    from astropy.io import fits

    from stargal.geometry import sky_to_pixel
    from stargal.sdss import read_frame

    folder = sample_dir / "004510-4-0030"
    r_frame = read_frame(folder / "frame-r-004510-4-0030.fits.bz2")
    frame, wcs = np.asarray(r_frame.image, np.float32), r_frame.wcs
    with fits.open(folder / "calibObj-004510-4-star.fits.gz") as hdul:
        ra, dec = np.asarray(hdul[1].data["RA"]), np.asarray(hdul[1].data["DEC"])
    sources = detection.measure_sources(frame[None], "r", faint=True)
    image, rms = detection.background_subtracted(frame)
    peaks = detection.noise_peaks(image, sources.x, sources.y, rms)
    sx, sy = sky_to_pixel(wcs, ra, dec)
    on_star = np.hypot(sources.x[:, None] - sx[None], sources.y[:, None] - sy[None]).min(axis=1) < 2.5
    column = (sources.x > 831.5) & (sources.x < 833.5)
    assert column.sum() == 7 and (peaks & column).sum() == 5
    assert on_star.sum() > 100 and not (peaks & on_star).any() and peaks.sum() <= 10


def _noisy_column_toy_cube():
    """(data, wcs, xs, ys, column, rows): the toy cube with its r columns ``column`` and the next at twice the noise,
    as far from the toy sources as the frame allows, and two rows on them, each far from the toy sources, 15 px or
    more apart."""
    data, wcs, xs, ys, _ = toy.toy_cube()
    shape = data.shape[1:]
    column = max(range(20, shape[1] - 20), key=lambda c: np.abs(xs - c).min())
    first = max(range(20, shape[0] - 20), key=lambda r: np.hypot(xs - column, ys - r).min())
    rows = [r for r in range(20, shape[0] - 20) if abs(r - first) > 15]
    second = max(rows, key=lambda r: np.hypot(xs - column, ys - r).min())
    rng = np.random.default_rng(2)
    data[2, :, column : column + 2] += rng.normal(0.0, np.sqrt(3.0) * toy.NOISE[2], (shape[0], 2))  # 2x the noise
    return data, wcs, xs, ys, column, (first, second)


def test_detect_spares_a_noisy_column_source_the_other_bands_show_as_positions_do(tmp_path, pad_model_dir):
    """Two r columns at twice the noise: a source of matched-filter S/N 7 in every band on the frame's noise (3.5 in r
    on theirs), which the other bands show, is classified under --detect, as it is given by position (before,
    --detect called it an artefact and --csv classified it); a peak of S/N 8 in r (4 on the columns) with no more
    than noise elsewhere (S/N 1.5 in g and i) is an artefact. Fed back by position, both get the status --detect gave
    them, and the toy sources are classified."""
    data, wcs, xs, ys, column, (y1, y0) = _noisy_column_toy_cube()
    shape = data.shape[1:]
    peak = {1: 1.5, 2: 8.0, 3: 1.5}  # g, r, i: S/N on the frame's noise
    for band in range(5):
        data[band] += toy.faint_source(shape, column + 0.3, y0, peak.get(band, 0.0), toy.NOISE[band]).astype(np.float32)
        data[band] += toy.faint_source(shape, column + 0.3, y1, 7.0, toy.NOISE[band]).astype(np.float32)
    found = _predict_on(tmp_path / "found", data, wcs, pad_model_dir, detect=True)

    def at(y):
        near = np.flatnonzero(np.hypot(found.x - column - 0.3, found.y - y) < 2)
        assert len(near) == 1, y
        return near[0]

    peak_at, shown_at = at(y0), at(y1)
    assert found.status[peak_at] == "artefact" and np.isnan(found.p_star[peak_at])
    assert found.status[shown_at] == "ok" and np.isfinite(found.p_star[shown_at])
    inside = np.hypot(xs[:, None] - found.x[None], ys[:, None] - found.y[None]).argmin(axis=1)
    assert (found.status[inside] == "ok").all()
    picked = np.r_[peak_at, shown_at, inside]
    given = _predict_on(tmp_path / "given", data, wcs, pad_model_dir, ra=found.ra[picked], dec=found.dec[picked])
    assert given.status.tolist() == found.status[picked].tolist()
    np.testing.assert_allclose(given.p_star[1:], found.p_star[picked][1:], atol=1e-6)


def test_column_noise_is_numpys_nanmedian_of_each_column():
    """The sorted-rows column noise gives exactly what numpy's nanmedian down each column gives, with NaN pixels,
    sources beyond the clip, a column with too few pixels kept and one with none."""
    rng = np.random.default_rng(4)
    image = rng.normal(0.0, 1.0, (301, 40))
    image[::3, 2] = np.nan
    image[:290, 3] = np.nan  # 11 pixels left: fewer than 20
    image[:, 4] = 50.0  # all beyond the clip
    image[100:140, 5] += 30.0  # a source
    image[:, 6] = np.round(image[:, 6])  # quantised: ties
    for rows in (301, 300):
        data = image[:rows]
        kept = np.where(np.isfinite(data) & (np.abs(data) < detection.COLUMN_CLIP * 1.0), data, np.nan)
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
            centre = np.nanmedian(kept, axis=0)
            sigma = detection.MAD_TO_SIGMA * np.nanmedian(np.abs(kept - centre), axis=0)
        enough = np.sum(np.isfinite(kept), axis=0) >= 20
        expected = np.where(enough & np.isfinite(sigma) & (sigma > 0), sigma, 1.0)
        assert np.array_equal(detection.column_noise(data, 1.0), expected)


def test_near_noisy_columns_finds_every_position_noise_peaks_can_mark():
    """noise_peaks marks a source only where a column under its filter is 1.1 times the median's noise or more:
    near_noisy_columns keeps exactly the positions whose filter covers such a column."""
    sigma = np.ones(100)
    sigma[50] = 1.2
    half = detection.detection_kernel().shape[0] // 2
    x = np.array([50.0, 50.0 - half - 0.4, 50.0 - half - 0.6, 50 + half + 0.49, 50 + half + 0.5, 10.0, np.nan, -30.0])
    assert detection.near_noisy_columns(x, sigma).tolist() == [True, True, False, True, False, False, False, False]
    rng = np.random.default_rng(6)
    image = rng.normal(0.0, 1.0, (300, 100))
    image[:, 50] *= 2.0
    xs, ys = rng.uniform(0, 99, 2000), rng.uniform(0, 299, 2000)
    sig = detection.column_noise(image, 1.0)
    peaks = detection.noise_peaks(image, xs, ys, 1.0)
    assert peaks.any() and not (peaks & ~detection.near_noisy_columns(xs, sig)).any()
    assert np.array_equal(detection.noise_peaks(image, xs, ys, 1.0, sig), peaks)


def test_position_on_a_noisy_column_noise_peak_is_an_artefact(tmp_path, pad_model_dir):
    """The noisy-column rule of --detect, for positions: a peak of matched-filter S/N 7 in r on the frame's noise
    (3.5 on its two r columns, at twice the noise) with no more than noise in the other bands (S/N 1.5 in g and i,
    enough to pass the r-alone test) passes the presence test, yet given by --ra/--dec it is an artefact; the same
    peak on an ordinary column, a source of S/N 7 in every band on the noisy column, and the toy sources are
    classified."""
    data, wcs, xs, ys, column, (y0, y1) = _noisy_column_toy_cube()
    shape = data.shape[1:]
    others = [c for c in range(20, shape[1] - 20) if abs(c - column) > 15]
    column2 = max(others, key=lambda c: np.hypot(xs - c, ys - y0).min())
    peak = {1: 1.5, 2: 7.0, 3: 1.5}  # g, r, i: S/N on the frame's noise
    for band in range(5):
        for cx in (column + 0.3, column2 + 0.3):
            if band in peak:
                data[band] += toy.faint_source(shape, cx, y0, peak[band], toy.NOISE[band]).astype(np.float32)
        data[band] += toy.faint_source(shape, column + 0.3, y1, 7.0, toy.NOISE[band]).astype(np.float32)
    px = np.array([column + 0.3, column2 + 0.3, column + 0.3, *xs])
    py = np.array([y0, y0, y1, *ys])
    ra, dec = wcs.wcs_pix2world(px, py, 0)
    pred = _predict_on(tmp_path, data, wcs, pad_model_dir, ra=ra, dec=dec)
    assert pred.status[0] == "artefact" and np.isnan(pred.p_star[0]) and pred.label[0] == ""
    assert (pred.status[1:] == "ok").all(), pred.status[:3]


@pytest.mark.real
def test_real_4510_noise_peaks_get_the_same_status_detected_and_given_by_position(real_star_data, tmp_path):
    """--detect's output fed back by position (as --csv does), on the real 4510-4-30 with the shipped model: of the
    eight sources of the frame that detection.noise_peaks marks (five on the noisy r columns 832-833), the six the
    other bands do not show are artefacts both ways; the two they show (combined S/N 4.3 and 6.8) are classified
    both ways, with the same p_star (before, --detect called them artefacts). No source --detect classifies becomes
    an artefact by position."""
    from stargal.paths import FieldId

    fid = FieldId(301, 4510, 4, 30)
    _, found = run_predict(real_star_data, model="pretrained", fid=fid, detect=True, out=str(tmp_path / "found.csv"))
    _, given = run_predict(
        real_star_data, model="pretrained", fid=fid, ra=found.ra, dec=found.dec, out=str(tmp_path / "given.csv")
    )
    cube = read_cube(real_star_data.cube(fid))
    data = np.asarray(cube.data, np.float32)
    sources = detection.measure_sources(data, cube.bands, faint=True)
    assert np.allclose(sources.x, found.x, atol=1e-6)  # found.x: from its ra, dec
    image, rms = detection.background_subtracted(data[cube.bands.index("r")])
    peaks = detection.noise_peaks(image, found.x, found.y, rms)
    peaks &= ~detection.single_band(sources.flux, cube.bands) & (found.status != "edge")  # refused anyway
    column = peaks & (found.x > 831.5) & (found.x < 833.5)
    assert peaks.sum() == 8 and column.sum() == 5 and (found.status[column] == "artefact").sum() == 4
    assert (found.status[peaks] == "artefact").sum() == 6 and (found.status[peaks] == "ok").sum() == 2
    assert given.status[peaks].tolist() == found.status[peaks].tolist()
    spared = peaks & (found.status == "ok")
    np.testing.assert_allclose(given.p_star[spared], found.p_star[spared], atol=1e-6)
    assert not (given.status[found.status == "ok"] == "artefact").any()
    assert (given.status[found.status == "ok"] == "ok").mean() > 0.99


def test_a_position_seen_in_u_alone_is_classified_and_one_seen_in_r_alone_is_an_artefact(tmp_path, pad_model_dir):
    """The r-alone test for positions asks r itself to be seen: a source of S/N 8 in u alone (g, r and i at the
    noise level, r above the sky and g and i below it, as in 2 of 4510-4-30's catalog stars) is classified, as --all classifies them, not an artefact;
    one of S/N 30 in r alone still is one (g and i, at the noise level, under a twentieth of it)."""
    data, wcs, xs, ys, kinds = toy.toy_cube()
    shape = data.shape[1:]
    places = [(c, r) for r in range(20, shape[0] - 20, 7) for c in range(20, shape[1] - 20, 7)]
    far = sorted(places, key=lambda p: -np.hypot(xs - p[0], ys - p[1]).min())
    (ux, uy), (rx, ry) = far[0], next(p for p in far[1:] if np.hypot(p[0] - far[0][0], p[1] - far[0][1]) > 20)
    for band, snr in enumerate((8.0, -3.0, 1.5, -3.0)):  # u; g and i below the sky, r above it, at noise level
        data[band] += toy.faint_source(shape, ux + 0.2, uy, snr, toy.NOISE[band]).astype(np.float32)
    data[2] += toy.faint_source(shape, rx + 0.2, ry, 30.0, toy.NOISE[2]).astype(np.float32)
    ra, dec = wcs.wcs_pix2world([ux + 0.2, rx + 0.2], [uy, ry], 0)
    pred = _predict_on(tmp_path, data, wcs, pad_model_dir, ra=ra, dec=dec)
    assert list(pred.status) == ["ok", "artefact"]


def test_a_faint_source_seen_in_r_alone_is_an_artefact_detected_or_given_by_position(tmp_path, pad_model_dir):
    """S/N 6.6 in r, g and i under S/N 1 but i's flux over the flux-ratio test's 5 % of r's, which that test alone
    took for a source seen in several bands, by position (as 1035-6-17's source on its noisy r columns, served as a
    star, p_star 0.837, while --detect called it an artefact). g and i both under S/N 1 make it an artefact either
    way (predict.unseen_beside_r); i at S/N 2 leaves a source."""
    data, wcs, xs, ys, kinds = toy.toy_cube()
    shape = data.shape[1:]
    places = [(c, r) for r in range(20, shape[0] - 20, 7) for c in range(20, shape[1] - 20, 7)]
    far = sorted(places, key=lambda p: -np.hypot(xs - p[0], ys - p[1]).min())
    (x0, y0), (x1, y1) = far[0], next(p for p in far[1:] if np.hypot(p[0] - far[0][0], p[1] - far[0][1]) > 20)
    x0, x1 = x0 + 0.2, x1 + 0.2
    for (x, y), i_snr in (((x0, y0), 1.2), ((x1, y1), 2.5)):  # g put under the sky where the noise lies above it
        for band, snr in ((1, -0.8), (2, 7.0), (3, i_snr)):
            data[band] += toy.faint_source(shape, x, y, snr, toy.NOISE[band]).astype(np.float32)
    # as the presence test measures them: g and i unseen, i's flux 10 % of r's; then g unseen, i seen
    local = presence.local_background_subtracted(data)
    r50_at = lambda c, r: np.full((len(c), 5), presence.DEFAULT_R50_PX)  # noqa: E731
    noise = presence.filter_noise(local, r50_at)
    rows, cols = patches.pixel_centres(np.array([x0, x1]), np.array([y0, y1]))
    snr = presence.band_snr(local, rows, cols, r50_at(cols, rows), noise)
    response = snr * noise.sigma
    assert snr[0, 1] < 1 and snr[0, 3] < 1 and response[0, 3] > 0.05 * response[0, 2] and snr[0, 2] > 5
    assert snr[1, 1] < 1 and snr[1, 3] > 1 and snr[1, 2] > 5
    ra, dec = wcs.wcs_pix2world([x0, x1], [y0, y1], 0)
    by_position = _predict_on(tmp_path / "positions", data, wcs, pad_model_dir, ra=ra, dec=dec)
    assert list(by_position.status) == ["artefact", "ok"]
    detected = _predict_on(tmp_path / "detect", data, wcs, pad_model_dir, detect=True)
    for (x, y), status in (((x0, y0), "artefact"), ((x1, y1), "ok")):
        assert list(detected.status[np.hypot(detected.x - x, detected.y - y) < 2]) == [status]


def test_unseen_beside_r_needs_r_seen_and_neither_g_nor_i():
    from stargal.predict import unseen_beside_r

    snr = np.array([[0, 0.9, 4.0, 0.9, 0], [0, 1.1, 4.0, 0.2, 0], [0, 0.2, 3.0, 0.2, 0], [9, -3, 4.0, -2, 9]])
    assert unseen_beside_r(snr, "ugriz", 3.5).tolist() == [True, False, False, True]
