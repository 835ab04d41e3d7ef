"""run_scripts.sh and its engine stargal.pipeline: order, pass-through, failures, measurements, end to end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "download": "00_download.py",
    "alignment": "01_alignment.py",
    "preparation": "02_preparation.py",
    "augmentation": "04_augmentation.py",
    "model": "03_model.py",
    "explain": "explain.py",
    "report": "make_report.py",
}
ORDER = ["download", "alignment", "preparation", "augmentation", "model", "explain", "report"]


def _stand_in(folder: Path, stage: str, *, options: tuple[str, ...] = (), body: str = "") -> None:
    """A stage script that logs its arguments; ``options`` are the extra options it accepts."""
    extra = "\n".join(f"p.add_argument({o!r}, nargs='*')" for o in options)
    code = textwrap.dedent(
        """\
        import argparse, sys
        p = argparse.ArgumentParser()
        for o in ("--data-dir", "--workers", "--seed", "--fields"):
            p.add_argument(o, nargs="*")
        p.add_argument("-q", "--quiet", action="store_true")
        p.add_argument("--force", action="store_true")
        {extra}
        a = p.parse_args()
        with open(a.data_dir[0] + "/calls.log", "a") as fh:
            fh.write({stage!r} + " " + " ".join(sys.argv[1:]) + "\\n")
        {body}
        """
    ).format(extra=extra, stage=stage, body=body)
    (folder / SCRIPTS[stage]).write_text(code)


def _stand_ins(folder: Path, skip: tuple[str, ...] = (), **bodies: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    accepts = {"download": ("--source", "--sim-shape"), "model": ("--epochs",), "augmentation": ("--epochs",)}
    for stage in ORDER:
        if stage not in skip:
            _stand_in(folder, stage, options=accepts.get(stage, ()), body=bodies.get(stage, ""))
    return folder


def _run(stage_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, STARGAL_STAGE_DIR=str(stage_dir))
    cmd = [sys.executable, "-m", "stargal.pipeline", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _calls(data: Path) -> list[list[str]]:
    return [line.split() for line in (data / "calls.log").read_text().splitlines()]


def _record(data: Path) -> dict:
    return json.loads((data / "reports" / "pipeline" / "stages.json").read_text())


def test_stages_run_in_the_reference_order_with_each_option_going_where_it_is_accepted(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = _run(_stand_ins(tmp_path / "code"), "--demo", "--small", "--data-dir", str(data), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    calls = _calls(data)
    assert [c[0] for c in calls] == ORDER
    download = " ".join(calls[0][1:])
    assert "--source simulated" in download and "--sim-shape 600 800" in download
    assert "--fields 80 81 82 83" in download and "--workers 2" in download
    assert "--epochs 6" in " ".join(calls[4]) and "--epochs" not in " ".join(calls[1])
    assert all("--data-dir " + str(data) in " ".join(c) for c in calls)
    record = _record(data)
    assert [s["status"] for s in record["stages"]] == ["ok"] * len(ORDER)
    assert all(s["seconds"] > 0 and s["peak_rss_mb"] > 1 for s in record["stages"])
    table = proc.stdout
    for stage in ORDER:
        assert f"{stage} " in table
    assert "peak RSS MB" in table and "total" in table
    assert "copied to" not in table  # a --small run never replaces the committed report


def test_split_options_no_selected_stage_takes_are_refused_not_dropped(tmp_path):
    """--stages model --train-fields 83 ran 03 without it: "model is current" with the model of the earlier splits
    (80 and 83), exit 0. The splits are 02's: with no selected stage taking them the run is refused."""
    data = tmp_path / "data"
    data.mkdir()
    stages = _stand_ins(tmp_path / "code", skip=("preparation",))
    _stand_in(stages, "preparation", options=("--train-fields",))
    proc = _run(stages, "--stages", "model", "--data-dir", str(data), "--train-fields", "83")
    assert proc.returncode == 2 and "--train-fields: no selected stage takes it (--stages model)" in proc.stderr
    assert not (data / "calls.log").exists()  # nothing ran
    proc = _run(stages, "--stages", "preparation", "model", "--data-dir", str(data), "--train-fields", "83")
    assert proc.returncode == 0, proc.stderr
    calls = [" ".join(c) for c in _calls(data)]
    assert calls[0].startswith("preparation ") and "--train-fields 83" in calls[0]
    assert calls[1].startswith("model ") and "--train-fields" not in calls[1]  # where it is taken, only there


