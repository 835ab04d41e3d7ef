#!/usr/bin/env python3
"""Benchmark the whole demo pipeline: every stage on the reference-size simulated sky (ten full-size fields).

Runs ``run_scripts.sh --demo`` (through stargal.pipeline, the same engine) into a fresh data folder and
reports per stage the wall time, the peak resident memory of the largest process and of the whole process
tree, next to the reference project's reported costs (~30 min alignment, ~10 GB peak memory), with the
machine and the date. Takes a while on 2 cores: the lead runs it, not the tests.

    .venv/bin/python bench/bench_pipeline.py [--workers 2] [--data-dir DIR --keep] [--small] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from stargal.cli import default_workers
from stargal.fsio import write_text
from stargal.paths import DataPaths

REFERENCE_COSTS = {"alignment_minutes": 30, "peak_memory_gb": 10}  # the course project's, as reported


def machine() -> dict:
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def total_peak_gb(stages: list[dict]) -> float:
    """The run's peak memory (GB): over the stages, the larger of the process tree's peak and the largest single
    process's. The tree's is sampled and can miss a peak that ``wait4`` saw (a one-process stage at 206 MB sampled
    at 201 MB): a tree never holds less than its largest process."""
    return max((max(s["peak_tree_mb"] or 0, s["peak_rss_mb"] or 0) for s in stages), default=0) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=default_workers(), help="worker processes per stage")
    parser.add_argument("--data-dir", default=None, help="data folder (default: a fresh temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    parser.add_argument("--small", action="store_true", help="the tiny sky instead (a quick check of the bench)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    data = Path(args.data_dir).resolve() if args.data_dir else Path(tempfile.mkdtemp(prefix="stargal-bench-"))
    cmd = [sys.executable, "-m", "stargal.pipeline", "--demo", "--no-publish",
           "--data-dir", str(data), "--workers", str(args.workers), "-q"]  # fmt: skip
    if args.small:
        cmd.append("--small")
    print("running:", " ".join(cmd), flush=True)
    try:
        status = subprocess.run(cmd).returncode
        record = json.loads(DataPaths(data).pipeline_record.read_text())
    finally:
        if not args.data_dir and not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    result = {"machine": machine(), "workers": args.workers, "sky": "tiny" if args.small else "reference-size simulated",
              "status": status, "stages": record["stages"], "reference_costs": REFERENCE_COSTS}  # fmt: skip

    m = result["machine"]
    print(f"\nstargal pipeline benchmark, {result['sky']} sky, {args.workers} workers")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, {m['date']}")
    print(f"{'stage':13s} {'status':8s} {'wall':>10s} {'peak RSS':>10s} {'tree peak':>10s}")
    for s in record["stages"]:
        rss = "-" if s["peak_rss_mb"] is None else f"{s['peak_rss_mb'] / 1024:.2f} GB"
        tree = "-" if s["peak_tree_mb"] is None else f"{s['peak_tree_mb'] / 1024:.2f} GB"
        print(f"{s['stage']:13s} {s['status']:8s} {s['seconds']:9.1f}s {rss:>10s} {tree:>10s}")
    ran = [s for s in record["stages"] if s["status"] in ("ok", "failed")]
    peak = total_peak_gb(ran)
    print(f"{'total':13s} {'':8s} {sum(s['seconds'] for s in ran):9.1f}s {'':>10s} {peak:>8.2f} GB")
    print(f"reference project (reported): alignment ~{REFERENCE_COSTS['alignment_minutes']} min, "
          f"peak ~{REFERENCE_COSTS['peak_memory_gb']} GB")  # fmt: skip
    if args.output:
        write_text(args.output, json.dumps(result, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
