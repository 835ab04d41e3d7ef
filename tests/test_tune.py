"""tune.py: a parallel Optuna study on a tiny dataset that resumes instead of starting over."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import optuna
import psutil
import pytest
import toy_models as toy
from conftest import run_script_here

from stargal import cli, fsio, tune
from stargal.dataset import dataset_identity
from stargal.errors import StargalError
from stargal.fsio import save_npy
from stargal.paths import PROJECT_ROOT, DataPaths
from stargal.stages.tuning import INTERRUPTED_ATTR, RUN_ENDED, make_storage, run_tuning

P = 15
FAST = {"architecture": "reference_base", "epochs": 2, "patience": 1}


@pytest.fixture
def paths(tmp_path) -> DataPaths:
    """A data folder holding one tiny prepared dataset "toy" (train/val only: tuning never reads test)."""
    paths = DataPaths(tmp_path / "data")
    for split, n, seed in (("train", 160, 1), ("val", 60, 2)):
        x, y = toy.toy_patches(n, P, seed=seed)
        save_npy(paths.split_x("toy", split), x)
        save_npy(paths.split_y("toy", split), y)
        save_npy(paths.split_psf("toy", split), np.full((len(y), 5), 2.0, np.float32))
    norm = toy.normalisation(np.load(paths.split_x("toy", "train")))
    files = [f("toy", s) for s in ("train", "val") for f in (paths.split_x, paths.split_y, paths.split_psf)]
    meta = {"name": "toy", "patch_size": P, "bands": "ugriz", "normalisation": norm}
    fsio.seal(paths.dataset_json("toy"), files, meta)  # dataset.json seals the folder, as stage 02's does
    paths.latest_dataset.write_text("toy\n")
    return paths


def trials_csv(paths: DataPaths, name: str) -> list[dict]:
    with open(paths.trials_csv(name), newline="") as fh:
        return list(csv.DictReader(fh))


def load(paths: DataPaths, name: str = "toy_reference_base") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(paths.study_db(name), paths.study_lock(name)))


def start_tune_py(paths: DataPaths, *args: str) -> subprocess.Popen:
    """tune.py on the toy dataset (reference_base), in a process group of its own, its output captured."""
    cmd = [sys.executable, str(PROJECT_ROOT / "code" / "tune.py"), "--data-dir", str(paths.root),
           "--architecture", "reference_base", *args]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def training_trials(paths: DataPaths, proc: subprocess.Popen, count: int, timeout: float = 120) -> list:
    """Wait until ``count`` trials of the toy study are training (``train_trial`` first records its pid)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out waiting for trials to start"
        try:
            trials = load(paths).get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        except Exception:  # tune.py has not created the study yet
            trials = []
        training = [t for t in trials if "pid" in t.user_attrs]
        if len(training) >= count:
            return training
        time.sleep(0.05)


# Four processes forked at once, in a fresh interpreter: forked from a pytest worker where TensorFlow has run (the
# in-process script tests), a child can deadlock on a lock one of TensorFlow's threads held at the fork
_OPEN_AT_ONCE = """
import multiprocessing, sys
from pathlib import Path
from stargal.stages.tuning import make_storage

def open_storage(db, lock):
    make_storage(Path(db), Path(lock))

if __name__ == "__main__":
    db, lock = sys.argv[1:3]
    processes = [multiprocessing.get_context("fork").Process(target=open_storage, args=(db, lock)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    print([process.exitcode for process in processes])
"""


def test_processes_opening_a_new_study_at_once_all_open_it(tmp_path):
    """Two processes opening a new study.db at once (tune.py and a reader polling it) both wrote its schema
    version; the second failed with "UNIQUE constraint failed: alembic_version.version_num". The study's lock
    now serialises the opening."""
    for attempt in range(2):  # without the lock, every attempt of four failed (10 of 10)
        db, lock = tmp_path / f"study{attempt}.db", tmp_path / "trials.lock"
        done = subprocess.run([sys.executable, "-c", _OPEN_AT_ONCE, str(db), str(lock)], capture_output=True,
                              text=True, timeout=180)  # fmt: skip
        assert done.returncode == 0 and done.stdout.split("\n")[-2] == "[0, 0, 0, 0]", done.stderr[-2000:]


