"""The console text stage 03 prints at the end: a metrics table per model and the mean over seeds."""

from __future__ import annotations

from ..config import SPLITS
from ..metrics import defined
from ..tables import format_cell

_COLUMNS = (
    "accuracy",
    "mcc",
    "balanced_accuracy",
    "roc_auc",
    "log_loss",
    "star_purity",
    "star_completeness",
    "galaxy_purity",
    "galaxy_completeness",
)
_SHORT = ("acc", "mcc", "bal_acc", "auc", "logloss", "star_pur", "star_comp", "gal_pur", "gal_comp")


def _cell(m: dict, column: str, counts: dict | None = None) -> str:
    """A metric's cell: "-" when it is None or undefined for a split of one class (metrics.json of an earlier
    stargal held sklearn's 0.0 there, which would read as a score); ``counts``: the split a baseline is of."""
    return format_cell(defined(m, column, counts))


def metrics_table(metrics: dict) -> str:
    """A compact plain-text table: splits x main metrics, plus the test baselines."""
    lines = [f"{'split':<16}{'n':>7} " + " ".join(f"{s:>9}" for s in _SHORT)]
    for split in SPLITS:
        if split in metrics:
            m = metrics[split]
            lines.append(f"{split:<16}{m['n']:>7} " + " ".join(f"{_cell(m, c):>9}" for c in _COLUMNS))
    for kind, b in metrics.get("baselines", {}).get("test", {}).items():
        test = metrics.get("test", {})
        n = test.get("n", 0)
        lines.append(f"{'test ' + kind:<16}{n:>7} " + " ".join(f"{_cell(b, c, test):>9}" for c in _COLUMNS))
    lines.append(
        f"threshold (chosen on val): {metrics['threshold']:.4f}"
        + ("  [test-time augmentation]" if metrics.get("tta") else "")
    )
    return "\n".join(lines)


def run_summary(result: dict) -> str:
    """The compact end-of-run text: per model the metrics table, then the mean over seeds."""
    parts = []
    for run in result["runs"]:
        mj = run["model_json"]
        state = (
            "current, not retrained" if run["skipped"] else f"{mj['epochs_run']} epochs in {mj['train_seconds']:.0f} s"
        )
        parts.append(f"model {run['name']} ({mj['architecture']}, best epoch {mj['best_epoch']}, {state})")
        parts.append(metrics_table(run["metrics"]))
    summ = result.get("test_summary")
    if summ:
        parts.append(
            f"test over {summ['n_runs']} seeds: "
            + ", ".join(
                f"{k} {summ[k]['mean']:.4f} +- {summ[k]['std']:.4f}"
                for k in ("accuracy", "mcc", "roc_auc")
                if k in summ
            )
        )
    if result.get("report"):
        parts.append(f"summary of the seeds: {result['report']}")
    parts.append(f"latest model: {result['latest']} ({len(result['runs'])} run(s) on dataset {result['dataset']})")
    return "\n".join(parts)


def ensemble_summary(result: dict) -> str:
    """The end-of-run text of ``03_model.py --ensemble``: members' test MCC, then the ensemble's table."""
    mj = result["model_json"]
    test_counts = (mj.get("dataset_counts") or {}).get("test")  # what the members' test split held
    members = ", ".join(f"{m['name']} ({_cell(m.get('test') or {}, 'mcc', test_counts)})" for m in mj["ensemble"])
    state = "current, not combined again" if result["skipped"] else f"{len(mj['ensemble'])} models averaged"
    return "\n".join(
        [
            f"ensemble {result['name']} ({state}; members and their test MCC: {members})",
            metrics_table(result["metrics"]),
            f"latest model: {result['name']}",
        ]
    )
