"""Runner of predict.py: load a trained model and an aligned field, classify sky coordinates or every catalogued
object of the field, write a CSV, ECSV or FITS table."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__, fsio, integrity, priors
from ..config import BANDS
from ..cube import Cube, read_cube
from ..errors import StargalError
from ..fsio import INTEGRITY_KEY, check_seal, read_json, require_writable_destination
from ..geometry import has_sky_axes
from ..model import load_model, patch_shape, takes_psf
from ..paths import PRETRAINED, PRETRAINED_MODEL_DIR, DataPaths, FieldId, ModelFiles, objects_for_cube, psf_map_beside
from ..predict import (
    STATUS_EDGE,
    STATUS_OK,
    STATUS_OUTSIDE,
    TTA_MARGIN,
    TTA_MODES,
    Predictions,
    classify,
    detected_refusals,
    mark_artefacts,
    mark_status,
)
from ..predict_io import check_fits_text, output_format, predictions_table, write_predictions
from ..presence import MIN_SNR
from ..progress import track
from ..psf import PSFMap, measure_psf_map, outside_trained_range, psf_map_of
from ..sdss import frame_relpath
from ..tables import read_table

if TYPE_CHECKING:
    from ..detection import Sources

log = logging.getLogger("stargal")

TTA_DESCRIPTIONS = {
    "off": "none: one pass per patch",
    "all": "mean over the 8 square symmetries of every patch",
    "auto": f"mean over the 8 square symmetries where one pass gives |p_star - THRESH| < {TTA_MARGIN}",
}


ENGINES = ("auto", "onnx", "keras")
ENGINE_HELP = (
    "how the network runs: onnx (ONNX Runtime on the model's sealed model.onnx, 3-4x faster, no TensorFlow), "
    "keras (TensorFlow), or auto (onnx where the model folder has it, else keras)"
)


@dataclass
class ModelBundle:
    model: object  # keras.Model taking raw float32 [n, P, P, 5] patches, or an onnx_engine.OnnxNetwork
    meta: dict  # model.json
    directory: Path
    engine: str = "keras"  # "keras" or "onnx": what ``model`` is

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

    @property
    def takes_psf(self) -> bool:
        return self.model.takes_psf if self.engine == "onnx" else takes_psf(self.model)


def resolve_model_dir(paths: DataPaths, spec: str | None) -> Path:
    """The model folder named by ``spec``: ``pretrained`` (the model shipped in models/), a model name, a folder
    or a file of a model folder (model.keras beside its model.json); None means the latest model trained in the
    data folder, or the pretrained one if none."""
    if spec == PRETRAINED:
        if not ModelFiles(PRETRAINED_MODEL_DIR).keras.is_file():
            raise StargalError(f"{PRETRAINED_MODEL_DIR}: the pretrained model is missing from this copy of stargal")
        return PRETRAINED_MODEL_DIR
    if spec is None:
        try:
            spec = paths.latest_model.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            trained = trained_model_names(paths)
            if trained:  # models there but none named latest: a training stopped before it finished, or LATEST gone
                raise StargalError(
                    f"{paths.latest_model}: missing, yet {paths.models_root} holds {', '.join(trained)} (a training "
                    "stopped before it finished?): pass --model NAME, or --model pretrained for the shipped model"
                ) from None
            log.info("no model trained in %s: using the pretrained model %s", paths.root, PRETRAINED_MODEL_DIR.name)
            return resolve_model_dir(paths, PRETRAINED)
        if not spec:
            raise StargalError(f"{paths.latest_model}: empty; pass --model")
        if not paths.model(spec).keras.is_file():
            raise StargalError(
                f"{paths.latest_model}: names the model {spec!r}, which is not in {paths.models_root}; pass --model, "
                "or train one (03_model.py)"
            )
    candidate = Path(spec).expanduser()
    if candidate.suffix in (".keras", ".onnx", ".json") and candidate.is_file():  # a file of a model's folder
        files = ModelFiles(candidate.parent)
        if candidate.name not in (files.keras.name, files.onnx.name, files.json.name) or not files.json.is_file():
            # the normalisation, threshold and seal are model.json's: a network on its own cannot be run as trained
            raise StargalError(
                f"--model {spec}: a {candidate.suffix} file on its own (not a file of a model folder, beside its "
                "model.json); give a model's name, its folder as 03_model.py writes it, or pretrained"
            )
        return candidate.resolve().parent
    if ModelFiles(candidate).keras.is_file():
        return candidate.resolve()
    if paths.model(spec).keras.is_file():
        return paths.model_dir(spec)
    where = (
        ""
        if Path(spec).expanduser().resolve() == paths.model_dir(spec).resolve()
        else f" nor in {paths.model_dir(spec)}"
    )
    raise StargalError(f"--model {spec}: no model.keras there{where} (a model folder, its name, or pretrained)")


def trained_model_names(paths: DataPaths) -> list[str]:
    """The names of the data folder's model folders that hold a model.keras, sorted."""
    return [name for name in paths.model_names() if paths.model(name).keras.is_file()]


