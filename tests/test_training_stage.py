"""Stage 03/04 runners end to end on a small synthetic dataset folder in the stage-02 contract format."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script_here

from stargal import fsio
from stargal.config import BANDS
from stargal.dataset import load_dataset
from stargal.evaluate import evaluate, predict_splits
from stargal.normalise import MAD_TO_SIGMA
from stargal.paths import DataPaths
from stargal.stages.training_summary import run_summary
from stargal.tables import OBJECT_DTYPE, write_table
from stargal.train_options import TrainOptions, load_config, options_from_args

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOISE = np.array([0.05, 0.018, 0.022, 0.03, 0.09])  # nanomaggies per pixel, roughly SDSS ugriz
STAR_SED = np.array([0.35, 0.8, 1.0, 1.1, 1.15])
GALAXY_SED = np.array([0.2, 0.6, 1.0, 1.35, 1.6])
# an exponential profile as a mixture of Gaussians (amplitudes, sigmas in units of the half-light radius)
EXP_AMP = np.array([0.25, 0.45, 0.30])
EXP_SIG = np.array([0.25, 0.6, 1.15])


def toy_patches(n: int, size: int = 25, seed: int = 0, star_fraction: float = 0.3, faint: float = 23.0):
    """Raw nanomaggie patches [n, P, P, 5]: PSF stars and PSF-convolved exponential galaxies of
    log-normal sizes over r = 16..``faint`` mag, with neighbours and noise; labels uint8; r magnitudes."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < star_fraction).astype(np.uint8)
    mag = 16 + (faint - 16) * np.sqrt(rng.random(n))
    flux = 10 ** (-0.4 * (mag - 22.5))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - size // 2
    psf = 1.5 * rng.uniform(0.9, 1.1, n)
    out = np.zeros((n, size, size, 5), np.float32)

    def render(cx, cy, f, re, q, theta, is_star, sed):
        dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
        c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        u, v = c * dx + s * dy, -s * dx + c * dy
        img = np.zeros((len(cx), size, size))
        for a, sg in zip(EXP_AMP, EXP_SIG, strict=True):
            sx2 = np.where(is_star, 0.0, (sg * re) ** 2) + psf**2
            sy2 = np.where(is_star, 0.0, (sg * re * q) ** 2) + psf**2
            g = np.exp(-0.5 * (u**2 / sx2[:, None, None] + v**2 / sy2[:, None, None]))
            img += a * g / (2 * np.pi * np.sqrt(sx2 * sy2))[:, None, None]
        return (f[:, None, None] * img)[..., None] * sed[:, None, None, :]

    re = np.exp(rng.normal(np.log(1.6), 0.6, n))
    sed = np.where(y[:, None] == 1, STAR_SED, GALAXY_SED) * rng.uniform(0.8, 1.2, (n, 5))
    offs = rng.uniform(-0.5, 0.5, (2, n))
    out += render(offs[0], offs[1], flux, re, rng.uniform(0.3, 1, n), rng.uniform(0, np.pi, n), y == 1, sed)
    has = rng.random(n) < 0.3  # a neighbour somewhere in the patch
    nb_star = rng.random(n) < 0.4
    nb_pos = rng.uniform(-size / 2, size / 2, (2, n))
    nb_flux = 10 ** (-0.4 * (16 + 7 * np.sqrt(rng.random(n)) - 22.5)) * has
    nb_sed = np.where(nb_star[:, None], STAR_SED, GALAXY_SED)
    out += render(
        nb_pos[0],
        nb_pos[1],
        nb_flux,
        np.exp(rng.normal(np.log(1.6), 0.6, n)),
        rng.uniform(0.3, 1, n),
        rng.uniform(0, np.pi, n),
        nb_star,
        nb_sed,
    )
    out += (rng.normal(size=out.shape) * NOISE).astype(np.float32)
    return out.astype(np.float32), y, mag.astype(np.float32)


