"""Figures of the real-sky evaluation (stargal.stages.realsky)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import locus, realsky
from . import save_figure, subplots


def plot_locus(path: Path, results: list[dict], tables: list[dict]) -> Path:
    """One panel per field: g-r against r-i of the 16 < r < 20 sources, by the model's call, and the locus."""
    n = len(results)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, result, table in zip(axes.flat, results, tables, strict=False):
        bright = realsky.in_bin(table["r"], *realsky.LOCUS_RANGE) & (table["status"] == "ok")
        star = bright & (table["label"] == "star")
        galaxy = bright & (table["label"] == "galaxy")
        ebv = result["locus"]["ebv"]
        lgr, lri = locus.locus_curve()
        ax.plot(lgr + locus.REDDENING[0] * ebv, lri + locus.REDDENING[1] * ebv, "k-", lw=1, label="stellar locus")
        ax.scatter(table["g_r"][galaxy], table["r_i"][galaxy], s=4, c="tab:orange", alpha=0.6, label="called galaxy")
        ax.scatter(table["g_r"][star], table["r_i"][star], s=4, c="tab:blue", alpha=0.6, label="called star")
        on = result["locus"]["called_star"]
        frac = "-" if on["fraction"] is None else f"{100 * on['fraction']:.0f} %"
        ax.set_title(f"{result['label']}: E(B-V) {ebv:.2f}, stars on locus {frac}", fontsize=9)
        ax.set_xlim(-0.5 + locus.REDDENING[0] * ebv, 2.2 + locus.REDDENING[0] * ebv)
        ax.set_ylim(-0.5 + locus.REDDENING[1] * ebv, 2.0 + locus.REDDENING[1] * ebv)
        ax.set_xlabel("g - r")
        ax.set_ylabel("r - i")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left", markerscale=3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_recall(path: Path, results: list[dict]) -> Path:
    """Catalog-star recall per fine r bin and per quadrant, with 95 % intervals, for fields with a catalog."""
    with_catalog = [r for r in results if "catalog" in r]
    fig, axes = subplots(1, 2, figsize=(10, 3.6), squeeze=False)
    left, right = axes[0]
    for result in with_catalog:
        recall = result["catalog"]["recall"]
        _bars(left, recall["by_r_fine"], result["label"])
        _bars(right, recall["by_quadrant"], result["label"], key="quadrant")
    for ax, xlabel in ((left, "r PSF magnitude (catalog)"), (right, "frame quadrant")):
        ax.axhline(0.95, color="k", ls="--", lw=0.8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("catalog stars called star")
        ax.set_xlabel(xlabel)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
    if not with_catalog:
        left.text(0.5, 0.5, "no field with a star catalog", ha="center", transform=left.transAxes)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_labelled(path: Path, results: list[dict]) -> Path:
    """For fields with the labelled check: the sweeps' stars and galaxies called star per fine r bin, with 95 %
    intervals (a good classifier keeps the first near 1 and the second near 0)."""
    fig, ax = subplots(figsize=(7.5, 3.8))
    labels = []
    for i, result in enumerate(r for r in results if "labelled" in r):
        entries = result["labelled"]["by_r_fine"]
        labels = [e["bin"] for e in entries]
        for key, style, kind in (("stars_called_star", "-", "stars"), ("galaxies_called_star", "--", "galaxies")):
            frac, low, high = _intervals([e[key] for e in entries])
            x = np.arange(len(entries)) + 0.06 * i
            ax.errorbar(x, frac, yerr=np.clip([frac - low, high - frac], 0, None), ls=style, marker="o", ms=3,
                        color=f"C{i}", label=f"{result['label']}: {kind}", capsize=2, lw=1)  # fmt: skip
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("r PSF magnitude (catalog)")
    ax.set_ylabel("fraction called star")
    ax.set_ylim(-0.02, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _bars(ax, entries: list[dict], label: str, key: str = "bin") -> None:
    x = np.arange(len(entries))
    frac, low, high = _intervals(entries)
    ax.bar(x, frac, color="tab:blue", alpha=0.7, label=label)
    yerr = np.clip([frac - low, high - frac], 0, None)  # the interval holds the fraction; rounding aside
    ax.errorbar(x, frac, yerr=yerr, fmt="none", ecolor="k", lw=0.8)
    for xi, e in zip(x, entries, strict=True):
        ax.text(xi, 0.02, f"n={e['n']}", ha="center", fontsize=6)
    ax.set_xticks(x, [e[key] for e in entries])


def _intervals(entries: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fraction, low, high) arrays of ``realsky.fraction`` entries, NaN where there is no data."""
    return tuple(np.array([np.nan if e[k] is None else e[k] for e in entries]) for k in ("fraction", "low", "high"))


def plot_star_fractions(path: Path, results: list[dict]) -> Path:
    """Predicted star fraction per r bin, one line per field."""
    fig, ax = subplots(figsize=(6.5, 3.6))
    for result in results:
        entries = result["star_fraction"]["by_r"]
        frac = [np.nan if e["fraction"] is None else e["fraction"] for e in entries]
        ax.plot(range(len(entries)), frac, marker="o", label=result["label"])
    labels = [realsky.bin_label(lo, hi) for lo, hi in realsky.STAR_FRACTION_BINS]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("r magnitude")
    ax.set_ylabel("fraction called star")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
