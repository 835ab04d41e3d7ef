"""Per-channel normalisation statistics, computed on the training split only.

Decision: the model sees ``arcsinh((x - center[c]) / scale[c])`` per band ``c``, with ``center`` the
median and ``scale`` 1.4826 x the median absolute deviation (MAD, which equals the standard deviation
for Gaussian noise) of the training patches' pixels in that band. Why:

- median and MAD have a 50 % breakdown point, so the few saturated pixels of bright stars, which
  would dominate a min-max or mean/std scaling, barely move them; the scale is set by the sky noise;
- arcsinh is linear within about one scale of the centre (faint galaxies keep their contrast) and
  logarithmic beyond (bright star cores are compressed instead of clipped);
- statistics come from training patches only (validation and test never influence them) and only
  from patches fully inside the frame with full band coverage, so the zeros written for padding do
  not pull the statistics towards 0.

Patches carry raw nanomaggies on disk; the statistics are stored in ``dataset.json`` and applied by
the model's first layers, so inference takes raw patches.
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826  # MAD x this = standard deviation of Gaussian noise (the one home of this factor)
MAX_SAMPLES = 2_000_000  # pixels per band used for the statistics; a regular subsample beyond this


def robust_stats(patches: np.ndarray, usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) float64 [bands] of patches ``[n, P, P, bands]``: median and 1.4826 x MAD per band.

    ``usable`` (bool [n]) selects the patches to use (default all; all if none is usable). A zero MAD
    (constant data) falls back to the standard deviation, then to 1, so the scale is always positive.
    """
    if patches.ndim != 4:
        raise ValueError(f"patches must be [n, P, P, bands], got shape {patches.shape}")
    n_bands = patches.shape[-1]
    index = np.arange(patches.shape[0])
    if usable is not None and np.any(usable):
        index = np.flatnonzero(usable)
    if index.size == 0:
        return np.zeros(n_bands), np.ones(n_bands)
    per_patch = patches.shape[1] * patches.shape[2]
    index = index[:: max(1, int(np.ceil(index.size * per_patch / MAX_SAMPLES)))]
    center = np.empty(n_bands)
    scale = np.empty(n_bands)
    for b in range(n_bands):
        values = np.asarray(patches[index, :, :, b], dtype=np.float64).ravel()  # one band's copy at a time
        values = values[np.isfinite(values)]
        if values.size == 0:
            center[b], scale[b] = 0.0, 1.0
            continue
        center[b] = np.median(values)
        mad = MAD_TO_SIGMA * np.median(np.abs(values - center[b]))
        if not mad > 0:
            mad = float(np.std(values))
        scale[b] = mad if mad > 0 else 1.0
    return center, scale


def apply(patches: np.ndarray, center, scale) -> np.ndarray:
    """``arcsinh((x - center) / scale)`` per band, float32 (reference implementation of the model's layer)."""
    center = np.asarray(center, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    return np.arcsinh((np.asarray(patches, dtype=np.float32) - center) / scale).astype(np.float32)


def normalisation_record(center: np.ndarray, scale: np.ndarray, n_patches: int) -> dict:
    """The ``normalisation`` entry of dataset.json."""
    return {
        "method": "asinh",
        "center": [float(v) for v in center],
        "scale": [float(v) for v in scale],
        "statistic": "median and 1.4826*MAD per band over training patches inside the frame",
        "n_patches": int(n_patches),
    }
