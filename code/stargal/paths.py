"""Every path under the data folder. No other module builds paths inside ``data/``.

Layout (``data/`` by default, ``--data-dir`` elsewhere)::

    sas/photoObj/frames/RERUN/RUN/CAMCOL/frame-{ugriz,irg}-RUN6-C-FIELD4.{fits.bz2,jpg}   stage 00
    sas/sweeps/dr13_final/RERUN/calibObj-RUN6-C-{gal,star}.fits.gz                       stage 00
    sas/manifest.json                   source URL, size and sha256 of each fetched file  stage 00
    simulation/RERUN-RUN-CAMCOL/truth.csv  true positions of simulated objects            stage 00
    simulation/RERUN-RUN-CAMCOL/measured-FIELD4.npy  catalog fluxes measured on a frame   stage 00
    aligned/RERUN/RUN/CAMCOL/cube-RUN6-C-FIELD4.fits      [5, 1489, 2048] aligned bands   stage 01
    aligned/RERUN/RUN/CAMCOL/objects-RUN6-C-FIELD4.csv    catalog objects in the field    stage 01
    tensors/RERUN-RUN-CAMCOL/{images,gal_coords,star_coords}.npy, tensors.json            stage 01
    datasets/NAME/{train,val,test}_{x,y}.npy, {split}_objects.csv, dataset.json           stage 02
    datasets/LATEST, models/LATEST      name of the last prepared dataset / trained model
    augmented/NAME/train_{x,y}.npy      fixed augmented training set (--materialize)      stage 04
    models/NAME/model.keras, model.json, metrics.json, history.csv                        stage 03
    tuning/NAME/                        study database, trials table, best.json           stage 03 --tune
    predictions/                        predict.py outputs
    reports/STAGE/...                   plots, tables and summaries; report.pdf
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import sdss

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"


class FieldId(NamedTuple):
    rerun: int
    run: int
    camcol: int
    field: int

    def __str__(self) -> str:
        return f"{self.rerun}/{self.run}/{self.camcol}/{self.field}"


@dataclass(frozen=True)
class DataPaths:
    """Paths of every file the pipeline reads or writes under one data folder."""

    root: Path = DEFAULT_DATA_DIR

    @classmethod
    def at(cls, root: str | os.PathLike | None) -> DataPaths:
        return cls(Path(root).expanduser().resolve() if root else DEFAULT_DATA_DIR)

    # stage 00: a local mirror of the Science Archive Server layout
    @property
    def sas(self) -> Path:
        return self.root / "sas"

    def sas_file(self, relpath: str) -> Path:
        return self.sas / relpath

    def frame(self, fid: FieldId, band: str) -> Path:
        return self.sas / sdss.frame_relpath(band, fid.rerun, fid.run, fid.camcol, fid.field)

    def irg_jpeg(self, fid: FieldId) -> Path:
        return self.sas / sdss.irg_relpath(fid.rerun, fid.run, fid.camcol, fid.field)

    def catalog(self, rerun: int, run: int, camcol: int, kind: str) -> Path:
        return self.sas / sdss.catalog_relpath(rerun, run, camcol, kind)

    @property
    def manifest(self) -> Path:
        return self.sas / "manifest.json"

    def sim_truth(self, rerun: int, run: int, camcol: int) -> Path:
        return self.root / "simulation" / f"{rerun}-{run}-{camcol}" / "truth.csv"

    def sim_measurements(self, fid: FieldId) -> Path:
        return self.root / "simulation" / f"{fid.rerun}-{fid.run}-{fid.camcol}" / f"measured-{fid.field:04d}.npy"

    # stage 01
    def _aligned_dir(self, fid: FieldId) -> Path:
        return self.root / "aligned" / str(fid.rerun) / str(fid.run) / str(fid.camcol)

    def cube(self, fid: FieldId) -> Path:
        return self._aligned_dir(fid) / f"cube-{fid.run:06d}-{fid.camcol}-{fid.field:04d}.fits"

    def objects(self, fid: FieldId) -> Path:
        return self._aligned_dir(fid) / f"objects-{fid.run:06d}-{fid.camcol}-{fid.field:04d}.csv"

    def tensors_dir(self, rerun: int, run: int, camcol: int) -> Path:
        return self.root / "tensors" / f"{rerun}-{run}-{camcol}"

    # stage 02
    @property
    def latest_dataset(self) -> Path:
        """One-line text file naming the dataset stage 02 prepared last (the default of stages 03/04)."""
        return self.root / "datasets" / "LATEST"

    def dataset_dir(self, name: str) -> Path:
        return self.root / "datasets" / name

    def split_x(self, name: str, split: str) -> Path:
        return self.dataset_dir(name) / f"{split}_x.npy"

    def split_y(self, name: str, split: str) -> Path:
        return self.dataset_dir(name) / f"{split}_y.npy"

    def split_objects(self, name: str, split: str) -> Path:
        return self.dataset_dir(name) / f"{split}_objects.csv"

    def dataset_json(self, name: str) -> Path:
        return self.dataset_dir(name) / "dataset.json"

    # stage 04
    def augmented_dir(self, name: str) -> Path:
        return self.root / "augmented" / name

    # stage 03
    @property
    def latest_model(self) -> Path:
        """One-line text file naming the model stage 03 trained last (the default of predict)."""
        return self.root / "models" / "LATEST"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def tuning_dir(self, name: str) -> Path:
        return self.root / "tuning" / name

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    def prediction_csv(self, name: str) -> Path:
        """Default output of predict.py for one field and model (``name`` from stages.predict)."""
        return self.predictions_dir / f"{name}.csv"

    def reports(self, *parts: str) -> Path:
        return self.root.joinpath("reports", *parts)