def load_bundle(model_dir: Path, engine: str = "keras") -> ModelBundle:
    """Load a model folder's network and model.json, after checking model.json's seal of the folder. ``engine``
    (ENGINES): "keras" loads model.keras (what training, evaluation and explanations need); "onnx" the sealed
    model.onnx in ONNX Runtime (stargal.onnx_engine), "auto" that where the folder has it, else model.keras."""
    if engine not in ENGINES:
        raise StargalError(f"--engine {engine!r}: must be one of {', '.join(ENGINES)}")
    files = ModelFiles(model_dir)
    meta_path = files.json
    if not meta_path.exists():
        raise StargalError(f"{meta_path}: model description not found")
    meta = integrity.require_model(model_dir)
    if "patch_size" not in meta:
        raise StargalError(f"{meta_path}: no patch_size")
    _check_description(meta, meta_path)
    network = _onnx_network(files, meta, required=engine == "onnx") if engine != "keras" else None
    if network is not None:
        if network.patch_size != int(meta["patch_size"]):
            raise StargalError(
                f"{files.onnx}: takes {network.patch_size}-pixel patches, model.json says {meta['patch_size']}"
            )
        bundle = ModelBundle(network, meta, model_dir, "onnx")
        _check_bands(bundle, network.bands, files.onnx)
        return bundle
    model = load_model(files.keras)
    bundle = ModelBundle(model, meta, model_dir)
    shape = patch_shape(model)
    if shape and shape[0] is not None and shape[0] != bundle.patch_size:
        raise StargalError(f"{meta_path}: patch_size {bundle.patch_size} but the model takes {shape[0]} pixels")
    if shape and shape[-1] is not None:
        _check_bands(bundle, int(shape[-1]), files.keras)
    return bundle


def _check_description(meta: dict, meta_path: Path) -> None:
    """Refuse a model.json whose threshold or bands cannot be what training wrote (sealed, yet hand-made or
    resealed): a threshold of 1.5 called every source galaxy with exit 0, a missing one fell back to 0.5."""
    threshold = meta.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise StargalError(f"{meta_path}: threshold {threshold!r}: not a probability strictly between 0 and 1")
    bands = meta.get("bands", "".join(BANDS))
    if not isinstance(bands, str) or not bands or len(set(bands)) != len(bands) or not set(bands) <= set(BANDS):
        raise StargalError(f"{meta_path}: bands {bands!r}: not distinct letters of {''.join(BANDS)}")


def _check_bands(bundle: ModelBundle, network_bands: int, network_path: Path) -> None:
    """Refuse a model.json naming other bands than its network takes: patches would be cut in the wrong order."""
    if network_bands != len(bundle.bands):
        raise StargalError(
            f"{network_path}: takes {network_bands} bands, {ModelFiles(bundle.directory).json.name} names "
            f"{len(bundle.bands)} ({bundle.bands})"
        )


def _onnx_network(files: ModelFiles, meta: dict, required: bool):
    """The folder's sealed model.onnx in ONNX Runtime; None (Keras is used) when there is none or ONNX Runtime is
    not installed, unless ``required``."""
    from .. import onnx_engine

    record = meta.get("onnx")
    sealed = files.onnx.name in meta.get(INTEGRITY_KEY, {}).get("files", {})
    if not (sealed and isinstance(record, dict) and "normalisation" in record):
        if required:
            raise StargalError(
                f"{files.folder}: no model.onnx (a model trained by an earlier stargal): add it with "
                f"03_model.py --export-onnx {files.folder}, or use --engine keras"
            )
        return None
    if not onnx_engine.available():
        if required:
            raise StargalError("--engine onnx: ONNX Runtime is not installed (pip install -r code/requirements.txt)")
        log.info("ONNX Runtime is not installed: running %s with Keras", files.folder.name)
        return None
    try:
        return onnx_engine.OnnxNetwork(files.onnx, record["normalisation"])
    except StargalError as exc:  # sealed, so what training wrote, yet this ONNX Runtime cannot run it
        if required:
            raise
        log.warning("%s; running the model with Keras", exc)
        return None


