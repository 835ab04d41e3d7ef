#!/usr/bin/env python3
"""The simulated sky against the real SDSS sample, one figure per property (PSF sizes, profile and variation,
seeing range, size-magnitude diagram, source density, sky residuals, galaxy colours, band offsets).

    bench/fidelity.py --sim-data-dir SIMDIR --fields 80 103 111 [--data-dir DIR] [--sample DIR]

The simulated fields must have been through stages 00 and 01; the real fields are prepared in --data-dir.
Writes DATA_DIR/reports/fidelity/*.png and fidelity.json.
"""

from __future__ import annotations

import argparse

from stargal import cli
from stargal.paths import DEFAULT_SAMPLE_DIR, DataPaths, FieldId


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="data folder for the real fields and the figures")
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE_DIR), help="folder of real SDSS frames")
    parser.add_argument("--sim-data-dir", required=True, help="data folder holding the simulated aligned cubes")
    parser.add_argument("--rerun", type=int, default=301)
    parser.add_argument("--run", type=int, default=8162)
    parser.add_argument("--camcol", type=int, default=6)
    parser.add_argument(
        "--fields",
        nargs="+",
        action=cli.FieldsAction,
        required=True,
        help="simulated fields to measure (80 103, 300-311)",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.stages.fidelity import run_fidelity

    fids = [FieldId(args.rerun, args.run, args.camcol, f) for f in args.fields]
    result = run_fidelity(cli.data_paths(args), args.sample, DataPaths.at(args.sim_data_dir), fids)
    print(f"{result['real']} real and {result['simulated']} simulated fields -> {result['folder']}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
