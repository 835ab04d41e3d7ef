"""Run a trained network with ONNX Runtime, on a cube normalised once: how predict.py serves a model fast.

A saved Keras model normalises every patch itself (``AsinhNormalisation``), so 100,000 overlapping 25 x 25
patches cost 300 million arcsinh evaluations (36 % of the whole model's time in ONNX Runtime's profile). The normalisation is per
pixel, so here it is applied once to the whole cube (3 million pixels per band), the patches are cut from
the normalised cube in the network's own channels-first layout, and only the layers after the normalisation
run, in ONNX Runtime, without importing TensorFlow: three to four times faster end to end on two cores.

``export`` writes that network (tf2onnx) into the model folder at training time, and ``discrepancy``
measures it against the Keras model on ``check_patches``; a model folder's ``model.json`` seals
``model.onnx`` with the measured difference, and only a sealed one is used. Patches cut here are exactly
``normalise.apply(patches.extract_patches(...))`` (outside-frame and non-finite pixels as raw 0).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

import numpy as np

from .errors import StargalError

OPSET = 17
TOLERANCE = 1e-4  # largest |p_star difference| from the Keras model accepted on the check patches
CHECK_PATCHES = 512
BATCH = 128  # patches per ONNX Runtime call: 32-128 within 10 % on two cores; 128 the fastest for the ensemble of five
PATCH_INPUT = "patch"  # the image input's name; "psf" for the PSF input of the networks that take it

log = logging.getLogger("stargal")


# ---------------------------------------------------------------- pure numpy: the cube, the patches, D4


def normalised_cube(data: np.ndarray, center, scale, size: int) -> np.ndarray:
    """``arcsinh((data - center) / scale)`` per band of a cube [bands, H, W], padded by ``size // 2`` pixels on
    every side, float32. Pixels outside the frame and non-finite pixels take the value of a raw 0 (as
    ``patches.extract_patches`` sets them); a finite pixel whose normalised value overflows becomes 0 (as the
    Keras layer does)."""
    data = np.asarray(data, dtype=np.float32)
    center = np.asarray(center, dtype=np.float32)[:, None, None]
    scale = np.asarray(scale, dtype=np.float32)[:, None, None]
    fill = np.arcsinh((np.float32(0.0) - center) / scale)  # [bands, 1, 1]
    pad = size // 2
    n_bands, rows, cols = data.shape
    out = np.empty((n_bands, rows + 2 * pad, cols + 2 * pad), dtype=np.float32)
    out[...] = fill
    inner = out[:, pad : pad + rows, pad : pad + cols]
    with np.errstate(over="ignore", invalid="ignore"):
        np.subtract(data, center, out=inner)
        np.divide(inner, scale, out=inner)
        np.arcsinh(inner, out=inner)
    inner[~np.isfinite(inner)] = 0.0
    missing = ~np.isfinite(data)
    if missing.any():
        inner[missing] = np.broadcast_to(fill, data.shape)[missing]
    return out


def cut(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Patches [n, bands, size, size] (channels first, contiguous) centred on pixels (rows, cols) of the frame,
    cut from its ``normalised_cube``."""
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))  # [B, H, W, P, P]
    return np.ascontiguousarray(windows.transpose(1, 2, 0, 3, 4)[np.asarray(rows), np.asarray(cols)])


def d4_channels_first(x: np.ndarray, k: int) -> np.ndarray:
    """Square symmetry ``k`` (as ``augment.d4_numpy``) of patches [n, C, H, W]."""
    if k // 4:
        x = np.flip(x, axis=-1)
    return np.ascontiguousarray(np.rot90(x, k % 4, axes=(-2, -1)))


