"""PNG grids of explanation maps: per example, the image, Integrated Gradients per band and summed, Grad-CAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import BANDS
from ..normalise import MAD_TO_SIGMA
from . import save_figure, subplots


def rgb(patch: np.ndarray, bands: str = "".join(BANDS)) -> np.ndarray:
    """An asinh-stretched i/r/g colour image [P, P, 3] in [0, 1] of a raw patch [P, P, bands]."""
    planes = [patch[..., bands.index(b)] for b in "irg"]
    img = np.stack(planes, axis=-1).astype(np.float64)
    noise = np.maximum(MAD_TO_SIGMA * np.median(np.abs(img - np.median(img, axis=(0, 1))), axis=(0, 1)), 1e-3)
    img = np.arcsinh(np.clip(img, 0, None) / (3 * noise)) / np.arcsinh(
        np.clip(img, 0, None).max() / (3 * noise.min()) + 1e-9
    )
    return np.clip(img, 0, 1)


def plot_explanations(
    x: np.ndarray,
    ig: np.ndarray,
    cam: np.ndarray,
    p_star: np.ndarray,
    truth: np.ndarray,
    path: Path,
    *,
    title: str = "",
    captions: list[str] | None = None,
    bands: str = "".join(BANDS),
) -> Path:
    """One row per example: colour image (with p_star), IG per band, IG summed over bands, Grad-CAM on the r band."""
    n = len(x)
    ncols = 3 + len(bands)
    fig, axes = subplots(max(n, 1), ncols, figsize=(1.55 * ncols, 1.65 * max(n, 1) + 0.5), squeeze=False)
    heads = ["image (irg)", *(f"IG {b}" for b in bands), "IG sum", "Grad-CAM"]
    for j, head in enumerate(heads):
        axes[0, j].set_title(head, fontsize=8)
    for i in range(n):
        row = axes[i]
        row[0].imshow(rgb(x[i], bands), origin="lower")
        who = "star" if truth[i] else "galaxy"
        caption = f"p_star={p_star[i]:.2f}\ntrue {who}" + (f"\n{captions[i]}" if captions else "")
        row[0].set_ylabel(caption, fontsize=7)
        lim = float(np.abs(ig[i]).max()) or 1.0
        for j in range(len(bands)):
            row[1 + j].imshow(ig[i, ..., j], cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
        total = ig[i].sum(axis=-1)
        tl = float(np.abs(total).max()) or 1.0
        row[1 + len(bands)].imshow(total, cmap="RdBu_r", vmin=-tl, vmax=tl, origin="lower")
        row[-1].imshow(x[i, ..., bands.index("r")], cmap="gray", origin="lower")
        row[-1].imshow(cam[i], cmap="inferno", alpha=0.55, vmin=0, vmax=1, origin="lower")
        row[-1].set_xlabel(f"p_star={p_star[i]:.2f}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle((title + "\n" if title else "") + "IG: red pushes towards star, blue towards galaxy", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    return path


def plot_examples(
    x: np.ndarray,
    groups: dict[str, np.ndarray],
    p_star,
    truth,
    mag,
    path: Path,
    *,
    title: str = "",
    bands: str = "".join(BANDS),
) -> Path:
    """Rows of example patches (irg colour), one row per group, each panel labelled with truth, p_star and r mag."""
    ncols = max((len(v) for v in groups.values()), default=1)
    nrows = max(1, len(groups))
    fig, axes = subplots(nrows, ncols, figsize=(1.6 * ncols + 1.2, 1.8 * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for i, (name, idx) in enumerate(groups.items()):
        axes[i, 0].set_ylabel(name, fontsize=7)
        for j, k in enumerate(idx):
            ax = axes[i, j]
            ax.set_frame_on(True)
            ax.imshow(rgb(np.asarray(x[k], np.float32), bands), origin="lower")
            m = float(mag[k])
            label = "star" if truth[k] else "gal"
            ax.set_title(f"{label} p={float(p_star[k]):.2f}" + (f"\nr={m:.1f}" if np.isfinite(m) else ""), fontsize=7)
        if len(idx):
            axes[i, 0].set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    return path