@pytest.mark.slow
def test_parallel_study_resumes(paths):
    first = run_tuning(paths, trials=2, workers=2, **FAST)
    name = first["name"]
    assert name == "toy_reference_base"
    rows = trials_csv(paths, name)
    assert len(rows) == 2 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    study = load(paths, name)
    # the two trials ran in two different worker processes
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2
    earlier = {t.number: (t.params, t.value) for t in study.trials}

    best = json.loads(paths.best_config(name).read_text())
    assert best["architecture"] == "reference_base"
    assert set(best["hyperparameters"]) == {"learning_rate", "filters", "dense_units", "batch_size"}
    assert best["value"] == min(t.value for t in study.trials if t.value is not None)
    table = [line for line in paths.trials_md(name).read_text().splitlines() if line.startswith("|")]
    assert len(table) == 4  # header, separator, 2 trials
    assert paths.reports("tuning", name, "tuning.png").stat().st_size > 5000
    assert paths.reports("tuning", name, "trials.md").read_text() == paths.trials_md(name).read_text()

    # rerun with more trials: the same study continues, the earlier trials are kept as they were
    second = run_tuning(paths, trials=3, workers=2, **FAST)
    study = load(paths, name)
    assert len(study.trials) == 3 and second["counts"]["COMPLETE"] + second["counts"]["PRUNED"] == 3
    assert {t.number: (t.params, t.value) for t in study.trials[:2]} == earlier
    assert len(trials_csv(paths, name)) == 3

    # the same target again: nothing to run, nothing added
    run_tuning(paths, trials=3, workers=2, **FAST)
    assert len(load(paths, name).trials) == 3


