#!/usr/bin/env python3
"""The level faint sources sit on, the real sky against the simulated one: for every isolated detected source with
r 21.5-22.5, the median of one band 8-25 px about it, in units of the band's pixel noise; per field its 10th,
50th and 90th percentiles and the shares below -0.07 and above +0.07 noise sigma. Real frames' levels are light
left above the sky (neighbours, aureoles, undetected sources); a simulated sky whose residual also dips below it
shows a longer lower tail.

    bench/local_levels.py [--data-dir DIR] [--sample DIR] [--sim-data-dir DIR --fields 375-379] [--band r]

Real fields are prepared in --data-dir as real_sky.py prepares them. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli, detection, fidelity
from stargal.config import BANDS
from stargal.paths import DataPaths, FieldId
from stargal.tables import markdown_table

ANNULUS = (8.0, 25.0)  # pixels: beyond a faint source's own light
R_RANGE = (21.5, 22.5)
TAIL = 0.07  # noise sigma


def level_summary(levels: np.ndarray, tail: float = TAIL) -> list[float]:
    """[10th, 50th, 90th percentile, share below -tail, share above +tail] of finite ``levels``."""
    v = levels[np.isfinite(levels)]
    return [*np.percentile(v, [10, 50, 90]), float(np.mean(v < -tail)), float(np.mean(v > tail))]


def faint_source_levels(data: np.ndarray, bands: str, band: str) -> np.ndarray:
    """Local levels (noise sigma) about a cube's isolated sources with r in R_RANGE."""
    sources = detection.measure_sources(data, bands, faint=True)
    r = sources.magnitude[:, bands.index("r")]
    pick = (r >= R_RANGE[0]) & (r < R_RANGE[1]) & ~sources.deblended
    image = np.asarray(data[bands.index(band)], np.float64)
    _, noise = detection.background_subtracted(image)
    return fidelity.local_levels(image, sources.x[pick], sources.y[pick], ANNULUS) / noise


def _row(label: str, levels: np.ndarray) -> list[str]:
    p10, p50, p90, below, above = level_summary(levels)
    n = int(np.isfinite(levels).sum())
    return [label, str(n), f"{p10:+.3f}", f"{p50:+.3f}", f"{p90:+.3f}", f"{below:.2f}", f"{above:.2f}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_real_and_simulated_arguments(parser)
    parser.add_argument("--band", default="r", choices=list(BANDS))
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.stages.realsky import field_inputs, sample_fields

    paths = cli.data_paths(args)
    rows = []
    for field in sample_fields(paths.real_fields, Path(args.sample)):
        cube, data, _ = field_inputs(paths.real_fields, field.fid)
        levels = faint_source_levels(data, cube.bands, args.band)
        rows.append(_row(f"real {field.label}", levels))
    if args.sim_data_dir:
        sim = DataPaths.at(args.sim_data_dir)
        for f in args.fields:
            cube, data, _ = field_inputs(sim, FieldId(301, 8162, 6, f))
            rows.append(_row(f"simulated {f}", faint_source_levels(data, cube.bands, args.band)))
    print(f"Levels about isolated sources with r {R_RANGE[0]}-{R_RANGE[1]}, {args.band} band, in noise sigma\n")
    columns = ["field", "sources", "10 %", "median", "90 %", f"below -{TAIL}", f"above +{TAIL}"]
    print(markdown_table(columns, rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