def write_toy_dataset(
    paths: DataPaths, name: str = "toy", sizes=(600, 200, 200), patch: int = 25, seed: int = 0, faint: float = 23.0
) -> str:
    """A dataset folder exactly as stage 02 writes it (contract in the brief), and paths.latest_dataset."""
    counts = {}
    norm = None
    for i, (split, n) in enumerate(zip(("train", "val", "test"), sizes, strict=True)):
        x, y, mag = toy_patches(n, patch, seed=seed * 10 + i, faint=faint)
        # the stage-02 PSF input: every band's stellar half-light radius (px), here the toy's PSF (sigma ~1.5 px)
        fsio.save_npy(paths.split_psf(name, split), np.full((n, 5), 1.5 * 1.1774, np.float32))
        if split == "train":
            flat = x.reshape(-1, 5).astype(np.float64)
            center = np.median(flat, axis=0)
            scale = MAD_TO_SIGMA * np.median(np.abs(flat - center), axis=0)
            norm = {"method": "asinh", "center": center.tolist(), "scale": scale.tolist()}
        fsio.save_npy(paths.split_x(name, split), x)
        fsio.save_npy(paths.split_y(name, split), y)
        table = np.zeros(n, OBJECT_DTYPE)
        table["objid"] = [f"toy-{split}-{j}" for j in range(n)]
        table["label"] = y
        table["r_psfmag"] = mag
        table["r_modelmag"] = mag
        table["x"] = table["y"] = np.nan
        write_table(paths.split_objects(name, split), table)
        counts[split] = {"n": n, "stars": int(y.sum()), "galaxies": int(n - y.sum())}
    meta = {
        "name": name,
        "bands": "".join(BANDS),
        "patch_size": patch,
        "edge": "pad",
        "rerun": 301,
        "run": 8162,
        "camcol": 6,
        "fields": {"train": [1], "val": [2], "test": [3]},
        "counts": counts,
        "normalisation": norm,
        "simulated": True,
    }
    files = [
        f(name, split)
        for split in ("train", "val", "test")
        for f in (paths.split_x, paths.split_y, paths.split_psf, paths.split_objects)
    ]
    fsio.seal(paths.dataset_json(name), files, meta)  # dataset.json seals the folder, as stage 02's does
    fsio.write_text(paths.latest_dataset, name + "\n")
    return name


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> DataPaths:
    paths = DataPaths(tmp_path_factory.mktemp("toy") / "data")
    write_toy_dataset(paths, "toy", sizes=(800, 300, 300), patch=15, seed=1, faint=21.0)
    return paths


TINY_HP = {"filters": 8, "dense_units": 16}


@pytest.mark.slow
def test_training_learns_saves_and_reloads(toy, caplog):
    from stargal.metrics import choose_threshold
    from stargal.model import load_model, predict
    from stargal.stages import training

    opts = TrainOptions(
        architecture="stargal", hyperparameters=TINY_HP, epochs=8, patience=3, batch_size=64, seed=3, verbose=0
    )
    result = training.run_training(toy, None, opts)  # dataset from paths.latest_dataset
    run = result["runs"][0]
    name = run["name"]
    assert name == "stargal-toy-s3" and toy.latest_model.read_text().strip() == name
    out = toy.model_dir(name)
    metrics = fsio.read_json(out / "metrics.json")
    assert metrics["test"]["mcc"] > 0.6  # separable toy set: clearly above chance
    assert metrics["test"]["accuracy"] > metrics["baselines"]["test"]["majority"]["accuracy"]
    for split in ("train", "val", "test"):
        assert {
            "accuracy",
            "mcc",
            "balanced_accuracy",
            "roc_auc",
            "log_loss",
            "confusion_matrix",
            "star_purity",
            "star_completeness",
            "galaxy_purity",
            "galaxy_completeness",
        } <= set(metrics[split])
        assert sum(r["n"] for r in metrics["by_magnitude"][split]) == metrics[split]["n"]
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) - 1 == run["model_json"]["epochs_run"]
    for png in ("learning_curves.png", "roc.png", "confusion_test.png", "by_magnitude_test.png"):
        assert (toy.reports("training", name) / png).stat().st_size > 1000

    # the saved model takes raw patches and gives identical predictions after reloading
    model_json = fsio.read_json(out / "model.json")
    model = load_model(out / "model.keras")
    x_val = fsio.load_npy(toy.split_x("toy", "val"))
    y_val = fsio.load_npy(toy.split_y("toy", "val"))
    psf_val = fsio.load_npy(toy.split_psf("toy", "val"))
    assert model_json["tta"] is True  # stargal's default: the mean over the eight symmetries
    assert model_json["model_inputs"] == ["patch", "psf"]  # stargal's network is told the PSF
    # ... and records the PSF sizes it was trained on, which predict.py checks a field against
    train_psf = fsio.load_npy(toy.split_psf("toy", "train"))
    assert model_json["psf_range"]["bands"] == "ugriz"
    np.testing.assert_allclose(model_json["psf_range"]["low"], np.percentile(train_psf, 0.5, axis=0), atol=1e-3)
    np.testing.assert_allclose(model_json["psf_range"]["high"], np.percentile(train_psf, 99.5, axis=0), atol=1e-3)
    p_val = predict(model, x_val, psf_val, tta=True)
    # the threshold is the MCC-optimal one on validation predictions (test data plays no part)
    assert model_json["threshold"] == pytest.approx(choose_threshold(y_val, p_val), abs=1e-6)
    data = load_dataset(toy, "toy")
    again_preds = predict_splits(model, data, tta=True)
    np.testing.assert_allclose(again_preds["val"], p_val, atol=1e-6)  # val and test with TTA, once each
    again_metrics = evaluate(data, again_preds, model_json["threshold"], tta=True)
    assert again_metrics["tta_splits"] == ["val", "test"]
    assert again_metrics["test"]["mcc"] == pytest.approx(metrics["test"]["mcc"])  # the reloaded model scores the same
    assert metrics["no_tta"]["test"]["mcc"] > 0.6

    # model.onnx, sealed with the rest, runs the same network in ONNX Runtime (what predict.py uses)
    from stargal import normalise, onnx_engine

    assert "model.onnx" in model_json["integrity"]["files"]
    assert model_json["onnx"]["max_abs_diff"] <= onnx_engine.TOLERANCE
    network = onnx_engine.OnnxNetwork(out / "model.onnx", model_json["onnx"]["normalisation"])
    x_onnx = normalise.apply(x_val, network.center, network.scale).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(network.predict(np.ascontiguousarray(x_onnx), psf_val, tta=True), p_val, atol=2e-5)

    # idempotent: a second run with the same configuration is skipped
    again = training.run_training(toy, "toy", opts)
    assert again["runs"][0]["skipped"]
    assert "test" in run_summary(again)
    # another augmentation of the same architecture and seed has the same default name: not current, and said so
    other = replace(opts, augment="none").resolved()
    config = training._run_config(other, "toy", model_json["hyperparameters"])
    with caplog.at_level(logging.WARNING, logger="stargal"):
        assert training.current_model(toy, name, config, model_json["inputs"]["dataset"]) is None
    assert f"{name}: replacing the model of that name (augment d4 -> none; --name keeps both)" in caplog.text


