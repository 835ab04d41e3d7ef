#!/usr/bin/env python3
"""Does photo's catalogue see the frames' sky pedestals? For every star of a sample field's star sweep:
photo's local sky at the star (the sweep's SKYFLUX) less the frame's own sky model there (HDU 2, ALLSKY
interpolated), against the frame's pedestal about the star (median of the sky-subtracted frame 15-60 px out).
A slope near 1 means photo's local sky took the pedestal out before it measured the star, so the catalogue's
fluxes and types do not hold it; near 0, they hold it. Bootstrap 16-84 % range over the stars.

    bench/photo_sky.py [--sample DIR]

Prints one Markdown table (fields with a star sweep, bands g r i).
"""

from __future__ import annotations

import argparse
import bz2
import io
from pathlib import Path

import numpy as np

from stargal import cli, fidelity, sdss
from stargal.config import BANDS
from stargal.paths import DEFAULT_SAMPLE_DIR
from stargal.tables import markdown_table

PIXEL_AREA_ARCSEC2 = 0.396**2
ANNULUS = (15.0, 60.0)  # pixels: the pedestal about a star, beyond its own light
DRAWS = 1000


def frame_sky_and_image(path: Path) -> tuple[np.ndarray, np.ndarray, object]:
    """The frame's image, its sky model (nanomaggies per pixel, as the image) and its WCS."""
    from astropy.io import fits
    from scipy.ndimage import map_coordinates

    with fits.open(io.BytesIO(bz2.decompress(path.read_bytes()))) as hdul:
        image = hdul[0].data.astype(np.float64)
        wcs = sdss.quiet_wcs(hdul[0].header)
        calib = hdul[1].data.astype(np.float64)
        sky = hdul[2].data
        allsky, xi, yi = sky["ALLSKY"][0], sky["XINTERP"][0], sky["YINTERP"][0]
    grid = np.meshgrid(yi, xi, indexing="ij")
    return image, map_coordinates(allsky, grid, order=1, mode="nearest") * calib[None, :], wcs


def pedestals(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Median of the frame in an annulus about each position (NaN nearer the edges than the annulus)."""
    return fidelity.local_levels(image, x, y, ANNULUS)


def slope(pedestal: np.ndarray, excess: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Least-squares slope of ``excess`` on ``pedestal`` and its bootstrap 16 and 84 percentiles."""
    design = np.vstack([pedestal, np.ones_like(pedestal)]).T
    fit = np.linalg.lstsq(design, excess, rcond=None)[0][0]
    rng = np.random.default_rng(seed)
    draws = [
        np.linalg.lstsq(design[j], excess[j], rcond=None)[0][0]
        for j in (rng.integers(0, len(excess), len(excess)) for _ in range(DRAWS))
    ]
    lo, hi = np.percentile(draws, [16, 84])
    return float(fit), float(lo), float(hi)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE_DIR), help="folder of real SDSS frames")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from astropy.io import fits

    from stargal.stages.realsky import discover

    rows = []
    for field in discover(Path(args.sample)):
        if field.star_catalog is None:
            continue
        with fits.open(field.star_catalog) as hdul:
            sweep = hdul[1].data
            stars = sweep[sweep["FIELD"] == field.fid.field]
        for band in "gri":
            b = BANDS.index(band)
            frame = field.folder / sdss.frame_filename(band, field.fid.run, field.fid.camcol, field.fid.field)
            image, sky, wcs = frame_sky_and_image(frame)
            x, y = wcs.all_world2pix(stars["RA"], stars["DEC"], 0)
            ped = pedestals(image, x, y)
            ix = np.clip(np.round(x).astype(int), 0, image.shape[1] - 1)
            iy = np.clip(np.round(y).astype(int), 0, image.shape[0] - 1)
            excess = stars["SKYFLUX"][:, b] * PIXEL_AREA_ARCSEC2 - sky[iy, ix]
            ok = np.isfinite(ped)
            fit, lo, hi = slope(ped[ok], excess[ok])
            rows.append(
                [field.label, band, int(ok.sum()),
                 f"{np.std(ped[ok]):.4f}", f"{fit:.2f}", f"{lo:.2f} - {hi:.2f}"]
            )  # fmt: skip
    print(
        "photo's local sky (sweep SKYFLUX) less the frame's sky model, against the frame's pedestal about each star\n"
    )
    print(markdown_table(["field", "band", "stars", "pedestal spread (nmgy/px)", "slope", "16-84 %"], rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
