"""Runner of tune.py: a resumable, parallel Optuna study over a prepared dataset's train/val splits.

Parallelism: ``workers`` processes each run trials against the shared SQLite storage (TensorFlow limited to
one thread per worker). A file lock around "count trials, then ask for a new one" makes the total
number of finished trials exactly ``target``. Rerunning with a larger target continues the study;
a trial stopped by the user (SIGINT or SIGTERM; or left RUNNING by a run that was killed) is no failure of its
parameters: it ends FAIL marked "interrupted" (INTERRUPTED in the trials tables) and its parameters are
re-enqueued, so that the resumed study runs them first.
Each trial is ``stargal.tune.train_trial``; this module owns the storage, the workers and the files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import cli, fsio, tune
from ..config import SEED
from ..dataset import dataset_identity, load_dataset, resolve_dataset
from ..errors import StargalError, exception_chain
from ..fsio import OutputSet, write_json, write_text
from ..integrity import require_dataset
from ..paths import DataPaths, check_folder_name
from ..tables import csv_text, records_markdown
from ..train_options import ARCH_DEFAULTS

log = logging.getLogger("stargal")

STARTUP_WAIT_S = 300  # a worker not started by then (or dead) no longer holds the others back
INTERRUPTED = "INTERRUPTED"  # the trials tables' state of a trial the user stopped (optuna's FAIL, marked)
INTERRUPTED_ATTR = "interrupted"  # user attribute of such a trial: what stopped it (SIGINT, SIGTERM, RUN_ENDED)
LEAKED_SEMAPHORES_WARNING = "ignore::UserWarning:multiprocessing.resource_tracker"
RUN_ENDED = "run ended"  # left RUNNING by a run that ended without recording it (killed, or its machine went down)


def storage_url(db: Path) -> str:
    """SQLAlchemy URL of a study's SQLite file."""
    return f"sqlite:///{db}"


def make_storage(db: Path, lock: Path):
    """The study storage in ``db`` (shared by the worker processes), opened under the study's ``lock``."""
    import optuna

    # Under the lock: two processes opening a new study.db at once both write its schema version, and the second
    # fails (UNIQUE constraint failed: alembic_version.version_num). A generous SQLite busy timeout: the workers
    # write trial states concurrently.
    with file_lock(lock):
        return optuna.storages.RDBStorage(storage_url(db), engine_kwargs={"connect_args": {"timeout": 60}})


def _disk_full(exc: BaseException | None) -> bool:
    """Whether SQLite's "database or disk is full" (SQLITE_FULL) caused ``exc``, however optuna (StorageInternalError)
    and SQLAlchemy (OperationalError) wrapped it."""
    full = getattr(sqlite3, "SQLITE_FULL", 13)
    return any(
        isinstance(e, sqlite3.Error) and (getattr(e, "sqlite_errorcode", None) == full or "disk is full" in str(e))
        for e in exception_chain(exc)
    )


@contextlib.contextmanager
def _study_space(db: Path):
    """A full disk met by the study's storage is the full disk's one-line error naming ``db`` (OSError ENOSPC): not
    "unexpected StorageInternalError", nor a damaged study that --force would start over, losing its trials."""
    try:
        yield
    except Exception as exc:
        if _disk_full(exc):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(db)) from None
        raise


@contextlib.contextmanager
def _readable_study(db: Path):
    """A damaged or foreign study.db stops the run with one line naming it (a full disk: ``_study_space``)."""
    from sqlalchemy.exc import DatabaseError

    try:
        with _study_space(db):
            yield
    except DatabaseError as exc:
        why = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StargalError(f"{db}: cannot read the study ({why}); tune.py --force starts it over") from None


