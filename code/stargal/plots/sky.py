"""Simulated versus real sky: crops of real and simulated frames side by side, with measured statistics."""

from __future__ import annotations

import os

import numpy as np

from . import save_figure, subplots


def _asinh(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.arcsinh(np.asarray(img, dtype=np.float64) / (3 * sigma))


def plot_real_vs_simulated(
    path: str | os.PathLike,
    real: dict[str, np.ndarray],
    simulated: dict[str, np.ndarray],
    sigmas: dict[str, dict[str, float]],
    title: str = "",
    notes: dict[str, str] | None = None,
) -> None:
    """One row per band: real crop | simulated crop | pixel histograms; both crops share one asinh stretch.

    ``real``/``simulated``: band -> 2-D crop (nanomaggies); ``sigmas``: {"real"|"simulated": {band: sigma}}.
    """
    bands = [b for b in real if b in simulated]
    fig, axes = subplots(len(bands), 3, figsize=(12, 3.2 * len(bands)), squeeze=False)
    for row, b in enumerate(bands):
        s_real = sigmas["real"][b]
        lo, hi = -2.0, float(np.arcsinh(60.0 / 3))
        for col, (name, img) in enumerate((("real", real[b]), ("simulated", simulated[b]))):
            ax = axes[row, col]
            ax.imshow(_asinh(img, s_real), origin="lower", cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(f"{name} {b}   sigma {sigmas[name][b]:.4f} nmgy", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        ax = axes[row, 2]
        bins = np.linspace(-6 * s_real, 12 * s_real, 80)
        for name, img, colour in (("real", real[b], "k"), ("simulated", simulated[b], "tab:red")):
            ax.hist(
                np.clip(np.ravel(img), bins[0], bins[-1]),
                bins=bins,
                histtype="step",
                density=True,
                color=colour,
                label=name,
                lw=1.3,
            )
        ax.set_yscale("log")
        ax.set_xlabel("pixel value (nanomaggies)")
        ax.legend(fontsize=8)
        if notes and b in notes:
            ax.set_title(notes[b], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
