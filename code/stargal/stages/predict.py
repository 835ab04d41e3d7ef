"""Runner of predict.py: load a trained model and an aligned field, classify sky coordinates, write a CSV."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import integrity
from ..config import BANDS
from ..cube import Cube, read_cube
from ..errors import StargalError
from ..fsio import write_text
from ..model import load_model
from ..paths import DataPaths, FieldId, ModelFiles
from ..predict import Predictions, classify, predictions_csv

log = logging.getLogger("stargal")


@dataclass
class ModelBundle:
    model: object  # keras.Model taking raw float32 [n, P, P, 5] patches, returning p_star
    meta: dict  # model.json
    directory: Path

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.directory.name)

    @property
    def patch_size(self) -> int:
        return int(self.meta["patch_size"])

    @property
    def edge(self) -> str:
        return str(self.meta.get("edge", "pad"))

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @property
    def bands(self) -> str:
        return str(self.meta.get("bands", "".join(BANDS)))


def resolve_model_dir(paths: DataPaths, spec: str | None) -> Path:
    """The model folder named by ``spec``: None (the latest trained model), a model name, a folder or a .keras file."""
    if spec is None:
        try:
            spec = paths.latest_model.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise StargalError(
                f"{paths.latest_model}: no trained model yet (run 03_model.py or pass --model)"
            ) from None
        if not spec:
            raise StargalError(f"{paths.latest_model}: empty; pass --model")
    candidate = Path(spec).expanduser()
    if candidate.suffix == ".keras" and candidate.is_file():
        return candidate.resolve().parent
    if ModelFiles(candidate).keras.is_file():
        return candidate.resolve()
    if paths.model(spec).keras.is_file():
        return paths.model_dir(spec)
    raise StargalError(f"--model {spec}: no model.keras there nor in {paths.model_dir(spec)}")


def load_bundle(model_dir: Path) -> ModelBundle:
    """Load model.keras and model.json of a model folder, after checking model.json's seal of the folder."""
    files = ModelFiles(model_dir)
    meta_path = files.json
    if not meta_path.exists():
        raise StargalError(f"{meta_path}: model description not found")
    meta = integrity.require_model(model_dir)
    if "patch_size" not in meta:
        raise StargalError(f"{meta_path}: no patch_size")
    model = load_model(files.keras)
    bundle = ModelBundle(model, meta, model_dir)
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if shape and shape[0] is not None and shape[0] != bundle.patch_size:
        raise StargalError(f"{meta_path}: patch_size {bundle.patch_size} but the model takes {shape[0]} pixels")
    return bundle


def cube_for(paths: DataPaths, cube_path: str | None, fid: FieldId | None) -> tuple[Path, str]:
    """The cube file and a short label of the field (for the default output name)."""
    if cube_path:
        p = Path(cube_path).expanduser().resolve()
        integrity.require_cube_file(p)
        return p, p.name.removesuffix(".fits").removeprefix("cube-")
    if fid is None:
        raise StargalError("give a field: --cube PATH or --run/--camcol/--field")
    p = paths.cube(fid)
    integrity.require_field(paths, fid)  # the field's cube exists and is intact
    return p, f"{fid.run:06d}-{fid.camcol}-{fid.field:04d}"


def cube_array(cube: Cube, bands: str) -> np.ndarray:
    """The cube's planes in the model's band order, as native float32 in memory."""
    missing = [b for b in bands if b not in cube.bands]
    if missing:
        raise StargalError(f"aligned cube lacks band(s) {''.join(missing)} the model needs")
    order = [cube.band_index(b) for b in bands]
    return np.ascontiguousarray(np.asarray(cube.data[order], dtype=np.float32))


def run_predict(
    paths: DataPaths,
    *,
    ra: np.ndarray,
    dec: np.ndarray,
    model: str | None = None,
    cube_path: str | None = None,
    fid: FieldId | None = None,
    out: str | None = None,
    bundle: ModelBundle | None = None,
) -> tuple[Path, Predictions]:
    """Classify (ra, dec) in one field and write the CSV; returns its path and the predictions."""
    start = time.monotonic()
    path, field_label = cube_for(paths, cube_path, fid)  # input errors first, before loading TensorFlow
    model_dir = None if bundle is not None else resolve_model_dir(paths, model)
    cube = read_cube(path)
    if bundle is None:
        bundle = load_bundle(model_dir)
    data = cube_array(cube, bundle.bands)
    pred = classify(
        bundle.model,
        data,
        cube.wcs,
        ra,
        dec,
        patch_size=bundle.patch_size,
        edge=bundle.edge,
        threshold=bundle.threshold,
        tta=bool(bundle.meta.get("tta", False)),
    )
    out_path = Path(out).expanduser().resolve() if out else paths.prediction_csv(f"{field_label}_{bundle.name}")
    write_text(out_path, predictions_csv(pred))
    log.info("classified %d coordinates in %.1f s: %s", len(pred), time.monotonic() - start, pred.counts())
    return out_path, pred