@pytest.mark.slow
def test_compare_augmentation_and_config(toy, tmp_path):
    from stargal.stages import training

    cfg = tmp_path / "best.json"
    cfg.write_text(json.dumps({"architecture": "reference_base", "hyperparameters": {**TINY_HP, "batch_size": 128}}))
    loaded = load_config(cfg)
    assert loaded["architecture"] == "reference_base" and loaded["batch_size"] == 128
    assert "batch_size" not in loaded["hyperparameters"]
    opts = TrainOptions(
        architecture="reference_base",
        hyperparameters=loaded["hyperparameters"],
        epochs=2,
        patience=2,
        batch_size=128,
        seed=1,
        verbose=0,
        plots=False,
    )
    result = training.compare_augmentation(toy, "toy", opts)
    assert [r["augment"] for r in result["rows"]] == ["none", "d4"]
    for f in ("comparison.csv", "comparison.md", "comparison.png"):
        assert (result["report"] / f).exists()
    # one sealed set: a plot that fails left comparison.csv, .md and .json of a comparison that had not finished
    record = result["report"] / "comparison.json"
    assert fsio.check_seal(record, [result["report"] / f for f in ("comparison.csv", "comparison.md")]).ok
    assert fsio.read_json(record)["rows"] == json.loads(fsio.json_text(result["rows"]))
    import shutil

    from stargal.plots import training as tplots

    shutil.rmtree(result["report"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tplots, "comparison_plot", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
        with pytest.raises(OSError):
            training.compare_augmentation(toy, "toy", opts)  # the models are current: not trained again
    assert not any(p.is_file() for p in result["report"].rglob("*"))


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "code" / name), *args], capture_output=True, text=True, timeout=300, cwd="/"
    )


def _script_here(name: str, capsys, *args: str) -> subprocess.CompletedProcess:
    """``_script`` in this process (``conftest.run_script_here``): what 04 does and says is tested, not its process,
    and a Python and TensorFlow started for each run cost ~5 s."""
    return run_script_here(PROJECT_ROOT / "code" / name, list(args), capsys, cwd="/")


