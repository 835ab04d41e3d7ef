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
there by the frame's colours, not by any classifier. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli

COLUMN_QUARTERS = 4


def field_row(name: str, data: np.ndarray, bands: str) -> list:
    from stargal import detection, locus, realsky
    from stargal.normalise import MAD_TO_SIGMA
    from stargal.stages.realsky import percent_cell

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

    values = residual[blue]
    scatter = MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))) if len(values) >= 5 else np.nan
    return [name, f"{ebv:.2f}", percent_cell(realsky.fraction(on, pointlike)), int(blue.sum()), median(blue),
            "-" if np.isnan(scatter) else f"{scatter:.3f}",
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
        rows.append(field_row(field.label, data, cube.bands))
    if args.simulated:
        paths = DataPaths(Path(args.simulated))
        for number in range(args.fields[0], args.fields[1] + 1):
            cube, data, _ = field_inputs(paths, FieldId(REFERENCE.rerun, REFERENCE.run, REFERENCE.camcol, number))
            rows.append(field_row(f"simulated {number}", data, cube.bands))
    if not rows:
        raise SystemExit(f"locus_scatter: no real sample in {sample} and no --simulated fields")
    columns = ["field", "E(B-V)", "isolated point-like, 16 < r < 20, on the locus", "blue branch", "r-i residual median",
               "robust scatter", *(f"median, columns quarter {q + 1}" for q in range(COLUMN_QUARTERS))]  # fmt: skip
    print(markdown_table(columns, rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