def cube_for(paths: DataPaths, cube_path: str | None, fid: FieldId | None) -> tuple[Path, str]:
    """The cube file and a short label of the field (for the default output name)."""
    if cube_path:
        p = Path(cube_path).expanduser().resolve()
        integrity.require_cube_file(p)
        return p, p.name.removesuffix(".fits").removeprefix("cube-")
    if fid is None:
        raise StargalError("give a field: --cube PATH or --run/--camcol/--field")
    p = paths.cube(fid)
    try:
        integrity.require_field(paths, fid)  # the field's cube exists and is intact
    except StargalError as exc:
        holder = fsio.lock_holder(paths.lock_file)  # predict does not wait for a stage: it may be writing it now
        if holder is None:
            raise
        raise StargalError(f"{exc}; {paths.root} is in use by {holder}: try again once it has finished") from None
    return p, f"{fid.run:06d}-{fid.camcol}-{fid.field:04d}"


# cube-RUN6-CAMCOL-FIELD4.fits, as stage 01 names a field's cube
_CUBE_NAME = re.compile(r"cube-(\d{6})-(\d)-(\d{4})\.fits")


def check_cube_field(path: Path, header) -> None:
    """Refuse a cube whose file name claims another field than its header's RUN/CAMCOL/FIELD (stage 01 writes
    both): the name gives the default output's name, so a renamed copy would be published as another field's."""
    named = _CUBE_NAME.fullmatch(path.name)
    if named is None or not all(k in header for k in ("RUN", "CAMCOL", "FIELD")):
        return
    said = tuple(int(header[k]) for k in ("RUN", "CAMCOL", "FIELD"))
    if tuple(map(int, named.groups())) != said:
        raise StargalError(
            f"{path}: its name says field {'-'.join(named.groups())} but its header holds run {said[0]} camcol "
            f"{said[1]} field {said[2]} (RUN/CAMCOL/FIELD): a renamed copy of another field's cube"
        )


def check_out_path(out: Path, paths: DataPaths, inputs: list[Path], model_dir: Path) -> None:
    """Refuse an --out that would overwrite what this run reads (the cube and the files beside it, the --csv, the
    model) or any file of the data folder outside predictions/ (the default output's folder): the table is
    written over it atomically, so the input would be gone without a word."""
    for source in inputs:
        same = out.exists() and source.exists() and out.samefile(source)  # hard links, too
        if same or out == source.resolve():
            raise StargalError(f"--out {out}: is this run's own input {source}; name another file")
    if out.is_relative_to(model_dir.resolve()):
        raise StargalError(f"--out {out}: lies in the model folder {model_dir}; name a file elsewhere")
    stake = paths.at_stake(out)
    if stake is None:
        return
    root, own = stake.root.expanduser().resolve(), stake.predictions_dir.expanduser().resolve()
    if not out.is_relative_to(own):
        raise StargalError(
            f"--out {out}: lies in the data folder {root}, whose files the stages write and seal; name a file in "
            f"{own} or outside the data folder"
        )


def warn_hours_as_degrees(pred: Predictions, wcs, shape: tuple[int, int], field_label: str) -> None:
    """Warn when every position fell outside the field but would lie in it with RA read as hours (a table's RA
    in hours stored as bare numbers, which are taken as degrees): the statuses are right, the input likely not."""
    from ..geometry import inside_frame, sky_to_pixel

    if not len(pred) or not np.all(pred.status == STATUS_OUTSIDE) or np.nanmax(pred.ra) > 24:
        return
    x, y = sky_to_pixel(wcs, pred.ra * 15.0, pred.dec)
    inside = int(inside_frame(x, y, shape).sum())
    if inside:
        log.warning(
            "all %d positions lie outside field %s, but %d would lie in it were RA in hours, not degrees: if the RA "
            "values are hours, give them as 12:34:56.7 or multiply them by 15",
            len(pred),
            field_label,
            inside,
        )


