#!/usr/bin/env python3
"""Tune the CNN's hyper-parameters (companion of 03_model.py): a parallel, resumable Optuna study.

Searches learning rate, dropout rates, L2 weight, filter counts, dense units and batch size on the
training and validation splits of a prepared dataset (never the test split); objective: minimum
validation loss. Rerunning continues the study up to --trials finished trials. Writes
data/tuning/NAME/{study.db,trials.csv,trials.md,best.json} and data/reports/tuning/NAME/{tuning.png,trials.md};
train the best configuration with ``03_model.py --config data/tuning/NAME/best.json``.
"""

from __future__ import annotations

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

from stargal import cli
from stargal.augment import POLICIES
from stargal.cli import positive_int


def build_parser():
    # trials run in local processes sharing one SQLite study: no Dask cluster (--scheduler) for them
    parser = cli.make_parser(__doc__.split("\n\n")[0], workers=True, scheduler_help=None)
    group = parser.add_argument_group("tuning")
    group.add_argument("--dataset", default=None, help="prepared dataset name (default: the latest)")
    group.add_argument(
        "--architecture", default="stargal", choices=("stargal", "reference_regularised", "reference_base")
    )
    group.add_argument("--trials", type=positive_int, default=20, help="finished trials the study should hold")
    group.add_argument("--epochs", type=positive_int, default=15, help="maximum epochs per trial")
    group.add_argument("--patience", type=positive_int, default=3, help="early-stopping patience per trial")
    group.add_argument(
        "--max-train",
        type=cli.non_negative_int,
        default=0,
        help="use a stratified subset of this many training patches (0: all)",
    )
    group.add_argument(
        "--augment",
        choices=tuple(POLICIES),
        default=None,
        help="augmentation policy during trials (default: what 03_model.py uses for the architecture)",
    )
    group.add_argument(
        "--name", default=None, help="study name: letters, digits, '.', '_' and '-' (default: DATASET_ARCHITECTURE)"
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    from stargal.paths import check_folder_name
    from stargal.stages.tuning import run_tuning

    if args.name is not None:
        check_folder_name(args.name, "--name")  # before the data folder is opened: a path would write outside it

    from stargal.dataset import check_selection

    paths = cli.open_data_folder(args, existing=True)
    check_selection(paths, args.dataset, cli.given_selection(args))
    result = run_tuning(
        paths,
        dataset=args.dataset,
        architecture=args.architecture,
        trials=args.trials,
        workers=args.workers,
        epochs=args.epochs,
        patience=args.patience,
        max_train=args.max_train,
        augment=args.augment,
        seed=args.seed,
        name=args.name,
        force=args.force,
    )
    best, counts = result["best"], result["counts"]
    print(
        f"study {result['name']}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, "
        f"{counts['INTERRUPTED']} interrupted ({result['seconds']:.0f} s); best trial {best['trial']} val_loss {best['value']:.4f} "
        f"(val MCC {best.get('val_mcc')}) -> {result['folder'] / 'best.json'}"
    )
    return 0


if __name__ == "__main__":
    cli.run_main(main)