def create_or_load(db: Path, lock: Path, name: str, seed: int, config: dict):
    """Open the study in ``db`` (creating it with ``config`` as user attributes) and recover interrupted trials.

    Returns (study, recovered) where recovered counts trials an interrupted run left RUNNING.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _readable_study(db):
        storage = make_storage(db, lock)
        study = optuna.create_study(
            study_name=name, storage=storage, direction="minimize", load_if_exists=True, sampler=tune.sampler(seed)
        )
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", config)
    elif stored != config:
        keys = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        # each with the study's value and the one given, so that a rerun can give the study's (--verify's redo)
        changed = [f"{k}: {stored.get(k)!r} in the study, {config.get(k)!r} now" for k in keys if k != "dataset_id"]
        if "dataset_id" in keys and "dataset" not in keys:  # recorded since 2026-12-06: older studies lack it
            changed.append(f"dataset_id: {config.get('dataset')} was rebuilt since")
        raise StargalError(
            f"{db}: study {name!r} was run with different settings ({', '.join(changed)}); "
            "use --force to start it over or --name for a new study"
        )
    recovered = 0
    study_id = storage.get_study_id_from_name(name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # the storage's public API names a trial by (study id, trial number)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, RUN_ENDED)  # a user attribute only while RUNNING
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params)  # not skip_if_exists: the failed ghost itself matches
        recovered += 1
    return study, recovered


def count_trials(study) -> tuple[int, int]:
    """(finished = complete + pruned, running) trials of the study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return len(trials) - running, running


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def worker_main(spec: dict) -> int:
    """One worker process: run trials until the study holds ``spec["target"]`` finished trials.

    Module-level so that it can be the target of a spawned process. Returns the number of trials run.
    """
    # the signal handlers first: a spawned worker would die of SIGTERM while it imports TensorFlow
    with _trials_stop_on_signals(), _study_space(Path(spec["db"])):
        return _run_trials(spec)


