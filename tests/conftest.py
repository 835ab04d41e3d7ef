"""Shared fixtures: the real SDSS sample (skipped when absent), a tiny simulated sky, the quick start in a clone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pdf_text import page_texts

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


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own, which names each test's group in its node id
def pytest_collection_modifyitems(config, items):
    """Every test that needs the real SDSS sample carries the ``real`` marker, so ``-m "not real"`` runs without it;
    under ``--dist loadgroup`` the tests that share a costly fixture (``xdist_group``) do go to one worker."""
    ungrouped = [
        item.nodeid
        for item in items
        if getattr(config.option, "loadgroup", False)
        and item.get_closest_marker("xdist_group")
        and "@" not in item.nodeid
    ]
    if ungrouped:  # said on the worker's stderr: xdist turns a worker's collection error into an internal one
        message = (
            f"pytest {pytest.__version__} with this pytest-xdist does not group tests (xdist_group): each worker would "
            f"make the shared fixtures again ({ungrouped[0]}); use the versions code/requirements-dev.txt pins"
        )
        sys.stderr.write(f"conftest: {message}\n")
        raise pytest.UsageError(message)
    unmarked = [
        item.nodeid
        for item in items
        if "sample_dir" in getattr(item, "fixturenames", ()) and item.get_closest_marker("real") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"these tests use the real SDSS sample but lack @pytest.mark.real: {unmarked}")


def run_script_here(
    script: Path, argv: list[str], capsys, cwd: Path | str | None = None
) -> subprocess.CompletedProcess:
    """code/SCRIPT run on ``argv`` as the script runs (``cli.run_main``: its exit status, its stdout and stderr, its
    logging set up by the script itself on stderr), but in this process, which has paid for Python and the
    imports already; ``cwd``, if given, is the folder it runs from."""
    import contextlib
    import importlib.util
    import logging
    import signal
    from unittest import mock

    from stargal import cli

    spec = importlib.util.spec_from_file_location(f"script_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handlers = {s: signal.getsignal(s) for s in cli.STOP_SIGNALS}  # run_main puts its own in
    root = logging.getLogger()
    kept = (root.handlers[:], root.level)  # pytest's: without them, the script's logging.basicConfig takes effect
    root.handlers.clear()
    capsys.readouterr()
    argv0, sys.argv[0] = sys.argv[0], script.name  # the name its messages start with
    try:
        # run_main always ends with sys.exit; setup_logging sets or drops STARGAL_VERBOSE for the script's children
        with contextlib.chdir(cwd or Path.cwd()), mock.patch.dict(os.environ), pytest.raises(SystemExit) as end:
            cli.run_main(module.main, argv)
    finally:
        sys.argv[0] = argv0
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.handlers[:], root.level = kept
    out = capsys.readouterr()
    return subprocess.CompletedProcess([script.name, *argv], end.value.code or 0, out.out, out.err)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real SDSS DR17 sample folder; tests using it skip cleanly when it is absent."""
    if not (TEST_FIELD_DIR / "frame-r-008162-6-0080.fits.bz2").exists():
        pytest.skip(f"real SDSS sample not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def real_star_data(sample_dir, tmp_path_factory) -> DataPaths:
    """A data folder where stage 01 has aligned the real field 4510-4-30 beside its real star sweep, as a user's
    would hold it (links to the sample, no copies; read-only for tests)."""
    from stargal.config import BANDS
    from stargal.paths import FieldId
    from stargal.stages.alignment import run_alignment

    paths = DataPaths(tmp_path_factory.mktemp("real4510"))
    field_id = FieldId(301, 4510, 4, 30)
    for link in [paths.frame(field_id, b) for b in BANDS] + [paths.catalog(301, 4510, 4, "star")]:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(STAR_FIELD_DIR / link.name)
    fields = FieldSet(rerun=301, run=4510, camcol=4, fields=(30,), train_fields=(), val_fields=(), test_fields=())
    run_alignment(paths, fields, workers=1, reports=False)
    return paths


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


@pytest.fixture(scope="session")
def demo_field_80(tmp_path_factory) -> DataPaths:
    """The demo sky's full-size field 80, as ``00_download.py --source simulated --fields 80`` writes it under the
    default BLAS kernels (read-only for tests: copy before writing). Its tests share an xdist group."""
    paths = DataPaths(tmp_path_factory.mktemp("demo_field_80") / "data")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    run = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "code" / "00_download.py"), "--data-dir", str(paths.root), "--source",
         "simulated", "--fields", "80", "-q"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return paths


QUICK_START = "./run_scripts.sh --demo --small"


@dataclass(frozen=True)
class QuickStart:
    """A fresh clone after the README's quick start, and what its first run left before anything else ran."""

    clone: Path
    env: dict
    first_run: subprocess.CompletedProcess
    first_record: dict  # data/reports/pipeline/stages.json of the first run
    first_report_pages: list[str]  # the text of its report.pdf


@pytest.fixture(scope="session")
def quick_start(tmp_path_factory) -> QuickStart:
    """One run of the quick start in a fresh clone, shared by the end-to-end test and the README-commands test
    (each would otherwise pay the ~2 min run itself). Later commands in the clone may rerun stages or add fields:
    tests read the first run's record and report from here, not from the folder."""
    clone = tmp_path_factory.mktemp("quick_start") / "stargal"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True, timeout=120)
    # uncommitted changes to tracked files too, so that the suite tests the working tree (untracked files stay out)
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=PROJECT_ROOT, capture_output=True, check=True)
    if diff.stdout:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=clone, input=diff.stdout, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STARGAL_", "PYTEST"))}
    env |= {"STARGAL_VENV": sys.prefix, "PYTHONPATH": str(clone / "code")}
    proc = subprocess.run(["bash", "-c", QUICK_START], cwd=clone, env=env, capture_output=True, text=True, timeout=1500)
    reports = clone / "data" / "reports"
    record = json.loads((reports / "pipeline" / "stages.json").read_text()) if proc.returncode == 0 else {}
    pages = page_texts(reports / "report.pdf") if proc.returncode == 0 else []
    return QuickStart(clone, env, proc, record, pages)
