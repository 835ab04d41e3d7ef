"""Runner of predict.py: load a trained model and an aligned field, classify sky coordinates or every catalogued
object of the field, write a CSV, ECSV or FITS table."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import BANDS
from ..cube import Cube, read_cube
from ..errors import StargalError
from ..fsio import read_json
from ..model import load_model
from ..paths import DataPaths, FieldId, ModelFiles, objects_for_cube
from ..predict import (
    TTA_MARGIN,
    TTA_MODES,
    Predictions,
    classify,
    output_format,
    predictions_table,
    write_predictions,
)
from ..sdss import frame_relpath
from ..tables import read_table

log = logging.getLogger("stargal")

TTA_DESCRIPTIONS = {
    "off": "none: one pass per patch",
    "all": "mean over the 8 square symmetries of every patch",
    "auto": f"mean over the 8 square symmetries where one pass gives |p_star - THRESH| < {TTA_MARGIN}",
}


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
    """Load model.keras and model.json of a model folder."""
    files = ModelFiles(model_dir)
    meta_path = files.json
    try:
        meta = read_json(meta_path)
    except FileNotFoundError:
        raise StargalError(f"{meta_path}: model description not found") from None
    except ValueError as exc:
        raise StargalError(f"{meta_path}: not valid JSON ({exc})") from None
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
        return p, p.name.removesuffix(".fits").removeprefix("cube-")
    if fid is None:
        raise StargalError("give a field: --cube PATH or --run/--camcol/--field")
    p = paths.cube(fid)
    if not p.exists():
        raise StargalError(f"{p}: aligned cube not found (run 01_alignment.py for field {fid} first)")
    return p, f"{fid.run:06d}-{fid.camcol}-{fid.field:04d}"


def cube_array(cube: Cube, bands: str) -> np.ndarray:
    """The cube's planes in the model's band order, as native float32 in memory."""
    missing = [b for b in bands if b not in cube.bands]
    if missing:
        raise StargalError(f"aligned cube lacks band(s) {''.join(missing)} the model needs")
    order = [cube.band_index(b) for b in bands]
    return np.ascontiguousarray(np.asarray(cube.data[order], dtype=np.float32))


def catalog_objects(cube_path: Path) -> np.ndarray:
    """The catalog objects stage 01 listed for the field of ``cube_path`` (the objects table beside it)."""
    path = objects_for_cube(cube_path)
    if not path.is_file():
        raise StargalError(f"{path}: no objects table for --all (run 01_alignment.py for this field)")
    return read_table(path)


def sky_metadata(paths: DataPaths, cube: Cube) -> dict:
    """FIELD, SKY (simulated or real) and, for the simulated sky, SIMVER (from the download manifest)."""
    h = cube.header
    meta: dict = {}
    if all(k in h for k in ("RERUN", "RUN", "CAMCOL", "FIELD")):
        meta["FIELD"] = f"{h['RERUN']}/{h['RUN']}/{h['CAMCOL']}/{h['FIELD']}"
    simulated = bool(h.get("SIMULAT", False))
    meta["SKY"] = "simulated" if simulated else "real SDSS"
    if simulated and "FIELD" in meta:
        try:
            manifest = read_json(paths.manifest).get("files", {})
        except (OSError, ValueError):
            manifest = {}
        entry = manifest.get(frame_relpath("r", h["RERUN"], h["RUN"], h["CAMCOL"], h["FIELD"]), {})
        version = re.match(r"simulated:v(\d+)", str(entry.get("url", "")))
        if version:
            meta["SIMVER"] = int(version.group(1))
    return meta


def run_predict(
    paths: DataPaths,
    *,
    ra: np.ndarray | None = None,
    dec: np.ndarray | None = None,
    model: str | None = None,
    cube_path: str | None = None,
    fid: FieldId | None = None,
    out: str | None = None,
    bundle: ModelBundle | None = None,
    all_objects: bool = False,
    tta: str = "auto",
) -> tuple[Path, Predictions]:
    """Classify (ra, dec), or with ``all_objects`` every catalogued object of the field, and write the table
    (.csv, .ecsv or .fits by ``out``'s extension; CSV under data/predictions/ by default).

    Returns the output path and the predictions."""
    start = time.monotonic()
    if tta not in TTA_MODES:
        raise StargalError(f"--tta {tta!r}: must be one of {', '.join(TTA_MODES)}")
    if out is not None:
        output_format(out)  # input errors first, before loading TensorFlow
    path, field_label = cube_for(paths, cube_path, fid)
    before, after = {}, {}
    if all_objects:
        objects = catalog_objects(path)
        ra, dec = objects["ra"], objects["dec"]
        before = {"objid": objects["objid"]}
        after = {"r_psfmag": objects["r_psfmag"], "catalog_type": np.where(objects["label"] == 1, "star", "galaxy")}
    if ra is None or dec is None:
        raise StargalError("no coordinates: give --ra/--dec, --csv or --all")
    model_dir = None if bundle is not None else resolve_model_dir(paths, model)
    cube = read_cube(path)
    if bundle is None:
        bundle = load_bundle(model_dir)
    data = cube_array(cube, bundle.bands)
    mode = tta if bundle.meta.get("tta", False) else "off"  # a model evaluated without TTA is used without it
    pred = classify(
        bundle.model,
        data,
        cube.wcs,
        ra,
        dec,
        patch_size=bundle.patch_size,
        edge=bundle.edge,
        threshold=bundle.threshold,
        tta=mode,
    )
    meta = {
        "MODEL": bundle.name,
        "MODELVER": str(bundle.meta.get("version") or bundle.meta.get("stargal_version") or "unknown"),
        "THRESH": bundle.threshold,
        "TTA": TTA_DESCRIPTIONS[mode],
        **sky_metadata(paths, cube),
        "STARGAL": __version__,
    }
    table = predictions_table(pred, meta, before, after)
    suffix = "_all" if all_objects else ""
    out_path = Path(out).expanduser().resolve() if out else paths.prediction_csv(f"{field_label}_{bundle.name}{suffix}")
    write_predictions(out_path, table)
    log.info("classified %d coordinates in %.1f s: %s", len(pred), time.monotonic() - start, pred.counts())
    return out_path, pred
