"""Shared command-line pieces of the numbered scripts: common options, the data folder (checked and locked)
and one-line error handling (``run_main``)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

from . import fsio
from .config import REFERENCE, SEED, FieldSet
from .errors import StargalError
from .paths import DEFAULT_SAMPLE_DIR, DataPaths, FieldId

log = logging.getLogger("stargal")


MAX_FIELD = 9999  # SDSS file names hold the field in 4 digits and the run in 6
MAX_RUN = 999999


def field_list(text: str) -> tuple[int, ...]:
    """Parse "80 103" or "80,103" or "100-105" into field numbers."""
    fields: list[int] = []
    for token in text.replace(",", " ").split():
        try:
            if "-" in token[1:]:
                lo, hi = (int(t) for t in token.split("-", 1))
                if hi < lo:
                    raise ValueError
                fields.extend(range(lo, hi + 1))
            else:
                fields.append(int(token))
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid field list {text!r}") from None
    if any(f < 0 for f in fields):
        raise argparse.ArgumentTypeError(f"field numbers must be non-negative: {text!r}")
    if any(f > MAX_FIELD for f in fields):
        raise argparse.ArgumentTypeError(f"field numbers have at most 4 digits in SDSS (0-{MAX_FIELD}): {text!r}")
    return tuple(fields)


def run_number(text: str) -> int:
    """argparse type: an SDSS run number (6 digits in the file names)."""
    value = non_negative_int(text)
    if value > MAX_RUN:
        raise argparse.ArgumentTypeError(f"run numbers have at most 6 digits in SDSS (0-{MAX_RUN}): {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def seed_int(text: str) -> int:
    """argparse type: a random seed numpy and TensorFlow both take, 0 to 2**32 - 1."""
    value = _integer(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be 0 to {2**32 - 1}: {text!r}")
    return value


def _record_given(namespace: argparse.Namespace, dest: str) -> None:
    """Note that the command line named ``dest`` (``given_selection`` tells it from a default)."""
    namespace.given_options = (*getattr(namespace, "given_options", ()), dest)


class FieldsAction(argparse.Action):
    """Accept fields as several arguments (--fields 80 103) or one list ("80,103")."""

    def __call__(self, parser, namespace, values, option_string=None):
        fields: list[int] = []
        for value in values:
            try:
                fields.extend(field_list(value))
            except argparse.ArgumentTypeError as exc:
                parser.error(f"argument {option_string}: {exc}")
        setattr(namespace, self.dest, tuple(fields))
        _record_given(namespace, self.dest)


class _GivenStore(argparse.Action):
    """``store``, noting that the option was given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        _record_given(namespace, self.dest)


def given_selection(args: argparse.Namespace) -> dict[str, object]:
    """The data-selection options (rerun, run, camcol, fields) the command line gave, with their values."""
    given = getattr(args, "given_options", ())
    return {dest: getattr(args, dest) for dest in ("rerun", "run", "camcol", "fields") if dest in given}


