"""Data augmentation: exact square symmetries, brightness offsets and Gaussian blur, streamed or materialised.

The eight rotations/reflections of a square patch form the dihedral group D4. Element ``k`` in 0..7 is
"mirror left-right ``k // 4`` times, then rotate by ``90 * (k % 4)`` degrees counter-clockwise" (the
numpy convention of ``np.rot90`` on the image axes). Each element is applied as a fixed pixel permutation
(a gather with a precomputed index table), so the streamed and the materialised paths, and test-time
augmentation, use exactly the same transformation and no element is ever produced twice.

Brightness offsets are given in *normalised units*: an offset ``d`` for channel ``c`` adds
``d * scale[c]`` nanomaggies to every pixel of that channel, which shifts the argument of the model's
``arcsinh((x - center) / scale)`` normalisation by exactly ``d``. ``scale`` is the robust pixel spread
(``normalise.MAD_TO_SIGMA`` x MAD) of the training split, i.e. about one sky-noise sigma, so the default ``d ~ N(0, 0.2)``
is a sky-level error of a fifth of the noise, in line with SDSS sky-subtraction residuals.

Blur is a Gaussian of sigma 1 px (the reference's), truncated at 3 sigma, with symmetric edge padding.

All random draws are stateless functions of an explicit seed, so a pipeline is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np

from .model import import_tensorflow

D4_SIZE = 8
ROTATIONS = (0, 1, 2, 3)  # identity and rotations by 90, 180, 270 degrees
REFLECTIONS = (0, 4, 6)  # identity, mirror left-right, mirror up-down (= mirror then rotate 180)
D4_NAMES = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_lr+rot90", "flip_ud", "flip_lr+rot270")


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations the streamed pipeline draws, per sample.

    ``symmetries``: group elements drawn uniformly per sample (() = none).
    ``brightness_sigma``: std of the per-channel normal offset in normalised units (0 = off), applied
    to a sample with probability ``brightness_p``. ``blur_sigma`` (px) applied with probability ``blur_p``.
    ``colour_sigma``: std (magnitudes) of an independent gain per band and sample (0 = off).
    """

    name: str = "none"
    symmetries: tuple[int, ...] = ()
    brightness_sigma: float = 0.0
    brightness_p: float = 1.0
    blur_sigma: float = 1.0
    blur_p: float = 0.0
    colour_sigma: float = 0.0

    @property
    def active(self) -> bool:
        return len(self.symmetries) > 1 or self.brightness_sigma > 0 or self.blur_p > 0 or self.colour_sigma > 0

    def to_dict(self) -> dict:
        """The configuration as JSON-ready values, symmetries by name."""
        d = asdict(self)
        d["symmetries"] = [D4_NAMES[k] for k in self.symmetries]
        return d


BRIGHTNESS_SIGMA = 0.2
BLUR_SIGMA = 1.0
# SDSS's labels are morphological (PSF against model magnitude), but colours differ between stars and galaxies
# and the simulated sky's colours are only an approximation of the real sky's: a random gain per band keeps the
# network from leaning on them (measured: real blue galaxies were called stars by models trained without it)
COLOUR_SIGMA = 0.2

# The policies of the exercise's experiment, plus "d4" (all eight symmetries only) and "d4colour" (the eight
# symmetries and per-band gains), our default for training.
POLICIES: dict[str, AugmentConfig] = {
    "none": AugmentConfig("none"),
    "rotation": AugmentConfig("rotation", symmetries=ROTATIONS),
    "reflection": AugmentConfig("reflection", symmetries=REFLECTIONS),
    "brightness": AugmentConfig("brightness", brightness_sigma=BRIGHTNESS_SIGMA, brightness_p=1.0),
    "blur": AugmentConfig("blur", blur_sigma=BLUR_SIGMA, blur_p=0.5),
    "d4": AugmentConfig("d4", symmetries=tuple(range(D4_SIZE))),
    "d4colour": AugmentConfig("d4colour", symmetries=tuple(range(D4_SIZE)), colour_sigma=COLOUR_SIGMA),
    "combination": AugmentConfig(
        "combination",
        symmetries=tuple(range(D4_SIZE)),
        brightness_sigma=BRIGHTNESS_SIGMA,
        brightness_p=0.5,
        blur_sigma=BLUR_SIGMA,
        blur_p=0.25,
    ),
}
EXPERIMENT_POLICIES = ("none", "rotation", "reflection", "brightness", "blur", "combination")


def policy(name: str | None, **overrides) -> AugmentConfig:
    """The named augmentation policy (None or "none": no augmentation)."""
    from .errors import StargalError

    key = (name or "none").lower()
    if key not in POLICIES:
        raise StargalError(f"augmentation {name!r}: unknown (choose from {', '.join(POLICIES)})")
    return replace(POLICIES[key], **overrides) if overrides else POLICIES[key]


