#!/usr/bin/env python3
"""Faint stars, simulated against real: a model's recall on the catalog stars of simulated test fields and of
every real field with a star sweep, per r magnitude and per r-band PSF signal-to-noise, for every listed star
and for those the detection finds (what ``predict.py --detect`` classifies).

    .venv/bin/python bench/faint_stars.py --data-dir DIR --fields 375 376 377 378 379 [--model pretrained]

DIR holds the simulated fields of run 8162 camcol 6, aligned (``00_download.py --source simulated`` and
``01_alignment.py`` for those fields); the real fields are prepared in DIR/real as real_sky.py does. Prints two
Markdown tables: the recall on each sky (if the model recognises faint real stars as often as faint simulated
ones, the simulator's faint end is faithful and the shortfall is the model's); and, on the simulated fields,
where the truth is known, how pure SDSS's labels are per r bin (its type rule, PSF against model magnitude on
noisy fluxes, which the simulator applies as photo does) and how the model does against labels and against truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli

SIM_RUN, SIM_CAMCOL = 8162, 6
BINS = {
    "r < 21": lambda r, snr, found: r < 21,
    "r 21-22": lambda r, snr, found: (r >= 21) & (r < 22),
    "r > 22": lambda r, snr, found: r >= 22,
    "r > 22, found": lambda r, snr, found: (r >= 22) & found,
    "r > 22, not found": lambda r, snr, found: (r >= 22) & ~found,
    "S/N 5-10": lambda r, snr, found: (snr >= 5) & (snr < 10),
    "S/N < 5": lambda r, snr, found: snr < 5,
    "found": lambda r, snr, found: found,
}


def catalog_stars(paths, fid, catalog_path: Path, bundle) -> dict[str, np.ndarray]:
    """The stars a sweep lists under ``fid``, classified in its aligned cube: called star, r PSF magnitude (NaN
    without r flux), r PSF S/N, and whether the detection finds them; only those classified (inside the frame)."""
    from stargal import detection, geometry, realsky, sdss
    from stargal.stages.realsky import classify_positions, field_inputs

    cube, data, pmap = field_inputs(paths, fid)
    stars = sdss.read_catalog(catalog_path, columns=("FIELD", "RA", "DEC", "PSFFLUX", "PSFFLUX_IVAR"))
    stars = stars[stars["FIELD"] == fid.field]
    pred = classify_positions(bundle, data, cube.wcs, stars["RA"], stars["DEC"], pmap)
    sources = detection.measure_sources(data, cube.bands, faint=True)
    ra, dec = cube.wcs.celestial.wcs_pix2world(sources.x, sources.y, 0)
    found = geometry.near_any(stars["RA"], stars["DEC"], ra, dec, realsky.MATCH_RADIUS_ARCSEC)
    r = cube.bands.index("r")
    flux = stars["PSFFLUX"][:, r].astype(np.float64)
    ok = pred.status == "ok"
    return {
        "called": (pred.label == "star")[ok],
        "r": sdss.magnitude(flux)[ok],
        "snr": (flux * np.sqrt(np.clip(stars["PSFFLUX_IVAR"][:, r], 0, None)))[ok],
        "found": found[ok],
    }


TRUTH_BINS = ((None, 21.0), (21.0, 22.0), (22.0, 22.5), (22.5, 23.0), (23.0, None))


def labels_against_truth(paths, fid, bundle) -> dict[str, np.ndarray]:
    """Every catalogued object of a simulated field (both sweeps), classified: called star, r PSF magnitude,
    SDSS's label (OBJC_TYPE 6: star) and the true class from the simulator's truth table."""
    from stargal import sdss
    from stargal.sim_formats import TRUTH_DTYPE
    from stargal.stages.realsky import classify_positions, field_inputs
    from stargal.tables import read_table

    cube, data, pmap = field_inputs(paths, fid)
    columns = ("FIELD", "ID", "OBJC_TYPE", "RA", "DEC", "PSFFLUX")
    objects = np.concatenate([sdss.read_catalog(paths.catalog(fid.rerun, fid.run, fid.camcol, kind), columns)
                              for kind in ("star", "gal")])  # fmt: skip
    objects = objects[objects["FIELD"] == fid.field]
    truth = read_table(paths.sim_truth(fid.rerun, fid.run, fid.camcol), dtype=TRUTH_DTYPE)
    truth = truth[(truth["field"] == fid.field) & (truth["id"] >= 0)]
    true_class = dict(zip(truth["id"].tolist(), truth["cls"].tolist(), strict=True))
    pred = classify_positions(bundle, data, cube.wcs, objects["RA"], objects["DEC"], pmap)
    ok = pred.status == "ok"
    return {
        "called": (pred.label == "star")[ok],
        "r": sdss.magnitude(objects["PSFFLUX"][:, cube.bands.index("r")])[ok],
        "labelled": (objects["OBJC_TYPE"] == 6)[ok],
        "true": np.array([true_class[i] == "star" for i in objects["ID"].tolist()], bool)[ok],
    }


def truth_rows(parts: list[dict[str, np.ndarray]]) -> list[list]:
    from stargal import realsky
    from stargal.stages.realsky import percent_cell

    d = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    rows = []
    for lo, hi in TRUTH_BINS:
        s = realsky.in_bin(d["r"], lo, hi)
        labelled, true = s & d["labelled"], s & d["true"]
        cells = [realsky.fraction(d["true"], labelled), realsky.fraction(d["labelled"], true),
                 realsky.fraction(d["called"], labelled), realsky.fraction(d["called"], true),
                 realsky.fraction(d["called"], s & ~d["true"])]  # fmt: skip
        rows.append([realsky.bin_label(lo, hi), int(s.sum()), *map(percent_cell, cells)])
    return rows


def row(name: str, parts: list[dict[str, np.ndarray]]) -> list:
    from stargal import realsky
    from stargal.stages.realsky import percent_cell

    d = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    with np.errstate(invalid="ignore"):
        cells = [
            percent_cell(realsky.fraction(d["called"], select(d["r"], d["snr"], d["found"])))
            for select in BINS.values()
        ]
    return [name, len(d["called"]), *cells]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="data folder with the simulated fields aligned")
    parser.add_argument("--fields", nargs="+", type=int, required=True, help="simulated fields (run 8162 camcol 6)")
    parser.add_argument("--model", default="pretrained", help="model name, folder or 'pretrained'")
    parser.add_argument("--sample", default=None, help="real SDSS sample (default: ../shared/sdss-sample)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.paths import DEFAULT_SAMPLE_DIR, FieldId
    from stargal.stages.predict import load_bundle, resolve_model_dir
    from stargal.stages.realsky import RERUN, sample_fields
    from stargal.tables import markdown_table

    paths = cli.data_paths(args)
    bundle = load_bundle(resolve_model_dir(paths, args.model), "auto")
    sweep = paths.catalog(RERUN, SIM_RUN, SIM_CAMCOL, "star")
    sim = [catalog_stars(paths, FieldId(RERUN, SIM_RUN, SIM_CAMCOL, f), sweep, bundle) for f in args.fields]
    rows = [row(f"simulated {' '.join(map(str, args.fields))}", sim)]
    sample = Path(args.sample) if args.sample else DEFAULT_SAMPLE_DIR
    for field in sample_fields(paths.real_fields, sample, star_catalog=True):
        rows.append(
            row(f"real {field.label}", [catalog_stars(paths.real_fields, field.fid, field.star_catalog, bundle)])
        )
    print(f'model {bundle.name}: catalog stars called star (found: within 2" of a source the detection finds)\n')
    print(markdown_table(["catalog stars", "classified", *BINS], rows))
    truth = [labels_against_truth(paths, FieldId(RERUN, SIM_RUN, SIM_CAMCOL, f), bundle) for f in args.fields]
    print("\nsimulated fields: SDSS's labels against the truth, and the model against both\n")
    columns = ["r", "catalogued", "labelled star: truly star", "true stars: labelled star",
               "labelled stars called star", "true stars called star", "true galaxies called star"]  # fmt: skip
    print(markdown_table(columns, truth_rows(truth)))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
