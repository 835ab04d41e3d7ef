#!/usr/bin/env python3
"""Classify any sky coordinates of an SDSS field as star or galaxy with a trained model.

Examples::

    predict.py --run 8162 --camcol 6 --field 80 --ra 246.12 --dec 39.87
    predict.py --cube data/aligned/301/4510/4/cube-004510-4-0030.fits --csv positions.csv --out p.csv

Writes a CSV with ra, dec, x, y, p_star, label, status, one row per input coordinate in input order.
status is ok, outside (not in the field), edge (too near the border for the model's edge policy) or
no_data (a band does not cover the position); p_star and label are empty unless status is ok.
"""

from __future__ import annotations

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

import numpy as np

from stargal import cli
from stargal.errors import StargalError
from stargal.paths import FieldId


def build_parser():
    parser = cli.make_parser(__doc__.split("\n\n")[0])
    group = parser.add_argument_group("prediction")
    group.add_argument("--model", default=None, help="model name, folder or .keras file (default: latest trained)")
    group.add_argument(
        "--cube", default=None, help="aligned cube FITS of the field (instead of --run/--camcol/--field)"
    )
    group.add_argument("--field", type=int, default=None, help="field number (with --rerun/--run/--camcol)")
    group.add_argument(
        "--ra", type=float, nargs="+", action="extend", default=[], metavar="DEG", help="right ascension(s)"
    )
    group.add_argument(
        "--dec", type=float, nargs="+", action="extend", default=[], metavar="DEG", help="declination(s)"
    )
    group.add_argument("--csv", default=None, help="CSV file with ra,dec columns (degrees)")
    group.add_argument("--out", default=None, help="output CSV (default: under data/predictions/)")
    return parser


def coordinates(args) -> tuple[np.ndarray, np.ndarray]:
    from stargal.predict import read_coordinates, validate_coordinates

    if args.csv and (args.ra or args.dec):
        raise StargalError("give coordinates either with --csv or with --ra/--dec, not both")
    if args.csv:
        return read_coordinates(args.csv)
    if not args.ra:
        raise StargalError("no coordinates: give --ra/--dec values or --csv FILE")
    if len(args.ra) != len(args.dec):
        raise StargalError(f"--ra has {len(args.ra)} values but --dec has {len(args.dec)}")
    ra, dec = np.array(args.ra), np.array(args.dec)
    validate_coordinates(ra, dec, "--ra/--dec")
    return ra, dec


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    from stargal.stages.predict import run_predict

    ra, dec = coordinates(args)
    field = args.field
    if field is None and args.fields and len(args.fields) == 1:
        field = args.fields[0]
    fid = FieldId(args.rerun, args.run, args.camcol, field) if field is not None else None
    if args.cube is None and fid is None:
        raise StargalError("give a field: --cube PATH or --field N (with --rerun/--run/--camcol)")
    out, pred = run_predict(
        cli.data_paths(args), ra=ra, dec=dec, model=args.model, cube_path=args.cube, fid=fid, out=args.out
    )
    counts = pred.counts()
    stars = int(np.count_nonzero(pred.label == "star"))
    print(
        f"{len(pred)} coordinates: {counts['ok']} classified ({stars} star, {counts['ok'] - stars} galaxy), "
        f"{counts['outside']} outside, {counts['edge']} edge, {counts['no_data']} no data -> {out}"
    )
    return 0


if __name__ == "__main__":
    cli.run_main(main)
