"""A set holding one class (a test split of stars only, or a magnitude bin of one class in a split of both) has no
MCC, balanced accuracy or ROC AUC: metrics.json records them as null, not scikit-learn's 0.0 or 0.5, and every
reader of metrics.json (the console table, the per-magnitude plot, the mean over seeds, the report) shows "-" or
leaves them out, also for a metrics.json of an earlier stargal that held 0.0 there."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stargal import fsio
from stargal.evaluate import evaluate, summarise_runs
from stargal.metrics import baselines, by_magnitude, classification_metrics, defined
from stargal.paths import DataPaths

UNDEFINED = ("mcc", "balanced_accuracy", "roc_auc")


def _old(record: dict) -> dict:
    """The record as stargal wrote it before: sklearn's values for a set of one class."""
    return {**record, "mcc": 0.0, "balanced_accuracy": record["accuracy"], "roc_auc": None}


def test_a_set_of_one_class_has_no_mcc_balanced_accuracy_or_auc():
    stars = classification_metrics(np.ones(6, np.uint8), np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.6]))
    assert stars["accuracy"] == pytest.approx(4 / 6) and stars["star_completeness"] == pytest.approx(4 / 6)
    assert all(stars[k] is None for k in UNDEFINED), stars
    galaxies = classification_metrics(np.zeros(4, np.uint8), np.full(4, 0.2))
    assert all(galaxies[k] is None for k in UNDEFINED) and galaxies["accuracy"] == 1.0
    assert '"mcc": null' in fsio.json_text(stars)  # JSON null in metrics.json: undefined, not a score
    # both classes, every prediction one class: MCC 0 is a score (no better than chance), kept
    constant = classification_metrics(np.array([0, 1, 0, 1]), np.full(4, 0.9))
    assert constant["mcc"] == 0.0 and constant["balanced_accuracy"] == 0.5 and constant["roc_auc"] == 0.5


def test_a_magnitude_bin_of_one_class_in_a_split_of_both_has_no_mcc():
    y = np.array([1, 1, 1, 0, 1, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.6, 0.1, 0.4])
    mag = np.array([15.0, 15.5, 15.2, 20.5, 20.1, 20.2, 20.9, 20.4])
    bright, faint = by_magnitude(y, p, mag)
    assert bright["bin"] == "-16" and bright["stars"] == 3 and bright["galaxies"] == 0
    assert all(bright[k] is None for k in UNDEFINED)
    assert all(faint[k] is not None for k in UNDEFINED)


def test_the_baselines_of_a_test_split_of_one_class_have_no_mcc_or_auc():
    b = baselines(np.array([0, 0, 1, 1, 0]), np.ones(5, np.uint8))
    for kind in ("random", "majority"):
        assert all(b[kind][k] is None for k in UNDEFINED), b[kind]
    assert b["majority"]["accuracy"] == 0.0 and b["random"]["accuracy"] == pytest.approx(0.4)
    both = baselines(np.array([0, 0, 1]), np.array([0, 1]))
    assert both["random"]["mcc"] == 0.0 and both["majority"]["roc_auc"] == 0.5


def test_readers_take_an_earlier_records_0_for_undefined():
    """metrics.json files written before this change hold 0.0: readers must not show it as a score."""
    stars = classification_metrics(np.ones(3, np.uint8), np.array([0.9, 0.2, 0.8]))
    old = _old(stars)
    assert old["mcc"] == 0.0 and defined(old, "mcc") is None and defined(old, "accuracy") == old["accuracy"]
    assert defined({"mcc": 0.0, "accuracy": 0.5}, "mcc", counts={"stars": 3, "galaxies": 0}) is None
    assert defined({"mcc": 0.3}, "mcc") == 0.3  # no counts: taken as it is


def _data(test_y: np.ndarray) -> dict:
    rng = np.random.default_rng(0)
    data = {}
    for split, y in (("train", np.array([0, 1] * 10)), ("val", np.array([0, 1] * 5)), ("test", test_y)):
        data[split] = {"y": y.astype(np.uint8), "mag": rng.uniform(15, 23, y.size).astype(np.float32)}
    return data


def test_metrics_json_of_a_test_split_of_stars_holds_nulls_and_the_summaries_skip_them():
    from stargal.stages.training_summary import metrics_table, run_summary

    data = _data(np.ones(12))
    rng = np.random.default_rng(1)
    preds = {s: rng.random(d["y"].size) for s, d in data.items()}
    metrics = json.loads(fsio.json_text(evaluate(data, preds, 0.5)))  # as metrics.json holds it
    assert all(metrics["test"][k] is None for k in UNDEFINED)
    assert all(metrics["val"][k] is not None for k in UNDEFINED)
    for row in metrics["by_magnitude"]["test"]:
        assert all(row[k] is None for k in UNDEFINED), row
    for kind in ("random", "majority"):
        assert all(metrics["baselines"]["test"][kind][k] is None for k in UNDEFINED)

    runs = [{"name": f"m{i}", "metrics": metrics} for i in range(2)]
    summary = summarise_runs(runs)
    assert "mcc" not in summary and "roc_auc" not in summary and "accuracy" in summary
    # an earlier stargal's record (0.0 for MCC, sklearn's 0.5 for its baselines) is not averaged as a score either
    old = {**metrics, "test": _old(metrics["test"])}
    old["baselines"] = {"test": baselines(np.array([0, 1]), np.array([0, 1]))}  # 0.0 and 0.5 where undefined
    assert "mcc" not in summarise_runs([{"name": "old", "metrics": old}] * 2)

    for m in (metrics, old):
        table = metrics_table(m).splitlines()
        test = next(r.split() for r in table if r.startswith("test "))
        assert test[3:6] == ["-", "-", "-"], table  # mcc, balanced accuracy, auc
        for kind in ("random", "majority"):
            row = next(r.split() for r in table if r.startswith(f"test {kind}"))
            assert row[4:7] == ["-", "-", "-"], table
    result = {
        "runs": [
            {
                "name": f"m{i}",
                "metrics": old,
                "skipped": True,
                "model_json": {"architecture": "stargal", "best_epoch": 1},
            }
            for i in range(2)
        ],  # fmt: skip
        "test_summary": summarise_runs([{"name": "old", "metrics": old}] * 2),
        "latest": "m0",
        "dataset": "d",
    }
    text = run_summary(result)
    assert "mcc 0.0000" not in text and "test over 2 seeds: accuracy" in text


