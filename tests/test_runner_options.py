"""run_scripts.sh (stargal.pipeline): the up-front check of the options it hands the stages, a SIGTERM to the whole
process group, and errors naming options the runner added (--small's presets)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stargal import cli

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT / "code"
# every script the runner starts (and predict.py, which shares the parser)
SCRIPTS = ["00_download.py", "01_alignment.py", "02_preparation.py", "04_augmentation.py", "03_model.py", "tune.py",
           "explain.py", "make_report.py", "predict.py"]  # fmt: skip


def _refused_before_any_stage(base: list[str], cases: list[tuple[list[str], str]]) -> None:
    """Each case (its options after ``base``, the start of its error) ends the runner with exit status 2, that
    error as its last line, and no stage run."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda case: _runner(*base, *case[0]), cases))
    for (argv, words), proc in zip(cases, procs, strict=True):
        assert proc.returncode == 2, (argv, proc.stderr)
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"run_scripts: error: {words}") and last.endswith("; no stage was run"), (argv, last)
        assert "==> stage" not in proc.stderr


def _runner(*args: str, env: dict[str, str] | None = None, wrapper: str = "run_scripts.sh"):
    return subprocess.run([str(ROOT / wrapper), *args], capture_output=True, text=True, timeout=600,
                          env=env)  # fmt: skip


