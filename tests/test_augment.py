"""Augmentations: exact D4 group elements, label/shape preservation, streamed vs materialised paths."""

from __future__ import annotations

import numpy as np
import pytest

from stargal import augment as aug

P, C = 7, 5


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    return rng.normal(size=(6, P, P, C)).astype(np.float32), (np.arange(6) % 2).astype(np.uint8)


def test_d4_numpy_elements_are_distinct_and_closed():
    x = np.random.default_rng(0).normal(size=(P, P, C))
    images = [aug.d4_numpy(x, k) for k in range(aug.D4_SIZE)]
    flat = np.stack([im.ravel() for im in images])
    assert len({row.tobytes() for row in flat}) == aug.D4_SIZE  # eight distinct transforms, no duplicate
    for a in range(aug.D4_SIZE):
        for b in range(aug.D4_SIZE):
            composed = aug.d4_numpy(aug.d4_numpy(x, a), b)
            c = aug.d4_compose(a, b)
            np.testing.assert_array_equal(composed, images[c])  # closure: b after a is a group element
    # identity, inverses exist, the named elements are what they say
    assert aug.d4_compose(1, 3) == 0 and aug.d4_compose(4, 4) == 0
    np.testing.assert_array_equal(images[4], x[:, ::-1])
    np.testing.assert_array_equal(images[6], x[::-1, :])
    np.testing.assert_array_equal(images[1], np.rot90(x))


@pytest.mark.slow
def test_tf_d4_matches_numpy_reference(batch):
    x, _ = batch
    k = np.array([0, 1, 2, 3, 4, 7], np.int32)
    out = np.asarray(aug.apply_d4(x, k))
    assert out.shape == x.shape and out.dtype == np.float32
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i], aug.d4_numpy(x[i], int(k[i])))
    # a permutation: pixel values are preserved exactly
    np.testing.assert_array_equal(np.sort(out.ravel()), np.sort(x.ravel()))


@pytest.mark.slow
def test_policies_draw_only_their_group_elements(batch):
    x, _ = batch
    for name, allowed in (("rotation", aug.ROTATIONS), ("reflection", aug.REFLECTIONS)):
        params = aug.draw_parameters(400, C, aug.policy(name), np.array([1, 2], np.int64))
        ks = np.asarray(params["d4"])
        assert set(ks.tolist()) == set(allowed)
    ks = np.asarray(aug.draw_parameters(4000, C, aug.policy("d4"), np.array([5, 6]))["d4"])
    counts = np.bincount(ks, minlength=8)
    assert counts.min() > 400  # uniform over the eight elements (expected 500 each)
    assert aug.draw_parameters(8, C, aug.policy("none"), np.array([1, 1])) == {}


def test_brightness_is_in_normalised_units(batch):
    x, _ = batch
    scale = np.array([0.5, 1.0, 2.0, 4.0, 8.0], np.float32)
    offsets = np.tile(np.array([[1.0, -1.0, 0.5, 0.0, 2.0]], np.float32), (len(x), 1))
    out = np.asarray(aug.apply_brightness(x, offsets, scale))
    np.testing.assert_allclose(
        out - x, np.broadcast_to(offsets[:, None, None, :] * scale, x.shape), rtol=1e-6, atol=1e-6
    )


def test_blur_preserves_flux_and_smooths():
    x = np.zeros((2, 15, 15, C), np.float32)
    x[:, 7, 7, :] = 1.0
    out = np.asarray(aug.apply_blur(x, 1.0))
    np.testing.assert_allclose(out.sum(axis=(1, 2)), 1.0, rtol=1e-5)  # away from edges flux is kept
    assert out[0, 7, 7, 0] == pytest.approx(aug.gaussian_kernel(1.0)[3] ** 2, rel=1e-5)
    mask = np.array([True, False])
    partial = np.asarray(aug.apply_blur(x, 1.0, mask))
    np.testing.assert_array_equal(partial[1], x[1])
    np.testing.assert_allclose(partial[0], out[0])


def test_stream_preserves_labels_shapes_and_is_seeded(batch):
    x, y = batch
    scale = np.ones(C, np.float32)
    ds = aug.make_dataset(x, y, batch_size=4, config=aug.policy("combination"), scale=scale, seed=1, shuffle=False)
    xs, ys = zip(*[(np.asarray(a), np.asarray(b)) for a, b in ds], strict=True)
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    assert xs.shape == x.shape and xs.dtype == np.float32
    np.testing.assert_array_equal(ys, y)  # labels travel with their (unshuffled) samples
    assert not np.allclose(xs, x)
    again = np.concatenate(
        [
            np.asarray(a)
            for a, _ in aug.make_dataset(
                x, y, batch_size=4, config=aug.policy("combination"), scale=scale, seed=1, shuffle=False
            )
        ]
    )
    np.testing.assert_array_equal(xs, again)  # same seed, same stream


def test_stream_symmetries_are_exact_group_elements(batch):
    x, y = batch
    ds = aug.make_dataset(x, y, batch_size=6, config=aug.policy("d4"), scale=np.ones(C), seed=4, shuffle=True)
    for _ in range(2):  # two epochs: reshuffled and redrawn
        for xb, yb in ds:
            for img, label in zip(np.asarray(xb), np.asarray(yb), strict=True):
                matches = [
                    (i, k)
                    for i in range(len(x))
                    for k in range(aug.D4_SIZE)
                    if np.array_equal(img, aug.d4_numpy(x[i], k))
                ]
                assert len(matches) == 1  # exactly one source sample and one group element
                assert y[matches[0][0]] == label


def test_materialized_uses_the_same_transformations(batch):
    x, y = batch
    scale = np.linspace(1, 2, C).astype(np.float32)
    chunks = list(aug.materialize_chunks(x, y, scale, seed=3, chunk=4))
    xs = np.concatenate([c[0] for c in chunks])
    ys = np.concatenate([c[1] for c in chunks])
    n = len(x)
    assert xs.shape == (aug.materialized_size(n), P, P, C) and xs.dtype == np.float32
    np.testing.assert_array_equal(ys, np.tile(y, aug.D4_SIZE * len(aug.MATERIALIZED_VARIANTS)))
    copies = xs.reshape(aug.D4_SIZE, len(aug.MATERIALIZED_VARIANTS), n, P, P, C)
    for k in range(aug.D4_SIZE):
        plain = np.asarray(aug.apply_d4(x, np.full(n, k)))
        np.testing.assert_array_equal(copies[k, 0], plain)
        np.testing.assert_allclose(copies[k, 2], np.asarray(aug.apply_blur(plain, aug.BLUR_SIGMA)), atol=1e-6)
        shift = copies[k, 1] - plain  # a constant per sample and channel, in units of scale
        assert np.allclose(shift, shift[:, :1, :1, :], atol=1e-5)
    # all copies of a sample are distinct (no duplicates)
    per_sample = copies.transpose(2, 0, 1, 3, 4, 5).reshape(n, -1, P * P * C)
    for s in range(n):
        assert len({row.tobytes() for row in per_sample[s]}) == per_sample.shape[1]


def test_unknown_policy_is_a_user_error():
    from stargal.errors import StargalError

    with pytest.raises(StargalError):
        aug.policy("spin")
