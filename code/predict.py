#!/usr/bin/env python3
"""Classify any sky coordinates of an SDSS field, or every catalogued object of it, as star or galaxy.

Examples::

    predict.py --run 8162 --camcol 6 --field 80 --ra 331.7172 --dec 26.9407    # a star of the demo sky's field 80
    predict.py --field 80 --ra 22:06:52.13 --dec +26:56:26.7 --out p.ecsv    # sexagesimal: RA in hours
    predict.py --field 80 --ra 22h06m52.13s --dec=26d56m26.7s --out p.fits
    predict.py --cube data/aligned/301/4510/4/cube-004510-4-0030.fits --csv positions.csv --out p.csv
    predict.py --field 80 --csv targets.fits --out p.fits                    # a FITS (or ECSV) table of ra, dec
    predict.py --field 80 --all --out field80.fits                           # every catalogued object
    predict.py --run 4510 --camcol 4 --field 30 --detect --model pretrained  # every source found in the field

--csv reads a table with ra and dec columns (any case): a CSV file, values in degrees or sexagesimal (RA in hours),
or, by extension, an ECSV (.ecsv) or FITS table (.fits, .fit, .fits.gz: the first table HDU), numbers in degrees
or in their column's angle unit (RA also in hourangle or h), text as in a CSV.

Writes one row per input coordinate (with --csv, the file's other columns first: a CSV's as text, an ECSV or FITS
table's with their own types and units; with --all: per catalogued object, with objid, r_psfmag and the
catalog's type; with --detect: per source sep finds in the field, with its r magnitude and size, and
saturated: true where the source's r-band core saturated (a star brighter than r ~ 14), whose r_mag is then left
empty, since its flux is only a lower limit), in input order: ra, dec, x, y, p_star, label, status. status is ok, outside (not in the
field), edge (too near the border for the model's edge policy; with --detect, a source centred within 2 px
of the border, which cuts it), no_data (a band does not cover the
position), no_source (--ra/--dec, --csv: the frame shows no source there, such as blank sky), off_peak (--ra/--dec,
--csv: light there, but no source centred on it: a bright star's wing, or more than ~1" from a source's centre) or
artefact (--detect, --ra/--dec, --csv: seen in the r band alone, a cosmic ray or hot pixel, or a noise peak on
a noisy r-band column that the other bands do not show); p_star and label
are empty unless status is ok. --out's extension chooses the format: .csv,
.ecsv (units; model, version, threshold, field and sky as metadata) or .fits (binary table, the same
metadata as header keywords).
"""

from __future__ import annotations

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

import re

from stargal import cli
from stargal.errors import StargalError
from stargal.paths import FieldId
from stargal.presence import MIN_SNR
from stargal.stages.predict import ENGINE_HELP, ENGINES


def build_parser():
    parser = cli.make_parser(__doc__.split("\n\n")[0], seed=False)
    # Values such as "-12:34:56" are declinations, not options (argparse only knows "-12.5" by itself).
    parser._negative_number_matcher = re.compile(r"^-\d")
    group = parser.add_argument_group("prediction")
    group.add_argument(
        "--model",
        default=None,
        help="model name, folder (or its model.keras) or 'pretrained' (default: the latest trained, else pretrained)",
    )
    group.add_argument(
        "--cube", default=None, help="aligned cube FITS of the field (instead of --run/--camcol/--field)"
    )
    group.add_argument(
        "--field", type=cli.non_negative_int, default=None, help="field number (with --rerun/--run/--camcol)"
    )
    group.add_argument(
        "--ra", nargs="+", action="extend", default=[], metavar="RA",
        help="right ascension(s): degrees, or sexagesimal hours (12:34:56.7, 12h34m56.7s)",
    )  # fmt: skip
    group.add_argument(
        "--dec", nargs="+", action="extend", default=[], metavar="DEC",
        help="declination(s): degrees, or sexagesimal (+12:34:56, 12d34m56s)",
    )  # fmt: skip
    group.add_argument(
        "--csv", default=None, metavar="FILE",
        help="table with ra,dec columns (or RAJ2000/DEJ2000, RA_ICRS/DE_ICRS, ALPHA_J2000/DELTA_J2000, ...): CSV "
        "(degrees or sexagesimal; commas, tabs or semicolons; '#' lines before the header skipped, as SkyServer "
        "writes), or by extension ECSV (.ecsv), FITS (.fits, .fit, .fits.gz: first table HDU, an SDSS sweep too) or "
        "VOTable (.vot, .votable, .xml), numbers in degrees or their column's angle unit; other columns are carried",
    )  # fmt: skip
    group.add_argument(
        "--all", action="store_true", help="every catalogued object of the field (stage 01's objects table)"
    )
    group.add_argument(
        "--detect",
        action="store_true",
        help="every source found in the field, point sources down to r-band S/N 5 as in SDSS's catalog (no catalog "
        "needed), with its r_mag; saturated stars (r < ~14) get saturated=True and an empty r_mag",
    )
    group.add_argument(
        "--tta", choices=("auto", "all", "off"), default="auto",
        help="test-time augmentation of a model trained with it: the 8-symmetry mean near the threshold (auto), "
        "for every patch (all, 8 times slower) or none",
    )  # fmt: skip
    group.add_argument("--engine", choices=ENGINES, default="auto", help=ENGINE_HELP)
    group.add_argument(
        "--min-snr", type=float, default=None, metavar="S",
        help="classify a --ra/--dec or --csv position only where the frame shows a source, with PSF-matched S/N "
        f"combined over the bands >= S; elsewhere status no_source (default: {MIN_SNR}; 0 classifies every position)",
    )  # fmt: skip
    group.add_argument(
        "--threshold", type=float, default=None, metavar="P",
        help="call star where p_star >= P (0 < P < 1) instead of at the model's own threshold, chosen on its "
        "validation data: lower for more complete star lists, higher for purer ones (default: the model's)",
    )  # fmt: skip
    group.add_argument(
        "--prior", default="training", metavar="SHARE",
        help="the share of stars the threshold assumes: training (the model's training sky's: 64 %% for the shipped "
        "model), field (estimated from the p_star of the sources detected in the field: a purer star list where "
        "stars are rarer, as at high Galactic latitude, at the cost of faint stars; README: Threshold, TTA and "
        "engine) or a number between 0 and 1 (default: training)",
    )  # fmt: skip
    group.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="output .csv, .ecsv or .fits (default: CSV under data/predictions/, named by the field, model and request)",
    )
    return parser


