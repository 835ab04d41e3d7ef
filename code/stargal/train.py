"""Training: seeded fit on a streamed (optionally augmented) pipeline with early stopping that restores
the best weights, and the decision threshold chosen on validation data only."""

from __future__ import annotations

import logging
import math
import os
import time

import numpy as np

from . import augment as aug
from .config import SEED
from .metrics import choose_threshold
from .model import import_keras, import_tensorflow

log = logging.getLogger("stargal")


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and TensorFlow; deterministic TF ops (cheap on CPU for these small models)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras = import_keras()
    tf = import_tensorflow()

    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _epoch_logger():
    keras = import_keras()

    class EpochLog(keras.callbacks.Callback):
        """One log line per epoch: the quiet progress display when not on a terminal."""

        def on_train_begin(self, logs=None):
            self._t0 = time.monotonic()

        def on_epoch_begin(self, epoch, logs=None):
            self._te = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = " ".join(
                f"{k}={v:.4f}" for k, v in logs.items() if isinstance(v, int | float) and k != "learning_rate"
            )
            log.info("epoch %d: %s (%.1f s)", epoch + 1, parts, time.monotonic() - self._te)

    return EpochLog()


def _cosine_schedule(base_lr: float, epochs: int, warmup: int = 1):
    def schedule(epoch: int, lr: float) -> float:
        if epoch < warmup:
            return base_lr * (epoch + 1) / (warmup + 1)
        t = (epoch - warmup) / max(1, epochs - warmup)
        return base_lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    return schedule


def fit(
    model,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    batch_size: int = 256,
    epochs: int = 60,
    patience: int = 8,
    seed: int = SEED,
    augment: str | aug.AugmentConfig | None = None,
    verbose: int | str = "auto",
    normalisation: dict | None = None,
    schedule: str | None = None,
    class_weight: dict | None = None,
    callbacks: list | None = None,
    train_psf: np.ndarray | None = None,
    val_psf: np.ndarray | None = None,
) -> dict:
    """Train ``model`` in place and return its history ({"loss": [...], "val_loss": [...], ...,
    "best_epoch", "epochs_run", "seconds", "seconds_per_epoch"}); the best-val-loss weights are restored.

    ``augment``: a policy name of ``stargal.augment.POLICIES`` (or an AugmentConfig) streamed per batch.
    ``normalisation`` (dataset.json's) gives the brightness scale; taken from the model when omitted.
    ``schedule``: None (constant), "cosine" (warm-up then cosine decay to ``epochs``) or "plateau"
    (halve on a val-loss plateau). ``verbose``: Keras progress bar on a terminal ("auto"), else one line
    per epoch through the log. ``train_psf``/``val_psf``: the PSF at every patch, for models that take it.
    """
    keras = import_keras()

    from .model import takes_psf
    from .progress import interactive

    config = augment if isinstance(augment, aug.AugmentConfig) else aug.policy(augment)
    scale = None
    if normalisation is not None:
        scale = normalisation["scale"]
    else:
        norm_layers = [layer for layer in model.layers if type(layer).__name__ == "AsinhNormalisation"]
        if norm_layers:
            scale = norm_layers[0].scale
    with_psf = takes_psf(model)
    if with_psf and (train_psf is None or val_psf is None):
        raise ValueError("this model takes the PSF at every patch: give train_psf and val_psf")
    train_ds = aug.make_dataset(
        train_x,
        train_y,
        psf=train_psf if with_psf else None,
        batch_size=batch_size,
        config=config,
        scale=scale,
        seed=seed,
    )
    val_ds = aug.make_dataset(
        val_x, val_y, psf=val_psf if with_psf else None, batch_size=max(batch_size, 512), shuffle=False
    )

    cbs = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True, start_from_epoch=0, verbose=0
        )
    ]
    lr0 = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    if schedule == "cosine":
        cbs.append(keras.callbacks.LearningRateScheduler(_cosine_schedule(lr0, epochs)))
    elif schedule == "plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, patience // 3)))
    elif schedule not in (None, "none", "constant"):
        raise ValueError(f"unknown schedule {schedule!r}")
    keras_verbose = (1 if interactive() else 0) if verbose == "auto" else int(verbose)
    if keras_verbose == 0 and verbose == "auto":
        cbs.append(_epoch_logger())
    cbs.extend(callbacks or [])

    t0 = time.monotonic()
    hist = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=cbs,
        verbose=keras_verbose,
        class_weight=class_weight,
        shuffle=False,  # the pipeline reshuffles itself
    )
    seconds = time.monotonic() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    val_loss = history.get("val_loss", [])
    # Keras 3's EarlyStopping restores the best weights at the end of training, stopped early or not.
    finite = np.isfinite(val_loss) if val_loss else np.zeros(0, bool)
    history["best_epoch"] = int(np.nanargmin(np.where(finite, val_loss, np.nan))) + 1 if finite.any() else 0
    history["epochs_run"] = len(val_loss)
    history["seconds"] = seconds
    history["seconds_per_epoch"] = seconds / max(1, len(val_loss))
    return history


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights {0: w_galaxy, 1: w_star} that balance the two classes' total weight."""
    y = np.asarray(y).astype(np.int64)
    counts = np.bincount(y, minlength=2).astype(np.float64)
    return {c: float(len(y) / (2 * counts[c])) if counts[c] else 1.0 for c in (0, 1)}


def select_threshold(
    model, val_x: np.ndarray, val_y: np.ndarray, val_psf: np.ndarray | None = None, *, tta: bool = False
) -> float:
    """The MCC-maximising threshold on validation data (never on test data)."""
    from .model import predict

    return choose_threshold(val_y, predict(model, val_x, val_psf, tta=tta))
