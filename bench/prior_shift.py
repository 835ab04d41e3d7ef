#!/usr/bin/env python3
"""Prior shift: what moving p_star to each field's own share of stars (``stargal.priors``, the EM estimate of
Saerens et al. 2002 over the field's detected sources) would change, on the simulated and on the real sky.

    .venv/bin/python bench/prior_shift.py --data-dir DIR --fields 375 376 377 378 379 [--model pretrained]
        [--real-sky OUT] [--repeats 20]

DIR holds simulated fields of run 8162 camcol 6, aligned with their sweeps (``00_download.py --source simulated``
and ``01_alignment.py`` for those fields). For each, ``predict.py --detect`` classifies its sources (the
population the share is estimated on) and ``predict.py --all`` its catalog objects (scored against their SDSS
type as the labelled check does), both as a user runs them. Prints three tables:

- per simulated field: the catalog's share of stars, the estimate, and MCC / accuracy at the model's threshold
  with p_star as it is and moved to the estimate;
- the simulated fields' catalog objects pooled per field after dropping stars or galaxies at random to set
  shares from 0.15 to 0.9 (label shift alone, as the Galactic latitude makes it), ``--repeats`` draws each;
- with ``--real-sky OUT`` (a real_sky.py output folder): each real field's share called star and its estimate,
  and, where the field had a star sweep, the catalog check (catalog stars against the detected sources more
  than 2" from any, brighter than r = 22 and 22.5) as it is and moved.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.table import Table
from sklearn.metrics import matthews_corrcoef

from stargal import cli
from stargal.errors import StargalError
from stargal.fsio import read_json
from stargal.paths import PROJECT_ROOT, ModelFiles
from stargal.priors import adjusted, field_prior
from stargal.tables import markdown_table

PREDICT = PROJECT_ROOT / "code" / "predict.py"
SHARES = (0.15, 0.23, 0.3, 0.4, 0.5, 0.65, 0.8, 0.9)


def mcc(called: np.ndarray, star: np.ndarray) -> float:
    return float(matthews_corrcoef(star, called))


def model_prior_and_threshold(paths, model: str) -> tuple[float, float]:
    """The model's training share of stars and its threshold (model.json)."""
    from stargal.stages.predict import resolve_model_dir

    meta = read_json(ModelFiles(resolve_model_dir(paths, model)).json)
    return float(meta["dataset_counts"]["train"]["star_fraction"]), float(meta["threshold"])


def predicted(data_dir: str, field: int, mode: str, model: str, out: Path) -> Table:
    """``predict.py --field FIELD MODE`` as a user runs it: its table, rows with status ok."""
    cmd = [sys.executable, str(PREDICT), "--data-dir", data_dir, "--field", str(field), mode, "--model", model]
    done = subprocess.run([*cmd, "--out", str(out), "-q"], stdout=subprocess.DEVNULL)
    if done.returncode != 0:  # predict.py has said why, on stderr
        raise StargalError(f"predict.py {mode} on field {field} of {data_dir} failed (exit status {done.returncode})")
    table = Table.read(out)
    return table[np.asarray(table["status"]) == "ok"]


def simulated_fields(args, prior: float, threshold: float, work: Path) -> tuple[list[list], list[tuple]]:
    """Per-field rows, and each field's (p_star, is star) of its catalog objects."""
    rows, objects = [], []
    for field in args.fields:
        detected = predicted(args.data_dir, field, "--detect", args.model, work / f"detect-{field}.ecsv")
        catalog = predicted(args.data_dir, field, "--all", args.model, work / f"all-{field}.ecsv")
        p = np.asarray(catalog["p_star"], np.float64)
        star = np.asarray(catalog["catalog_type"]) == "star"
        estimate = field_prior(np.asarray(detected["p_star"], np.float64), prior)
        moved = adjusted(p, estimate, prior)
        rows.append([
            field, len(p), f"{star.mean():.3f}", f"{estimate:.3f}",
            f"{mcc(p >= threshold, star):.3f}", f"{mcc(moved >= threshold, star):.3f}",
            f"{np.mean((p >= threshold) == star):.3f}", f"{np.mean((moved >= threshold) == star):.3f}",
        ])  # fmt: skip
        objects.append((p, star))
    return rows, objects


