#!/usr/bin/env python3
"""Star and galaxy counts per magnitude, the real sky against the simulated one, where a real star sweep tells the
two apart: catalog stars per field with r < 22.5 (the real sweep's every field, and the simulated sweep's fields,
both scaled to the Galactic pole by sin|b|), the sources the detection finds more than 2" from every catalog
star (galaxies, mostly) per field and r bin, on the real fields with a star sweep and on simulated fields, and the
star-sweep entries listed for one band's light alone.

    bench/source_counts.py --sim-data-dir DIR --fields 300-379 [--seed 42] [--data-dir DIR] [--sample DIR]

Real fields are prepared in --data-dir as real_sky.py prepares them; the simulated fields must have been through
stages 00 and 01. Prints three Markdown tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord

from stargal import cli, detection, geometry, realsky, sdss
from stargal.config import BANDS, SEED
from stargal.errors import StargalError
from stargal.paths import DataPaths, FieldId
from stargal.simulate import SWEEP_PSF_MAG_LIMITS
from stargal.tables import markdown_table

STAR_BINS = (12.0, 18.0, 20.0, 21.0, 22.0, 22.5)
SOURCE_BINS = (18.0, 20.0, 21.0, 22.0, 22.5)
LONE_MARGIN = 1.5  # mag beyond the other bands' limits: nothing there
MIN_LATITUDE = 40.0  # degrees: fields nearer the plane are too crowded for per-field galaxy counts


def catalog_star_counts(catalog: np.ndarray, sin_b: np.ndarray, bins=STAR_BINS) -> np.ndarray:
    """Mean catalog stars per field and r bin, each field's counts scaled by its sin|b| (``sin_b``, one per row)."""
    r = sdss.magnitude(catalog["PSFFLUX"][:, BANDS.index("r")])
    fields = np.unique(catalog["FIELD"])
    counts = [np.histogram(r[catalog["FIELD"] == f], bins)[0] * sin_b[catalog["FIELD"] == f][0] for f in fields]
    return np.mean(counts, axis=0)


def lone_band_entries(catalog: np.ndarray, limits=SWEEP_PSF_MAG_LIMITS, margin: float = LONE_MARGIN) -> np.ndarray:
    """Catalog entries per field listed for one band's light alone: within that band's sweep limit, and more than
    ``margin`` mag beyond the limit (or without flux) in every other band; one count per band."""
    mag = sdss.magnitude(catalog["PSFFLUX"])
    mag = np.where(np.isfinite(mag), mag, np.inf)
    inside = mag < np.asarray(limits)
    lone = (inside.sum(axis=1) == 1) & (inside | (mag >= np.asarray(limits) + margin)).all(axis=1)
    return (lone[:, None] & inside).sum(axis=0) / len(np.unique(catalog["FIELD"]))


def non_catalog_counts(cube_data: np.ndarray, bands: str, wcs, catalog: np.ndarray, bins=SOURCE_BINS) -> np.ndarray:
    """Detected sources per r bin lying more than the match radius from every catalog star."""
    sources = detection.measure_sources(cube_data, bands, faint=True)
    single = detection.single_band(sources.flux, bands)  # cosmic rays are not sources
    ra, dec = wcs.celestial.wcs_pix2world(sources.x, sources.y, 0)
    near = geometry.near_any(ra, dec, catalog["RA"], catalog["DEC"], realsky.MATCH_RADIUS_ARCSEC)
    r = sources.magnitude[:, bands.index("r")]
    return np.histogram(r[~near & ~single], bins)[0].astype(float)


def _sin_b(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return np.abs(np.sin(SkyCoord(ra=ra, dec=dec, unit="deg").galactic.b.radian))


def _cells(values: np.ndarray) -> list[str]:
    return [f"{v:.1f}" for v in values]


def _bin_names(bins) -> list[str]:
    return [f"r {lo:g}-{hi:g}" for lo, hi in zip(bins[:-1], bins[1:], strict=True)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_real_and_simulated_arguments(parser, simulated_required=True)
    parser.add_argument("--seed", type=int, default=SEED, help="the simulated sky's seed (its fields' latitudes)")
    parser.add_argument(
        "--min-latitude", type=float, default=MIN_LATITUDE, help="simulated fields nearer the plane (deg) are left out"
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal import simulate
    from stargal.stages.realsky import field_inputs, sample_fields

    paths = cli.data_paths(args)
    star_rows, source_rows, lone_rows = [], [], []
    for field in sample_fields(paths.real_fields, Path(args.sample), star_catalog=True):
        catalog = sdss.read_catalog(field.star_catalog)
        label = f"real {field.fid.run}-{field.fid.camcol} ({len(np.unique(catalog['FIELD']))} fields)"
        star_rows.append([label, *_cells(catalog_star_counts(catalog, _sin_b(catalog["RA"], catalog["DEC"])))])
        lone_rows.append([label, *_cells(lone_band_entries(catalog))])
        cube, data, _ = field_inputs(paths.real_fields, field.fid)
        counts = non_catalog_counts(data, cube.bands, cube.wcs, catalog)
        source_rows.append([f"real {field.label}", 1, *_cells(counts)])
    sim = DataPaths.at(args.sim_data_dir)
    catalog = sdss.read_catalog(sim.catalog(301, 8162, 6, "star"))
    latitude = {f: simulate.field_conditions(args.seed, 8162, 6, f).latitude for f in args.fields}
    if not any(latitude[f] >= args.min_latitude for f in args.fields):
        raise StargalError(f"--fields: none of them lies beyond --min-latitude {args.min_latitude:g} deg")
    listed = catalog[np.isin(catalog["FIELD"], [f for f in args.fields if latitude[f] >= args.min_latitude])]
    sin_b = np.sin(np.radians([latitude[f] for f in listed["FIELD"]]))
    star_rows.append([f"simulated, b beyond {args.min_latitude:g} deg", *_cells(catalog_star_counts(listed, sin_b))])
    own = catalog[np.isin(catalog["FIELD"], args.fields)]
    if len(own):
        lone_rows.append(["simulated, every field given", *_cells(lone_band_entries(own))])
    per_field = []
    for f in (f for f in args.fields if latitude[f] >= args.min_latitude):
        cube, data, _ = field_inputs(sim, FieldId(301, 8162, 6, f))
        per_field.append(non_catalog_counts(data, cube.bands, cube.wcs, catalog))
    if per_field:
        mean = np.mean(per_field, axis=0)
        source_rows.append([f"simulated, b beyond {args.min_latitude:g} deg (mean)", len(per_field), *_cells(mean)])
    print("Catalog stars per field at the Galactic pole (counts times sin|b|), by r PSF magnitude\n")
    print(markdown_table(["sweep", *_bin_names(STAR_BINS)], star_rows))
    print('\nDetected sources more than 2" from every catalog star, per field, by r\n')
    print(markdown_table(["fields", "fields measured", *_bin_names(SOURCE_BINS)], source_rows))
    print(f"\nStar-sweep entries per field listed for one band's light alone (nothing within {LONE_MARGIN} mag of the")
    print("limits in the other bands)\n")
    print(markdown_table(["sweep", *BANDS], lone_rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
