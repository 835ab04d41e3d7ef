"""Runner of explain.py: explanation maps for correctly and wrongly classified test objects of a model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import explain, fsio, integrity
from ..config import SEED
from ..dataset import check_selection, dataset_identity
from ..errors import StargalError
from ..fsio import load_npy, previous_record, read_json, write_text
from ..geometry import nearest_neighbour_arcsec
from ..model import predict as predict_batches
from ..model import takes_psf
from ..paths import DataPaths, ModelFiles, check_folder_name
from ..tables import csv_text, read_table
from .predict import load_bundle, resolve_model_dir

log = logging.getLogger("stargal")

GROUP_TITLES = {
    "star_correct": "stars classified as stars",
    "star_as_galaxy": "stars misclassified as galaxies",
    "galaxy_correct": "galaxies classified as galaxies",
    "galaxy_as_star": "galaxies misclassified as stars",
}


# how the patches are scored: as the model was evaluated, with its test-time augmentation (1, single passes against
# the threshold of the augmented scores, told a report different counts from its evaluation's table)
SCORING = 2


def _scores(bundle, x: np.ndarray, psf: np.ndarray | None) -> np.ndarray:
    """p(star) of the patches as the model's evaluation scored them (its TTA setting), so that its threshold and
    metrics.json's counts apply to them."""
    return predict_batches(bundle.model, np.asarray(x, np.float32), psf, tta=bool(bundle.meta.get("tta", False)))


def _model_and_dataset(
    paths: DataPaths, model: str | None, dataset: str | None, selection: dict | None = None
) -> tuple[Path, str, str, dict]:
    """(model folder, model name, dataset, identities of both) from the sealed model.json, without loading the
    network; the dataset must be of the data ``selection`` names (``dataset.check_selection``)."""
    if model is None and not paths.latest_model.exists():
        # predict falls back to the pretrained model; its dataset is not in this folder, so say what is missing
        raise StargalError(f"{paths.root}: no model trained here yet (run 03_model.py, or pass --model and --dataset)")
    model_dir = resolve_model_dir(paths, model)  # a .keras file on its own is refused there
    meta = integrity.require_model(model_dir)
    given_dataset = dataset is not None
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise StargalError(f"{ModelFiles(model_dir).json}: names no dataset; pass --dataset")
    check_folder_name(str(dataset), "--dataset")
    if not paths.dataset_json(dataset).exists():
        raise StargalError(
            f"{paths.dataset_json(dataset)}: dataset {dataset!r} not found (run 02_preparation.py"
            + (", or name one of this folder's datasets with --dataset)" if not given_dataset else ")")
        )
    check_selection(paths, str(dataset), selection or {})
    ids = {"model_id": fsio.seal_digest(meta), "dataset_id": dataset_identity(paths, dataset)}
    trained_on = (meta.get("inputs") or {}).get("dataset")
    if dataset == meta.get("dataset") and trained_on and trained_on != ids["dataset_id"]:
        # its own dataset rebuilt under the name: the report leaves the model's numbers out, so its analyses too
        raise StargalError(
            f"model {meta.get('name') or model_dir.name} was trained on an earlier build of dataset {dataset} (its "
            f"content changed since): retrain it (03_model.py --dataset {dataset}) before explaining it"
        )
    return model_dir, str(meta.get("name") or model_dir.name), str(dataset), ids


def run_explain(
    paths: DataPaths,
    *,
    model: str | None = None,
    dataset: str | None = None,
    split: str = "test",
    per_group: int = 4,
    steps: int = 32,
    seed: int = SEED,
    force: bool = False,
    selection: dict | None = None,
) -> dict:
    """Write one PNG grid per group (star/galaxy x correct/wrong) and examples.csv under reports/explain/MODEL.

    Skipped (``"skipped": True``) when an earlier run with the same settings is newer than the model and data.
    """
    from ..plots.explain import plot_explanations

    model_dir, name, dataset, ids = _model_and_dataset(paths, model, dataset, selection)
    out_dir = paths.reports("explain", name)
    settings = {"model": name, "dataset": dataset, "split": split, "per_group": per_group, "steps": steps,
                "seed": seed, "scoring": SCORING, **ids}  # fmt: skip
    previous = previous_record(out_dir / "explain.json", [out_dir / "examples.csv"], settings, force)
    if previous is not None:
        log.info("explanations of %s are current (use --force to redo)", name)
        return {**previous["result"], "folder": out_dir, "skipped": True}
    bundle = load_bundle(model_dir)
    try:
        x = load_npy(paths.split_x(dataset, split), mmap=True)
        y = load_npy(paths.split_y(dataset, split))
        psf = load_npy(paths.split_psf(dataset, split)) if takes_psf(bundle.model) else None
    except FileNotFoundError as exc:
        raise StargalError(f"{exc.filename}: {split} split of dataset {dataset!r} not found") from None
    if x.shape[1] != bundle.patch_size:
        raise StargalError(
            f"dataset {dataset}: patches of {x.shape[1]} px but model {bundle.name} takes {bundle.patch_size}"
        )
    objects = _objects(paths, dataset, split, len(y))
    p = _scores(bundle, x, psf)
    groups = explain.select_examples(y, p, bundle.threshold, per_group, seed)
    out_dir = paths.reports("explain", bundle.name)
    written, rows = [], []
    # the figures and table appear with the record that seals them, or (stopped, failed) the previous set stays
    with fsio.OutputSet(out_dir / "explain.json") as output:
        for group, idx in groups.items():
            figure = out_dir / f"{group}.png"
            if idx.size == 0:
                log.info("%s: no examples in the %s split", group, split)
                output.remove(figure)  # an earlier run's figure of the group is not this run's
                continue
            xs = np.asarray(x[idx], np.float32)
            psf_idx = None if psf is None else psf[idx]
            ig = explain.integrated_gradients(bundle.model, xs, psf=psf_idx, steps=steps)
            cam = explain.grad_cam(bundle.model, xs, psf=psf_idx)
            captions = [_caption(objects, i) for i in idx]
            title = (
                f"{bundle.name}: {GROUP_TITLES[group]} ({split} split of {dataset}, threshold {bundle.threshold:.2f})"
            )
            plot_explanations(xs, ig, cam, p[idx], y[idx], output.path(figure), title=title, captions=captions)
            written.append(figure)
            centre = explain.central_fraction(ig, 3.0)
            for k, i in enumerate(idx):
                rows.append(
                    [group, int(i), _objid(objects, i), int(y[i]), f"{p[i]:.4f}", f"{centre[k]:.3f}", captions[k]]
                )
        header = ["group", "index", "objid", "label", "p_star", "ig_central_fraction_r3", "r_psfmag"]
        write_text(output.path(out_dir / "examples.csv"), csv_text(header, rows))
        result = {
            "model": bundle.name,
            "dataset": dataset,
            "figures": [str(f) for f in written],
            "counts": {g: int(i.size) for g, i in groups.items()},
        }
        output.commit({"settings": settings, "result": result})
    return {**result, "folder": out_dir, "skipped": False}


