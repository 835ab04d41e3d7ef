#!/usr/bin/env python3
"""Benchmark stage 00: the reference project's sequential ``requests.get`` loop versus stargal's downloader.

Both fetch the same SAS tree (N fields x 5 frames + irg jpeg, plus the gal/star sweeps) from a local HTTP
server on 127.0.0.1 that adds a fixed latency to every request (as a distant archive would). A second round
injects faults (HTTP 500, dropped connections, a short body, an HTML page with status 200) and counts the
files each approach leaves missing or corrupt.

    .venv/bin/python bench/bench_download.py [--fields 10] [--latency 0.2] [--shape 128 192] [--workers 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import requests

from stargal.config import FieldSet
from stargal.download import HttpSettings
from stargal.paths import PROJECT_ROOT, DataPaths
from stargal.stages.download import DownloadOptions, final_path, plan_files, run_download
from stargal.verify import VerificationError, verify_file


def _load_sas_server():
    """The tests' fault-injecting SAS server (tests/sas_server.py), loaded from its file: tests/ is no package."""
    spec = importlib.util.spec_from_file_location("sas_server", PROJECT_ROOT / "tests" / "sas_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the importlib recipe: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sas_server = _load_sas_server()
SasServer, make_sas_tree = sas_server.SasServer, sas_server.make_sas_tree


def reference_download(base_url: str, specs, out: Path) -> int:
    """What the course project does: one bare requests.get per file, whole body in memory, errors hidden."""
    total = 0
    for spec in specs:
        dest = out / spec.name
        try:
            r = requests.get(base_url + spec.relpath)
            with open(dest, "wb") as fh:
                fh.write(r.content)
            total += len(r.content)
        except Exception:  # noqa: BLE001 - the reference's bare except, reproduced on purpose
            pass
    return total


def damaged(files: list[tuple[Path, str]]) -> tuple[int, int]:
    """(missing, corrupt) among the files a run should have produced."""
    missing = corrupt = 0
    for path, kind in files:
        if not path.exists():
            missing += 1
            continue
        try:
            verify_file(path, kind)
        except VerificationError:
            corrupt += 1
    return missing, corrupt


def inject_faults(server: SasServer, specs) -> int:
    """Add the faults to frames spread over ``specs``; the number added (fewer than six with fewer frames)."""
    frames = [s for s in specs if s.kind == "frame"]
    faults = [
        {"status": 500},
        {"status": 503},
        {"drop_after": 2000},
        {"drop_after": 500},
        {"short": 1000},
        {"html": True},
    ]
    added = 0
    for spec, fault in zip(frames[:: max(1, len(frames) // len(faults))], faults, strict=False):
        server.add_fault(spec.relpath, fault)
        added += 1
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fields", type=int, default=10, help="number of fields")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds added to every request")
    parser.add_argument("--shape", type=int, nargs=2, default=(128, 192), help="frame rows cols")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    fs = FieldSet(301, 8162, 6, tuple(range(80, 80 + args.fields)), (), (), ())
    specs = plan_files(fs)
    settings = HttpSettings(backoff=0.2, backoff_max=2.0)
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        tmp = Path(tmp)
        tree = make_sas_tree(tmp / "tree", fs.rerun, fs.run, fs.camcol, fs.fields, shape=tuple(args.shape), rows=2000)
        served = sum((tree / s.relpath).stat().st_size for s in specs)
        print(f"{len(specs)} files, {served / 1e6:.2f} MB served, {args.latency * 1000:.0f} ms latency per request")
        print(f"{'round':<8} {'approach':<28} {'wall s':>7} {'MB':>7} {'missing':>8} {'corrupt':>8}")
        with SasServer(tree, latency=args.latency) as server:
            for faults in (False, True):
                label = "faults" if faults else "clean"
                runs = [
                    ("reference (sequential get)", None),
                    ("stargal --workers 1", 1),
                    (f"stargal --workers {args.workers}", args.workers),
                ]
                for name, workers in runs:
                    server.clear()
                    n_faults = inject_faults(server, specs) if faults else 0
                    out = tmp / f"{label}-{workers or 'ref'}"
                    out.mkdir()
                    start = time.perf_counter()
                    if workers is None:
                        got = reference_download(server.base_url, specs, out)
                        expected = [(out / s.name, s.kind) for s in specs]
                    else:
                        paths = DataPaths(out)
                        options = DownloadOptions(source=server.base_url, workers=workers, http=settings)
                        got = run_download(paths, fs, options).bytes
                        expected = [(final_path(paths, s), s.kind) for s in specs]
                    wall = time.perf_counter() - start
                    missing, corrupt = damaged(expected)
                    print(f"{label:<8} {name:<28} {wall:7.2f} {got / 1e6:7.2f} {missing:8d} {corrupt:8d}")
                if faults:
                    kinds = "2x 5xx, 2 dropped connections, 1 short body, 1 HTML page"
                    print(f"({n_faults} faults injected per approach, the first {n_faults} of: {kinds})")


if __name__ == "__main__":
    main()
