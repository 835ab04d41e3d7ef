#!/usr/bin/env python3
"""How much a model's real-sky verdict depends on the PSF it is told: the catalog check of every sample field
with a star sweep (4510-4-30 in ../shared/sdss-sample), with the field's measured PSF (stellar r50 per band)
multiplied by each scale, as a field whose PSF is measured too small or too large would be classified; the
non-catalog sources fainter than r = 21 show what calling more faint sources star costs.

    .venv/bin/python bench/psf_sensitivity.py [--model pretrained] [--scales 0.9 0.95 1 1.05 1.1] [--data-dir DIR]
    .venv/bin/python bench/psf_sensitivity.py --scales 1.05 --bands u g r i z    # one band at a time

The real fields are prepared in DIR/real (as real_sky.py does). Prints one Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli
from stargal.config import BANDS
from stargal.paths import DEFAULT_SAMPLE_DIR
from stargal.tables import markdown_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pretrained", help="model name, folder or 'pretrained'")
    parser.add_argument("--scales", nargs="+", type=float, default=[0.9, 0.95, 1.0, 1.05, 1.1])
    parser.add_argument(
        "--bands", nargs="+", default=None, choices=list(BANDS), help="scale each of these bands alone (default: all)"
    )
    parser.add_argument("--data-dir", default=None, help="data folder (the real fields go to DIR/real)")
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE_DIR))
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.stages.predict import load_bundle, resolve_model_dir
    from stargal.stages.realsky import discover, evaluate_field, prepare_field

    paths = cli.data_paths(args)
    fields = [f for f in discover(Path(args.sample)) if f.star_catalog is not None]
    if not fields:
        raise SystemExit(f"psf_sensitivity: no field with a star sweep in {args.sample}")
    bundle = load_bundle(resolve_model_dir(paths, args.model))
    rows = []
    for field in fields:
        prepare_field(paths.real_fields, field)
        for scale in args.scales:
            for band in args.bands or ["all"]:
                per_band = np.where([band in ("all", b) for b in BANDS], scale, 1.0)
                catalog = evaluate_field(paths.real_fields, field, bundle, psf_scale=per_band)["result"]["catalog"]
                rows.append(_row(field, band, scale, catalog))
    columns = ["field", "bands scaled", "PSF scale", "recall", "r < 21", "r 21-22", "r > 22",
               "non-catalog r < 21 called star", "two-sided MCC", "non-catalog r 21-22 called star",
               "MCC, negatives to r 22", "non-catalog r 22-22.5 called star", "MCC, negatives to r 22.5"]  # fmt: skip
    print(f"model {bundle.name}: the field's measured PSF multiplied by each scale\n")
    print(markdown_table(columns, rows))
    return 0


def _row(field, band: str, scale: float, catalog: dict) -> list:
    from stargal.stages.realsky import percent_cell

    recall = catalog["recall"]
    return [
        field.label,
        band,
        f"{scale:.2f}",
        percent_cell(recall["overall"]),
        *(percent_cell(b) for b in recall["by_r"]),
        percent_cell(catalog["bright_non_catalog"]),
        f"{catalog['two_sided']['mcc']:.3f}",
        percent_cell(catalog["faint_non_catalog"]),
        f"{catalog['two_sided_to_complete']['mcc']:.3f}",
        percent_cell(catalog["fainter_non_catalog"]),
        f"{catalog['two_sided_to_limit']['mcc']:.3f}",
    ]


if __name__ == "__main__":
    cli.run_main(main)
