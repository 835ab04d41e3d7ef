#!/usr/bin/env python3
"""Calibrate the simulated sky against the real SDSS sample: simulate full-size fields, measure real and
simulated frames the same way (background sigma, star FWHM, band offsets), write
``reports/simulation/calibration.json`` and ``real_vs_simulated.png`` of the data folder, print a table.

    bench/calibrate_simulation.py [--data-dir DIR] [--fields 80 103] [--sample ../shared/sdss-sample]

Without --fields it simulates fields 80 and 103 (not the reference configuration's ten); the sample must hold
8162-6-80 and 4510-4-30.
"""

from __future__ import annotations

import time
from pathlib import Path

from stargal import cli
from stargal.errors import StargalError
from stargal.fsio import read_json, write_json
from stargal.paths import DEFAULT_SAMPLE_DIR
from stargal.stages.calibration import run_calibration
from stargal.stages.simulate import simulate_sky


def main(argv=None) -> int:
    parser = cli.make_parser(__doc__.split("\n\n")[0], workers=True)
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE_DIR), help="real sample folder")
    for action in parser._actions:  # this bench's own default, not the reference configuration's ten fields
        if action.dest == "fields":
            action.help = "fields to simulate and measure (default: 80 103)"
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    if not (Path(args.sample) / "008162-6-0080").is_dir():
        raise StargalError(f"{args.sample}: real SDSS sample not found")
    fs = cli.field_set(args)
    if args.fields is None:
        fs = type(fs)(fs.rerun, fs.run, fs.camcol, (80, 103), (103,), (), (80,))
    paths = cli.data_paths(args)
    start = time.perf_counter()
    sim = simulate_sky(paths, fs, seed=args.seed, force=args.force, workers=args.workers, frames_only=True)
    result = run_calibration(args.sample, paths, fs)
    report = paths.reports("simulation") / "calibration.json"
    data = read_json(report)
    data["simulation"] = {"seconds_per_field": sim["field_seconds"], "workers": args.workers}
    write_json(report, data)
    print("pixel noise sigma in nanomaggies, star FWHM in arcsec, band offset from r in pixels")
    print(
        f"{'band':4} {'sigma real':>17} {'sigma sim':>17} {'FWHM real':>11} {'FWHM sim':>11} {'offset real':>11} {'offset sim':>11}"
    )
    for b, s in result["summary"].items():
        print(
            f"{b:4} {s['sigma_real'][0]:.4f}-{s['sigma_real'][1]:.4f}   {s['sigma_simulated'][0]:.4f}-{s['sigma_simulated'][1]:.4f}"
            f"   {s['fwhm_real'][0]:.2f}-{s['fwhm_real'][1]:.2f}   {s['fwhm_simulated'][0]:.2f}-{s['fwhm_simulated'][1]:.2f}"
            f"   {s['offset_real'][0]:5.2f}-{s['offset_real'][1]:5.2f}   {s['offset_simulated'][0]:5.2f}-{s['offset_simulated'][1]:5.2f}"
        )
    print(f"simulation seconds per field: {sim['field_seconds']}; total {time.perf_counter() - start:.1f} s")
    print(f"wrote {report} and {report.with_name('real_vs_simulated.png')}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
