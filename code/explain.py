#!/usr/bin/env python3
"""Explain a trained model: Integrated Gradients and Grad-CAM maps for test objects it gets right and wrong.

Writes PNG grids (per band and combined, with p_star on each panel) and examples.csv under
data/reports/explain/MODEL/, one grid per group: stars and galaxies, correctly and wrongly classified.
"""

from __future__ import annotations

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

from stargal import cli
from stargal.cli import positive_int


def build_parser():
    parser = cli.make_parser(__doc__.split("\n\n")[0])
    group = parser.add_argument_group("explanations")
    group.add_argument(
        "--model",
        default=None,
        help="model name, or model folder (or its model.keras) as 03_model.py writes it (default: latest trained)",
    )
    group.add_argument("--dataset", default=None, help="dataset whose split to explain (default: the model's)")
    group.add_argument("--split", default="test", choices=("test", "val", "train"))
    group.add_argument("--per-group", type=positive_int, default=4, help="examples per group")
    group.add_argument("--steps", type=positive_int, default=32, help="Integrated Gradients integration steps")
    group.add_argument(
        "--difficulty",
        action="store_true",
        help="also write the difficulty analysis (Markdown + example patches) under data/reports/difficulty/MODEL",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    from stargal.stages.explain import run_explain

    paths = cli.open_data_folder(args, existing=True)
    result = run_explain(
        paths,
        model=args.model,
        dataset=args.dataset,
        split=args.split,
        per_group=args.per_group,
        steps=args.steps,
        seed=args.seed,
        force=args.force,
        selection=cli.given_selection(args),
    )
    counts = ", ".join(f"{k} {v}" for k, v in result["counts"].items())
    done = "current, skipped" if result["skipped"] else "explained"
    print(f"model {result['model']}: {done} {counts} -> {result['folder']}")
    if args.difficulty:
        from stargal.stages.explain import run_difficulty

        diff = run_difficulty(
            paths,
            model=args.model,
            dataset=args.dataset,
            seed=args.seed,
            force=args.force,
            selection=cli.given_selection(args),
        )
        print(
            f"difficulty analysis ({diff['by_magnitude_source']} per-magnitude metrics) -> {diff['folder'] / 'difficulty.md'}"
        )
    return 0


if __name__ == "__main__":
    cli.run_main(main)
