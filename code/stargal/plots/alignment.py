"""Plots of stage 01: object counts and star fraction, magnitude histograms, band offsets, before/after crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import BANDS, LABEL_GALAXY, LABEL_STAR
from . import save_figure, subplots

BAND_COLOURS = {"u": "tab:purple", "g": "tab:green", "r": "tab:red", "i": "tab:brown", "z": "black"}


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=110, tight=True)


def plot_counts(per_field: list[dict], path: Path) -> Path:
    """Stacked galaxy/star counts per field with the star fraction on a second axis."""
    rows = [f for f in per_field if f.get("objects") is not None]
    labels = [str(f["field"]) for f in rows]
    gal = np.array([f["galaxies"] for f in rows])
    star = np.array([f["stars"] for f in rows])
    fig, ax = subplots(figsize=(max(5, 0.6 * len(rows) + 3), 3.8))
    ax.bar(labels, gal, label="galaxies", color="tab:orange")
    ax.bar(labels, star, bottom=gal, label="stars", color="tab:blue")
    ax.set_xlabel("field")
    ax.set_ylabel("objects in frame")
    ax2 = ax.twinx()
    ax2.plot(labels, star / np.maximum(gal + star, 1), "k.-", label="star fraction")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("star fraction")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    ax.set_title("Catalog objects per field")
    return _save(fig, path)


def plot_magnitudes(objects: np.ndarray, path: Path) -> Path:
    """Histograms of r PSF and model magnitudes per class."""
    fig, axes = subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, column, title in zip(
        axes, ("r_psfmag", "r_modelmag"), ("r PSF magnitude", "r model magnitude"), strict=True
    ):
        values = objects[column].astype(float)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            continue
        bins = np.arange(np.floor(np.percentile(finite, 0.5)), np.ceil(np.percentile(finite, 99.5)) + 0.25, 0.25)
        for label, name, colour in ((LABEL_GALAXY, "galaxies", "tab:orange"), (LABEL_STAR, "stars", "tab:blue")):
            v = values[(objects["label"] == label) & np.isfinite(values)]
            if v.size:
                ax.hist(v, bins=bins, histtype="step", lw=1.5, color=colour, label=f"{name} ({v.size})")
        ax.set_xlabel(title)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("objects per 0.25 mag")
    fig.suptitle("Magnitudes of catalog objects (all fields)")
    return _save(fig, path)


def plot_offsets(per_field: list[dict], path: Path) -> Path:
    """Measured band offsets (dx, dy at the frame centre, drift as error bar) per field."""
    fig, axes = subplots(1, 2, figsize=(10, 3.6), sharex=True)
    fields = [str(f["field"]) for f in per_field]
    xpos = np.arange(len(fields))
    for k, band in enumerate(BANDS):
        dx = [f["offsets"][band]["dx"] for f in per_field]
        dy = [f["offsets"][band]["dy"] for f in per_field]
        drift = [f["offsets"][band]["drift"] for f in per_field]
        shift = (k - 2) * 0.08
        axes[0].errorbar(xpos + shift, dx, yerr=drift, fmt="o", color=BAND_COLOURS[band], label=band, ms=4)
        axes[1].errorbar(xpos + shift, dy, yerr=drift, fmt="o", color=BAND_COLOURS[band], label=band, ms=4)
    for ax, name in zip(axes, ("dx (columns)", "dy (rows)"), strict=True):
        ax.set_xticks(xpos, fields)
        ax.set_xlabel("field")
        ax.set_ylabel(f"{name}, px")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(BANDS), fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle("Band offset relative to the reference band at the frame centre (bars: drift over the frame)")
    return _save(fig, path)


def _crop_centre(r_image: np.ndarray, half: int) -> tuple[int, int]:
    """Centre of the crop: the brightest pixel of the reference image away from the edges."""
    rows, cols = r_image.shape
    m = min(half + 20, rows // 2 - 1, cols // 2 - 1)
    inner = np.nan_to_num(r_image[m : rows - m, m : cols - m], nan=-np.inf)
    y, x = np.unravel_index(np.argmax(inner), inner.shape)
    return int(y) + m, int(x) + m


def _rgb(i: np.ndarray, r: np.ndarray, g: np.ndarray) -> np.ndarray:
    from astropy.visualization import make_lupton_rgb

    planes = [np.nan_to_num(p.astype(np.float64), nan=0.0) for p in (i, r, g)]
    scale = max(float(np.percentile(np.abs(planes[1]), 99.5)), 1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):
        return make_lupton_rgb(*planes, minimum=0, stretch=scale / 4, Q=8)


def plot_before_after(raw: dict[str, np.ndarray], cube, path: Path, *, half: int = 60, title: str = "") -> Path:
    """Same pixel region as g, r, i colour composite of the raw frames (misaligned) and of the aligned cube."""
    cy, cx = _crop_centre(raw["r"], half)
    ys, xs = slice(max(cy - half, 0), cy + half), slice(max(cx - half, 0), cx + half)
    before = _rgb(raw["i"][ys, xs], raw["r"][ys, xs], raw["g"][ys, xs])
    planes = {b: np.asarray(cube.data[cube.band_index(b), ys, xs], dtype=np.float32) for b in ("g", "r", "i")}
    after = _rgb(planes["i"], planes["r"], planes["g"])
    fig, axes = subplots(1, 2, figsize=(8, 4.3))
    for ax, img, name in zip(axes, (before, after), ("raw frames (not aligned)", "aligned cube"), strict=True):
        ax.imshow(img, origin="lower", interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"g, r, i composite, rows {ys.start}-{ys.stop}, columns {xs.start}-{xs.stop} {title}".strip(), fontsize=10
    )
    return _save(fig, path)
