"""The bench/ scripts' own arithmetic and options: pure functions, and ``--help`` in a fresh process (each a few
seconds at most; the benches themselves are run by hand)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[1]
BENCH = PROJECT / "bench"


def _bench(name: str, monkeypatch):
    """bench/NAME.py as a module (benches are scripts, not a package; they import each other from bench/)."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Server:
    def __init__(self):
        self.faults = []

    def add_fault(self, relpath, fault):
        self.faults.append((relpath, fault))


@pytest.mark.parametrize("fields", [1, 2, 10])
def test_download_bench_counts_the_faults_it_injects(monkeypatch, fields):
    """One field has five frames: five faults go in, and the bench must not say six."""
    bench = _bench("bench_download", monkeypatch)
    from stargal.config import FieldSet
    from stargal.stages.download import plan_files

    specs = plan_files(FieldSet(301, 8162, 6, tuple(range(80, 80 + fields)), (), (), ()))
    server = _Server()
    assert bench.inject_faults(server, specs) == len(server.faults) == min(6, 5 * fields)


def test_run_all_gives_each_benchmark_only_the_options_it_declares(monkeypatch):
    """``run_all.py -- --workers 2`` (its docstring's example): alignment and predict have no --workers."""
    run_all = _bench("run_all", monkeypatch)
    found = run_all.benchmarks()
    groups = run_all.option_groups(["--workers", "2", "--tta", "auto", "off", "--n=5"])
    assert groups == [["--workers", "2"], ["--tta", "auto", "off"], ["--n=5"]]
    given = {name: run_all.arguments_for(groups, run_all.declared_options(path)) for name, path in found.items()}
    assert given["alignment"] == []
    assert given["download"] == given["pipeline"] == ["--workers", "2"]
    assert given["predict"] == ["--tta", "auto", "off", "--n=5"]


def test_run_all_refuses_an_option_no_benchmark_takes():
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--only", "alignment", "--", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no benchmark run takes --workers" in done.stderr


def test_compare_min_locus_skips_fields_without_locus_sources(monkeypatch):
    """A field with no locus source has no share (None): it is not a share of 0."""
    bench = _bench("compare_real_sky", monkeypatch)
    fields = [{"locus": {"called_star": {"fraction": f}}} for f in (0.9, None, 0.8)]
    assert bench._min_locus({"fields": fields}) == 0.8
    assert bench._min_locus({"fields": fields[1:2]}) is None
    column = dict(bench.COLUMNS)["min locus (called star)"]
    assert column({"fields": fields}, {}) == 0.8


def test_compare_reads_the_metrics_of_a_model_given_by_name(monkeypatch, tmp_path):
    """``--group NAME pretrained``: the simulated test metrics of the model real_sky.py evaluates, not '-'."""
    bench = _bench("compare_real_sky", monkeypatch)
    from stargal.paths import PRETRAINED_MODEL_DIR, DataPaths, ModelFiles

    if not ModelFiles(PRETRAINED_MODEL_DIR).metrics.is_file():
        pytest.skip("no pretrained model in this copy")
    metrics = bench.model_metrics(DataPaths(tmp_path), "pretrained")
    assert "mcc" in metrics["test"]


def test_calibrate_simulation_help_describes_itself_and_its_own_default_fields():
    done = subprocess.run(
        [sys.executable, str(BENCH / "calibrate_simulation.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "measure real and simulated frames the same way" in text
    assert "(default: 80 103)" in text


def test_install_copies_each_file_whole_and_seals_it(monkeypatch, tmp_path):
    bench = _bench("train_pretrained", monkeypatch)
    from stargal import fsio, integrity
    from stargal.paths import ModelFiles

    build = tmp_path / "build"
    build.mkdir()
    for name in ("model.keras", "metrics.json"):
        (build / name).write_bytes(name.encode() * 100)
    fsio.seal(ModelFiles(build).json, [build / "model.keras", build / "metrics.json"], {"name": "build"})
    target = tmp_path / "models" / "stargal-pretrained"
    monkeypatch.setattr(bench, "PRETRAINED_MODEL_DIR", target)
    assert bench.install(build) == target
    assert sorted(p.name for p in target.iterdir()) == ["metrics.json", "model.json", "model.keras"]
    assert (target / "model.keras").read_bytes() == (build / "model.keras").read_bytes()
    assert integrity.require_model(target)["name"] == "stargal-pretrained"  # every file as sealed


def test_pipeline_total_peak_is_never_below_a_single_process_peak(monkeypatch):
    """The tree's peak is sampled: where it missed a peak that wait4 saw, the single process's counts."""
    bench = _bench("bench_pipeline", monkeypatch)
    stages = [
        {"peak_tree_mb": 201.0, "peak_rss_mb": 2048.0},  # sampling missed the peak
        {"peak_tree_mb": 1024.0, "peak_rss_mb": 900.0},  # two processes together
        {"peak_tree_mb": None, "peak_rss_mb": None},
    ]
    assert bench.total_peak_gb(stages) == 2.0
    assert bench.total_peak_gb(stages[1:]) == 1.0
    assert bench.total_peak_gb([]) == 0


def test_train_pretrained_card_row_shows_an_undefined_metric_as_a_dash(monkeypatch):
    bench = _bench("train_pretrained", monkeypatch)
    m = {"n": 3, "accuracy": 1.0, "mcc": None, "roc_auc": None, "star_purity": 1.0, "star_completeness": 1.0}
    assert bench._metrics_row("one class", m) == ["one class", 3, "1.000", "-", "-", "1.000", "1.000"]


def test_catalog_presence_share_leaves_out_a_magnitude_range_without_others(monkeypatch):
    bench = _bench("catalog_presence", monkeypatch)
    r = np.array([19.0, 19.5, 22.5, 22.6, 19.2])
    right = np.array([True, False, True, True, True])
    refused = np.array([False, False, True, False, True])  # one at r 22.5 (no others there), one at 19.2
    others = np.array([True, True, False, False, False])
    assert bench.share_at_same_r(right, r, refused, others) == pytest.approx(0.5)  # r < 20 only: 1 of 2 right
    assert bench.share_at_same_r(right, r, refused, np.zeros(5, bool)) is None


def test_a_bench_script_ends_a_project_error_in_one_line(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "halo_presence.py"), "--data-dir", str(not_a_folder)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_halo_presence_refuses_a_sample_folder_that_does_not_exist(tmp_path):
    """A mistyped --sample gave no field to measure: two empty tables, exit 0. Now one line naming it, and no data
    folder made."""
    data, sample = tmp_path / "data", tmp_path / "no-such-sample"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "halo_presence.py"), "--data-dir", str(data), "--sample", str(sample)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"halo_presence.py: error: --sample {sample}: no such folder (the real SDSS "
                                        "sample this bench measures; --sample or STARGAL_SAMPLE_DIR names it)"]  # fmt: skip
    assert proc.stdout == "" and not data.exists()
