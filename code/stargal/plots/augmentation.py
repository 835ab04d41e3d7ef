"""Plots of stage 04: example images of every augmentation and the bar plot of the experiment."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import augment as aug
from ..config import SEED
from . import save_figure, subplots


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=100, tight=True)


def _display(x: np.ndarray, norm: dict, band: int = 2) -> np.ndarray:
    """The model's view of one band: arcsinh((x - center) / scale)."""
    return np.arcsinh((x[..., band] - norm["center"][band]) / norm["scale"][band])


def example_grids(out_dir: Path, x: np.ndarray, y: np.ndarray, norm: dict, *, seed: int = SEED) -> list[Path]:
    """One figure of the eight symmetries and one of brightness/blur, rows = example patches (r band)."""
    out_dir = Path(out_dir)
    n = len(x)
    files = []
    if n == 0:
        return files
    # symmetries: every D4 element of every example, from the same function the pipeline uses
    fig, axes = subplots(n, aug.D4_SIZE, figsize=(1.6 * aug.D4_SIZE, 1.7 * n), squeeze=False)
    for k in range(aug.D4_SIZE):
        xk = np.asarray(aug.apply_d4(x, np.full(n, k, np.int32)))
        for i in range(n):
            ax = axes[i, k]
            ax.imshow(_display(xk[i], norm), origin="lower", cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(aug.D4_NAMES[k], fontsize=8)
            if k == 0:
                ax.set_ylabel("star" if y[i] else "galaxy", fontsize=8)
    fig.suptitle("D4 symmetries (r band, model's normalised view)")
    files.append(_save(fig, out_dir / "examples_symmetries.png"))

    # photometric augmentations: brightness offsets of +-2 sigma_b in every band, blur sigma 1 px
    rng = np.random.default_rng(seed)
    sigma = aug.BRIGHTNESS_SIGMA
    columns = [
        ("original", x),
        (
            f"brightness +{2 * sigma:g}",
            np.asarray(aug.apply_brightness(x, np.full((n, x.shape[3]), 2 * sigma), norm["scale"])),
        ),
        (
            f"brightness -{2 * sigma:g}",
            np.asarray(aug.apply_brightness(x, np.full((n, x.shape[3]), -2 * sigma), norm["scale"])),
        ),
        (
            "brightness random",
            np.asarray(aug.apply_brightness(x, rng.normal(0, sigma, (n, x.shape[3])), norm["scale"])),
        ),
        (f"blur {aug.BLUR_SIGMA:g} px", np.asarray(aug.apply_blur(x, aug.BLUR_SIGMA))),
        (
            "random combination",
            np.asarray(aug.augment_batch(x, aug.POLICIES["combination"], norm["scale"], [seed, 1])[0]),
        ),
    ]
    fig, axes = subplots(n, len(columns), figsize=(1.8 * len(columns), 1.7 * n), squeeze=False)
    base = [_display(x[i], norm) for i in range(n)]
    for j, (title, xs) in enumerate(columns):
        for i in range(n):
            ax = axes[i, j]
            lo, hi = np.percentile(base[i], [1, 99.5])
            ax.imshow(_display(xs[i], norm), origin="lower", cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel("star" if y[i] else "galaxy", fontsize=8)
    fig.suptitle("Brightness offsets (normalised units) and blur (r band, same display range per row)")
    files.append(_save(fig, out_dir / "examples_photometric.png"))
    return files


def experiment_plot(path: Path, rows: list[dict]) -> Path:
    """Bars of train/val loss and accuracy per augmentation policy."""
    names = [r["policy"] for r in rows]
    x = np.arange(len(rows))
    fig, axes = subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        series = (
            ("train (augmented)", f"train_{metric}"),
            ("train (clean)", f"train_{metric}_clean"),
            ("validation", f"val_{metric}"),
        )
        width = 0.8 / len(series)
        for i, (label, key) in enumerate(series):
            ax.bar(x + (i - 1) * width, [r[key] for r in rows], width, label=label)
        ax.set_xticks(x, names, rotation=20)
        ax.set_ylabel(metric)
        if metric == "accuracy":
            lo = min(r[k] for r in rows for _, k in series)
            ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Augmentation experiment (same proxy model and budget per policy)")
    return _save(fig, path)
