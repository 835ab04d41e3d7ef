"""Run the numbered stages in order, measure each, stop at the first failure: the engine of run_scripts.sh.

Usage (normally through ./run_scripts.sh or ./run_scripts_no_download.sh):

    python -m stargal.pipeline [runner options] [stage options] [-- options for every stage]

Runner options are listed by --help. Every other option (``--fields 80 103``, ``--epochs 3``, ...) is
handed to each stage whose ``--help`` lists it; an option that no stage accepts is an error, so typos do not
pass silently. The options every stage shares (those of ``stargal.cli.make_parser``) are never an error.
Stages are idempotent, so rerunning after a success redoes nothing that is current.

Each stage runs as a child process. Its wall time, the peak resident memory of its largest process
(``wait4`` rusage, which covers the stage and its worker processes) and the peak resident memory of its
whole process tree (sampled with psutil every 0.2 s, so a short spike can be missed) are printed as a table
at the end and written to ``paths.pipeline_record`` for the report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import cli, fsio
from .paths import PROJECT_ROOT, DataPaths

# Where the stage scripts live; tests point this at stand-in scripts.
STAGE_DIR = Path(os.environ.get("STARGAL_STAGE_DIR") or PROJECT_ROOT / "code")


@dataclass(frozen=True)
class Stage:
    name: str
    script: str  # relative to code/


# The reference project's order: augmentation (04) comes before training (03).
STAGES: tuple[Stage, ...] = (
    Stage("download", "00_download.py"),
    Stage("alignment", "01_alignment.py"),
    Stage("preparation", "02_preparation.py"),
    Stage("augmentation", "04_augmentation.py"),
    Stage("model", "03_model.py"),
)
EXTRA_STAGES: dict[str, Stage] = {
    "tune": Stage("tune", "tune.py"),
    "explain": Stage("explain", "explain.py"),
    "report": Stage("report", "make_report.py"),
}
STAGE_NAMES = [s.name for s in STAGES] + list(EXTRA_STAGES)

# Flags the pipeline always gives a stage (when it accepts them): what the report shows.
STAGE_FLAGS: dict[str, tuple[str, ...]] = {
    "augmentation": ("--experiment",),  # the augmentation experiment, not only the examples
    "explain": ("--difficulty",),  # the difficulty analysis besides the attribution maps
}

# --small: a tiny sky of four small fields and short training. 600 x 800 frames give ~200 training patches: with
# the 400 x 600 of the tests' TINY sky (~120) the network can come out no better than chance on the 40 test ones.
SMALL_OPTIONS: list[tuple[str, list[str]]] = [
    ("--sim-shape", ["600", "800"]),
    ("--fields", ["80", "81", "82", "83"]),
    ("--train-fields", ["80", "83"]),
    ("--val-fields", ["82"]),
    ("--test-fields", ["81"]),
    ("--epochs", ["6"]),
]
# The split lists every numbered script parses but only 02 uses (the others check --fields alone).
SPLIT_OPTIONS = {"--train-fields", "--val-fields", "--test-fields"}
# Options that leave the demo at the reference size: only then is report.pdf copied to the top level.
SIZE_NEUTRAL = {"--workers", "--scheduler", "--seed", "--force", "-q", "--quiet", "--verbose", "--data-dir"}
OPTION_RE = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])\b")


def shared_options() -> set[str]:
    """The options every numbered script shares (``stargal.cli.make_parser`` with all its groups), read from its
    help like a stage's: never an error, even when the selected stages happen not to take one of them
    (e.g. --workers with --stages model). --data-dir and --help are the runner's own."""
    parser = cli.make_parser("", splits=True, workers=True)
    parser.prog = "stage"  # not sys.argv[0], which the pattern could mistake for an option
    return set(OPTION_RE.findall(parser.format_help())) - {"-h", "--help", "--data-dir"}


@dataclass
class Result:
    stage: str
    script: str
    status: str  # ok, failed, missing, skipped, interrupted; running, pending (in the record the report reads)
    seconds: float = 0.0
    peak_rss_mb: float | None = None  # largest single process (wait4 rusage)
    peak_tree_mb: float | None = None  # sum over the process tree (sampled)
    exit_code: int | None = None
    command: list[str] = field(default_factory=list)


