#!/usr/bin/env python3
"""Blank sky beside bright stars against predict.py's source check: on each real field of the sample, how many
blank places on bright stars' wings and halos, blank places far from them, uniformly drawn places, detected
sources and catalog stars pass the check (``--min-snr``), by S/N alone (``presence.detection_snr``) and with the
response's curvature too (``presence.shows_source``), on the local background
(``presence.local_background_subtracted``) or, with ``--frame-background``, on the frames' own background.

    bench/halo_presence.py --data-dir DIR [--sample ../shared/sdss-sample] [--frame-background]
                           [--local-max] [--curvature-step N]

Blank places: on the wing, 6-15 and 20-40 pixels from a detected source brighter than r = 16 and at least 5
pixels from every detected source; in the halo, 45-100 pixels out and at least 8 pixels from every detected
source (``--detect``'s detection, to SDSS's depth); the far ones more than 150 pixels from every bright source;
the control ones 45-100 pixels from as many detected sources of r 19-20.3 (no halo to speak of, the same
crowding: where they pass as often as the halo places, faint undetected light, not halos, makes them pass).
Sources: the detected ones at their detected positions, by r magnitude, those of them on a brighter r < 16
source's wing (6-15 pixels out), and the catalog's stars where the sample has the star sweep; "moved" gives each a
random offset of 0.5 pixels rms, as a user's coordinates carry.
``--local-max`` adds, for comparison, the test first suggested instead of the curvature: a local maximum of the
response within 2 pixels; ``--curvature-step`` sets the Laplacian's step. Prints two Markdown tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli
from stargal.errors import StargalError

HALO_RADII = (45, 60, 80, 100)  # pixels from the bright source
WING_RADII = {"6-15": (6, 8, 10, 12, 15), "20-40": (20, 25, 30, 35, 40)}
WING_ANGLES = 12
WING_CLEAR_PX = 5.0  # from every detected source, as the audit that found the wings passing placed them
BRIGHT_R = 16.0
CONTROL_R = (19.0, 20.3)
CLEAR_PX = 8.0  # from every detected source
FAR_PX = 150.0  # from every bright source
N_FAR, N_UNIFORM = 400, 20_000
R_BINS = ((-np.inf, 20.0), (20.0, 21.0), (21.0, 22.0), (22.0, np.inf))
MOVED_PX = 0.5 / np.sqrt(2.0)  # per axis: 0.5 pixels rms in all
LOCAL_MAX_RADIUS = 2  # pixels (--local-max)


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


def wing_places(xy: np.ndarray, bright: np.ndarray, radii, shape: tuple[int, int], rng) -> np.ndarray:
    """[n, 2] blank places ``radii`` pixels from the ``bright`` sources (WING_ANGLES per radius, each star's
    turned by a random angle), at least WING_CLEAR_PX from every detected source and inside the frame."""
    from scipy.spatial import cKDTree

    height, width = shape
    angles = rng.uniform(0, 2 * np.pi, (len(bright), 1, 1)) + np.arange(WING_ANGLES) * 2 * np.pi / WING_ANGLES
    radius = np.asarray(radii, np.float64)[None, :, None]
    x = (bright[:, 0, None, None] + radius * np.cos(angles)).ravel()
    y = (bright[:, 1, None, None] + radius * np.sin(angles)).ravel()
    inside = (x > 15) & (x < width - 18) & (y > 15) & (y < height - 19)
    places = np.c_[x[inside], y[inside]]
    if len(xy) and len(places):
        places = places[cKDTree(xy).query(places)[0] >= WING_CLEAR_PX]
    return places


def on_wing(xy: np.ndarray, r_mag: np.ndarray) -> np.ndarray:
    """bool [n]: detected sources WING_RADII["6-15"] pixels from a brighter source of r < BRIGHT_R."""
    lo, hi = min(WING_RADII["6-15"]), max(WING_RADII["6-15"])
    bright = np.flatnonzero(r_mag < BRIGHT_R)
    out = np.zeros(len(xy), bool)
    for b in bright:  # a few hundred at most: one pass each
        d = np.hypot(*(xy - xy[b]).T)
        out |= (d >= lo) & (d <= hi) & ~(r_mag <= r_mag[b])
    return out


def local_max_nearby(data, rows, cols, r50, noise, radius: int = LOCAL_MAX_RADIUS) -> np.ndarray:
    """bool [n]: a pixel within ``radius`` of (rows, cols) whose ``detection_snr`` is at least each of its eight
    neighbours' (--local-max)."""
    from stargal import presence

    reach = np.arange(-radius - 1, radius + 2)
    snr = np.stack(
        [np.stack([presence.detection_snr(data, rows + dr, cols + dc, r50, noise) for dc in reach], 1) for dr in reach],
        1,
    )  # [n, rows, cols] of offsets
    out = np.zeros(len(rows), bool)
    for i in range(1, len(reach) - 1):
        for j in range(1, len(reach) - 1):
            if reach[i] ** 2 + reach[j] ** 2 > radius**2:
                continue
            around = snr[:, i - 1 : i + 2, j - 1 : j + 2].reshape(len(rows), 9)
            out |= snr[:, i, j] >= around.max(axis=1)
    return out


