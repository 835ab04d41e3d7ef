"""The pretrained model shipped in models/: present, small, described, and classifying simulated and real fields."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY

from stargal.config import SIMULATION_VERSION
from stargal.cube import read_cube
from stargal.fsio import read_json
from stargal.paths import PRETRAINED, PRETRAINED_MODEL_DIR, DataPaths, FieldId, ModelFiles
from stargal.predict import classify
from stargal.psf import PSFMap
from stargal.stages.predict import load_bundle, resolve_model_dir
from stargal.tables import read_table

FILES = ModelFiles(PRETRAINED_MODEL_DIR)


def test_pretrained_model_is_shipped_small_and_described():
    assert FILES.keras.is_file() and FILES.json.is_file()
    size = sum(p.stat().st_size for p in PRETRAINED_MODEL_DIR.iterdir())
    assert size < 5e6
    meta = read_json(FILES.json)
    assert meta["architecture"] == "stargal" and meta["model_inputs"] == ["patch", "psf"] and meta["simulated"] is True
    card = read_json(PRETRAINED_MODEL_DIR / "card.json")
    assert card["simulation_version"] == SIMULATION_VERSION  # trained on the sky this code simulates
    assert (PRETRAINED_MODEL_DIR.parent / "README.md").is_file()


def test_resolves_as_pretrained_and_as_the_default(tmp_path):
    paths = DataPaths(tmp_path / "data")  # no model trained here
    assert resolve_model_dir(paths, PRETRAINED) == PRETRAINED_MODEL_DIR
    assert resolve_model_dir(paths, None) == PRETRAINED_MODEL_DIR


@pytest.mark.slow
def test_pretrained_model_classifies_a_simulated_field(tiny_data):
    from stargal.stages.alignment import run_alignment

    run_alignment(tiny_data, TINY, workers=1, reports=False)
    bundle = load_bundle(PRETRAINED_MODEL_DIR)
    right, total = 0, 0
    for field in TINY.fields:
        fid = FieldId(TINY.rerun, TINY.run, TINY.camcol, field)
        cube = read_cube(tiny_data.cube(fid))
        objects = read_table(tiny_data.objects(fid))
        bright = objects["r_psfmag"] < 21
        pred = classify(
            bundle.model,
            np.asarray(cube.data, np.float32),
            cube.wcs,
            objects["ra"][bright],
            objects["dec"][bright],
            patch_size=bundle.patch_size,
            edge=bundle.edge,
            threshold=bundle.threshold,
            psf_map=PSFMap.from_dict(read_json(tiny_data.psf_map(fid))),
        )
        ok = pred.status == "ok"
        right += int(((pred.label[ok] == "star") == (objects["label"][bright][ok] == 1)).sum())
        total += int(ok.sum())
    assert total >= 30
    assert right / total >= 0.9
