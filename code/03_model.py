#!/usr/bin/env python3
"""Stage 03: train a CNN star/galaxy classifier on a prepared dataset and evaluate it on every split.

Architectures: the course project's base and regularised CNNs, and stargal's own (default). The model
applies the dataset's normalisation itself, so it takes raw nanomaggie patches; the decision threshold
is chosen on validation data only. Writes data/models/NAME/ and plots under data/reports/training/NAME/.
``--ensemble`` combines networks trained from several seeds into one model that averages their p(star).
"""

from __future__ import annotations

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

import argparse

from stargal import cli
from stargal.augment import POLICIES
from stargal.model import ARCHITECTURES


def build_parser():
    parser = cli.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="dataset name (default: the one stage 02 prepared last)")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default=None, help="network (default: stargal)")
    parser.add_argument(
        "--config",
        default=None,
        metavar="JSON",
        help='hyper-parameters from a JSON file, e.g. a tuning best.json {"architecture", "hyperparameters"}',
    )
    parser.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=None,
        help="maximum epochs (default: 30 for stargal, 60 for the reference models)",
    )
    parser.add_argument(
        "--patience",
        type=cli.positive_int,
        default=None,
        help="early-stopping patience on val loss (default: 10 for stargal, 8 for the reference models)",
    )
    parser.add_argument("--batch-size", type=cli.positive_int, default=None, help="batch size (default 256)")
    parser.add_argument("--learning-rate", type=float, default=None, help="initial learning rate")
    parser.add_argument(
        "--augment",
        choices=tuple(POLICIES),
        default=None,
        help="streamed augmentation (default: d4 for stargal, none for the reference models)",
    )
    parser.add_argument(
        "--schedule",
        choices=("none", "cosine", "plateau"),
        default=None,
        help="learning-rate schedule (default: cosine for stargal, none for the reference models)",
    )
    parser.add_argument("--class-weight", choices=("none", "balanced"), default=None, help="class weighting")
    parser.add_argument(
        "--seeds",
        type=cli.positive_int,
        default=None,
        metavar="N",
        help="train N models with seeds SEED, SEED+1, ... and report mean and spread (in reports/training/seeds-NAME, "
        "without --name seeds-ARCHITECTURE-DATASET)",
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation: average over the 8 symmetries (default: on for stargal, off for the reference; an "
        "ensemble: as its members)",
    )
    parser.add_argument("--name", default=None, help="model name (default ARCHITECTURE-DATASET-sSEED)")
    parser.add_argument(
        "--compare-augmentation",
        action="store_true",
        help="train without and with augmentation and write a comparison (exercise Task 1.4)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--ensemble",
        nargs="*",
        default=None,
        metavar="MODEL",
        help="combine trained models of one dataset into one that averages their p(star) (named by --name, default "
        "ensemble-DATASET); with no MODEL, the models --seeds N trains (named NAME, default ARCHITECTURE-DATASET-ensemble)",
    )
    parser.add_argument(
        "--export-onnx",
        default=None,
        metavar="MODEL",
        help="only add model.onnx (predict.py's fast engine) to a model (a name or a folder) trained by an earlier "
        "stargal",
    )
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    from stargal.dataset import check_selection
    from stargal.paths import check_folder_name
    from stargal.stages import training
    from stargal.stages.training_summary import ensemble_summary, run_summary
    from stargal.tables import records_markdown
    from stargal.train_options import options_from_args

    if args.export_onnx:
        paths = cli.data_paths(args)
        folder = training.find_model_folder(paths, args.export_onnx, "--export-onnx")
        if folder.resolve().is_relative_to(paths.root.resolve()):
            cli.open_data_folder(
                args, existing=True
            )  # a model of the data folder: lock it, as every run that writes there does
        record = training.add_onnx(folder)
        print(
            f"{args.export_onnx}: model.onnx added (largest p_star difference from Keras {record['max_abs_diff']:.1e})"
        )
        return 0
    if args.name is not None:
        check_folder_name(args.name, "--name")  # before any training: a path or LATEST fails only at its end
    options = options_from_args(args)
    paths = cli.open_data_folder(args, existing=True)
    if args.ensemble:  # named members carry their own dataset
        result = training.combine_models(paths, args.ensemble, args.name, force=args.force, tta=args.tta)
        print(ensemble_summary(result))
        return 0
    check_selection(paths, args.dataset, cli.given_selection(args))
    if args.ensemble is not None and (args.seeds or 1) < 2:
        parser.error("--ensemble without models combines the models of --seeds N (N >= 2)")
    seeds = [args.seed + i for i in range(args.seeds)] if args.seeds else None
    if args.ensemble is not None:  # the ensemble's place too, before its members are trained, not after
        from stargal.dataset import resolve_dataset

        dataset = resolve_dataset(paths, args.dataset)
        training.check_output_places(paths, args.name or f"{options.resolved().architecture}-{dataset}-ensemble")
    if args.compare_augmentation:
        result = training.compare_augmentation(paths, args.dataset, options, seeds)
        print(records_markdown(result["rows"], training.COMPARISON_COLUMNS), end="")
        print(f"report: {result['report']}")
        return 0
    result = training.run_training(paths, args.dataset, options, seeds)
    print(run_summary(result))
    if args.ensemble is not None:
        name = args.name or f"{options.resolved().architecture}-{result['dataset']}-ensemble"
        members = [run["name"] for run in result["runs"]]
        print(ensemble_summary(training.combine_models(paths, members, name, force=args.force, tta=args.tta)))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
