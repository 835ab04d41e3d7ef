"""The numbers ``predict.py --detect`` serves per source: each object once (``stargal.detection.detect``)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from stargal import detection


def _faint_blobs(amplitude: float = 3.6, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Unit-noise image of 100 faint round sources (Gaussian sigma 2.5 px) on a 48-pixel grid, and their centres."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, (512, 512)).astype(np.float32)
    yy, xx = np.mgrid[:512, :512]
    grid = np.arange(24, 512, 48)
    centres = np.array([(a, b) for a in grid for b in grid], np.float64)[:100]
    for a, b in centres:
        image += (amplitude * np.exp(-((xx - a) ** 2 + (yy - b) ** 2) / (2 * 2.5**2))).astype(np.float32)
    return image, centres


def test_faint_pass_does_not_find_a_bright_source_again():
    """A faint source whose bright-pass footprint is a few pixels to one side of its centre was found again by the
    matched filter, centred just outside that footprint: the same object served twice (on the real 5405-6-99,
    sources 716 and 13034, 1.5 px apart, r 21.07 and 21.24, called star and galaxy)."""
    image, centres = _faint_blobs()
    x, y, _ = detection.detect(image, 1.0, faint=True)
    n_bright = len(detection.detect(image, 1.0, faint=False)[0])
    assert 0 < n_bright < len(x)  # both passes contribute
    pairs = cKDTree(np.c_[x, y]).query_pairs(detection.DUPLICATE_PX)
    assert not pairs, f"sources found twice: {sorted(pairs)}"
    distance, nearest = cKDTree(centres).query(np.c_[x, y])
    assert np.all(distance < 2.5)  # every source is one of the blobs ...
    assert len(np.unique(nearest)) == len(x) == len(centres)  # ... and each blob is found, once


def test_faint_pass_keeps_a_separate_neighbour():
    """A faint source beside a bright one, outside its footprint (12 px apart), is still found, by the faint pass."""
    rng = np.random.default_rng(3)
    image = rng.normal(0, 1, (128, 128)).astype(np.float32)
    yy, xx = np.mgrid[:128, :128]
    image += (60 * np.exp(-((xx - 60) ** 2 + (yy - 64) ** 2) / (2 * 1.5**2))).astype(np.float32)
    image += (3.0 * np.exp(-((xx - 72) ** 2 + (yy - 64) ** 2) / (2 * 1.5**2))).astype(np.float32)
    x, y, _ = detection.detect(image, 1.0, faint=True)
    assert len(detection.detect(image, 1.0, faint=False)[0]) == 1
    assert len(x) == 2 and np.min(np.hypot(x - 72, y - 64)) < 1.0