@pytest.mark.slow
def test_augmentation_script(toy, capsys):
    root = str(toy.root)
    args = [
        "--data-dir",
        root,
        "--experiment",
        "--epochs",
        "1",
        "--max-train",
        "200",
        "--policies",
        "none",
        "combination",
    ]
    res = _script_here("04_augmentation.py", capsys, *args, "--materialize", "-q")
    assert res.returncode == 0, res.stderr
    rep = toy.reports("augmentation")
    for f in (
        "examples_symmetries.png",
        "examples_photometric.png",
        "augmentation.md",
        "experiment.csv",
        "experiment.md",
        "experiment.png",
    ):
        assert (rep / f).exists(), f
    rows = (rep / "experiment.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["none", "combination"]
    x = np.load(toy.augmented_dir("toy") / "train_x.npy", mmap_mode="r")
    y = np.load(toy.augmented_dir("toy") / "train_y.npy")
    src_y = fsio.load_npy(toy.split_y("toy", "train"))
    assert x.dtype == np.float32 and x.shape == (32 * len(src_y), 15, 15, 5)
    np.testing.assert_array_equal(y, np.tile(src_y, 32))
    # rerun with the same settings: the experiment is current and nothing is retrained
    before = (rep / "experiment.csv").stat().st_mtime_ns
    again = _script_here("04_augmentation.py", capsys, *args)
    assert again.returncode == 0, again.stderr
    assert "current" in again.stderr and (rep / "experiment.csv").stat().st_mtime_ns == before
    twice = _script_here("04_augmentation.py", capsys, *args[:-1], "none", "-q")  # --policies none combination none
    assert twice.returncode == 2 and "--policies: none named twice" in twice.stderr
    assert (rep / "experiment.csv").stat().st_mtime_ns == before
    # --verify names the run that redoes each damaged figure: plain 04 the examples, --experiment its own
    from stargal.integrity import verify_data_folder

    for name in ("examples_symmetries.png", "experiment.png"):
        with open(rep / name, "ab") as fh:
            fh.write(b"x")
    redo = {f.path.name: f.redo for f in verify_data_folder(toy)[0] if f.path.parent == rep}
    assert redo == {  # with the folder: printed without it, the command acted on the project's data/
        "examples_symmetries.png": f"04_augmentation.py --data-dir {toy.root}",
        "experiment.png": f"04_augmentation.py --experiment --data-dir {toy.root}",
    }


@pytest.mark.slow
def test_model_script_errors_are_one_line(toy, tmp_path):
    res = _script("03_model.py", "--data-dir", str(toy.root), "--dataset", "nope")
    assert res.returncode == 2 and "nope" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "empty").mkdir()  # a data folder no stage has written yet (a missing one: its own test)
    res = _script("03_model.py", "--data-dir", str(tmp_path / "empty"))
    assert res.returncode == 2 and "no dataset prepared" in res.stderr
    for value, words in (("-1", "must be 1 or more: '-1'"), ("0", "must be 1 or more: '0'"), ("x", "not an integer")):
        res = _script("03_model.py", "--data-dir", str(tmp_path / "empty"), "--epochs", value)
        assert res.returncode == 2 and f"--epochs: {words}" in res.stderr, res.stderr
    res = _script("explain.py", "--data-dir", str(tmp_path / "empty"))
    assert res.returncode == 2 and "no model trained here yet" in res.stderr, res.stderr
    # a dataset given as its folder's path: refused, not resolved to augmented/<path> = the dataset's own folder
    before = sorted(p.name for p in toy.dataset_json("toy").parent.iterdir())
    for script in ("04_augmentation.py", "03_model.py"):
        res = _script(script, "--data-dir", str(toy.root), "--dataset", "../datasets/toy", "--materialize"
                      if script.startswith("04") else "--no-plots")  # fmt: skip
        assert res.returncode == 2 and "--dataset '../datasets/toy': use letters" in res.stderr, res.stderr
    assert sorted(p.name for p in toy.dataset_json("toy").parent.iterdir()) == before


def test_selection_options_confirm_the_dataset_or_are_refused(toy):
    """--rerun/--run/--camcol/--fields reach stages after 02 (run_scripts passes them to all): there they can only
    confirm the dataset used; naming other data must not silently train, augment or tune on this one."""
    from stargal.cli import given_selection, make_parser
    from stargal.dataset import check_selection
    from stargal.errors import StargalError

    parser = make_parser("x")
    assert given_selection(parser.parse_args([])) == {}  # the defaults name nothing
    given = given_selection(parser.parse_args(["--run", "8162", "--fields", "1", "2", "3", "9"]))
    assert given == {"run": 8162, "fields": (1, 2, 3, 9)}
    check_selection(toy, None, given)  # the dataset's run and all its fields (9: in no split, as 02 ignores it)
    for argv, words in (
        (["--run", "4510"], "--run 4510: dataset toy holds rerun 301 run 8162 camcol 6"),
        (["--camcol=4"], "--camcol 4: dataset toy holds"),
        (["--fields", "1,2"], "--fields 1 2: dataset toy is made of fields 1 2 3"),
    ):
        with pytest.raises(StargalError, match=words):
            check_selection(toy, None, given_selection(parser.parse_args(argv)))

    def outputs():  # the folder lock's own files aside
        return sorted(p.name for p in toy.root.rglob("*") if not p.name.startswith("."))

    before = outputs()
    for script, extra in (("03_model.py", ["--no-plots"]), ("04_augmentation.py", ["--materialize"])):
        res = _script(script, "--data-dir", str(toy.root), "--run", "4510", "--camcol", "4", "--fields", "30", *extra)
        assert res.returncode == 2 and "--run 4510: dataset toy holds rerun 301 run 8162" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert outputs() == before  # nothing trained or written