def test_the_first_failing_stage_stops_the_run_and_is_named(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    stages = _stand_ins(tmp_path / "code", preparation="sys.exit(3)")
    proc = _run(stages, "--data-dir", str(data))
    assert proc.returncode == 1
    assert "stage preparation (02_preparation.py) failed with exit status 3" in proc.stderr
    assert [c[0] for c in _calls(data)] == ["download", "alignment", "preparation"]
    statuses = {s["stage"]: s["status"] for s in _record(data)["stages"]}
    assert statuses == {"download": "ok", "alignment": "ok", "preparation": "failed", "augmentation": "skipped",
                        "model": "skipped", "explain": "skipped", "report": "skipped"}  # fmt: skip


def _start_runner(stage_dir: Path, data: Path) -> subprocess.Popen:
    """The runner in a process group of its own (as a batch job's), its output captured."""
    env = dict(os.environ, STARGAL_STAGE_DIR=str(stage_dir))
    return subprocess.Popen([sys.executable, "-m", "stargal.pipeline", "--data-dir", str(data)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def _wait_for(ready, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _stage_process(runner: psutil.Process, stage: str) -> psutil.Process | None:
    """The runner's child that runs ``stage`` (not the runner's ``--help`` of it), once it runs the script."""
    for child in runner.children():
        with contextlib.suppress(psutil.Error):
            cmd = child.cmdline()
            if len(cmd) > 2 and Path(cmd[1]).name == SCRIPTS[stage] and cmd[2] == "--data-dir":
                return child
    return None


def test_sigterm_reaches_the_running_stage_and_the_run_stops(tmp_path):
    """SIGTERM to the runner alone (a batch system, timeout, docker stop): the running stage gets it too, rather
    than run on holding the data folder, and the record says where the run stopped and how long the stage ran
    (it said 0.0 s)."""
    data = tmp_path / "data"
    data.mkdir()
    waits = (
        "import pathlib, signal, time\n"
        + "pathlib.Path(a.data_dir[0], 'started').touch()\n"
        + (
            "signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path(a.data_dir[0], 'got-sigterm').touch(), sys.exit(143)))"
            "\ntime.sleep(60)"
        )
    )
    proc = _start_runner(_stand_ins(tmp_path / "code", preparation=waits), data)
    _wait_for((data / "started").exists, "the stage to start", timeout=120)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "run_scripts: terminated during stage preparation" in err, err
    assert (data / "got-sigterm").exists()
    stages = {s["stage"]: s for s in _record(data)["stages"]}
    assert stages["preparation"]["status"] == "interrupted" and stages["model"]["status"] == "skipped"
    assert stages["preparation"]["exit_code"] == 143
    assert 1.0 <= stages["preparation"]["seconds"] < 30
    row = next(line.split() for line in out.splitlines() if line.startswith("preparation "))
    assert row[2] == "interrupted" and float(row[3]) >= 1.0, out  # the table's wall time, not 0.0 s


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("receiver", ["runner", "stage", "group"])
def test_a_stage_stopped_while_python_starts_is_reported_stopped_not_failed(tmp_path, receiver, signum):
    """The signal comes in a stage's first moments, before a script's ``cli.run_main`` has installed its handler,
    so the stage dies of it (return code -15 or -2) without a word. Whichever process received it (the runner,
    which passes it on; the stage alone; the whole process group, as a batch system sends it), the runner says
    in one line that the run was stopped during that stage, records it interrupted and stops with 143 or 130.
    It said "failed with exit status -15", or (the group) died of a ChildProcessError with no record."""
    data = tmp_path / "data"
    data.mkdir()
    # the stand-in keeps Python's own dispositions: dies of SIGTERM, and of SIGINT once KeyboardInterrupt is out
    stages = _stand_ins(tmp_path / "code", preparation="import time\ntime.sleep(60)")
    proc = _start_runner(stages, data)
    runner = psutil.Process(proc.pid)

    _wait_for(lambda: _stage_process(runner, "preparation") is not None, "stage preparation to start", timeout=120)
    if receiver == "stage":
        # past the interpreter's own start-up, which a SIGINT ends with "Fatal Python error: init_import_site" and
        # status 1: the runner, not signalled itself, cannot tell that from a failure (the stand-in's first line is
        # the log of its call)
        _wait_for(lambda: _calls(data)[-1][0] == "preparation", "stage preparation to run its code", timeout=120)
    if receiver == "runner":
        proc.send_signal(signum)
    elif receiver == "stage":
        _stage_process(runner, "preparation").send_signal(signum)
    else:
        os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=30)
    how = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert proc.returncode == 128 + signum, err
    assert f"run_scripts: {how} during stage preparation\n" in err and "failed with exit status" not in err, err
    assert "ChildProcessError" not in err
    record = _record(data)
    stages = {s["stage"]: s for s in record["stages"]}
    assert stages["preparation"]["status"] == "interrupted" and stages["preparation"]["exit_code"] in (-signum, 1)
    assert stages["preparation"]["seconds"] > 0 and stages["augmentation"]["status"] == "skipped"
    assert record["status"] == 128 + signum
    assert [c[0] for c in _calls(data)][-1] in ("alignment", "preparation")  # nothing ran after it


def test_a_missing_stage_is_named_and_the_others_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = _run(_stand_ins(tmp_path / "code", skip=("augmentation",)), "--data-dir", str(data), "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert "04_augmentation.py does not exist yet" in proc.stderr
    assert "not yet written, skipped: 04_augmentation.py" in proc.stdout
    assert [c[0] for c in _calls(data)] == ["download", "alignment", "preparation", "model", "explain"]


def test_a_stage_whose_help_fails_is_named_and_nothing_runs(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    stages = _stand_ins(tmp_path / "code")
    (stages / SCRIPTS["model"]).write_text("import sys\nsys.exit('cannot import tensorflow')\n")
    proc = _run(stages, "--data-dir", str(data))
    assert proc.returncode == 1
    assert "stage model (03_model.py) is broken" in proc.stderr and "cannot import tensorflow" in proc.stderr
    assert not (data / "calls.log").exists()


def test_an_option_no_stage_accepts_is_an_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = _run(_stand_ins(tmp_path / "code"), "--data-dir", str(data), "--epoch", "3")
    assert proc.returncode == 2
    assert "no stage accepts --epoch" in proc.stderr
    assert not (data / "calls.log").exists()


def test_a_bad_option_value_is_refused_before_any_stage_runs(tmp_path):
    """--epochs abc was refused only when 03 started, after download, alignment and preparation had run (and exit 1
    for a stray word): every stage given a value checks it first, and bad input is exit status 2."""
    data = tmp_path / "data"
    data.mkdir()
    stages = _stand_ins(tmp_path / "code")
    model = stages / SCRIPTS["model"]
    model.write_text(model.read_text().replace("'--epochs', nargs='*'", "'--epochs', type=int"))
    proc = _run(stages, "--data-dir", str(data), "--workers", "2", "--epochs", "abc")
    assert proc.returncode == 2, proc.stderr
    assert (
        "run_scripts: error: 03_model.py: argument --epochs: invalid int value: 'abc'; no stage was run" in proc.stderr
    )
    assert not (data / "calls.log").exists()
    proc = _run(stages, "--data-dir", str(data), "--epochs")  # an option its stage needs a value for
    assert proc.returncode == 2 and "03_model.py: argument --epochs: expected one argument" in proc.stderr
    proc = _run(stages, "foo", "--data-dir", str(data), "--epochs", "3")
    assert proc.returncode == 2 and "unexpected argument 'foo'" in proc.stderr
    assert not (data / "calls.log").exists()
    proc = _run(stages, "--data-dir", str(data), "--epochs", "3")
    assert proc.returncode == 0, proc.stderr
    assert [c for c in _calls(data) if c[0] == "model"] == [["model", "--data-dir", str(data), "--epochs", "3"]]


def test_a_data_folder_a_stage_refused_as_missing_stays_missing(tmp_path):
    """The runner wrote its stage table into the folder 01 had just refused as missing, creating it: a second run
    then met an empty folder instead of the same clear error."""
    missing = tmp_path / "none"
    proc = _run(_stand_ins(tmp_path / "code"), "--no-download", "--data-dir", str(missing))
    assert proc.returncode == 1 and "stage alignment (01_alignment.py) failed" in proc.stderr
    assert not missing.exists()


def test_small_without_a_simulated_sky_to_download_is_an_error_naming_small(tmp_path):
    """--small without --demo failed in stage 00 on "--sim-shape: only with --source simulated", never typed."""
    data = tmp_path / "data"
    data.mkdir()
    stages = _stand_ins(tmp_path / "code")
    proc = _run(stages, "--small", "--data-dir", str(data))
    assert proc.returncode == 2 and "--small runs a tiny simulated sky: give --demo too" in proc.stderr
    assert not (data / "calls.log").exists()
    assert _run(stages, "--small", "--no-download", "--data-dir", str(data)).returncode == 0
    assert _calls(data)[0][0] == "alignment"


def test_no_download_and_stage_selection(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    stages = _stand_ins(tmp_path / "code")
    assert _run(stages, "--no-download", "--no-explain", "--no-report", "--data-dir", str(data)).returncode == 0
    assert [c[0] for c in _calls(data)] == ["alignment", "preparation", "augmentation", "model"]
    (data / "calls.log").unlink()
    assert _run(stages, "--stages", "model", "alignment", "--data-dir", str(data)).returncode == 0
    assert [c[0] for c in _calls(data)] == ["alignment", "model"]


@pytest.mark.slow
def test_peak_memory_covers_the_stage_and_its_worker_processes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    # the model stand-in holds ~300 MB itself; the alignment stand-in's worker process holds ~200 MB
    hold = "import numpy as np, time; a = np.ones({mb} * 2**20 // 8); time.sleep(0.8)"
    worker = f"import subprocess; subprocess.run([sys.executable, '-c', {hold.format(mb=200)!r}], check=True)"
    stages = _stand_ins(tmp_path / "code", model=hold.format(mb=300), alignment=worker)
    proc = _run(stages, "--stages", "download", "alignment", "model", "--data-dir", str(data))
    assert proc.returncode == 0, proc.stderr
    peaks = {s["stage"]: s for s in _record(data)["stages"]}
    assert peaks["model"]["peak_rss_mb"] >= 300
    assert peaks["alignment"]["peak_rss_mb"] >= 200
    assert peaks["download"]["peak_rss_mb"] < 150
    assert peaks["model"]["peak_tree_mb"] >= 250  # sampled, so allow for a missed moment


def test_run_scripts_sh_shows_the_runner_help():
    proc = subprocess.run([str(ROOT / "run_scripts.sh"), "--help"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: run_scripts.sh") and "--demo" in proc.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("quick_start")  # one worker, one clone: the fixture is per worker
def test_demo_pipeline_end_to_end_and_a_rerun_redoes_nothing(quick_start):
    """The project's end-to-end test: ./run_scripts.sh --demo --small on a tiny sky in a fresh clone (the shared
    quick start, which the README-commands test continues in the same clone), then again."""
    first = quick_start.first_run
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    data = quick_start.clone / "data"
    record = quick_start.first_record
    assert {s["stage"]: s["status"] for s in record["stages"]} == dict.fromkeys(ORDER, "ok")
    # the data the stages handed on: four fields' cubes, a dataset whose splits the model was scored on
    assert len(list((data / "aligned").rglob("cube-008162-6-*.fits"))) == 4  # the README adds a real field
    dataset = json.loads(
        (data / "datasets" / (data / "datasets" / "LATEST").read_text().strip() / "dataset.json").read_text()
    )
    counts = dataset["counts"]
    # the tiny sky (four 600 x 800 frames of the simulated sky, realistic galaxy counts): ~370 patches in all
    assert dataset["simulated"] is True and counts["train"]["n"] > 80
    assert all(counts[s]["n"] > 25 and 0 < counts[s]["stars"] < counts[s]["n"] for s in ("val", "test"))
    model = (data / "models" / "LATEST").read_text().strip()
    metrics = json.loads((data / "models" / model / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        m = metrics[split]
        assert m["n"] == counts[split]["n"] and m["stars"] == counts[split]["stars"]
        assert sum(map(sum, m["confusion_matrix"])) == m["n"]
        assert 0 <= m["accuracy"] <= 1 and -1 <= m["mcc"] <= 1 and 0 <= m["roc_auc"] <= 1 and m["log_loss"] > 0
        assert sum(row["n"] for row in metrics["by_magnitude"][split]) == m["n"]
    assert 0 < metrics["threshold"] < 1 and metrics["tta"] is True
    assert metrics["test"]["roc_auc"] > 0.55  # six epochs on ~200 patches (~80 to test): weak, but better than chance
    experiment = json.loads((data / "reports" / "augmentation" / "experiment.json").read_text())
    assert [r["policy"] for r in experiment["rows"]] == ["none", "rotation", "reflection", "brightness", "blur",
                                                         "combination"]  # fmt: skip
    explained = json.loads((data / "reports" / "explain" / model / "explain.json").read_text())["result"]
    assert sum(explained["counts"].values()) > 0
    assert (data / "reports" / "report.pdf").read_bytes().startswith(b"%PDF")
    assert len(list((data / "reports").rglob("*.png"))) >= 10
    # the report of this tiny run: the headline table on page 1, this run's stage times, at most 10 pages
    pages = quick_start.first_report_pages
    assert 4 <= len(pages) <= 10
    assert "Table 1." in pages[0] and "stargal CNN (ours)" in pages[0] and "majority class baseline" in pages[0]
    assert f"{metrics['test']['accuracy']:.3f}" in pages[0] and "--demo --small" in pages[0]
    text = "\n".join(pages)
    assert "Hyper-parameter tuning:" in text and "Real-sky evaluation:" in text  # one line each: not run
    assert "11. Run time and memory" in text and "04_augmentation.py" in text and "running" in text
    # The rerun: every stage finds its outputs current (verified against their records) and writes nothing;
    # only the stage table changes (and the lock, which names its holder); the report keeps the table of the run
    # that made what it reports, so a current run on a read-only data folder succeeds.
    outputs = [p for p in data.rglob("*") if p.is_file() and p.name != ".lock"]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    script = str(quick_start.clone / "run_scripts.sh")
    cmd = [script, "--demo", "--small", "--data-dir", str(data), "--workers", "2", "-q"]
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=data.parent.parent,
                            env=quick_start.env)  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    changed = sorted(str(p.relative_to(data)) for p, t in before.items() if p.stat().st_mtime_ns != t)
    assert changed == ["reports/pipeline/stages.json"]
    seconds = {s["stage"]: s["seconds"] for s in _record(data)["stages"]}
    first_seconds = {s["stage"]: s["seconds"] for s in record["stages"]}
    for stage in ("download", "augmentation", "model", "explain"):
        assert seconds[stage] < first_seconds[stage], stage


@pytest.mark.parametrize(
    ("extra", "copied"),
    [((), True), (("--workers", "2", "--seed", "42"), True), (("--small",), False), (("--fields", "80"), False)],
)
def test_the_reference_size_demo_copies_its_report_to_the_top_level(tmp_path, monkeypatch, capsys, extra, copied):
    """Only ``--demo`` on the reference-size sky (options that change nothing but speed or the seed) replaces the
    project's top-level report.pdf; any other run leaves its report in the data folder."""
    from stargal import pipeline

    data = tmp_path / "data"
    data.mkdir()
    report = "import pathlib; p = pathlib.Path(a.data_dir[0]) / 'reports'; p.mkdir(exist_ok=True); "
    report += "(p / 'report.pdf').write_bytes(b'%PDF-1.4 stand-in')"
    monkeypatch.setattr(pipeline, "STAGE_DIR", _stand_ins(tmp_path / "code", report=report))
    monkeypatch.setattr(pipeline, "PROJECT_ROOT", tmp_path / "project")
    (tmp_path / "project").mkdir()
    status = pipeline.main(["--demo", "--data-dir", str(data), "--stages", "report", *extra])
    assert status == 0
    top = tmp_path / "project" / "report.pdf"
    assert top.exists() == copied
    if copied:
        assert top.read_bytes() == (data / "reports" / "report.pdf").read_bytes()
        assert f"copied to {top}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--stages", "explain", "--no-explain"], "--no-explain with --stages explain: --stages names the stages"),
        (["--stages", "report", "--no-report"], "--no-report with --stages report"),
        (["--stages", "download", "--no-download"], "--no-download with --stages download"),
        (
            ["--stages", "model", "--tune"],
            "--tune with --stages model: --stages names the stages to run; add tune there",
        ),
        (["--python", "/nonexistent/python3"], "--python /nonexistent/python3: no such program"),
    ],
)
def test_runner_flags_that_contradict_stages_or_name_no_python_are_refused(argv, words, capsys):
    """--stages silently overrode --no-explain and --no-report, and dropped --tune; a missing --python gave a
    traceback."""
    from stargal import pipeline

    with pytest.raises(SystemExit) as exit_info:
        pipeline.parse_args(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err
    args, _ = pipeline.parse_args(["--stages", "model", "tune", "--tune"])
    assert [s.name for s in pipeline.selected_stages(args)] == ["tune", "model"]


def test_run_scripts_no_download_sh_names_itself_not_the_flag_it_adds():
    """The wrapper adds --no-download: "--no-download with --stages download" named a flag the user never typed."""
    proc = subprocess.run([str(ROOT / "run_scripts_no_download.sh"), "--stages", "download", "alignment"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "run_scripts_no_download.sh: error: --stages download alignment: run_scripts_no_download.sh never downloads; "
        "drop download there, or run ./run_scripts.sh"
    )


def test_two_runs_on_one_folder_take_turns_for_the_whole_run_not_stage_by_stage(tmp_path):
    """Two runs on one folder took turns stage by stage: run B's 02 (other splits) got in between run A's 02 and 03,
    and A's 03 trained on B's dataset, or skipped as current on it (exit 0, reported as A's). A run now holds the
    folder for all its stages, which take the lock it hands them (each stand-in locks the folder as a stage does:
    a lock not handed on would wait forever)."""
    data = tmp_path / "data"
    data.mkdir()
    locks = "from stargal import fsio, cli; fsio.lock_folder(a.data_dir[0] + '/.lock'); import time; time.sleep(0.5)"
    stages = _stand_ins(tmp_path / "code", preparation=locks, model=locks)
    env = dict(os.environ, STARGAL_STAGE_DIR=str(stages))
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stargal.pipeline",
                "--stages",
                "preparation",
                "model",
                "--no-explain",
                "--no-report",
                "--data-dir",
                str(data),
                "--seed",
                seed,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for seed in ("1", "2")
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    order = [(call[0], call[call.index("--seed") + 1]) for call in _calls(data)]
    first, second = order[0][1], order[2][1]
    assert order == [("preparation", first), ("model", first), ("preparation", second), ("model", second)]
    assert any("is in use (pid" in err and "waiting for it to finish" in err for _, err in outputs)


def test_a_stage_table_that_cannot_be_recorded_is_said_once(tmp_path):
    """On a read-only data folder the runner said "could not record the stage table" twice (the table is written
    before the report stage and again at the end); the README promises one warning."""
    data = tmp_path / "data"
    (data / "reports" / "pipeline" / "stages.json").mkdir(parents=True)  # cannot be written, as on a read-only folder
    proc = _run(_stand_ins(tmp_path / "code"), "--data-dir", str(data))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("could not record the stage table") == 1, proc.stderr


def test_verify_waits_for_a_predict_writing_in_the_folder_instead_of_calling_its_file_a_leftover(tmp_path):
    """--verify took the temporary file of a predict.py writing its default output (predictions/) at that moment for
    one "left by an interrupted run" and exited 1, on a folder where nothing was wrong."""
    from stargal import fsio, pipeline
    from stargal.paths import DataPaths

    paths = DataPaths.at(tmp_path / "data")
    writing = paths.root / "predictions" / ".field.csv.0123456789ab.part"
    writing.parent.mkdir(parents=True)
    writing.write_text("half a table")
    code = (
        "import sys; from stargal import fsio; fsio.lock_folder(sys.argv[1], shared=True); "
        "print('locked', flush=True); sys.stdin.readline(); __import__('os').unlink(sys.argv[2])"
    )
    reader = subprocess.Popen([sys.executable, "-c", code, str(paths.publish_lock), str(writing)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert reader.stdout.readline().strip() == "locked"
        status = []
        verifying = threading.Thread(target=lambda: status.append(pipeline.verify(paths, [])), daemon=True)
        verifying.start()
        verifying.join(1.0)
        assert not status  # waits for predict to finish writing
        reader.communicate("\n", timeout=30)  # its file renamed into place (here: gone)
        verifying.join(30)
        assert status == [0]
    finally:
        fsio.release_folder_locks()
        reader.kill()
        reader.wait()


def test_a_data_folder_given_after_the_double_dash_is_the_runners_too(tmp_path, monkeypatch):
    """``run_scripts.sh --demo -- --data-dir X`` (the documented "-- options for every stage") gave X to the stages
    only: the runner locked, recorded the stage table in and copied report.pdf from the project's data/, exit 0."""
    from stargal import fsio, pipeline

    data = tmp_path / "data"
    data.mkdir()
    body = "import os; open(a.data_dir[0] + '/handed.txt', 'w').write(os.environ.get('STARGAL_HANDED_LOCK', ''))"
    monkeypatch.setattr(pipeline, "STAGE_DIR", _stand_ins(tmp_path / "code", alignment=body))
    try:
        assert pipeline.main(["--stages", "alignment", "--", "--data-dir", str(data)]) == 0
        assert _record(data)["stages"][0]["status"] == "ok"  # the stage table is where the stages wrote
        assert (data / "handed.txt").read_text().endswith(":" + str(data / ".lock"))  # the folder the runner holds
        assert _calls(data)[0].count("--data-dir") == 1
        other = f"--data-dir={tmp_path / 'other'}"
        assert pipeline.main(["--stages", "alignment", "--data-dir", str(data), "--", other]) == 2
        assert pipeline.main(["--verify", "--", "--data-dir", str(data)]) == 0
    finally:
        fsio.release_folder_locks()
