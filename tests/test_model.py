"""Model building, the in-model normalisation, save/reload and test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from stargal import model as mdl
from stargal.errors import StargalError

NORM = {"method": "asinh", "center": [0.0, 0.01, 0.02, 0.0, -0.01], "scale": [0.05, 0.02, 0.02, 0.03, 0.09]}


@pytest.fixture(scope="module")
def raw():
    return np.random.default_rng(0).normal(0, 0.05, (16, 15, 15, 5)).astype(np.float32)


@pytest.mark.parametrize("arch", mdl.ARCHITECTURES)
def test_build_model_shapes(arch, raw):
    model = mdl.build_model(arch, raw.shape[1:], NORM, {"filters": 8, "dense_units": 16})
    psf = np.full((len(raw), 5), 2.0, np.float32) if arch in mdl.PSF_ARCHITECTURES else None
    assert mdl.takes_psf(model) == (psf is not None)
    assert mdl.patch_shape(model) == raw.shape[1:]
    p = mdl.predict(model, raw, psf)
    assert p.shape == (len(raw),) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    assert model.get_layer("normalisation").input is model.get_layer("patch").output
    assert mdl.flops_per_sample(model) > 0


@pytest.mark.parametrize("arch", mdl.ARCHITECTURES)
def test_each_networks_smallest_patch_is_exact(arch, monkeypatch):
    """MIN_PATCH_SIZE is what the layers allow: the network builds and runs at it, and Keras itself refuses two pixels
    less (so 02 and 03 can say it in one line instead of a Keras error deep in training)."""
    from stargal.config import MIN_PATCH_SIZE

    smallest = MIN_PATCH_SIZE[arch]
    x = np.zeros((2, smallest, smallest, 5), np.float32)
    psf = np.full((2, 5), 2.0, np.float32) if arch in mdl.PSF_ARCHITECTURES else None
    assert mdl.predict(mdl.build_model(arch, x.shape[1:], NORM), x, psf).shape == (2,)
    with pytest.raises(StargalError, match=rf"^patches of {smallest - 2} px: the {arch} network needs at least"):
        mdl.build_model(arch, (smallest - 2, smallest - 2, 5), NORM)
    monkeypatch.setitem(MIN_PATCH_SIZE, arch, 1)  # without the check, Keras refuses it too
    with pytest.raises(ValueError):
        mdl.build_model(arch, (smallest - 2, smallest - 2, 5), NORM)


def test_reference_regularised_layout():
    model = mdl.build_model("reference_regularised", (25, 25, 5), NORM)
    kinds = [type(layer).__name__ for layer in model.layers[2:]]
    assert kinds == [
        "Conv2D",
        "MaxPooling2D",
        "SpatialDropout2D",
        "Dropout",
        "Conv2D",
        "MaxPooling2D",
        "SpatialDropout2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    conv2 = model.layers[6]
    assert conv2.filters == 64 and conv2.kernel_regularizer.l2 == pytest.approx(0.01)
    assert model.layers[-2].rate == 0.5 and model.layers[-3].units == 128
    assert type(model.optimizer).__name__ == "Adam"


def test_normalisation_layer_is_asinh(raw):
    layer = mdl.normalisation_layer(NORM)
    out = np.asarray(layer(raw))
    expected = np.arcsinh((raw - np.array(NORM["center"])) / np.array(NORM["scale"]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    bad = raw.copy()
    bad[0, 0, 0, 0] = np.nan
    assert np.isfinite(np.asarray(layer(bad))).all()


@pytest.mark.slow
def test_save_reload_identical_predictions(tmp_path, raw):
    model = mdl.build_model("stargal", raw.shape[1:], NORM, {"filters": 8, "dense_units": 16})
    psf = np.random.default_rng(1).uniform(1.5, 2.5, (len(raw), 5)).astype(np.float32)
    labels = (np.arange(len(raw)) % 2).astype(np.float32)
    model.fit({"patch": raw, "psf": psf}, labels, epochs=1, verbose=0)  # move BN statistics
    path = tmp_path / "m" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    again = mdl.load_model(path.parent)
    np.testing.assert_array_equal(mdl.predict(again, raw, psf), mdl.predict(model, raw, psf))
    cfg = again.get_layer("normalisation").get_config()
    assert cfg["center"] == NORM["center"] and cfg["scale"] == NORM["scale"]


def test_tta_is_invariant_under_symmetries(raw):
    from stargal.augment import apply_d4

    model = mdl.build_model("reference_base", raw.shape[1:], NORM, {"filters": 4, "dense_units": 8})
    p = mdl.predict(model, raw, tta=True)
    rotated = np.asarray(apply_d4(raw, np.full(len(raw), 5)))
    np.testing.assert_allclose(mdl.predict(model, rotated, tta=True), p, rtol=1e-5, atol=1e-6)


def test_tta_reuses_a_known_single_pass_as_its_identity_term(raw):
    model = mdl.build_model("reference_base", raw.shape[1:], NORM, {"filters": 4, "dense_units": 8})
    single = mdl.predict(model, raw)
    mean = mdl.predict(model, raw, tta=True)
    np.testing.assert_allclose(mdl.predict(model, raw, tta=True, identity=single), mean, atol=1e-6)
    # the given values are what the mean uses: one eighth of a shift shows in it
    shifted = mdl.predict(model, raw, tta=True, identity=single + 0.8)
    np.testing.assert_allclose(shifted - mean, 0.1, atol=1e-5)


def test_errors(tmp_path):
    with pytest.raises(StargalError):
        mdl.build_model("vgg", (25, 25, 5), NORM)
    with pytest.raises(StargalError):
        mdl.build_model("stargal", (25, 25, 5), {"method": "asinh", "center": [0] * 5, "scale": [0] * 5})
    with pytest.raises(StargalError):
        mdl.load_model(tmp_path / "missing")


@pytest.mark.parametrize("shape", [(13, 13, 5), (15, 15, 4)], ids=["patch-size", "bands"])
def test_patches_the_model_does_not_take_are_refused_in_one_line(shape):
    """A model.json whose patch_size or bands misdescribe the network (or another dataset's patches): TensorFlow's
    many-line ValueError, "unexpected" to predict.py and explain.py, before; one line naming both shapes now."""
    model = mdl.build_model("reference_base", (15, 15, 5), NORM, {"filters": 4, "dense_units": 8})
    with pytest.raises(StargalError, match=rf"patches of shape \({', '.join(map(str, shape))}\).*takes \(15, 15, 5\)"):
        mdl.predict(model, np.zeros((2, *shape), np.float32))
