"""Integrated Gradients and Grad-CAM: shapes, completeness, and maps that follow the object."""

from __future__ import annotations

import numpy as np
import pytest
import toy_models as toy

from stargal import explain, fsio
from stargal.model import ARCHITECTURES, build_model, load_model, takes_psf

P = 15


@pytest.fixture(scope="module")
def model_dir():
    return toy.trained_toy_model_dir(None, P, "drop")


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


def stars_at(dx: float, dy: float, n: int = 6, flux: float = 60.0) -> np.ndarray:
    """n noisy star patches with the star offset by (dx, dy) pixels from the patch centre."""
    rng = np.random.default_rng(11)
    c = P // 2
    out = np.empty((n, P, P, 5), np.float32)
    for i in range(n):
        img = toy.source_image((P, P), c + dx, c + dy, flux, "star", rng)
        img += rng.normal(size=img.shape).astype(np.float32) * toy.NOISE[:, None, None]
        out[i] = np.moveaxis(img, 0, -1)
    return out


def test_integrated_gradients_shape_and_completeness(model):
    x, _ = toy.toy_patches(6, P, seed=4)
    ig = explain.integrated_gradients(model, x, steps=64)
    assert ig.shape == x.shape and ig.dtype == np.float32
    p = model(x).numpy().ravel()
    p0 = model(np.zeros_like(x)).numpy().ravel()
    # the attributions add up to the change of p_star from the empty-sky baseline
    np.testing.assert_allclose(ig.sum(axis=(1, 2, 3)), p - p0, atol=0.05)


def test_integrated_gradients_follow_the_source(model):
    centred = explain.integrated_gradients(model, stars_at(0, 0))
    shifted = explain.integrated_gradients(model, stars_at(4, -3))
    assert np.all(explain.central_fraction(centred, 3.0) > 0.6)
    assert np.all(explain.central_fraction(shifted, 3.0) < 0.3)
    c = P // 2
    np.testing.assert_allclose(explain.attribution_centroid(centred), [[c, c]] * 6, atol=1.0)
    np.testing.assert_allclose(explain.attribution_centroid(shifted), [[c + 4, c - 3]] * 6, atol=1.5)
    # zero input gives zero attribution (the baseline itself)
    assert np.all(explain.integrated_gradients(model, np.zeros((1, P, P, 5), np.float32)) == 0)


def test_grad_cam_shape_range_and_response(model):
    x_c, x_s = stars_at(0, 0), stars_at(4, -3)
    cam_c, cam_s = explain.grad_cam(model, x_c), explain.grad_cam(model, x_s)
    assert cam_c.shape == (6, P, P) and cam_c.dtype == np.float32
    assert cam_c.min() >= 0 and np.allclose(cam_c.max(axis=(1, 2)), 1.0)
    shift = explain.attribution_centroid(cam_s) - explain.attribution_centroid(cam_c)
    assert np.all(shift[:, 0] > 1.0) and np.all(shift[:, 1] < -0.7), shift


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_last_conv_layer_of_project_models(architecture):
    x, _ = toy.toy_patches(4, 25, seed=2)
    model = build_model(architecture, (25, 25, 5), toy.normalisation(x))
    psf = np.full((len(x), 5), 2.0, np.float32) if takes_psf(model) else None
    layer = explain.last_conv_layer(model)
    assert len(layer.output.shape) == 4
    assert explain.grad_cam(model, x, psf=psf).shape == (4, 25, 25)
    assert explain.integrated_gradients(model, x, psf=psf, steps=4).shape == x.shape


def test_select_examples():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.2, 0.8, 0.1, 0.7, 0.3, 0.2, 0.95])
    groups = explain.select_examples(y, p, 0.5, per_group=2, seed=0)
    assert len(groups["star_correct"]) == 2 and set(groups["star_correct"]) <= {0, 2, 7}
    assert groups["star_as_galaxy"].tolist() == [1]
    assert groups["galaxy_as_star"].tolist() == [4]
    assert set(groups["galaxy_correct"]) <= {3, 5, 6}
    again = explain.select_examples(y, p, 0.5, per_group=2, seed=0)
    assert all(np.array_equal(groups[k], again[k]) for k in groups)


