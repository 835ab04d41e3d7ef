"""The CNNs: the course project's base and regularised networks, and stargal's own.

Every model starts with ``AsinhNormalisation`` (the stage-02 normalisation, stored in the model), so a
saved model takes raw float32 nanomaggie patches [n, P, P, 5] and returns p(star) through a sigmoid.
stargal's own network also takes the PSF at each patch (``{"patch": x, "psf": r50}``, see build_model).
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from pathlib import Path

import numpy as np

from .config import MIN_PATCH_SIZE
from .errors import StargalError

ARCHITECTURES = ("reference_base", "reference_regularised", "stargal")
PSF_ARCHITECTURES = ("stargal",)  # the networks told the PSF at each patch
ENSEMBLE_MEMBER = "member"  # name prefix of an ensemble's member networks (ensemble_model)
# the PSF input (stellar r50, pixels) enters the network as (r50 - centre) / scale: about -1..+2 over SDSS seeing
PSF_CENTRE_PX = 2.0
PSF_SCALE_PX = 0.4

# Hyper-parameter defaults per architecture; ``hp`` passed to build_model overrides these.
DEFAULT_HP: dict[str, dict] = {
    "reference_base": {"learning_rate": 1e-3, "filters": 32, "dense_units": 128},
    "reference_regularised": {
        "learning_rate": 1e-3,
        "filters": 32,
        "dense_units": 128,
        "spatial_dropout": 0.1,
        "dropout": 0.1,
        "dense_dropout": 0.5,
        "l2": 0.01,
    },
    "stargal": {
        "learning_rate": 2e-3,
        "weight_decay": 1e-4,
        "filters": 16,
        "dense_units": 64,
        "dense_dropout": 0.3,
        "spatial_dropout": 0.0,
        "l2": 0.0,
        "label_smoothing": 0.0,
    },
}


def configure_threads(threads: int | None = None) -> None:
    """Pin TensorFlow's thread pools (before any op runs): intra-op = cores, inter-op = 1 or 2."""
    tf = import_tensorflow()

    threads = threads or int(os.environ.get("STARGAL_TF_THREADS", 0)) or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass  # already initialised in this process: keep the existing pools


def import_tensorflow():
    """TensorFlow, imported once per process: the one place the package imports it (and, through
    ``import_keras``, Keras).

    TensorFlow's C++ start-up lines (absl's "All log messages before absl::InitializeLog()", oneDNN's and
    the CPU-feature notices) are written straight to file descriptor 2 during the import, and no environment
    variable silences all of them; so, unless ``--verbose`` (``STARGAL_VERBOSE=1``), descriptor 2 points at
    /dev/null for the import only, and TensorFlow's Python logger shows errors only. An import error still
    reaches the user: it is raised after descriptor 2 is restored.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    verbose = os.environ.get("STARGAL_VERBOSE") == "1"
    if verbose:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            import tensorflow as tf
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(devnull)
    finally:
        os.close(saved)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # e.g. tf.function retracing notices
    return tf


def import_keras():
    """Keras, after TensorFlow (``import_tensorflow``)."""
    import_tensorflow()
    import keras

    return keras


_keras = import_keras


def _normalisation_layer_class():
    keras = _keras()
    tf = import_tensorflow()

    @keras.saving.register_keras_serializable(package="stargal", name="AsinhNormalisation")
    class AsinhNormalisation(keras.layers.Layer):
        """x -> arcsinh((x - center[c]) / scale[c]) per channel; NaN/inf pixels become 0."""

        def __init__(self, center, scale, **kwargs):
            super().__init__(**kwargs)
            self.center = [float(v) for v in center]
            self.scale = [float(v) for v in scale]

        def call(self, inputs):
            x = tf.cast(inputs, "float32")
            z = tf.asinh((x - tf.constant(self.center, "float32")) / tf.constant(self.scale, "float32"))
            return tf.where(tf.math.is_finite(z), z, tf.zeros_like(z))

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "center": self.center, "scale": self.scale}

    return AsinhNormalisation


_NORM_CLASS = None


def normalisation_layer(normalisation: dict, name: str = "normalisation"):
    """The Keras layer applying a dataset.json normalisation ({"method": "asinh", "center", "scale"})."""
    global _NORM_CLASS
    if _NORM_CLASS is None:
        _NORM_CLASS = _normalisation_layer_class()
    method = normalisation.get("method", "asinh")
    if method != "asinh":
        raise StargalError(f"normalisation method {method!r}: only 'asinh' is supported")
    center = np.asarray(normalisation["center"], np.float64)
    scale = np.asarray(normalisation["scale"], np.float64)
    if center.shape != scale.shape or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise StargalError("normalisation: center and scale must be equal-length lists with positive scales")
    return _NORM_CLASS(center.tolist(), scale.tolist(), name=name)


def merged_hp(architecture: str, hp: dict | None = None) -> dict:
    """The architecture's default hyper-parameters updated with ``hp``."""
    if architecture not in ARCHITECTURES:
        raise StargalError(f"architecture {architecture!r}: unknown (choose from {', '.join(ARCHITECTURES)})")
    out = dict(DEFAULT_HP[architecture])
    out.update({k: v for k, v in (hp or {}).items() if v is not None})
    return out