@pytest.mark.slow
def test_interrupted_trial_is_retried(paths):
    run_tuning(paths, trials=1, workers=1, **FAST)
    name = "toy_reference_base"
    storage = make_storage(paths.study_db(name), paths.study_lock(name))
    study = optuna.load_study(study_name=name, storage=storage)
    # an interrupted run leaves a RUNNING trial behind
    ghost = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    ghost_lr = ghost.params["learning_rate"]
    result = run_tuning(paths, trials=2, workers=1, **FAST)
    study = optuna.load_study(study_name=name, storage=storage)
    states = [t.state.name for t in study.trials]
    assert states[1] == "FAIL" and states.count("FAIL") == 1
    assert study.trials[1].user_attrs[INTERRUPTED_ATTR] == RUN_ENDED  # the run that ran it never said how it ended
    retried = study.trials[2]
    assert retried.state.name in ("COMPLETE", "PRUNED") and retried.params["learning_rate"] == ghost_lr
    # not a failure of its parameters: the tables and counts say interrupted
    assert [r["state"] for r in trials_csv(paths, name)][1] == "INTERRUPTED"
    assert result["counts"]["FAIL"] == 0 and result["counts"]["INTERRUPTED"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_trial_stopped_by_a_signal_is_interrupted_not_failed_and_runs_again(paths, signum, capsys):
    """SIGTERM (a batch system's kill, docker stop, the runner passing one on) stopped a trial as a failure: FAIL,
    its parameters never tried again. Now SIGTERM and Ctrl-C alike end it FAIL marked interrupted, its parameters
    queued again; trials.csv and the counts call it INTERRUPTED, not failed; the resumed study runs it first."""
    proc = start_tune_py(paths, "--trials", "1", "--workers", "1", "--epochs", "2", "--patience", "1")
    training_trials(paths, proc, count=1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    word = cli.STOP_WORDS[signum]
    assert proc.returncode == 128 + signum and err.strip().splitlines()[-1] == f"tune.py: {word}", err
    stopped, queued = load(paths).trials
    assert stopped.state.name == "FAIL" and stopped.user_attrs[INTERRUPTED_ATTR] == signum.name
    assert queued.state.name == "WAITING" and queued.system_attrs["fixed_params"] == stopped.params

    result = run_tuning(paths, trials=1, workers=1, **FAST)  # resumed: the stopped parameters again
    study = load(paths)
    assert len(study.trials) == 2 and study.trials[1].params == stopped.params
    assert study.trials[1].state.name in ("COMPLETE", "PRUNED")
    counts = result["counts"]
    assert counts["FAIL"] == 0 and counts["INTERRUPTED"] == 1 and counts["COMPLETE"] + counts["PRUNED"] == 1
    assert trials_csv(paths, result["name"])[0]["state"] == "INTERRUPTED"
    assert "INTERRUPTED" in paths.trials_md(result["name"]).read_text()
    # the study is complete: nothing runs, the summary names the stop (tune.py run in this process: what is checked
    # is its summary, not its process, and a Python and TensorFlow started for it took ~5 s)
    argv = ["--data-dir", str(paths.root), "--architecture", "reference_base", "--trials", "1", "--workers", "1"]
    again = run_script_here(PROJECT_ROOT / "code" / "tune.py", [*argv, "--epochs", "2", "--patience", "1"], capsys)
    assert again.returncode == 0 and ", 0 failed, 1 interrupted (" in again.stdout, again.stdout + again.stderr


@pytest.mark.slow
def test_sigterm_to_tune_py_alone_stops_its_worker_processes(paths):
    """SIGTERM to tune.py alone, as the runner and docker stop send it: its process pool waited for the worker
    processes to run the whole study. Now each worker stops its trial, records it interrupted and ends."""
    proc = start_tune_py(paths, "--trials", "2", "--workers", "2", "--epochs", "200", "--patience", "200")
    training = training_trials(paths, proc, count=2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "tune.py: terminated", err
    assert not any(psutil.pid_exists(t.user_attrs["pid"]) for t in training)
    trials = load(paths).trials
    stopped = [t for t in trials if t.state.name == "FAIL"]
    queued = [t.system_attrs["fixed_params"] for t in trials if t.state.name == "WAITING"]
    assert len(stopped) == 2 and all(t.user_attrs[INTERRUPTED_ATTR] == "SIGTERM" for t in stopped)
    assert sorted(map(str, queued)) == sorted(str(t.params) for t in stopped)


def _stopped_inside_tensorflow(trial, data, spec):
    """A trial whose SIGTERM comes out of "TensorFlow" as a RuntimeError ("MISMATCH of original and normalized
    active exception types", as pybind11 reports it)."""
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # a real SIGTERM to this process, while the trial "trains"
        time.sleep(10)
    except cli.Terminated:
        raise RuntimeError("pybind11::error_already_set: MISMATCH of original and normalized") from None
    raise AssertionError("SIGTERM did not stop the trial")


def _stop_lost_then_epoch_ends(trial, data, spec):
    """A trial whose SIGTERM is lost (Python drops an exception raised in a weakref callback, as happened while
    Keras built a model), then trains on to its epoch's end, where the pruning callback asks whether to stop."""
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    except cli.Terminated:
        pass  # lost
    trial.report(0.5, step=1)
    if trial.should_prune():
        raise optuna.TrialPruned()
    return 0.4  # trained on to its end: the trial would count as complete


@pytest.mark.parametrize("trial_run", [_stopped_inside_tensorflow, _stop_lost_then_epoch_ends], ids=["mangled", "lost"])
def test_a_stop_that_tensorflow_mangles_or_loses_still_ends_the_trial_interrupted(paths, monkeypatch, trial_run):
    """The Terminated of a SIGTERM raised inside TensorFlow can come out as another error (tune.py said "unexpected
    RuntimeError ... please report it" and the trial was FAIL), or be lost (the trial trained on to its end, and
    tune.py exited 0). The signal received decides, and stops a trial at its epoch's end; a trial's own error
    still fails it, and its parameters are not queued again."""
    monkeypatch.setattr(tune, "train_trial", trial_run)
    own = signal.getsignal(signal.SIGTERM)
    with pytest.raises(cli.Terminated):
        run_tuning(paths, trials=1, workers=1, **FAST)
    assert signal.getsignal(signal.SIGTERM) == own  # this process's own handler is back
    stopped, queued = load(paths).trials
    assert stopped.state.name == "FAIL" and stopped.user_attrs[INTERRUPTED_ATTR] == "SIGTERM"
    assert queued.system_attrs["fixed_params"] == stopped.params

    def broken(trial, data, spec):
        trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        raise ValueError("a real failure")

    monkeypatch.setattr(tune, "train_trial", broken)
    with pytest.raises(ValueError, match="a real failure"):
        run_tuning(paths, trials=1, workers=1, **FAST)
    trials = load(paths).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"] and INTERRUPTED_ATTR not in trials[1].user_attrs
    assert trials[1].params == stopped.params  # the queued parameters, run and failed: not queued again


@pytest.mark.slow
def test_changed_settings_are_refused(paths):
    run_tuning(paths, trials=1, workers=1, **FAST)
    with pytest.raises(StargalError, match=r"different settings \(epochs: 2 in the study, 3 now\)"):
        run_tuning(paths, trials=2, workers=1, **{**FAST, "epochs": 3})
    with pytest.raises(StargalError, match="no dataset prepared"):
        run_tuning(DataPaths(paths.root.parent / "empty"), trials=1, **FAST)
    # the dataset rebuilt under its name (other content): the study of the earlier build is not continued
    x = np.load(paths.split_x("toy", "val"))
    save_npy(paths.split_x("toy", "val"), x[::-1].copy())
    meta = {k: v for k, v in fsio.read_json(paths.dataset_json("toy")).items() if k != fsio.INTEGRITY_KEY}
    files = [f("toy", s) for s in ("train", "val") for f in (paths.split_x, paths.split_y, paths.split_psf)]
    fsio.seal(paths.dataset_json("toy"), files, meta)
    with pytest.raises(StargalError, match=r"different settings \(dataset_id: toy was rebuilt since\)"):
        run_tuning(paths, trials=1, workers=1, **FAST)
    assert fsio.read_json(paths.tuning_record("toy_reference_base"))["dataset_id"]  # what the report matches by


@pytest.mark.slow
def test_results_are_sealed_and_a_damaged_study_is_named(paths):
    from stargal.integrity import verify_data_folder
    from stargal.stages.report import tuning_section

    name = run_tuning(paths, trials=1, workers=1, **FAST)["name"]
    record = fsio.check_seal(paths.tuning_record(name), [paths.best_config(name), paths.trials_csv(name)])
    assert record.ok, record.describe()
    assert fsio.check_seal(paths.reports("tuning", name, "tuning.json")).ok
    assert verify_data_folder(paths)[0] == []
    run = SimpleNamespace(paths=paths, dataset_name="toy", dataset_id=dataset_identity(paths, "toy"))
    assert tuning_section(run).ran and len(tuning_section(run).blocks) >= 3  # intro, trials table, figure
    best = json.loads(paths.best_config(name).read_text())
    paths.best_config(name).write_text(json.dumps({**best, "architecture": "stargal"}))
    findings = verify_data_folder(paths)[0]
    assert [(f.path, f.redo.split()[:3]) for f in findings] == [(paths.best_config(name), ["tune.py", "--name", name])]
    assert not tuning_section(run).ran  # the PDF report leaves an edited study out

    paths.study_db(name).write_bytes(b"not a database" * 100)
    with pytest.raises(StargalError, match=f"{paths.study_db(name)}: cannot read the study .*--force starts it over"):
        run_tuning(paths, trials=1, workers=1, **FAST)
    run_tuning(paths, trials=1, workers=1, force=True, **FAST)  # what the error advises: a new study
    assert len(load(paths, name).trials) == 1
    assert verify_data_folder(paths)[0] == []


def test_pruned_trial_stops_early(paths):
    from stargal.stages.tuning import load_data
    from stargal.tune import train_trial

    spec = {
        "data_dir": str(paths.root),
        "dataset": "toy",
        "seed": 1,
        "architecture": "reference_base",
        "epochs": 5,
        "patience": 5,
    }
    # a pruner that prunes any trial whose validation loss is above 0: the first report stops training
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned):
        train_trial(trial, load_data(spec), spec)
    assert trial.user_attrs["epochs"] == 1


def test_stratified_subset():
    from stargal.tune import stratified_subset

    y = np.array([0] * 700 + [1] * 300)
    keep = stratified_subset(y, 100, seed=0)
    assert len(keep) == 100 and y[keep].sum() == 30 and np.all(np.diff(keep) > 0)


def test_an_unknown_augmentation_is_refused_before_a_study_is_created(tmp_path):
    import subprocess
    import sys

    from stargal.paths import PROJECT_ROOT

    run = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "code" / "tune.py"), "--data-dir", str(tmp_path / "d"), "--augment", "foo"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "argument --augment: invalid choice: 'foo'" in run.stderr
    assert not (tmp_path / "d").exists()
    # trials run on local processes only: a Dask scheduler is refused, not ignored
    run = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "code" / "tune.py"), "--data-dir", str(tmp_path / "d"), "--scheduler", "x"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "unrecognized arguments: --scheduler x" in run.stderr