@pytest.mark.slow
def test_explain_runner_writes_grids(tmp_path, model_dir):
    from stargal.fsio import save_npy
    from stargal.paths import DataPaths
    from stargal.stages.explain import run_explain

    paths = DataPaths(tmp_path / "data")
    x, y = toy.toy_patches(40, P, seed=8)
    y[:4] = 1 - y[:4]  # mislabel four clear objects so that every group has members
    save_npy(paths.split_x("toy", "test"), x)
    save_npy(paths.split_y("toy", "test"), y)
    fsio.seal(paths.dataset_json("toy"), [paths.split_x("toy", "test"), paths.split_y("toy", "test")], {"name": "toy"})
    result = run_explain(paths, model=str(model_dir), dataset="toy", per_group=2, steps=8)
    assert result["counts"] == {"star_correct": 2, "star_as_galaxy": 2, "galaxy_correct": 2, "galaxy_as_star": 2}
    folder = paths.reports("explain", "toy_p15_drop")
    for group in result["counts"]:
        assert (folder / f"{group}.png").stat().st_size > 10000
    lines = (folder / "examples.csv").read_text().splitlines()
    assert len(lines) == 9 and lines[0].startswith("group,index,objid,label,p_star")
    assert result["skipped"] is False

    # idempotent: the same request again is skipped, other settings or --force redo it
    stamp = (folder / "examples.csv").stat().st_mtime_ns
    again = run_explain(paths, model=str(model_dir), dataset="toy", per_group=2, steps=8)
    assert again["skipped"] and again["counts"] == result["counts"]
    assert (folder / "examples.csv").stat().st_mtime_ns == stamp
    assert not run_explain(paths, model=str(model_dir), dataset="toy", per_group=1, steps=8)["skipped"]
    assert not run_explain(paths, model=str(model_dir), dataset="toy", per_group=1, steps=8, force=True)["skipped"]


