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
from ..fsio import is_current, read_json, write_text
from ..model import load_model, patch_shape, takes_psf
from ..paths import PRETRAINED, PRETRAINED_MODEL_DIR, DataPaths, FieldId, ModelFiles, psf_map_beside
from ..predict import Predictions, classify, predictions_csv
from ..psf import PSFMap, measure_psf_map

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
    """The model folder named by ``spec``: ``pretrained`` (the model shipped in models/), a model name, a folder
    or a .keras file; None means the latest model trained in the data folder, or the pretrained one if none."""
    if spec == PRETRAINED:
        if not ModelFiles(PRETRAINED_MODEL_DIR).keras.is_file():
            raise StargalError(f"{PRETRAINED_MODEL_DIR}: the pretrained model is missing from this copy of stargal")
        return PRETRAINED_MODEL_DIR
    if spec is None:
        try:
            spec = paths.latest_model.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            log.info("no model trained in %s: using the pretrained model %s", paths.root, PRETRAINED_MODEL_DIR.name)
            return resolve_model_dir(paths, PRETRAINED)
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
    shape = patch_shape(model)
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


def load_psf_map(cube_path: Path, data: np.ndarray, bands: str) -> PSFMap:
    """The PSF map stage 01 wrote beside the cube, or, when there is none current, one measured now."""
    sidecar = psf_map_beside(cube_path)
    if is_current([sidecar], [cube_path]):
        try:
            pmap = PSFMap.from_dict(read_json(sidecar), str(sidecar))
            if pmap.bands == bands:
                return pmap
        except ValueError:
            pass  # unreadable: measured again below
    log.info("%s: measuring the PSF on the field's stars", cube_path.name)
    try:
        return measure_psf_map(data, bands)
    except StargalError as exc:
        raise StargalError(f"{cube_path}: {exc}") from None


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
    psf_map = load_psf_map(path, data, bundle.bands) if takes_psf(bundle.model) else None
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
        psf_map=psf_map,
    )
    out_path = Path(out).expanduser().resolve() if out else paths.prediction_csv(f"{field_label}_{bundle.name}")
    write_text(out_path, predictions_csv(pred))
    log.info("classified %d coordinates in %.1f s: %s", len(pred), time.monotonic() - start, pred.counts())
    return out_path, pred