def build_model(architecture: str, input_shape: tuple, normalisation: dict, hp: dict | None = None):
    """A compiled Keras model of ``architecture`` for raw patches of ``input_shape`` (P, P, C).

    stargal's network also takes the PSF at the patch (``psf``: the stars' half-light radius per band,
    pixels, stargal.psf), broadcast to planes beside the image so that every convolution can compare the
    source with the PSF; the course project's networks take the patch alone, as they did.
    """
    smallest = MIN_PATCH_SIZE.get(architecture, 1)
    if input_shape[0] < smallest:
        raise StargalError(
            f"patches of {input_shape[0]} px: the {architecture} network needs at least {smallest} px (02_preparation.py "
            f"--patch-size {smallest} or more)"
        )
    keras = _keras()
    layers = keras.layers
    hp = merged_hp(architecture, hp)
    patch = keras.Input(shape=tuple(input_shape), name="patch")
    x = normalisation_layer(normalisation)(patch)
    inputs = patch
    if architecture in PSF_ARCHITECTURES:
        psf = keras.Input(shape=(input_shape[-1],), name="psf")
        planes = layers.Rescaling(1.0 / PSF_SCALE_PX, offset=-PSF_CENTRE_PX / PSF_SCALE_PX, name="psf_scaled")(psf)
        planes = layers.Reshape((1, 1, input_shape[-1]))(planes)
        planes = layers.UpSampling2D(size=(input_shape[0], input_shape[1]), name="psf_planes")(planes)
        x = layers.Concatenate(name="patch_and_psf")([x, planes])
        inputs = {"patch": patch, "psf": psf}
    builder = {"reference_base": _reference_base, "reference_regularised": _reference_regularised, "stargal": _stargal}
    outputs = builder[architecture](x, hp)
    model = keras.Model(inputs, outputs, name=architecture)
    compile_model(model, architecture, hp)
    return model


def takes_psf(model) -> bool:
    """Whether a built or loaded model takes the PSF beside the patch."""
    return len(model.inputs) > 1


def patch_shape(model) -> tuple | None:
    """(P, P, C) of the patches a built or loaded model takes."""
    for tensor in getattr(model, "inputs", None) or []:
        if len(tensor.shape) == 4:
            return tuple(tensor.shape[1:])
    return None


def check_patch_shape(model, x: np.ndarray) -> None:
    """Raise StargalError unless patches ``x`` [n, P, P, bands] are the size and bands the model takes: a model
    folder whose model.json misdescribes its network, or a dataset of other patches, fails in one line here,
    not in a multi-line TensorFlow error."""
    shape = patch_shape(model)
    got = tuple(np.shape(x)[1:])
    if shape is None or (len(got) == len(shape) and all(s is None or s == g for s, g in zip(shape, got, strict=True))):
        return
    raise StargalError(
        f"patches of shape {got} (pixels, pixels, bands), but the model {model.name!r} takes {shape}: its "
        "model.json's patch_size or bands do not describe its network, or the patches are another dataset's"
    )


def check_psf(model, n: int, psf: np.ndarray | None) -> None:
    """Raise StargalError unless ``psf`` gives the PSF of all ``n`` patches to a model that takes it."""
    if takes_psf(model) and (psf is None or len(psf) != n):
        raise StargalError("this model needs the PSF at every patch (stargal.psf); none or the wrong number given")


def model_inputs(model, x: np.ndarray, psf: np.ndarray | None):
    """What to feed ``model`` for patches ``x`` (and their PSF ``psf`` [n, bands] when it takes one)."""
    if not takes_psf(model):
        return x
    check_psf(model, len(x), psf)
    ops = _keras().ops  # one kind of value in the dict: Keras refuses to mix arrays and tensors
    return {"patch": ops.convert_to_tensor(x, "float32"), "psf": ops.convert_to_tensor(psf, "float32")}


def compile_model(model, architecture: str, hp: dict) -> None:
    """Compile ``model`` with the architecture's optimiser, loss and metrics."""
    keras = _keras()
    if architecture == "stargal":
        optimizer = keras.optimizers.AdamW(learning_rate=hp["learning_rate"], weight_decay=hp["weight_decay"])
    else:
        optimizer = keras.optimizers.Adam(learning_rate=hp["learning_rate"])
    loss = keras.losses.BinaryCrossentropy(label_smoothing=float(hp.get("label_smoothing", 0.0)))
    model.compile(optimizer=optimizer, loss=loss, metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])


