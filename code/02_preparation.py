#!/usr/bin/env python3
"""Stage 02: cut object-centred patches from the aligned cubes into leakage-free train/val/test splits.

Splits by field lists (default: the reference) and by sky regions (--test-region, --exclude-region; with
--train-fields or --val-fields and a --test-region but no --test-fields, the test set is the region's objects);
a leakage guard removes from train/val every source of the test set, also when catalogued in an
overlapping neighbouring field, and every patch centred within half a patch of a test object.
Writes data/datasets/NAME/ (printed at the end) and a split report under data/reports/splits/NAME/.
"""

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

from stargal import cli, splits
from stargal.config import PATCH_SIZE, SPLITS
from stargal.patches import EDGE_POLICIES
from stargal.stages.preparation import describe_splits, prepare


def main(argv=None) -> int:
    parser = cli.make_parser(__doc__.splitlines()[0], splits=True, workers=True, seed=False)
    group = parser.add_argument_group("patches and splits")
    group.add_argument("--patch-size", type=int, default=PATCH_SIZE, help="patch side in pixels (odd)")
    group.add_argument(
        "--edge", choices=EDGE_POLICIES, default="pad",
        help="patches crossing the frame edge: pad with 0 (flagged edge_padded) or drop the object",
    )  # fmt: skip
    group.add_argument(
        "--test-region", nargs=4, type=float, action="append", default=[], metavar=("RA_MIN", "RA_MAX", "DEC_MIN", "DEC_MAX"),
        help="sky box (degrees) whose objects, of any field of the splits, go to the test set and leave train/val "
        "(repeatable); with --train-fields or --val-fields but no --test-fields, the test set is these objects alone",
    )  # fmt: skip
    group.add_argument(
        "--exclude-region", nargs=4, type=float, action="append", default=[], metavar=("RA_MIN", "RA_MAX", "DEC_MIN", "DEC_MAX"),
        help="sky box (degrees) removed from train and validation (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--dataset", default=None, metavar="NAME", help="dataset name; derived from the options when omitted"
    )
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    if args.dataset is not None:
        splits.check_dataset_name(args.dataset)  # "" too: refused, not taken for "derive the name"
    fs = cli.field_set(args)
    cli.check_default_splits(args, fs)
    test_regions = [splits.parse_region(r, "--test-region") for r in args.test_region]
    exclude_regions = [splits.parse_region(r, "--exclude-region") for r in args.exclude_region]
    summary = prepare(
        cli.open_data_folder(args, existing=True),
        fs,
        patch_size=args.patch_size,
        edge=args.edge,
        test_regions=test_regions,
        exclude_regions=exclude_regions,
        name=args.dataset,
        force=args.force,
        workers=args.workers,
        scheduler=args.scheduler,
    )
    counts = summary["counts"]
    state = "already current" if summary.get("skipped") else f"prepared in {summary.get('seconds', 0):.1f} s"
    for s in SPLITS:
        c = counts[s]
        frac = "-" if c["star_fraction"] is None else f"{100 * c['star_fraction']:.1f}% stars"
        print(f"{s:5s}: {c['n']:6d} patches ({frac})")
    for label, text in describe_splits(summary):  # the fields, and what --test-region / --exclude-region did
        print(f"{label}: {text}")
    removed = ", ".join(f"{k} {v}" for k, v in summary["removed"].items() if v)
    print(f"removed: {removed or 'none'}")
    print(f"dataset {state}: {summary['name']}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