def _run_trials(spec: dict) -> int:
    """``worker_main``'s work: load the data, then ask for trials and run them until the study holds enough."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "STARGAL_TF_THREADS"):
        os.environ[var] = str(spec.get("threads", 1))
    import optuna

    from ..model import configure_threads

    if not logging.getLogger().handlers:  # a spawned worker: log like the parent does
        logging.basicConfig(level=spec.get("log_level", logging.INFO), format="%(message)s")
    configure_threads(int(spec.get("threads", 1)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_data(spec)
    study = optuna.load_study(
        study_name=spec["study"],
        storage=make_storage(Path(spec["db"]), Path(spec["lock"])),
        sampler=tune.sampler(spec["seed"] + 7919 * (spec["worker"] + 1) + spec["offset"]),
        pruner=_stop_aware(tune.pruner()),
    )
    _wait_for_the_others(spec.get("start_line"))
    done = 0
    while True:
        with file_lock(Path(spec["lock"])):
            finished, running = count_trials(study)
            if finished + running >= spec["target"]:
                break
            trial = study.ask()
        try:
            value = tune.train_trial(trial, data, spec)
        except BaseException as exc:
            _end_unfinished(study, trial, exc, spec["worker"])  # raises unless the trial was pruned
        else:
            study.tell(trial, value)
            log.info("worker %d: trial %d %s=%.4f", spec["worker"], trial.number, tune.OBJECTIVE, value)
        done += 1
        if _stop.received is not None:  # came as the trial ended (or was lost on its way): its result stands
            raise cli.stop_exception(_stop.received)
    return done


@dataclass
class _StopState:
    """The first stop signal this process received while it ran trials; whether the stopped trial is being
    recorded."""

    received: signal.Signals | None = None
    recording: bool = False


_stop = _StopState()


def _stop_trial(signum: int, frame) -> None:
    """SIGINT or SIGTERM while trials run: stop the running trial where it is, as an interrupt. A repeat (the
    parent passing on the terminal's Ctrl-C, a second kill) raises again, in case TensorFlow swallowed the first,
    except while the stopped trial is being recorded: that must not be cut short."""
    if _stop.recording:
        return
    _stop.received = _stop.received or signal.Signals(signum)
    raise cli.stop_exception(signum)


def _quiet_lost_stop(unraisable) -> None:
    """``sys.unraisablehook`` while trials run. Python drops an exception raised in a weakref callback or
    ``__del__``, with a traceback: the stop the signal handler raised while one ran (seen while Keras builds a
    model) is lost so. No traceback for it: the pruner (``_stop_aware``) stops the trial at its epoch's end."""
    if not (_stop.received is not None and isinstance(unraisable.exc_value, KeyboardInterrupt | cli.Terminated)):
        sys.__unraisablehook__(unraisable)


def _stop_aware(pruner):
    """The study's ``pruner``, which also stops a trial at its epoch's end once a stop signal came, in case the
    exception the signal handler raised was lost (caught or dropped on its way out of Keras)."""
    import optuna

    class StopAware(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return _stop.received is not None or pruner.prune(study, trial)

    return StopAware()


@contextlib.contextmanager
def _trials_stop_on_signals():
    """While trials run, SIGINT and SIGTERM both stop the running trial, which is then recorded interrupted (a
    spawned worker would otherwise die of SIGTERM, leaving its trial RUNNING); the previous handlers afterwards.
    A signal the process ignores stays ignored, and only the main thread can set handlers (Python runs them there).
    """
    _stop.received, _stop.recording = None, False
    previous = {s: signal.getsignal(s) for s in cli.STOP_SIGNALS}
    main = threading.current_thread() is threading.main_thread()
    handled = {s: h for s, h in previous.items() if main and h not in (signal.SIG_IGN, None)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _quiet_lost_stop
    for signum in handled:
        signal.signal(signum, _stop_trial)
    try:
        yield
    finally:
        for signum, handler in handled.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook


def _end_unfinished(study, trial, exc: BaseException, worker: int) -> None:
    """Record a trial that ended with ``exc``: interrupted (a stop signal came; raises the stop), pruned, or
    failed (raises ``exc``)."""
    from optuna import TrialPruned
    from optuna.trial import TrialState

    stop = _stopped_by(exc)
    if stop is not None:  # pruned or failed too, maybe, but for the stop: its parameters are tried again
        _record_interrupted(study, trial, stop)
        if isinstance(exc, KeyboardInterrupt | cli.Terminated):
            raise exc
        raise cli.stop_exception(stop) from exc
    if isinstance(exc, TrialPruned):
        study.tell(trial, state=TrialState.PRUNED)
        log.info("worker %d: trial %d pruned", worker, trial.number)
        return
    study.tell(trial, state=TrialState.FAIL)
    raise exc


def _stopped_by(exc: BaseException) -> signal.Signals | None:
    """The stop signal that ended a trial with ``exc``, or None. The signal noted comes first: raised inside
    TensorFlow, its exception can come out as another (a RuntimeError, a SystemError), or as the pruning the
    pruner did for it."""
    if _stop.received is not None:
        return _stop.received
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(exc, cli.Terminated):
        return signal.SIGTERM
    return None


def _record_interrupted(study, trial, stop: signal.Signals) -> None:
    """A trial the user stopped is no failure of its parameters. Optuna has no state for it: it ends FAIL marked
    interrupted (INTERRUPTED in the trials tables), and its parameters are queued again for the resumed study."""
    from optuna.trial import TrialState

    _stop.recording = True
    try:
        trial.set_user_attr(INTERRUPTED_ATTR, stop.name)
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)
    except Exception as exc:  # e.g. the database busy too long: the trial stays RUNNING, which the next run recovers
        log.warning("trial %d: could not record it as interrupted (%s); the next run retries it", trial.number, exc)
    else:
        log.info("trial %d stopped by %s: queued again for the next run", trial.number, stop.name)


def _wait_for_the_others(start_line) -> None:
    """Wait until every worker has loaded TensorFlow and the data, so that the first trials go to all of them: a
    worker that started first would otherwise take every short trial itself while the others still start."""
    if start_line is None:  # one worker, in this process
        return
    with contextlib.suppress(threading.BrokenBarrierError, OSError, EOFError):  # a worker gone: go on without it
        start_line.wait(timeout=STARTUP_WAIT_S)


def load_data(spec: dict) -> dict:
    """Training and validation splits (never test) of the dataset, optionally a stratified subset of training."""
    data = load_dataset(DataPaths(Path(spec["data_dir"])), spec["dataset"], splits=("train", "val"))
    train, val = data["train"], data["val"]
    limit = int(spec.get("max_train") or 0)
    if 0 < limit < len(train["y"]):
        keep = tune.stratified_subset(train["y"], limit, spec["seed"])
        train = {k: v[keep] for k, v in train.items()}
    return {
        "train_x": train["x"],
        "train_y": train["y"],
        "train_psf": train["psf"],
        "val_x": val["x"],
        "val_y": val["y"],
        "val_psf": val["psf"],
        "normalisation": data["meta"]["normalisation"],
    }


def _require_two_classes(paths: DataPaths, dataset: str) -> None:
    """StargalError, as 03_model.py gives, when the training or validation split is empty or holds one class only
    (a dataset 02 built before it refused them): every trial's validation MCC would be sklearn's 0.0, read as a
    score."""
    from .training import require_two_classes

    labels = {}
    for split in ("train", "val"):
        path = paths.split_y(dataset, split)
        if not path.exists():
            raise StargalError(f"{path}: missing (dataset {dataset!r} is incomplete or older; rerun stage 02)")
        labels[split] = fsio.load_npy(path)
        if labels[split].size == 0:  # found only once a worker loaded it: after the study was made, in a traceback
            raise StargalError(f"{path}: the {split} split of dataset {dataset} is empty; rerun 02_preparation.py")
    require_two_classes(dataset, labels)


def run_tuning(
    paths: DataPaths,
    *,
    dataset: str | None = None,
    architecture: str = "stargal",
    trials: int = 20,
    workers: int = 2,
    epochs: int = 15,
    patience: int = 3,
    max_train: int = 0,
    augment: str | None = None,
    seed: int = SEED,
    name: str | None = None,
    force: bool = False,
) -> dict:
    """Run (or continue) the study until it holds ``trials`` finished trials; write table, plot, best.json."""
    if architecture not in tune.SEARCH_SPACES:
        raise StargalError(f"--architecture {architecture!r}: choose from {', '.join(tune.SEARCH_SPACES)}")
    if trials < 1 or workers < 1 or epochs < 1:
        raise StargalError("--trials, --workers and --epochs must be positive")
    if max_train < 0:
        raise StargalError(f"--max-train {max_train}: must be 0 (all training patches) or positive")
    if name is not None:
        check_folder_name(name, "--name")  # a name, never a path: the study stays under tuning/ and reports/tuning/
    dataset = resolve_dataset(paths, dataset)
    require_dataset(paths, dataset, ("train", "val"))  # intact before any worker reads it
    _require_two_classes(paths, dataset)  # as 03: a study on a split of one class would rank its trials by nothing
    # Train trials the way 03_model.py trains this architecture (augmentation policy, learning-rate schedule).
    defaults = _training_defaults(architecture)
    extra = {"augment": augment} if augment else {}  # best.json carries an explicit choice to 03_model.py
    augment = augment or defaults.get("augment")
    schedule = defaults.get("schedule")
    name = name or f"{dataset}_{architecture}"
    folder = paths.tuning_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    db, lock = paths.study_db(name), paths.study_lock(name)
    if force:
        db.unlink(missing_ok=True)  # our own study file: start over
    settings = {
        "dataset": dataset,
        # its content: a study of an earlier build of the dataset (same name) is not continued on this one
        "dataset_id": dataset_identity(paths, dataset),
        "architecture": architecture,
        "epochs": epochs,
        "patience": patience,
        "max_train": max_train,
        "augment": augment,
        "schedule": schedule,
        "seed": seed,
    }
    # through JSON so it compares equal to the copy stored in the study
    config = json.loads(
        json.dumps({**settings, "objective": tune.OBJECTIVE, "search_space": tune.SEARCH_SPACES[architecture]})
    )
    study, recovered = create_or_load(db, lock, name, seed, config)
    if recovered:
        log.info("%d trial(s) left running by an earlier run: marked interrupted and queued again", recovered)
    finished, _ = count_trials(study)
    todo = max(0, trials - finished)
    start = time.monotonic()
    if todo:
        log.info(
            "study %s: %d finished trial(s), running %d more on %d worker(s)", name, finished, todo, min(workers, todo)
        )
        base = {
            **settings,
            "data_dir": str(paths.root),
            "db": str(db),
            "study": name,
            "target": trials,
            "lock": str(lock),
            "offset": len(study.trials),
            "threads": 1,
            "log_level": logging.getLogger("stargal").getEffectiveLevel(),
        }
        specs = [{**base, "worker": w} for w in range(min(workers, todo))]
        if len(specs) == 1:
            worker_main(specs[0])
        else:
            _run_workers(specs)
    else:
        log.info("study %s already holds %d finished trial(s): nothing to run", name, finished)
    study = create_or_load(db, lock, name, seed, config)[0]
    return write_results(paths, name, study, architecture, dataset, time.monotonic() - start, extra)


def _run_workers(specs: list[dict]) -> None:
    """``worker_main`` for each spec, each in a process of its own. A stop (SIGINT or SIGTERM to this process, or
    a worker's) is passed on to every worker, which records its trial interrupted and ends."""
    # spawn, not fork: TensorFlow's thread pools do not survive a fork
    ctx = multiprocessing.get_context("spawn")
    # the resource tracker the pool starts (it takes this process's -W options) warns at exit of the semaphores a
    # stopped pool leaves behind: a library line after our one-line "terminated", about nothing the user can act on
    if LEAKED_SEMAPHORES_WARNING not in sys.warnoptions:
        sys.warnoptions.append(LEAKED_SEMAPHORES_WARNING)
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=len(specs), mp_context=ctx) as pool:
        start_line = manager.Barrier(len(specs))
        futures = [pool.submit(worker_main, {**s, "start_line": start_line}) for s in specs]
        try:
            for future in futures:
                future.result()
        except (KeyboardInterrupt, cli.Terminated) as exc:
            # SIGTERM from the runner or docker stop reaches only this process: the pool's shutdown would wait
            # for the workers to run the whole study
            _stop_workers(pool, signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM)
            raise


def _stop_workers(pool: ProcessPoolExecutor, signum: int) -> None:
    """Pass a stop signal to the pool's worker processes (a terminal's Ctrl-C reached them already, a SIGTERM to
    this process alone did not); the pool's shutdown then waits while each records its trial and ends."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError):  # a worker already gone
            os.kill(process.pid, signum)


def _training_defaults(architecture: str) -> dict:
    return dict(ARCH_DEFAULTS.get(architecture, {}))


def write_results(
    paths: DataPaths, name: str, study, architecture: str, dataset: str, seconds: float, extra: dict | None = None
) -> dict:
    """trials.csv, trials.md, best.json under the tuning folder; tuning.png and trials.md under reports/tuning/NAME."""
    from ..plots.tuning import plot_study

    folder = paths.tuning_dir(name)
    rows = _mark_interrupted(tune.trials_table(study), study)
    importance = tune.importances(study)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if not complete:
        write_text(paths.trials_csv(name), _csv(rows))
        raise StargalError(f"study {name}: no trial completed (all pruned or failed); see {paths.trials_csv(name)}")
    best = tune.best_config(study, architecture)
    best.update(extra or {})
    best["dataset"] = dataset
    best["n_trials"] = len(rows)
    table = _markdown(name, rows, best, importance)
    counts = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", INTERRUPTED)}
    dataset_id = (study.user_attrs.get("config") or {}).get("dataset_id")  # what the report matches studies by
    content = {"study": name, "dataset": dataset, "dataset_id": dataset_id, "architecture": architecture,
               "counts": counts}  # fmt: skip
    with OutputSet(paths.tuning_record(name)) as out:  # best.json is what 03_model.py reads: sealed with its table
        write_text(out.path(paths.trials_csv(name)), _csv(rows))
        write_json(out.path(paths.best_config(name)), best)
        write_text(out.path(paths.trials_md(name)), table)
        out.commit(content)
    plot = paths.reports("tuning", name, "tuning.png")
    log_params = {k: (v[1], v[2]) for k, v in tune.SEARCH_SPACES[architecture].items() if v[0] == "log"}
    with OutputSet(paths.reports("tuning", name, "tuning.json")) as out:
        write_text(out.path(paths.reports("tuning", name, "trials.md")), table)  # beside the plot, for the report
        plot_study(rows, importance, tune.OBJECTIVE, out.path(plot), title=f"{name}: {len(rows)} trials",
                   log_params=log_params)  # fmt: skip
        out.commit(content)
    return {
        "name": name,
        "folder": folder,
        "best": best,
        "counts": counts,
        "plot": plot,
        "seconds": seconds,
        "importance": importance,
    }


def _mark_interrupted(rows: list[dict], study) -> list[dict]:
    """The trials table with INTERRUPTED as the state of a trial the user stopped, not optuna's FAIL: it says
    nothing about its parameters (which the study runs again)."""
    from optuna.trial import TrialState

    stopped = {t.number for t in study.trials if t.state == TrialState.FAIL and INTERRUPTED_ATTR in t.user_attrs}
    return [{**row, "state": INTERRUPTED} if row["trial"] in stopped else row for row in rows]


def _fmt(v) -> str:
    """A trials-table cell: 4 significant digits, empty when there is no value."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _csv(rows: list[dict]) -> str:
    """The trials as CSV: floats at full precision, empty cells for missing values."""
    cols = list(rows[0]) if rows else ["trial"]
    return csv_text(
        cols, [["" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in cols] for r in rows]
    )


def _markdown(name: str, rows: list[dict], best: dict, importance: dict) -> str:
    """The study in Markdown: objective, the trials table, importances and the best configuration."""
    cols = list(rows[0])
    lines = [
        f"# Hyper-parameter study {name}",
        "",
        f"Objective: minimum validation loss ({tune.OBJECTIVE}, lower is better) on the validation split; "
        f"best trial {best['trial']}: {best['value']:.4f} (val MCC {_fmt(best.get('val_mcc'))}).",
        "",
        records_markdown(rows, cols, fmt=_fmt).rstrip("\n"),
    ]
    if importance:
        lines += ["", "Parameter importance (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in importance.items())]
    lines += ["", "Best configuration (`best.json`, usable with `03_model.py --config`):", "", "```json"]
    lines += [json.dumps({k: best[k] for k in ("architecture", "hyperparameters")}, indent=2), "```", ""]
    return "\n".join(lines)
