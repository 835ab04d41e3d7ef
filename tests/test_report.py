"""The PDF report: built from whatever a run wrote, sections not run are stated, at most 8 pages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stargal import fsio
from stargal.paths import DataPaths
from stargal.stages.report import MAX_PAGES, build_report, collect_sections, json_lines, markdown_lines

CODE = Path(__file__).resolve().parents[1] / "code"


def _pages(pdf: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf.read_bytes()))


def _images(pdf: Path) -> int:
    return len(re.findall(rb"/Subtype\s*/Image", pdf.read_bytes()))


def _png(path: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(np.random.default_rng(seed).normal(size=20))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def _fake_run(paths: DataPaths) -> None:
    """A small stand-in for a pipeline run's outputs, in the layout the stages use."""
    name, model = "301-8162-6_p25_pad_abc123", "stargal_abc123"
    fsio.write_text(paths.latest_dataset, name + "\n")
    fsio.write_text(paths.latest_model, model + "\n")
    fsio.write_json(paths.dataset_json(name), {
        "name": name, "bands": "ugriz", "patch_size": 25, "edge": "pad", "rerun": 301, "run": 8162, "camcol": 6,
        "fields": {"train": [80, 83], "val": [82], "test": [81]},
        "counts": {"train": {"n": 120, "stars": 40, "galaxies": 80}, "val": {"n": 50, "stars": 15, "galaxies": 35},
                   "test": {"n": 60, "stars": 20, "galaxies": 40}},
        "normalisation": {"method": "asinh", "center": [0.0] * 5, "scale": [1.0] * 5}, "simulated": True,
    })  # fmt: skip
    fsio.write_text(
        paths.reports("alignment", "summary.md"),
        "# Alignment\n\n| field | dx |\n|---|---|\n| 80 | 1.5 |\n![x](a.png)\n",
    )
    _png(paths.reports("alignment", "offsets.png"), 1)
    _png(paths.reports("splits", name, "splits.png"), 2)
    fsio.write_json(
        paths.model_dir(model) / "metrics.json",
        {
            "test": {"n": 60, "accuracy": 0.91, "mcc": 0.77},
            "baselines": {"test": {"majority": {"accuracy": 0.66, "mcc": 0.0}}},
            "threshold": 0.5,
        },
    )
    fsio.write_json(paths.model_dir(model) / "model.json", {"architecture": "stargal", "threshold": 0.5, "seed": 42})
    _png(paths.reports("training", model, "history.png"), 3)
    _png(paths.reports("training", model, "roc.png"), 4)
    _png(paths.reports("training", model, "confusion.png"), 5)
    fsio.write_json(paths.reports("pipeline", "stages.json"), {
        "demo": True, "small": True, "options": [["--workers", "2"]], "status": 0,
        "stages": [{"stage": "download", "status": "ok", "seconds": 1.5, "peak_rss_mb": 120.0, "peak_tree_mb": 150.0}],
    })  # fmt: skip


def test_empty_data_folder_gives_a_report_saying_what_did_not_run(tmp_path):
    paths = DataPaths(tmp_path / "data")
    result = build_report(paths)
    assert result["path"] == paths.reports("report.pdf")
    assert result["path"].read_bytes().startswith(b"%PDF")
    assert _pages(result["path"]) == result["pages"] <= MAX_PAGES
    sections = collect_sections(paths)
    assert [s.ran for s in sections[1:]] == [False] * (len(sections) - 1)
    assert all(s.lines[0].startswith("not run") for s in sections[1:])
    assert "unknown" in sections[0].lines[0]


def test_report_of_a_run_has_its_numbers_figures_and_origin(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    sections = {s.title: s for s in collect_sections(paths)}
    overview = "\n".join(sections["stargal report"].lines)
    assert "simulated demo run" in overview and "NOT results on real SDSS" in overview
    assert "train fields [80, 83], validation [82], test [81]" in overview
    assert re.search(r"download\s+ok\s+1\.5 s\s+120 MB /\s+150 MB", overview)
    assert "field | dx" in sections["Alignment"].lines
    assert [p.name for p in sections["Alignment"].figures] == ["offsets.png"]
    splits = "\n".join(sections["Splits"].lines)
    assert "train n=120, stars=40, galaxies=80" in splits
    metrics = sections["Metrics and baselines"].lines
    assert re.search(r"accuracy\s+MCC", "\n".join(metrics))
    assert any(re.fullmatch(r"test\s+60\s+0\.910\s+0\.770", line) for line in metrics)
    assert any(re.fullmatch(r"test majority\s+-\s+0\.660\s+0\.000", line) for line in metrics)
    assert "  threshold: 0.5" in metrics and "0.746" in "\n".join(metrics)
    assert not sections["Tuning"].ran and not sections["Augmentation experiment"].ran
    result = build_report(paths, tmp_path / "out.pdf")
    assert _pages(tmp_path / "out.pdf") == result["pages"] <= MAX_PAGES
    # every figure shown (up to four per page): alignment 1, splits 1, training 3
    assert _images(tmp_path / "out.pdf") == 5


@pytest.mark.slow
def test_make_report_script_runs_from_any_directory(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    proc = subprocess.run(
        [sys.executable, str(CODE / "make_report.py"), "--data-dir", str(paths.root), "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"report: {paths.reports('report.pdf')}" in proc.stdout
    assert "not run: Augmentation experiment, Tuning" in proc.stdout
    assert paths.reports("report.pdf").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"a": {"b": 0.123456}}, ["a.b: 0.1235"]),
        ({"x": list(range(20))}, ["x: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (20 items)]"]),
    ],
)
def test_json_lines(obj, expected):
    assert json_lines(obj) == expected


def test_markdown_lines_drop_images_and_rules():
    assert markdown_lines("# T\n\n![p](p.png)\n| a | b |\n|---|---|\n| **1** | 2 |\n") == ["T", "", "a | b", "1 | 2"]


def test_tuning_section_shows_the_study_of_the_current_dataset(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    for study, dataset in (("other", "another_dataset"), ("mine", "301-8162-6_p25_pad_abc123")):
        fsio.write_json(paths.tuning_dir(study) / "best.json", {"dataset": dataset, "learning_rate": 0.001})
        fsio.write_text(
            paths.tuning_dir(study) / "trials.md", f"# Study {study}\n\n| trial | val_loss |\n|---|---|\n| 0 | 0.31 |\n"
        )
        _png(paths.reports("tuning", study, "tuning.png"), 6)
    tuning = {s.title: s for s in collect_sections(paths)}["Tuning"]
    assert tuning.ran and tuning.lines[0] == "Study mine:"
    assert "trial | val_loss" in tuning.lines and "0 | 0.31" in tuning.lines
    assert tuning.figures == [paths.reports("tuning", "mine", "tuning.png")]
