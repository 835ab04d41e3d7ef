"""Real-data check (bench/real_check.py): source detection on a known cube, and the full check on field
4510-4-30 of the real SDSS sample with a model trained on the simulated sky.

The full check needs a model trained on the simulated reference-size sky; training one here would take
far longer than a test may, and a model from a tiny simulated sky says little about real data. So it
runs only when STARGAL_REAL_CHECK_MODEL names such a model (folder or .keras file) and the sample is
present, and skips otherwise. The lead runs it at the end:
``STARGAL_REAL_CHECK_MODEL=data/models/NAME pytest tests/test_real_check.py``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
import toy_models as toy

from stargal.paths import PROJECT_ROOT


def _load_real_check():
    """bench/real_check.py, loaded from its file (bench/ holds scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("real_check", PROJECT_ROOT / "bench" / "real_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the importlib recipe: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


real_check = _load_real_check()


def test_detection_finds_known_sources():
    data, wcs, xs, ys, kinds = toy.toy_cube(n=20, seed=5)
    x, y = real_check.detect_sources(data[2])
    d = np.hypot(xs[:, None] - x[None], ys[:, None] - y[None])
    assert np.all(d.min(axis=1) < 1.5)  # every source found at its position
    assert len(x) <= len(xs) + 2  # and (almost) nothing else in pure noise
    data[2, :30, :40] = np.nan  # uncovered pixels are neither peaks nor counted in the noise
    x2, y2 = real_check.detect_sources(data[2])
    assert not np.any((x2 < 40) & (y2 < 30))


def test_noise_only_gives_no_detections():
    rng = np.random.default_rng(0)
    x, _ = real_check.detect_sources(rng.normal(0, 0.03, (300, 300)).astype(np.float32))
    assert len(x) <= 1  # 5 sigma peaks of smoothed noise: essentially none in 90 000 pixels


def test_other_sources_leave_out_the_catalog_stars(tmp_path):
    """Detected sources within 1" of a catalog star are the star itself, not "other" sources."""
    from stargal.cube import write_cube

    data, wcs, xs, ys, kinds = toy.toy_cube(n=20, seed=5)
    write_cube(tmp_path / "cube.fits", data, wcs, "ugriz", {})
    ra, dec = wcs.celestial.wcs_pix2world(xs, ys, 0)
    stars = np.zeros(3, dtype=[("ra", "f8"), ("dec", "f8"), ("r_psfmag", "f4")])
    stars["ra"], stars["dec"] = ra[:3], dec[:3]
    other_ra, _ = real_check.other_sources(tmp_path / "cube.fits", stars)
    everything, _ = real_check.other_sources(tmp_path / "cube.fits", stars[:0])
    assert len(everything) - len(other_ra) == 3


@pytest.mark.real
def test_real_field_with_simulated_sky_model(sample_dir, tmp_path):
    spec = os.environ.get("STARGAL_REAL_CHECK_MODEL")
    if not spec:
        pytest.skip("set STARGAL_REAL_CHECK_MODEL to a model trained on the simulated reference sky")
    summary = real_check.run_check(sample_dir, spec, tmp_path / "data")
    stars, others = summary["catalog_stars"], summary["other_sources"]
    assert stars["n"] == 161
    assert stars["status"]["outside"] == 0 and stars["status"]["ok"] >= 150
    assert others["status"]["ok"] > 100
    assert stars["star_fraction"] >= real_check.TARGET_STAR_FRACTION, summary