# the runner's options that choose what runs; --verify runs nothing, so it takes none of them
RUN_CHOICES = ("demo", "small", "no_download", "stages", "tune", "no_explain", "no_report", "no_publish")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The runner's own options, and the other tokens (options for the stages)."""
    parser = argparse.ArgumentParser(
        prog=os.environ.get("STARGAL_PROG", "run_scripts.sh"),
        description="Run the stargal stages in order (download, 01 alignment, 02 preparation, 04 augmentation, "
        "03 model), stop at the first failing stage, print wall time and peak memory per stage. Options not "
        "listed here go to every stage that accepts them (see each stage's --help).",
        epilog="Examples: ./run_scripts.sh --demo | ./run_scripts.sh --demo --small --workers 2 | "
        "./run_scripts_no_download.sh --fields 80 103 --epochs 5",
    )
    parser.add_argument("--demo", action="store_true", help="offline: download stage writes the simulated sky")
    parser.add_argument(
        "--small",
        action="store_true",
        help="tiny run for checks: " + " ".join(f"{o} {' '.join(v)}" for o, v in SMALL_OPTIONS),
    )
    parser.add_argument("--no-download", action="store_true", help="skip the download stage (data already in data/)")
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGE_NAMES,
        metavar="STAGE",
        help=f"run only these stages, in pipeline order (choices: {' '.join(STAGE_NAMES)})",
    )
    parser.add_argument("--tune", action="store_true", help="also run hyperparameter tuning (tune.py) before training")
    parser.add_argument("--no-explain", action="store_true", help="skip explain.py after training")
    parser.add_argument("--no-report", action="store_true", help="do not build the PDF report at the end")
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="never copy the report to the top-level report.pdf (done by default only for the demo "
        "on the reference-size sky)",
    )
    parser.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="run no stage: check every file of the data folder against its record (sizes and sha256), list each "
        "broken one with what redoes it; exit status 1 if any is broken",
    )
    parser.add_argument("--python", default=sys.executable, help="Python that runs the stages")
    args, rest = parser.parse_known_args(argv)
    if args.data_dir is not None and not args.data_dir.strip():
        parser.error(cli.EMPTY_DATA_DIR)
    if not shutil.which(args.python):  # which() finds only an executable file
        parser.error(f"--python {args.python}: no such program (the Python that runs the stages)")
    if args.stages:  # --stages names the stages itself: a flag that would add or drop one contradicts it
        wanted = set(args.stages)
        for flag, stage, on in (("--tune", "tune", args.tune), ("--no-download", "download", args.no_download),
                                ("--no-explain", "explain", args.no_explain), ("--no-report", "report", args.no_report)):  # fmt: skip
            if on and (stage in wanted) == flag.startswith("--no-"):
                if flag == "--no-download" and parser.prog.startswith("run_scripts_no_download"):  # the wrapper's flag
                    parser.error(f"--stages {' '.join(args.stages)}: {parser.prog} never downloads; drop download "
                                 "there, or run ./run_scripts.sh")  # fmt: skip
                parser.error(f"{flag} with --stages {' '.join(args.stages)}: --stages names the stages to run; "
                             f"{'drop' if flag.startswith('--no-') else 'add'} {stage} there")  # fmt: skip
    return args, rest