def _reference_base(x, hp):
    """The course project's base CNN: two conv/pool stages, a dense layer, no regularisation."""
    layers = _keras().layers
    x = layers.Conv2D(hp["filters"], 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(2 * hp["filters"], 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(hp["dense_units"], activation="relu")(x)
    return layers.Dense(1, activation="sigmoid", name="p_star")(x)


def _reference_regularised(x, hp):
    """The course project's regularised CNN (spatial dropout, dropout, L2 on the second conv)."""
    keras = _keras()
    layers = keras.layers
    x = layers.Conv2D(hp["filters"], 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.SpatialDropout2D(hp["spatial_dropout"])(x)
    x = layers.Dropout(hp["dropout"])(x)
    x = layers.Conv2D(2 * hp["filters"], 3, activation="relu", kernel_regularizer=keras.regularizers.L2(hp["l2"]))(x)
    x = layers.MaxPooling2D()(x)
    x = layers.SpatialDropout2D(hp["spatial_dropout"])(x)
    x = layers.Dropout(hp["dropout"])(x)
    x = layers.Flatten()(x)
    x = layers.Dense(hp["dense_units"], activation="relu")(x)
    x = layers.Dropout(hp["dense_dropout"])(x)
    return layers.Dense(1, activation="sigmoid", name="p_star")(x)


def _conv_bn(x, filters, hp, name):
    keras = _keras()
    layers = keras.layers
    reg = keras.regularizers.L2(hp["l2"]) if hp.get("l2") else None
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _stargal(x, hp):
    """stargal's CNN: conv-BN stem, a residual block, pooled stage, and a head that sees both the
    central pixels (where the object is) and global pooling (its extent), for few FLOPs per patch."""
    layers = _keras().layers
    f = int(hp["filters"])
    x = _conv_bn(x, f, hp, "stem")  # P x P
    shortcut = x
    x = _conv_bn(x, f, hp, "res1a")
    x = layers.Conv2D(f, 3, padding="same", use_bias=False, name="res1b_conv")(x)
    x = layers.BatchNormalization(name="res1b_bn")(x)
    x = layers.Activation("relu")(layers.Add()([x, shortcut]))
    x = layers.MaxPooling2D(name="pool1")(x)  # P/2
    if hp.get("spatial_dropout"):
        x = layers.SpatialDropout2D(hp["spatial_dropout"])(x)
    x = _conv_bn(x, 2 * f, hp, "stage2a")
    x = _conv_bn(x, 2 * f, hp, "stage2b")
    size = x.shape[1]
    lo = max(0, size // 2 - 1)
    center = layers.Cropping2D(((lo, size - lo - 3), (lo, size - lo - 3)), name="center")(x)
    features = layers.Concatenate(name="features")(
        [
            layers.GlobalAveragePooling2D(name="gap")(x),
            layers.GlobalMaxPooling2D(name="gmp")(x),
            layers.Flatten(name="center_flat")(center),
        ]
    )
    x = layers.Dense(hp["dense_units"], activation="relu", name="dense")(features)
    if hp.get("dense_dropout"):
        x = layers.Dropout(hp["dense_dropout"])(x)
    return layers.Dense(1, activation="sigmoid", name="p_star")(x)


def load_model(path: str | os.PathLike):
    """Load a saved stargal model (model.keras file or the model folder holding it)."""
    keras = _keras()
    global _NORM_CLASS
    if _NORM_CLASS is None:
        _NORM_CLASS = _normalisation_layer_class()  # registers the custom layer
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.exists():
        raise StargalError(f"{path}: model file not found")
    import zipfile

    try:
        return keras.models.load_model(path, compile=True)
    except (ValueError, OSError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        # a damaged .keras zip surfaces as any of these, depending on where the damage is
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise StargalError(
            f"{path}: not a loadable Keras model ({type(exc).__name__}: {reason}); the file is damaged or not "
            "a model: 03_model.py trains it again"
        ) from None


def ensemble_model(members: list):
    """One model whose p(star) is the mean of ``members``' (networks of one architecture trained on one dataset,
    so with the same normalisation): the normalisation is applied once, then each member's layers after it."""
    keras = _keras()
    if len(members) < 2:
        raise StargalError("an ensemble needs at least two models")
    norms = [m.get_layer("normalisation") for m in members]
    if any((n.center, n.scale) != (norms[0].center, norms[0].scale) for n in norms):
        raise StargalError("ensemble members normalise their patches differently: train them on one dataset")
    shape = patch_shape(members[0])
    if any(patch_shape(m) != shape or takes_psf(m) != takes_psf(members[0]) for m in members):
        raise StargalError("ensemble members take different inputs: train them on one dataset")
    patch = keras.Input(shape=shape, name="patch")
    x = normalisation_layer({"center": norms[0].center, "scale": norms[0].scale})(patch)
    inputs, member_inputs = patch, x
    if takes_psf(members[0]):
        psf = keras.Input(shape=(shape[-1],), name="psf")
        inputs, member_inputs = {"patch": patch, "psf": psf}, {"patch": x, "psf": psf}
    cores = []  # each member with its normalisation an identity: its own layers, fed normalised patches
    for i, (member, norm) in enumerate(zip(members, norms, strict=True)):
        clone = keras.models.clone_model(
            member,
            clone_function=lambda layer, norm=norm: keras.layers.Identity(name=layer.name) if layer is norm else layer,
        )  # compiled like the member: rewrapped, so that the ensemble saves no optimizer state
        cores.append(keras.Model(clone.input, clone.output, name=f"{ENSEMBLE_MEMBER}{i}"))
    p_star = keras.layers.Average(name="p_star")([core(member_inputs) for core in cores])
    return keras.Model(inputs, p_star, name=members[0].name)


def ensemble_members(model) -> list:
    """The member networks of an ``ensemble_model`` (each taking normalised patches); [] for any other model."""
    return [layer for layer in model.layers if hasattr(layer, "layers") and layer.name.startswith(ENSEMBLE_MEMBER)]


def flops_per_sample(model) -> int:
    """Approximate multiply-adds x2 of the conv and dense layers for one patch (for reports)."""
    total = 0
    for layer in model.layers:
        cls = type(layer).__name__
        if hasattr(layer, "layers"):  # an ensemble's member network
            total += flops_per_sample(layer)
        elif cls == "Conv2D":
            k = int(np.prod(layer.kernel.shape))
            out = layer.output.shape
            total += 2 * k * int(out[1]) * int(out[2])
        elif cls == "Dense":
            total += 2 * int(np.prod(layer.kernel.shape))
    return total


def predict(
    model,
    x: np.ndarray,
    psf: np.ndarray | None = None,
    *,
    batch_size: int = 512,
    tta: bool = False,
    identity: np.ndarray | None = None,
) -> np.ndarray:
    """p(star) float32 [n] for raw patches (and their PSF, for models that take it); with ``tta`` the mean
    over the eight square symmetries (the PSF is symmetric: it stays as it is). ``identity``: the patches'
    single-pass p_star where already known, which the mean then reuses instead of running that pass again."""
    x = np.asarray(x, np.float32)
    check_psf(model, len(x), psf)  # fail early, before any work
    if len(x) == 0:
        return np.zeros(0, np.float32)
    check_patch_shape(model, x)
    if not tta:
        return _predict(model, x, psf, batch_size)
    from .augment import D4_SIZE, apply_d4

    total = np.zeros(len(x), np.float64)
    block = max(batch_size, 2048)  # transformed copies of one block at a time: memory does not grow with len(x)
    for start in range(0, len(x), block):
        xb = x[start : start + block]
        pb = None if psf is None else psf[start : start + block]
        for k in range(D4_SIZE):
            if k == 0 and identity is not None:
                total[start : start + block] += identity[start : start + block]
                continue
            xk = np.asarray(apply_d4(xb, np.full(len(xb), k, np.int32)))
            total[start : start + block] += _predict(model, xk, pb, batch_size)
    return (total / D4_SIZE).astype(np.float32)


_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its traced call


def _inference_function(model):
    """The model's forward pass as one traced graph for any batch size, cached on the model: a graph call per
    batch instead of an eager call per layer (about a third faster on a CPU). Takes (patches[, psf])."""
    fn = _INFERENCE.get(model)
    if fn is None:
        tf = import_tensorflow()
        shape = patch_shape(model)
        patch = tf.TensorSpec([None, *shape], tf.float32)
        if takes_psf(model):
            psf = tf.TensorSpec([None, shape[-1]], tf.float32)
            fn = tf.function(lambda x, p: model({"patch": x, "psf": p}, training=False), input_signature=[patch, psf])
        else:
            fn = tf.function(lambda x: model(x, training=False), input_signature=[patch])
        _INFERENCE[model] = fn
    return fn


def _predict(model, x: np.ndarray, psf: np.ndarray | None, batch_size: int) -> np.ndarray:
    fn = _inference_function(model)
    with_psf = takes_psf(model)
    out = np.empty(len(x), np.float32)
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        args = (x[start:stop], np.asarray(psf[start:stop], np.float32)) if with_psf else (x[start:stop],)
        out[start:stop] = np.asarray(fn(*args)).reshape(-1)
    return out
