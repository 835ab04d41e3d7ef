#!/usr/bin/env python3
"""Stage 01: align the five bands of each field onto the reference band's pixel grid, list catalog objects
in pixel coordinates, write the exercise tensors and the alignment report.

Examples::

    01_alignment.py                                  # the reference fields, 4 worker processes
    01_alignment.py --fields 80 --workers 1 --force  # redo one field
    01_alignment.py --scheduler tcp://host:8786      # fields on a Dask cluster

Outputs: data/aligned/RERUN/RUN/CAMCOL/cube-*.fits (float32 [5, rows, cols], NaN where a band has no
cover) and objects-*.csv, data/tensors/RERUN-RUN-CAMCOL/, data/reports/alignment/. Current outputs are
skipped (--force redoes them). Exit status 0 on success, 2 on bad input (one-line error naming the file).
"""

from __future__ import annotations

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

from stargal import cli
from stargal.config import BANDS, REFERENCE_BAND
from stargal.stages.alignment import run_alignment


def build_parser():
    parser = cli.make_parser(__doc__.split("\n\n")[0], splits=False, workers=True, seed=False)
    group = parser.add_argument_group("alignment")
    group.add_argument("--ref-band", choices=BANDS, default=REFERENCE_BAND, help="band whose pixel grid the cube uses")
    group.add_argument("--no-reports", action="store_true", help="skip the statistics and plots")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    fs = cli.field_set(args)
    paths = cli.open_data_folder(args, existing=True)
    result = run_alignment(
        paths, fs, ref_band=args.ref_band, workers=args.workers, scheduler=args.scheduler,
        force=args.force, reports=not args.no_reports,
    )  # fmt: skip
    aligned, written = result["aligned"], result["objects_written"]
    print(
        f"fields {' '.join(map(str, result['fields']))}: aligned {len(aligned)}, up to date {len(result['fields']) - len(aligned)}"
    )
    print(f"object coordinates: {result['coordinates']}" + (f" ({len(written)} table(s) written)" if written else ""))
    if "totals" in result and result["totals"]["objects"]:
        t = result["totals"]
        print(f"objects: {t['objects']} distinct ({t['galaxies']} galaxies, {t['stars']} stars)")
        print(f"report: {result['reports']}")
    if result["tensors"]:
        print(f"tensors: {result['tensors']}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