class _HelpFormatter(argparse.HelpFormatter):
    """Show a default only where it says something: not None/False, not already in the help text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
            return text
        if isinstance(default, tuple | list):
            default = " ".join(map(str, default)) if default else "none"
        return f"{text} (default: {default})"


# Set by stargal.pipeline for its up-front check of the options it hands a stage: the stage's command ends in --help,
# and a parser of ``make_parser`` then parses the rest fully (a stray word is "unrecognized arguments", exit status 2)
# and exits 0 without any work. A script whose parser does not know the mode just prints its help: no work either.
PARSE_ONLY_ENV = "STARGAL_PARSE_ONLY"
# Set by stargal.pipeline for each stage: the options the runner added to its command line that the user never typed
# (--small's presets), as JSON {"--train-fields": ["--small", "80 83"]}, so that an error naming one says so.
ADDED_OPTIONS_ENV = "STARGAL_ADDED_OPTIONS"


def added_options_note(message: str) -> str:
    """`` (--train-fields 80 83 came from run_scripts.sh --small, not from the command line)`` for each option of
    ``ADDED_OPTIONS_ENV`` that ``message`` names; "" when it names none (or the variable is not set)."""
    try:
        added = json.loads(os.environ.get(ADDED_OPTIONS_ENV) or "{}")
    except ValueError:
        return ""
    if not isinstance(added, dict):
        return ""
    runner = os.environ.get("STARGAL_PROG") or "run_scripts.sh"
    notes = []
    for option, origin in added.items():
        if not isinstance(origin, list) or len(origin) != 2:
            continue
        if re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", message):
            flag, values = origin
            notes.append(f"{option}{' ' + values if values else ''} came from {runner} {flag}")
    if not notes:
        return ""
    return (
        f" ({'; '.join(notes)}, not from the command line: give {'it' if len(notes) == 1 else 'them'} yourself "
        "to override)"
    )


class _StageParser(argparse.ArgumentParser):
    """The numbered scripts' parser: ``PARSE_ONLY_ENV`` (the runner's up-front check) and the note on an error
    naming an option the runner added (``ADDED_OPTIONS_ENV``)."""

    def parse_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        if os.environ.get(PARSE_ONLY_ENV) == "1" and argv[-1:] == ["--help"]:
            super().parse_args(argv[:-1], namespace)  # every check, "unrecognized arguments" included
            raise SystemExit(0)  # no work: the stage runs later, with the same options
        return super().parse_args(args, namespace)

    def error(self, message: str):
        super().error(message + added_options_note(message))


WORKERS_HELP = "parallel worker processes"
SCHEDULER_HELP = (
    "run the per-field work on this existing Dask cluster (e.g. tcp://head:8786) instead of local "
    "processes; the data folder must be on a filesystem every worker shares"
)


def make_parser(
    description: str,
    *,
    splits: bool = False,
    workers: bool = False,
    workers_default: int | None = None,
    workers_help: str = WORKERS_HELP,
    scheduler_help: str | None = SCHEDULER_HELP,
    seed: bool = True,
) -> argparse.ArgumentParser:
    """A parser with the options every numbered script shares (``--workers`` with ``workers``, and ``--scheduler``
    unless ``scheduler_help`` is None; the split field lists with ``splits``; ``--seed`` unless ``seed`` is False,
    for a script with nothing random, where a seed would be taken and ignored). ``stargal.pipeline`` derives its
    pass-through list from it."""
    parser = _StageParser(description=description, formatter_class=_HelpFormatter)
    ref = REFERENCE
    group = parser.add_argument_group("data selection (defaults: the reference configuration)")
    group.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    group.add_argument("--rerun", type=non_negative_int, default=ref.rerun, action=_GivenStore, help="SDSS rerun")
    group.add_argument("--run", type=run_number, default=ref.run, action=_GivenStore, help="SDSS run")
    group.add_argument(
        "--camcol",
        type=int,
        choices=range(1, 7),
        default=ref.camcol,
        action=_GivenStore,
        metavar="1-6",
        help="camera column",
    )
    group.add_argument(
        "--fields",
        nargs="+",
        action=FieldsAction,
        default=None,
        metavar="F",
        help=f"fields to process (default: train+val+test fields, {' '.join(map(str, ref.fields))})",
    )
    if splits:
        group.add_argument(
            "--train-fields",
            nargs="+",
            action=FieldsAction,
            default=ref.train_fields,
            metavar="F",
            help="training fields",
        )
        group.add_argument(
            "--val-fields",
            nargs="+",
            action=FieldsAction,
            default=ref.val_fields,
            metavar="F",
            help="validation fields",
        )
        group.add_argument(
            "--test-fields", nargs="+", action=FieldsAction, default=ref.test_fields, metavar="F", help="test fields"
        )
    if seed:
        parser.add_argument("--seed", type=seed_int, default=SEED, help="random seed (0 to 4294967295)")
    parser.add_argument("--force", action="store_true", help="redo work whose outputs are already current")
    if workers:
        parser.add_argument(
            "--workers", type=positive_int, default=workers_default or default_workers(), help=workers_help
        )
        if scheduler_help is not None:
            parser.add_argument("--scheduler", default=None, metavar="ADDRESS", help=scheduler_help)
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the summary")
    parser.add_argument("--debug", action="store_true", help="on an error, also show the Python traceback")
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's start-up messages and library warnings"
    )
    return parser


def default_workers() -> int:
    """One worker per core, at most four."""
    return max(1, min(4, os.cpu_count() or 1))


SPLIT_OPTIONS = ("train_fields", "val_fields", "test_fields")


def _region_only_test(args: argparse.Namespace) -> bool:
    """Whether the test set is the --test-region objects alone: a region given with the user's own --train-fields
    or --val-fields and no --test-fields. The reference's test field is then not added to it (it would be a field
    the user never named, and often one of their training fields); with no split field option at all the reference
    configuration stands whole, and a --test-region adds its objects to the reference's test field."""
    given = getattr(args, "given_options", ())
    return (
        bool(getattr(args, "test_region", None))
        and "test_fields" not in given
        and any(dest in given for dest in ("train_fields", "val_fields"))
    )