# ---------------------------------------------------------------- pure numpy reference and index tables


def d4_numpy(x: np.ndarray, k: int) -> np.ndarray:
    """Group element ``k`` applied to the image axes (-3, -2) of ``x`` [..., H, W, C] (numpy reference)."""
    if not 0 <= k < D4_SIZE:
        raise ValueError(f"D4 element must be in 0..7, got {k}")
    if k // 4:
        x = np.flip(x, axis=-2)
    return np.rot90(x, k % 4, axes=(-3, -2))


def d4_index_table(size: int) -> np.ndarray:
    """int32 [8, size*size]: output pixel j of element k takes input pixel table[k, j] (row-major)."""
    grid = np.arange(size * size, dtype=np.int32).reshape(size, size, 1)
    return np.stack([d4_numpy(grid, k).reshape(-1) for k in range(D4_SIZE)])


def d4_compose(a: int, b: int, size: int = 5) -> int:
    """The element equal to applying ``b`` after ``a`` (found through the permutation tables)."""
    table = d4_index_table(size)
    composed = table[a][table[b]]
    matches = np.flatnonzero((table == composed).all(axis=1))
    return int(matches[0])


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian, truncated at 3 sigma (7 taps for sigma 1)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


# ---------------------------------------------------------------- TensorFlow transformations (batched)


def apply_d4(x, k):
    """Apply element ``k[i]`` (int, [b]) of D4 to sample ``i`` of ``x`` [b, P, P, C] (tensor or array)."""
    tf = import_tensorflow()

    x = tf.convert_to_tensor(x, tf.float32)
    size = x.shape[1]
    if size is None or x.shape[2] != size:
        raise ValueError(f"square patches with a static size are required, got shape {x.shape}")
    table = tf.constant(d4_index_table(size))
    index = tf.gather(table, tf.cast(k, tf.int32))  # [b, P*P]
    flat = tf.reshape(x, [tf.shape(x)[0], size * size, x.shape[3]])
    out = tf.gather(flat, index, axis=1, batch_dims=1)
    return tf.reshape(out, tf.shape(x))


def apply_brightness(x, offsets, scale):
    """Add ``offsets[i, c] * scale[c]`` (normalised units -> nanomaggies) to channel c of sample i."""
    tf = import_tensorflow()

    x = tf.convert_to_tensor(x, tf.float32)
    shift = tf.cast(offsets, tf.float32) * tf.constant(np.asarray(scale, np.float32))
    return x + shift[:, None, None, :]


def apply_blur(x, sigma: float, mask=None):
    """Gaussian blur of every channel (sigma px); with ``mask`` [b] bool only the selected samples."""
    tf = import_tensorflow()

    x = tf.convert_to_tensor(x, tf.float32)
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    channels = x.shape[3]
    kx = tf.constant(np.tile(kernel.reshape(1, -1, 1, 1), (1, 1, channels, 1)))
    ky = tf.constant(np.tile(kernel.reshape(-1, 1, 1, 1), (1, 1, channels, 1)))
    padded = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    blurred = tf.nn.depthwise_conv2d(padded, kx, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, ky, [1, 1, 1, 1], "VALID")
    if mask is None:
        return blurred
    return tf.where(tf.reshape(tf.cast(mask, tf.bool), [-1, 1, 1, 1]), blurred, x)


def draw_parameters(batch: int, channels: int, config: AugmentConfig, seed) -> dict:
    """Random augmentation parameters of one batch, a stateless function of ``seed`` (int64 [2])."""
    tf = import_tensorflow()

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    params: dict = {}
    if len(config.symmetries) > 1:
        choice = tf.random.stateless_uniform([batch], seeds[0], 0, len(config.symmetries), dtype=tf.int32)
        params["d4"] = tf.gather(tf.constant(config.symmetries, tf.int32), choice)
    if config.brightness_sigma > 0:
        offsets = tf.random.stateless_normal([batch, channels], seeds[1], stddev=config.brightness_sigma)
        apply = tf.random.stateless_uniform([batch, 1], seeds[2]) < config.brightness_p
        params["brightness"] = tf.where(apply, offsets, 0.0)
    if config.blur_p > 0:
        params["blur"] = tf.random.stateless_uniform([batch], seeds[3]) < config.blur_p
    if config.colour_sigma > 0:
        magnitudes = tf.random.stateless_normal([batch, channels], seeds[4], stddev=config.colour_sigma)
        params["colour"] = tf.pow(10.0, -0.4 * magnitudes)
    return params


