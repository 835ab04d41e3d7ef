"""Toy data and a tiny Keras model with the project's normalisation contract, for the tests of issue 7.

Stars are point sources (Gaussian PSF), galaxies are wider elliptical profiles; a small CNN learns the
difference in a few seconds. The model takes raw float32 [n, P, P, 5] patches and outputs p_star, with a
normalisation layer first (linear here, asinh in stage 03), like stage 03's models.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from stargal import fsio
from stargal.normalise import MAD_TO_SIGMA

BANDS = "ugriz"
NOISE = np.array([0.045, 0.017, 0.027, 0.04, 0.17], dtype=np.float32)
SED = np.array([0.4, 0.8, 1.0, 1.2, 1.3], dtype=np.float32)  # relative flux per band


def source_image(shape, x, y, flux, kind, rng) -> np.ndarray:
    """[5, rows, cols] image of one source at (x, y): a star (PSF) or a galaxy (wide elliptical profile)."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    if kind == "star":
        sx = sy = 1.1
        theta = 0.0
    else:
        sx = float(rng.uniform(2.5, 4.0))
        sy = sx * float(rng.uniform(0.45, 0.8))
        theta = float(rng.uniform(0, np.pi))
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = xx - x, yy - y
    u, v = c * dx + s * dy, -s * dx + c * dy
    prof = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    prof /= prof.sum() + 1e-12
    return (flux * SED[:, None, None] * prof[None]).astype(np.float32)


def toy_patches(n: int, patch_size: int = 15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n raw patches [n, P, P, 5] (half stars, half galaxies, centred) and labels (1 star, 0 galaxy)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.uint8)
    x = np.empty((n, patch_size, patch_size, 5), dtype=np.float32)
    c = patch_size // 2
    for i in range(n):
        flux = float(10 ** rng.uniform(0.7, 2.0))
        jitter = rng.uniform(-0.5, 0.5, 2)
        img = source_image(
            (patch_size, patch_size), c + jitter[0], c + jitter[1], flux, "star" if y[i] else "galaxy", rng
        )
        img += rng.normal(size=img.shape).astype(np.float32) * NOISE[:, None, None]
        x[i] = np.moveaxis(img, 0, -1)
    return x, y


def normalisation(x: np.ndarray) -> dict:
    flat = x.reshape(-1, x.shape[-1])
    center = np.median(flat, axis=0)
    scale = MAD_TO_SIGMA * np.median(np.abs(flat - center), axis=0)
    return {"method": "asinh", "center": center.tolist(), "scale": scale.tolist()}


def build_toy_model(patch_size: int, norm: dict, filters: int = 8, seed: int = 0):
    """A tiny functional CNN: normalisation, two conv layers, global pooling, sigmoid p_star."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((patch_size, patch_size, 5), name="patch")
    # Stock layers only, so that any process can load the saved model: a linear stand-in for the asinh.
    center, scale = np.array(norm["center"]), np.array(norm["scale"])
    h = keras.layers.Normalization(mean=center, variance=(scale * 30) ** 2, name="normalise")(inp)
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv1")(h)
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(8, activation="relu")(h)
    out = keras.layers.Dense(1, activation="sigmoid", name="p_star")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])
    return model


@functools.cache
def shared_root() -> str:
    """A temporary folder for the whole test process, so that test modules share one trained toy model."""
    root = tempfile.mkdtemp(prefix="stargal-toy-models-")
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.cache
def trained_toy_model_dir(root: str | None = None, patch_size: int = 15, edge: str = "drop") -> Path:
    """Train the toy model once per (root, patch_size, edge) and save it as a stage-03-like model folder
    (in ``shared_root()`` by default). Tests must not modify it: copy it first."""
    root = root or shared_root()
    x, y = toy_patches(1200, patch_size, seed=1)
    norm = normalisation(x)
    model = build_toy_model(patch_size, norm)
    model.fit(x, y, epochs=8, batch_size=64, verbose=0, shuffle=True)
    out = Path(root) / f"toy_p{patch_size}_{edge}"
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    meta = {
        "name": out.name,
        "architecture": "toy",
        "hyperparameters": {},
        "dataset": "toy",
        "patch_size": patch_size,
        "bands": BANDS,
        "edge": edge,
        "threshold": 0.5,
        "seed": 0,
    }
    fsio.seal(out / "model.json", [out / "model.keras"], meta)  # model.json seals the folder, as stage 03's does
    return out


def toy_wcs(shape, ra0: float = 180.0, dec0: float = 10.0):
    """A TAN WCS with SDSS's pixel scale centred on (ra0, dec0), slightly rotated."""
    from astropy.wcs import WCS

    rows, cols = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [cols / 2 + 0.5, rows / 2 + 0.5]
    scale = 0.396 / 3600
    ang = np.radians(12.0)
    w.wcs.cd = scale * np.array([[-np.cos(ang), np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    return w


def toy_cube(shape=(160, 240), n=24, seed=3, margin=12):
    """A cube [5, rows, cols] with n sources at known positions; returns (data, wcs, table of x, y, kind)."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    data = (rng.normal(size=(5, rows, cols)) * NOISE[:, None, None]).astype(np.float32)
    xs, ys, kinds = [], [], []
    while len(xs) < n:
        x, y = rng.uniform(margin, cols - 1 - margin), rng.uniform(margin, rows - 1 - margin)
        if any((x - a) ** 2 + (y - b) ** 2 < 16**2 for a, b in zip(xs, ys, strict=True)):
            continue  # keep sources isolated: clear cases
        kind = "star" if len(xs) % 2 == 0 else "galaxy"
        data += source_image(shape, x, y, float(rng.uniform(40, 100)), kind, rng)
        xs.append(x)
        ys.append(y)
        kinds.append(kind)
    return data, toy_wcs(shape), np.array(xs), np.array(ys), np.array(kinds)


def faint_source(shape, x, y, snr, noise):
    """A star (Gaussian, sigma 1.3 px) at (x, y) whose matched-filter signal is ``snr`` times its noise on ``noise``."""
    from stargal import detection

    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    star = np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 1.3**2)
    kernel = detection.detection_kernel()
    half = kernel.shape[0] // 2
    signal = np.sum(kernel * star[int(y) - half : int(y) + half + 1, int(x) - half : int(x) + half + 1])
    return star * snr * noise * np.sqrt(np.sum(kernel**2)) / signal
