#!/usr/bin/env python3
"""Typeset report.pdf (a short paper, at most 10 pages) from a pipeline run's outputs in the data folder.

Page 1: what was run, on which sky, and the test-set table of our model against the reference models and
the majority and random baselines. Then one section per step of the pipeline, in its order, with ruled
tables and numbered, captioned figures from data/reports/; a step that has not run gets one line saying so.
Written to data/reports/report.pdf (or --output).
"""

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

from pathlib import Path

from stargal import cli
from stargal.errors import StargalError
from stargal.stages.report import build_report, report_dataset


def main(argv=None) -> int:
    parser = cli.make_parser(__doc__.splitlines()[0], seed=False)
    parser.add_argument(
        "--output", default=None, metavar="PDF", help="where to write (default: data/reports/report.pdf)"
    )
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    output = Path(args.output).expanduser().resolve() if args.output else None
    if not cli.data_paths(args).root.is_dir():  # a mistyped --data-dir gave an empty report, exit 0
        raise StargalError(f"--data-dir {cli.data_paths(args).root}: no such folder (no stage has run there)")
    paths = cli.open_data_folder(args)
    shown = report_dataset(paths)
    if shown:  # the options confirm the dataset the report shows (the latest model's), not just the latest one
        from stargal.dataset import check_selection

        check_selection(paths, shown, cli.given_selection(args))
    result = build_report(paths, output, force=args.force)
    stale, refused = result.get("stale") or [], result.get("not_shown") or []
    missing = [title for title, ran in result["sections"].items() if not ran and title not in stale + refused]
    state = ", current, kept" if result.get("skipped") else ""
    print(f"report: {result['path']} ({result['pages']} pages{state})")
    if missing:
        print(f"not run: {', '.join(missing)}")
    if stale:
        print(f"stale (left out; the report says what redoes them): {', '.join(stale)}")
    if refused:
        print(f"not shown (the report says why): {', '.join(refused)}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