def test_explain_stopped_midway_keeps_the_previous_set_whole(tmp_path, model_dir, monkeypatch):
    """explain.py --force stopped after its first figure had replaced the old one: the set's seal broke and the
    report called the explanations stale. Now the figures and table appear with their record, or not at all."""
    from stargal.fsio import save_npy
    from stargal.paths import DataPaths
    from stargal.stages.explain import run_explain

    paths = DataPaths(tmp_path / "data")
    x, y = toy.toy_patches(40, P, seed=8)
    y[:4] = 1 - y[:4]
    save_npy(paths.split_x("toy", "test"), x)
    save_npy(paths.split_y("toy", "test"), y)
    fsio.seal(paths.dataset_json("toy"), [paths.split_x("toy", "test"), paths.split_y("toy", "test")], {"name": "toy"})
    run_explain(paths, model=str(model_dir), dataset="toy", per_group=2, steps=8)
    folder = paths.reports("explain", "toy_p15_drop")
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    real, calls = explain.integrated_gradients, []

    def stopped_on_the_second_group(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C once the first group's figure is written
        return real(*args, **kwargs)

    monkeypatch.setattr(explain, "integrated_gradients", stopped_on_the_second_group)
    with pytest.raises(KeyboardInterrupt):
        run_explain(paths, model=str(model_dir), dataset="toy", per_group=2, steps=16, force=True)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before  # no temporary file left, nothing replaced
    assert fsio.check_seal(folder / "explain.json").ok


def test_difficulty_markdown_from_numbers():
    from stargal import difficulty
    from stargal.metrics import by_magnitude

    rng = np.random.default_rng(0)
    n = 600
    mag = rng.uniform(15, 23, n)
    y = (rng.random(n) < 0.3).astype(int)
    # predictions that degrade towards the faint end
    noise = np.clip((mag - 17) / 6, 0, 1)
    p = np.clip(np.where(y == 1, 0.95, 0.05) + rng.normal(0, 0.45 * noise), 0, 1)
    rows = by_magnitude(y, p, mag, 0.5)
    metrics = {"val": {"by_magnitude": []}, "test": {"overall": {}, "by_magnitude": rows}}
    assert difficulty.find_by_magnitude(metrics) == rows
    neighbour = np.where(np.arange(n) % 10 == 0, 2.0, 10.0)
    text = difficulty.difficulty_markdown(
        rows, y=y, p=p, mag=mag, neighbour=neighbour, figure="examples.png", model="m"
    )
    assert sum(line.startswith("|") for line in text.splitlines()) == len(rows) + 2  # header, separator, bins
    faint, bright = rows[-1], rows[1]
    assert faint["accuracy"] < bright["accuracy"]
    assert f"{100 * faint['accuracy']:.1f} %" in text and "![Example patches" in text
    assert 'neighbour within 3" (60)' in text
    # open bins in words that cannot read as negative magnitudes ("r -16", "r 22-"): table and findings alike
    assert "(r >= 22, " in text and "In the faintest bin (r >= 22)" in text and "| >= 22 |" in text
    assert "r 22-" not in text and "| -16 |" not in text
    small = [{**rows[1], "n": 5, "accuracy": 1.0}, *rows[1:]]  # a 5-object bin at 100 %: not quoted as the best
    text = difficulty.difficulty_markdown(small, y=y, p=p, mag=mag, neighbour=neighbour, model="m")
    assert "over the bins of 20 objects or more (a smaller bin's accuracy is mostly chance)." in text
    assert ", 5 objects)" not in text
    groups = difficulty.select_examples(y, p, mag, neighbour, 0.5, per_row=3)
    assert all(len(v) <= 3 for v in groups.values()) and "most confident errors" in groups
    err = groups["most confident errors"]
    assert np.all((p[err] >= 0.5) != (y[err] == 1))


def test_neighbour_distance():
    from stargal.geometry import nearest_neighbour_arcsec

    d = nearest_neighbour_arcsec([10.0, 10.0 + 2 / 3600, 10.1], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(d[:2], 2.0, rtol=1e-6)
    assert d[2] > 300


def test_difficulty_runner(tmp_path, model_dir):
    from stargal.fsio import save_npy
    from stargal.paths import DataPaths
    from stargal.stages.explain import run_difficulty
    from stargal.tables import OBJECT_DTYPE, write_table

    paths = DataPaths(tmp_path / "data")
    x, y = toy.toy_patches(60, P, seed=9)
    save_npy(paths.split_x("toy", "test"), x)
    save_npy(paths.split_y("toy", "test"), y)
    objects = np.zeros(len(y), dtype=OBJECT_DTYPE)
    objects["ra"] = 10 + np.arange(len(y)) * 2e-3
    objects["ra"][1] = objects["ra"][0] + 1 / 3600  # one close pair: a blend
    objects["label"] = y
    objects["r_psfmag"] = np.linspace(15, 23, len(y))
    write_table(paths.split_objects("toy", "test"), objects)
    split_files = [paths.split_x("toy", "test"), paths.split_y("toy", "test"), paths.split_objects("toy", "test")]
    fsio.seal(paths.dataset_json("toy"), split_files, {"name": "toy"})  # a dataset is used only when sealed
    result = run_difficulty(paths, model=str(model_dir), dataset="toy")
    assert result["by_magnitude_source"] == "measured"  # the toy model has no metrics.json
    text = (result["folder"] / "difficulty.md").read_text()
    assert text == result["markdown"] and "| r PSF mag |" in text and 'neighbour within 3" (2)' in text
    assert (result["folder"] / "examples.png").stat().st_size > 10000
    again = run_difficulty(paths, model=str(model_dir), dataset="toy")
    assert again["skipped"] and again["markdown"] == text and again["by_magnitude_source"] == "measured"
    assert not run_difficulty(paths, model=str(model_dir), dataset="toy", force=True)["skipped"]


def test_patches_are_scored_as_the_model_was_evaluated(tmp_path, model_dir):
    """A model evaluated with test-time augmentation has its threshold chosen on the 8-symmetry mean: explain.py
    scored single passes against it, so its groups and counts disagreed with the evaluation's table."""
    import csv
    import shutil

    from stargal.fsio import save_npy
    from stargal.model import predict
    from stargal.paths import DataPaths, ModelFiles
    from stargal.stages.explain import run_explain

    paths = DataPaths(tmp_path / "data")
    x, y = toy.toy_patches(40, P, seed=8)
    save_npy(paths.split_x("toy", "test"), x)
    save_npy(paths.split_y("toy", "test"), y)
    fsio.seal(paths.dataset_json("toy"), [paths.split_x("toy", "test"), paths.split_y("toy", "test")], {"name": "toy"})
    files = ModelFiles(tmp_path / "tta-model")
    shutil.copytree(model_dir, files.folder)
    meta = {k: v for k, v in fsio.read_json(files.json).items() if k != fsio.INTEGRITY_KEY}
    fsio.seal(files.json, [files.keras], {**meta, "tta": True})
    result = run_explain(paths, model=str(files.folder), dataset="toy", per_group=3, steps=4)
    network = load_model(files.folder)
    mean, single = predict(network, x, tta=True), predict(network, x, tta=False)
    assert np.abs(mean - single).max() > 1e-3  # the two scorings differ on these patches
    with open(result["folder"] / "examples.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(float(r["p_star"]) == pytest.approx(mean[int(r["index"])], abs=1e-4) for r in rows)


def _difficulty_dataset(paths, name: str, seed: int) -> None:
    from stargal.fsio import save_npy
    from stargal.tables import OBJECT_DTYPE, write_table

    x, y = toy.toy_patches(60, P, seed=seed)
    save_npy(paths.split_x(name, "test"), x)
    save_npy(paths.split_y(name, "test"), y)
    objects = np.zeros(len(y), dtype=OBJECT_DTYPE)
    objects["ra"] = 10 + np.arange(len(y)) * 2e-3
    objects["label"] = y
    objects["r_psfmag"] = np.linspace(15, 23, len(y))
    write_table(paths.split_objects(name, "test"), objects)
    files = [paths.split_x(name, "test"), paths.split_y(name, "test"), paths.split_objects(name, "test")]
    fsio.seal(paths.dataset_json(name), files, {"name": name})


def test_difficulty_of_another_dataset_is_measured_on_it_all(tmp_path, model_dir):
    """metrics.json's per-magnitude table is of the test split the model was trained with: on another dataset (or
    another build of its own) the table is measured there, like the rest of the page."""
    import shutil

    from stargal.dataset import dataset_identity
    from stargal.paths import DataPaths, ModelFiles
    from stargal.stages.explain import run_difficulty

    paths = DataPaths(tmp_path / "data")
    _difficulty_dataset(paths, "own", seed=9)
    _difficulty_dataset(paths, "other", seed=10)
    files = ModelFiles(tmp_path / "model")
    shutil.copytree(model_dir, files.folder)
    bins = [{"bin": "-99", "n": 1234, "stars": 1, "accuracy": 0.5, "mcc": 0.0}]
    fsio.write_json(files.metrics, {"test": {"n": 1234}, "by_magnitude": {"test": bins}})
    meta = {k: v for k, v in fsio.read_json(files.json).items() if k != fsio.INTEGRITY_KEY}
    fsio.seal(files.json, [files.keras, files.metrics], {**meta, "inputs": {"dataset": dataset_identity(paths, "own")}})

    assert run_difficulty(paths, model=str(files.folder), dataset="own")["by_magnitude_source"] == "metrics.json"
    result = run_difficulty(paths, model=str(files.folder), dataset="other")
    assert result["by_magnitude_source"] == "measured" and "1234" not in result["markdown"]


def test_a_lone_keras_file_is_refused_in_one_line(tmp_path, model_dir):
    import shutil

    from stargal.errors import StargalError
    from stargal.paths import DataPaths
    from stargal.stages.explain import run_explain

    paths = DataPaths(tmp_path / "data")
    _difficulty_dataset(paths, "own", seed=9)
    lone = tmp_path / "elsewhere" / "mine.keras"
    lone.parent.mkdir()
    shutil.copy(model_dir / "model.keras", lone)
    with pytest.raises(StargalError, match=r"^--model .*mine\.keras: a \.keras file on its own .*model's name"):
        run_explain(paths, model=str(lone), dataset="own")
    folder = shutil.copytree(model_dir, tmp_path / "copy")
    shutil.copy(folder / "model.keras", folder / "mine.keras")  # beside a model.json, but not the folder's network
    with pytest.raises(StargalError, match=r"mine\.keras: a \.keras file on its own"):
        run_explain(paths, model=str(folder / "mine.keras"), dataset="own")
    result = run_explain(paths, model=str(model_dir / "model.keras"), dataset="own", per_group=1, steps=4)
    assert result["skipped"] is False  # the model.keras of a model folder is that model


def test_a_model_of_an_earlier_build_of_its_own_dataset_is_not_explained(tmp_path, model_dir):
    """Its dataset rebuilt under the name: the report leaves the model's numbers out, and explain.py explained it
    on the new build without a word."""
    import shutil

    from stargal.errors import StargalError
    from stargal.paths import DataPaths, ModelFiles
    from stargal.stages.explain import run_difficulty, run_explain

    paths = DataPaths(tmp_path / "data")
    _difficulty_dataset(paths, "own", seed=9)
    files = ModelFiles(tmp_path / "model")
    shutil.copytree(model_dir, files.folder)
    meta = {k: v for k, v in fsio.read_json(files.json).items() if k != fsio.INTEGRITY_KEY}
    fsio.seal(files.json, [files.keras], {**meta, "dataset": "own", "inputs": {"dataset": "an earlier build"}})
    for run in (run_difficulty, run_explain):
        with pytest.raises(
            StargalError, match=r"trained on an earlier build of dataset own .*03_model.py --dataset own"
        ):
            run(paths, model=str(files.folder))
    assert not any(paths.reports().rglob("*.*"))  # nothing written
    _difficulty_dataset(paths, "other", seed=10)  # another dataset, named: an analysis of the model there
    assert not run_difficulty(paths, model=str(files.folder), dataset="other")["skipped"]


def test_a_model_whose_dataset_is_not_here_points_to_dataset(tmp_path, model_dir):
    """explain.py --model pretrained said "dataset ... not found (run 02_preparation.py)" only."""
    from stargal.errors import StargalError
    from stargal.paths import DataPaths
    from stargal.stages.explain import run_explain

    paths = DataPaths(tmp_path / "data")
    with pytest.raises(StargalError, match=r"not found \(run 02_preparation.py, or name one of this folder's datasets "
                       r"with --dataset\)"):  # fmt: skip
        run_explain(paths, model=str(model_dir))
    with pytest.raises(StargalError, match=r"'mine' not found \(run 02_preparation.py\)$"):
        run_explain(paths, model=str(model_dir), dataset="mine")


def test_difficulty_markdown_leaves_out_an_mcc_of_one_class_from_an_older_metrics_file():
    """metrics.json written before stargal recorded an undefined MCC as null held 0.0 for a bin of one class."""
    from stargal import difficulty

    rows = [
        {"bin": "<18", "n": 40, "stars": 40, "galaxies": 0, "accuracy": 0.975, "mcc": 0.0},
        {"bin": "18-20", "n": 40, "stars": 20, "galaxies": 20, "accuracy": 0.9, "mcc": 0.8123},
    ]
    text = difficulty.difficulty_markdown(rows)
    bright = next(line for line in text.splitlines() if line.startswith("| <18"))
    assert "0.000" not in bright and "0.812" in text
