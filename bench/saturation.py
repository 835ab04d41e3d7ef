#!/usr/bin/env python3
"""How many sources ``predict.py --detect`` flags saturated (``stargal.saturation``), and whether they are: on the
real sample, per field, against the star sweep's SATURATED flag (r band) where a field has one, and on simulated
fields, against the pixels the simulator saturated (rendered again, the r band's saturation mask kept).

    bench/saturation.py [--data-dir DIR] [--sample DIR] [--sim-data-dir DIR --fields 322 333]

A source is truly saturated on the simulated sky when a pixel within ``saturation.CORE_RADIUS`` of it was
saturated or interpolated over; on a real field when a catalog star within MATCH_ARCSEC of it carries the r-band
SATURATED flag (the sweep lists stars alone, each in one field: a source in the overlap with the next field can be
that field's). The real fields must be prepared in --data-dir already (real_sky.py prepares them there). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from unittest import mock

import numpy as np
from scipy.spatial import cKDTree

from stargal import cli, detection, geometry, saturation, simulate, sky_models
from stargal.cube import read_cube
from stargal.errors import StargalError
from stargal.fsio import read_json
from stargal.paths import DataPaths, FieldId
from stargal.sdss import frame_relpath
from stargal.stages.predict import r_photometry
from stargal.tables import markdown_table

MATCH_ARCSEC = 1.0
SATURATED_FLAG = 1 << 18  # photo's OBJECT1 SATUR: the object contains saturated pixels
FAINT_R = 15.0  # catalog r: a flag on a star fainter than this would be plainly wrong


def field_sources(cube, data: np.ndarray) -> tuple[np.ndarray, ...]:
    """(x, y, ra, dec, r magnitude, saturated) of the sources predict.py --detect finds in an aligned cube."""
    bands = cube.bands
    subtracted = detection.subtract_backgrounds(data)
    sources = detection.measure_sources(data, bands, faint=True, subtracted=subtracted)
    flux, _, flagged = r_photometry(sources, subtracted[0][bands.index("r")], bands.index("r"))
    ra, dec = cube.wcs.celestial.wcs_pix2world(sources.x, sources.y, 0)
    return sources.x, sources.y, ra, dec, detection.flux_to_mag(flux), flagged


def _mags(r: np.ndarray) -> str:
    return ", ".join(f"{v:.2f}" for v in np.sort(r)) or "-"


def real_row(label: str, cube, data: np.ndarray, catalog: dict | None) -> list[str]:
    """One real field: flagged count, their measured r, and against the star sweep, where there is one, the
    SATURATED stars caught and the unsaturated ones flagged."""
    _, _, ra, dec, r, flagged = field_sources(cube, data)
    row = [label, str(len(r)), str(int(flagged.sum())), _mags(r[flagged])]
    if catalog is None:
        return [*row, "-", "-", "-"]
    cat_r = detection.flux_to_mag(catalog["PSFFLUX"][:, 2])
    cat_sat = (catalog["FLAGS"][:, 2] & SATURATED_FLAG) != 0
    dist, near = cKDTree(geometry.unit_vectors(catalog["RA"], catalog["DEC"])).query(geometry.unit_vectors(ra, dec))
    matched = dist <= geometry.chord(MATCH_ARCSEC)
    sat, star_r = np.zeros(len(r), bool), np.full(len(r), np.nan)
    sat[matched], star_r[matched] = cat_sat[near[matched]], cat_r[near[matched]]
    caught = f"{int((sat & flagged).sum())} of {int(sat.sum())} ({_mags(star_r[sat])})"
    false = matched & ~sat & flagged
    faint = int((false & (star_r > FAINT_R)).sum())
    return [*row, caught, f"{int(false.sum())} ({_mags(star_r[false])})", str(faint)]


def read_stars(path: Path) -> dict[str, np.ndarray]:
    """RA, DEC, PSFFLUX and FLAGS of a calibObj star sweep."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        table = hdul[1].data
        return {k: np.asarray(table[k]) for k in ("RA", "DEC", "PSFFLUX", "FLAGS")}


def simulated_truth(paths: DataPaths, fid: FieldId, shape: tuple[int, int]) -> np.ndarray:
    """The r band's saturated and interpolated pixels of a simulated field, rendered again as its manifest says."""
    entry = read_json(paths.manifest)["files"][frame_relpath("r", fid.rerun, fid.run, fid.camcol, fid.field)]
    spec = dict(re.findall(r"(\w+)=([\w.x]+)", entry["url"]))
    task = simulate.FieldTask(
        str(paths.root), fid.rerun, fid.run, fid.camcol, fid.field, int(spec["seed"]), shape,
        spec.get("seeing", simulate.DEFAULT_SEEING),
    )  # fmt: skip
    masks = []
    interpolate = sky_models.interpolate_rows

    def keep(image: np.ndarray, mask: np.ndarray) -> None:
        masks.append(mask.copy())
        interpolate(image, mask)

    with mock.patch.object(sky_models, "interpolate_rows", keep):
        simulate.render_field(task)
    return masks[simulate.BANDS.index("r")]


def simulated_row(paths: DataPaths, fid: FieldId) -> list[str]:
    """One simulated field: flagged count, the truly saturated sources caught and the others flagged."""
    cube = read_cube(paths.cube(fid))
    data = np.ascontiguousarray(np.asarray(cube.data, np.float32))
    x, y, _, _, r, flagged = field_sources(cube, data)
    mask = simulated_truth(paths, fid, data.shape[1:])
    half = int(saturation.CORE_RADIUS)
    offsets = np.arange(-half, half + 1)
    disk = offsets[None, :] ** 2 + offsets[:, None] ** 2 <= saturation.CORE_RADIUS**2
    padded = np.pad(mask, half)
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    stamps = padded[iy[:, None, None] + offsets[:, None] + half, ix[:, None, None] + offsets[None, :] + half]
    sat = (stamps & disk).any((1, 2))
    false = flagged & ~sat
    return [
        f"simulated {fid.field}", str(len(r)), str(int(flagged.sum())), _mags(r[flagged]),
        f"{int((sat & flagged).sum())} of {int(sat.sum())} (missed: {_mags(r[sat & ~flagged])})",
        f"{int(false.sum())} ({_mags(r[false])})", str(int((false & (r > FAINT_R)).sum())),
    ]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_real_and_simulated_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.stages.realsky import discover, field_inputs

    paths = cli.data_paths(args)
    rows = []
    try:
        fields = discover(Path(args.sample))
    except StargalError:  # no real sample there: the simulated fields alone
        fields = []
    for field in fields:
        cube, data, _ = field_inputs(paths.real_fields, field.fid)
        catalog = None if field.star_catalog is None else read_stars(field.star_catalog)
        rows.append(real_row(f"real {field.label}", cube, data, catalog))
    if args.sim_data_dir:
        sim = DataPaths.at(args.sim_data_dir)
        rows += [simulated_row(sim, FieldId(301, 8162, 6, f)) for f in args.fields]
    print("Sources flagged saturated by predict.py --detect (r: their measured PSF-weighted magnitude; truth: the")
    print("star sweep's r-band SATURATED flag, or the simulator's saturated pixels within 4 px)\n")
    header = ["field", "sources", "flagged", "flagged r", "saturated caught", "others flagged (r)", f"r > {FAINT_R:g}"]
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
