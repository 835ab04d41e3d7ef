#!/usr/bin/env python3
"""Are faint catalog stars missed where they sit on light? For the faint catalog stars (r > 21.5, or no r flux)
of every sample field with a star sweep (4510-4-30), and with ``--sim-data-dir`` of simulated fields from their
own catalog: the local pedestal in one band (the median of the cube 8-25 px about the star, over the annulus's
robust sigma), and the model's recall above and below a pedestal of ``--limit`` sigma; and, to place a
position-dependent failure, its recall in the frame's first ``--first-rows`` rows and in the rest.

    bench/pedestal_recall.py [--model pretrained] [--data-dir DIR] [--sample DIR] \
        [--sim-data-dir DIR --fields 375-379] [--band i] [--limit 0.3] [--first-rows 300]

Real fields are prepared in --data-dir as real_sky.py prepares them. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli, detection, sdss
from stargal.config import BANDS
from stargal.paths import DataPaths, FieldId
from stargal.tables import markdown_table

ANNULUS = (8.0, 25.0)  # pixels: beyond a faint star's own light, within a bright neighbour's outskirts
FAINT = 21.5  # r PSF magnitude


def local_pedestals(image: np.ndarray, x: np.ndarray, y: np.ndarray, annulus=ANNULUS) -> np.ndarray:
    """Median of ``image`` in an annulus about each (x, y), in units of the annulus's robust sigma (1.4826 MAD);
    the part of the annulus inside the frame near its edges; NaN where fewer than 100 finite pixels remain."""
    level, sigma = detection.annulus_stats(image, x, y, annulus, partial=True, min_pixels=100)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sigma > 0, level / sigma, np.nan)


def recall_row(
    label: str, pedestal: np.ndarray, called_star: np.ndarray, limit: float, first_rows: np.ndarray
) -> list[str]:
    """One table row: faint stars, the share on a pedestal above ``limit``, the recall on and off it, and the
    recall in the frame's first rows (``first_rows`` marks the stars there) and in the rest."""
    ok = np.isfinite(pedestal)
    high = ok & (pedestal > limit)

    def cell(mask: np.ndarray) -> str:
        n = int(mask.sum())
        return f"{called_star[mask].mean():.1%} ({int(called_star[mask].sum())}/{n})" if n else "-"

    return [
        label, str(int(ok.sum())), f"{high.sum() / max(ok.sum(), 1):.1%}", cell(high), cell(ok & ~high),
        cell(ok & first_rows), cell(ok & ~first_rows),
    ]  # fmt: skip


def faint_star_pedestals(paths: DataPaths, fid: FieldId, catalog: np.ndarray, bundle, band: str):
    """(pedestal in sigma, called star, row) of the faint catalog stars of one aligned field."""
    from stargal.stages.realsky import classify_positions, field_inputs

    cube, data, pmap = field_inputs(paths, fid)
    stars = catalog[catalog["FIELD"] == fid.field]
    r = sdss.magnitude(stars["PSFFLUX"][:, BANDS.index("r")])
    pred = classify_positions(bundle, data, cube.wcs, stars["RA"], stars["DEC"], pmap)
    faint = (pred.status == "ok") & ~(r <= FAINT)  # NaN (no r flux) counts as faint
    pedestal = local_pedestals(data[cube.bands.index(band)], pred.x[faint], pred.y[faint])
    return pedestal, (pred.label == "star")[faint], pred.y[faint]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pretrained", help="model name, folder or 'pretrained'")
    cli.add_real_and_simulated_arguments(parser)
    parser.add_argument("--band", default="i", choices=list(BANDS), help="band the pedestal is measured in")
    parser.add_argument("--limit", type=float, default=0.3, help="pedestal (sigma) that splits the stars")
    parser.add_argument("--first-rows", type=int, default=300, help="rows of the frame's first strip")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.stages.predict import load_bundle, resolve_model_dir
    from stargal.stages.realsky import sample_fields

    paths = cli.data_paths(args)
    bundle = load_bundle(resolve_model_dir(paths, args.model), "auto")
    rows = []
    for field in sample_fields(paths.real_fields, Path(args.sample), star_catalog=True):
        catalog = sdss.read_catalog(field.star_catalog)
        ped, star, row = faint_star_pedestals(paths.real_fields, field.fid, catalog, bundle, args.band)
        rows.append(recall_row(f"real {field.label}", ped, star, args.limit, row < args.first_rows))
    if args.sim_data_dir:
        sim = DataPaths.at(args.sim_data_dir)
        catalog = sdss.read_catalog(sim.catalog(301, 8162, 6, "star"))
        found = [faint_star_pedestals(sim, FieldId(301, 8162, 6, f), catalog, bundle, args.band) for f in args.fields]
        if found:
            ped, star, row = (np.concatenate(c) for c in zip(*found, strict=True))
            label = f"simulated {', '.join(map(str, args.fields))}"
            rows.append(recall_row(label, ped, star, args.limit, row < args.first_rows))
    columns = [
        "fields",
        "faint catalog stars",
        f"on a pedestal > {args.limit:g} sigma",
        "recall there",
        "recall elsewhere",
        f"recall, rows < {args.first_rows}",
        "recall, the other rows",
    ]
    print(f"Faint catalog stars (r > {FAINT}) and the {args.band}-band pedestal about them ({bundle.name})\n")
    print(markdown_table(columns, rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