def field_rows(field, cube, data: np.ndarray, pmap, local: bool, local_max: bool, step: int) -> tuple[list, list]:
    """(blank places' rows, sources' rows): one per check, each a list of table cells."""
    from stargal import detection, patches, presence, sdss

    sources = detection.measure_sources(data, cube.bands, faint=True)
    xy = np.c_[sources.x, sources.y]
    r_mag = sources.magnitude[:, cube.bands.index("r")]
    checked = presence.local_background_subtracted(data) if local else data
    noise = presence.filter_noise(checked, pmap.at)

    def snr_only(rows, cols, r50):
        return presence.detection_snr(checked, rows, cols, r50, noise) >= presence.MIN_SNR

    def curvature(rows, cols, r50):
        return presence.shows_source(checked, rows, cols, r50, noise, presence.MIN_SNR, step)

    def with_local_max(rows, cols, r50):
        ok = snr_only(rows, cols, r50)
        ok[ok] = local_max_nearby(checked, rows[ok], cols[ok], r50[ok], noise)
        return ok

    checks = [("S/N", snr_only), ("S/N + curvature", curvature)]
    checks += [("S/N + local max", with_local_max)] if local_max else []

    def passes(check, points: np.ndarray) -> str:
        if len(points) == 0:
            return "-"
        rows, cols = patches.pixel_centres(points[:, 0], points[:, 1])
        ok = check(rows, cols, pmap.at(cols, rows))
        return f"{ok.sum()}/{ok.size} ({100 * ok.mean():.1f} %)"

    rng = np.random.default_rng(1)  # drawn in the order of the bench's first version: its places are the same
    bright = xy[r_mag < BRIGHT_R]
    near, far = blank_places(xy, bright, data.shape[1:], rng)
    faint = xy[(r_mag > CONTROL_R[0]) & (r_mag < CONTROL_R[1])]
    faint = faint[rng.choice(len(faint), min(len(faint), len(bright)), replace=False)]
    control, _ = blank_places(xy, faint, data.shape[1:], rng)
    height, width = data.shape[1:]
    uniform = np.c_[rng.uniform(0, width - 1, N_UNIFORM), rng.uniform(0, height - 1, N_UNIFORM)]
    more = np.random.default_rng(2)
    wings = [wing_places(xy, bright, radii, data.shape[1:], more) for radii in WING_RADII.values()]
    blank = [*wings, near, control, far, uniform]
    faint_or_none = ~np.isfinite(r_mag)  # no positive r flux: counted with the faintest
    found = [xy[((r_mag >= lo) & (r_mag < hi)) | (faint_or_none & (hi == np.inf))] for lo, hi in R_BINS]
    found += [xy + more.normal(0, MOVED_PX, xy.shape), xy[on_wing(xy, r_mag)]]
    stars = np.zeros((0, 2))
    if field.star_catalog is not None:
        table = sdss.read_catalog(field.star_catalog)
        table = table[table["FIELD"] == field.fid.field]
        x, y = cube.wcs.celestial.wcs_world2pix(table["RA"], table["DEC"], 0)
        inside = (x > 0) & (x < width - 1) & (y > 0) & (y < height - 1)
        stars = np.c_[x[inside], y[inside]]
    listed = [stars, stars + more.normal(0, MOVED_PX, stars.shape)]
    blank_rows = [[field.label, name, *(passes(check, p) for p in blank)] for name, check in checks]
    source_rows = [[field.label, name, *(passes(check, p) for p in found + listed)] for name, check in checks]
    return blank_rows, source_rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="data folder (the real fields go to DIR/real)")
    parser.add_argument("--sample", default=None, help="real SDSS sample (default: ../shared/sdss-sample)")
    parser.add_argument("--frame-background", action="store_true", help="the check without its local background")
    parser.add_argument("--local-max", action="store_true", help="also the local-maximum test, for comparison")
    parser.add_argument(
        "--curvature-step", type=int, default=None, help="the Laplacian's step in pixels (presence.CURVATURE_STEP)"
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.paths import DEFAULT_SAMPLE_DIR
    from stargal.presence import CURVATURE_STEP
    from stargal.stages.realsky import field_inputs, sample_fields
    from stargal.tables import markdown_table

    sample = Path(args.sample) if args.sample else DEFAULT_SAMPLE_DIR
    if not sample.is_dir():  # sample_fields yields no field there: two empty tables and exit 0, for a mistyped path
        raise StargalError(
            f"--sample {sample}: {'not a folder' if sample.exists() else 'no such folder'} (the real SDSS sample "
            "this bench measures; --sample or STARGAL_SAMPLE_DIR names it)"
        )
    real = cli.data_paths(args).real_fields
    blank, found = [], []
    for field in sample_fields(real, sample):
        cube, data, pmap = field_inputs(real, field.fid)
        step = args.curvature_step or CURVATURE_STEP
        rows = field_rows(field, cube, data, pmap, not args.frame_background, args.local_max, step)
        blank += rows[0]
        found += rows[1]
    bins = [
        f"r < {hi:g}" if lo == -np.inf else f"r > {lo:g}" if hi == np.inf else f"r {lo:g}-{hi:g}" for lo, hi in R_BINS
    ]
    background = "frame background" if args.frame_background else "local background"
    step = args.curvature_step or CURVATURE_STEP
    print(f"blank places that pass the source check ({background}; curvature over {step} px)")
    print(
        markdown_table(
            [
                "field",
                "check",
                *(f"wing, {span} px from r < {BRIGHT_R:g}" for span in WING_RADII),
                f"halo, 45-100 px from r < {BRIGHT_R:g}",
                f"45-100 px from r {CONTROL_R[0]:g}-{CONTROL_R[1]:g}",
                "far",
                "uniform",
            ],
            blank,
        )
    )
    print(f"\nsources that pass the source check ({background}; curvature over {step} px)")
    print(
        markdown_table(
            [
                "field",
                "check",
                *(f"detected, {b}" for b in bins),
                "detected, moved",
                f"detected, 6-15 px from r < {BRIGHT_R:g}",
                "catalog stars",
                "catalog, moved",
            ],
            found,
        )
    )
    return 0


if __name__ == "__main__":
    cli.run_main(main)
