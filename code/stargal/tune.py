"""Hyper-parameter search, the measuring part: search spaces, one trial trained and scored, and a finished
study summarised (trials table, best configuration, parameter importances). Optuna trials and arrays in,
numbers and dicts out; the study's storage, its worker processes and its files are ``stargal.stages.tuning``'s.

Objective: the **minimum validation loss** (binary cross-entropy) over the epochs of a trial, i.e. the
loss of the weights early stopping keeps. Lower is better. It uses only the training and validation
splits; the test split is never read. The validation loss is preferred over validation MCC because it
is smooth (MCC at a fixed threshold jumps with single objects on small validation sets); the
validation MCC (threshold 0.5) and accuracy of each trial are recorded alongside.
Pruning: the median pruner stops a trial whose validation loss after an epoch is worse than the
median of earlier trials at that epoch (after a few complete trials and warm-up epochs).
"""

from __future__ import annotations

import logging
import math
import os
import time

import numpy as np

from .model import import_keras

log = logging.getLogger("stargal")

OBJECTIVE = "val_loss"

# Search spaces per architecture: name -> ("log", lo, hi) | ("float", lo, hi) | ("choice", [values]).
_COMMON = {
    "learning_rate": ("log", 1e-4, 1e-2),
    "filters": ("choice", [16, 24, 32, 48]),
    "dense_units": ("choice", [32, 64, 128]),
    "dense_dropout": ("float", 0.0, 0.6),
    "spatial_dropout": ("float", 0.0, 0.3),
    "l2": ("log", 1e-6, 1e-2),
    "batch_size": ("choice", [64, 128, 256, 512]),
}
SEARCH_SPACES: dict[str, dict] = {
    "stargal": {**_COMMON, "weight_decay": ("log", 1e-6, 1e-3)},
    "reference_regularised": {**_COMMON, "dropout": ("float", 0.0, 0.5)},
    "reference_base": {k: _COMMON[k] for k in ("learning_rate", "filters", "dense_units", "batch_size")},
}


def suggest(trial, architecture: str) -> dict:
    """The trial's hyper-parameters (batch_size included) drawn from the architecture's search space."""
    hp = {}
    for name, (kind, *spec) in SEARCH_SPACES[architecture].items():
        if kind == "log":
            hp[name] = trial.suggest_float(name, spec[0], spec[1], log=True)
        elif kind == "float":
            hp[name] = trial.suggest_float(name, spec[0], spec[1])
        else:
            hp[name] = trial.suggest_categorical(name, spec[0])
    return hp


def sampler(seed: int):
    """The TPE sampler of a study (seeded; parallel workers do not probe one spot)."""
    import optuna

    # constant_liar: running trials count as bad guesses, so parallel workers do not all probe one spot.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, constant_liar=True, multivariate=True)


def pruner():
    """The median pruner (after a few complete trials and warm-up epochs)."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)


def _pruning_callback(trial):
    keras = import_keras()

    class Prune(keras.callbacks.Callback):
        """Report the epoch's validation loss; stop training when the pruner says so."""

        pruned = False

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_loss")
            if value is None or not math.isfinite(value):
                return
            trial.report(float(value), step=epoch + 1)
            if trial.should_prune():
                Prune.pruned = True
                self.model.stop_training = True

    return Prune()


def train_trial(trial, data: dict, spec: dict) -> float:
    """Build, train and score one configuration; raises optuna.TrialPruned when pruned."""
    import optuna
    from sklearn.metrics import matthews_corrcoef

    from .model import build_model, predict
    from .train import fit

    hp = suggest(trial, spec["architecture"])
    trial.set_user_attr("worker", int(spec.get("worker", 0)))
    trial.set_user_attr("pid", os.getpid())
    batch_size = int(hp.pop("batch_size"))
    model = build_model(spec["architecture"], data["train_x"].shape[1:], data["normalisation"], hp)
    prune = _pruning_callback(trial)
    start = time.monotonic()
    history = fit(
        model,
        data["train_x"],
        data["train_y"],
        data["val_x"],
        data["val_y"],
        batch_size=batch_size,
        epochs=spec["epochs"],
        patience=spec["patience"],
        seed=spec["seed"],
        augment=spec.get("augment"),
        schedule=spec.get("schedule"),
        verbose=0,
        normalisation=data["normalisation"],
        callbacks=[prune],
        train_psf=data["train_psf"],
        val_psf=data["val_psf"],
    )
    val_loss = [v for v in history.get("val_loss", []) if math.isfinite(v)]
    trial.set_user_attr("epochs", len(history.get("val_loss", [])))
    trial.set_user_attr("seconds", round(time.monotonic() - start, 2))
    if type(prune).pruned:
        raise optuna.TrialPruned()
    if not val_loss:
        raise optuna.TrialPruned()  # diverged: NaN losses from the first epoch
    p = predict(model, data["val_x"], data["val_psf"])
    y = np.asarray(data["val_y"]).astype(int)
    trial.set_user_attr("val_mcc", round(float(matthews_corrcoef(y, (p >= 0.5).astype(int))), 4))
    trial.set_user_attr("val_accuracy", round(float(np.mean((p >= 0.5) == (y == 1))), 4))
    return float(min(val_loss))


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of about n elements keeping the class fractions of y."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    keep = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        k = max(1, round(n * idx.size / y.size))
        keep.append(rng.choice(idx, size=min(k, idx.size), replace=False))
    return np.sort(np.concatenate(keep))


def trials_table(study) -> list[dict]:
    """One row per trial: number, state, objective value, recorded metrics and parameters."""
    names = sorted({k for t in study.trials for k in t.params})
    rows = []
    for t in study.trials:
        row = {
            "trial": t.number,
            "state": t.state.name,
            OBJECTIVE: t.value if t.value is not None else None,
            "val_mcc": t.user_attrs.get("val_mcc"),
            "val_accuracy": t.user_attrs.get("val_accuracy"),
            "epochs": t.user_attrs.get("epochs", t.last_step),
            "seconds": t.user_attrs.get("seconds"),
        }
        row.update({n: t.params.get(n) for n in names})
        rows.append(row)
    return rows


def best_config(study, architecture: str) -> dict:
    """best.json content: what ``03_model.py --config`` reads (architecture, hyperparameters incl. batch_size)."""
    best = study.best_trial
    return {
        "architecture": architecture,
        "hyperparameters": dict(best.params),
        "value": best.value,
        "objective": OBJECTIVE,
        "trial": best.number,
        "val_mcc": best.user_attrs.get("val_mcc"),
        "study": study.study_name,
    }


def importances(study) -> dict[str, float]:
    """Parameter importances (fANOVA) when enough trials completed, else {}."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}  # e.g. every trial scored the same
