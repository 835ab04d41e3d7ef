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