def test_study_name_and_max_train_are_checked_in_one_line(tmp_path):
    import subprocess
    import sys

    from stargal.paths import PROJECT_ROOT

    tune = str(PROJECT_ROOT / "code" / "tune.py")
    for args, words in (
        (["--name", "../escaped"], "--name '../escaped': use letters, digits"),
        (["--name", str(tmp_path / "abs")], "--name '" + str(tmp_path / "abs") + "': use letters, digits"),
        (["--max-train", "-5"], "argument --max-train: must be 0 or more: '-5'"),
    ):
        run = subprocess.run([sys.executable, tune, "--data-dir", str(tmp_path / "d"), *args],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert run.returncode != 0 and words in run.stderr.strip().splitlines()[-1], run.stderr  # (after usage)
        assert not (tmp_path / "d").exists() and not (tmp_path / "abs").exists()
    with pytest.raises(StargalError, match="--max-train -5: must be 0"):
        run_tuning(DataPaths(tmp_path / "d"), max_train=-5)


def test_a_validation_split_of_one_class_is_refused_before_any_trial(paths):
    """A dataset 02 built before it refused one-class splits: 03 refused its val split of one class, tune.py ran the
    study on it and recorded sklearn's 0.0 as every trial's validation MCC (metrics.json records null there). Now
    tune.py refuses it in one line, as 03 does, before the study is made."""
    x = np.load(paths.split_x("toy", "val"))
    save_npy(paths.split_y("toy", "val"), np.zeros(len(x), np.uint8))  # galaxies only
    meta = {k: v for k, v in fsio.read_json(paths.dataset_json("toy")).items() if k != fsio.INTEGRITY_KEY}
    files = [f("toy", s) for s in ("train", "val") for f in (paths.split_x, paths.split_y, paths.split_psf)]
    fsio.seal(paths.dataset_json("toy"), files, meta)
    before = set(paths.root.rglob("*"))
    proc = start_tune_py(paths, "--trials", "1", "--workers", "1", "--epochs", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    assert err.strip().splitlines() == [
        f"tune.py: error: dataset toy: its val split holds one class only ({len(x)} galaxies): a model trained on it "
        "calls everything that class; 02_preparation.py says why and what to fetch"
    ], err
    made = {p for p in set(paths.root.rglob("*")) - before if p.name not in (".lock", ".publish.lock")}
    assert not made  # no study, no trials table


def test_an_empty_validation_split_is_refused_before_the_study_is_made(paths):
    """An empty val split passed the checks: the study (study.db) was made, and the run failed only once a worker
    loaded the data. Now it is refused in one line naming the split's file, and nothing is written."""
    empty = np.zeros(0, np.uint8)
    save_npy(paths.split_y("toy", "val"), empty)
    save_npy(paths.split_x("toy", "val"), np.zeros((0, P, P, 5), np.float32))
    save_npy(paths.split_psf("toy", "val"), np.zeros((0, 5), np.float32))
    meta = {k: v for k, v in fsio.read_json(paths.dataset_json("toy")).items() if k != fsio.INTEGRITY_KEY}
    files = [f("toy", s) for s in ("train", "val") for f in (paths.split_x, paths.split_y, paths.split_psf)]
    fsio.seal(paths.dataset_json("toy"), files, meta)
    with pytest.raises(StargalError, match=rf"{paths.split_y('toy', 'val')}: the val split of dataset toy is empty"):
        run_tuning(paths, trials=1, workers=1, **FAST)
    assert not paths.study_db("toy_reference_base").exists()