def field_set(args: argparse.Namespace) -> FieldSet:
    """The FieldSet the arguments describe; --fields defaults to the union of the split fields. A split option not
    given takes the reference's list, except --test-fields for a test set of --test-region objects alone
    (``_region_only_test``); ``check_default_splits`` names a default that does not fit the user's fields."""
    train = tuple(getattr(args, "train_fields", REFERENCE.train_fields))
    val = tuple(getattr(args, "val_fields", REFERENCE.val_fields))
    test = () if _region_only_test(args) else tuple(getattr(args, "test_fields", REFERENCE.test_fields))
    same_run = (args.rerun, args.run, args.camcol) == (REFERENCE.rerun, REFERENCE.run, REFERENCE.camcol)
    if args.fields is not None:
        fields = tuple(dict.fromkeys(args.fields))
    elif hasattr(args, "train_fields") or same_run:
        fields = tuple(sorted(set(train) | set(val) | set(test)))
    else:
        raise StargalError("--fields is required when --rerun/--run/--camcol differ from the reference")
    return FieldSet(args.rerun, args.run, args.camcol, fields, train, val, test)


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_default_splits(args: argparse.Namespace, fs: FieldSet) -> None:
    """A split option left at its default names the reference configuration's fields; on fields of the user's own
    (``--fields``, another run, another split option naming a default field) say that, rather than that a field the
    user never gave is not among --fields or is listed in two splits."""
    given = getattr(args, "given_options", ())
    missing = [d for d in SPLIT_OPTIONS if d not in given and hasattr(args, d)]
    for dest in missing:
        default = getattr(fs, dest)  # the reference's, or none for a test set of --test-region objects alone
        if not default:
            continue
        if not all(f in fs.fields for f in default):
            problem = f"is not among --fields {' '.join(map(str, fs.fields))}"
            asked = missing  # fields of the user's own: every split list must come from them
        else:
            clash = [o for o in SPLIT_OPTIONS if o in given and set(getattr(fs, o)) & set(default)]
            if not clash:
                continue
            shared = sorted(set(getattr(fs, clash[0])) & set(default))
            problem = f"is also in {_option(clash[0])} ({' '.join(map(str, shared))})"
            asked = [dest]
        what = " and ".join(filter(None, [", ".join(map(_option, asked[:-1])), _option(asked[-1])]))
        advice = f"give {what}" + (", each a different part of --fields" if len(asked) > 1 else "")
        if "test_fields" in asked:
            own = any(d in given for d in ("train_fields", "val_fields"))  # what _region_only_test needs
            region_only = "--test-region" + ("" if own else " with --train-fields and --val-fields")
            advice += f" (or, for a test set of a sky region's objects alone, {region_only})"
        raise StargalError(
            f"{_option(dest)}: not given, and its default (the reference configuration's "
            f"{' '.join(map(str, default))}) {problem}: {advice}"
        )


def field_ids(fs: FieldSet) -> list[FieldId]:
    """The FieldIds of every field of ``fs``."""
    return [FieldId(fs.rerun, fs.run, fs.camcol, f) for f in fs.fields]


def add_real_and_simulated_arguments(parser: argparse.ArgumentParser, *, simulated_required: bool = False) -> None:
    """The options of a bench that measures the real sample beside simulated fields: --data-dir (where the real
    fields are prepared), --sample, --sim-data-dir and --fields."""
    parser.add_argument("--data-dir", default=None, help="data folder the real fields are prepared in")
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE_DIR), help="folder of real SDSS frames")
    sim = {"required": True} if simulated_required else {"default": None}
    parser.add_argument("--sim-data-dir", **sim, help="a data folder with simulated aligned cubes")
    fields = {"required": True} if simulated_required else {"default": []}
    parser.add_argument("--fields", nargs="+", action=FieldsAction, **fields, help="simulated fields")