def _objects(paths: DataPaths, dataset: str, split: str, n: int) -> np.ndarray | None:
    try:
        table = read_table(paths.split_objects(dataset, split))
    except StargalError:
        return None  # captions are optional
    return table if len(table) == n else None


def _objid(objects, i) -> str:
    return str(objects["objid"][i]) if objects is not None else ""


def _caption(objects, i) -> str:
    if objects is None:
        return ""
    mag = float(objects["r_psfmag"][i])
    return f"r={mag:.1f}" if np.isfinite(mag) else ""


def run_difficulty(
    paths: DataPaths,
    *,
    model: str | None = None,
    dataset: str | None = None,
    seed: int = SEED,
    force: bool = False,
    selection: dict | None = None,
) -> dict:
    """difficulty.md (a README/report section) and examples.png under reports/difficulty/MODEL; skipped like
    run_explain when current."""
    from .. import difficulty
    from ..metrics import by_magnitude
    from ..plots.explain import plot_examples

    model_dir, name, dataset, ids = _model_and_dataset(paths, model, dataset, selection)
    out = paths.reports("difficulty", name)
    settings = {"model": name, "dataset": dataset, "seed": seed, "scoring": SCORING, **ids}
    outputs = [out / "difficulty.md", out / "examples.png"]
    previous = previous_record(out / "difficulty.json", outputs, settings, force)
    if previous is not None:
        log.info("difficulty analysis of %s is current (use --force to redo)", name)
        text = (out / "difficulty.md").read_text(encoding="utf-8")
        return {"markdown": text, "folder": out, "figure": outputs[1], **previous["result"], "skipped": True}
    bundle = load_bundle(model_dir)
    try:
        x = load_npy(paths.split_x(dataset, "test"), mmap=True)
        y = load_npy(paths.split_y(dataset, "test"))
        psf = load_npy(paths.split_psf(dataset, "test")) if takes_psf(bundle.model) else None
    except FileNotFoundError as exc:
        raise StargalError(f"{exc.filename}: test split of dataset {dataset!r} not found") from None
    objects = _objects(paths, dataset, "test", len(y))
    if objects is None:
        raise StargalError(
            f"{paths.split_objects(dataset, 'test')}: test objects table missing or not matching the patches"
        )
    p = _scores(bundle, x, psf)
    mag = objects["r_psfmag"].astype(np.float64)
    rows, source = [], "measured"
    # metrics.json's table is of the test split the model was trained with: used only when that is the split read
    # here (the same dataset content), so that every number of the page is measured on the dataset named
    if (bundle.meta.get("inputs") or {}).get("dataset") == ids["dataset_id"]:
        try:
            rows = difficulty.find_by_magnitude(read_json(ModelFiles(bundle.directory).metrics))  # sealed with it
            source = "metrics.json"
        except FileNotFoundError:  # a model folder without metrics (not made by 03_model.py)
            rows = []
    if not rows:  # no stored per-magnitude metrics: measure them here, the same way stage 03 does
        rows, source = by_magnitude(y, p, mag, bundle.threshold), "measured"
    neighbour = nearest_neighbour_arcsec(objects["ra"], objects["dec"])
    groups = difficulty.select_examples(y, p, mag, neighbour, bundle.threshold, seed=seed)
    text = difficulty.difficulty_markdown(
        rows,
        y=y,
        p=p,
        mag=mag,
        neighbour=neighbour,
        threshold=bundle.threshold,
        figure="examples.png",
        model=bundle.name,
    )
    figure = out / "examples.png"
    with fsio.OutputSet(out / "difficulty.json") as output:  # both with their record, or the previous set stays
        plot_examples(x, groups, p, y, mag, output.path(figure), title=f"{bundle.name}: test patches of {dataset}")
        write_text(output.path(out / "difficulty.md"), text)
        output.commit({"settings": settings, "result": {"by_magnitude_source": source}})
    return {"markdown": text, "folder": out, "figure": figure, "by_magnitude_source": source, "skipped": False}
