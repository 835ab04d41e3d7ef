"""Stage 04 runner: example images and a summary of the augmentations, the optional materialised
(reference-style) augmented training set, and the exercise's systematic augmentation experiment.

Each output set is sealed by its record (augmentation.json, augmented.json, experiment.json) with the
checksums of its files and the identity of the dataset it was made from; a rerun with intact outputs, the
same dataset and settings writes nothing (so it works on a read-only data folder)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import augment as aug
from .. import fsio, integrity
from ..config import SEED
from ..dataset import dataset_identity, load_dataset, resolve_dataset
from ..errors import StargalError
from ..model import import_keras
from ..paths import DataPaths
from ..tables import markdown_table, records_markdown, write_table

log = logging.getLogger("stargal")

# The proxy model of the experiment: the reference base CNN at half width, a fixed number of epochs.
PROXY_ARCHITECTURE = "reference_base"
PROXY_HP = {"filters": 16, "dense_units": 64, "learning_rate": 1e-3}
PROXY_EPOCHS = 10
PROXY_MAX_TRAIN = 8000  # training patches per policy: the fixed proxy budget (time and memory)


def summary_text(scale) -> str:
    """Markdown description of every augmentation policy and of the brightness unit."""
    lines = [
        "# Augmentation configuration",
        "",
        "Augmentations are drawn per sample, per batch, in a streaming `tf.data` pipeline "
        "(`stargal.augment.make_dataset`); the training set is never copied.",
        "",
        "- Symmetries: the 8 elements of the dihedral group D4 (rotations by 0/90/180/270 degrees, with and "
        "without a mirror), applied as exact pixel permutations; one element is drawn uniformly, so no "
        "duplicate is ever produced.",
        f"- Brightness: a per-channel normal offset in normalised units (sigma {aug.BRIGHTNESS_SIGMA}); an offset "
        "d adds d * scale[c] nanomaggies to channel c, i.e. shifts the model's arcsinh argument by d. "
        "scale (about one sky-noise sigma, from dataset.json) = "
        + ", ".join(f"{b}: {s:.4g}" for b, s in zip("ugriz", scale, strict=False))
        + " nanomaggies.",
        f"- Blur: Gaussian, sigma {aug.BLUR_SIGMA} px, truncated at 3 sigma, symmetric edge padding.",
        "",
    ]
    rows = []
    for name, cfg in aug.POLICIES.items():
        sym = ", ".join(aug.D4_NAMES[k] for k in cfg.symmetries) if cfg.symmetries else "-"
        bright = f"{cfg.brightness_sigma} ({cfg.brightness_p})" if cfg.brightness_sigma else "-"
        blur = f"{cfg.blur_sigma} ({cfg.blur_p})" if cfg.blur_p else "-"
        rows.append((name, sym, bright, blur))
    header = ("policy", "symmetries", "brightness sigma (p)", "blur sigma (p)")
    lines.append(markdown_table(header, rows, fmt=str).rstrip("\n"))
    lines += [
        "",
        f"`--materialize` writes every sample x {aug.D4_SIZE} symmetries x {len(aug.MATERIALIZED_VARIANTS)} variants "
        f"({', '.join(aug.MATERIALIZED_VARIANTS)}) = {aug.D4_SIZE * len(aug.MATERIALIZED_VARIANTS)} distinct copies, float32.",
        "",
    ]
    return "\n".join(lines)


def example_patches(y: np.ndarray, x: np.ndarray, mag: np.ndarray, per_class: int = 2) -> np.ndarray:
    """Indices of bright-ish examples of each class (the brightest quartile, deterministic)."""
    picks = []
    for label in (1, 0):
        idx = np.flatnonzero(y == label)
        if idx.size == 0:
            continue
        m = np.where(np.isfinite(mag[idx]), mag[idx], 99.0)
        order = idx[np.argsort(m, kind="stable")]
        quartile = order[len(order) // 50 : max(len(order) // 50 + per_class, len(order) // 4)]
        picks.extend(quartile[:per_class].tolist() or order[:per_class].tolist())
    return np.asarray(picks, np.int64)


def write_examples(paths: DataPaths, dataset: str | None, *, seed: int = SEED, force: bool = False) -> dict:
    """Example images of every augmentation and the configuration summary under reports/augmentation."""
    from ..plots import augmentation as aplots

    dataset = resolve_dataset(paths, dataset)
    out = paths.reports("augmentation")
    settings = {"dataset": dataset, "dataset_id": dataset_identity(paths, dataset), "seed": seed}
    record = out / "augmentation.json"
    previous = fsio.previous_record(record, [out / "augmentation.md"], settings, force)
    if previous is not None:
        files = [out / name for name in previous[fsio.INTEGRITY_KEY]["files"]]
        return {"dataset": dataset, "report": out, "files": files, "skipped": True}
    data = load_dataset(paths, dataset, splits=("train",))
    norm = data["meta"]["normalisation"]
    tr = data["train"]
    idx = example_patches(tr["y"], tr["x"], tr["mag"])
    content = {
        "dataset": dataset,
        "brightness_unit": "normalised (offset d adds d * scale[c] nanomaggies)",
        "scale": norm["scale"],
        "policies": {k: v.to_dict() for k, v in aug.POLICIES.items()},
        "materialized_variants": list(aug.MATERIALIZED_VARIANTS),
        "settings": settings,
    }
    # one output set: the figures are drawn aside (example_grids names its own files) and, with the summary, replace
    # the previous set only at the commit, augmentation.json last; a stopped rebuild leaves that set as it was
    with fsio.OutputSet(record) as output, tempfile.TemporaryDirectory(prefix="stargal-examples-") as aside:
        files = []
        for drawn in aplots.example_grids(Path(aside), tr["x"][idx], tr["y"][idx], norm, seed=seed):
            shutil.move(drawn, output.path(out / drawn.name))
            files.append(out / drawn.name)
        fsio.write_text(output.path(out / "augmentation.md"), summary_text(norm["scale"]))
        files.append(out / "augmentation.md")
        output.commit(content)  # lists the figures and the summary with their checksums
    return {"dataset": dataset, "report": out, "files": files, "skipped": False}


def materialize(
    paths: DataPaths, dataset: str | None, *, seed: int = SEED, force: bool = False, chunk: int = 1024
) -> dict:
    """Write the fixed augmented training set (float32, streamed into a memmap, renamed when complete)."""
    dataset = resolve_dataset(paths, dataset)
    out_dir = paths.augmented_dir(dataset)
    x_path, y_path, meta_path = paths.augmented_x(dataset), paths.augmented_y(dataset), paths.augmented_json(dataset)
    dataset_id = dataset_identity(paths, dataset)
    if not force:
        check = fsio.check_seal(meta_path, [x_path, y_path])
        meta = check.record or {}
        if check.ok and meta.get("seed") == seed and meta.get("inputs", {}).get("dataset") == dataset_id:
            log.info("%s: augmented set is current, skipping (use --force to rewrite)", out_dir)
            return {**meta, "skipped": True, "dir": out_dir}
        if meta_path.exists() and not check.ok:
            log.warning("%s: %s; writing it again", out_dir, check.describe())
    fsio.require_writable_output(meta_path)
    meta_in = fsio.read_json(paths.dataset_json(dataset))
    x = fsio.load_npy(paths.split_x(dataset, "train"), mmap=True)
    y = fsio.load_npy(paths.split_y(dataset, "train"))
    if x.ndim != 4 or len(y) != len(x):
        raise StargalError(f"{paths.split_x(dataset, 'train')}: unexpected shape {x.shape} for {len(y)} labels")
    total = aug.materialized_size(len(x))
    t0 = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    with fsio.OutputSet(meta_path) as out:
        xs = fsio.new_npy_memmap(out.path(x_path), np.float32, (total, *x.shape[1:]))
        ys = fsio.new_npy_memmap(out.path(y_path), np.uint8, (total,))
        pos = 0
        from ..progress import track

        n_chunks = aug.D4_SIZE * len(aug.MATERIALIZED_VARIANTS) * -(-len(x) // chunk)
        chunks = aug.materialize_chunks(x, y, meta_in["normalisation"]["scale"], seed=seed, chunk=chunk)
        for xb, yb in track(chunks, "materialising augmented set", total=n_chunks, unit="chunk"):
            xs[pos : pos + len(xb)] = xb
            ys[pos : pos + len(yb)] = yb
            pos += len(xb)
        xs.flush()
        ys.flush()
        del xs, ys
        meta = out.commit(_materialized_meta(dataset, x, total, seed, t0, dataset_id))
    return {**meta, "skipped": False, "dir": out_dir}


def _materialized_meta(dataset: str, x: np.ndarray, total: int, seed: int, t0: float, dataset_id: str) -> dict:
    return {
        "dataset": dataset,
        "n_source": int(len(x)),
        "n": int(total),
        "copies": aug.D4_SIZE * len(aug.MATERIALIZED_VARIANTS),
        "order": "copy-major: copy (k, v) = D4 element k, variant v; samples in source order within a copy",
        "symmetries": list(aug.D4_NAMES),
        "variants": list(aug.MATERIALIZED_VARIANTS),
        "brightness_sigma": aug.BRIGHTNESS_SIGMA,
        "blur_sigma": aug.BLUR_SIGMA,
        "seed": seed,
        "seconds": round(time.monotonic() - t0, 2),
        "bytes": int(total * np.prod(x.shape[1:]) * 4),
        "inputs": {"dataset": dataset_id},
    }


EXPERIMENT_COLUMNS = (
    "policy",
    "train_loss",
    "train_accuracy",
    "train_loss_clean",
    "train_accuracy_clean",
    "val_loss",
    "val_accuracy",
    "val_mcc",
    "best_epoch",
    "seconds",
)


def check_experiment(paths: DataPaths, dataset: str | None, policies=aug.EXPERIMENT_POLICIES) -> str:
    """The dataset the experiment would run on, after the checks that need no training: before the examples are
    written (04 writes them first), so that a run that cannot do the experiment writes nothing."""
    from ..config import MIN_PATCH_SIZE

    twice = sorted({p for p in policies if list(policies).count(p) > 1})
    if twice:  # the same training twice, and two rows of one name in the table
        raise StargalError(f"--policies: {' '.join(twice)} named twice")
    dataset = resolve_dataset(paths, dataset)
    size = integrity.require_dataset(paths, dataset).get("patch_size")
    smallest = MIN_PATCH_SIZE[PROXY_ARCHITECTURE]
    if isinstance(size, int) and size < smallest:
        raise StargalError(
            f"--experiment: dataset {dataset} has patches of {size} px, but the experiment's proxy network "
            f"({PROXY_ARCHITECTURE}) needs at least {smallest} px; prepare a dataset with 02_preparation.py "
            f"--patch-size {smallest} or more for it"
        )
    return dataset


def experiment(
    paths: DataPaths,
    dataset: str | None,
    *,
    seed: int = SEED,
    epochs: int = PROXY_EPOCHS,
    batch_size: int = 256,
    policies=aug.EXPERIMENT_POLICIES,
    max_train: int | None = PROXY_MAX_TRAIN,
    force: bool = False,
) -> dict:
    """Train the proxy model once per augmentation policy with the same budget; table, Markdown, plot.

    Skipped when its outputs are newer than the dataset and were made with the same settings.

    train_loss/accuracy: Keras's running values on the (augmented) stream in the last epoch;
    *_clean: the restored model on the un-augmented training set; val_*: the restored (best) model.
    """
    dataset = check_experiment(paths, dataset, policies)
    out = paths.reports("augmentation")
    outputs = [out / n for n in ("experiment.csv", "experiment.md", "experiment.png", "experiment.json")]
    settings = {"dataset": dataset, "dataset_id": dataset_identity(paths, dataset), "seed": seed, "epochs": epochs,
                "batch_size": batch_size, "policies": list(policies), "max_train": max_train}  # fmt: skip
    previous = fsio.previous_record(outputs[-1], outputs[:-1], settings, force)
    if previous is not None:
        log.info("augmentation experiment is current (use --force to rerun)")
        return {"dataset": dataset, "rows": previous["rows"], "report": out, "skipped": True}
    keras = import_keras()  # after the check: a current experiment is reported without TensorFlow's start-up

    from ..metrics import classification_metrics
    from ..model import build_model, configure_threads, predict
    from ..train import fit, set_seed

    data = load_dataset(paths, dataset, splits=("train", "val"))
    norm = data["meta"]["normalisation"]
    tr, va = data["train"], data["val"]
    if max_train and len(tr["x"]) > max_train:
        keep = np.sort(np.random.default_rng(seed).choice(len(tr["x"]), max_train, replace=False))
        tr = {k: v[keep] for k, v in tr.items()}
    configure_threads()
    rows = []
    for name in policies:
        set_seed(seed)
        model = build_model(PROXY_ARCHITECTURE, tr["x"].shape[1:], norm, PROXY_HP)
        log.info("augmentation experiment: %s", name)
        hist = fit(
            model,
            tr["x"],
            tr["y"],
            va["x"],
            va["y"],
            batch_size=batch_size,
            epochs=epochs,
            patience=epochs,
            seed=seed,
            augment=aug.policy(name),
            normalisation=norm,
            train_psf=tr["psf"],
            val_psf=va["psf"],
        )
        p_tr = predict(model, tr["x"], tr["psf"])
        p_va = predict(model, va["x"], va["psf"])
        m_tr = classification_metrics(tr["y"], p_tr)
        m_va = classification_metrics(va["y"], p_va)
        rows.append(
            {
                "policy": name,
                "train_loss": hist["loss"][-1],
                "train_accuracy": hist["accuracy"][-1],
                "train_loss_clean": m_tr["log_loss"],
                "train_accuracy_clean": m_tr["accuracy"],
                "val_loss": m_va["log_loss"],
                "val_accuracy": m_va["accuracy"],
                "val_mcc": m_va["mcc"],
                "best_epoch": hist["best_epoch"],
                "seconds": round(hist["seconds"], 1),
            }
        )
        del model
        keras.backend.clear_session()  # six models in one process: free each before the next
    table = np.zeros(len(rows), dtype=[("policy", "U16")] + [(c, "f8") for c in EXPERIMENT_COLUMNS[1:]])
    for i, r in enumerate(rows):
        for c in EXPERIMENT_COLUMNS:
            table[c][i] = r[c]
    header = (
        f"# Augmentation experiment\n\nDataset `{dataset}`; proxy model {PROXY_ARCHITECTURE} {PROXY_HP}, "
        f"{epochs} epochs, batch {batch_size}, seed {seed}, {len(tr['x'])} training patches; "
        "validation scores of the best-validation-loss weights (threshold 0.5).\n\n"
    )
    from ..plots import augmentation as aplots

    # one output set: a stopped rebuild (another --epochs, --force) leaves the previous experiment's files as they were
    with fsio.OutputSet(outputs[-1]) as output:
        write_table(output.path(outputs[0]), table)
        fsio.write_text(output.path(outputs[1]), header + records_markdown(rows, EXPERIMENT_COLUMNS))
        aplots.experiment_plot(output.path(outputs[2]), rows)
        output.commit({"settings": settings, "rows": rows})  # experiment.json last, with the files' checksums
    return {"dataset": dataset, "rows": rows, "report": out, "skipped": False}
