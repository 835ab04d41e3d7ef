"""Ensembles (03_model.py --ensemble): one model averaging the p(star) of networks trained from several seeds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script_here
from test_training_stage import TINY_HP, toy_patches, write_toy_dataset

from stargal import fsio
from stargal.dataset import load_dataset
from stargal.errors import StargalError
from stargal.paths import DataPaths

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NORM = {"method": "asinh", "center": [0.0] * 5, "scale": [0.05] * 5}


def _random_models(n: int, norm: dict = NORM, size: int = 15, architecture: str = "stargal") -> list:
    from stargal.model import build_model, import_keras

    keras = import_keras()
    models = []
    for seed in range(n):
        keras.utils.set_random_seed(seed)
        models.append(build_model(architecture, (size, size, 5), norm, TINY_HP))
    return models


def test_ensemble_averages_its_members_and_survives_saving(tmp_path):
    from stargal.model import ensemble_members, ensemble_model, flops_per_sample, load_model, predict

    members = _random_models(3)
    x, _, _ = toy_patches(64, 15, seed=5)
    psf = np.random.default_rng(0).uniform(1.2, 2.5, (64, 5)).astype(np.float32)
    ensemble = ensemble_model(members)
    for tta in (False, True):
        mean = np.mean([predict(m, x, psf, tta=tta) for m in members], axis=0)
        np.testing.assert_allclose(predict(ensemble, x, psf, tta=tta), mean, atol=1e-6)
    assert ensemble.count_params() == sum(m.count_params() for m in members)
    assert flops_per_sample(ensemble) == 3 * flops_per_sample(members[0]) > 0
    ensemble.save(tmp_path / "e.keras")
    loaded = load_model(tmp_path / "e.keras")
    np.testing.assert_allclose(predict(loaded, x, psf), predict(ensemble, x, psf), atol=1e-7)
    assert len(ensemble_members(loaded)) == 3 and ensemble_members(members[0]) == []

    # Grad-CAM of an ensemble: the mean of its members' maps (explain.py on an ensemble model)
    from stargal.explain import grad_cam

    mean_map = np.mean([grad_cam(m, x[:8], psf=psf[:8]) for m in members], axis=0)
    np.testing.assert_allclose(grad_cam(loaded, x[:8], psf=psf[:8]), mean_map, atol=1e-5)

    plain = _random_models(2, architecture="reference_base")  # networks without the PSF input combine too
    mean = np.mean([predict(m, x) for m in plain], axis=0)
    np.testing.assert_allclose(predict(ensemble_model(plain), x), mean, atol=1e-6)


def test_ensemble_refuses_members_that_do_not_belong_together():
    from stargal.model import ensemble_model

    a = _random_models(1)[0]
    other_norm = _random_models(1, {**NORM, "scale": [0.1] * 5})[0]
    other_size = _random_models(1, size=17)[0]
    with pytest.raises(StargalError, match="at least two"):
        ensemble_model([a])
    with pytest.raises(StargalError, match="normalise"):
        ensemble_model([a, other_norm])
    with pytest.raises(StargalError, match="different inputs"):
        ensemble_model([a, other_size])


def _run_script(argv: list[str], capsys) -> subprocess.CompletedProcess:
    """03_model.py run on ``argv`` as the script runs, in this process from ``/`` (a Python and TensorFlow started
    for each run took ~4-6 s, half this test's time)."""
    return run_script_here(PROJECT_ROOT / "code" / "03_model.py", argv, capsys, cwd="/")


def _refusal(argv: list[str], capsys) -> str:
    """03_model.py's last stderr line for ``argv``, which it must refuse with exit status 2."""
    res = _run_script(argv, capsys)
    assert res.returncode == 2, res.stderr
    return res.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_seeds_combined_into_a_sealed_ensemble(tmp_path, capsys):
    from stargal.metrics import choose_threshold
    from stargal.model import load_model, predict
    from stargal.stages.predict import load_bundle

    paths = DataPaths(tmp_path / "data")
    # one epoch of a small set: what is checked is how the members are combined and recorded, not how well they learn
    write_toy_dataset(paths, "toy", sizes=(200, 100, 120), patch=15, seed=1, faint=21.0)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"architecture": "stargal", "hyperparameters": TINY_HP}))
    common = ["--data-dir", str(paths.root), "--config", str(config), "--epochs", "1", "--batch-size", "64"]
    common += ["--no-plots", "--seed", "3"]
    res = _run_script([*common, "--seeds", "2", "--ensemble", "--name", "tiny"], capsys)
    assert res.returncode == 0, res.stderr
    assert "ensemble tiny" in res.stdout and paths.latest_model.read_text().strip() == "tiny"

    files = paths.model("tiny")
    meta = fsio.check_seal(files.json, [files.keras, files.metrics, files.onnx]).record
    assert meta is not None and not files.history.exists()
    assert [m["name"] for m in meta["ensemble"]] == ["tiny-s3", "tiny-s4"] and meta["seeds"] == [3, 4]
    # the threshold is chosen on validation by maximum MCC, on the mean of the members' p(star)
    data = load_dataset(paths, "toy")
    val = data["val"]
    members = [load_model(paths.model(f"tiny-s{s}").keras) for s in (3, 4)]
    p_val = np.mean([predict(m, val["x"], val["psf"], tta=True) for m in members], axis=0)
    assert meta["threshold"] == pytest.approx(choose_threshold(val["y"], p_val), abs=1e-6)
    metrics = fsio.read_json(files.metrics)
    assert metrics["test"]["n"] == 120 and metrics["tta"] is True
    # predict.py's two engines serve it alike
    keras_bundle, onnx_bundle = load_bundle(files.folder, "keras"), load_bundle(files.folder, "onnx")
    assert onnx_bundle.engine == "onnx"
    np.testing.assert_allclose(predict(keras_bundle.model, val["x"], val["psf"], tta=True), p_val, atol=1e-6)

    # rerun: current, not combined again; a member trained again makes it stale
    before = files.json.stat().st_mtime_ns
    res = _run_script([*common, "--seeds", "2", "--ensemble", "--name", "tiny"], capsys)
    assert res.returncode == 0 and "current" in res.stdout and files.json.stat().st_mtime_ns == before
    tuned = tmp_path / "tuned-elsewhere.json"  # a tuning best.json names the dataset it was tuned on
    tuned.write_text(json.dumps({"architecture": "stargal", "hyperparameters": TINY_HP, "dataset": "elsewhere"}))
    retrain = [*common[:2], "--config", str(tuned), *common[4:]]
    res = _run_script([*retrain, "--seed", "4", "--name", "tiny-s4", "--force", "-q"], capsys)
    assert res.returncode == 0, res.stderr
    assert "tuned on dataset elsewhere; training on toy" in res.stderr
    res = _run_script(["--data-dir", str(paths.root), "--ensemble", "tiny-s3", "tiny-s4", "--name", "tiny"], capsys)
    assert res.returncode == 0 and "2 models averaged" in res.stdout, res.stderr
    # an unrelated model of the name (a copy of a member) is replaced, further down, with training's warning
    import shutil

    shutil.copytree(paths.model_dir("tiny-s3"), paths.model_dir("keepme"))

    # bad requests: one line, exit 2, nothing written
    no_architecture = tmp_path / "null.json"
    no_architecture.write_text('{"architecture": null}')
    for args, words in [
        (("--ensemble", "tiny-s3"), "at least two"),
        (("--ensemble", "tiny-s3", "tiny-s3"), "named twice"),
        (("--ensemble", "tiny-s3", "nope"), "--ensemble nope: no such model in"),
        (("--ensemble", "tiny-s3", "../data"), "--ensemble '../data': use letters"),
        (("--export-onnx", "nope"), "--export-onnx nope: not a model folder, nor a model in"),
        (("--config", str(no_architecture)), "architecture None is not one of"),
        (("--ensemble", "tiny-s3", "tiny-s4", "--name", "tiny-s3"), "its own name"),
        (("--ensemble",), "--seeds N"),
        (("--ensemble", "tiny", "tiny-s3"), "an ensemble already"),
    ]:
        refusal = _refusal(["--data-dir", str(paths.root), *args], capsys)
        assert refusal.startswith("03_model.py: error: ") and words in refusal, (args, refusal)
    assert not paths.model_dir("ensemble-toy").exists()
    refusal = _refusal(["--data-dir", str(paths.root), "--ensemble", "tiny-s3", "nope"], capsys)
    assert "(models there: keepme, tiny, tiny-s3, tiny-s4)" in refusal
    # --export-onnx takes a model's name as well as its folder (the export itself: test_onnx_engine.py)
    from stargal.stages.training import find_model_folder

    assert find_model_folder(paths, "tiny-s3", "--export-onnx") == paths.model_dir("tiny-s3")
    # --no-tta: an ensemble without test-time augmentation, its threshold chosen on single-pass scores; it
    # replaces the unrelated model of its name with the warning training gives, not silently
    res = _run_script(
        ["--data-dir", str(paths.root), "--ensemble", "tiny-s3", "tiny-s4", "--name", "keepme", "--no-tta"], capsys
    )
    assert res.returncode == 0, res.stderr
    assert (
        "keepme: replacing the model of that name (a trained stargal network, not an ensemble; --name keeps both)"
        in res.stderr
    )
    plain = fsio.read_json(paths.model("keepme").json)
    members = [load_model(paths.model(f"tiny-s{s}").keras) for s in (3, 4)]  # s4 was trained again above
    p_plain = np.mean([predict(m, val["x"], val["psf"], tta=False) for m in members], axis=0)
    assert plain["tta"] is False and plain["config"]["tta"] is False
    assert plain["threshold"] == pytest.approx(choose_threshold(val["y"], p_plain), abs=1e-6)
    assert fsio.read_json(paths.model("keepme").metrics)["tta"] is False


def test_members_of_an_earlier_build_of_the_dataset_are_refused(tmp_path):
    """The dataset rebuilt under its name since the members were trained: their ensemble would record the new
    content while its networks learned the old one."""
    from stargal.stages.training import combine_models

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(20, 10, 10), patch=15, seed=1)
    for member in ("a", "b"):
        files = paths.model(member)
        fsio.write_bytes(files.keras, member.encode())
        fsio.seal(files.json, [files.keras], {"name": member, "dataset": "toy", "architecture": "stargal",
                                              "inputs": {"dataset": "an earlier build"}})  # fmt: skip
    with pytest.raises(StargalError, match=r"^--ensemble a: trained on an earlier build of dataset toy"):
        combine_models(paths, ["a", "b"], "ens")
    assert not paths.model_dir("ens").exists()
