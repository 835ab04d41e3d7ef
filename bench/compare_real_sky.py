#!/usr/bin/env python3
"""Compare groups of models (e.g. seeds of one configuration) on the real-sky evaluation and, where they have
one, their simulated test metrics: mean and sample standard deviation per group, one table.

    bench/compare_real_sky.py --group "new sky" M1 M2 M3 --group "old sky" M4 M5 M6 [--data-dir DIR] [--out DIR]

Each model (a model folder, a model name of DIR or ``pretrained``) is evaluated by ``real_sky.py`` into
OUT/<model name>/ (skipped when current); writes OUT/comparison.md and comparison.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli
from stargal.fsio import read_json, write_json, write_text
from stargal.metrics import mcc_from_counts
from stargal.paths import DEFAULT_SAMPLE_DIR, ModelFiles
from stargal.tables import markdown_table

COLUMNS = (
    ("sim test MCC", lambda r, m: m.get("test", {}).get("mcc")),
    ("sim test accuracy", lambda r, m: m.get("test", {}).get("accuracy")),
    ("4510 recall", lambda r, m: _catalog(r, lambda c: c["recall"]["overall"]["fraction"])),
    ("4510 recall r>22", lambda r, m: _catalog(r, lambda c: c["recall"]["by_r"][2]["fraction"])),
    ("4510 non-catalog r<21 called star", lambda r, m: _catalog(r, lambda c: c["bright_non_catalog"]["fraction"])),
    ("4510 two-sided MCC", lambda r, m: _catalog(r, lambda c: c["two_sided"]["mcc"])),
    ("4510 non-catalog r 21-22 called star", lambda r, m: _catalog(r, lambda c: c["faint_non_catalog"]["fraction"])),
    ("4510 MCC, negatives to r 22", lambda r, m: _catalog(r, lambda c: c["two_sided_to_complete"]["mcc"])),
    (
        "4510 non-catalog r 22-22.5 called star",
        lambda r, m: _catalog(r, lambda c: c["fainter_non_catalog"]["fraction"]),
    ),
    ("4510 MCC, negatives to r 22.5", lambda r, m: _catalog(r, lambda c: c["two_sided_to_limit"]["mcc"])),
    ("min locus (called star)", lambda r, m: _min_locus(r)),
    ("r<16 called star, all fields", lambda r, m: _pooled(r, "saturating")),
    ("r<16 called galaxy (count)", lambda r, m: _pooled(r, "saturating", missed=True)),
    ("labelled accuracy (fields with both sweeps)", lambda r, m: _labelled(r, "accuracy")),
    ("labelled MCC", lambda r, m: _labelled(r, "mcc")),
)


def _min_locus(record: dict):
    """The lowest share of locus sources called star over the fields that have such sources (a field without
    any has no share: None, not 0); None when no field has one."""
    shares = [f["locus"]["called_star"]["fraction"] for f in record["fields"] if "locus" in f]
    shares = [v for v in shares if v is not None]
    return min(shares) if shares else None


def model_metrics(paths, model: str) -> dict:
    """The simulated test metrics (metrics.json) of ``model`` as real_sky.py resolves it (``pretrained``, a model
    name of the data folder or a folder); {} when it has none (an ensemble may not)."""
    from stargal.stages.predict import resolve_model_dir

    metrics = ModelFiles(resolve_model_dir(paths, model)).metrics
    return read_json(metrics) if metrics.exists() else {}


def _labelled(record: dict, metric: str):
    """Accuracy or MCC of the labelled check pooled over the fields that have it (their confusion matrices
    summed); None when no field has both sweeps."""
    matrices = [np.array(f["labelled"]["overall"]["confusion_matrix"]) for f in record["fields"] if "labelled" in f]
    if not matrices:
        return None
    (tn, fp), (fn, tp) = sum(matrices)
    if metric == "accuracy":
        return (tn + tp) / (tn + fp + fn + tp)
    return float(mcc_from_counts(tn, fp, fn, tp))


def _pooled(record: dict, check: str, missed: bool = False):
    """One per-field fraction check pooled over the fields (its k / n summed), or the count it misses."""
    k = sum(f[check]["k"] for f in record["fields"] if check in f)
    n = sum(f[check]["n"] for f in record["fields"] if check in f)
    if missed:
        return n - k
    return k / n if n else None


def _catalog(record: dict, pick):
    for f in record["fields"]:
        if "catalog" in f:
            return pick(f["catalog"])
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "MODEL"))
    parser.add_argument("--data-dir", default=None, help="data folder for the real fields")
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE_DIR))
    parser.add_argument("--out", default=None, help="results folder (default: DATA/reports/real_sky_comparison)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    from stargal.stages.realsky import check_sample_files, run_real_sky

    check_sample_files(Path(args.sample))
    paths = cli.data_paths(args)
    out = Path(args.out) if args.out else paths.reports("real_sky_comparison")
    rows, record = [], {}
    for name, *models in args.group:
        values = {c: [] for c, _ in COLUMNS}
        for model in models:
            result = run_real_sky(paths, Path(args.sample), model=model, out=out / Path(model).name)
            metrics = model_metrics(paths, model)
            for column, pick in COLUMNS:
                values[column].append(pick(result, metrics))
        record[name] = {"models": models, **values}
        row = [name, len(models)]
        for column, _ in COLUMNS:
            v = np.array([np.nan if x is None else x for x in values[column]], float)
            v = v[np.isfinite(v)]
            row.append("-" if not v.size else f"{v.mean():.3f} +- {v.std(ddof=1) if v.size > 1 else 0.0:.3f}")
        rows.append(row)
    table = markdown_table(["group", "models", *(c for c, _ in COLUMNS)], rows)
    write_text(out / "comparison.md", table + "\n")
    write_json(out / "comparison.json", record)
    print(table)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