def share_sweep(objects: list[tuple], prior: float, threshold: float, repeats: int, seed: int = 0) -> list[list]:
    """MCC as it is and moved, each field's catalog objects subsampled to each of SHARES (mean over fields and
    draws); the estimate here is made on the subsample itself."""
    rng = np.random.default_rng(seed)
    rows = []
    for share in SHARES:
        raw, moved, estimates = [], [], []
        for _ in range(repeats):
            for p, star in objects:
                stars, galaxies = np.flatnonzero(star), np.flatnonzero(~star)
                if share < star.mean():
                    keep = np.r_[rng.choice(stars, int(share / (1 - share) * len(galaxies)), replace=False), galaxies]
                else:
                    keep = np.r_[stars, rng.choice(galaxies, int((1 - share) / share * len(stars)), replace=False)]
                estimate = field_prior(p[keep], prior)
                estimates.append(estimate)
                raw.append(mcc(p[keep] >= threshold, star[keep]))
                moved.append(mcc(adjusted(p[keep], estimate, prior) >= threshold, star[keep]))
        rows.append([
            f"{share:.2f}", f"{np.mean(estimates):.3f} +- {np.std(estimates):.3f}",
            f"{np.mean(raw):.3f}", f"{np.mean(moved):.3f}",
        ])  # fmt: skip
    return rows


def real_fields(folder: Path, prior: float, threshold: float) -> tuple[list[list], list[list]]:
    """Per real field: share called star as it is and moved, the estimate; and the catalog check rows."""
    shares, checks = [], []
    for path in sorted(folder.glob("sources-*.csv")):
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["status"] == "ok" and r["p_star"]]
        if not rows:
            continue
        p = np.array([float(r["p_star"]) for r in rows])
        estimate = field_prior(p, prior)
        moved = adjusted(p, estimate, prior)
        name = path.stem.removeprefix("sources-")
        shares.append(
            [name, len(p), f"{np.mean(p >= threshold):.3f}", f"{estimate:.3f}", f"{np.mean(moved >= threshold):.3f}"]
        )
        if "catalog_star_within_2arcsec" not in rows[0]:
            continue  # no star sweep for this field
        star = np.array([r["catalog_star_within_2arcsec"] == "True" for r in rows])
        r_mag = np.array([float(r["r"]) if r["r"] else np.nan for r in rows])
        for limit in (22.0, 22.5):
            inside = star | (r_mag < limit)  # catalog stars at any r, the others brighter than the limit
            checks.append([
                name, f"negatives r < {limit}", int(inside.sum()),
                f"{np.mean(p[inside & star] >= threshold):.3f}", f"{np.mean(moved[inside & star] >= threshold):.3f}",
                int(np.sum(p[inside & ~star] >= threshold)), int(np.sum(moved[inside & ~star] >= threshold)),
                f"{mcc(p[inside] >= threshold, star[inside]):.3f}", f"{mcc(moved[inside] >= threshold, star[inside]):.3f}",
            ])  # fmt: skip
    return shares, checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="data folder with the simulated fields, aligned")
    parser.add_argument("--fields", type=int, nargs="+", default=[375, 376, 377, 378, 379])
    parser.add_argument("--model", default="pretrained")
    parser.add_argument("--real-sky", type=Path, default=None, help="a real_sky.py output folder (sources-*.csv)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.real_sky is not None and not args.real_sky.is_dir():
        parser.error(f"--real-sky {args.real_sky}: no such folder")
    cli.setup_logging(True)
    paths = cli.data_paths(args)
    prior, threshold = model_prior_and_threshold(paths, args.model)
    print(f"model {args.model}: training share of stars {prior:.4f}, threshold {threshold:.3f}\n")
    with tempfile.TemporaryDirectory(prefix="prior_shift-") as work:
        rows, objects = simulated_fields(args, prior, threshold, Path(work))
    header = ["field", "objects", "catalog share", "estimate", "MCC", "MCC moved", "accuracy", "accuracy moved"]
    print(markdown_table(header, rows), "\n")
    header = ["share set", "estimate", "MCC", "MCC moved"]
    print(markdown_table(header, share_sweep(objects, prior, threshold, args.repeats)), "\n")
    if args.real_sky is not None:
        shares, checks = real_fields(args.real_sky, prior, threshold)
        print(markdown_table(["real field", "sources", "called star", "estimate", "called star moved"], shares), "\n")
        header = ["field", "check", "n", "recall", "recall moved", "others called star", "moved", "MCC", "MCC moved"]
        print(markdown_table(header, checks))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
