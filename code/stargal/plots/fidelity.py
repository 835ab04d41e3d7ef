"""Simulated against real sky, one figure per property (stargal.fidelity measurements)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fidelity import AUREOLE_RADII, COUNT_BINS, EE_RADII
from . import save_figure, subplots

REAL, SIM = "tab:red", "tab:blue"


def _both(measured: dict):
    return (("real", measured["real"], REAL), ("simulated", measured["simulated"], SIM))


SIZE_MAGNITUDE_POINTS = 1000  # per field: a crowded Galactic-plane field (13,000 sources) would hide the others


def plot_size_magnitude(path: Path, measured: dict) -> Path:
    """Half-light radius (over each source's local sky level) over the stars' against r magnitude: the stellar
    sequence must sit at 1 in both. At most SIZE_MAGNITUDE_POINTS sources of each field, drawn at random."""
    fig, axes = subplots(1, 2, figsize=(10, 3.8), sharey=True)
    rng = np.random.default_rng(0)
    for ax, (name, fields, colour) in zip(axes, _both(measured), strict=True):
        for m in fields.values():
            r, size = (np.asarray(m["size_magnitude"][k], float) for k in ("r", "r50_over_stellar"))
            shown = rng.permutation(len(r))[:SIZE_MAGNITUDE_POINTS]
            ax.scatter(r[shown], size[shown], s=1.5, c=colour, alpha=0.3)
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_yscale("log")
        ax.set_ylim(0.4, 5)
        ax.set_xlim(13, 23)
        ax.set_xlabel("r magnitude")
        ax.set_title(f"{name} sky: {len(fields)} fields, up to {SIZE_MAGNITUDE_POINTS:,} sources each", fontsize=9)
    axes[0].set_ylabel("r50 over local sky / stars' r50 (r band)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_psf_sizes(path: Path, measured: dict, bands: str = "ugriz") -> Path:
    """Stars' half-light radius per band and field: the seeing range and the band-to-band ratios."""
    fig, axes = subplots(1, 2, figsize=(10, 3.6))
    for k, (name, fields, colour) in enumerate(_both(measured)):
        sizes = np.array([m["stellar_r50"] for m in fields.values()], float)
        x = np.arange(len(bands)) + (k - 0.5) * 0.3
        for row in sizes:
            axes[0].plot(x, row, "o", ms=3, color=colour, alpha=0.6)
        axes[0].plot([], [], "o", color=colour, label=name)
        ratio = sizes / sizes[:, [bands.index("r")]]
        axes[1].boxplot(
            ratio, positions=x, widths=0.25, patch_artist=True, boxprops={"facecolor": colour, "alpha": 0.4}
        )
    for ax, label in ((axes[0], "stars' r50 (pixels)"), (axes[1], "stars' r50 / r band's")):
        ax.set_xticks(range(len(bands)), list(bands))
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_psf_profile(path: Path, measured: dict, bands: str = "ugriz") -> Path:
    """Encircled energy of the stacked stars per band: the PSF's wings (light beyond 4-8 px)."""
    fig, axes = subplots(1, len(bands), figsize=(3 * len(bands), 3.2), sharey=True)
    for b, ax in enumerate(axes):
        for name, fields, colour in _both(measured):
            for m in fields.values():
                ax.plot(EE_RADII, m["encircled_energy"][b], color=colour, alpha=0.5, lw=1)
            ax.plot([], [], color=colour, label=name)
        ax.set_title(f"{bands[b]} band", fontsize=9)
        ax.set_xlabel("radius (pixels)")
    axes[0].set_ylabel("encircled energy (of 12 px)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_aureole(path: Path, measured: dict, bands: str = "ugriz") -> Path:
    """Surface brightness x r^2 about each field's brightest sources, relative to 15 px: the PSF's aureole of
    scattered light (flat: falling as r^-2) against a PSF without one (falling steeply beyond 20 px)."""
    from matplotlib.ticker import NullLocator

    fig, axes = subplots(1, len(bands), figsize=(3 * len(bands), 3.2), sharey=True)
    for b, ax in enumerate(axes):
        for name, fields, colour in _both(measured):
            for m in fields.values():
                if "aureole" in m:
                    ax.plot(AUREOLE_RADII, np.clip(m["aureole"][b], 1e-3, None), color=colour, alpha=0.5, lw=1)
            ax.plot([], [], color=colour, label=name)
        ax.set_xscale("log")
        ax.set_xticks(AUREOLE_RADII, [f"{r:g}" for r in AUREOLE_RADII])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        ax.set_ylim(0.01, 5)
        ax.set_title(f"{bands[b]} band", fontsize=9)
        ax.set_xlabel("radius (pixels)")
    axes[0].set_ylabel("I(r) r^2, relative to 15 px")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _per_band_strips(
    path: Path, measured: dict, key: str, ylabel: str, bands: str, scale: float = 1.0, zero_line: bool = False
) -> Path:
    """One point per field and band of the per-band measurement ``key``, real beside simulated."""
    fig, ax = subplots(figsize=(6.5, 3.4))
    for k, (name, fields, colour) in enumerate(_both(measured)):
        values = np.array([m[key] for m in fields.values()], float) * scale
        x = np.arange(len(bands)) + (k - 0.5) * 0.3
        for row in values:
            ax.plot(x, row, "o", ms=3, color=colour, alpha=0.6)
        ax.plot([], [], "o", color=colour, label=name)
    if zero_line:
        ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(bands)), list(bands))
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_psf_variation(path: Path, measured: dict, bands: str = "ugriz") -> Path:
    """How much the stars' size changes from the frame's centre to its edge along the columns, per band."""
    return _per_band_strips(path, measured, "psf_slope_x", "r50 change centre -> edge (%)", bands, 100, True)


