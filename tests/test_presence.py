"""Is there a source at a position: the PSF-matched filter's S/N, its noise measured on the cube itself."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stargal import presence


def _noise_cube(shape=(300, 400), seed=0) -> np.ndarray:
    """Five bands of correlated noise (as resampling leaves it), unit per-pixel sigma before smoothing."""
    rng = np.random.default_rng(seed)
    return np.stack([ndimage.uniform_filter(rng.normal(0, 1, shape), 2) for _ in range(5)]).astype(np.float32)


def _r50(c, r):
    return np.full((len(c), 5), 2.0)


def test_on_pure_noise_three_sigma_passes_as_often_as_chance():
    data = _noise_cube()
    noise = presence.filter_noise(data, _r50, n=20_000)
    rng = np.random.default_rng(9)
    rows, cols = rng.integers(0, 300, 5000), rng.integers(0, 400, 5000)
    snr = presence.detection_snr(data, rows, cols, _r50(cols, rows), noise)
    # five independent unit normals: the root sum of their positive parts' squares exceeds 3.5 in 0.5 % of cases
    assert 0.001 < np.mean(snr >= presence.MIN_SNR) < 0.015
    # the per-pixel scatter would have underestimated the filter's noise (the pixels are correlated)
    assert np.all(noise.sigma > 1.3 * data.reshape(5, -1).std(axis=1))


def test_a_faint_source_passes_and_crowding_does_not_inflate_the_noise():
    data = _noise_cube()
    quiet = presence.filter_noise(data, _r50)
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:300, :400]
    crowded = data.copy()
    for y, x in rng.uniform([0, 0], [300, 400], (500, 2)):  # a source per 240 pixels, as in the Galactic plane
        crowded += (20 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.7**2)))[None].astype(np.float32)
    busy = presence.filter_noise(crowded, _r50)
    assert np.all(busy.sigma < 1.5 * quiet.sigma)  # clipped away (unclipped, the scatter would be 2.9 times)
    # a point source of S/N ~ 6 in one band (the others empty) passes; the empty place beside it does not
    single = data.copy()
    single[2] += (1.5 * quiet.sigma[2] * 4 * np.exp(-((yy - 150) ** 2 + (xx - 200) ** 2) / (2 * 1.7**2))).astype(
        np.float32
    )
    snr = presence.detection_snr(single, np.array([150, 150]), np.array([200, 260]), _r50([0, 0], [0, 0]), quiet)
    assert snr[0] >= 4 and snr[1] < presence.MIN_SNR


def test_a_cube_without_data_checks_nothing():
    data = np.full((5, 50, 60), np.nan, np.float32)
    noise = presence.filter_noise(data, _r50)
    assert np.all(np.isinf(noise.sigma))
    assert presence.detection_snr(data, np.array([10]), np.array([10]), _r50([0], [0]), noise)[0] == 0.0


def test_a_bright_stars_halo_is_not_a_source_but_a_faint_star_in_it_is():
    data = _noise_cube(shape=(300, 400), seed=4)
    yy, xx = np.mgrid[:300, :400]
    r2 = (yy - 150) ** 2 + (xx - 200) ** 2
    halo = 0.8 * (1 + r2 / 40.0**2) ** -1.5  # a bright star's aureole: 0.8 of the pixel noise 30 px out
    faint = 0.7 * np.exp(-((yy - 150) ** 2 + (xx - 235) ** 2) / (2 * 1.7**2))  # a faint star 35 px out
    data += (halo + faint)[None].astype(np.float32)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False) + 0.1
    rows = np.rint(150 + 30 * np.sin(angles)).astype(int)
    cols = np.rint(200 + 30 * np.cos(angles)).astype(int)
    blank = np.abs(cols - 235) + np.abs(rows - 150) > 12
    rows, cols = np.r_[rows[blank], 150], np.r_[cols[blank], 235]

    def passes(cube):
        noise = presence.filter_noise(cube, _r50)
        return presence.detection_snr(cube, rows, cols, _r50(cols, rows), noise) >= presence.MIN_SNR

    assert passes(data)[:-1].mean() > 0.5  # on the raw cube the halo reads as a source
    local = passes(presence.local_background_subtracted(data))
    assert local[:-1].mean() < 0.1 and local[-1]


_SIGMA = 1.3  # pixels: a 1.2" seeing's PSF
_R50 = _SIGMA * 1.1774


def _r50_narrow(c, r):
    return np.full((len(c), 5), _R50)


def _star(shape, y0, x0, flux, aureole=0.0) -> np.ndarray:
    """A star's image: a Gaussian core and, for a bright star, ``aureole`` of its flux in a Moffat wing (beta 1.5:
    falling as r^-3 far out)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = (yy - y0) ** 2 + (xx - x0) ** 2
    core = np.exp(-r2 / (2 * _SIGMA**2)) / (2 * np.pi * _SIGMA**2)
    wing = 0.5 / (np.pi * 9.0) * (1 + r2 / 9.0) ** -1.5
    return flux * ((1 - aureole) * core + aureole * wing)