def cube_array(cube: Cube, bands: str) -> np.ndarray:
    """The cube's planes in the model's band order, as native float32 in memory."""
    missing = [b for b in bands if b not in cube.bands]
    if missing:
        raise StargalError(f"aligned cube lacks band(s) {''.join(missing)} the model needs")
    out = np.empty((len(bands), *cube.data.shape[1:]), np.float32)
    for plane, band in enumerate(bands):  # a list index of the big-endian memory map: 0.05-1.7 s, plane by plane 0.05 s
        out[plane] = cube.data[cube.band_index(band)]
    return out


def load_psf_map(cube_path: Path, data: np.ndarray, bands: str, sources: Sources | None = None) -> PSFMap:
    """The PSF map stage 01 wrote beside the cube, when the field record beside both seals them together; else one
    measured now (a cube copied without its record: a map that is merely newer may be another cube's), on
    ``sources`` when already measured."""
    sidecar = psf_map_beside(cube_path)
    if check_seal(DataPaths.record_beside_cube(cube_path), [cube_path, sidecar]).ok:
        try:
            pmap = PSFMap.from_dict(read_json(sidecar), str(sidecar))
            if pmap.bands == bands:
                return pmap
        except ValueError:
            pass  # unreadable: measured again below
    log.info("%s: measuring the PSF on the field's stars", cube_path.name)
    try:
        return measure_psf_map(data, bands) if sources is None else psf_map_of(sources, data.shape[1:], bands)
    except StargalError as exc:
        raise StargalError(f"{cube_path}: {exc}") from None


def check_foreign_cube(cube_path: Path, data: np.ndarray, bands: str, subtracted) -> Sources:
    """For a cube without the field record stage 01 writes beside it (made elsewhere, or copied on its own): check
    that its bands sit on its stars, since a stack of unaligned frames reads as one with every source smeared and
    would be classified without a word; return its sources. ``subtracted``: the cube's
    ``detection.subtract_backgrounds``."""
    from .. import detection

    off = detection.misaligned_bands(data, bands, subtracted)
    if off:
        worst = max(off, key=off.get)
        raise StargalError(
            f"{cube_path}: not an aligned cube: the {worst} band's sources sit {off[worst]:.0f} px from the "
            f"{detection.REFERENCE_BAND} band's (01_alignment.py aligns a field's frames onto one grid)"
        )
    return detection.measure_sources(data, bands, subtracted=subtracted)


def psf_range_note(bundle: ModelBundle, psf_map: PSFMap, where: str) -> str:
    """Whether the field's PSF (at the frame centre) is one the model was trained on: "inside", "outside: ..."
    (also a warning: its classes there are an extrapolation) or "not recorded" (a model from before stargal
    recorded its training PSF sizes)."""
    trained = bundle.meta.get("psf_range")
    if trained is None:
        return "not recorded"
    try:
        outside = outside_trained_range(psf_map.centre(), trained, bundle.bands)
    except ValueError as exc:
        raise StargalError(f"{bundle.directory / 'model.json'}: {exc}") from None
    if not outside:
        return "inside"
    log.warning(
        "%s: PSF outside the sizes %s was trained on (%s): its classes here are an extrapolation that its measured "
        "scores do not cover",
        where,
        bundle.name,
        "; ".join(outside),
    )
    return "outside: " + "; ".join(outside)


def catalog_objects(cube_path: Path) -> np.ndarray:
    """The catalog objects stage 01 listed for the field of ``cube_path`` (the objects table beside it), only when
    the field record beside both seals them together: --all classifies every object without the presence test,
    so a table merely lying beside the cube (another field's, or a simulated one's of the same name) would be
    classified at positions that hold no source, with agreement statistics against the wrong catalog."""
    if not cube_path.is_file():  # the cube itself first: its table's absence would send the user the wrong way
        raise StargalError(f"{cube_path}: aligned cube not found (run 01_alignment.py first)")
    path = objects_for_cube(cube_path)
    if not path.is_file():
        raise StargalError(
            f"{path}: no objects table for --all: stage 01 lists a field's catalog objects only when its run/camcol's "
            "sweeps are there (00_download.py without --frames-only fetches them, then run 01_alignment.py again); "
            "--detect classifies the sources found in the field without a catalog"
        )
    check = check_seal(DataPaths.record_beside_cube(cube_path), [cube_path, path])
    if not check.ok:
        raise StargalError(
            f"{path}: not sealed with the cube by a field record ({check.describe(1)}): --all classifies, without "
            "looking for a source, only the objects stage 01 listed for that very cube; --csv classifies a table's "
            "positions where the frame shows a source, --detect the sources found in the field"
        )
    return read_table(path)