def plot_counts(path: Path, measured: dict) -> Path:
    """Detected sources per full field and magnitude: density from the Galactic pole to the plane."""
    fig, ax = subplots(figsize=(6.5, 3.6))
    centres = 0.5 * (COUNT_BINS[1:] + COUNT_BINS[:-1])
    for name, fields, colour in _both(measured):
        for label, m in fields.items():
            ax.plot(centres, np.maximum(m["counts_per_field"], 0.5), color=colour, alpha=0.6, lw=1)
            if name == "real":
                ax.text(centres[-3], max(m["counts_per_field"][-3], 0.5), label, fontsize=6, color=colour)
        ax.plot([], [], color=colour, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("r magnitude")
    ax.set_ylabel("sources per field per 0.5 mag")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sky_residual(path: Path, measured: dict, bands: str = "ugriz") -> Path:
    """Spread of the background mesh left after sky subtraction, in units of the noise, per band."""
    return _per_band_strips(path, measured, "sky_residual", "background mesh std / noise", bands)


def plot_galaxy_colours(path: Path, measured: dict) -> Path:
    """g-r against r-i of extended sources brighter than r = 20.5 (galaxies)."""
    fig, axes = subplots(1, 2, figsize=(9, 3.8), sharex=True, sharey=True)
    for ax, (name, fields, colour) in zip(axes, _both(measured), strict=True):
        for m in fields.values():
            gc = m["galaxy_colours"]
            ax.scatter(gc["g_r"], gc["r_i"], s=3, c=colour, alpha=0.5)
        ax.set_title(f"{name}: extended sources, r < 20.5", fontsize=9)
        ax.set_xlabel("g - r")
        ax.set_xlim(-0.3, 2.3)
        ax.set_ylim(-0.5, 1.3)
    axes[0].set_ylabel("r - i")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_band_offsets(path: Path, measured: dict, bands: str = "ugiz") -> Path:
    """Each band's offset from r (pixels) that alignment resampled away: its sub-pixel part sets how much
    the noise is smoothed, so the simulated fields must spread like the real ones."""
    fig, axes = subplots(1, len(bands), figsize=(3 * len(bands), 3), sharey=False)
    for ax, b in zip(axes, bands, strict=True):
        for name, fields, colour in _both(measured):
            pts = np.array([m["band_offsets"].get(b, (np.nan, np.nan)) for m in fields.values()], float)
            ax.scatter(pts[:, 0], pts[:, 1], s=12, c=colour, alpha=0.7, label=name)
        ax.set_title(f"{b} - r", fontsize=9)
        ax.set_xlabel("dx (px)")
    axes[0].set_ylabel("dy (px)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


FIGURES = {
    "size_magnitude.png": plot_size_magnitude,
    "psf_sizes.png": plot_psf_sizes,
    "psf_profile.png": plot_psf_profile,
    "psf_aureole.png": plot_aureole,
    "psf_variation.png": plot_psf_variation,
    "counts.png": plot_counts,
    "sky_residual.png": plot_sky_residual,
    "galaxy_colours.png": plot_galaxy_colours,
    "band_offsets.png": plot_band_offsets,
}