def test_the_response_curves_down_on_a_source_and_up_on_a_bright_stars_wing():
    shape = (120, 160)
    image = _star(shape, 60, 50, 50_000.0, aureole=0.1) + _star(shape, 60.3, 120.4, 20.0)
    data = np.repeat(image[None], 5, axis=0).astype(np.float32)
    unit = presence.FilterNoise(np.zeros(5), np.ones(5))  # noiseless: S/N is the response itself
    rows, cols = np.array([60, 60, 61, 60, 66, 52]), np.array([120, 121, 120, 60, 60, 56])
    curvature = presence.response_curvature(data, rows, cols, _r50_narrow(cols, rows), unit)
    # the faint star's pixel and those beside it (a position good to 0.5 pixels, rounded): curving down
    assert np.all(curvature[:3] < 0)
    # 6-10 pixels from the bright star: its wing is bright (S/N 15-23 with the test cube's noise) but curves up
    assert np.all(presence.detection_snr(data, rows[3:], cols[3:], _r50_narrow(cols[3:], rows[3:]), unit) > 10)
    assert np.all(curvature[3:] > 0)


def test_a_blank_place_on_a_bright_stars_wing_is_no_source_but_a_faint_star_there_is_one():
    shape = (300, 400)
    rng = np.random.default_rng(3)
    data = _noise_cube(shape, seed=3)
    centres = np.array([(75, 100), (75, 300), (225, 100), (225, 300)], float)
    angles = rng.uniform(0, 2 * np.pi, 4)
    # a faint star (S/N 8 alone) 11-12 pixels from each bright star, on a wing of S/N 12-16 there (at 10 pixels,
    # on S/N 21, one such position in ten moved 0.5 pixels towards the star no longer curves down: the limit)
    distance = np.array([11.0, 12.0, 12.0, 11.0])
    companions = centres + distance[:, None] * np.c_[np.sin(angles), np.cos(angles)]
    image = sum(_star(shape, y, x, 50_000.0, aureole=0.1) for y, x in centres)
    image = image + sum(_star(shape, y, x, 16.0) for y, x in companions)
    cube = presence.local_background_subtracted(data + image[None].astype(np.float32))  # as predict.py checks
    noise = presence.filter_noise(cube, _r50_narrow)
    # blank places 6-12 pixels from the bright stars, away from the faint ones
    ring = np.arange(12) * np.pi / 6 + 0.2
    places = np.concatenate(
        [
            c + r * np.c_[np.sin(ring + a), np.cos(ring + a)]
            for c, a in zip(centres, angles, strict=True)
            for r in (6, 8, 10, 12)
        ]
    )
    places = places[np.hypot(*(places[:, None] - companions[None]).transpose(2, 0, 1)).min(axis=1) > 6]
    rows, cols = np.rint(places).T.astype(int)
    r50 = _r50_narrow(cols, rows)
    snr = presence.detection_snr(cube, rows, cols, r50, noise)
    assert np.mean(snr >= presence.MIN_SNR) > 0.9  # S/N alone: the wing reads as a source
    assert np.mean(presence.shows_source(cube, rows, cols, r50, noise, presence.MIN_SNR)) < 0.05
    # each faint star passes, at its pixel and with its position 0.5 pixels off in any direction
    offsets = np.array([(0, 0), (0.5, 0), (0, -0.5), (-0.35, 0.35), (0.35, 0.35)])
    moved = (companions[:, None] + offsets[None]).reshape(-1, 2)
    rows, cols = np.floor(moved + 0.5).T.astype(int)
    assert np.all(presence.shows_source(cube, rows, cols, _r50_narrow(cols, rows), noise, presence.MIN_SNR))


