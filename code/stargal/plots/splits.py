"""Split report figure: class balance and r-band PSF magnitude distribution of train/val/test side by side."""

from __future__ import annotations

import os

import numpy as np

from . import save_figure, subplots

COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def plot_splits(
    path: str | os.PathLike, objects: dict[str, np.ndarray], counts: dict, bins: np.ndarray, title: str = ""
) -> None:
    """Three panels: star/galaxy counts per split, and the normalised r-magnitude histograms of galaxies
    and of stars per split (clipped into the bin range so nothing is silently lost)."""
    fig, axes = subplots(1, 3, figsize=(14, 4.2))
    names = list(objects)
    x = np.arange(len(names))
    galaxies = [counts[s]["galaxies"] for s in names]
    stars = [counts[s]["stars"] for s in names]
    axes[0].bar(x, galaxies, color="tab:purple", label="galaxies")
    axes[0].bar(x, stars, bottom=galaxies, color="gold", label="stars")
    for i, s in enumerate(names):
        frac = counts[s]["star_fraction"]
        if frac is not None:
            axes[0].text(i, galaxies[i] + stars[i], f"{100 * frac:.0f}% stars", ha="center", va="bottom", fontsize=8)
    axes[0].set_xticks(x, [f"{s}\n(n={counts[s]['n']})" for s in names])
    axes[0].set_ylabel("objects")
    axes[0].set_title("class balance")
    axes[0].legend(fontsize=8)
    for ax, label, kind in ((axes[1], 0, "galaxies"), (axes[2], 1, "stars")):
        for s in names:
            mags = objects[s]["r_psfmag"][(objects[s]["label"] == label) & np.isfinite(objects[s]["r_psfmag"])]
            if mags.size:
                ax.hist(np.clip(mags, bins[0], bins[-1]), bins=bins, density=True, histtype="step", lw=1.6,
                        color=COLOURS.get(s), label=f"{s} ({mags.size})")  # fmt: skip
        ax.set_xlabel("r PSF magnitude")
        ax.set_ylabel("density")
        ax.set_title(f"r magnitude, {kind}")
        if ax.get_legend_handles_labels()[1]:  # a class no split holds draws nothing to name
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
