"""Every path under the data folder: the one module that names the files the stages exchange.

Other modules take their paths from here. The one freedom they keep: a stage chooses the names of the
figures, tables and summaries inside its own report folder (``DataPaths.reports(STAGE, ...)``), which no
other stage reads except the PDF report, which lists whatever it finds there.

Layout (``data/`` by default, ``--data-dir`` elsewhere)::

    sas/photoObj/frames/RERUN/RUN/CAMCOL/frame-{ugriz,irg}-RUN6-C-FIELD4.{fits.bz2,jpg}   stage 00
    sas/sweeps/dr13_final/RERUN/calibObj-RUN6-C-{gal,star}.fits.gz                       stage 00
    sas/manifest.json                   source URL, size and sha256 of each fetched file  stage 00
    simulation/RERUN-RUN-CAMCOL/truth.csv  true positions of simulated objects            stage 00
    simulation/RERUN-RUN-CAMCOL/measured-FIELD4.npy  catalog fluxes measured on a frame   stage 00
    aligned/RERUN/RUN/CAMCOL/cube-RUN6-C-FIELD4.fits      [5, 1489, 2048] aligned bands   stage 01
    aligned/RERUN/RUN/CAMCOL/objects-RUN6-C-FIELD4.csv    catalog objects in the field    stage 01
    aligned/RERUN/RUN/CAMCOL/field-RUN6-C-FIELD4.json     the field's record: inputs, checksums   stage 01
    tensors/RERUN-RUN-CAMCOL/{images,gal_coords,star_coords}.npy, tensors.json            stage 01
    datasets/NAME/{train,val,test}_{x,y}.npy, {split}_objects.csv, dataset.json           stage 02
    datasets/LATEST, models/LATEST      name of the last prepared dataset / trained model
    augmented/NAME/train_{x,y}.npy, augmented.json  fixed augmented training set (--materialize) stage 04
    models/NAME/model.keras, model.json, metrics.json, history.csv                        stage 03
    tuning/NAME/study.db, trials.lock, trials.csv, trials.md, best.json, results.json     tune.py
    predictions/                        predict.py outputs
    reports/STAGE/...                   each stage's plots, tables and summaries
    reports/pipeline/stages.json, reports/report.pdf    run_scripts.sh's timings; make_report.py
    reports/report.json                 what the report was built from (a rerun skips a current report)
    .lock                               held by the run that writes the folder (one at a time)
    .publish.lock                       held by that run while it renames outputs into place; predict's, shared

Multi-file outputs are sealed (``stargal.fsio.OutputSet``): their record, written last, lists every file with
its size and sha256: ``field-*.json`` (cube, objects table), ``tensors.json``, ``dataset.json``,
``augmented.json``, ``model.json`` (model.keras, metrics.json, history.csv), a tuning study's ``results.json``
(trials.csv, trials.md, best.json; not the live study.db); ``sas/manifest.json`` lists the
downloaded files. ``stargal.integrity`` checks them all (``run_scripts.sh --verify``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import sdss

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
# the model shipped with the code (trained on the simulated sky only; models/README.md is its card)
PRETRAINED = "pretrained"
PRETRAINED_MODEL_DIR = PROJECT_ROOT / "models" / "stargal-pretrained"
# real SDSS files beside the project (a folder of frames and sweeps; not part of the project)
DEFAULT_SAMPLE_DIR = Path(os.environ.get("STARGAL_SAMPLE_DIR", PROJECT_ROOT.parent / "shared" / "sdss-sample"))

LATEST = "LATEST"  # the pointer file beside the datasets and models: no folder may take its name
_FOLDER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_folder_name(name: str, option: str) -> str:
    """``name`` if it is a safe name for a dataset or model folder (no path, not the LATEST pointer's), else
    StargalError naming ``option``."""
    from .errors import StargalError

    if not _FOLDER_NAME_RE.match(name) or name in (".", "..", LATEST):
        raise StargalError(
            f"{option} {name!r}: use letters, digits, '.', '_' and '-' (at most 100 characters, not {LATEST})"
        )
    return name


class FieldId(NamedTuple):
    """One SDSS field: rerun, run, camera column, field number."""

    rerun: int
    run: int
    camcol: int
    field: int

    def __str__(self) -> str:
        return f"{self.rerun}/{self.run}/{self.camcol}/{self.field}"


def objects_for_cube(cube: str | os.PathLike) -> Path:
    """The objects table stage 01 writes beside an aligned cube (``cube-X.fits`` -> ``objects-X.csv``)."""
    cube = Path(cube)
    return cube.with_name("objects-" + cube.name.removeprefix("cube-").removesuffix(".fits") + ".csv")


@dataclass(frozen=True)
class ModelFiles:
    """The files of one trained model's folder: ``models/NAME`` or any folder a ``--model`` option names."""

    folder: Path

    @property
    def keras(self) -> Path:
        return self.folder / "model.keras"

    @property
    def json(self) -> Path:
        """model.json: architecture, normalisation, threshold, ...; written last, it marks a complete model."""
        return self.folder / "model.json"

    @property
    def onnx(self) -> Path:
        """The network after its normalisation, for ONNX Runtime (stargal.onnx_engine); sealed by model.json."""
        return self.folder / "model.onnx"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def history(self) -> Path:
        return self.folder / "history.csv"


def psf_map_beside(cube: Path) -> Path:
    """Where the PSF map of the cube file ``cube`` lives: ``psf-NAME.json`` beside ``cube-NAME.fits``."""
    return cube.with_name("psf-" + cube.name.removeprefix("cube-").removesuffix(".fits") + ".json")


@dataclass(frozen=True)
class DataPaths:
    """Paths of every file the pipeline reads or writes under one data folder."""

    root: Path = DEFAULT_DATA_DIR

    @classmethod
    def at(cls, root: str | os.PathLike | None) -> DataPaths:
        return cls(Path(root).expanduser().resolve() if root else DEFAULT_DATA_DIR)

    @classmethod
    def enclosing(cls, path: str | os.PathLike) -> DataPaths | None:
        """The data folder ``path`` lies in (the nearest folder above it that a stage has run on: the lock file and
        a stage's folder), else None: an output named there must not overwrite that folder's sealed files."""
        for parent in Path(path).expanduser().resolve().parents:
            paths = cls(parent)
            stage_folders = (paths.sas, paths.aligned_root, paths.datasets_root, paths.models_root, paths.real_fields.root,
                             paths.reports())  # fmt: skip
            if paths.lock_file.is_file() and any(folder.is_dir() for folder in stage_folders):
                return paths
        return None

    def at_stake(self, out: str | os.PathLike) -> DataPaths | None:
        """The data folder whose sealed files an output ``out`` would lie among: this one when ``out`` lies in it,
        else the one around it (``enclosing``: another data folder is as much at stake), else None."""
        out = Path(out).expanduser().resolve()
        return self if out.is_relative_to(self.root.expanduser().resolve()) else DataPaths.enclosing(out)

    # stage 00: a local mirror of the Science Archive Server layout
    @property
    def sas(self) -> Path:
        return self.root / "sas"

    def sas_file(self, relpath: str) -> Path:
        return self.sas / relpath

    def frames_dir(self, rerun: int, run: int, camcol: int) -> Path:
        """The folder of a run/camcol's frames and irg jpegs."""
        return self.sas / sdss.frames_dir_relpath(rerun, run, camcol)

    def frame(self, fid: FieldId, band: str) -> Path:
        return self.sas / sdss.frame_relpath(band, fid.rerun, fid.run, fid.camcol, fid.field)

    def irg_jpeg(self, fid: FieldId) -> Path:
        return self.sas / sdss.irg_relpath(fid.rerun, fid.run, fid.camcol, fid.field)

    def catalog(self, rerun: int, run: int, camcol: int, kind: str) -> Path:
        return self.sas / sdss.catalog_relpath(rerun, run, camcol, kind)

    @property
    def manifest(self) -> Path:
        return self.sas / "manifest.json"

    def _sim_dir(self, rerun: int, run: int, camcol: int) -> Path:
        return self.root / "simulation" / f"{rerun}-{run}-{camcol}"

    def sim_truth(self, rerun: int, run: int, camcol: int) -> Path:
        return self._sim_dir(rerun, run, camcol) / "truth.csv"

    def sim_measurements(self, fid: FieldId) -> Path:
        return self._sim_dir(fid.rerun, fid.run, fid.camcol) / f"measured-{fid.field:04d}.npy"

    def simulated_fields(self) -> dict[tuple[int, int, int], list[int]]:
        """(rerun, run, camcol) of every simulation stage 00 drew -> the fields whose measurements it holds."""
        found: dict[tuple[int, int, int], list[int]] = {}
        root = self.root / "simulation"
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            if (match := re.fullmatch(r"(\d+)-(\d+)-(\d+)", folder.name)) and folder.is_dir():
                measured = (re.fullmatch(r"measured-(\d{4})\.npy", f.name) for f in folder.iterdir())
                found[tuple(map(int, match.groups()))] = sorted(int(m[1]) for m in measured if m)
        return found

    # stage 01
    def _aligned_dir(self, fid: FieldId) -> Path:
        return self.root / "aligned" / str(fid.rerun) / str(fid.run) / str(fid.camcol)

    def cube(self, fid: FieldId) -> Path:
        return self._aligned_dir(fid) / f"cube-{fid.run:06d}-{fid.camcol}-{fid.field:04d}.fits"

    def psf_map(self, fid: FieldId) -> Path:
        """The PSF map of a cube (stellar half-light radius per band across the frame, stargal.psf)."""
        return psf_map_beside(self.cube(fid))

    def objects(self, fid: FieldId) -> Path:
        return self._aligned_dir(fid) / f"objects-{fid.run:06d}-{fid.camcol}-{fid.field:04d}.csv"

    def field_record(self, fid: FieldId) -> Path:
        """The record sealing a field's cube and objects table (written last, with their sizes and sha256)."""
        return self._aligned_dir(fid) / f"field-{fid.run:06d}-{fid.camcol}-{fid.field:04d}.json"

    @staticmethod
    def record_beside_cube(cube: str | os.PathLike) -> Path:
        """The field record that belongs to a cube file named ``cube-RUN6-C-FIELD4.fits`` (same folder)."""
        cube = Path(cube)
        return cube.with_name("field-" + cube.name.removeprefix("cube-").removesuffix(".fits") + ".json")

    @property
    def aligned_root(self) -> Path:
        return self.root / "aligned"

    @property
    def tensors_root(self) -> Path:
        return self.root / "tensors"

    def tensors_dir(self, rerun: int, run: int, camcol: int) -> Path:
        return self.root / "tensors" / f"{rerun}-{run}-{camcol}"

    def tensor(self, rerun: int, run: int, camcol: int, name: str) -> Path:
        """One exercise tensor: ``name`` is images, gal_coords or star_coords."""
        return self.tensors_dir(rerun, run, camcol) / f"{name}.npy"

    def tensors_json(self, rerun: int, run: int, camcol: int) -> Path:
        return self.tensors_dir(rerun, run, camcol) / "tensors.json"

    # stage 02
    @property
    def latest_dataset(self) -> Path:
        """One-line text file naming the dataset stage 02 prepared last (the default of stages 03/04)."""
        return self.root / "datasets" / LATEST

    @property
    def datasets_root(self) -> Path:
        return self.root / "datasets"

    def dataset_dir(self, name: str) -> Path:
        return self.root / "datasets" / name

    def split_x(self, name: str, split: str) -> Path:
        return self.dataset_dir(name) / f"{split}_x.npy"

    def split_y(self, name: str, split: str) -> Path:
        return self.dataset_dir(name) / f"{split}_y.npy"

    def split_psf(self, name: str, split: str) -> Path:
        """float32 [n, bands]: the PSF (stellar r50, pixels) at each patch's object, from its cube's PSF map."""
        return self.dataset_dir(name) / f"{split}_psf.npy"

    def split_objects(self, name: str, split: str) -> Path:
        return self.dataset_dir(name) / f"{split}_objects.csv"

    def dataset_json(self, name: str) -> Path:
        return self.dataset_dir(name) / "dataset.json"

    # stage 04
    @property
    def augmented_root(self) -> Path:
        return self.root / "augmented"

    def augmented_dir(self, name: str) -> Path:
        return self.root / "augmented" / name

    def augmented_x(self, name: str) -> Path:
        return self.augmented_dir(name) / "train_x.npy"

    def augmented_y(self, name: str) -> Path:
        return self.augmented_dir(name) / "train_y.npy"

    def augmented_json(self, name: str) -> Path:
        return self.augmented_dir(name) / "augmented.json"

    # real_sky.py
    @property
    def real_fields(self) -> DataPaths:
        """The data folder, inside this one, where real_sky.py prepares the real fields it evaluates: a real field
        must never replace a simulated one of the same name (the reference sky's test field is 8162-6-80's)."""
        return DataPaths(self.root / "real")

    # stage 03
    @property
    def latest_model(self) -> Path:
        """One-line text file naming the model stage 03 trained last (the default of predict)."""
        return self.root / "models" / LATEST

    @property
    def models_root(self) -> Path:
        """The folder holding one folder per trained model."""
        return self.root / "models"

    def model_dir(self, name: str) -> Path:
        return self.models_root / name

    def model_names(self) -> list[str]:
        """The names of the model folders under models/, sorted (temporary, dot-named folders left out)."""
        if not self.models_root.is_dir():
            return []
        return sorted(p.name for p in self.models_root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def model(self, name: str) -> ModelFiles:
        return ModelFiles(self.model_dir(name))

    # tune.py
    @property
    def tuning_root(self) -> Path:
        """The folder holding one folder per tuning study."""
        return self.root / "tuning"

    def tuning_dir(self, name: str) -> Path:
        return self.tuning_root / name

    def study_db(self, name: str) -> Path:
        """The study's Optuna SQLite storage."""
        return self.tuning_dir(name) / "study.db"

    def study_lock(self, name: str) -> Path:
        """Lock file the tuning workers share around "count trials, then ask for one"."""
        return self.tuning_dir(name) / "trials.lock"

    def trials_csv(self, name: str) -> Path:
        return self.tuning_dir(name) / "trials.csv"

    def trials_md(self, name: str) -> Path:
        return self.tuning_dir(name) / "trials.md"

    def best_config(self, name: str) -> Path:
        """best.json: the best trial's configuration, usable as ``03_model.py --config``."""
        return self.tuning_dir(name) / "best.json"

    def tuning_record(self, name: str) -> Path:
        """results.json: the record sealing a study's trials table and best.json."""
        return self.tuning_dir(name) / "results.json"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    def prediction_csv(self, name: str) -> Path:
        """Default output of predict.py for one field and model (``name`` from stages.predict)."""
        return self.predictions_dir / f"{name}.csv"

    # reports of every stage
    def reports(self, *parts: str) -> Path:
        """``reports/PARTS...``: each stage's figures, tables and summaries (one folder per stage)."""
        return self.root.joinpath("reports", *parts)

    @property
    def pipeline_record(self) -> Path:
        """Wall time and peak memory of each stage of the last ``run_scripts.sh`` run (for the report)."""
        return self.reports("pipeline", "stages.json")

    @property
    def report_pdf(self) -> Path:
        return self.reports("report.pdf")

    @property
    def report_record(self) -> Path:
        """What the default report.pdf was built from: a rerun with the same inputs skips it."""
        return self.reports("report.json")

    @property
    def lock_file(self) -> Path:
        """The lock a stage holds on the data folder, exclusively: one stage run at a time."""
        return self.root / ".lock"

    @property
    def publish_lock(self) -> Path:
        """The lock a stage holds exclusively while it renames files into place, and predict shared for its run."""
        return self.root / ".publish.lock"