def test_the_per_magnitude_plot_leaves_a_gap_for_a_bin_of_one_class(tmp_path, monkeypatch):
    from stargal.plots import training as tplots

    bins = [
        {"bin": "-16", "n": 3, "stars": 3, "galaxies": 0, "accuracy": 1.0, "mcc": None, "balanced_accuracy": None},
        {"bin": "16-18", "n": 4, "stars": 4, "galaxies": 0, "accuracy": 0.5, "mcc": 0.0, "balanced_accuracy": 0.5},
        {"bin": "18-", "n": 5, "stars": 2, "galaxies": 3, "accuracy": 0.8, "mcc": 0.6, "balanced_accuracy": 0.8},
    ]  # the second as an earlier stargal wrote it
    drawn = {}

    def keep(fig, path):
        drawn["lines"] = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].lines}
        return path

    monkeypatch.setattr(tplots, "_save", keep)
    tplots.magnitude_plot(tmp_path / "m.png", {"by_magnitude": {"test": bins}})
    for key in ("mcc", "balanced_accuracy"):
        values = drawn["lines"][key]
        assert np.isnan(values[0]) and np.isnan(values[1]) and values[2] == pytest.approx(bins[2][key])
    assert drawn["lines"]["accuracy"] == [1.0, 0.5, 0.8]


def _one_class_run(paths: DataPaths, old: bool) -> None:
    """The report's fake run (tests/test_report.py) with a test split of stars only."""
    from test_report import MODEL, _fake_run

    _fake_run(paths, reference=True)
    for folder in (f for f in paths.models_root.iterdir() if f.is_dir()):
        metrics = fsio.read_json(folder / "metrics.json")
        test = {**metrics["test"], "stars": 60, "galaxies": 0, "mcc": None, "roc_auc": None, "balanced_accuracy": None}
        metrics["test"] = _old(test) if old else test
        metrics["test"]["mcc"] = 0.0 if old else None
        metrics["by_magnitude"]["test"] = [
            {"bin": "-20", "n": 30, "stars": 30, "galaxies": 0, "accuracy": 0.97, "mcc": 0.0 if old else None},
            {"bin": "20-", "n": 30, "stars": 30, "galaxies": 0, "accuracy": 0.9, "mcc": 0.0 if old else None},
        ]
        base = baselines(np.array([0, 0, 1]), np.ones(60) if not old else np.array([0, 1]))
        metrics["baselines"] = {"test": base}
        fsio.write_json(folder / "metrics.json", metrics)
        meta = {k: v for k, v in fsio.read_json(folder / "model.json").items() if k != fsio.INTEGRITY_KEY}
        fsio.seal(folder / "model.json", [folder / "model.keras", folder / "metrics.json"], meta)
    assert paths.model(MODEL).json.exists()


@pytest.mark.parametrize("old", [False, True], ids=["null", "earlier-0.0"])
def test_the_report_shows_no_mcc_for_a_test_split_of_one_class(tmp_path, old):
    """The report's headline formatted the test MCC with :.3f (a null one crashed make_report.py) and its tables
    showed 0.000 for an MCC the test split cannot have."""
    from stargal.stages.report import Run, evaluation_section, headline
    from stargal.typeset import Para, TableBlock

    paths = DataPaths(tmp_path / "data")
    _one_class_run(paths, old)
    run = Run(paths)
    blocks = headline(run)
    lead = next(b for b in blocks if isinstance(b, Para)).text
    assert "no MCC (undefined: the test split holds one class)" in lead and "MCC **0.000**" not in lead
    table = next(b for b in blocks if isinstance(b, TableBlock))
    mcc, auc = table.columns.index("MCC"), table.columns.index("ROC AUC")
    assert all(row[mcc] is None and row[auc] is None for row in table.rows), table.rows  # models and baselines
    section = evaluation_section(run)
    tables = [b for b in section.blocks if isinstance(b, TableBlock)]
    splits = tables[0]
    test_rows = [r for r in splits.rows if str(r[0]).startswith("test")]
    for column in ("MCC", "balanced accuracy", "ROC AUC"):
        i = splits.columns.index(column)
        assert all(r[i] is None for r in test_rows), (column, test_rows)
    bins = tables[1]
    i = bins.columns.index("MCC")
    assert [r[i] for r in bins.rows] == [None, None]
