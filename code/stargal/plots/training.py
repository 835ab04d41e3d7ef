"""Plots of stage 03: learning curves, confusion matrix, ROC curves, metrics versus r magnitude, and the
with/without augmentation comparison. PNG, written atomically."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import save_figure, subplots


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=110, tight=True)


def history_plot(path: Path, history: dict) -> Path:
    """Learning curves: loss and accuracy per epoch, train and validation, best epoch marked."""
    fig, axes = subplots(1, 2, figsize=(10, 3.8))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        if key in history:
            ax.plot(epochs, history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation")
        best = history.get("best_epoch")
        if best:
            ax.axvline(best, color="grey", ls=":", label=f"best epoch {best}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Learning curves (weights of the best validation loss restored)")
    return _save(fig, path)


def confusion_plot(path: Path, metrics: dict, split: str = "test") -> Path:
    """The confusion matrix of one split at the model's threshold."""
    cm = np.asarray(metrics[split]["confusion_matrix"])
    fig, ax = subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        frac = v / max(1, cm[i].sum())
        ax.text(j, i, f"{v}\n{frac:.1%}", ha="center", va="center", color="white" if frac > 0.5 else "black")
    ax.set_xticks([0, 1], ["galaxy", "star"])
    ax.set_yticks([0, 1], ["galaxy", "star"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{split}: threshold {metrics['threshold']:.3f}")
    return _save(fig, path)


def roc_plot(path: Path, data: dict, preds: dict) -> Path:
    """ROC curves of every split with both classes, with their AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = subplots(figsize=(4.6, 4.2))
    for split, p in preds.items():
        y = data[split]["y"]
        if y.size and 0 < y.sum() < y.size:
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{split} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="random")
    ax.set_xlabel("false star rate (galaxies called stars)")
    ax.set_ylabel("true star rate (star completeness)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def magnitude_plot(path: Path, metrics: dict, split: str = "test") -> Path:
    """Accuracy, MCC and completeness per r-magnitude bin; a bin of one class has no MCC or balanced accuracy (a gap
    in their lines, not a 0)."""
    from ..metrics import defined, magnitude_bin_label

    rows = [r for r in metrics["by_magnitude"].get(split, []) if r["bin"] != "unknown"]
    fig, axes = subplots(1, 2, figsize=(11, 3.8))
    if rows:
        labels = [magnitude_bin_label(r) for r in rows]
        x = np.arange(len(rows))
        for key in ("accuracy", "mcc", "balanced_accuracy"):
            axes[0].plot(x, [np.nan if defined(r, key) is None else r[key] for r in rows], "o-", label=key)
        for key in ("star_purity", "star_completeness", "galaxy_purity", "galaxy_completeness"):
            axes[1].plot(x, [np.nan if r.get(key) is None else r[key] for r in rows], "o-", label=key.replace("_", " "))
        for ax in axes:
            ax.set_xticks(x, labels)
            ax.set_xlabel("r PSF magnitude")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax2 = axes[0].twinx()
        ax2.bar(x, [r["n"] for r in rows], alpha=0.15, color="k")
        ax2.set_ylabel("objects per bin")
    fig.subplots_adjust(wspace=0.35)
    fig.suptitle(f"{split} metrics versus r magnitude")
    return _save(fig, path)


# every figure training_report may draw (the confusion and magnitude ones per split present)
FIGURE_NAMES = ("learning_curves.png", "roc.png", "confusion_test.png", "by_magnitude_test.png", "confusion_val.png",
                "by_magnitude_val.png")  # fmt: skip


def training_report(
    out_dir: Path, history: dict, metrics: dict, data: dict, preds: dict, where: Callable[[Path], Path] | None = None
) -> list[Path]:
    """Every stage-03 figure of one model under ``out_dir``; returns their paths there. ``where`` maps such a path
    to the file actually written (an output set's temporary file, renamed into place at its commit)."""
    out_dir, where = Path(out_dir), where or (lambda path: path)
    drawn = {"learning_curves.png": lambda f: history_plot(f, history), "roc.png": lambda f: roc_plot(f, data, preds)}
    for split in ("test", "val"):
        if split in metrics:
            drawn[f"confusion_{split}.png"] = lambda f, split=split: confusion_plot(f, metrics, split)
            drawn[f"by_magnitude_{split}.png"] = lambda f, split=split: magnitude_plot(f, metrics, split)
    for name, draw in drawn.items():
        draw(where(out_dir / name))
    return [out_dir / name for name in drawn]


def comparison_plot(path: Path, rows: list[dict]) -> Path:
    """Bars of accuracy and MCC (train/val/test) per augmentation setting."""
    fig, axes = subplots(1, 2, figsize=(10, 3.8))
    names = [r["augment"] for r in rows]
    x = np.arange(len(rows))
    for ax, metric, splits in ((axes[0], "accuracy", ("train", "val", "test")), (axes[1], "mcc", ("val", "test"))):
        width = 0.8 / len(splits)
        for i, split in enumerate(splits):
            vals = [r.get(f"{split}_{metric}", np.nan) for r in rows]
            ax.bar(x + (i - (len(splits) - 1) / 2) * width, vals, width, label=split)
        ax.set_xticks(x, names)
        ax.set_ylabel(metric)
        lo = min(v for r in rows for k, v in r.items() if k.endswith(metric) and isinstance(v, float))
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Training without and with augmentation")
    return _save(fig, path)
