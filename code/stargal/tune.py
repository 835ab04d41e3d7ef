"""Hyper-parameter search with Optuna: parallel worker processes sharing one resumable SQLite study.

Objective: the **minimum validation loss** (binary cross-entropy) over the epochs of a trial, i.e. the
loss of the weights early stopping keeps. Lower is better. It uses only the training and validation
splits; the test split is never read. The validation loss is preferred over validation MCC because it
is smooth (MCC at a fixed threshold jumps with single objects on small validation sets); the
validation MCC (threshold 0.5) and accuracy of each trial are recorded alongside.

Parallelism: ``workers`` processes each run trials against the shared storage (TensorFlow limited to
one thread per worker). A file lock around "count trials, then ask for a new one" makes the total
number of finished trials exactly ``target``. Rerunning with a larger target continues the study;
trials left RUNNING by an interrupted run are marked FAIL and their parameters re-enqueued.
Pruning: the median pruner stops a trial whose validation loss after an epoch is worse than the
median of earlier trials at that epoch (after a few complete trials and warm-up epochs).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("stargal")

OBJECTIVE = "val_loss"
FINISHED = ("COMPLETE", "PRUNED")

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


def storage_url(db: Path) -> str:
    return f"sqlite:///{db}"


def make_storage(db: Path):
    import optuna

    # A generous SQLite busy timeout: the workers write trial states concurrently.
    return optuna.storages.RDBStorage(storage_url(db), engine_kwargs={"connect_args": {"timeout": 60}})


def create_or_load(db: Path, name: str, seed: int, config: dict):
    """Open the study in ``db`` (creating it with ``config`` as user attributes) and recover interrupted trials.

    Returns (study, recovered) where recovered counts trials an interrupted run left RUNNING.
    """
    import optuna
    from optuna.trial import TrialState

    from .errors import StargalError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(db)
    study = optuna.create_study(
        study_name=name, storage=storage, direction="minimize", load_if_exists=True, sampler=_sampler(seed)
    )
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", config)
    elif stored != config:
        changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        raise StargalError(
            f"{db}: study {name!r} was run with different settings ({', '.join(changed)}); "
            "use --force to start it over or --name for a new study"
        )
    recovered = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params)  # not skip_if_exists: the failed ghost itself matches
        recovered += 1
    return study, recovered


def _sampler(seed: int):
    import optuna

    # constant_liar: running trials count as bad guesses, so parallel workers do not all probe one spot.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, constant_liar=True, multivariate=True)


def _pruner():
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)


def count_trials(study) -> tuple[int, int]:
    """(finished = complete + pruned, running) trials of the study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return len(trials) - running, running


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pruning_callback(trial):
    import keras

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

    from .metrics import mcc
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
    )
    val_loss = [v for v in history.get("val_loss", []) if math.isfinite(v)]
    trial.set_user_attr("epochs", len(history.get("val_loss", [])))
    trial.set_user_attr("seconds", round(time.monotonic() - start, 2))
    if type(prune).pruned:
        raise optuna.TrialPruned()
    if not val_loss:
        raise optuna.TrialPruned()  # diverged: NaN losses from the first epoch
    p = predict(model, data["val_x"])
    y = np.asarray(data["val_y"]).astype(int)
    trial.set_user_attr("val_mcc", round(float(mcc(y, (p >= 0.5).astype(int))), 4))
    trial.set_user_attr("val_accuracy", round(float(np.mean((p >= 0.5) == (y == 1))), 4))
    return float(min(val_loss))


def worker_main(spec: dict) -> int:
    """One worker process: run trials until the study holds ``spec["target"]`` finished trials.

    Module-level so that it can be the target of a spawned process. Returns the number of trials run.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "STARGAL_TF_THREADS"):
        os.environ[var] = str(spec.get("threads", 1))
    import optuna

    from .model import configure_threads

    if not logging.getLogger().handlers:  # a spawned worker: log like the parent does
        logging.basicConfig(level=spec.get("log_level", logging.INFO), format="%(message)s")
    configure_threads(int(spec.get("threads", 1)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_data(spec)
    study = optuna.load_study(
        study_name=spec["study"],
        storage=make_storage(Path(spec["db"])),
        sampler=_sampler(spec["seed"] + 7919 * (spec["worker"] + 1) + spec["offset"]),
        pruner=_pruner(),
    )
    done = 0
    while True:
        with file_lock(Path(spec["lock"])):
            finished, running = count_trials(study)
            if finished + running >= spec["target"]:
                break
            trial = study.ask()
        try:
            value = train_trial(trial, data, spec)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log.info("worker %d: trial %d pruned", spec["worker"], trial.number)
        except KeyboardInterrupt:
            # interrupted, not broken: the next run tries the same configuration again
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params)
            raise
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        else:
            study.tell(trial, value)
            log.info("worker %d: trial %d %s=%.4f", spec["worker"], trial.number, OBJECTIVE, value)
        done += 1
    return done


def load_data(spec: dict) -> dict:
    """Training and validation splits (never test) of the dataset, optionally a stratified subset of training."""
    from .fsio import load_npy, read_json
    from .paths import DataPaths

    paths = DataPaths(Path(spec["data_dir"]))
    name = spec["dataset"]
    meta = read_json(paths.dataset_json(name))
    train_x, train_y = load_npy(paths.split_x(name, "train")), load_npy(paths.split_y(name, "train"))
    val_x, val_y = load_npy(paths.split_x(name, "val")), load_npy(paths.split_y(name, "val"))
    limit = int(spec.get("max_train") or 0)
    if 0 < limit < len(train_y):
        keep = stratified_subset(train_y, limit, spec["seed"])
        train_x, train_y = train_x[keep], train_y[keep]
    return {
        "train_x": np.asarray(train_x, np.float32),
        "train_y": np.asarray(train_y),
        "val_x": np.asarray(val_x, np.float32),
        "val_y": np.asarray(val_y),
        "normalisation": meta["normalisation"],
    }


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