def _fit_toy(schedule=None, class_weight=None, learning_rate=1e-3, epochs=3, patience=3):
    """A tiny reference_base model fitted for a few epochs on toy patches; returns its history and the learning
    rate at the start of each epoch."""
    import keras

    from stargal.model import build_model
    from stargal.train import fit, set_seed

    x, y, _ = toy_patches(160, 15, seed=3, star_fraction=0.2)
    norm = {"center": np.median(x.reshape(-1, 5), 0).tolist(), "scale": [0.05] * 5}
    set_seed(0)
    model = build_model("reference_base", x.shape[1:], norm, {**TINY_HP, "learning_rate": learning_rate})
    rates = []

    class Rates(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    history = fit(
        model, x[:120], y[:120], x[120:], y[120:], batch_size=32, epochs=epochs, patience=patience, seed=0,
        schedule=schedule, class_weight=class_weight, verbose=0, normalisation=norm, callbacks=[Rates()],
    )  # fmt: skip
    return history, rates


@pytest.mark.slow
def test_plateau_schedule_halves_the_rate_when_val_loss_stalls():
    # a learning rate so small that the validation loss cannot improve by min_delta: a plateau from epoch 2 on
    _, rates = _fit_toy(schedule="plateau", learning_rate=1e-9, epochs=4, patience=3)
    assert rates[0] == pytest.approx(1e-9)
    assert rates[-1] == pytest.approx(rates[0] / 4, rel=1e-3)  # halved after each stalled epoch (patience 3 // 3)
    _, constant = _fit_toy(schedule=None, learning_rate=1e-9, epochs=3)
    assert constant == pytest.approx([1e-9] * 3)


@pytest.mark.slow
def test_balanced_class_weight_balances_the_classes_and_changes_the_fit():
    from stargal.train import class_weights

    w = class_weights(np.array([0, 0, 0, 1]))
    assert w == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}  # each class's total weight is n / 2
    assert class_weights(np.zeros(3)) == {0: 0.5, 1: 1.0}  # an absent class keeps weight 1
    _, y, _ = toy_patches(160, 15, seed=3, star_fraction=0.2)
    plain, _ = _fit_toy(epochs=1)
    balanced, _ = _fit_toy(class_weight=class_weights(y[:120]), epochs=1)
    assert balanced["loss"][0] != pytest.approx(plain["loss"][0], rel=1e-3)


@pytest.mark.slow
def test_class_weight_option_reaches_the_run(toy, tmp_path):
    from stargal.stages import training

    args = build_args(["--class-weight", "balanced", "--epochs", "1", "--architecture", "reference_base"])
    opts = options_from_args(args)
    assert opts.class_weight == "balanced"
    assert options_from_args(build_args(["--class-weight", "none"])).class_weight is None
    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(120, 60, 60), patch=15, seed=2)
    opts = TrainOptions(
        architecture="reference_base", hyperparameters=TINY_HP, epochs=1, patience=1, batch_size=64,
        class_weight="balanced", plots=False, verbose=0,
    )  # fmt: skip
    result = training.run_training(paths, "toy", opts)
    run = result["runs"][0]
    assert run["model_json"]["config"]["class_weight"] == "balanced"
    assert fsio.read_json(paths.model(run["name"]).json)["config"]["class_weight"] == "balanced"


def test_a_dataset_of_one_class_is_refused_before_training(tmp_path):
    """A dataset of stars only (built by a stage 02 that allowed it, from a star sweep alone) trained a model calling
    everything star, accuracy 1.0 everywhere, exit 0: training refuses it in one line, and no model is written."""
    from stargal.errors import StargalError
    from stargal.stages import training

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "stars", sizes=(40, 20, 20), patch=15)
    fsio.save_npy(paths.split_y("stars", "train"), np.ones(40, np.uint8))
    meta = {k: v for k, v in fsio.read_json(paths.dataset_json("stars")).items() if k != fsio.INTEGRITY_KEY}
    files = [f("stars", s) for s in ("train", "val", "test") for f in (paths.split_x, paths.split_y,
                                                                       paths.split_psf, paths.split_objects)]  # fmt: skip
    fsio.seal(paths.dataset_json("stars"), files, meta)
    opts = TrainOptions(architecture="reference_base", hyperparameters=TINY_HP, epochs=1, plots=False, verbose=0)
    with pytest.raises(StargalError, match=r"^dataset stars: its train split holds one class only \(40 stars\)"):
        training.run_training(paths, "stars", opts)
    assert not paths.latest_model.exists() and not list(paths.root.glob("models/*"))


