"""Shared command-line pieces of the numbered scripts: common options and one-line error handling."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .config import REFERENCE, SEED, FieldSet
from .errors import StargalError
from .paths import DataPaths, FieldId


def _field_list(text: str) -> tuple[int, ...]:
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
    return tuple(fields)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative: {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive: 0")
    return value


class _FieldsAction(argparse.Action):
    """Accept fields as several arguments (--fields 80 103) or one list ("80,103")."""

    def __call__(self, parser, namespace, values, option_string=None):
        fields: list[int] = []
        for value in values:
            try:
                fields.extend(_field_list(value))
            except argparse.ArgumentTypeError as exc:
                parser.error(f"argument {option_string}: {exc}")
        setattr(namespace, self.dest, tuple(fields))


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
    scheduler_help: str = SCHEDULER_HELP,
) -> argparse.ArgumentParser:
    """A parser with the options every numbered script shares (``--workers``/``--scheduler`` with ``workers``;
    the split field lists with ``splits``). ``stargal.pipeline`` derives its pass-through list from it."""
    parser = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    ref = REFERENCE
    group = parser.add_argument_group("data selection (defaults: the reference configuration)")
    group.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    group.add_argument("--rerun", type=_non_negative_int, default=ref.rerun, help="SDSS rerun")
    group.add_argument("--run", type=_non_negative_int, default=ref.run, help="SDSS run")
    group.add_argument(
        "--camcol", type=int, choices=range(1, 7), default=ref.camcol, metavar="1-6", help="camera column"
    )
    group.add_argument(
        "--fields",
        nargs="+",
        action=_FieldsAction,
        default=None,
        metavar="F",
        help=f"fields to process (default: train+val+test fields, {' '.join(map(str, ref.fields))})",
    )
    if splits:
        group.add_argument(
            "--train-fields",
            nargs="+",
            action=_FieldsAction,
            default=ref.train_fields,
            metavar="F",
            help="training fields",
        )
        group.add_argument(
            "--val-fields",
            nargs="+",
            action=_FieldsAction,
            default=ref.val_fields,
            metavar="F",
            help="validation fields",
        )
        group.add_argument(
            "--test-fields", nargs="+", action=_FieldsAction, default=ref.test_fields, metavar="F", help="test fields"
        )
    parser.add_argument("--seed", type=int, default=SEED, help="random seed")
    parser.add_argument("--force", action="store_true", help="redo work whose outputs are already current")
    if workers:
        parser.add_argument(
            "--workers", type=positive_int, default=workers_default or default_workers(), help=workers_help
        )
        parser.add_argument("--scheduler", default=None, metavar="ADDRESS", help=scheduler_help)
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the summary")
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's start-up messages and library warnings"
    )
    return parser


def default_workers() -> int:
    """One worker per core, at most four."""
    return max(1, min(4, os.cpu_count() or 1))


def field_set(args: argparse.Namespace) -> FieldSet:
    """The FieldSet the arguments describe; --fields defaults to the union of the split fields."""
    train = tuple(getattr(args, "train_fields", REFERENCE.train_fields))
    val = tuple(getattr(args, "val_fields", REFERENCE.val_fields))
    test = tuple(getattr(args, "test_fields", REFERENCE.test_fields))
    same_run = (args.rerun, args.run, args.camcol) == (REFERENCE.rerun, REFERENCE.run, REFERENCE.camcol)
    if args.fields is not None:
        fields = tuple(dict.fromkeys(args.fields))
    elif hasattr(args, "train_fields") or same_run:
        fields = tuple(sorted(set(train) | set(val) | set(test)))
    else:
        raise StargalError("--fields is required when --rerun/--run/--camcol differ from the reference")
    return FieldSet(args.rerun, args.run, args.camcol, fields, train, val, test)


def field_ids(fs: FieldSet) -> list[FieldId]:
    """The FieldIds of every field of ``fs``."""
    return [FieldId(fs.rerun, fs.run, fs.camcol, f) for f in fs.fields]


def data_paths(args: argparse.Namespace) -> DataPaths:
    """The data folder of ``--data-dir`` (the project's data/ by default)."""
    return DataPaths.at(args.data_dir)


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


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a script's main; StargalError becomes a one-line message and exit status 2."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "stargal"
    try:
        status = main(argv)
    except StargalError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(int(status or 0))