def r_photometry(sources: Sources, image: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux, half-light radius, saturated) of every source in the r band ``image`` (background-subtracted): the
    PSF-weighted flux, aperture-corrected on the field's stars, and the radius, both over each source's local sky
    level (``detection.local_sky_levels``); saturated marks the sources whose core saturated
    (``saturation.saturated``), whose flux is then a lower limit. The radius is NaN where half the light lies
    beyond ``detection.SIZE_RADIUS``: sep returns that radius itself there, a bound served as a measurement (6,006
    of the Galactic-plane field 5405-6-99's 15,233 sources, neighbours' light in their apertures; 5-31 a field at
    high latitude)."""
    from .. import detection, saturation

    x, y = sources.x, sources.y
    level = detection.local_sky_levels(image, x, y)
    sigma = sources.stellar_r50[r] * detection.GAUSS_R50_TO_SIGMA
    flux = detection.local_gaussian_fluxes(image, x, y, sigma, level) / sources.flux_scale[r]
    r50 = detection.half_light_radii_over(image, x, y, level)
    r50 = np.where(r50 < detection.SIZE_RADIUS, r50, np.nan)
    return flux, r50, saturation.saturated(image, x, y, level, flux, sigma)


def detected_sources(
    cube: Cube, data: np.ndarray, bands: str, subtracted
) -> tuple[np.ndarray, np.ndarray, dict, dict, Sources]:
    """(ra, dec, columns before, columns after, sources) of every source sep finds in the cube, with its r
    magnitude and r-band half-light radius (``r_photometry``), whether its r-band core saturated (its r_mag then
    empty: the core's flux is only a lower limit), and whether the deblending split it from a blend; the sources
    (``detection.Sources``) give ``stargal.predict.detected_refusals`` the ones not to classify.
    ``subtracted``: the cube's ``detection.subtract_backgrounds``."""
    from .. import detection

    sources = detection.measure_sources(data, bands, faint=True, subtracted=subtracted)
    ra, dec = cube.wcs.celestial.wcs_pix2world(sources.x, sources.y, 0)
    flux, r50, saturated = r_photometry(sources, subtracted[0][bands.index("r")], bands.index("r"))
    r_mag = np.where(saturated, np.nan, np.round(detection.flux_to_mag(flux), 3))
    before = {"source": np.arange(1, len(sources) + 1)}
    after = {"r_mag": r_mag, "saturated": saturated, "r50_px": np.round(r50, 3), "deblended": sources.deblended}
    return np.asarray(ra), np.asarray(dec), before, after, sources


def sky_metadata(cube_path: Path, cube: Cube) -> dict:
    """FIELD, SKY (simulated or real) and, for the simulated sky, SIMVER (from the download manifest of the data
    folder whose stage 01 wrote the cube: not --data-dir's, which may hold another sky; none for a cube elsewhere)."""
    h = cube.header
    meta: dict = {}
    if all(k in h for k in ("RERUN", "RUN", "CAMCOL", "FIELD")):
        meta["FIELD"] = f"{h['RERUN']}/{h['RUN']}/{h['CAMCOL']}/{h['FIELD']}"
    simulated = bool(h.get("SIMULAT", False))
    meta["SKY"] = "simulated" if simulated else "real SDSS"
    if simulated and "FIELD" in meta:
        fid = FieldId(int(h["RERUN"]), int(h["RUN"]), int(h["CAMCOL"]), int(h["FIELD"]))
        cube_path = Path(cube_path).resolve()
        home = DataPaths(cube_path.parents[4]) if len(cube_path.parents) > 4 else None
        try:
            owned = home is not None and home.cube(fid).resolve() == cube_path
            manifest = read_json(home.manifest).get("files", {}) if owned else {}
        except (OSError, ValueError):
            manifest = {}
        entry = manifest.get(frame_relpath("r", h["RERUN"], h["RUN"], h["CAMCOL"], h["FIELD"]), {})
        version = re.match(r"simulated:v(\d+)", str(entry.get("url", "")))
        if version:
            meta["SIMVER"] = int(version.group(1))
    return meta


@dataclass(frozen=True)
class PredictionRequest:
    """What decides a prediction table's content, beyond its field and model's names (for its default name)."""

    cube: Path
    model_dir: Path
    all_objects: bool
    detect: bool
    ra: np.ndarray | None
    dec: np.ndarray | None
    table: Path | None  # the --csv file
    threshold: float | None
    tta: str
    min_snr: float
    engine: str
    prior: str = "training"


def default_output_name(field_label: str, model_name: str, request: PredictionRequest) -> str:
    """FIELD_MODEL_WHAT-DIGEST[_OPTIONS]: one name per request, so that another request never replaces an earlier
    table. WHAT is ``all``, ``detected``, or the positions' source (the --csv file's stem, else ``positions``);
    DIGEST (8 hex) is of the cube's and model's folders, the positions, the --csv file (path and content) and the
    engine; OPTIONS name the settings that differ from the defaults."""
    digest = hashlib.sha256()
    table = Path(request.table).expanduser().resolve() if request.table is not None else None
    named = [Path(request.cube).expanduser().resolve(), Path(request.model_dir).expanduser().resolve(), table]
    digest.update(json.dumps([str(p) for p in named] + [request.engine]).encode())
    if table is not None:
        digest.update(fsio.sha256_file(table).encode())
    for values in (request.ra, request.dec):
        if values is not None:
            digest.update(np.ascontiguousarray(values, np.float64).tobytes())
    if request.all_objects or request.detect:
        what = "all" if request.all_objects else "detected"
    else:
        stem = re.sub(r"(\.fits)?\.[^.]*$", "", table.name) if table is not None else "positions"
        what = re.sub(r"[^A-Za-z0-9.+-]+", "-", stem).strip("-") or "table"
    options = [f"threshold{request.threshold!r}"] if request.threshold is not None else []
    options += [f"tta-{request.tta}"] if request.tta != "auto" else []
    positions = not (request.all_objects or request.detect)
    options += [f"snr{request.min_snr!r}"] if positions and request.min_snr != MIN_SNR else []
    options += [f"prior-{request.prior}"] if request.prior != "training" else []
    return "_".join([field_label, model_name, f"{what}-{digest.hexdigest()[:8]}", *options])


def check_options(
    threshold: float | None, tta: str = "auto", min_snr: float = MIN_SNR, prior: str = "training"
) -> None:
    """StargalError for a --threshold, --tta, --min-snr or --prior value run_predict cannot use (predict.py checks
    them before reading a --csv table, which for 200,000 rows took a minute before a typo's error)."""
    prior_share(prior)
    if threshold is not None and not (np.isfinite(threshold) and 0 < threshold < 1):
        raise StargalError(f"--threshold {threshold}: must be a probability strictly between 0 and 1")
    if tta not in TTA_MODES:
        raise StargalError(f"--tta {tta!r}: must be one of {', '.join(TTA_MODES)}")
    if not (np.isfinite(min_snr) and min_snr >= 0):
        raise StargalError(f"--min-snr {min_snr}: must be a number >= 0 (0 classifies every position)")


PRIOR_CHOICES = ("training", "field")


def prior_share(prior: str) -> str | float:
    """--prior as run_predict takes it: "training", "field" or a share of stars strictly between 0 and 1."""
    if prior in PRIOR_CHOICES:
        return prior
    try:
        share = float(prior)
    except (TypeError, ValueError):
        share = float("nan")
    if not (np.isfinite(share) and 0 < share < 1):
        raise StargalError(f"--prior {prior}: must be training, field or a share of stars strictly between 0 and 1")
    return share


def training_share(bundle: ModelBundle) -> float:
    """The share of stars among the model's training patches (model.json), which its p_star assumes."""
    share = bundle.meta.get("dataset_counts", {}).get("train", {}).get("star_fraction")
    if not isinstance(share, int | float) or not 0 < share < 1:
        raise StargalError(
            f"--prior: {bundle.directory} records no share of stars of its training set (model.json "
            "dataset_counts), so its threshold cannot be moved to another share; leave --prior at training"
        )
    return float(share)


def field_share(
    bundle: ModelBundle, cube: Cube, data: np.ndarray, psf_map, subtracted, training: float, detected=None
) -> tuple[float, int]:
    """(the field's share of stars, over how many sources): ``priors.field_prior`` of the single-pass p_star of
    the sources --detect classifies in the field. ``detected``: (sources, artefact, edge) where --detect has
    found and judged them already."""
    from .. import detection

    if detected is None:
        sources = detection.measure_sources(data, bundle.bands, faint=True, subtracted=subtracted)
        refused = detected_refusals(
            data, sources.x, sources.y, sources.flux, bundle.bands, psf_map, MIN_SNR, subtracted
        )
        detected = (sources, *refused)
    sources, artefact, edge = detected
    ra, dec = cube.wcs.celestial.wcs_pix2world(sources.x, sources.y, 0)
    pred = classify(
        bundle.model, data, cube.wcs, ra, dec, patch_size=bundle.patch_size, edge=bundle.edge,
        threshold=bundle.threshold, tta="off", psf_map=psf_map, bands=bundle.bands,
    )  # fmt: skip
    served = (pred.status == STATUS_OK) & ~artefact & ~edge
    return priors.field_prior(pred.p_star[served], training), int(served.sum())


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
    detect: bool = False,
    tta: str = "auto",
    engine: str = "auto",
    min_snr: float = MIN_SNR,
    threshold: float | None = None,
    prior: str = "training",
    inputs: tuple[str | os.PathLike, ...] = (),
    carried: dict[str, np.ndarray] | None = None,
) -> tuple[Path, Predictions]:
    """Classify (ra, dec), or with ``all_objects`` every catalogued object of the field, or with ``detect``
    every source found in it (``stargal.detection``: fields without a catalog), and write the table (.csv,
    .ecsv or .fits by ``out``'s extension; CSV under data/predictions/ by default).

    ``threshold``: call star where p_star reaches it, instead of the model's own (chosen on its validation data).
    ``prior``: the share of stars that threshold holds at (``prior_share``): the model's training share, the
    field's own estimated over its detected sources (``field_share``), or a given one; p_star stays the network's,
    the threshold moves (``priors.threshold_at``).
    ``inputs``: other files the run has read (the --csv), which ``out`` must not name (``check_out_path``).
    ``carried``: columns of the input (a --csv's names, magnitudes, ...), one value per (ra, dec), written first.

    Returns the output path and the predictions (with ``all_objects`` they also hold each object's catalog
    class and r magnitude, for ``catalog_agreement``)."""
    start = time.monotonic()
    check_options(threshold, tta, min_snr, prior)
    if out is not None:
        output_format(out)  # input errors first, before loading TensorFlow
        check_fits_text(out, carried or {})
    path, field_label = cube_for(paths, cube_path, fid)
    model_dir = bundle.directory if bundle is not None else resolve_model_dir(paths, model)
    out_path = Path(out).expanduser().resolve() if out else None
    if out_path is not None:
        beside = [DataPaths.record_beside_cube(path), psf_map_beside(path), objects_for_cube(path)]
        check_out_path(out_path, paths, [path, *beside, *map(Path, inputs)], model_dir)
    before, after = dict(carried or {}), {}
    if carried and (ra is None or any(len(v) != len(ra) for v in carried.values())):
        raise StargalError("carried input columns must hold one value per coordinate")
    if all_objects:
        objects = catalog_objects(path)
        ra, dec = objects["ra"], objects["dec"]
        before = {"objid": objects["objid"]}
        after = {"r_psfmag": objects["r_psfmag"], "catalog_type": np.where(objects["label"] == 1, "star", "galaxy")}
    if ra is None and not detect:
        raise StargalError("no coordinates: give --ra/--dec, --csv, --all or --detect")
    cube = read_cube(path)
    check_cube_field(path, cube.header)
    if not has_sky_axes(cube.wcs):  # without CTYPEs astropy reads a linear WCS: every position at a wrong pixel
        raise StargalError(f"{path}: no celestial (RA---TAN/DEC--TAN) WCS in its header")
    if bundle is None:
        bundle = load_bundle(model_dir, engine)
    if out_path is None:  # the default output's folder checked before the work, as --out's is
        request = PredictionRequest(
            path, bundle.directory, all_objects, detect, ra, dec, Path(inputs[0]) if inputs else None, threshold, tta,
            min_snr, bundle.engine, prior,
        )  # fmt: skip
        out_path = paths.prediction_csv(default_output_name(field_label, bundle.name, request))
        try:
            require_writable_destination(out_path, "--out")
        except StargalError:
            raise StargalError(
                f"{out_path} (the default output, no --out given): its folder cannot be written (read-only or no "
                "permission); name a file elsewhere with --out"
            ) from None
    data = cube_array(cube, bundle.bands)
    artefact = edge = found = None
    # a cube without stage 01's record is checked first; it and the detection share the backgrounds
    foreign = not DataPaths.record_beside_cube(path).exists()
    subtracted = None
    if foreign or detect or prior == "field":
        from ..detection import subtract_backgrounds

        subtracted = subtract_backgrounds(data)
    sources = check_foreign_cube(path, data, bundle.bands, subtracted) if foreign else None
    if detect:
        ra, dec, before, after, found = detected_sources(cube, data, bundle.bands, subtracted)
    psf_map = load_psf_map(path, data, bundle.bands, sources) if bundle.takes_psf else None
    if found is not None:  # cosmic rays, noisy columns' noise peaks, sources the border cuts: as for positions
        artefact, edge = detected_refusals(
            data, found.x, found.y, found.flux, bundle.bands, psf_map, MIN_SNR, subtracted
        )
    psf_note = psf_range_note(bundle, psf_map, field_label) if psf_map is not None else None
    mode = tta if bundle.meta.get("tta", False) else "off"  # a model evaluated without TTA is used without it
    cut = bundle.threshold if threshold is None else float(threshold)
    prior_note = None
    if prior != "training":
        training = training_share(bundle)
        share = prior_share(prior)
        if share == "field":
            refused = None if found is None else (found, artefact, edge)
            share, count = field_share(bundle, cube, data, psf_map, subtracted, training, refused)
            where = f"the field's, over its {count} detected sources"
        else:
            where = "given"
        moved = priors.threshold_at(cut, share, training)
        prior_note = f"{share:.3f} stars ({where}; training {training:.3f}): THRESH is {cut:.4g} moved there"
        log.info(
            "share of stars %.3f (%s; the model's training sky: %.3f): star where p_star >= %.4g, the threshold %.4g "
            "moved there", share, where, training, moved, cut,
        )  # fmt: skip
        cut = moved
    pred = classify(
        bundle.model,
        data,
        cube.wcs,
        ra,
        dec,
        patch_size=bundle.patch_size,
        edge=bundle.edge,
        threshold=cut,
        tta=mode,
        psf_map=psf_map,
        min_snr=0.0 if all_objects or detect else min_snr,  # catalogued and detected positions hold a source
        bands=bundle.bands,
        track=track,
    )
    if artefact is not None:
        mark_artefacts(pred, artefact)
    if edge is not None:  # a source the frame's border cuts: a partial profile, its class no measurement
        mark_status(pred, edge, STATUS_EDGE)
    if not (all_objects or detect):
        warn_hours_as_degrees(pred, cube.wcs, cube.shape, field_label)
    if detect:
        pred.saturated = np.asarray(after["saturated"], bool)
    if all_objects:
        pred.catalog_star, pred.catalog_r = objects["label"] == 1, np.asarray(objects["r_psfmag"], np.float64)
    meta = {
        "MODEL": bundle.name,
        "MODELVER": str(bundle.meta.get("version") or bundle.meta.get("stargal_version") or "unknown"),
        "THRESH": cut,
        # the one the user replaced, or moved to another share of stars
        **({"MODELTHR": bundle.threshold} if threshold is not None or prior_note else {}),
        **({"PRIOR": prior_note} if prior_note else {}),
        "TTA": TTA_DESCRIPTIONS[mode],
        **sky_metadata(path, cube),
        **({"PSFRANGE": psf_note} if psf_note else {}),
        "STARGAL": __version__,
    }
    table = predictions_table(pred, meta, before, after)
    write_predictions(out_path, table)
    # the counts per status are the summary line's; this line adds the time and the engine
    log.info("classified %d coordinates in %.1f s (%s engine)", len(pred), time.monotonic() - start, bundle.engine)
    return out_path, pred
