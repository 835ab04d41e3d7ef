"""Shared fixtures: the real SDSS sample (skipped when absent) and a tiny simulated sky."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stargal.config import FieldSet
from stargal.paths import DataPaths

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("STARGAL_SAMPLE_DIR", PROJECT_ROOT.parent / "shared" / "sdss-sample"))
TEST_FIELD_DIR = SAMPLE_DIR / "008162-6-0080"
STAR_FIELD_DIR = SAMPLE_DIR / "004510-4-0030"

# A tiny sky: four adjacent, overlapping fields of small frames; test field 81 sits between train 80 and val 82.
TINY = FieldSet(
    rerun=301, run=8162, camcol=6, fields=(80, 81, 82, 83), train_fields=(80, 83), val_fields=(82,), test_fields=(81,)
)
TINY_SHAPE = (400, 600)


def pytest_collection_modifyitems(config, items):
    """Every test that needs the real SDSS sample carries the ``real`` marker, so ``-m "not real"`` runs without it."""
    unmarked = [
        item.nodeid
        for item in items
        if "sample_dir" in getattr(item, "fixturenames", ()) and item.get_closest_marker("real") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"these tests use the real SDSS sample but lack @pytest.mark.real: {unmarked}")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real SDSS DR17 sample folder; tests using it skip cleanly when it is absent."""
    if not (TEST_FIELD_DIR / "frame-r-008162-6-0080.fits.bz2").exists():
        pytest.skip(f"real SDSS sample not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def tiny_sky(tmp_path_factory) -> DataPaths:
    """A simulated tiny sky written once per session (read-only for tests: copy before writing)."""
    from stargal.stages.simulate import simulate_sky

    paths = DataPaths(tmp_path_factory.mktemp("tiny_sky"))
    simulate_sky(paths, TINY, seed=7, shape=TINY_SHAPE)
    return paths


@pytest.fixture
def tiny_data(tiny_sky, tmp_path) -> DataPaths:
    """A private, writable copy of the tiny sky's downloaded files."""
    paths = DataPaths(tmp_path / "data")
    shutil.copytree(tiny_sky.root, paths.root)
    return paths
