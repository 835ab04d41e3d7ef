#!/usr/bin/env python3
"""Blank sky in bright stars' halos against predict.py's source check: on each real field of the sample, how many
blank places near bright stars, blank places far from them, uniformly drawn places, detected sources and catalog
stars pass the check (``--min-snr``), with the local background (``presence.local_background_subtracted``) and,
with ``--frame-background``, on the frames' own background as before 2026-12-06.

    bench/halo_presence.py --data-dir DIR [--sample ../shared/sdss-sample] [--frame-background]

Blank places: 45-100 pixels (18-40") from a detected source brighter than r = 16, at least 8 pixels from every
detected source (``--detect``'s detection, to SDSS's depth); the far ones more than 150 pixels from every bright
source; the control ones 45-100 pixels from as many detected sources of r 19-20.3 (no halo to speak of, the same
crowding: where they pass as often as the halo places, faint undetected light, not halos, makes them pass).
Prints one Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli

HALO_RADII = (45, 60, 80, 100)  # pixels from the bright source
BRIGHT_R = 16.0
CONTROL_R = (19.0, 20.3)
CLEAR_PX = 8.0  # from every detected source
FAR_PX = 150.0  # from every bright source
N_FAR, N_UNIFORM = 400, 20_000


def blank_places(xy: np.ndarray, bright: np.ndarray, shape: tuple[int, int], rng) -> tuple[np.ndarray, np.ndarray]:
    """(near, far) [n, 2] pixel positions of blank sky near the ``bright`` sources and far from them."""
    height, width = shape

    def clear(x, y):
        return 15 < x < width - 18 and 15 < y < height - 19 and np.hypot(*(xy - (x, y)).T).min() >= CLEAR_PX

    angles = np.arange(8) * np.pi / 4 + 0.3
    near = [(x0 + r * np.cos(a), y0 + r * np.sin(a)) for x0, y0 in bright for r in HALO_RADII for a in angles]
    near = [p for p in near if clear(*p)]
    far = []
    for _ in range(200_000):  # a crowded field has few such places: stop trying after a while
        if len(far) >= N_FAR:
            break
        x, y = rng.uniform(15, width - 18), rng.uniform(15, height - 19)
        if clear(x, y) and (len(bright) == 0 or np.hypot(*(bright - (x, y)).T).min() > FAR_PX):
            far.append((x, y))
    return np.reshape(near, (-1, 2)), np.reshape(far, (-1, 2))


def field_row(field, cube, data: np.ndarray, pmap, local: bool) -> list:
    from stargal import detection, patches, presence, sdss

    sources = detection.measure_sources(data, cube.bands, faint=True)
    xy = np.c_[sources.x, sources.y]
    r_mag = sources.magnitude[:, cube.bands.index("r")]
    checked = presence.local_background_subtracted(data) if local else data
    noise = presence.filter_noise(checked, pmap.at)

    def passes(points: np.ndarray) -> str:
        if len(points) == 0:
            return "-"
        rows, cols = patches.pixel_centres(points[:, 0], points[:, 1])
        ok = presence.detection_snr(checked, rows, cols, pmap.at(cols, rows), noise) >= presence.MIN_SNR
        return f"{ok.sum()}/{ok.size} ({100 * ok.mean():.1f} %)"

    rng = np.random.default_rng(1)
    bright = xy[r_mag < BRIGHT_R]
    near, far = blank_places(xy, bright, data.shape[1:], rng)
    faint = xy[(r_mag > CONTROL_R[0]) & (r_mag < CONTROL_R[1])]
    faint = faint[rng.choice(len(faint), min(len(faint), len(bright)), replace=False)]
    control, _ = blank_places(xy, faint, data.shape[1:], rng)
    height, width = data.shape[1:]
    uniform = np.c_[rng.uniform(0, width - 1, N_UNIFORM), rng.uniform(0, height - 1, N_UNIFORM)]
    stars = "-"
    if field.star_catalog is not None:
        table = sdss.read_catalog(field.star_catalog)
        table = table[table["FIELD"] == field.fid.field]
        x, y = cube.wcs.celestial.wcs_world2pix(table["RA"], table["DEC"], 0)
        inside = (x > 0) & (x < width - 1) & (y > 0) & (y < height - 1)
        stars = passes(np.c_[x[inside], y[inside]])
    return [field.label, passes(near), passes(control), passes(far), passes(uniform), passes(xy), stars]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="data folder (the real fields go to DIR/real)")
    parser.add_argument("--sample", default=None, help="real SDSS sample (default: ../shared/sdss-sample)")
    parser.add_argument("--frame-background", action="store_true", help="the check without its local background")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.paths import DEFAULT_SAMPLE_DIR
    from stargal.stages.realsky import field_inputs, sample_fields
    from stargal.tables import markdown_table

    sample = Path(args.sample) if args.sample else DEFAULT_SAMPLE_DIR
    real = cli.data_paths(args).real_fields
    rows = []
    for field in sample_fields(real, sample):
        cube, data, pmap = field_inputs(real, field.fid)
        rows.append(field_row(field, cube, data, pmap, local=not args.frame_background))
    columns = [
        "field",
        "blank, 45-100 px from r < 16",
        f"blank, 45-100 px from r {CONTROL_R[0]:g}-{CONTROL_R[1]:g}",
        "blank, far",
        "uniform",
        "detected sources",
        "catalog stars",
    ]
    print("pass the source check (" + ("frame background" if args.frame_background else "local background") + ")")
    print(markdown_table(columns, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
