#!/usr/bin/env python3
"""Catalogued objects taken for blank sky: every catalogued object of simulated fields given to predict.py as
coordinates (``--ra/--dec``), how many its source check (``--min-snr``) refuses (``no_source`` or ``off_peak``), how faint they are,
and how often a model classifies them right when made to (``--min-snr 0``), against the other objects as faint.

    bench/blank_sky.py --data-dir DIR [--fields 80 103 ...] [--model pretrained]

DIR holds the fields aligned with their sweeps (by default the reference sky's ten:
``00_download.py --source simulated`` and ``01_alignment.py``). "Right" means the catalog's own class, SDSS's
photometric type as the simulator applies it. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from stargal import cli

FAINT_R = 22.0


def field_outcomes(paths, fid, bundle, scratch: Path) -> dict[str, np.ndarray]:
    """Each catalogued object of ``fid``: its r PSF magnitude, whether the source check passes it, and whether
    the model's class, given every position (``--min-snr 0``), is the catalog's; only objects classified then."""
    from stargal.stages.predict import catalog_objects, run_predict

    cube = paths.cube(fid)
    objects = catalog_objects(cube)
    common = {"ra": objects["ra"], "dec": objects["dec"], "bundle": bundle, "cube_path": str(cube)}
    _, checked = run_predict(paths, **common, out=str(scratch / "checked.csv"))
    _, forced = run_predict(paths, **common, min_snr=0.0, out=str(scratch / "forced.csv"))
    ok = forced.status == "ok"
    return {
        "r": objects["r_psfmag"][ok],
        "no_source": np.isin(checked.status, ("no_source", "off_peak"))[ok],  # either refusal
        "right": ((forced.label == "star") == (objects["label"] == 1))[ok],
    }


def table_rows(d: dict[str, np.ndarray]) -> list[list]:
    from stargal import realsky
    from stargal.stages.realsky import percent_cell

    faint = d["r"] >= FAINT_R
    rows = []
    for name, sel in (
        ("no_source", d["no_source"]),
        (f"others with r >= {FAINT_R:g}", faint & ~d["no_source"]),
        ("all others", ~d["no_source"]),
    ):
        r = d["r"][sel]
        span = f"{np.nanmin(r):.2f}-{np.nanmax(r):.2f}" if np.isfinite(r).any() else "-"
        rows.append([name, int(sel.sum()), span, percent_cell(realsky.fraction(d["right"], sel))])
    return rows


def model_and_fields(description: str, argv=None) -> tuple:
    """The options of the benches over catalogued objects of aligned fields (--data-dir, --fields, --model, -q):
    (data paths, model bundle, field ids of the reference run/camcol)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", required=True, help="data folder with the fields aligned")
    parser.add_argument("--fields", nargs="+", type=int, default=None, help="fields (default: the reference ten)")
    parser.add_argument("--model", default="pretrained", help="model name, folder or 'pretrained'")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.config import REFERENCE
    from stargal.paths import FieldId
    from stargal.stages.predict import load_bundle, resolve_model_dir

    paths = cli.data_paths(args)
    bundle = load_bundle(resolve_model_dir(paths, args.model), "auto")
    fids = [FieldId(REFERENCE.rerun, REFERENCE.run, REFERENCE.camcol, f) for f in args.fields or REFERENCE.fields]
    return paths, bundle, fids


def main(argv=None) -> int:
    from stargal.tables import markdown_table

    paths, bundle, fids = model_and_fields(__doc__.split("\n\n")[0], argv)
    fields = [fid.field for fid in fids]
    with tempfile.TemporaryDirectory() as scratch:
        parts = [field_outcomes(paths, fid, bundle, Path(scratch)) for fid in fids]
    d = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    print(f"model {bundle.name}, fields {' '.join(map(str, fields))}: {len(d['r'])} catalogued objects classified\n")
    print(markdown_table(["objects", "n", "r range", "catalog class right (--min-snr 0)"], table_rows(d)))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