def check_patches(size: int, bands: int, n: int = CHECK_PATCHES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw nanomaggie patches [n, size, size, bands] (sky noise, and a centred source from faint to saturated,
    point-like to extended) and PSF half-light radii [n, bands]: the inputs an export is checked on."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.03, (n, size, size, bands))
    yy, xx = np.mgrid[:size, :size] - size // 2
    sigma = rng.uniform(0.7, 4.0, n)
    profile = np.exp(-(yy**2 + xx**2)[None] / (2 * sigma[:, None, None] ** 2))
    flux = 10 ** rng.uniform(-2.0, 2.5, (n, 1, 1, bands))
    x += profile[..., None] * flux
    psf = rng.uniform(1.3, 3.0, (n, bands))
    return x.astype(np.float32), psf.astype(np.float32)


# ---------------------------------------------------------------- the runtime


def available() -> bool:
    """Whether ONNX Runtime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxNetwork:
    """A model folder's model.onnx in ONNX Runtime, with the normalisation it expects (model.json's record)."""

    def __init__(self, path: str | os.PathLike, normalisation: dict, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.center = np.asarray(normalisation["center"], dtype=np.float32)
        self.scale = np.asarray(normalisation["scale"], dtype=np.float32)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("STARGAL_TF_THREADS", 0)) or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for damaged or foreign files
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise StargalError(
                f"{self.path}: not a loadable ONNX model ({reason}); 03_model.py trains it again"
            ) from None
        names = [i.name for i in self.session.get_inputs()]
        if PATCH_INPUT not in names:
            raise StargalError(f"{self.path}: no '{PATCH_INPUT}' input (inputs: {', '.join(names)})")
        self.takes_psf = "psf" in names
        shape = self.session.get_inputs()[names.index(PATCH_INPUT)].shape  # [n, C, P, P]
        self.bands, self.patch_size = int(shape[1]), int(shape[2])
        if len(self.center) != self.bands or len(self.scale) != self.bands:
            raise StargalError(f"{self.path}: the normalisation has {len(self.center)} bands, the network {self.bands}")
        self.output = self.session.get_outputs()[0].name

    def prepare(self, data: np.ndarray) -> np.ndarray:
        """The cube [bands, H, W] (raw nanomaggies, in the model's band order) normalised and padded once."""
        if np.ndim(data) != 3 or np.shape(data)[0] != self.bands:
            # a model.json naming other bands than the network's: one line, not a numpy broadcasting error
            raise StargalError(
                f"{self.path}: the network takes {self.bands} bands, the cube given has "
                f"{np.shape(data)[0] if np.ndim(data) == 3 else 'no 3-D'} planes (model.json's bands do not match it)"
            )
        return normalised_cube(data, self.center, self.scale, self.patch_size)

    def cut(self, prepared: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return cut(prepared, rows, cols, self.patch_size)

    def predict(
        self, x: np.ndarray, psf: np.ndarray | None = None, *, tta: bool = False, identity: np.ndarray | None = None
    ) -> np.ndarray:
        """p(star) float32 [n] for normalised patches [n, C, P, P]; with ``tta`` the mean over the eight square
        symmetries, summed in the order ``model.predict`` sums them. ``identity``: the patches' single-pass
        p_star where already known, which the mean then reuses instead of running that pass again."""
        if self.takes_psf and (psf is None or len(psf) != len(x)):
            raise StargalError("this model needs the PSF at every patch (stargal.psf); none or the wrong number given")
        self._check_patches(x)
        if not tta:
            return self._run(x, psf)
        from .augment import D4_SIZE

        total = np.zeros(len(x), np.float64)
        for k in range(D4_SIZE):
            total += identity if k == 0 and identity is not None else self._run(d4_channels_first(x, k), psf)
        return (total / D4_SIZE).astype(np.float32)

    def _check_patches(self, x: np.ndarray) -> None:
        """StargalError unless ``x`` holds [n, bands, P, P] patches of this network's size and bands."""
        expected = (self.bands, self.patch_size, self.patch_size)
        if len(x) and tuple(np.shape(x)[1:]) != expected:
            raise StargalError(
                f"{self.path}: patches of shape {tuple(np.shape(x)[1:])} given, the network takes {expected} "
                "(bands, pixels, pixels)"
            )

    def _run(self, x: np.ndarray, psf: np.ndarray | None) -> np.ndarray:
        out = np.empty(len(x), np.float32)
        for start in range(0, len(x), BATCH):
            feed = {PATCH_INPUT: x[start : start + BATCH]}
            if self.takes_psf:
                feed["psf"] = np.asarray(psf[start : start + BATCH], np.float32)
            out[start : start + BATCH] = self.session.run([self.output], feed)[0].reshape(-1)
        return out


# ---------------------------------------------------------------- export (at training time: needs TensorFlow)


def export(model, path: str | os.PathLike) -> dict:
    """Write the layers of the Keras ``model`` after its normalisation as ONNX to ``path`` (channels-first patch
    input); return what model.json records of it (without the check)."""
    import tf2onnx

    from .model import import_keras, import_tensorflow, patch_shape, takes_psf

    tf, keras = import_tensorflow(), import_keras()
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    norm = model.get_layer("normalisation")
    network = keras.models.clone_model(
        model, clone_function=lambda layer: keras.layers.Identity(name=layer.name) if layer is norm else layer
    )
    shape = patch_shape(model)
    specs = [tf.TensorSpec([None, *shape], tf.float32, name=PATCH_INPUT)]
    if takes_psf(model):
        specs.append(tf.TensorSpec([None, shape[-1]], tf.float32, name="psf"))
        function = tf.function(lambda x, p: network({"patch": x, "psf": p}, training=False))
    else:
        function = tf.function(lambda x: network(x, training=False))
    tf2onnx.convert.from_function(
        function, input_signature=specs, opset=OPSET, inputs_as_nchw=[PATCH_INPUT], output_path=str(path)
    )
    return {
        "opset": OPSET,
        "tf2onnx": tf2onnx.__version__,
        "normalisation": {"center": list(norm.center), "scale": list(norm.scale)},
    }


def discrepancy(model, onnx_path: str | os.PathLike, normalisation: dict) -> float:
    """Largest |p_star difference| between the Keras ``model`` and its ONNX export on ``check_patches``, with and
    without the eight-symmetry mean."""
    from . import normalise
    from .model import patch_shape, predict, takes_psf

    size, _, bands = patch_shape(model)
    x, psf = check_patches(size, bands)
    psf = psf if takes_psf(model) else None
    network = OnnxNetwork(onnx_path, normalisation, threads=1)
    normalised = np.ascontiguousarray(normalise.apply(x, network.center, network.scale).transpose(0, 3, 1, 2))
    worst = 0.0
    for tta in (False, True):
        reference = predict(model, x, psf, tta=tta)
        worst = max(worst, float(np.max(np.abs(network.predict(normalised, psf, tta=tta) - reference))))
    return worst


def export_checked(model, path: str | os.PathLike) -> dict | None:
    """``export`` then ``discrepancy``: the record for model.json, or None (and no file) when the export fails or
    differs from the Keras model by more than TOLERANCE (predict.py then runs the Keras model)."""
    path = Path(path)
    with _noting_interrupts() as interrupted:
        try:
            record = export(model, path)
            worst = discrepancy(model, path, record["normalisation"])
        except OSError:
            raise  # the disk, not the converter: the stage reports it
        except Exception as exc:  # an optional accelerator: a converter's failure must not lose the model
            path.unlink(missing_ok=True)
            if interrupted:  # TensorFlow turned Ctrl-C into an error of its own: the user stopped the run
                raise KeyboardInterrupt from None
            log.warning("ONNX export failed (%s): predict.py will run this model with Keras", str(exc)[:200])
            return None
    if not worst <= TOLERANCE:
        log.warning("ONNX export differs from the Keras model by %.2g in p_star: not kept", worst)
        path.unlink(missing_ok=True)
        return None
    return {**record, "max_abs_diff": worst, "check_patches": CHECK_PATCHES}


@contextlib.contextmanager
def _noting_interrupts():
    """Yield a list that gets an entry when Ctrl-C (SIGINT) arrives, which is still handled as before."""
    seen: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = signal.getsignal(signal.SIGINT)

    def note(signum, frame):
        seen.append(True)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)
