#!/usr/bin/env python3
"""How wide catalog stars look against the PSF the model is told, by magnitude: the median ratio of each isolated
catalog star's half-light radius (as the detection measures it, ``detection.measure_sources``) to the field's PSF
map at its place, per band and r bin, for all of them and apart by colour (red M dwarfs, r-i > 0.9, and bluer
stars), on the real fields with a star sweep and on simulated fields; and the same ratio measured over each star's
own level (the 3-sigma clipped mean 12-20 px about it) instead of the detection's 64-pixel mesh background.

    bench/star_widths.py [--data-dir DIR] [--sample DIR] [--sim-data-dir DIR --fields 375-379]

Bright stars measure the PSF map itself (about 1); faint ones are noisier. A ratio that grows with r over the mesh
background but not over the local level is the background, not the stars: a level 0.1 noise sigma off, summed
within 8 px, is a sizeable part of a faint star's flux. Real fields are prepared in --data-dir as real_sky.py
prepares them. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli, detection, geometry, sdss
from stargal.paths import DataPaths, FieldId
from stargal.tables import markdown_table

R_BINS = ((18.0, 20.0), (20.5, 21.5), (21.5, 22.5))
WIDTH_BANDS = "gri"
MATCH_ARCSEC = 1.0
RED_RI = 0.9  # r-i: M dwarfs, bright in i, where a galaxy blended in would hardly show


def width_ratios(r50: np.ndarray, psf: np.ndarray, r: np.ndarray, select: np.ndarray, bins=R_BINS) -> np.ndarray:
    """Median r50 / PSF r50 per r bin (rows) and band (columns) over the ``select``ed sources; NaN for an empty
    bin. ``r50`` and ``psf`` are [sources, bands]."""
    ratio = r50 / psf
    out = np.full((len(bins), ratio.shape[1]), np.nan)
    for k, (lo, hi) in enumerate(bins):
        rows = select & (r >= lo) & (r < hi)
        if rows.any():
            out[k] = np.nanmedian(ratio[rows], axis=0)
    return out


def field_widths(paths: DataPaths, fid: FieldId, catalog: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per star colour (all, red r-i > RED_RI, blue) and background (the detection's mesh, each star's local
    level): (width ratios [bins, WIDTH_BANDS], stars per bin) of one aligned field's isolated catalog stars."""
    from stargal.stages.realsky import field_inputs

    cube, data, pmap = field_inputs(paths, fid)
    sources = detection.measure_sources(data, cube.bands, faint=True)
    ra, dec = cube.wcs.celestial.wcs_pix2world(sources.x, sources.y, 0)
    star = geometry.near_any(ra, dec, catalog["RA"], catalog["DEC"], MATCH_ARCSEC) & ~sources.deblended
    mag = sources.magnitude
    r = mag[:, cube.bands.index("r")]
    red = mag[:, cube.bands.index("r")] - mag[:, cube.bands.index("i")] > RED_RI
    bands = [cube.bands.index(b) for b in WIDTH_BANDS]
    psf = pmap.at(sources.x, sources.y)[:, bands]
    local = np.full((len(r), len(bands)), np.nan)
    for j, b in enumerate(bands):
        image = detection.background_subtracted(data[b])[0]
        level = detection.local_sky_levels(image, sources.x[star], sources.y[star])
        local[star, j] = detection.half_light_radii_over(image, sources.x[star], sources.y[star], level)
    out = {}
    for colour, select in (("all", star), (f"r-i > {RED_RI}", star & red), (f"r-i <= {RED_RI}", star & ~red)):
        counts = np.array([int(np.sum(select & (r >= lo) & (r < hi))) for lo, hi in R_BINS])
        mesh = width_ratios(sources.r50[:, bands], psf, r, select)
        out[colour] = (np.concatenate([mesh, width_ratios(local, psf, r, select)], axis=1), counts)
    return out


def _rows(label: str, widths: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[list[str]]:
    return [
        [label, colour, f"{lo:g}-{hi:g}", str(n), *(f"{v:.2f}" for v in row)]
        for colour, (ratios, counts) in widths.items()
        for (lo, hi), n, row in zip(R_BINS, counts, ratios, strict=True)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_real_and_simulated_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.stages.realsky import sample_fields

    paths = cli.data_paths(args)
    rows = []
    for field in sample_fields(paths.real_fields, Path(args.sample), star_catalog=True):
        widths = field_widths(paths.real_fields, field.fid, sdss.read_catalog(field.star_catalog))
        rows += _rows(f"real {field.label}", widths)
    if args.sim_data_dir:
        sim = DataPaths.at(args.sim_data_dir)
        catalog = sdss.read_catalog(sim.catalog(301, 8162, 6, "star"))
        for f in args.fields:
            rows += _rows(f"simulated {f}", field_widths(sim, FieldId(301, 8162, 6, f), catalog))
    print("Isolated catalog stars: median half-light radius over the PSF map's, per band, over the detection's mesh")
    print("background and over each star's local level\n")
    columns = [*(f"{b} mesh" for b in WIDTH_BANDS), *(f"{b} local" for b in WIDTH_BANDS)]
    print(markdown_table(["field", "stars", "r", "number", *columns], rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
