#!/usr/bin/env python3
"""Evaluate a model on real SDSS fields: against the camcol's sweeps where the folder holds them, the stellar locus
and bright stars everywhere.

For each field of --sample (every field whose five frames are there): stage 00 takes the frames from that folder,
stage 01 aligns them and measures the PSF, sep finds the sources and the model classifies them as predict.py
does. A field beside its camcol's star and galaxy sweeps (calibObj-RUN-C-star/gal.fits.gz) is also scored on
every object they list (accuracy, MCC, errors per magnitude, against SDSS's types). Writes real_sky.json,
real_sky.md, figures and one CSV of classified sources per field under data/reports/real_sky/ (--out: a folder
outside the data folder, or in its reports/). A field of stargal's simulated sky (frames flagged SIMULAT = T) is
evaluated all the same and marked simulated wherever it is named.
"""

from __future__ import annotations

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

import argparse
from pathlib import Path

from stargal import cli
from stargal.paths import DEFAULT_SAMPLE_DIR
from stargal.tables import markdown_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    parser.add_argument(
        "--sample", default=str(DEFAULT_SAMPLE_DIR), help="folder of real SDSS frames and sweeps (default: %(default)s)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model name, folder (or its model.keras) or 'pretrained' (default: the latest trained, else the pretrained one)",
    )
    parser.add_argument("--out", default=None, help="folder for the results (default: data/reports/real_sky)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="redo the evaluation, and the copy and alignment of every field, even if current",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the summary")
    parser.add_argument("--debug", action="store_true", help="on an error, also show the Python traceback")
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's start-up messages and library warnings"
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    from stargal.stages.realsky import check_sample_files, fields_phrase, require_sample_folder, run_real_sky

    require_sample_folder(Path(args.sample))  # a mistyped --sample makes no data folder
    check_sample_files(Path(args.sample))  # nor does a galaxy sweep that would be left unused
    paths = cli.open_data_folder(args)
    result = run_real_sky(paths, args.sample, model=args.model, out=args.out, force=args.force)
    for table in result["tables"]:
        print(table["title"])
        print(markdown_table(table["columns"], table["rows"]))
    done = "current, not redone" if result["skipped"] else f"evaluated in {result['seconds']:.0f} s"
    # a simulated field (SIMULAT = T) is counted as such, never as a real one
    print(f"model {result['model']}: {fields_phrase(result['fields'])} {done} -> {result['folder']}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
