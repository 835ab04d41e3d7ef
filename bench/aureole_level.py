#!/usr/bin/env python3
"""How much light the real PSF's aureole holds: for the brightest catalog stars of every sample field with a
star sweep (4510-4-30), the surface brightness x 2 pi r^2 / the star's sweep PSF flux at 30-120 px, per band.
For an r^-2 aureole that is the share of the star's flux per e-fold of radius, the simulator's
``sky_models.AUREOLE_PER_EFOLD``; with ``--sim-data-dir`` the same is measured on simulated fields from their
own catalogs.

    bench/aureole_level.py [--data-dir DIR] [--sample DIR] [--sim-data-dir DIR --fields 375-379]

Real fields are prepared in --data-dir as real_sky.py prepares them. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli, geometry, sdss
from stargal.config import BANDS
from stargal.cube import read_cube
from stargal.fidelity import annulus_levels
from stargal.paths import DataPaths, FieldId
from stargal.tables import markdown_table

RADII = (30.0, 42.0, 60.0, 85.0, 120.0)
STARS = 4  # the brightest catalog stars at least the last radius from the edges


def field_levels(cube, catalog: np.ndarray, field: int) -> np.ndarray:
    """[bands, radii] median over the field's brightest catalog stars of the aureole's share per e-fold."""
    stars = catalog[catalog["FIELD"] == field]
    x, y = geometry.sky_to_pixel(cube.wcs, stars["RA"], stars["DEC"])
    data = np.asarray(cube.data, np.float32)
    margin = RADII[-1] * 1.2 + 2
    rows, cols = data.shape[1:]
    inside = (x > margin) & (y > margin) & (x < cols - margin) & (y < rows - margin)
    r_flux = stars["PSFFLUX"][:, BANDS.index("r")]
    chosen = np.flatnonzero(inside)[np.argsort(-r_flux[inside])][:STARS]
    out = []
    for b, band in enumerate(cube.bands):
        flux = stars["PSFFLUX"][chosen, BANDS.index(band)]
        levels = annulus_levels(data[b], x[chosen], y[chosen], RADII) * 2 * np.pi / flux[:, None]
        out.append(np.nanmedian(levels, axis=0))
    return np.array(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_real_and_simulated_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.stages.realsky import sample_fields

    rows = []
    paths = cli.data_paths(args).real_fields
    for field in sample_fields(paths, Path(args.sample), star_catalog=True):
        levels = field_levels(read_cube(paths.cube(field.fid)), sdss.read_catalog(field.star_catalog), field.fid.field)
        rows += _rows(f"real {field.label}", levels)
    if args.sim_data_dir:
        sim = DataPaths.at(args.sim_data_dir)
        catalog = sdss.read_catalog(sim.catalog(301, 8162, 6, "star"))
        for f in args.fields:
            levels = field_levels(read_cube(sim.cube(FieldId(301, 8162, 6, f))), catalog, f)
            rows += _rows(f"simulated {f}", levels)
    columns = ["field", "band", *(f"{r:g} px" for r in RADII)]
    print("Share of the brightest catalog stars' PSF flux per e-fold of radius, I(r) 2 pi r^2 / flux (median)\n")
    print(markdown_table(columns, rows))
    return 0


def _rows(label: str, levels: np.ndarray) -> list[list[str]]:
    return [[label, band, *(f"{v:.4f}" for v in levels[b])] for b, band in enumerate(BANDS)]


if __name__ == "__main__":
    cli.run_main(main)