def augment_batch(x, config: AugmentConfig, scale, seed, psf=None):
    """One randomly augmented batch: symmetry, brightness offset, blur and band gains, each drawn per sample.

    Returns (patches, psf): a blurred patch's PSF grows to match (``blurred_r50``); ``psf`` may be None.
    """
    tf = import_tensorflow()

    x = tf.convert_to_tensor(x, tf.float32)
    params = draw_parameters(tf.shape(x)[0], x.shape[3], config, seed)
    x = apply_parameters(x, params, config, scale)
    if psf is not None and "blur" in params:
        psf = tf.where(params["blur"][:, None], blurred_r50(psf, config.blur_sigma), psf)
    return x, psf


def blurred_r50(r50, sigma: float):
    """Half-light radius of a PSF of half-light radius ``r50`` after a Gaussian blur of ``sigma`` px (exact
    for a Gaussian PSF, whose r50 is 1.1774 sigma; close for SDSS's)."""
    tf = import_tensorflow()
    return tf.sqrt(tf.square(r50) + (1.1774 * sigma) ** 2)


def apply_parameters(x, params: dict, config: AugmentConfig, scale):
    """Apply drawn (or enumerated) parameters; shared by the streamed and the materialised paths."""
    if "d4" in params:
        x = apply_d4(x, params["d4"])
    if "brightness" in params:
        x = apply_brightness(x, params["brightness"], scale)
    if "blur" in params:
        x = apply_blur(x, config.blur_sigma, params["blur"])
    if "colour" in params:
        x = x * params["colour"][:, None, None, :]
    return x


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    psf: np.ndarray | None = None,
    config: AugmentConfig | None = None,
    scale=None,
    shuffle: bool = True,
    seed: int = 0,
):
    """A tf.data pipeline over (x, y) in memory: reshuffled every epoch, augmented per batch on the fly.

    Only sample indices are shuffled; each batch is gathered from one in-memory copy of ``x`` and
    augmented as it streams, so the training set is never duplicated (let alone 48 times). With ``psf``
    ([n, bands], for models that take the PSF) the inputs are ``{"patch": x, "psf": psf}``.
    """
    tf = import_tensorflow()

    n = len(x)
    xs = tf.constant(np.asarray(x, np.float32))
    ys = tf.constant(np.asarray(y, np.float32))
    ps = tf.constant(np.asarray(psf if psf is not None else np.zeros((n, 0)), np.float32))
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda i: (tf.gather(xs, i), tf.gather(ps, i), tf.gather(ys, i)))
    if config is not None and config.active:
        if scale is None:
            raise ValueError("brightness augmentation needs the normalisation scale")
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xpy, s: (*augment_batch(xpy[0], config, scale, s, xpy[1]), xpy[2]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    if psf is None:
        ds = ds.map(lambda xb, pb, yb: (xb, yb))
    else:
        ds = ds.map(lambda xb, pb, yb: ({"patch": xb, "psf": pb}, yb))
    return ds.prefetch(2)


# ---------------------------------------------------------------- materialised (reference-style) set

# The fixed set: every D4 element times {plain, brightness, blur, brightness+blur}: 32 distinct copies.
MATERIALIZED_VARIANTS = ("plain", "brightness", "blur", "brightness+blur")


def materialized_size(n: int) -> int:
    """Samples in the materialised set of ``n`` training patches (every copy of every patch)."""
    return n * D4_SIZE * len(MATERIALIZED_VARIANTS)


def materialize_chunks(
    x: np.ndarray,
    y: np.ndarray,
    scale,
    *,
    seed: int,
    brightness_sigma: float = BRIGHTNESS_SIGMA,
    blur_sigma: float = BLUR_SIGMA,
    chunk: int = 1024,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x_aug, y) float32/uint8 blocks of the fixed augmented set, in order (copy-major).

    Copy ``(k, v)`` holds D4 element ``k`` and variant ``v`` of ``MATERIALIZED_VARIANTS`` of every sample.
    Brightness offsets are drawn once per (sample, copy) from a numpy generator seeded with ``seed``.
    """
    tf = import_tensorflow()

    rng = np.random.default_rng(seed)
    config = AugmentConfig("materialized", blur_sigma=blur_sigma)
    n, channels = len(x), x.shape[3]
    for k in range(D4_SIZE):
        for variant in MATERIALIZED_VARIANTS:
            for start in range(0, n, chunk):
                xb = x[start : start + chunk]
                b = len(xb)
                params: dict = {"d4": np.full(b, k, np.int32)}
                if "brightness" in variant:
                    params["brightness"] = rng.normal(0.0, brightness_sigma, (b, channels)).astype(np.float32)
                if "blur" in variant:
                    params["blur"] = tf.ones([b], tf.bool)
                out = apply_parameters(xb, params, config, scale)
                yield np.asarray(out, np.float32), np.asarray(y[start : start + chunk], np.uint8)