EMPTY_DATA_DIR = "--data-dir '': an empty path; name the data folder (or leave the option out for the project's data/)"


def data_paths(args: argparse.Namespace) -> DataPaths:
    """The data folder of ``--data-dir`` (the project's data/ by default)."""
    if args.data_dir is not None and not str(args.data_dir).strip():  # "$UNSET": not the project's data/ unasked
        raise StargalError(EMPTY_DATA_DIR)
    paths = DataPaths.at(args.data_dir)
    if paths.root.exists() and not paths.root.is_dir():
        raise StargalError(f"--data-dir {paths.root}: is a file, not a folder")
    return paths


def holder_text(prog: str) -> str:
    """How a run names itself in the lock file of the folder it holds (what a run waiting for it prints)."""
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid {os.getpid()}: {prog}, started {started}"


def open_data_folder(args: argparse.Namespace, *, shared: bool = False, existing: bool = False) -> DataPaths:
    """The data folder of ``--data-dir``, locked for this run: exclusively for a stage that writes it (another
    run on the same folder waits until this one ends), ``shared`` for one that only reads it (predict). A reader
    holds only the publication lock, which a stage takes just while it renames outputs into place: predict runs
    while a stage trains, and reads whole output sets. A stage also removes the temporary files an interrupted
    run left behind (once no reader is writing its own). ``existing``: a stage that reads an earlier stage's outputs
    refuses a folder that does not exist (a mistyped --data-dir), rather than making it."""
    paths = data_paths(args)
    if not paths.root.exists():
        if shared:
            return paths
        if existing:
            raise StargalError(
                f"--data-dir {paths.root}: no such folder; the stages before this one write it (00_download.py "
                f"--data-dir {shlex.quote(str(paths.root))} starts one), or name the folder they wrote"
            )
        paths.root.mkdir(parents=True)
    holder = holder_text(os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "stargal")

    def waiting(text: str) -> None:
        log.warning("%s: in use by another run (%s); waiting for it to finish", paths.root, text or "unknown")

    if shared:
        fsio.lock_folder(
            paths.publish_lock,
            shared=True,
            on_wait=lambda _: log.info("%s: waiting for a run to finish writing its outputs", paths.root),
        )
        return paths
    if fsio.lock_folder(paths.lock_file, on_wait=waiting, holder=holder):
        fsio.guard_publications(paths.publish_lock)
        with fsio.publishing():  # a reader's own temporary files are not stale
            removed = fsio.remove_stale_temporaries(paths.root)
        if removed:
            log.info("removed %d temporary file(s) an interrupted run left, e.g. %s", len(removed), removed[0])
    return paths


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Log stargal's progress to stderr (warnings only with ``-q``); silence chatty libraries, and TensorFlow's
    start-up lines (``stargal.model.import_tensorflow``), unless ``verbose``. Child processes inherit the choice."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    if verbose:
        os.environ["STARGAL_VERBOSE"] = "1"
        return
    os.environ.pop("STARGAL_VERBOSE", None)
    for noisy in ("matplotlib", "PIL", "urllib3", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for noisy in ("tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


# what to do about the system errors a user can meet
_OS_ERROR_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space (or write to another disk) and rerun; the previous outputs are kept",
    errno.EDQUOT: "the disk quota is exhausted: free some space and rerun; the previous outputs are kept",
    errno.EFBIG: "the file is larger than this file system or the process's file-size limit allows",
    errno.EROFS: "the folder is read-only: write to a writable folder (--data-dir, or the output you named); a run whose "
    "outputs are current writes nothing",
    errno.EACCES: "no permission: check the owner and permissions, or use another --data-dir or --out",
    errno.EPERM: "not permitted: check the owner and permissions, or use another --data-dir or --out",
    errno.EISDIR: "that is a folder: give a file name",
    errno.ENOTDIR: "part of that path is a file, not a folder",
    errno.ENOENT: "it does not exist: check the path",
    errno.EIO: "input/output error: the disk or the file is damaged",
    errno.ENAMETOOLONG: "the name is too long for this file system",
}


def describe_os_error(exc: OSError) -> str:
    """One line for a system error: the file, what went wrong, what to do."""
    where = exc.filename if exc.filename is not None else "(no file named)"
    if exc.filename2 is not None:
        where = f"{exc.filename} -> {exc.filename2}"
    what = exc.strerror or str(exc)
    advice = _OS_ERROR_ADVICE.get(exc.errno)
    return f"{where}: {what}" + (f" ({advice})" if advice else "")


def _debug_requested(argv: Sequence[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args or os.environ.get("STARGAL_DEBUG", "") not in ("", "0")


class Terminated(BaseException):
    """SIGTERM, raised where the run is, so that it unwinds as an interrupt does (not an error: BaseException)."""


# The user's ways of stopping a run (Ctrl-C; a batch system's kill, docker stop), and what a run says and ends
# with for each: "interrupted" 130, "terminated" 143, as run_main does.
STOP_SIGNALS = fsio.STOP_SIGNALS
STOP_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def stop_exception(signum: int) -> BaseException:
    """The exception a stop signal unwinds a run with: KeyboardInterrupt for SIGINT, Terminated for SIGTERM."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def stopped_by(returncode: int | None) -> signal.Signals | None:
    """The stop signal a child process ended by, from its return code: killed by it (-N, e.g. while Python still
    started, before run_main's handler) or exiting as run_main does on it (128 + N); None for any other end."""
    for signum in STOP_SIGNALS:
        if returncode in (-signum, 128 + signum):
            return signum
    return None


def raise_terminated(signum, frame) -> None:
    """SIGTERM handler: raise Terminated where the run is. Any further SIGTERM is ignored while the run unwinds (it
    stops already): a SIGTERM to the whole process group (``timeout``, a batch system) reaches a stage twice, from the
    group and passed on by run_scripts.sh, and the second, ending it at once, lost its "terminated" line and the
    removal of its half-written files. SIGKILL (or Ctrl-C) still ends a run whose unwinding hangs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def _starting_handler(signum: int) -> bool:
    """Whether ``signum`` still has bootstrap's handler for the imports (a quiet one-line exit)."""
    return getattr(signal.getsignal(signum), "__name__", "") == "_interrupted_while_starting"


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a script's main; every failure becomes one line naming the file or argument and what to do (exit
    status 2 for StargalError, bad input or data; 1 for system errors and anything unexpected); ``--debug``
    (or STARGAL_DEBUG=1) prints the traceback first."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "stargal"
    debug = _debug_requested(argv)
    hint = "" if debug else " (rerun with --debug for the traceback)"
    if _starting_handler(signal.SIGINT):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # bootstrap's quiet exit covers the imports only
    if _starting_handler(signal.SIGTERM) or signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, raise_terminated)  # unwind as for Ctrl-C: worker pools stopped, locks let go
    try:
        try:
            status = main(argv)
        except (KeyboardInterrupt, Terminated):
            fsio.remove_interrupted_writes()  # what the workers it stopped were writing: half-written files
            raise
        finally:
            fsio.release_folder_locks()  # the data folder is free for the next run as soon as this one ends
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        _exit_now(130)
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        _exit_now(128 + signal.SIGTERM)
    except StargalError as exc:
        message = " ".join(str(exc).split())
        _fail(prog, debug, message + added_options_note(message), 2)
    except BrokenPipeError:
        # the reader of our output stopped reading (`| head -1`): end as Unix tools do, silently, with SIGPIPE's
        # status; outputs are whole or absent as on any stop
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit would fail again
        _exit_now(128 + signal.SIGPIPE)
    except OSError as exc:
        _fail(prog, debug, describe_os_error(exc), 1)
    except MemoryError:
        _fail(prog, debug, f"out of memory: use fewer --workers or a machine with more memory{hint}", 1)
    except Exception as exc:  # anything else is a bug: still one line, the traceback with --debug
        text = " ".join(str(exc).split())[:300]
        _fail(prog, debug, f"unexpected {type(exc).__name__}: {text}{hint}; please report it", 1)
    sys.exit(int(status or 0))


def _exit_now(status: int) -> None:
    """End an interrupted run at once. The interpreter's own exit can wait forever on a worker pool's result
    reader left mid-message by a worker that was stopped (seen in 02 after Ctrl-C), and makes TensorFlow print
    noise from its finalizers; every output is already whole or absent, and the locks are let go."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _fail(prog: str, debug: bool, message: str, status: int) -> None:
    if debug:
        traceback.print_exc()
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(status)
