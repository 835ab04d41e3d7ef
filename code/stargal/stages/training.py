"""Stage 03 runner: train a CNN on a stage-02 dataset, choose its threshold on validation data, evaluate
it on every split (``stargal.evaluate``), and write model.keras, model.json, metrics.json, history.csv
and plots. Also repeated seeds, ensembles of them (``combine_models``) and the with/without augmentation
comparison (exercise Task 1.4).

A model folder is one sealed output set: model.keras, metrics.json and history.csv are written under
temporary names and renamed together, then model.json last with their checksums and the identity of the
dataset they were trained on; model.onnx, the network for predict.py's ONNX Runtime engine, joins them when its
export matches the Keras model. A model is current only when those files are intact, the dataset is the same and
the options are the same; a folder broken by an interrupted run is named and retrained, and a failed training
leaves the previous model usable."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import __version__, fsio, integrity
from ..config import config_changes
from ..dataset import dataset_identity, load_dataset, resolve_dataset
from ..errors import StargalError
from ..evaluate import SUMMARY_KEYS, evaluate, predict_splits, summarise_runs
from ..paths import DataPaths, ModelFiles, check_folder_name
from ..psf import trained_psf_range
from ..tables import records_markdown, write_table
from ..train_options import TrainOptions, model_name

log = logging.getLogger("stargal")


def _outputs(paths: DataPaths, name: str) -> list[Path]:
    """The files model.json seals."""
    files = paths.model(name)
    return [files.keras, files.metrics, files.history]


def check_output_places(paths: DataPaths, name: str) -> None:
    """Before any training: no file where model ``name``'s folder or its figures' folder goes, no folder where one of
    their files or the LATEST pointer goes (found only by the renames after the training, the model committed and
    its figures not drawn, the run failing all the same: "Not a directory"). One line naming the path."""
    from ..plots.training import FIGURE_NAMES

    files = paths.model(name)
    figures = paths.reports("training", name)
    folders = {files.folder: f"model {name}", figures: f"figures of model {name}"}
    outputs = [*_outputs(paths, name), files.onnx, files.json, figures / "figures.json"]
    fsio.require_output_places(
        paths.root,
        folders,
        [*outputs, *(figures / f for f in FIGURE_NAMES)],
        "stage 03",
        "--name",
        shared=[paths.latest_model],
    )


def current_model(paths: DataPaths, name: str, config: dict, dataset_id: str, warn: bool = True) -> dict | None:
    """model.json of an intact model trained with ``config`` on the dataset ``dataset_id``; else None."""
    files = paths.model(name)
    check = fsio.check_seal(files.json, _outputs(paths, name))
    if not check.ok:
        if warn and files.folder.exists():
            log.warning("%s: %s; training it again", name, check.describe())
        return None
    record = check.record
    config = json.loads(json.dumps(config))
    changes = config_changes(record.get("config") or {}, config)
    if record.get("inputs", {}).get("dataset") != dataset_id:
        changes.append("dataset changed")
    if changes and warn:
        # the default name holds no augmentation: training another policy of one architecture and seed replaces
        log.warning("%s: replacing the model of that name (%s; --name keeps both)", name, ", ".join(changes))
    return None if changes else record


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
    files = paths.model(name)
    config = _run_config(options, dataset, hp)
    dataset_id = dataset_identity(paths, dataset)
    check_output_places(paths, name)
    previous = None if options.force else current_model(paths, name, config, dataset_id)
    if previous is not None:
        log.info("%s: model is current, skipping (use --force to retrain)", name)
        metrics = fsio.read_json(files.metrics)
        if options.plots and not figures_current(paths, name, previous):
            log.info("%s: its figures are missing or another model's: drawing them again (no retraining)", name)
            redraw_figures(paths, name, previous, metrics, data)
        return {"name": name, "model_dir": out_dir, "metrics": metrics, "model_json": previous, "skipped": True}

    fsio.require_writable_output(files.json)
    data = data or load_dataset(paths, dataset)
    meta = data["meta"]
    require_two_classes(dataset, {split: data[split]["y"] for split in ("train", "val")})
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
        train_psf=data["train"]["psf"],
        val_psf=data["val"]["psf"],
    )
    _require_finite(name, hp, history)
    t0 = time.monotonic()
    preds = predict_splits(model, data, tta=options.tta)
    _require_finite(name, hp, history, preds)
    threshold = choose_threshold(data["val"]["y"], preds["val"])  # validation only, never test
    metrics = evaluate(data, preds, threshold, tta=options.tta)
    if options.tta and "test" in data:  # the plain single-pass scores too, for comparison
        from ..metrics import classification_metrics
        from ..model import predict

        val, test = data["val"], data["test"]
        th_plain = select_threshold(model, val["x"], val["y"], val["psf"], tta=False)
        metrics["no_tta"] = {
            "threshold": th_plain,
            "test": classification_metrics(test["y"], predict(model, test["x"], test["psf"]), th_plain),
        }
    metrics["evaluation_seconds"] = time.monotonic() - t0
    model_json = {
        "name": name,
        "architecture": options.architecture,
        "model_inputs": ["patch", "psf"] if mdl.takes_psf(model) else ["patch"],
        "hyperparameters": hp,
        "dataset": dataset,
        "patch_size": int(shape[0]),
        "bands": meta.get("bands", "ugriz"),
        "edge": meta.get("edge"),
        "normalisation": norm,
        "psf_range": trained_psf_range(data["train"]["psf"], meta.get("bands", "ugriz"))
        if mdl.takes_psf(model)
        else None,
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
        "inputs": {"dataset": dataset_id},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with fsio.OutputSet(files.json) as out:
        _save_keras(model, out.path(files.keras))
        _write_history(out.path(files.history), history)
        fsio.write_json(out.path(files.metrics), metrics)
        onnx = _export_onnx(model, out, files)
        if onnx:
            model_json["onnx"] = onnx
        model_json = out.commit(model_json)  # model.json last: it lists every file with its checksum
    drop_figures(paths, name)  # the previous model's, if any: never shown as this one's
    if options.plots:
        draw_figures(paths, name, model_json, history, metrics, data, preds)
    return {"name": name, "model_dir": out_dir, "metrics": metrics, "model_json": model_json, "skipped": False}


def _require_finite(name: str, hp: dict, history: dict, preds: dict | None = None) -> None:
    """StargalError when training diverged (a learning rate far too high, or inf): no epoch's validation loss was
    finite, or the network's p(star) is NaN somewhere. Such a model scored nothing and is never written; without
    this check the metrics failed on the NaN with a traceback-worthy "unexpected ValueError" (exit status 1)."""
    bad = [s for s, p in (preds or {}).items() if not np.all(np.isfinite(p))]
    if history.get("best_epoch") and not bad:
        return
    where = f"its p(star) is NaN on the {' and '.join(bad)} split" if bad else "its validation loss was never finite"
    raise StargalError(
        f"{name}: training diverged ({where}; learning rate {hp.get('learning_rate')}): "
        "give a smaller --learning-rate (no model was written)"
    )


# ---------------------------------------------------------------- a model's figures

# reports/training/NAME/figures.json seals the figures with the identity of the model they show: figures of an
# earlier model of that name (retrained with --no-plots, or killed before its figures were drawn) are not current


def _figures_record(paths: DataPaths, name: str) -> Path:
    return paths.reports("training", name, "figures.json")


def figures_current(paths: DataPaths, name: str, model_json: dict) -> bool:
    """True when the figures under reports/training/NAME are intact and show the model ``model_json`` seals."""
    check = fsio.check_seal(_figures_record(paths, name))
    return check.ok and (check.record.get("settings") or {}).get("model_id") == fsio.seal_digest(model_json)


def drop_figures(paths: DataPaths, name: str) -> None:
    """Remove the figures of an earlier model of that name (its record first: a kill in between leaves figures
    no record vouches for, which no reader takes for current)."""
    record = _figures_record(paths, name)
    files = fsio.check_seal(record).files()
    record.unlink(missing_ok=True)
    from ..plots import training as tplots

    for png in {*files, *(record.parent / f for f in tplots.FIGURE_NAMES)}:
        png.unlink(missing_ok=True)


def draw_figures(
    paths: DataPaths, name: str, model_json: dict, history: dict, metrics: dict, data: dict, preds: dict
) -> list[Path]:
    """Every stage-03 figure of the model, sealed with its identity (``figures_current``): they appear together
    with their record, or (stopped, failed) the previous set stays as it was."""
    from ..plots import training as tplots

    folder = paths.reports("training", name)
    with fsio.OutputSet(_figures_record(paths, name)) as output:
        written = tplots.training_report(folder, history, metrics, data, preds, where=output.path)
        for stale in {folder / f for f in tplots.FIGURE_NAMES} - set(written):  # an earlier model's: not this one's
            output.remove(stale)
        output.commit({"model": name, "settings": {"model_id": fsio.seal_digest(model_json)}})
    return written


def redraw_figures(paths: DataPaths, name: str, model_json: dict, metrics: dict, data: dict | None = None) -> None:
    """Draw the figures of a current model again from its saved network, history and metrics."""
    from ..model import load_model

    files = paths.model(name)
    data = data or load_dataset(paths, str(model_json["dataset"]))
    preds = predict_splits(load_model(files.keras), data, tta=bool(model_json.get("tta")))
    history = _read_history(files.history) | {"best_epoch": model_json.get("best_epoch")}
    draw_figures(paths, name, model_json, history, metrics, data, preds)


def _read_history(path: Path) -> dict:
    """history.csv as {column: [values per epoch]} (the epoch column left out), as ``fit`` returns it."""
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    return {k: [float(r[k]) for r in rows] for k in keys}


def _save_keras(model, tmp: Path) -> None:
    keras_tmp = tmp.with_suffix(".keras")  # Keras insists on the extension
    try:
        model.save(keras_tmp)
        keras_tmp.replace(tmp)
    finally:
        keras_tmp.unlink(missing_ok=True)


def _export_onnx(model, out: fsio.OutputSet, files: ModelFiles) -> dict | None:
    """Add model.onnx (the network for predict.py's ONNX Runtime engine) to the model's output set, checked
    against the Keras model; without it (an export that fails or differs) predict.py runs the Keras model."""
    from .. import onnx_engine

    tmp = out.path(files.onnx)
    record = onnx_engine.export_checked(model, tmp)
    if record is None:
        out.forget(files.onnx)
        out.remove(files.onnx)  # an older run's model.onnx does not belong to this model
    return record


def find_model_folder(paths: DataPaths, spec: str, option: str) -> Path:
    """The model folder ``spec`` names: a folder holding model.json, else a model of the data folder."""
    given = Path(spec).expanduser()
    if ModelFiles(given).json.is_file():
        return given
    if paths.model(spec).json.is_file():
        return paths.model_dir(spec)
    raise StargalError(
        f"{option} {spec}: not a model folder, nor a model in {paths.models_root} ({_model_names(paths)})"
    )


def add_onnx(model_dir: Path) -> dict:
    """Export model.onnx into a model folder trained without it and seal it into model.json (the other files
    unchanged); return the export record. For model folders made by an earlier stargal."""
    from .. import onnx_engine
    from ..model import load_model

    files = ModelFiles(model_dir)
    if not files.json.is_file():
        raise StargalError(f"--export-onnx {model_dir}: no model.json there (not a model folder)")
    meta = integrity.require_model(model_dir)
    model = load_model(files.keras)
    with fsio.OutputSet(files.json) as out:
        for name, entry in meta[fsio.INTEGRITY_KEY]["files"].items():
            if name != files.onnx.name:
                out.keep(model_dir / name, entry)
        record = onnx_engine.export_checked(model, out.path(files.onnx))
        if record is None:
            raise StargalError(f"{files.keras}: the ONNX export failed or differs from the Keras model (see above)")
        content = {k: v for k, v in meta.items() if k != fsio.INTEGRITY_KEY}
        out.commit({**content, "onnx": record})
    return record


def _write_history(path: Path, history: dict) -> None:
    keys = [k for k, v in history.items() if isinstance(v, list)]
    n = len(history.get("loss", []))
    table = np.zeros(n, dtype=[("epoch", "i4")] + [(k, "f8") for k in keys])
    table["epoch"] = np.arange(1, n + 1)
    for k in keys:
        table[k] = history[k][:n]
    write_table(path, table)


# ---------------------------------------------------------------- ensembles

# what every member of an ensemble shares and its model.json repeats
SHARED_KEYS = ("architecture", "model_inputs", "hyperparameters", "dataset", "patch_size", "bands", "edge",
               "normalisation", "augment", "schedule", "batch_size", "epochs", "patience", "dataset_counts",
               "simulated", "psf_range")  # fmt: skip
MEMBER_KEYS = ("name", "seed", "best_epoch", "epochs_run", "train_seconds", "threshold", "test")


def _model_names(paths: DataPaths) -> str:
    names = paths.model_names()
    return f"models there: {', '.join(names)}" if names else "no model trained there yet"


def combine_models(
    paths: DataPaths, members: list[str], name: str | None = None, force: bool = False, tta: bool | None = None
) -> dict:
    """Average the p(star) of models trained on one dataset in one model folder ``name`` (an ensemble: members
    trained from different seeds err on different sources). Its threshold is chosen on val, it is evaluated on
    every split and sealed like a trained model (model.keras, metrics.json, model.onnx; no history.csv), and it
    becomes the latest model; ``name`` defaults to ensemble-DATASET. ``tta``: test-time augmentation (None: on
    when every member used it). Returns {"name", "model_dir", "metrics",
    "model_json", "skipped"}."""
    from .. import model as mdl
    from ..metrics import choose_threshold

    if len(members) < 2:
        raise StargalError("--ensemble: give at least two models to combine")
    if len(set(members)) != len(members):
        raise StargalError(f"--ensemble {' '.join(members)}: a model is named twice")
    for member in members:
        check_folder_name(member, "--ensemble")
        if not paths.model_dir(member).is_dir():
            raise StargalError(f"--ensemble {member}: no such model in {paths.models_root} ({_model_names(paths)})")
    metas = [integrity.require_model(paths.model_dir(member)) for member in members]
    for member, meta in zip(members, metas, strict=True):
        if "ensemble" in meta:
            raise StargalError(f"--ensemble: {member} is an ensemble already; combine the networks it was made of")
    for key in ("dataset", "architecture"):
        values = sorted({str(meta.get(key)) for meta in metas})
        if len(values) != 1:
            raise StargalError(f"--ensemble: the models differ in {key} ({', '.join(values)}); combine models of one")
    dataset = str(metas[0].get("dataset"))
    name = name or f"ensemble-{dataset}"
    if name in members:
        raise StargalError(f"--name {name}: that is one of the models combined; give the ensemble its own name")
    check_output_places(paths, name)
    if tta is None:
        tta = all(meta.get("tta", False) for meta in metas)
    config = {
        "ensemble": [
            {"name": m, "model.keras": meta[fsio.INTEGRITY_KEY]["files"]["model.keras"]}
            for m, meta in zip(members, metas, strict=True)
        ],  # fmt: skip
        "tta": tta,
    }
    config = json.loads(json.dumps(config))
    dataset_id = dataset_identity(paths, dataset)
    for member, meta in zip(members, metas, strict=True):
        if (meta.get("inputs") or {}).get("dataset") != dataset_id:
            raise StargalError(
                f"--ensemble {member}: trained on an earlier build of dataset {dataset} (its content changed since); "
                f"retrain it with 03_model.py, or combine models trained on the current {dataset}"
            )
    files = paths.model(name)
    check = fsio.check_seal(files.json, [files.keras, files.metrics])
    current = check.ok and check.record.get("inputs", {}).get("dataset") == dataset_id
    if current and not force and check.record.get("config") == config:
        log.info("%s: ensemble is current, skipping (use --force to combine again)", name)
        fsio.write_text_if_changed(paths.latest_model, name + "\n")
        return {"name": name, "model_dir": files.folder, "metrics": fsio.read_json(files.metrics),
                "model_json": check.record, "skipped": True}  # fmt: skip
    fsio.require_writable_output(files.json)
    _warn_replacing(files, check, config, current)
    data = load_dataset(paths, dataset)
    mdl.configure_threads()
    model = mdl.ensemble_model([mdl.load_model(paths.model(member).keras) for member in members])
    preds = predict_splits(model, data, tta=tta)
    threshold = choose_threshold(data["val"]["y"], preds["val"])  # validation only, never test
    metrics = evaluate(data, preds, threshold, tta=tta)
    member_records = [{k: meta.get(k) for k in MEMBER_KEYS} for meta in metas]
    model_json = {
        **{k: metas[0].get(k) for k in SHARED_KEYS},
        "name": name,
        "ensemble": member_records,
        "seeds": [meta.get("seed") for meta in metas],
        "threshold": threshold,
        "threshold_source": "val: maximum MCC",
        "tta": tta,
        "params": int(model.count_params()),
        "flops_per_patch": mdl.flops_per_sample(model),
        "test": {k: metrics["test"].get(k) for k in ("accuracy", "mcc", "roc_auc")} if "test" in metrics else None,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "stargal_version": __version__,
        "config": config,
        "inputs": {"dataset": dataset_id},
    }
    files.folder.mkdir(parents=True, exist_ok=True)
    with fsio.OutputSet(files.json) as out:
        _save_keras(model, out.path(files.keras))
        fsio.write_json(out.path(files.metrics), metrics)
        out.remove(files.history)  # a trained model's, if the folder held one: an ensemble has no history
        onnx = _export_onnx(model, out, files)
        if onnx:
            model_json["onnx"] = onnx
        model_json = out.commit(model_json)
    drop_figures(paths, name)  # a trained model's of that name: an ensemble has none
    fsio.write_text_if_changed(paths.latest_model, name + "\n")
    return {"name": name, "model_dir": files.folder, "metrics": metrics, "model_json": model_json, "skipped": False}


def require_two_classes(dataset: str, labels: dict[str, np.ndarray]) -> None:
    """StargalError when a training or validation split (``labels``: split -> 0/1 labels) holds one class only: a
    dataset 02 built before it refused them. A model trained on it calls everything that class (its validation MCC
    is undefined, not sklearn's 0.0)."""
    for split, y in labels.items():
        if y.size and np.all(y == y[0]):
            raise StargalError(
                f"dataset {dataset}: its {split} split holds one class only ({y.size} "
                f"{'stars' if y[0] else 'galaxies'}): a model trained on it calls everything that class; "
                "02_preparation.py says why and what to fetch"
            )


def _warn_replacing(files: ModelFiles, check: fsio.SealCheck, config: dict, current: bool) -> None:
    """The warning training gives when a model of the name exists and is replaced by something else."""
    if check.record is None:
        if files.json.exists():
            log.warning("%s: %s; replacing it", files.folder.name, check.describe())
        return
    if "ensemble" not in check.record:
        why = f"a trained {check.record.get('architecture')} network, not an ensemble"
    elif check.record.get("config") != config:
        why = "an ensemble of other members"
    elif not current:
        why = "dataset changed"
    else:  # the same ensemble, combined again (--force)
        return
    log.warning("%s: replacing the model of that name (%s; --name keeps both)", files.folder.name, why)


# ---------------------------------------------------------------- several seeds, comparisons


def run_training(paths: DataPaths, dataset: str | None, options: TrainOptions, seeds: list[int] | None = None) -> dict:
    """Train one model per seed; record the best on validation MCC as the latest model."""
    dataset = resolve_dataset(paths, dataset)
    if options.tuned_on is not None and options.tuned_on != dataset:
        log.warning("--config was tuned on dataset %s; training on %s", options.tuned_on, dataset)
    seeds = seeds or [options.seed]
    each = [
        replace(
            options, seed=seed, name=(f"{options.name}-s{seed}" if options.name and len(seeds) > 1 else options.name)
        )
        for seed in seeds
    ]
    for opts in each:  # every model's place before the first is trained, not after it
        check_output_places(paths, model_name(opts.resolved(), dataset))
    report = seeds_report(paths, options, dataset)
    if len(each) > 1:  # and the seeds' summary's ("File exists" once every seed was trained)
        fsio.require_output_places(
            paths.root, {report: f"summary of the {len(each)} seeds"}, [report / "summary.json"], "stage 03"
        )
    data = None
    runs = []
    for opts in each:
        if data is None and not _is_skippable(paths, dataset, opts):
            data = load_dataset(paths, dataset)
        runs.append(train_one(paths, dataset, opts, data))
    best = max(runs, key=lambda r: _or_lowest(r["metrics"]["val"].get("mcc")))
    fsio.write_text_if_changed(paths.latest_model, best["name"] + "\n")
    summary = {"dataset": dataset, "runs": runs, "latest": best["name"]}
    if len(runs) > 1:
        summary["test_summary"] = summarise_runs(runs)
        fsio.write_text_if_changed(report / "summary.json", fsio.json_text(summary["test_summary"]))
        summary["report"] = report / "summary.json"
    return summary


def seeds_report(paths: DataPaths, options: TrainOptions, dataset: str) -> Path:
    """Where ``--seeds N`` writes its summary: reports/training/seeds-NAME for ``--name NAME`` (the models are
    NAME-sSEED), so runs of other names on one dataset keep their own; without a name, seeds-ARCHITECTURE-DATASET."""
    return paths.reports("training", f"seeds-{options.name or f'{options.resolved().architecture}-{dataset}'}")


def _or_lowest(value: float | None) -> float:
    """A metric to rank by, an undefined one (None: a split of one class) below every score."""
    return -np.inf if value is None else value


def _is_skippable(paths: DataPaths, dataset: str, options: TrainOptions) -> bool:
    if options.force:
        return False
    from ..model import merged_hp

    opts = options.resolved()
    config = _run_config(opts, dataset, merged_hp(opts.architecture, opts.hyperparameters))
    name = model_name(opts, dataset)
    return current_model(paths, name, config, dataset_identity(paths, dataset), warn=False) is not None


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
    base = options.name or f"{opts.architecture}-{dataset}"
    # --name's own folder: a comparison of another name on this dataset keeps its own (as --seeds' summary)
    report = paths.reports("training", f"augmentation-comparison-{options.name or f'{opts.architecture}-{dataset}'}")
    files = [report / f for f in ("comparison.json", "comparison.csv", "comparison.md", "comparison.png")]
    fsio.require_output_places(paths.root, {report: "augmentation comparison"}, files, "stage 03")
    for aug_name in ("none", with_aug):  # every model's place, before the first is trained
        for seed in seeds:
            check_output_places(paths, model_name(replace(opts, name=f"{base}-aug_{aug_name}-s{seed}"), dataset))
    data = load_dataset(paths, dataset)
    rows = []
    for aug_name in ("none", with_aug):
        runs = []
        for seed in seeds:
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
    cols = list(COMPARISON_COLUMNS)
    table = np.zeros(len(rows), dtype=[("augment", "U32"), ("runs", "i4")] + [(c, "f8") for c in cols[2:]])
    for i, r in enumerate(rows):
        for c in cols:
            table[c][i] = r.get(c, np.nan)
    from ..plots import training as tplots

    # one sealed set: the table, its Markdown and its plot appear together with comparison.json, or not at all
    with fsio.OutputSet(report / "comparison.json") as out:
        write_table(out.path(report / "comparison.csv"), table)
        fsio.write_text(out.path(report / "comparison.md"), records_markdown(rows, cols))
        tplots.comparison_plot(out.path(report / "comparison.png"), rows)
        out.commit({"dataset": dataset, "rows": rows})
    return {"dataset": dataset, "rows": rows, "report": report}


def evaluate_saved_model(model_dir: Path, paths: DataPaths, dataset: str | None = None, split: str = "test") -> dict:
    """Metrics of a saved model (its own threshold and TTA setting) on a split of a dataset of ``paths``:
    how a model trained on one sky does on another (e.g. the pretrained model on the reference test field)."""
    from ..metrics import classification_metrics
    from ..model import predict
    from .predict import load_bundle

    bundle = load_bundle(Path(model_dir))
    name = resolve_dataset(paths, dataset)
    data = load_dataset(paths, name, splits=(split,))[split]
    p = predict(bundle.model, data["x"], data["psf"], tta=bool(bundle.meta.get("tta", False)))
    return {"dataset": name, "split": split, **classification_metrics(data["y"], p, bundle.threshold)}