def build_args(argv: list[str]):
    """03_model.py's parsed arguments (its own parser, loaded from the script file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("model_script", PROJECT_ROOT / "code" / "03_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser().parse_args(argv)


@pytest.mark.slow
def test_figures_belong_to_the_model_they_show(tmp_path, caplog):
    """A model retrained under its name with --no-plots (or killed before its figures) must not keep the earlier
    model's figures; a rerun draws a current model's missing or stale figures without training it again."""
    from stargal.stages import training

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(200, 80, 80), patch=15, seed=1, faint=21.0)
    opts = TrainOptions(architecture="stargal", hyperparameters=TINY_HP, epochs=1, patience=1, batch_size=64, seed=3,
                        verbose=0, tta=False, name="m")  # fmt: skip
    first = training.train_one(paths, "toy", opts)["model_json"]
    folder = paths.reports("training", "m")
    assert training.figures_current(paths, "m", first) and (folder / "learning_curves.png").is_file()

    second = training.train_one(paths, "toy", replace(opts, epochs=2, plots=False))["model_json"]
    assert not training.figures_current(paths, "m", second)
    assert not list(folder.glob("*.png"))  # the first model's figures are gone, not shown as the second's

    before = paths.model("m").json.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="stargal"):
        result = training.train_one(paths, "toy", replace(opts, epochs=2))
    assert result["skipped"] and paths.model("m").json.stat().st_mtime_ns == before
    assert "drawing them again (no retraining)" in caplog.text
    assert training.figures_current(paths, "m", second) and (folder / "learning_curves.png").is_file()

    # a redraw stopped midway leaves the set as it was (it dropped the figures first, then wrote some unsealed)
    from stargal.plots import training as tplots

    (folder / "roc.png").unlink()
    kept = {f.name: f.read_bytes() for f in folder.iterdir()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tplots, "magnitude_plot", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            training.redraw_figures(paths, "m", second, fsio.read_json(paths.model("m").metrics))
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == kept
    training.redraw_figures(paths, "m", second, fsio.read_json(paths.model("m").metrics))
    assert training.figures_current(paths, "m", second) and (folder / "roc.png").is_file()


def test_an_experiment_its_dataset_cannot_feed_is_refused_before_anything_is_written(tmp_path):
    """02 takes 7 and 9 px patches (the stargal network's minimum); the experiment's proxy network needs 11: 04
    wrote the examples, then failed with a message that did not say the experiment was what needed 11 px."""
    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "small", sizes=(40, 20, 20), patch=9, seed=1, faint=21.0)
    done = _script("04_augmentation.py", "--data-dir", str(paths.root), "--experiment", "--epochs", "1")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--experiment: dataset small has patches of 9 px, but the experiment's proxy network" in done.stderr
    assert not paths.reports("augmentation").exists()
    twice = _script("04_augmentation.py", "--data-dir", str(paths.root), "--experiment", "--policies", "none", "none")
    assert twice.returncode == 2 and "--policies: none named twice" in twice.stderr
    assert not paths.reports("augmentation").exists()


@pytest.mark.parametrize(
    "script", ["01_alignment.py", "02_preparation.py", "03_model.py", "04_augmentation.py", "explain.py", "tune.py"]
)
def test_a_stage_that_reads_earlier_outputs_refuses_a_missing_data_folder_and_makes_none(tmp_path, script):
    """A mistyped --data-dir made the folder, its parents, the lock files and reports/pipeline, before failing."""
    missing = tmp_path / "typo" / "data"
    done = _script(script, "--data-dir", str(missing))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"--data-dir {missing}: no such folder" in done.stderr
    assert not (tmp_path / "typo").exists()


def test_the_metrics_table_shows_no_mcc_for_a_split_of_one_class():
    """A test split of stars alone printed "MCC 0.0000, balanced accuracy 0.0000" as if they were scores."""
    from stargal.metrics import classification_metrics
    from stargal.stages.training_summary import metrics_table

    both = classification_metrics(np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.1, 0.3]))
    stars = classification_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.8]))
    rows = metrics_table({"val": both, "test": stars, "threshold": 0.5}).splitlines()
    val, test = (row.split() for row in rows[1:3])
    assert val[:5] == ["val", "4", "0.7500", "0.5774", "0.7500"]
    assert test[:5] == ["test", "3", "0.6667", "-", "-"]  # accuracy is the star recall; MCC is undefined


@pytest.mark.parametrize(
    "blocker, kind",
    [
        ("reports/training/m", "file"),  # trained, committed the model, then failed: "Not a directory"
        ("models/m", "file"),  # "its folder cannot be written (read-only or no permission)": it can
        ("reports", "file"),
        ("models/m/metrics.json", "folder"),
        ("reports/training/m/roc.png", "folder"),
        ("models/LATEST", "folder"),
    ],
)
def test_a_file_where_a_models_folder_goes_is_refused_before_training(tmp_path, blocker, kind):
    """`reports/training/NAME` a file: 03 trained the model, sealed it, then failed drawing its figures (exit 1, the
    model left without figures and not made the latest). Now one line naming the path before any training."""
    from stargal.errors import StargalError
    from stargal.stages import training

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(40, 20, 20), patch=15)
    place = paths.root / blocker
    place.parent.mkdir(parents=True, exist_ok=True)
    place.write_text("in the way\n") if kind == "file" else place.mkdir()
    before = set(paths.root.rglob("*"))
    what = "a file, not a folder" if kind == "file" else "a folder, not a file"
    opts = TrainOptions(architecture="reference_base", hyperparameters=TINY_HP, epochs=1, verbose=0, name="m")
    with pytest.raises(StargalError, match=rf"^{place}: {what}: stage 03 writes "):
        training.run_training(paths, "toy", opts)
    assert set(paths.root.rglob("*")) == before


def test_a_file_where_the_seeds_summary_goes_is_refused_before_training(tmp_path):
    """`--seeds 2` with a file where reports/training/seeds-ARCH-DATASET goes: both seeds were trained (sealed, one
    made the latest), then the summary failed with "File exists", exit status 1. Now one line naming it first."""
    from stargal.errors import StargalError
    from stargal.stages import training

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(40, 20, 20), patch=15)
    blocker = paths.reports("training", "seeds-reference_base-toy")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way\n")
    before = set(paths.root.rglob("*"))
    opts = TrainOptions(architecture="reference_base", hyperparameters=TINY_HP, epochs=1, verbose=0)
    with pytest.raises(StargalError, match=rf"^{blocker}: a file, not a folder: stage 03 writes the summary of the 2 "):
        training.run_training(paths, "toy", opts, seeds=[1, 2])
    assert set(paths.root.rglob("*")) == before


def test_multi_seed_runs_of_other_names_keep_their_own_summaries(tmp_path, monkeypatch):
    """`--seeds 2 --name a` then `--seeds 2 --name b` on one dataset: both wrote reports/training/seeds-ARCH-DATASET,
    so the second run's summary replaced the first's. Now each --name has its own (seeds-NAME, listing NAME-sSEED);
    without --name the summary stays at seeds-ARCH-DATASET, where it always was."""
    from stargal.stages import training

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(40, 20, 20), patch=15)

    def fake_train(paths, dataset, opts, data):  # training itself is tested elsewhere: only the summary here
        name = training.model_name(opts.resolved(), dataset)
        m = {"n": 20, "accuracy": 0.9, "mcc": 0.5 + opts.seed / 100, "roc_auc": 0.95}
        metrics = {"val": m, "test": m, "threshold": 0.5}
        model_json = {"architecture": opts.architecture, "best_epoch": 1}
        return {"name": name, "metrics": metrics, "model_json": model_json, "skipped": True}

    monkeypatch.setattr(training, "train_one", fake_train)
    monkeypatch.setattr(training, "_is_skippable", lambda *a: True)
    opts = TrainOptions(architecture="reference_base", hyperparameters=TINY_HP, epochs=1, verbose=0)
    results = {name: training.run_training(paths, "toy", replace(opts, name=name), seeds=[1, 2]) for name in "ab"}
    results[None] = training.run_training(paths, "toy", opts, seeds=[1, 2])
    place = paths.reports("training")
    summaries = {p.parent.name: fsio.read_json(p)["models"] for p in place.glob("seeds-*/summary.json")}
    assert summaries == {
        "seeds-a": ["a-s1", "a-s2"],
        "seeds-b": ["b-s1", "b-s2"],
        "seeds-reference_base-toy": ["reference_base-toy-s1", "reference_base-toy-s2"],
    }
    for name, folder in (("a", "seeds-a"), ("b", "seeds-b"), (None, "seeds-reference_base-toy")):
        assert results[name]["report"] == place / folder / "summary.json"  # and 03 says where it is
        assert f"summary of the seeds: {place / folder / 'summary.json'}" in run_summary(results[name])


def test_augmentation_comparisons_of_other_names_keep_their_own_folders(tmp_path, monkeypatch):
    """`--compare-augmentation --name a`, then `--name b`, on one dataset wrote one augmentation-comparison-ARCH-DATASET
    folder: the second replaced the first's table. Now --name names the folder (the default stays as it was)."""
    from stargal.stages import training

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(40, 20, 20), patch=15)

    def fake_train(paths, dataset, opts, data):  # training itself is tested elsewhere: only the comparison here
        m = {"n": 20, "accuracy": 0.9, "mcc": 0.5, "roc_auc": 0.95}
        metrics = {"train": m, "val": m, "test": m, "threshold": 0.5}
        return {"name": training.model_name(opts, dataset), "metrics": metrics, "model_json": {"best_epoch": 1}}

    monkeypatch.setattr(training, "train_one", fake_train)
    opts = TrainOptions(architecture="reference_base", hyperparameters=TINY_HP, epochs=1, verbose=0, plots=False)
    for name in ("a", "b", None):
        training.compare_augmentation(paths, "toy", replace(opts, name=name))
    place = paths.reports("training")
    made = {p.parent.name: fsio.read_json(p)["rows"][0]["models"] for p in place.glob("*/comparison.json")}
    assert made == {
        "augmentation-comparison-a": ["a-aug_none-s42"],
        "augmentation-comparison-b": ["b-aug_none-s42"],
        "augmentation-comparison-reference_base-toy": ["reference_base-toy-aug_none-s42"],
    }