def test_a_stray_word_after_an_option_is_refused_before_any_stage_runs(tmp_path):
    """``--sim-shape 60 80 foo``: the check ran each stage with ``--help`` last, so argparse stopped at --help before
    it reached "unrecognized arguments"; the stage refused the word only when it started, after the stages before it
    had run. Now the check parses the whole line (exit status 2, nothing run, no folder made), and still catches what
    it caught (a bad choice, a missing value)."""
    data = tmp_path / "data"
    base = ["--demo", "--stages", "download", "--no-publish", "--data-dir", str(data)]
    cases = [
        (["--sim-shape", "60", "80", "foo"], "00_download.py: unrecognized arguments: foo"),
        (["--fields", "80", "--force", "bar"], "00_download.py: unrecognized arguments: bar"),
        (["--sim-shape", "60"], "00_download.py: argument --sim-shape: expected 2 arguments"),
        (["--sim-seeing", "sometimes"], "00_download.py: argument --sim-seeing: invalid choice: 'sometimes'"),
    ]
    _refused_before_any_stage(base, cases)
    assert not data.exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_stage_script_parses_its_whole_line_in_the_check_and_does_no_work(tmp_path, script):
    """In the runner's check (``cli.PARSE_ONLY_ENV`` and --help last) each script's parser refuses a stray word
    (exit status 2) and otherwise exits 0 at once: no help printed, no data folder made, no work."""
    data = tmp_path / "data"
    env = dict(os.environ, **{cli.PARSE_ONLY_ENV: "1"})
    cmd = [sys.executable, str(CODE / script), "--data-dir", str(data), "--force"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        stray, good = pool.map(
            lambda extra: subprocess.run(cmd + extra, capture_output=True, text=True, env=env, timeout=300),
            [["stray", "--help"], ["--help"]],
        )
    assert stray.returncode == 2 and f"{script}: error: unrecognized arguments: stray" in stray.stderr, stray.stderr
    assert good.returncode == 0, good.stderr
    assert good.stdout == "" and "usage:" not in good.stderr
    assert not data.exists()


# A stage that holds a half-written file when SIGTERM comes, and takes a moment to unwind (a worker pool stopping):
# the test sends SIGTERM to the whole group again while it unwinds, as the runner's passing it on can land.
_UNWINDING_STAGE = textwrap.dedent(
    """\
    import argparse, pathlib, sys, time
    from stargal import cli, fsio

    def main(argv):
        p = argparse.ArgumentParser()
        for o in ("--data-dir", "--workers", "--seed", "--fields"):
            p.add_argument(o, nargs="*")
        p.add_argument("-q", "--quiet", action="store_true")
        p.add_argument("--force", action="store_true")
        a = p.parse_args(argv)
        data = pathlib.Path(a.data_dir[0])
        with open(data / "calls.log", "a") as fh:
            fh.write(pathlib.Path(sys.argv[0]).name + "\\n")
        if pathlib.Path(sys.argv[0]).name != "02_preparation.py":
            return 0
        with fsio.atomic_path(data / "dataset.bin") as tmp:
            tmp.write_bytes(b"half a dataset")
            try:
                (data / "writing").touch()
                time.sleep(60)
            finally:
                (data / "unwinding").touch()
                time.sleep(1.5)

    cli.run_main(main)
    """
)


def test_a_sigterm_to_the_group_that_reaches_a_stage_twice_still_ends_it_with_its_own_line(tmp_path):
    """SIGTERM to the whole process group (``timeout``, slurm) reaches a stage twice: from the group, and passed on
    by the runner. If the second came after the stage's handler had run, it ended the stage at once (-15): no
    "terminated" line, its half-written file left behind. Sent here twice to the group, the second while the stage
    unwinds from the first (deterministic): the stage says "terminated", removes its temporary file, ends 143, and
    the runner reports the run terminated during it, exit status 143."""
    data = tmp_path / "data"
    data.mkdir()
    stages = tmp_path / "code"
    stages.mkdir()
    for script in ("00_download.py", "01_alignment.py", "02_preparation.py", "04_augmentation.py", "03_model.py"):
        (stages / script).write_text(_UNWINDING_STAGE)
    env = dict(os.environ, STARGAL_STAGE_DIR=str(stages))
    cmd = [sys.executable, "-m", "stargal.pipeline", "--data-dir", str(data), "--no-explain", "--no-report"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _wait_for(lambda: (data / "writing").exists(), "the stage to write")
        os.killpg(proc.pid, signal.SIGTERM)
        _wait_for(lambda: (data / "unwinding").exists(), "the stage to unwind")
        os.killpg(proc.pid, signal.SIGTERM)  # again, while it unwinds: the runner's passing on, late
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "02_preparation.py: terminated\n" in err, err
    assert proc.returncode == 143, err
    assert "run_scripts: terminated during stage preparation\n" in err
    assert not list(data.glob(".dataset.bin.*")) and not (data / "dataset.bin").exists()
    row = next(line.split() for line in out.splitlines() if line.startswith("preparation "))
    assert row[2] == "interrupted"
    stages_record = {s["stage"]: s for s in json.loads((data / "reports/pipeline/stages.json").read_text())["stages"]}
    assert stages_record["preparation"]["exit_code"] == 143 and stages_record["model"]["status"] == "skipped"


def _wait_for(ready, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_small_presets_that_do_not_fit_the_users_fields_are_refused_before_any_stage_runs(tmp_path):
    """``--demo --small --fields 80 103``: download and alignment ran, then 02 said "--train-fields: field 83 is not
    among --fields", an option the user never typed (--small's preset 80 83). The runner now says so first, naming
    which list is the user's and which --small's."""
    data = tmp_path / "data"
    base = ["--demo", "--small", "--stages", "download", "preparation", "--data-dir", str(data)]
    cases = [
        (["--fields", "80", "103"], "--small: --train-fields 80 83 (--small's preset) holds field 83, which --fields "
         "80 103 (yours) does not; give --fields, --train-fields, --val-fields and --test-fields all yourself, or "
         "leave them all to --small; no stage was run"),
        (["--train-fields", "81"], "--small: --train-fields 81 (yours) and --test-fields 81 (--small's preset) both "
         "hold field 81;"),
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda case: _runner(*base, *case[0]), cases))
    for (argv, words), proc in zip(cases, procs, strict=True):
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.strip().splitlines()[-1].startswith(f"run_scripts: error: {words}"), (argv, proc.stderr)
    assert not data.exists()


# A stage 02 that accepts the split lists and refuses the run naming --val-fields, as 02 does for a split it cannot
# make from the fields it was given.
_REFUSING_STAGE = textwrap.dedent(
    """\
    import argparse, pathlib
    from stargal import cli
    from stargal.errors import StargalError

    def main(argv):
        p = argparse.ArgumentParser()
        for o in ("--data-dir", "--workers", "--seed", "--fields", "--train-fields", "--val-fields", "--test-fields"):
            p.add_argument(o, nargs="*")
        p.add_argument("-q", "--quiet", action="store_true")
        p.add_argument("--force", action="store_true")
        a = p.parse_args(argv)
        if pathlib.Path(__file__).name == "02_preparation.py":
            raise StargalError(f"--val-fields: field {a.val_fields[0]} holds no galaxy")
        return 0

    cli.run_main(main)
    """
)


def test_an_error_naming_an_option_small_added_says_it_came_from_small(tmp_path):
    """A stage refusing a value of --small's (``--val-fields: field 82 holds no galaxy``) named an option the user
    never typed, as if it were theirs. Its one line now says where the option came from; an error naming only the
    user's own options is unchanged."""
    data = tmp_path / "data"
    data.mkdir()
    stages = tmp_path / "code"
    stages.mkdir()
    for script in ("01_alignment.py", "02_preparation.py", "04_augmentation.py", "03_model.py"):
        (stages / script).write_text(_REFUSING_STAGE)
    env = dict(os.environ, STARGAL_STAGE_DIR=str(stages), STARGAL_PROG="run_scripts_no_download.sh")
    base = [sys.executable, "-m", "stargal.pipeline", "--no-download", "--no-explain", "--no-report"]
    run = [*base, "--small", "--data-dir", str(data)]
    proc = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert (
        "02_preparation.py: error: --val-fields: field 82 holds no galaxy (--val-fields 82 came from "
        "run_scripts_no_download.sh --small, not from the command line: give it yourself to override)\n"
    ) in proc.stderr
    # given by the user: no note
    mine = [*run, "--train-fields", "80", "--val-fields", "83", "--test-fields", "81"]
    proc = subprocess.run(mine, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and "02_preparation.py: error: --val-fields: field 83 holds no galaxy\n" in proc.stderr


def test_the_note_names_only_added_options_the_message_names(monkeypatch):
    monkeypatch.setenv(cli.ADDED_OPTIONS_ENV, '{"--fields": ["--small", "80 81 82 83"], "--epochs": ["--small", "6"]}')
    monkeypatch.setenv("STARGAL_PROG", "run_scripts.sh")
    note = cli.added_options_note("--train-fields: field 90 is not among --fields")
    assert note == " (--fields 80 81 82 83 came from run_scripts.sh --small, not from the command line: give it " \
        "yourself to override)"  # fmt: skip
    assert cli.added_options_note("--val-fields: no validation field") == ""  # --fields inside --val-fields is not it
    monkeypatch.delenv(cli.ADDED_OPTIONS_ENV)
    assert cli.added_options_note("--fields: bad") == ""


def test_a_repeat_of_the_stop_after_the_stage_ended_does_not_cut_the_runners_record_short():
    """The runner got the group's SIGTERM (and ``timeout``'s own) while the stage ran, noted it and waited for the
    stage; a repeat landing after the stage ended, while it records the run, raised Terminated there (its handler
    again): no stage table, no record. Once a stop came, the runner ignores further ones until it ends."""
    code = textwrap.dedent(
        """\
        import os, signal
        from stargal import cli, pipeline
        signal.signal(signal.SIGTERM, cli.raise_terminated)  # as pipeline.main sets it
        with pipeline._StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)  # while the stage runs: noted
        assert stop.received == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # the repeat, once the stage has ended
        print("recorded", flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "recorded\n", proc.stderr


def test_a_shared_option_no_selected_stage_takes_is_still_checked_before_any_stage_runs(tmp_path):
    """``--stages explain --workers abc`` (or ``--workers 2 foo``): explain.py takes no --workers, so no stage parsed
    it, and the runner dropped the option with its bad value or stray word and ran the stage, exit status 0. Now
    the shared parser checks it up front (exit status 2, nothing run)."""
    data = tmp_path / "data"
    base = ["--stages", "explain", "--no-publish", "--data-dir", str(data)]
    cases = [
        (["--workers", "abc"], "argument --workers: not an integer: 'abc' (no selected stage takes --workers)"),
        (["--workers", "2", "foo"], "argument --workers: unrecognized arguments: foo (no selected stage takes"),
    ]
    _refused_before_any_stage(base, cases)
    assert not data.exists()


def test_run_scripts_no_download_verify_checks_the_folder(tmp_path):
    """``run_scripts_no_download.sh --verify``: the wrapper adds --no-download, which --verify refused as "no other
    option (--no-download)", an option the user never typed (exit status 2, nothing checked). A run option the
    user gives is still refused."""
    data = tmp_path / "data"
    data.mkdir()
    done = _runner("--data-dir", str(data), "--verify", wrapper="run_scripts_no_download.sh")
    assert done.returncode == 0, done.stderr
    assert "all intact" in done.stdout
    refused = _runner("--data-dir", str(data), "--verify", "--small", wrapper="run_scripts_no_download.sh")
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("--verify checks the whole folder and takes no other option (--small)")


def test_an_empty_data_dir_is_refused_not_taken_for_the_projects_data(tmp_path, monkeypatch, capsys):
    """``--data-dir "$UNSET"`` ran every stage, and the runner, on the project's data/ (an empty path was taken for
    "not given"), exit 0: a download of the reference sky there, or a model served from it. Now one line naming the
    option, exit status 2, before anything runs."""
    import argparse

    from stargal import pipeline
    from stargal.errors import StargalError

    with pytest.raises(StargalError, match=r"^--data-dir '': an empty path"):
        cli.data_paths(argparse.Namespace(data_dir=""))
    monkeypatch.setattr(pipeline, "STAGE_DIR", tmp_path)  # no stage script: none could run
    with pytest.raises(SystemExit) as stopped:
        pipeline.main(["--stages", "report", "--data-dir", " "])
    assert stopped.value.code == 2 and "--data-dir '': an empty path" in capsys.readouterr().err
    assert pipeline.main(["--stages", "report", "--", "--data-dir", ""]) == 2
    assert "--data-dir '': an empty path" in capsys.readouterr().err