def group_options(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """["--fields", "80", "81", "--force"] -> [("--fields", ["80", "81"]), ("--force", [])]."""
    groups: list[tuple[str, list[str]]] = []
    for token in tokens:
        if token == "--":
            continue
        if token.startswith("-") and not _is_number(token):
            name, eq, value = token.partition("=")
            groups.append((name, [value] if eq else []))
        elif groups:
            groups[-1][1].append(token)
        else:
            raise BadOptions(f"unexpected argument {token!r} (options start with --)")
    return groups


class BadOptions(ValueError):
    """The runner's options cannot run: the run stops before any stage, with exit status 2."""


def take_data_dir(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """``rest`` without a ``--data-dir`` given after ``--``, which becomes ``args.data_dir``: the runner locks the data
    folder and records the run there, and the demo's report is copied from it, so it must be the folder the stages
    write (given only to them, the runner held, recorded in and published from the project's data/)."""
    kept: list[str] = []
    tokens = iter(rest)
    for token in tokens:
        name, eq, value = token.partition("=")
        if name != "--data-dir":
            kept.append(token)
            continue
        if not eq:
            value = next(tokens, None)
            if value is None or value.startswith("-"):
                raise BadOptions("argument --data-dir: expected one folder")
        if not value.strip():
            raise BadOptions(cli.EMPTY_DATA_DIR)
        if args.data_dir is not None and DataPaths.at(args.data_dir).root != DataPaths.at(value).root:
            raise BadOptions(f"--data-dir given twice, {args.data_dir} and {value}: give one data folder")
        args.data_dir = value
    return kept


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def accepted_options(python: str, script: Path, env: dict[str, str]) -> set[str]:
    """The option strings a stage's --help lists."""
    proc = subprocess.run([python, str(script), "--help"], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} --help failed: {proc.stderr.strip().splitlines()[-1:]}")
    return set(OPTION_RE.findall(proc.stdout))


def stage_command(
    python: str, stage: Stage, accepted: set[str], options: list[tuple[str, list[str]]], args: argparse.Namespace
) -> list[str]:
    """The command line of one stage: its script, the demo's source, its fixed flags and the options it accepts."""
    cmd = [python, str(STAGE_DIR / stage.script)]
    if stage.name == "download" and args.demo:
        if "--source" not in accepted:
            raise RuntimeError(f"{stage.script} has no --source option, so --demo cannot run it offline")
        if not any(name == "--source" for name, _ in options):
            cmd += ["--source", "simulated"]
    cmd += [flag for flag in STAGE_FLAGS.get(stage.name, ()) if flag in accepted]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    for name, values in options:
        if name in accepted:
            cmd += [name, *values]
    return cmd


def idle_refusal(idle: list[tuple[str, list[str]]]) -> str | None:
    """The parser error for a shared option that no selected stage takes (``--workers abc`` or ``--workers 2 foo``
    with ``--stages explain``), else None: no stage parses it, so without this its values, and a stray word after
    them, were dropped without a word. Checked with the parser every numbered script shares (``shared_options``)."""
    parser = cli.make_parser("", splits=True, workers=True)
    parser.prog = "run_scripts"

    def refuse(message: str):
        raise BadOptions(message)

    parser.error = refuse  # type: ignore[method-assign]  # the line, not argparse's usage and exit
    for name, values in idle:
        try:
            parser.parse_args([name, *values])
        except BadOptions as exc:
            message = str(exc)
            if message.startswith("unrecognized arguments"):
                message = f"argument {name}: {message}"
            return f"{message} (no selected stage takes {name})"
    return None


def refused_values(
    args: argparse.Namespace,
    stages: list[Stage],
    accepted_by: dict[str, set[str]],
    given: list[tuple[str, list[str]]],
    env: dict[str, str],
) -> str | None:
    """The first stage's own parser error for the user's options (``--epochs abc``, ``--fields`` with no field, a
    stray word after an option's values), else None. Each stage given one is run with its command and ``--help``
    last, with ``cli.PARSE_ONLY_ENV`` set: its parser (``cli.make_parser``'s) then parses the rest fully, "unrecognized
    arguments" included, and exits 0 without any work (a parser that does not know the mode stops at --help, having
    checked every value before it, and does no work either). So a typo is refused now, not when its stage starts
    after an hour of the earlier ones."""
    commands = []
    for stage in stages:
        accepted = accepted_by.get(stage.name, set())
        if any(name in accepted for name, _ in given):
            with contextlib.suppress(RuntimeError):  # a stage that cannot run is named when it is reached
                commands.append((stage, stage_command(args.python, stage, accepted, given, args) + ["--help"]))
    if not commands:
        return None
    env = {**env, cli.PARSE_ONLY_ENV: "1"}
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        runs = [
            pool.submit(subprocess.run, cmd, capture_output=True, text=True, env=env, timeout=300)
            for _, cmd in commands
        ]
    for (stage, _), run in zip(commands, runs, strict=True):
        proc = run.result()
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
            return f"{stage.script}: {lines[-1].removeprefix(f'{stage.script}: error: ')}"
    return None


@dataclass
class StageRun:
    """How a stage's process ended and what it used."""

    exit_code: int
    seconds: float  # wall time until it ended, stopped or not
    peak_rss_mb: float | None  # largest single process (wait4 rusage)
    peak_tree_mb: float | None  # sum over the process tree (sampled)
    received: signal.Signals | None = None  # a stop signal this runner received while the stage ran

    @property
    def stopped_by(self) -> signal.Signals | None:
        """SIGINT or SIGTERM if the stage was stopped, whichever process received the signal: this runner, or the
        stage alone (which died of it while still starting up, or exited 130/143 as run_main does)."""
        return self.received or cli.stopped_by(self.exit_code)


class _StopSignals:
    """While a stage runs, SIGINT and SIGTERM to this runner are noted and passed on to the stage, not raised:
    an exception could land between starting the stage and knowing its pid (an orphaned stage), or after the
    stage died of the same signal (reaped twice: a traceback instead of the record). So the runner always waits
    for the stage, measures it and records how it ended. Each repeat is passed on too. A SIGTERM to the whole
    process group reaches the stage twice (from the group, and passed on): the stage ignores SIGTERM once its
    first has started its unwinding (``cli.raise_terminated``), so it still ends with its own "terminated" line
    and its clean-up. Once a stop signal came, the runner ignores further ones until it ends: it only records the
    run, which a repeat of the same stop (a group's, then ``timeout``'s own) would otherwise cut short."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._pid: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is not threading.main_thread():  # only the main thread can set handlers
            return self
        for signum in cli.STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler not in (signal.SIG_IGN, None):  # ignored (nohup, a background job): stays ignored
                self._previous[signum] = handler
                signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if self.received is None else signal.SIG_IGN)

    def started(self, pid: int) -> None:
        """The stage runs as ``pid``: a signal noted while it was being started is passed on now."""
        self._pid = pid
        if self.received is not None:
            self._pass_on(self.received)

    def _note(self, signum: int, frame) -> None:
        self.received = self.received or signal.Signals(signum)
        self._pass_on(signum)

    def _pass_on(self, signum: int) -> None:
        # the stage is reaped only by run_stage, after this context: its pid cannot have been reused yet
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signum)


def _hold_data_folder(paths: DataPaths, stages: list[Stage]) -> tuple[dict[str, str], tuple[int, ...]]:
    """Lock the data folder for the whole run, as each stage locks it for its own, and return the environment entry
    and descriptors that hand the lock to the stages (``fsio.hand_on_lock``): another run on the folder (a second
    run_scripts.sh, a stage started by hand) waits until this one ends instead of running its stages between this
    run's, whose later stages would then use its outputs (its dataset of other splits trained on by this run's 03, reported as this run's). A folder that
    does not exist yet is made only when the download stage, which would make it, runs; otherwise the stage that
    needs it refuses it, unlocked; so does one where the lock cannot be made (no permission, a full disk): each stage
    then says so in its one line."""
    if not paths.root.is_dir():
        if paths.root.exists() or "download" not in [stage.name for stage in stages]:
            return {}, ()
        try:
            paths.root.mkdir(parents=True, exist_ok=True)
        except OSError:
            return {}, ()
    holder = cli.holder_text(os.environ.get("STARGAL_PROG", "run_scripts"))
    try:
        fsio.lock_folder(paths.lock_file, on_wait=_waiting_for(paths), holder=holder)
    except OSError:
        return {}, ()
    return fsio.hand_on_lock(paths.lock_file)


def _waiting_for(paths: DataPaths):
    """The line said while another run holds the data folder (``lock_folder``'s on_wait)."""
    return lambda holder: print(
        f"run_scripts: {paths.root} is in use ({holder or 'another run'}); waiting for it to finish",
        file=sys.stderr,
        flush=True,
    )


def run_stage(cmd: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> StageRun:
    """Run one stage and measure it. SIGINT or SIGTERM to this runner reaches the stage too (a terminal's SIGINT
    reached it already; SIGTERM from a batch system or docker stop only this runner): no stage runs on holding
    the data folder, and the run stops once it has ended. ``pass_fds``: the data folder's lock, handed on."""
    start = time.monotonic()
    with _StopSignals() as stop:
        proc = subprocess.Popen(cmd, env=env, pass_fds=pass_fds)
        stop.started(proc.pid)
        status, usage, tree_peak = _wait_measuring(proc.pid)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait for it again
    return StageRun(
        exit_code=proc.returncode,
        seconds=time.monotonic() - start,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux: kilobytes
        peak_tree_mb=tree_peak / 2**20 if tree_peak else None,
        received=stop.received,
    )


def _wait_measuring(pid: int) -> tuple[int, os.struct_rusage, int]:
    """Wait for ``pid`` to end, sampling its process tree's memory; (wait status, rusage, peak tree RSS bytes)."""
    import psutil

    ps = psutil.Process(pid)
    tree_peak = 0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, tree_peak
        tree_peak = max(tree_peak, _tree_rss(ps))
        time.sleep(0.2)


def _tree_rss(ps) -> int:
    import psutil

    total = 0
    try:
        procs = [ps, *ps.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):  # a process may end while we look
            total += p.memory_info().rss
    return total


def selected_stages(args: argparse.Namespace) -> list[Stage]:
    """The stages to run, in pipeline order, from --no-download, --tune, --no-explain, --no-report, --stages."""
    stages = [s for s in STAGES if not (s.name == "download" and args.no_download)]
    if args.tune:
        stages.insert(next(i for i, s in enumerate(stages) if s.name == "model"), EXTRA_STAGES["tune"])
    if not args.no_explain:
        stages.append(EXTRA_STAGES["explain"])
    if not args.no_report:
        stages.append(EXTRA_STAGES["report"])
    if args.stages:
        order = [s.name for s in STAGES] + ["explain", "report"]
        order.insert(order.index("model"), "tune")  # as without --stages: the study before the model it informs
        wanted = set(args.stages)
        every = list(STAGES) + [EXTRA_STAGES[n] for n in ("tune", "explain", "report")]
        stages = sorted((s for s in every if s.name in wanted), key=lambda s: order.index(s.name))
    return stages


def format_table(results: list[Result]) -> str:
    """The end-of-run table: status, wall time and peak memory per stage, and the totals."""

    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    rows = [("stage", "script", "status", "wall time", "peak RSS MB", "tree peak MB")]
    for r in results:
        wall = f"{r.seconds:,.1f} s" if r.status in ("ok", "failed", "interrupted") else "-"
        rows.append((r.stage, r.script, r.status, wall, mb(r.peak_rss_mb), mb(r.peak_tree_mb)))
    ran = [r for r in results if r.status in ("ok", "failed", "interrupted")]
    if ran:
        peaks = [r.peak_tree_mb or r.peak_rss_mb or 0 for r in ran]
        rows.append(
            (
                "total",
                "",
                "",
                f"{sum(r.seconds for r in ran):,.1f} s",
                mb(max(r.peak_rss_mb or 0 for r in ran)),
                mb(max(peaks)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {3, 4, 5}
    lines = []
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if k == 0 or (row[0] != "total" and k == len(rows) - 2 and rows[-1][0] == "total"):
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the selected stages; return the exit status (0, 1 for a failed stage, 2 for bad options, 130 or 143 when
    stopped by SIGINT or SIGTERM)."""
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, cli.raise_terminated)  # the running stage gets it and stops; the record says so
    try:
        rest = take_data_dir(args, rest)
    except BadOptions as exc:
        print(f"run_scripts: error: {exc}", file=sys.stderr)
        return 2
    if args.verify:
        # --no-download changes nothing --verify checks, and run_scripts_no_download.sh always gives it
        runner = [f"--{k.replace('_', '-')}" for k in RUN_CHOICES if k != "no_download" and getattr(args, k)]
        return verify(DataPaths.at(args.data_dir), runner + [token for token in rest if token != "--"])
    try:
        options = group_options(rest)
    except BadOptions as exc:
        print(f"run_scripts: error: {exc}", file=sys.stderr)
        return 2
    given = {name for name, _ in options}
    simulated = args.demo or ["simulated"] in [values for name, values in options if name == "--source"]
    downloads = "download" in [stage.name for stage in selected_stages(args)]
    if args.small and downloads and not simulated:  # its tiny sky is simulated: a real source has no --sim-shape
        print("run_scripts: error: --small runs a tiny simulated sky: give --demo too (or --no-download to run the "
              "other stages on data already in the folder)", file=sys.stderr)  # fmt: skip
        return 2
    if args.small:
        options = [o for o in SMALL_OPTIONS if o[0] not in given] + options
        clash = (
            small_presets_clash(options, given) if "preparation" in [s.name for s in selected_stages(args)] else None
        )
        if clash:
            print(f"run_scripts: error: {clash}; no stage was run", file=sys.stderr)
            return 2
    paths = DataPaths.at(args.data_dir)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("MPLBACKEND", "Agg")

    stages = selected_stages(args)
    results: list[Result] = []
    accepted_by: dict[str, set[str]] = {}
    present = [stage for stage in stages if (STAGE_DIR / stage.script).exists()]
    # each --help starts a Python (~1.3 s): ask them all at once, so that a rerun with nothing to do is quick
    with ThreadPoolExecutor(max_workers=max(1, len(present))) as pool:
        helps = [pool.submit(accepted_options, args.python, STAGE_DIR / stage.script, env) for stage in present]
    for stage, answer in zip(present, helps, strict=True):
        try:
            accepted_by[stage.name] = answer.result()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"run_scripts: stage {stage.name} ({stage.script}) is broken: {exc}", file=sys.stderr)
            results.append(Result(stage.name, stage.script, "failed"))
            return _finish(results, paths, args, options, 1)
    everyone = set().union(*accepted_by.values()) if accepted_by else set()
    presets = {name for name, _ in SMALL_OPTIONS} - given if args.small else set()  # go where accepted, if anywhere
    unknown = sorted(name for name in {n for n, _ in options} - presets - shared_options() if name not in everyone)
    if unknown:
        known = ", ".join(s.script for s in stages if s.name in accepted_by) or "none exists"
        message = f"no stage accepts {' '.join(unknown)} (checked {known})"
        if len(accepted_by) == len(stages):
            print(f"run_scripts: error: {message}", file=sys.stderr)
            return 2
        print(f"run_scripts: warning: {message}; it may belong to a missing stage", file=sys.stderr)
    # the splits are 02's to make: given with no stage that takes them, a stage after 02 would use (and report) the
    # dataset of other splits made earlier, the option dropped without a word
    dropped = sorted(name for name in given & SPLIT_OPTIONS if name not in everyone)
    if dropped and len(accepted_by) == len(stages):
        chosen = " ".join(s.name for s in stages)
        print(
            f"run_scripts: error: {' '.join(dropped)}: no selected stage takes it (--stages {chosen}); "
            "02_preparation.py makes the splits: add preparation to --stages, or leave the option out",
            file=sys.stderr,
        )
        return 2
    shared = shared_options()  # those no selected stage takes are checked here: no stage parses them
    idle = [o for o in options if o[0] in given and o[0] in shared and o[0] not in everyone]
    refused = idle_refusal(idle) or refused_values(
        args, stages, accepted_by, [o for o in options if o[0] in given], env
    )
    if refused:
        print(f"run_scripts: error: {refused}; no stage was run", file=sys.stderr)
        return 2

    handed, lock_fds = _hold_data_folder(paths, stages)
    env.update(handed)
    status = 0
    for stage in stages:
        if stage.name not in accepted_by:
            print(f"==> stage {stage.name}: code/{stage.script} does not exist yet: skipped", file=sys.stderr)
            results.append(Result(stage.name, stage.script, "missing"))
            continue
        try:
            cmd = stage_command(args.python, stage, accepted_by[stage.name], options, args)
        except RuntimeError as exc:
            print(f"run_scripts: stage {stage.name}: {exc}", file=sys.stderr)
            results.append(Result(stage.name, stage.script, "failed"))
            status = 1
            break
        if stage.name == "report":  # the report shows this run's stages so far (the record is rewritten at the end)
            done = {r.stage for r in results}
            pending = [
                Result(s.name, s.script, "running" if s is stage else "pending") for s in stages if s.name not in done
            ]
            _write_record(paths, args, options, results + pending, None)
        shown = " ".join(["python", f"code/{stage.script}", *cmd[2:]])
        print(f"==> stage {stage.name}: {shown}", file=sys.stderr, flush=True)
        run = run_stage(cmd, _added_options_env(env, args, accepted_by[stage.name], given), lock_fds)
        result = Result(stage.name, stage.script, "ok", seconds=run.seconds, peak_rss_mb=run.peak_rss_mb,
                        peak_tree_mb=run.peak_tree_mb, exit_code=run.exit_code, command=cmd[1:])  # fmt: skip
        results.append(result)
        status = _judge(result, run)
        if status != 0:
            break
    ran = {r.stage for r in results}
    results += [Result(s.name, s.script, "skipped") for s in stages if s.name not in ran]
    return _finish(results, paths, args, options, status)


def small_presets_clash(options: list[tuple[str, list[str]]], given: set[str]) -> str | None:
    """Where --small's presets and the user's own --fields or split lists do not fit together (a split field not
    among --fields, a field in two splits), the line saying so, naming which list is whose; else None. 02 would
    refuse it, after download and alignment, naming an option the user never typed. Lists the user gave alone are
    left to 02, as without --small."""
    lists: dict[str, list[int]] = {}
    shown: dict[str, str] = {}
    for name, values in options:
        if name in SPLIT_OPTIONS or name == "--fields":
            try:
                lists[name] = [f for value in values for f in cli.field_list(value)]
            except argparse.ArgumentTypeError:
                return None  # the stage's parser names it (checked before any stage runs)
            whose = "yours" if name in given else "--small's preset"
            shown[name] = f"{name} {' '.join(values)} ({whose})"
    advice = "give --fields, --train-fields, --val-fields and --test-fields all yourself, or leave them all to --small"
    seen: dict[int, str] = {}
    for name in ("--train-fields", "--val-fields", "--test-fields"):
        for f in lists.get(name, []):
            if f in seen and seen[f] != name and not {seen[f], name} <= given:
                return f"--small: {shown[seen[f]]} and {shown[name]} both hold field {f}; {advice}"
            seen.setdefault(f, name)
    if "--fields" in lists:
        for f, name in seen.items():
            if f not in lists["--fields"] and not {name, "--fields"} <= given:
                return f"--small: {shown[name]} holds field {f}, which {shown['--fields']} does not; {advice}"
    return None


def added_options(args: argparse.Namespace, accepted: set[str], given: set[str]) -> dict[str, list[str]]:
    """The options a stage's command holds that the user never typed, each with the runner option that added it
    and its values: --small's presets, and --demo's --source simulated ({"--train-fields": ["--small", "80 83"]})."""
    added: dict[str, list[str]] = {}
    if args.small:
        added |= {name: ["--small", " ".join(values)] for name, values in SMALL_OPTIONS if name not in given}
    if args.demo and "--source" not in given:
        added["--source"] = ["--demo", "simulated"]
    return {name: origin for name, origin in added.items() if name in accepted}


def _added_options_env(env: dict[str, str], args, accepted: set[str], given: set[str]) -> dict[str, str]:
    """``env`` for a stage, naming the options the runner added to its command (``cli.ADDED_OPTIONS_ENV``): an error
    of the stage naming one says it came from --small, not from the user."""
    added = added_options(args, accepted, given)
    env = {k: v for k, v in env.items() if k not in (cli.ADDED_OPTIONS_ENV, cli.PARSE_ONLY_ENV)}
    if added:
        env[cli.ADDED_OPTIONS_ENV] = json.dumps(added)
    return env


def _judge(result: Result, run: StageRun) -> int:
    """Set ``result.status`` from how its stage ended and say in one line why the run stops; return the run's exit
    status: 0 to go on, 1 for a failed stage, 130 or 143 for one stopped by SIGINT or SIGTERM."""
    stopped = run.stopped_by
    if stopped is not None:
        # a stage that finished as the signal came is kept as done; the run stops all the same
        finished = run.exit_code == 0
        result.status = "ok" if finished else "interrupted"
        when = "after" if finished else "during"
        print(f"run_scripts: {cli.STOP_WORDS[stopped]} {when} stage {result.stage}", file=sys.stderr)
        return 128 + stopped
    if run.exit_code != 0:
        result.status = "failed"
        print(f"run_scripts: stage {result.stage} ({result.script}) failed with exit status {run.exit_code}; "
              "later stages not run", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def verify(paths: DataPaths, rest: list[str]) -> int:
    """``--verify``: every broken file of the data folder and what redoes it (0: all intact, 1: some broken)."""
    from .integrity import findings_lines, verify_data_folder

    if rest:
        print(f"run_scripts: error: --verify checks the whole folder and takes no other option ({' '.join(rest)})",
              file=sys.stderr)  # fmt: skip
        return 2
    if not paths.root.is_dir():
        print(f"run_scripts: error: --data-dir {paths.root}: no such folder", file=sys.stderr)
        return 2
    fsio.lock_folder(paths.lock_file, shared=True, on_wait=_waiting_for(paths))  # no stage writes while we look
    # nor predict.py, which writes beside the stages holding the publication lock shared: its temporary file is no
    # leftover of an interrupted run (and its output is whole when we look); a stage renaming waits the few seconds
    fsio.lock_folder(
        paths.publish_lock,
        on_wait=lambda _: print(f"run_scripts: waiting for predict.py to finish writing in {paths.root}",
                                file=sys.stderr, flush=True),
    )  # fmt: skip
    start = time.monotonic()
    findings, checked = verify_data_folder(paths, deep=True)
    seconds = time.monotonic() - start
    if not findings:
        print(f"{paths.root}: {checked} files and records checked (sizes and sha256), all intact ({seconds:.1f} s)")
        return 0
    print(f"{paths.root}: {len(findings)} problem(s) among {checked} files and records checked ({seconds:.1f} s):")
    for line in findings_lines(findings):
        print("  " + line)
    print(
        "A rerun of the stage named (no --force needed) redoes what is broken or stale; ./run_scripts.sh reruns them all."
    )
    return 1


def _finish(results: list[Result], paths: DataPaths, args, options, status: int) -> int:
    print("\n" + format_table(results), flush=True)
    missing = [r.script for r in results if r.status == "missing"]
    if missing:
        print(f"\nnot yet written, skipped: {' '.join(missing)}", flush=True)
    _write_record(paths, args, options, results, status)
    if status == 0 and any(r.stage == "report" and r.status == "ok" for r in results):
        _publish_report(paths, args, options)
    return status


def _write_record(paths: DataPaths, args, options, results: list[Result], status: int | None) -> None:
    """``paths.pipeline_record``: the run's options and each stage's result (status None: still running). Not
    written in a data folder that no stage made: the folder a stage refused as missing stays missing."""
    if not paths.root.is_dir():
        return
    record = {
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds") if status is not None else None,
        "demo": args.demo,
        "small": args.small,
        "options": [[name, *values] for name, values in options],
        "status": status,
        "stages": [asdict(r) for r in results],
    }
    try:
        fsio.write_json(paths.pipeline_record, record)
    except OSError as exc:
        if str(paths.pipeline_record) not in _UNRECORDED:  # once a run: it is written before the report and at the end
            _UNRECORDED.add(str(paths.pipeline_record))
            print(f"run_scripts: could not record the stage table: {exc}", file=sys.stderr)


_UNRECORDED: set[str] = set()  # stage tables this run could not write (a read-only data folder)


def _publish_report(paths: DataPaths, args, options) -> None:
    """Copy the report to the top-level report.pdf, but only for the demo on the reference-size sky."""
    source = paths.report_pdf
    reference_size = (
        args.demo and not args.small and not args.no_publish and all(name in SIZE_NEUTRAL for name, _ in options)
    )
    if not source.exists():
        return
    if not reference_size:
        print(f"report: {source}")
        return
    target = PROJECT_ROOT / "report.pdf"
    try:
        with fsio.atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        print(f"report: {source}, copied to {target}")
    except OSError as exc:  # e.g. inside the container, where the code folder is read-only
        print(f"report: {source} (not copied to {target}: {exc.strerror})")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, cli.Terminated) as exc:  # before or between stages: no stage runs that needs stopping
        stop = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
        print(f"run_scripts: {cli.STOP_WORDS[stop]}", file=sys.stderr)
        sys.exit(128 + stop)