@pytest.mark.slow
def test_an_ensemble_whose_place_is_taken_is_refused_before_its_members_are_trained(tmp_path):
    """`--seeds 2 --ensemble` with a file where the ensemble's folder goes trained both members, then failed."""
    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(40, 20, 20), patch=15)
    blocker = paths.model_dir("stargal-toy-ensemble")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way\n")
    done = _script("03_model.py", "--data-dir", str(paths.root), "--epochs", "1", "--seeds", "2", "--ensemble", "-q")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"03_model.py: error: {blocker}: a file, not a folder: stage 03 writes the model stargal-toy-ensemble there; "
        "move or delete it, or give another --name"
    ]
    assert [p.name for p in paths.models_root.iterdir()] == [blocker.name]


def test_a_diverging_training_is_one_line_and_writes_no_model(tmp_path):
    """--learning-rate 1e6 (or inf) made every loss NaN: the metrics then failed on the NaN p(star) with
    "unexpected ValueError: Input contains NaN ... please report it" (exit status 1). It is a one-line error naming
    the learning rate, and no model is written."""
    from stargal.errors import StargalError
    from stargal.stages import training

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(40, 20, 20), patch=15)
    # one architecture is enough: inf never reaches training (--learning-rate refuses it, test below)
    for architecture, rate in (("stargal", 1e6),):
        hp = {**TINY_HP, "learning_rate": rate}
        opts = TrainOptions(architecture=architecture, hyperparameters=hp, epochs=1, plots=False, verbose=0)
        with pytest.raises(StargalError, match=r"training diverged .*give a smaller --learning-rate"):
            training.run_training(paths, "toy", opts)
    assert not paths.latest_model.exists() and not list(paths.root.glob("models/*"))


