#!/usr/bin/env python3
"""Benchmark predict.py: 100,000 sky positions in one field, wall time and peak memory of the whole command.

Draws N positions uniformly over a field's aligned cube (a few per cent just outside it), writes them as a
CSV and runs ``code/predict.py --csv ... --out ...`` as a user would (a fresh process: Python start-up, and
TensorFlow's where the Keras engine runs, model loading, reading the cube and the CSV, classification, writing
the table), once per combination of the ``--engine``, ``--tta`` and ``--min-snr`` values asked for. Reports
wall time and the peak resident memory of the process, with the machine.
Needs a data folder with an aligned field and a trained model (after ``./run_scripts.sh --demo``).

    .venv/bin/python bench/bench_predict.py [--data-dir DIR] [--field 80] [--n 100000] [--tta auto off]
        [--engine auto keras] [--min-snr 3.5 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_pipeline import machine  # bench/ is on the path: it holds the script being run

from stargal.config import REFERENCE
from stargal.cube import read_cube
from stargal.fsio import write_text
from stargal.paths import PROJECT_ROOT, DataPaths, FieldId

TARGET = {"seconds": 10.0, "peak_gb": 1.0}  # the reliability issue's target for TARGET_POSITIONS positions
TARGET_POSITIONS = 100_000


def positions(cube_path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RA/Dec drawn uniformly over the cube's pixel area, 10 pixels beyond each edge."""
    cube = read_cube(cube_path)
    rows, cols = cube.shape
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-10, cols + 10, n), rng.uniform(-10, rows + 10, n)
    ra, dec = cube.wcs.wcs_pix2world(x, y, 0)
    return ra, dec


def run_once(cmd: list[str], log: Path) -> dict:
    """Wall time and peak RSS (``wait4``'s ``ru_maxrss`` of this child alone) of one command."""
    with open(log, "w+") as fh:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        fh.seek(0)
        output = fh.read()
    if proc.returncode != 0:
        raise SystemExit(f"bench_predict: {' '.join(cmd)} failed:\n{output[-2000:]}")
    return {
        "seconds": round(seconds, 2),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "summary": output.strip().splitlines()[-1].rsplit(" -> ", 1)[0],  # its output file is deleted after
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(PROJECT_ROOT / "data"), help="data folder with a run's outputs")
    parser.add_argument("--field", type=int, default=REFERENCE.test_fields[0], help="field (with the reference run)")
    parser.add_argument("--n", type=int, default=100_000, help="positions")
    parser.add_argument("--tta", nargs="+", default=["auto", "off"], choices=("auto", "all", "off"), help="modes")
    parser.add_argument("--engine", nargs="+", default=["auto"], choices=("auto", "onnx", "keras"), help="engines")
    parser.add_argument("--model", default=None, help="model (default: the data folder's latest)")
    parser.add_argument(
        "--min-snr", nargs="+", default=[None], help="predict.py --min-snr values (default: its own; 0 classifies all)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    paths = DataPaths.at(args.data_dir)
    fid = FieldId(REFERENCE.rerun, REFERENCE.run, REFERENCE.camcol, args.field)
    if not paths.cube(fid).is_file() or not (args.model or paths.latest_model.is_file()):
        print(f"bench_predict: no aligned field {fid} or no trained model in {paths.root}; run ./run_scripts.sh --demo")
        return 2
    ra, dec = positions(paths.cube(fid), args.n, args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="stargal-bench-predict-") as tmp:
        coords = Path(tmp) / "positions.csv"
        coords.write_text(
            "ra,dec\n" + "".join(f"{r!r},{d!r}\n" for r, d in zip(ra.tolist(), dec.tolist(), strict=True))
        )
        for engine, mode, snr in itertools.product(args.engine, args.tta, args.min_snr):
            out = Path(tmp) / f"predictions-{engine}-{mode}-{snr}.csv"
            cmd = [sys.executable, str(PROJECT_ROOT / "code" / "predict.py"), "--data-dir", str(paths.root),
                   "--field", str(args.field), "--csv", str(coords), "--out", str(out), "--tta", mode,
                   "--engine", engine, "-q"]  # fmt: skip
            if args.model:
                cmd += ["--model", args.model]
            if snr is not None:
                cmd += ["--min-snr", snr]
            result = {
                "engine": engine,
                "tta": mode,
                "min_snr": snr,
                **run_once(cmd, Path(tmp) / f"{engine}-{mode}.log"),
            }
            results.append(result)
            print(
                f"--engine {engine:5s} --tta {mode:4s}{f' --min-snr {snr}' if snr is not None else ''}: "
                f"{result['seconds']:7.2f} s wall, {result['cpu_seconds']:6.1f} s CPU, "
                f"peak RSS {result['peak_rss_gb']:.2f} GB | {result['summary']}",
                flush=True,
            )
    m = machine()
    print(f"\npredict.py, {args.n:,} positions in field {fid} of {paths.root}")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, {m['date']}")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.n == TARGET_POSITIONS:  # the target is for that many positions: compared only then
        print(f"target: under {TARGET['seconds']:.0f} s and {TARGET['peak_gb']:.0f} GB per run")
        for r in results:
            met = r["seconds"] < TARGET["seconds"] and r["peak_rss_gb"] < TARGET["peak_gb"]
            print(f"  --engine {r['engine']} --tta {r['tta']}: {'met' if met else 'NOT met'}")
    else:
        print(
            f"(the target, {TARGET['seconds']:.0f} s and {TARGET['peak_gb']:.0f} GB, is for {TARGET_POSITIONS:,} positions)"
        )
    if args.output:
        write_text(args.output, json.dumps({"machine": m, "n": args.n, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