def test_isolated_faint_stars_pass_as_often_as_by_their_s_n_and_blank_sky_rarely():
    shape = (300, 400)
    rng = np.random.default_rng(6)
    data = _noise_cube(shape, seed=6)
    grid = np.stack(np.meshgrid(np.arange(25, 300, 25), np.arange(25, 400, 25), indexing="ij"), -1).reshape(-1, 2)
    stars = grid + rng.uniform(-3, 3, grid.shape)
    image = sum(_star(shape, y, x, 0.5 * 2 * np.pi * 1.7**2) for y, x in stars)  # S/N 4.6 (median): near 3.5
    data += image[None].astype(np.float32)
    noise = presence.filter_noise(data, _r50)
    given = stars + rng.normal(0, 0.35, stars.shape)  # a user's position: 0.5 pixels rms off
    rows, cols = np.floor(given + 0.5).T.astype(int)
    by_snr = presence.detection_snr(data, rows, cols, _r50(cols, rows), noise) >= presence.MIN_SNR
    shown = presence.shows_source(data, rows, cols, _r50(cols, rows), noise, presence.MIN_SNR)
    assert by_snr.mean() > 0.4 and np.all(shown <= by_snr)
    assert shown.sum() >= 0.98 * by_snr.sum()  # the curvature refuses (almost) none of them
    blank = np.random.default_rng(7).integers(0, [300, 400], (5000, 2))
    far = np.hypot(*(blank[:, None] - stars[None]).transpose(2, 0, 1)).min(axis=1) > 8
    rows, cols = blank[far].T
    assert np.mean(presence.shows_source(data, rows, cols, _r50(cols, rows), noise, presence.MIN_SNR)) < 0.015
    empty = presence.shows_source(data, np.zeros(0, int), np.zeros(0, int), np.zeros((0, 5)), noise, 3.5)
    assert empty.shape == (0,)


def test_local_backgrounds_in_place_equal_the_mesh_subtracted_from_a_filled_copy():
    """The background is subtracted in the output's own plane (no full-frame temporaries); the values are those
    of subtracting sep's mesh from a copy with the pixels without data filled with 0, to the bit, and those
    pixels stay as they were."""
    import sep

    rng = np.random.default_rng(5)
    data = rng.normal(0.3, 1.0, (3, 120, 160)).astype(">f4")  # big-endian, as a FITS cube is read
    data[0, 10:20, 30:60] = np.nan
    data[2] = np.nan  # a band without data
    out, rms = presence.local_backgrounds(data)
    for band in range(2):
        image = data[band].astype(np.float32)
        bad = ~np.isfinite(image)
        filled = np.where(bad, 0.0, image).astype(np.float32)
        mesh = sep.Background(filled, mask=bad, bw=presence.BACKGROUND_CELL, bh=presence.BACKGROUND_CELL, fw=3, fh=3)
        np.testing.assert_array_equal(out[band], np.where(bad, image, filled - mesh.back()))
        assert rms[band] == mesh.globalrms
    assert np.isnan(out[2]).all() and np.isnan(rms[2])
