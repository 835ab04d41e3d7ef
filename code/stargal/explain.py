"""Why did the model say star? Integrated Gradients and Grad-CAM maps for raw patches (pure: model, arrays in).

Both work on any Keras model that takes raw float32 patches [n, P, P, bands] and outputs p_star [n, 1].

- ``integrated_gradients``: per pixel and band, (x - x0) times the path-averaged gradient of p_star
  between a baseline x0 and x. The baseline is an empty, sky-subtracted patch (all zeros), so the maps
  add up to p_star(x) - p_star(empty sky) (completeness). Positive values push towards star, negative
  towards galaxy. The combined map is the sum over bands.
- ``grad_cam``: the last convolutional feature maps (found automatically) weighted by the spatially
  averaged gradient of the predicted class's score (p_star for a star, 1 - p_star for a galaxy),
  rectified, resized to P x P and scaled to a maximum of 1. It is spatial only (one map per patch).
"""

from __future__ import annotations

import numpy as np

from .model import import_keras, import_tensorflow

_SHAPE_PRESERVING = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU")


def _tf():
    tf = import_tensorflow()

    return tf


def integrated_gradients(
    model,
    x: np.ndarray,
    baseline: np.ndarray | None = None,
    *,
    psf: np.ndarray | None = None,
    steps: int = 32,
    batch_size: int = 256,
) -> np.ndarray:
    """Integrated Gradients of p_star w.r.t. raw patches: float32 [n, P, P, bands], same shape as ``x``.

    Trapezoidal rule over ``steps`` intervals of the straight path from ``baseline`` (default zeros) to x;
    the PSF (for models that take it) stays the patch's own along the path.
    """
    from .model import model_inputs

    tf = _tf()
    x = np.asarray(x, dtype=np.float32)
    base = np.zeros_like(x) if baseline is None else np.broadcast_to(np.asarray(baseline, np.float32), x.shape)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    weights = np.full(steps + 1, 1.0 / steps, dtype=np.float32)
    weights[[0, -1]] *= 0.5
    out = np.empty_like(x)
    per_chunk = max(1, batch_size // (steps + 1))
    for start in range(0, len(x), per_chunk):
        xs, bs = x[start : start + per_chunk], base[start : start + per_chunk]
        diff = xs - bs
        path = bs[:, None] + alphas[None, :, None, None, None] * diff[:, None]  # [m, S+1, P, P, C]
        flat = tf.convert_to_tensor(path.reshape((-1, *x.shape[1:])))
        psf_path = None if psf is None else np.repeat(psf[start : start + per_chunk], steps + 1, axis=0)
        with tf.GradientTape() as tape:
            tape.watch(flat)
            p = tf.reshape(model(model_inputs(model, flat, psf_path), training=False), [-1])
        grads = tape.gradient(p, flat).numpy().reshape(path.shape)
        out[start : start + per_chunk] = diff * np.tensordot(weights, grads, axes=(0, 1))
    return out


def last_conv_layer(model):
    """The last Conv2D-like layer of ``model``, followed through the shape-preserving layers after it
    (batch norm, activation) so that the maps are the rectified activations the rest of the network sees."""
    layers = list(model.layers)
    conv = [i for i, layer in enumerate(layers) if "Conv" in type(layer).__name__ and len(layer.output.shape) == 4]
    if not conv:
        raise ValueError(f"model {model.name!r} has no convolutional layer for Grad-CAM")
    i = conv[-1]
    shape = tuple(layers[i].output.shape)
    while (
        i + 1 < len(layers)
        and type(layers[i + 1]).__name__ in _SHAPE_PRESERVING
        and tuple(layers[i + 1].output.shape) == shape
        and _consumes(layers[i + 1], layers[i])
    ):
        i += 1
    return layers[i]


def _consumes(layer, previous) -> bool:
    """True when ``layer``'s only input is ``previous``'s output (a straight chain in the graph)."""
    try:
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    except (AttributeError, ValueError):
        return False
    return len(inputs) == 1 and inputs[0] is previous.output


def grad_cam(model, x: np.ndarray, *, psf: np.ndarray | None = None, layer=None, batch_size: int = 256) -> np.ndarray:
    """Grad-CAM maps float32 [n, P, P] in [0, 1] of the predicted class (star if p_star >= 0.5); for an ensemble
    (stargal.model.ensemble_model) the mean of its members' maps, each of the class that member predicts."""
    keras = import_keras()

    from .model import ensemble_members, model_inputs

    tf = _tf()
    x = np.asarray(x, dtype=np.float32)
    members = ensemble_members(model) if layer is None else []
    if members:
        normalised = np.asarray(model.get_layer("normalisation")(x), np.float32)
        maps = [grad_cam(member, normalised, psf=psf, batch_size=batch_size) for member in members]
        return np.mean(maps, axis=0).astype(np.float32)
    layer = layer or last_conv_layer(model)
    probe = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    maps = []
    for start in range(0, len(x), batch_size):
        xs = tf.convert_to_tensor(x[start : start + batch_size])
        ps = None if psf is None else psf[start : start + batch_size]
        with tf.GradientTape() as tape:
            features, p = probe(model_inputs(model, xs, ps), training=False)
            p = tf.reshape(p, [-1])
            score = tf.where(p >= 0.5, p, 1.0 - p)
        grads = tape.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # [m, 1, 1, k]
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]  # [m, h, w, 1]
        cam = tf.image.resize(cam, x.shape[1:3], method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1)
        maps.append(cam / np.where(peak > 0, peak, 1.0)[:, None, None])
    return np.concatenate(maps).astype(np.float32) if maps else np.zeros((0, *x.shape[1:3]), np.float32)


def attribution_centroid(maps: np.ndarray) -> np.ndarray:
    """(x, y) centre of mass of |map| per patch, [n, 2]; maps are [n, P, P] or [n, P, P, bands] (summed)."""
    m = np.abs(np.asarray(maps, dtype=np.float64))
    if m.ndim == 4:
        m = m.sum(axis=-1)
    rows, cols = np.mgrid[0 : m.shape[1], 0 : m.shape[2]]
    total = m.sum(axis=(1, 2))
    total = np.where(total > 0, total, 1.0)
    return np.stack([(m * cols).sum(axis=(1, 2)) / total, (m * rows).sum(axis=(1, 2)) / total], axis=1)


def central_fraction(maps: np.ndarray, radius: float) -> np.ndarray:
    """Fraction of |map| mass within ``radius`` pixels of the patch centre, per patch."""
    m = np.abs(np.asarray(maps, dtype=np.float64))
    if m.ndim == 4:
        m = m.sum(axis=-1)
    c = (m.shape[1] - 1) / 2
    rows, cols = np.mgrid[0 : m.shape[1], 0 : m.shape[2]]
    near = (rows - c) ** 2 + (cols - c) ** 2 <= radius**2
    total = m.sum(axis=(1, 2))
    return (m * near).sum(axis=(1, 2)) / np.where(total > 0, total, 1.0)


def select_examples(y: np.ndarray, p: np.ndarray, threshold: float, per_group: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of up to ``per_group`` examples in each of star/galaxy x correct/wrong, reproducibly drawn."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p) >= threshold
    rng = np.random.default_rng(seed)
    groups = {
        "star_correct": y & pred,
        "star_as_galaxy": y & ~pred,
        "galaxy_correct": ~y & ~pred,
        "galaxy_as_star": ~y & pred,
    }
    out = {}
    for name, mask in groups.items():
        idx = np.flatnonzero(mask)
        out[name] = np.sort(rng.choice(idx, size=min(per_group, idx.size), replace=False)) if idx.size else idx
    return out
