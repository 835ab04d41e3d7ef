"""Runner of tune.py: a resumable, parallel Optuna study over a prepared dataset's train/val splits."""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

from .. import tune
from ..config import SEED
from ..errors import StargalError
from ..fsio import write_json, write_text
from ..paths import DataPaths
from .training import resolve_dataset

log = logging.getLogger("stargal")


def run_tuning(
    paths: DataPaths,
    *,
    dataset: str | None = None,
    architecture: str = "stargal",
    trials: int = 20,
    workers: int = 2,
    epochs: int = 15,
    patience: int = 3,
    max_train: int = 0,
    augment: str | None = None,
    seed: int = SEED,
    name: str | None = None,
    force: bool = False,
) -> dict:
    """Run (or continue) the study until it holds ``trials`` finished trials; write table, plot, best.json."""
    if architecture not in tune.SEARCH_SPACES:
        raise StargalError(f"--architecture {architecture!r}: choose from {', '.join(tune.SEARCH_SPACES)}")
    if trials < 1 or workers < 1 or epochs < 1:
        raise StargalError("--trials, --workers and --epochs must be positive")
    dataset = resolve_dataset(paths, dataset)
    # Train trials the way 03_model.py trains this architecture (augmentation policy, learning-rate schedule).
    defaults = _training_defaults(architecture)
    extra = {"augment": augment} if augment else {}  # best.json carries an explicit choice to 03_model.py
    augment = augment or defaults.get("augment")
    schedule = defaults.get("schedule")
    name = name or f"{dataset}_{architecture}"
    folder = paths.tuning_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "study.db"
    if force:
        db.unlink(missing_ok=True)  # our own study file: start over
    settings = {
        "dataset": dataset,
        "architecture": architecture,
        "epochs": epochs,
        "patience": patience,
        "max_train": max_train,
        "augment": augment,
        "schedule": schedule,
        "seed": seed,
    }
    # through JSON so it compares equal to the copy stored in the study
    config = json.loads(
        json.dumps({**settings, "objective": tune.OBJECTIVE, "search_space": tune.SEARCH_SPACES[architecture]})
    )
    study, recovered = tune.create_or_load(db, name, seed, config)
    if recovered:
        log.info("%d trial(s) interrupted earlier: marked failed and queued again", recovered)
    finished, _ = tune.count_trials(study)
    todo = max(0, trials - finished)
    start = time.monotonic()
    if todo:
        log.info(
            "study %s: %d finished trial(s), running %d more on %d worker(s)", name, finished, todo, min(workers, todo)
        )
        base = {
            **settings,
            "data_dir": str(paths.root),
            "db": str(db),
            "study": name,
            "target": trials,
            "lock": str(folder / "trials.lock"),
            "offset": len(study.trials),
            "threads": 1,
            "log_level": logging.getLogger("stargal").getEffectiveLevel(),
        }
        specs = [{**base, "worker": w} for w in range(min(workers, todo))]
        if len(specs) == 1:
            tune.worker_main(specs[0])
        else:
            # spawn, not fork: TensorFlow's thread pools do not survive a fork
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=len(specs), mp_context=ctx) as pool:
                for future in [pool.submit(tune.worker_main, s) for s in specs]:
                    future.result()
    else:
        log.info("study %s already holds %d finished trial(s): nothing to run", name, finished)
    study = tune.create_or_load(db, name, seed, config)[0]
    return write_results(paths, name, study, architecture, dataset, time.monotonic() - start, extra)


def _training_defaults(architecture: str) -> dict:
    try:
        from .training import ARCH_DEFAULTS
    except ImportError:
        return {}
    return dict(ARCH_DEFAULTS.get(architecture, {}))


def write_results(
    paths: DataPaths, name: str, study, architecture: str, dataset: str, seconds: float, extra: dict | None = None
) -> dict:
    """trials.csv, trials.md, best.json under the tuning folder; tuning.png and trials.md under reports/tuning/NAME."""
    from ..plots.tuning import plot_study

    folder = paths.tuning_dir(name)
    rows = tune.trials_table(study)
    importance = tune.importances(study)
    write_text(folder / "trials.csv", _csv(rows))
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if not complete:
        raise StargalError(f"study {name}: no trial completed (all pruned or failed); see {folder / 'trials.csv'}")
    best = tune.best_config(study, architecture)
    best.update(extra or {})
    best["dataset"] = dataset
    best["n_trials"] = len(rows)
    write_json(folder / "best.json", best)
    table = _markdown(name, rows, best, importance)
    write_text(folder / "trials.md", table)
    write_text(paths.reports("tuning", name, "trials.md"), table)  # beside the plot, for the report
    plot = paths.reports("tuning", name, "tuning.png")
    log_params = {k: (v[1], v[2]) for k, v in tune.SEARCH_SPACES[architecture].items() if v[0] == "log"}
    plot_study(rows, importance, tune.OBJECTIVE, plot, title=f"{name}: {len(rows)} trials", log_params=log_params)
    counts = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    return {
        "name": name,
        "folder": folder,
        "best": best,
        "counts": counts,
        "plot": plot,
        "seconds": seconds,
        "importance": importance,
    }


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = list(rows[0]) if rows else ["trial"]
    writer.writerow(cols)
    for r in rows:
        writer.writerow(["" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in cols])
    return buf.getvalue()


def _markdown(name: str, rows: list[dict], best: dict, importance: dict) -> str:
    cols = list(rows[0])
    lines = [
        f"# Hyper-parameter study {name}",
        "",
        f"Objective: minimum validation loss ({tune.OBJECTIVE}, lower is better) on the validation split; "
        f"best trial {best['trial']}: {best['value']:.4f} (val MCC {_fmt(best.get('val_mcc'))}).",
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    if importance:
        lines += ["", "Parameter importance (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in importance.items())]
    lines += ["", "Best configuration (`best.json`, usable with `03_model.py --config`):", "", "```json"]
    lines += [json.dumps({k: best[k] for k in ("architecture", "hyperparameters")}, indent=2), "```", ""]
    return "\n".join(lines)
