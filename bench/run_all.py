#!/usr/bin/env python3
"""Run every benchmark (bench/bench_*.py) from one entry point, one after another, and summarise.

    .venv/bin/python bench/run_all.py                 # all of them, each with its defaults
    .venv/bin/python bench/run_all.py --list
    .venv/bin/python bench/run_all.py --only download alignment --skip pipeline
    .venv/bin/python bench/run_all.py -- --workers 2  # arguments after -- go to every benchmark that takes them

Each option after ``--`` (with the values that follow it) goes to the benchmarks whose parser declares it (here
``--workers`` to download and pipeline, not to alignment or predict, which have no such option); one that no
benchmark run declares is an error. Each benchmark prints its own results; this prints a closing table
(benchmark, exit status, wall time) with the machine and date, and writes it as JSON with --output.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from bench_pipeline import machine  # noqa: E402

from stargal.fsio import write_text  # noqa: E402


def benchmarks() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def declared_options(script: Path) -> set[str]:
    """The long options a benchmark's parser declares (``add_argument("--name"``), read from its source."""
    return set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", script.read_text(encoding="utf-8")))


def option_groups(extra: list[str]) -> list[list[str]]:
    """The arguments after ``--`` as groups, each an option (``--name`` or ``--name=value``) and its values."""
    groups: list[list[str]] = []
    for arg in extra:
        if arg.startswith("--") or not groups:
            groups.append([arg])
        else:
            groups[-1].append(arg)
    return groups


def arguments_for(groups: list[list[str]], options: set[str]) -> list[str]:
    """The arguments of ``groups`` whose option is among ``options``, in order."""
    return [arg for group in groups if group[0].split("=", 1)[0] in options for arg in group]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="skip these")
    parser.add_argument("--output", default=None, help="write the summary as JSON here")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    found = benchmarks()
    if args.list:
        print("\n".join(found))
        return 0
    unknown = [n for n in (args.only or []) + args.skip if n not in found]
    if unknown:
        parser.error(f"unknown benchmark(s) {' '.join(unknown)}; available: {' '.join(found)}")
    names = [n for n in (args.only or found) if n not in args.skip]
    groups = option_groups(extra)
    options = {name: declared_options(found[name]) for name in names}
    unused = [g[0] for g in groups if not any(g[0].split("=", 1)[0] in options[n] for n in names)]
    if unused:
        parser.error(f"no benchmark run takes {' '.join(unused)} (benchmarks: {' '.join(names)})")
    rows = []
    for name in names:
        print(f"\n===== bench {name} =====", flush=True)
        start = time.monotonic()
        status = subprocess.run([sys.executable, str(found[name]), *arguments_for(groups, options[name])]).returncode
        rows.append({"benchmark": name, "status": status, "seconds": round(time.monotonic() - start, 1)})
    m = machine()
    print(f"\nbenchmarks on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, {m['date']}")
    for r in rows:
        print(
            f"  {r['benchmark']:20s} {'ok' if r['status'] == 0 else 'FAILED (' + str(r['status']) + ')':12s} {r['seconds']:8.1f} s"
        )
    if args.output:
        write_text(args.output, json.dumps({"machine": m, "benchmarks": rows}, indent=2) + "\n")
    return 0 if all(r["status"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
