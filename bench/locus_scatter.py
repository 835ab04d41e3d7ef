#!/usr/bin/env python3
"""How well each field's photometry lets the stellar-locus test work: the colour scatter of its bright point-like
sources (picked by size alone, no classifier) about the locus, and how it changes across the frame.

    .venv/bin/python bench/locus_scatter.py [--data-dir DIR] [--sample DIR] [--simulated DIR --fields 375 379]

For every real field of the sample (prepared in DIR/real as real_sky.py does), and with --simulated for those
fields of a simulated sky aligned in that folder (run 8162 camcol 6): the share of the isolated point-like sources
with 16 < r < 20 on the locus (the real-sky evaluation's ceiling, less the deblended sources), and for those on
the locus's blue branch
(`stargal.locus.ri_residual`) the median and robust scatter of r-i less the locus's r-i at their g-r, overall and
per quarter of the frame's columns. A scatter several times another field's means the locus test is limited
there by the frame's colours, not by any classifier. The same blue-branch sources are also
measured with RAW_APERTURE_PX apertures twice: on the aligned cube, and on the field's g, r, i frames each
read on its own WCS (background by sep): equal scatters say the colours scatter in the frames themselves, not
because of the alignment. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli

COLUMN_QUARTERS = 4
RAW_APERTURE_PX = 7.0


def robust_scatter(values: np.ndarray) -> float:
    from stargal.normalise import MAD_TO_SIGMA

    values = values[np.isfinite(values)]
    return MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))) if len(values) >= 5 else np.nan


def aperture_residuals(images: dict, x: dict, y: dict, ebv: float) -> np.ndarray:
    """``locus.ri_residual`` of aperture colours: images, x, y per band g, r, i (background-subtracted)."""
    import sep

    from stargal import detection, locus

    mag = {}
    for b in "gri":
        flux = sep.sum_circle(images[b], x[b], y[b], RAW_APERTURE_PX)[0]
        mag[b] = detection.flux_to_mag(flux)
    return locus.ri_residual(mag["g"] - mag["r"], mag["r"] - mag["i"], ebv)


def raw_frame_scatters(raw_frames: dict, cube, data: np.ndarray, x: np.ndarray, y: np.ndarray, ebv: float) -> list:
    """Robust r-i scatters of the sources at cube pixels (x, y) in RAW_APERTURE_PX apertures: [on the aligned
    cube, on the raw frames ``raw_frames`` (band -> path), each on its own WCS]."""
    import sep

    from stargal import detection
    from stargal.sdss import read_frame

    cube_images = {b: detection.background_subtracted(data[cube.bands.index(b)])[0] for b in "gri"}
    on_cube = aperture_residuals(cube_images, dict.fromkeys("gri", x), dict.fromkeys("gri", y), ebv)
    ra, dec = cube.wcs.celestial.wcs_pix2world(x, y, 0)
    images, fx, fy = {}, {}, {}
    for b in "gri":
        frame = read_frame(raw_frames[b])
        image = np.ascontiguousarray(np.nan_to_num(frame.image), dtype=np.float32)
        images[b] = image - sep.Background(image).back()
        fx[b], fy[b] = frame.wcs.wcs_world2pix(ra, dec, 0)
    on_raw = aperture_residuals(images, fx, fy, ebv)
    both = np.isfinite(on_cube) & np.isfinite(on_raw)
    return [robust_scatter(on_cube[both]), robust_scatter(on_raw[both])]


def field_row(name: str, data: np.ndarray, cube, raw_frames: dict) -> list:
    from stargal import detection, locus, realsky
    from stargal.stages.realsky import percent_cell

    bands = cube.bands
    sources = detection.measure_sources(data, bands, faint=True)
    mag = sources.magnitude
    g, r, i = (mag[:, bands.index(b)] for b in "gri")
    gr, ri = g - r, r - i
    with np.errstate(invalid="ignore"):
        bright = realsky.in_bin(r, *realsky.LOCUS_RANGE) & np.isfinite(gr) & np.isfinite(ri)
    pointlike = bright & sources.star & ~sources.deblended
    ebv = locus.fit_reddening(gr[pointlike], ri[pointlike])
    on = locus.locus_distance(gr, ri, ebv) < locus.LOCUS_TOLERANCE
    residual = locus.ri_residual(gr, ri, ebv)
    blue = pointlike & np.isfinite(residual)
    quarter = np.minimum((sources.x * COLUMN_QUARTERS / data.shape[2]).astype(int), COLUMN_QUARTERS - 1)

    def median(select: np.ndarray) -> str:
        return f"{np.median(residual[select]):+.3f}" if select.sum() >= 5 else "-"

    scatters = [robust_scatter(residual[blue])]
    scatters += raw_frame_scatters(raw_frames, cube, data, sources.x[blue], sources.y[blue], ebv)
    return [name, f"{ebv:.2f}", percent_cell(realsky.fraction(on, pointlike)), int(blue.sum()), median(blue),
            *("-" if np.isnan(v) else f"{v:.3f}" for v in scatters),
            *(median(blue & (quarter == q)) for q in range(COLUMN_QUARTERS))]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="data folder (the real fields go to DIR/real)")
    parser.add_argument("--sample", default=None, help="real SDSS sample (default: ../shared/sdss-sample)")
    parser.add_argument("--simulated", default=None, help="data folder with simulated fields aligned")
    parser.add_argument("--fields", nargs=2, type=int, default=None, help="with --simulated: first and last field")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    if args.simulated and not args.fields:
        parser.error("--simulated needs --fields FIRST LAST")
    from stargal.config import REFERENCE
    from stargal.paths import DEFAULT_SAMPLE_DIR, DataPaths, FieldId
    from stargal.stages.realsky import field_inputs, sample_fields
    from stargal.tables import markdown_table

    rows = []
    sample = Path(args.sample) if args.sample else DEFAULT_SAMPLE_DIR
    real = cli.data_paths(args).real_fields
    for field in sample_fields(real, sample):
        cube, data, _ = field_inputs(real, field.fid)
        raw_frames = {b: real.frame(field.fid, b) for b in "gri"}
        rows.append(field_row(field.label, data, cube, raw_frames))
    if args.simulated:
        paths = DataPaths(Path(args.simulated))
        for number in range(args.fields[0], args.fields[1] + 1):
            fid = FieldId(REFERENCE.rerun, REFERENCE.run, REFERENCE.camcol, number)
            cube, data, _ = field_inputs(paths, fid)
            raw_frames = {b: paths.frame(fid, b) for b in "gri"}
            rows.append(field_row(f"simulated {number}", data, cube, raw_frames))
    if not rows:
        raise SystemExit(f"locus_scatter: no real sample in {sample} and no --simulated fields")
    columns = ["field", "E(B-V)", "isolated point-like, 16 < r < 20, on the locus", "blue branch", "r-i residual median",
               "robust scatter", f"robust scatter, {RAW_APERTURE_PX:g} px apertures: cube",
               "the same on the raw frames", *(f"median, columns quarter {q + 1}" for q in range(COLUMN_QUARTERS))]  # fmt: skip
    print(markdown_table(columns, rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
