#!/usr/bin/env python3
"""Stage 04: data augmentation (D4 symmetries, brightness offsets, blur) streamed per batch during training.

Without flags: example images and a summary of the configuration under data/reports/augmentation/.
--materialize: also write a fixed augmented training set (float32) to data/augmented/DATASET/.
--experiment: the exercise's systematic experiment (none / rotation / reflection / brightness / blur /
combination) with a fixed proxy-model budget: CSV, Markdown and a bar plot.
"""

from __future__ import annotations

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

from stargal import cli


def build_parser():
    from stargal.augment import EXPERIMENT_POLICIES
    from stargal.stages.augmentation import PROXY_EPOCHS, PROXY_MAX_TRAIN

    parser = cli.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="dataset name (default: the one stage 02 prepared last)")
    parser.add_argument("--materialize", action="store_true", help="write the fixed augmented training set")
    parser.add_argument("--experiment", action="store_true", help="run the augmentation experiment")
    parser.add_argument("--epochs", type=cli.positive_int, default=PROXY_EPOCHS, help="experiment: epochs per policy")
    parser.add_argument("--batch-size", type=cli.positive_int, default=256, help="experiment: batch size")
    parser.add_argument(
        "--policies",
        nargs="+",
        choices=EXPERIMENT_POLICIES,
        default=list(EXPERIMENT_POLICIES),
        metavar="P",
        help=f"experiment: policies to compare ({' '.join(EXPERIMENT_POLICIES)})",
    )
    parser.add_argument(
        "--max-train",
        type=cli.positive_int,
        default=PROXY_MAX_TRAIN,
        help="experiment: use at most this many training patches (random subset; the proxy budget)",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    from stargal.dataset import check_selection
    from stargal.stages import augmentation as stage

    paths = cli.open_data_folder(args, existing=True)
    check_selection(paths, args.dataset, cli.given_selection(args))
    if args.experiment:
        stage.check_experiment(paths, args.dataset, args.policies)
    result = stage.write_examples(paths, args.dataset, seed=args.seed, force=args.force)
    print(f"dataset {result['dataset']}: augmentation examples and summary in {result['report']}")
    if args.materialize:
        mat = stage.materialize(paths, result["dataset"], seed=args.seed, force=args.force)
        state = "current, kept" if mat["skipped"] else f"written in {mat['seconds']} s"
        print(
            f"materialised set: {mat['n']} patches ({mat['copies']} copies of {mat['n_source']}), "
            f"{mat['bytes'] / 1e6:.0f} MB, {state}: {mat['dir']}"
        )
    if args.experiment:
        exp = stage.experiment(
            paths,
            result["dataset"],
            seed=args.seed,
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_train=args.max_train,
            policies=args.policies,
            force=args.force,
        )
        from stargal.tables import records_markdown

        columns = ["policy", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_mcc"]
        print(records_markdown(exp["rows"], columns), end="")
        print(f"report: {exp['report']}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
