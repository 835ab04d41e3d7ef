"""predict.py's ONNX Runtime engine: the cube normalised once, patches cut from it exactly as stage 02 cuts them,
the exported network equal to the Keras model, sealed in the model folder, and chosen only when sealed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stargal import fsio, normalise, onnx_engine, patches
from stargal.augment import D4_SIZE, d4_numpy
from stargal.errors import StargalError
from stargal.paths import PRETRAINED_MODEL_DIR, ModelFiles
from stargal.stages.predict import load_bundle

PROJECT = Path(__file__).resolve().parents[1]
CENTER = [0.0016, 0.0031, 0.0079, 0.0114, 0.025]
SCALE = [0.0316, 0.0133, 0.0324, 0.0379, 0.1364]


def test_patches_cut_from_the_normalised_cube_equal_the_normalised_stage_02_patches():
    rng = np.random.default_rng(0)
    data = rng.normal(0, 0.05, (5, 60, 80)).astype(np.float32)
    data[2, 10:14, 3:9] = np.nan  # a band without data
    data[0, 30, 30] = np.inf
    data[1, 40, 40] = -np.inf
    rows = np.array([0, 59, 12, 30, 40, 25, 0, 59])  # corners and edges: padded patches
    cols = np.array([0, 79, 5, 30, 40, 41, 79, 0])
    size = 11
    padded = onnx_engine.normalised_cube(data, CENTER, SCALE, size)
    assert padded.shape == (5, 60 + 10, 80 + 10) and padded.dtype == np.float32
    cut = onnx_engine.cut(padded, rows, cols, size)
    reference = normalise.apply(patches.extract_patches(data, rows, cols, size).data, CENTER, SCALE)
    assert cut.shape == (8, 5, size, size) and cut.flags.c_contiguous
    np.testing.assert_array_equal(cut, reference.transpose(0, 3, 1, 2))  # bit for bit
    # a finite value too large to normalise becomes 0, as the Keras layer makes it (not inf)
    data[3, 20, 20] = 3e38
    assert onnx_engine.normalised_cube(data, CENTER, SCALE, size)[3, 25, 25] == 0.0


def test_channels_first_symmetries_are_the_training_symmetries():
    x = np.random.default_rng(1).normal(size=(3, 7, 7, 5)).astype(np.float32)
    for k in range(D4_SIZE):
        expected = d4_numpy(x, k).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(onnx_engine.d4_channels_first(x.transpose(0, 3, 1, 2), k), expected)


def test_the_shipped_model_runs_in_onnx_runtime_as_in_keras():
    from stargal.model import predict

    meta = fsio.read_json(ModelFiles(PRETRAINED_MODEL_DIR).json)
    assert "model.onnx" in meta["integrity"]["files"]  # sealed with the model it was exported from
    assert meta["onnx"]["max_abs_diff"] <= onnx_engine.TOLERANCE
    onnx = load_bundle(PRETRAINED_MODEL_DIR, "auto")
    assert onnx.engine == "onnx" and onnx.takes_psf
    keras = load_bundle(PRETRAINED_MODEL_DIR, "keras")
    x, psf = onnx_engine.check_patches(25, 5, n=300, seed=7)  # not the export's check patches
    normalised = normalise.apply(x, onnx.model.center, onnx.model.scale).transpose(0, 3, 1, 2)
    for tta in (False, True):
        expected = predict(keras.model, x, psf, tta=tta)
        got = onnx.model.predict(np.ascontiguousarray(normalised), psf, tta=tta)
        np.testing.assert_allclose(got, expected, atol=2e-5)
    single = onnx.model.predict(np.ascontiguousarray(normalised), psf)
    reused = onnx.model.predict(np.ascontiguousarray(normalised), psf, tta=True, identity=single)
    np.testing.assert_array_equal(reused, got)  # the identity pass run again gives the same numbers
    shifted = onnx.model.predict(np.ascontiguousarray(normalised), psf, tta=True, identity=single + 0.8)
    np.testing.assert_allclose(shifted - got, 0.1, atol=1e-5)
    with pytest.raises(StargalError, match="needs the PSF"):
        onnx.model.predict(np.ascontiguousarray(normalised), None)


def _folder_without_onnx(tmp_path) -> Path:
    """A copy of the shipped model as an earlier stargal wrote it: no model.onnx, model.json sealing the rest."""
    folder = tmp_path / "older"
    shutil.copytree(PRETRAINED_MODEL_DIR, folder)
    files = ModelFiles(folder)
    files.onnx.unlink()
    record = fsio.read_json(files.json)
    meta = {k: v for k, v in record.items() if k not in ("onnx", fsio.INTEGRITY_KEY)}
    fsio.seal(files.json, [folder / name for name in record[fsio.INTEGRITY_KEY]["files"] if name != "model.onnx"], meta)
    return folder


def _reseal(folder: Path) -> None:
    """Seal a model folder's files as they now are (its record's list)."""
    files = ModelFiles(folder)
    record = fsio.read_json(files.json)
    meta = {k: v for k, v in record.items() if k != fsio.INTEGRITY_KEY}
    fsio.seal(files.json, [folder / name for name in record[fsio.INTEGRITY_KEY]["files"]], meta)


def test_the_engine_is_onnx_only_where_sealed(tmp_path):
    older = _folder_without_onnx(tmp_path)
    assert load_bundle(older, "auto").engine == "keras"  # nothing to run in ONNX Runtime: Keras, silently
    with pytest.raises(StargalError, match=r"no model.onnx .*--export-onnx"):
        load_bundle(older, "onnx")
    with pytest.raises(StargalError, match="--engine 'fast'"):
        load_bundle(older, "fast")
    # an unsealed model.onnx beside the model (another run's) is not used
    shutil.copy2(ModelFiles(PRETRAINED_MODEL_DIR).onnx, ModelFiles(older).onnx)
    assert load_bundle(older, "auto").engine == "keras"


def test_a_damaged_model_onnx_is_named_not_served(tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(PRETRAINED_MODEL_DIR, folder)
    onnx = ModelFiles(folder).onnx
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    with pytest.raises(StargalError, match=r"model.onnx") as err:
        load_bundle(folder, "auto")
    assert "\n" not in str(err.value) and "03_model.py" in str(err.value)
    # not a model at all, though sealed (the seal matches): ONNX Runtime's refusal, in one line
    onnx.write_bytes(b"not an onnx model")
    _reseal(folder)
    with pytest.raises(StargalError, match=r"model.onnx: not a loadable ONNX model") as err:
        load_bundle(folder, "onnx")
    assert "\n" not in str(err.value)
    assert load_bundle(folder, "auto").engine == "keras"  # the sealed Keras model still serves, with a warning


@pytest.mark.slow
def test_export_onnx_adds_a_checked_sealed_network_to_an_older_model_folder(tmp_path):
    older = _folder_without_onnx(tmp_path)
    keras_bytes = ModelFiles(older).keras.read_bytes()
    done = subprocess.run(
        [sys.executable, str(PROJECT / "code" / "03_model.py"), "--export-onnx", str(older)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "model.onnx added" in done.stdout
    meta = fsio.read_json(ModelFiles(older).json)
    assert meta["onnx"]["max_abs_diff"] <= onnx_engine.TOLERANCE and meta["onnx"]["opset"] == onnx_engine.OPSET
    assert ModelFiles(older).keras.read_bytes() == keras_bytes  # the model itself untouched
    assert load_bundle(older, "auto").engine == "onnx"
    assert not list(older.glob(".*.part"))
    bad = subprocess.run(
        [sys.executable, str(PROJECT / "code" / "03_model.py"), "--export-onnx", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert f"--export-onnx {tmp_path}: not a model folder, nor a model in" in bad.stderr


def test_ctrl_c_during_the_export_stops_the_run_instead_of_sealing_a_model_without_onnx(tmp_path, monkeypatch):
    """TensorFlow can turn Ctrl-C inside the conversion into an error of its own ("initialization failed"): that
    must not read as a failed optional export, after which the model was sealed without model.onnx, exit 0."""
    import os
    import signal
    import time

    from stargal import onnx_engine

    def export_interrupted(model, path):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise RuntimeError("initialization failed") from None

    monkeypatch.setattr(onnx_engine, "export", export_interrupted)
    with pytest.raises(KeyboardInterrupt):
        onnx_engine.export_checked(object(), tmp_path / "model.onnx")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not (tmp_path / "model.onnx").exists()


def test_a_cube_or_patches_of_other_bands_than_the_network_are_refused_in_one_line():
    """model.json's bands name the cube planes predict.py passes: with fewer than the network takes, numpy's
    broadcasting error (an "unexpected ValueError") came out before; one line naming model.onnx now."""
    meta = fsio.read_json(ModelFiles(PRETRAINED_MODEL_DIR).json)
    network = onnx_engine.OnnxNetwork(ModelFiles(PRETRAINED_MODEL_DIR).onnx, meta["onnx"]["normalisation"], threads=1)
    with pytest.raises(StargalError, match=r"model.onnx: the network takes 5 bands, the cube given has 4 planes"):
        network.prepare(np.zeros((4, 40, 40), np.float32))
    psf = np.full((2, 5), 2.0, np.float32)
    with pytest.raises(StargalError, match=r"model.onnx: patches of shape \(5, 21, 21\) given, the network takes"):
        network.predict(np.zeros((2, 5, 21, 21), np.float32), psf)
