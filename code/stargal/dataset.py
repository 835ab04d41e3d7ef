"""A prepared dataset on disk (stage 02's output): which one to use, its identity, and its splits loaded and
checked. Shared by the runners that read datasets: training (03), augmentation (04), tuning and explain.
A dataset is used only when its dataset.json seals every file intact (``stargal.integrity.require_dataset``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import fsio, integrity
from .config import SPLITS
from .errors import StargalError
from .paths import DataPaths, check_folder_name
from .tables import OBJECT_DTYPE, read_table


def resolve_dataset(paths: DataPaths, name: str | None) -> str:
    """The dataset to use: ``name`` or the one stage 02 prepared last (its errors then name the LATEST file)."""
    if name:
        # a name, never a path: "augmented/<path>" or "models/<path>" would land in the dataset's own folder
        check_folder_name(name, "--dataset")
        if not paths.dataset_json(name).exists():
            raise StargalError(f"{paths.dataset_json(name)}: dataset {name!r} not found (run 02_preparation.py)")
        return name
    pointer = paths.latest_dataset
    if not pointer.exists():
        raise StargalError(f"{pointer}: no dataset prepared yet (run 02_preparation.py or pass --dataset)")
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StargalError(f"{pointer}: unreadable ({exc}); run 02_preparation.py again or pass --dataset") from None
    if not name:
        raise StargalError(f"{pointer}: empty (run 02_preparation.py or pass --dataset)")
    try:
        check_folder_name(name, "the name")
    except StargalError as exc:
        raise StargalError(f"{pointer}: not a dataset's name: {exc}; run 02_preparation.py again") from None
    if not paths.dataset_json(name).exists():
        raise StargalError(
            f"{pointer}: names the dataset {name!r}, which is not in {paths.datasets_root} "
            "(run 02_preparation.py, or pass --dataset)"
        )
    return name


def check_selection(paths: DataPaths, name: str | None, given: dict) -> None:
    """StargalError unless the dataset used (``name`` or the latest) is of the data the command line named:
    ``given`` holds the rerun, run, camcol and fields it gave (``cli.given_selection``). Stages after 02 work on
    a prepared dataset, so these options can only confirm which one; a dataset of other data would be a silent
    swap. Fields 02 ignored (in no split) may be named too."""
    if not given:
        return
    name = resolve_dataset(paths, name)
    meta = fsio.read_json(paths.dataset_json(name))
    where = f"rerun {meta.get('rerun')} run {meta.get('run')} camcol {meta.get('camcol')}"
    redo = "prepare it with 02_preparation.py and the same options first, or leave the option out"
    for key in ("rerun", "run", "camcol"):
        if key in given and given[key] != meta.get(key):
            raise StargalError(f"--{key} {given[key]}: dataset {name} holds {where}; {redo}")
    if "fields" in given:
        used = sorted({int(f) for fields in (meta.get("fields") or {}).values() for f in fields})
        missing = [f for f in used if f not in given["fields"]]
        if missing:
            named = " ".join(map(str, given["fields"]))
            raise StargalError(
                f"--fields {named}: dataset {name} is made of fields {' '.join(map(str, used))} ({where}); {redo}"
            )


def dataset_identity(paths: DataPaths, name: str) -> str:
    """The dataset's content identity (a digest of its files' checksums), after checking that they are intact:
    what a stage records as its input, so that a rebuilt dataset makes its outputs out of date."""
    return fsio.seal_digest(integrity.require_dataset(paths, name))


def load_dataset(paths: DataPaths, name: str, splits: Sequence[str] = SPLITS) -> dict:
    """{"meta": dataset.json, split: {"x", "y", "psf", "mag"}} with the seal, shapes and labels checked."""
    meta = integrity.require_dataset(paths, name, splits)
    norm = meta.get("normalisation") or {}
    if "center" not in norm or "scale" not in norm:
        raise StargalError(f"{paths.dataset_json(name)}: no normalisation center/scale")
    data: dict = {"meta": meta}
    shape = None
    for split in splits:
        for p in (paths.split_x(name, split), paths.split_y(name, split), paths.split_psf(name, split)):
            if not p.exists():
                raise StargalError(f"{p}: missing (dataset {name!r} is incomplete or older; rerun stage 02)")
        x = fsio.load_npy(paths.split_x(name, split))
        y = fsio.load_npy(paths.split_y(name, split))
        psf = fsio.load_npy(paths.split_psf(name, split))
        if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[3] != len(norm["center"]):
            raise StargalError(
                f"{paths.split_x(name, split)}: expected [n, P, P, {len(norm['center'])}], got {x.shape}"
            )
        if shape is not None and x.shape[1:] != shape:
            raise StargalError(f"{paths.split_x(name, split)}: patch shape {x.shape[1:]} differs from {shape}")
        shape = x.shape[1:]
        if y.shape != (len(x),) or (y.size and not np.isin(y, (0, 1)).all()):
            raise StargalError(f"{paths.split_y(name, split)}: expected {len(x)} labels of 0/1")
        if psf.shape != (len(x), x.shape[3]) or not np.all(np.isfinite(psf)):
            raise StargalError(f"{paths.split_psf(name, split)}: expected finite [{len(x)}, {x.shape[3]}] PSF sizes")
        mag = np.full(len(x), np.nan, np.float32)
        if paths.split_objects(name, split).exists():
            table = read_table(paths.split_objects(name, split), OBJECT_DTYPE)
            if len(table) != len(x):
                raise StargalError(f"{paths.split_objects(name, split)}: {len(table)} rows for {len(x)} patches")
            mag = table["r_psfmag"].astype(np.float32)
        data[split] = {
            "x": x.astype(np.float32, copy=False),
            "y": y.astype(np.uint8, copy=False),
            "psf": psf.astype(np.float32, copy=False),
            "mag": mag,
        }
    for split in ("train", "val"):
        if split in data and len(data[split]["x"]) == 0:
            raise StargalError(f"dataset {name!r}: the {split} split is empty")
    return data