@pytest.mark.parametrize("part", ["examples", "experiment"])
def test_a_stopped_augmentation_report_rebuild_leaves_the_last_good_set(tmp_path, monkeypatch, part):
    """04's examples (augmentation.json) and experiment (experiment.json) were written file by file under their final
    names and sealed after: a rebuild (--force, another --seed or --epochs) stopped while drawing its figure had
    already replaced augmentation.md or experiment.csv/.md, so the last good set read as damaged and was lost.
    Written as an output set, the previous set survives whole and is still current."""
    from stargal.plots import augmentation as aplots
    from stargal.stages import augmentation as stage

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(40, 20, 20), patch=25)
    report = paths.reports("augmentation")

    def run(**kwargs):
        if part == "examples":
            return stage.write_examples(paths, "toy", **kwargs)
        return stage.experiment(paths, "toy", epochs=1, batch_size=32, policies=["none"], max_train=40, **kwargs)

    record = report / ("augmentation.json" if part == "examples" else "experiment.json")
    run()
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    assert fsio.check_seal(record).ok

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    if part == "examples":  # after both figures, at the summary
        monkeypatch.setattr(stage, "summary_text", stop)
    else:  # after the table and its Markdown, at the figure
        monkeypatch.setattr(aplots, "experiment_plot", stop)
    with pytest.raises(KeyboardInterrupt):
        run(seed=7)  # other settings: a rebuild, whose new files differ from the set in place
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before  # no file replaced, no temporary left
    assert fsio.check_seal(record).ok
    monkeypatch.undo()
    assert run()["skipped"]  # still current: nothing to redo


def test_a_learning_rate_that_is_not_a_finite_positive_number_is_refused_before_training():
    """--learning-rate inf passed the check (inf > 0) and the run trained on NaN losses to the end."""
    from stargal.errors import StargalError

    for bad, shown in (("inf", "inf"), ("nan", "nan"), ("0", "0.0"), ("-1e-3", "-0.001")):
        with pytest.raises(StargalError, match=rf"^--learning-rate: must be a positive number, got {shown}$"):
            options_from_args(build_args([f"--learning-rate={bad}"]))
    assert options_from_args(build_args(["--learning-rate", "1e-3"])).hyperparameters["learning_rate"] == 1e-3
