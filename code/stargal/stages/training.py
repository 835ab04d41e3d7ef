"""Stage 03 runner: train a CNN on a stage-02 dataset, choose its threshold on validation data, evaluate
it on every split (and per r magnitude), and write model.keras, model.json, metrics.json, history.csv
and plots. Also repeated seeds and the with/without augmentation comparison (exercise Task 1.4)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import __version__, fsio
from ..errors import StargalError
from ..paths import DataPaths
from ..tables import OBJECT_DTYPE, read_table, write_table

log = logging.getLogger("stargal")
SPLITS = ("train", "val", "test")
# keys of a --config JSON (or its "hyperparameters") that steer training rather than the network
TRAINING_KEYS = ("batch_size", "epochs", "patience", "augment", "schedule", "class_weight")
# what each architecture trains with unless told otherwise: the reference models as the course project
# did (no augmentation, constant learning rate, early stopping); ours with streamed symmetries and a
# cosine schedule that anneals within ``epochs`` (early stopping then only guards against a bad end)
ARCH_DEFAULTS = {
    "reference_base": {"augment": "none", "schedule": None, "epochs": 60, "patience": 8, "tta": False},
    "reference_regularised": {"augment": "none", "schedule": None, "epochs": 60, "patience": 8, "tta": False},
    "stargal": {"augment": "d4", "schedule": "cosine", "epochs": 30, "patience": 10, "tta": True},
}


@dataclass
class TrainOptions:
    architecture: str = "stargal"
    hyperparameters: dict = field(default_factory=dict)
    epochs: int | None = None  # None: the architecture's default
    patience: int | None = None
    batch_size: int = 256
    augment: str | None = None  # None: the architecture's default
    schedule: str | None = "default"
    class_weight: str | None = None  # None or "balanced"
    seed: int = 42
    tta: bool | None = None  # None: the architecture's default (on for stargal)
    name: str | None = None
    force: bool = False
    plots: bool = True
    verbose: int | str = "auto"

    def resolved(self) -> TrainOptions:
        defaults = ARCH_DEFAULTS.get(self.architecture, ARCH_DEFAULTS["reference_base"])
        augment = self.augment if self.augment is not None else defaults["augment"]
        schedule = defaults["schedule"] if self.schedule == "default" else self.schedule
        epochs = self.epochs if self.epochs is not None else defaults["epochs"]
        patience = self.patience if self.patience is not None else defaults["patience"]
        tta = self.tta if self.tta is not None else defaults["tta"]
        return replace(self, augment=augment, schedule=schedule, epochs=epochs, patience=patience, tta=tta)


# ---------------------------------------------------------------- inputs


def resolve_dataset(paths: DataPaths, name: str | None) -> str:
    """The dataset to use: ``name`` or the one stage 02 prepared last."""
    if not name:
        if not paths.latest_dataset.exists():
            raise StargalError(
                f"{paths.latest_dataset}: no dataset prepared yet (run 02_preparation.py or pass --dataset)"
            )
        name = paths.latest_dataset.read_text(encoding="utf-8").strip()
    if not paths.dataset_json(name).exists():
        raise StargalError(f"{paths.dataset_json(name)}: dataset {name!r} not found (run 02_preparation.py)")
    return name


def dataset_inputs(paths: DataPaths, name: str, splits=SPLITS) -> list[Path]:
    files = [paths.dataset_json(name)]
    for split in splits:
        files += [paths.split_x(name, split), paths.split_y(name, split), paths.split_objects(name, split)]
    return files


def load_dataset(paths: DataPaths, name: str, splits=SPLITS) -> dict:
    """{"meta": dataset.json, split: {"x", "y", "mag"}} with shapes and labels checked."""
    meta = fsio.read_json(paths.dataset_json(name))
    norm = meta.get("normalisation") or {}
    if "center" not in norm or "scale" not in norm:
        raise StargalError(f"{paths.dataset_json(name)}: no normalisation center/scale")
    data: dict = {"meta": meta}
    shape = None
    for split in splits:
        for p in (paths.split_x(name, split), paths.split_y(name, split)):
            if not p.exists():
                raise StargalError(f"{p}: missing (dataset {name!r} is incomplete; rerun stage 02)")
        x = fsio.load_npy(paths.split_x(name, split))
        y = fsio.load_npy(paths.split_y(name, split))
        if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[3] != len(norm["center"]):
            raise StargalError(
                f"{paths.split_x(name, split)}: expected [n, P, P, {len(norm['center'])}], got {x.shape}"
            )
        if shape is not None and x.shape[1:] != shape:
            raise StargalError(f"{paths.split_x(name, split)}: patch shape {x.shape[1:]} differs from {shape}")
        shape = x.shape[1:]
        if y.shape != (len(x),) or (y.size and not np.isin(y, (0, 1)).all()):
            raise StargalError(f"{paths.split_y(name, split)}: expected {len(x)} labels of 0/1")
        mag = np.full(len(x), np.nan, np.float32)
        if paths.split_objects(name, split).exists():
            table = read_table(paths.split_objects(name, split), OBJECT_DTYPE)
            if len(table) != len(x):
                raise StargalError(f"{paths.split_objects(name, split)}: {len(table)} rows for {len(x)} patches")
            mag = table["r_psfmag"].astype(np.float32)
        data[split] = {"x": x.astype(np.float32, copy=False), "y": y.astype(np.uint8, copy=False), "mag": mag}
    for split in ("train", "val"):
        if split in data and len(data[split]["x"]) == 0:
            raise StargalError(f"dataset {name!r}: the {split} split is empty")
    return data


def load_config(path: str | Path) -> dict:
    """A hyper-parameter JSON: {"architecture": ..., "hyperparameters": {...}, training keys...}."""
    try:
        cfg = fsio.read_json(path)
    except FileNotFoundError:
        raise StargalError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise StargalError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise StargalError(f"{path}: expected a JSON object")
    hp = dict(cfg.get("hyperparameters") or cfg.get("hp") or {})
    out = {k: cfg[k] for k in ("architecture", *TRAINING_KEYS) if k in cfg}
    for key in TRAINING_KEYS:  # tuning results may keep batch size etc. among the hyper-parameters
        if key in hp:
            out.setdefault(key, hp.pop(key))
    out["hyperparameters"] = hp
    return out


def model_name(options: TrainOptions, dataset: str) -> str:
    base = options.name or f"{options.architecture}-{dataset}"
    return f"{base}-s{options.seed}" if not options.name else base


# ---------------------------------------------------------------- evaluation


def predict_splits(model, data: dict, *, tta: bool = False) -> dict:
    """p(star) per split, each predicted once; ``tta`` averages val and test over the eight symmetries
    (train, which only shows the fit, is scored in a single pass: TTA there would cost 8x for nothing)."""
    from ..model import predict

    return {s: predict(model, data[s]["x"], tta=tta and s != "train") for s in SPLITS if s in data}


def evaluate(data: dict, preds: dict, threshold: float, *, tta: bool = False) -> dict:
    """Metrics of ``preds`` on every split: overall, per r magnitude bin, and the trivial baselines."""
    from ..metrics import baselines, by_magnitude, classification_metrics

    metrics: dict = {}
    by_mag: dict = {}
    for split, p in preds.items():
        d = data[split]
        metrics[split] = classification_metrics(d["y"], p, threshold)
        by_mag[split] = by_magnitude(d["y"], p, d["mag"], threshold)
    metrics["baselines"] = {
        s: baselines(data["train"]["y"], data[s]["y"]) for s in SPLITS if s in data and s != "train"
    }
    metrics["by_magnitude"] = by_mag
    metrics["threshold"] = threshold
    metrics["tta"] = tta
    metrics["tta_splits"] = [s for s in preds if tta and s != "train"]
    return metrics


# ---------------------------------------------------------------- one training run


def _outputs(paths: DataPaths, name: str) -> list[Path]:
    d = paths.model_dir(name)
    return [d / "model.keras", d / "model.json", d / "metrics.json", d / "history.csv"]


def _run_config(options: TrainOptions, dataset: str, hp: dict) -> dict:
    return {
        "architecture": options.architecture,
        "hyperparameters": hp,
        "dataset": dataset,
        "seed": options.seed,
        "epochs": options.epochs,
        "patience": options.patience,
        "batch_size": options.batch_size,
        "augment": options.augment,
        "schedule": options.schedule,
        "class_weight": options.class_weight,
        "tta": options.tta,
    }


def train_one(paths: DataPaths, dataset: str, options: TrainOptions, data: dict | None = None) -> dict:
    """Train, threshold on val, evaluate, save; skip when the outputs are current for the same config.

    Returns {"name", "model_dir", "metrics", "model_json", "skipped"}.
    """
    from .. import model as mdl
    from ..augment import policy
    from ..metrics import choose_threshold
    from ..train import class_weights, fit, select_threshold, set_seed

    options = options.resolved()
    hp = mdl.merged_hp(options.architecture, options.hyperparameters)
    policy(options.augment)  # validate early
    name = model_name(options, dataset)
    out_dir = paths.model_dir(name)
    config = _run_config(options, dataset, hp)
    outputs = _outputs(paths, name)
    if not options.force and fsio.is_current(outputs, dataset_inputs(paths, dataset)):
        previous = fsio.read_json(out_dir / "model.json")
        if previous.get("config") == json.loads(json.dumps(config)):
            log.info("%s: model is current, skipping (use --force to retrain)", name)
            return {
                "name": name,
                "model_dir": out_dir,
                "metrics": fsio.read_json(out_dir / "metrics.json"),
                "model_json": previous,
                "skipped": True,
            }

    data = data or load_dataset(paths, dataset)
    meta = data["meta"]
    norm = meta["normalisation"]
    shape = data["train"]["x"].shape[1:]
    mdl.configure_threads()
    set_seed(options.seed)
    model = mdl.build_model(options.architecture, shape, norm, hp)
    cw = class_weights(data["train"]["y"]) if options.class_weight == "balanced" else None
    log.info(
        "%s: training %s (%d params, %.2f MFLOP/patch) on %d patches, augmentation %s",
        name,
        options.architecture,
        model.count_params(),
        mdl.flops_per_sample(model) / 1e6,
        len(data["train"]["x"]),
        options.augment,
    )
    history = fit(
        model,
        data["train"]["x"],
        data["train"]["y"],
        data["val"]["x"],
        data["val"]["y"],
        batch_size=options.batch_size,
        epochs=options.epochs,
        patience=options.patience,
        seed=options.seed,
        augment=options.augment,
        verbose=options.verbose,
        normalisation=norm,
        schedule=options.schedule,
        class_weight=cw,
    )
    t0 = time.monotonic()
    preds = predict_splits(model, data, tta=options.tta)
    threshold = choose_threshold(data["val"]["y"], preds["val"])  # validation only, never test
    metrics = evaluate(data, preds, threshold, tta=options.tta)
    if options.tta and "test" in data:  # the plain single-pass scores too, for comparison
        from ..metrics import classification_metrics
        from ..model import predict

        th_plain = select_threshold(model, data["val"]["x"], data["val"]["y"], tta=False)
        metrics["no_tta"] = {
            "threshold": th_plain,
            "test": classification_metrics(data["test"]["y"], predict(model, data["test"]["x"]), th_plain),
        }
    metrics["evaluation_seconds"] = time.monotonic() - t0
    model_json = {
        "name": name,
        "architecture": options.architecture,
        "hyperparameters": hp,
        "dataset": dataset,
        "patch_size": int(shape[0]),
        "bands": meta.get("bands", "ugriz"),
        "edge": meta.get("edge"),
        "normalisation": norm,
        "threshold": threshold,
        "threshold_source": "val: maximum MCC",
        "tta": options.tta,
        "seed": options.seed,
        "augment": options.augment,
        "schedule": options.schedule,
        "batch_size": options.batch_size,
        "epochs": options.epochs,
        "patience": options.patience,
        "best_epoch": history["best_epoch"],
        "epochs_run": history["epochs_run"],
        "train_seconds": round(history["seconds"], 2),
        "seconds_per_epoch": round(history["seconds_per_epoch"], 3),
        "params": int(model.count_params()),
        "flops_per_patch": mdl.flops_per_sample(model),
        "dataset_counts": meta.get("counts"),
        "simulated": meta.get("simulated"),
        "test": {k: metrics["test"].get(k) for k in ("accuracy", "mcc", "roc_auc")} if "test" in metrics else None,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "stargal_version": __version__,
        "config": config,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with fsio.atomic_path(out_dir / "model.keras") as tmp:
        keras_tmp = tmp.with_suffix(".keras")  # Keras insists on the extension
        try:
            model.save(keras_tmp)
            keras_tmp.replace(tmp)
        finally:
            keras_tmp.unlink(missing_ok=True)
    _write_history(out_dir / "history.csv", history)
    fsio.write_json(out_dir / "metrics.json", metrics)
    fsio.write_json(out_dir / "model.json", model_json)  # last: its presence marks a complete model
    if options.plots:
        from ..plots import training as tplots

        tplots.training_report(paths.reports("training", name), history, metrics, data, preds)
    return {"name": name, "model_dir": out_dir, "metrics": metrics, "model_json": model_json, "skipped": False}


def _write_history(path: Path, history: dict) -> None:
    keys = [k for k, v in history.items() if isinstance(v, list)]
    n = len(history.get("loss", []))
    table = np.zeros(n, dtype=[("epoch", "i4")] + [(k, "f8") for k in keys])
    table["epoch"] = np.arange(1, n + 1)
    for k in keys:
        table[k] = history[k][:n]
    write_table(path, table)


# ---------------------------------------------------------------- several seeds, comparisons


SUMMARY_KEYS = ("accuracy", "mcc", "balanced_accuracy", "roc_auc", "log_loss", "star_purity", "star_completeness")


def summarise_runs(runs: list[dict], split: str = "test") -> dict:
    """Mean and standard deviation over runs of the main metrics of ``split``."""
    out: dict = {"n_runs": len(runs), "models": [r["name"] for r in runs]}
    for key in SUMMARY_KEYS:
        vals = [r["metrics"].get(split, {}).get(key) for r in runs]
        vals = [v for v in vals if v is not None]
        if vals:
            out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
    return out


def run_training(paths: DataPaths, dataset: str | None, options: TrainOptions, seeds: list[int] | None = None) -> dict:
    """Train one model per seed; record the best on validation MCC as the latest model."""
    dataset = resolve_dataset(paths, dataset)
    seeds = seeds or [options.seed]
    data = None
    runs = []
    for seed in seeds:
        opts = replace(
            options, seed=seed, name=(f"{options.name}-s{seed}" if options.name and len(seeds) > 1 else options.name)
        )
        if data is None and not _is_skippable(paths, dataset, opts):
            data = load_dataset(paths, dataset)
        runs.append(train_one(paths, dataset, opts, data))
    best = max(runs, key=lambda r: r["metrics"]["val"]["mcc"])
    fsio.write_text(paths.latest_model, best["name"] + "\n")
    summary = {"dataset": dataset, "runs": runs, "latest": best["name"]}
    if len(runs) > 1:
        summary["test_summary"] = summarise_runs(runs)
        report = paths.reports("training", f"seeds-{options.resolved().architecture}-{dataset}")
        fsio.write_json(report / "summary.json", summary["test_summary"])
    return summary


def _is_skippable(paths: DataPaths, dataset: str, options: TrainOptions) -> bool:
    if options.force:
        return False
    name = model_name(options.resolved(), dataset)
    return fsio.is_current(_outputs(paths, name), dataset_inputs(paths, dataset))


COMPARISON_COLUMNS = (
    "augment",
    "runs",
    "train_accuracy",
    "val_accuracy",
    "val_mcc",
    "test_accuracy",
    "test_mcc",
    "test_roc_auc",
    "test_log_loss",
    "best_epoch",
)


def compare_augmentation(
    paths: DataPaths, dataset: str | None, options: TrainOptions, seeds: list[int] | None = None
) -> dict:
    """Exercise Task 1.4: the same model trained without and with augmentation, one table and plot."""
    dataset = resolve_dataset(paths, dataset)
    opts = options.resolved()
    with_aug = opts.augment if opts.augment not in (None, "none") else "d4"
    seeds = seeds or [opts.seed]
    data = load_dataset(paths, dataset)
    rows = []
    for aug_name in ("none", with_aug):
        runs = []
        for seed in seeds:
            base = options.name or f"{opts.architecture}-{dataset}"
            o = replace(opts, augment=aug_name, seed=seed, name=f"{base}-aug_{aug_name}-s{seed}")
            runs.append(train_one(paths, dataset, o, data))
        summ = summarise_runs(runs)
        val = summarise_runs(runs, "val")
        rows.append(
            {
                "augment": aug_name,
                "runs": len(runs),
                **{f"test_{k}": summ[k]["mean"] for k in SUMMARY_KEYS if k in summ},
                **{f"val_{k}": val[k]["mean"] for k in ("accuracy", "mcc") if k in val},
                "train_accuracy": float(np.mean([r["metrics"]["train"]["accuracy"] for r in runs])),
                "best_epoch": float(np.mean([r["model_json"]["best_epoch"] for r in runs])),
                "models": [r["name"] for r in runs],
            }
        )
    report = paths.reports("training", f"augmentation-comparison-{opts.architecture}-{dataset}")
    cols = list(COMPARISON_COLUMNS)
    table = np.zeros(len(rows), dtype=[("augment", "U32"), ("runs", "i4")] + [(c, "f8") for c in cols[2:]])
    for i, r in enumerate(rows):
        for c in cols:
            table[c][i] = r.get(c, np.nan)
    write_table(report / "comparison.csv", table)
    fsio.write_text(report / "comparison.md", markdown_table(rows, cols))
    fsio.write_json(report / "comparison.json", rows)
    from ..plots import training as tplots

    tplots.comparison_plot(report / "comparison.png", rows)
    return {"dataset": dataset, "rows": rows, "report": report}


# ---------------------------------------------------------------- text output


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if np.isnan(v) else f"{v:.4f}"
    return str(v)


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def metrics_table(metrics: dict) -> str:
    """A compact plain-text table: splits x main metrics, plus the test baselines."""
    cols = (
        "accuracy",
        "mcc",
        "balanced_accuracy",
        "roc_auc",
        "log_loss",
        "star_purity",
        "star_completeness",
        "galaxy_purity",
        "galaxy_completeness",
    )
    short = ("acc", "mcc", "bal_acc", "auc", "logloss", "star_pur", "star_comp", "gal_pur", "gal_comp")
    lines = [f"{'split':<16}{'n':>7} " + " ".join(f"{s:>9}" for s in short)]
    for split in SPLITS:
        if split in metrics:
            m = metrics[split]
            lines.append(f"{split:<16}{m['n']:>7} " + " ".join(f"{_fmt(m.get(c)):>9}" for c in cols))
    for kind, b in metrics.get("baselines", {}).get("test", {}).items():
        n = metrics.get("test", {}).get("n", 0)
        lines.append(f"{'test ' + kind:<16}{n:>7} " + " ".join(f"{_fmt(b.get(c)):>9}" for c in cols))
    lines.append(
        f"threshold (chosen on val): {metrics['threshold']:.4f}"
        + ("  [test-time augmentation]" if metrics.get("tta") else "")
    )
    return "\n".join(lines)


def options_dict(options: TrainOptions) -> dict:
    return asdict(options)


def options_from_args(args) -> TrainOptions:
    """TrainOptions from 03_model.py's arguments: defaults < --config JSON < explicit flags."""
    cfg = load_config(args.config) if getattr(args, "config", None) else {"hyperparameters": {}}
    hp = dict(cfg.get("hyperparameters", {}))
    if args.learning_rate is not None:
        if not args.learning_rate > 0:
            raise StargalError(f"--learning-rate: must be positive, got {args.learning_rate}")
        hp["learning_rate"] = args.learning_rate
    defaults = TrainOptions()

    def pick(flag, key, default):
        value = getattr(args, flag, None)
        return value if value is not None else cfg.get(key, default)

    schedule = pick("schedule", "schedule", "default")
    class_weight = pick("class_weight", "class_weight", None)
    return TrainOptions(
        architecture=pick("architecture", "architecture", defaults.architecture),
        hyperparameters=hp,
        epochs=pick("epochs", "epochs", None),
        patience=pick("patience", "patience", None),
        batch_size=int(pick("batch_size", "batch_size", defaults.batch_size)),
        augment=pick("augment", "augment", None),
        schedule=None if schedule == "none" else schedule,
        class_weight=None if class_weight == "none" else class_weight,
        seed=args.seed,
        tta=args.tta,
        name=args.name,
        force=bool(args.force),
        plots=not args.no_plots,
    )


def run_summary(result: dict) -> str:
    """The compact end-of-run text: per model the metrics table, then the mean over seeds."""
    parts = []
    for run in result["runs"]:
        mj = run["model_json"]
        state = (
            "current, not retrained" if run["skipped"] else f"{mj['epochs_run']} epochs in {mj['train_seconds']:.0f} s"
        )
        parts.append(f"model {run['name']} ({mj['architecture']}, best epoch {mj['best_epoch']}, {state})")
        parts.append(metrics_table(run["metrics"]))
    summ = result.get("test_summary")
    if summ:
        parts.append(
            f"test over {summ['n_runs']} seeds: "
            + ", ".join(
                f"{k} {summ[k]['mean']:.4f} +- {summ[k]['std']:.4f}"
                for k in ("accuracy", "mcc", "roc_auc")
                if k in summ
            )
        )
    parts.append(f"latest model: {result['latest']} ({len(result['runs'])} run(s) on dataset {result['dataset']})")
    return "\n".join(parts)
