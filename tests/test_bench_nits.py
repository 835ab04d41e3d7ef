"""Small bench/ scripts: a share over an empty magnitude range, and a project error as one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}_nits", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
