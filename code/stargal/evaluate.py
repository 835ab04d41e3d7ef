"""Evaluation of a trained model: p(star) on every split, its metrics (overall, per r magnitude, trivial
baselines), and the mean and spread over several seeds. Arrays and dicts in, dicts out; no files."""

from __future__ import annotations

import numpy as np

from .config import SPLITS
from .metrics import baselines, by_magnitude, classification_metrics, defined

# the metrics summarised over seeds and compared between runs
SUMMARY_KEYS = ("accuracy", "mcc", "balanced_accuracy", "roc_auc", "log_loss", "star_purity", "star_completeness")


def predict_splits(model, data: dict, *, tta: bool = False) -> dict:
    """p(star) per split, each predicted once; ``tta`` averages val and test over the eight symmetries
    (train, which only shows the fit, is scored in a single pass: TTA there would cost 8x for nothing)."""
    from .model import predict

    return {s: predict(model, data[s]["x"], data[s].get("psf"), tta=tta and s != "train") for s in SPLITS if s in data}


def evaluate(data: dict, preds: dict, threshold: float, *, tta: bool = False) -> dict:
    """Metrics of ``preds`` on every split: overall, per r magnitude bin, and the trivial baselines."""
    metrics: dict = {}
    by_mag: dict = {}
    for split, p in preds.items():
        d = data[split]
        metrics[split] = classification_metrics(d["y"], p, threshold)
        by_mag[split] = by_magnitude(d["y"], p, d["mag"], threshold)
    metrics["baselines"] = {
        s: baselines(data["train"]["y"], data[s]["y"]) for s in SPLITS if s in data and s != "train"
    }
    metrics["by_magnitude"] = by_mag
    metrics["threshold"] = threshold
    metrics["tta"] = tta
    metrics["tta_splits"] = [s for s in preds if tta and s != "train"]
    return metrics


def summarise_runs(runs: list[dict], split: str = "test") -> dict:
    """Mean and standard deviation over runs of the main metrics of ``split``; a metric undefined in every run (MCC
    of a split of one class) is left out, not averaged as 0."""
    out: dict = {"n_runs": len(runs), "models": [r["name"] for r in runs]}
    for key in SUMMARY_KEYS:
        vals = [defined(r["metrics"].get(split) or {}, key) for r in runs]
        vals = [v for v in vals if v is not None]
        if vals:
            out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
    return out