def coordinates(args) -> tuple:
    """(ra, dec, columns to carry) from the arguments; (None, None, None) for --all and --detect."""
    from stargal.predict_io import angles_or_error, read_coordinate_table, split_sexagesimal, validate_coordinates

    ways = (("--csv", args.csv), ("--ra/--dec", args.ra or args.dec), ("--all", args.all), ("--detect", args.detect))
    given = [name for name, on in ways if on]
    if len(given) > 1:
        raise StargalError(f"give coordinates one way: {' or '.join(given)}, not both")
    if args.all or args.detect:
        if args.min_snr is not None:  # silently ignored before: a user asking for S/N 50 got every source
            raise StargalError(
                f"--min-snr applies to --ra/--dec and --csv positions; {given[0]} classifies "
                + ("the catalog's objects" if args.all else "the sources it finds (point sources down to S/N 5)")
            )
        return None, None, None
    if args.csv:
        return read_coordinate_table(args.csv)
    if not args.ra and not args.dec:
        raise StargalError("no coordinates: give --ra/--dec values, --csv FILE, --all or --detect")
    if len(args.ra or []) != len(args.dec or []):  # before the split check: one of them may be absent
        raise StargalError(f"--ra has {len(args.ra or [])} values but --dec has {len(args.dec or [])}")
    if split_sexagesimal(args.ra) and split_sexagesimal(args.dec):
        ra, dec = " ".join(args.ra), " ".join(args.dec)
        raise StargalError(
            f"--ra {ra} --dec {dec}: three positions, or one sexagesimal coordinate split at its spaces? quote it: "
            f"--ra '{ra}' --dec '{dec}' (three positions in degrees: write them with a decimal point, or use --csv)"
        )
    where = lambda i: f"--ra/--dec: coordinate {i + 1}"  # noqa: E731
    ra, dec = angles_or_error(args.ra, "ra", where), angles_or_error(args.dec, "dec", where)
    validate_coordinates(ra, dec, where=where)
    return ra, dec, None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    import numpy as np

    from stargal.predict import STATUS_ARTEFACT, STATUS_OFF_PEAK, agreement_text, catalog_agreement
    from stargal.stages.predict import check_options, run_predict

    # the options first: a bad --threshold was named only after a --csv table was read (and its warnings shown)
    check_options(args.threshold, args.tta, MIN_SNR if args.min_snr is None else args.min_snr, args.prior)
    ra, dec, carried = coordinates(args)
    if args.cube is not None and (args.field is not None or cli.given_selection(args)):
        named = [f"--{k}" for k in cli.given_selection(args)] + (["--field"] if args.field is not None else [])
        raise StargalError(
            f"give the field one way: --cube PATH or --field N (with --rerun/--run/--camcol), not both "
            f"(--cube with {', '.join(named)}: the cube's own field is classified)"
        )
    field = args.field
    if args.fields and (len(args.fields) > 1 or field not in (None, args.fields[0])):
        raise StargalError(
            f"--fields {' '.join(map(str, args.fields))}: predict.py classifies one field; give it as --field N"
            + (f" (--field {field} is given too)" if field is not None else "")
        )
    if field is None and args.fields:
        field = args.fields[0]
    fid = FieldId(args.rerun, args.run, args.camcol, field) if field is not None else None
    if args.cube is None and fid is None:
        raise StargalError("give a field: --cube PATH or --field N (with --rerun/--run/--camcol)")
    min_snr = MIN_SNR if args.min_snr is None else args.min_snr
    out, pred = run_predict(
        cli.open_data_folder(args, shared=True), ra=ra, dec=dec, model=args.model, cube_path=args.cube, fid=fid,
        out=args.out, all_objects=args.all, detect=args.detect, tta=args.tta, engine=args.engine,
        min_snr=min_snr, threshold=args.threshold, prior=args.prior, inputs=(args.csv,) if args.csv else (),
        carried=carried,
    )  # fmt: skip
    counts = pred.counts()
    stars = int(np.count_nonzero(pred.label == "star"))
    what = "object" if args.all else "source" if args.detect else "coordinate"
    print(
        f"{len(pred)} {what}{'' if len(pred) == 1 else 's'}: {counts['ok']} classified ({stars} star, "
        f"{counts['ok'] - stars} galaxy), {counts['outside']} outside, {counts['edge']} edge, "
        f"{counts['no_data']} no data, {counts['no_source']} no source"
        f"{f', {counts[STATUS_OFF_PEAK]} off peak' if counts[STATUS_OFF_PEAK] else ''}"
        f"{f', {counts[STATUS_ARTEFACT]} artefact' if args.detect or counts[STATUS_ARTEFACT] else ''} -> {out}"
    )
    if pred.saturated is not None and pred.saturated.any():
        print(
            f"{int(pred.saturated.sum())} saturated in r (saturated=True): their r_mag is left empty, their cores "
            "saturated, so a measured flux would only be a lower limit (the star is brighter)"
        )
    agreement = catalog_agreement(pred)
    if agreement is not None:
        print(agreement_text(agreement))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
