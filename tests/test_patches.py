"""Patch cutting: centring convention, channel order, edge padding, NaN handling, memory-mapped cubes."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from stargal.cube import read_cube, write_cube
from stargal.errors import StargalError
from stargal.patches import check_edge_policy, check_patch_size, extract_patches, inside_frame, pixel_centres

SHAPE = (40, 50)


def coded_cube() -> np.ndarray:
    """cube[b, r, c] = 10000 * (b + 1) + 100 * r + c: every value tells where it came from."""
    b, r, c = np.meshgrid(np.arange(5), np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    return (10000.0 * (b + 1) + 100.0 * r + c).astype(np.float32)


def naive_patch(cube: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    half = size // 2
    out = np.zeros((size, size, cube.shape[0]), dtype=np.float32)
    for i in range(size):
        for j in range(size):
            r, c = row - half + i, col - half + j
            if 0 <= r < cube.shape[1] and 0 <= c < cube.shape[2]:
                out[i, j] = np.nan_to_num(cube[:, r, c], nan=0.0)
    return out


def test_pixel_centres_round_to_nearest_pixel_centre():
    rows, cols = pixel_centres(np.array([10.49, 10.5, -0.5, -0.51, 3.0]), np.array([0.2, 0.7, 5.5, 7.49, -0.2]))
    assert cols.tolist() == [10, 11, 0, -1, 3]
    assert rows.tolist() == [0, 1, 6, 7, 0]


def test_interior_patch_is_exact_and_bands_last():
    cube = coded_cube()
    p = extract_patches(cube, np.array([20]), np.array([30]), 5)
    assert p.data.shape == (1, 5, 5, 5) and p.data.dtype == np.float32
    assert p.data[0, 2, 2].tolist() == [10000.0 * (b + 1) + 100 * 20 + 30 for b in range(5)]
    assert p.data[0, 0, 0, 0] == 10000 + 100 * 18 + 28  # top-left = (row - 2, col - 2)
    assert p.data[0, 4, 0, 0] == 10000 + 100 * 22 + 28  # first patch axis follows rows
    assert not p.edge_padded[0] and p.nan_pixels[0] == 0


def test_vectorised_matches_naive_loop_including_edges():
    rng = np.random.default_rng(0)
    cube = coded_cube()
    cube[1, 5:9, 10:20] = np.nan
    rows = rng.integers(-2, SHAPE[0] + 2, 300)
    cols = rng.integers(-2, SHAPE[1] + 2, 300)
    p = extract_patches(cube, rows, cols, 7)
    expected = np.stack([naive_patch(cube, r, c, 7) for r, c in zip(rows, cols, strict=True)])
    np.testing.assert_array_equal(p.data, expected)
    np.testing.assert_array_equal(p.edge_padded, ~inside_frame(rows, cols, 7, SHAPE))


def test_edge_padding_sets_zero_and_flags():
    cube = coded_cube()
    p = extract_patches(cube, np.array([0, 39]), np.array([0, 49]), 5)
    assert p.edge_padded.all()
    assert (p.data[0, :2] == 0).all() and (p.data[0, :, :2] == 0).all()  # above and left of (0, 0)
    assert p.data[0, 2, 2, 2] == 30000  # the centre itself is real data
    assert (p.data[1, 3:] == 0).all() and (p.data[1, :, 3:] == 0).all()
    assert p.nan_pixels.tolist() == [0, 0]  # outside-frame pixels are padding, not NaN


def test_nan_pixels_become_zero_and_are_counted():
    cube = coded_cube()
    cube[0, 10:12, 10:13] = np.nan  # u band does not cover 6 pixels
    p = extract_patches(cube, np.array([11, 30]), np.array([11, 30]), 5)
    assert p.nan_pixels.tolist() == [6, 0]
    assert np.isfinite(p.data).all()
    assert (p.data[0, 1:3, 1:4, 0] == 0).all() and (p.data[0, 1:3, 1:4, 1] != 0).all()


def test_out_is_filled_in_place_and_chunks_agree(monkeypatch):
    import stargal.patches as patches

    cube = coded_cube()
    rows, cols = np.arange(0, 40, 3), np.arange(0, 56, 4)
    whole = extract_patches(cube, rows, cols, 9)
    monkeypatch.setattr(patches, "_CHUNK", 4)
    out = np.full((14, 9, 9, 5), -1, dtype=np.float32)
    chunked = extract_patches(cube, rows, cols, 9, out=out)
    assert chunked.data is out
    np.testing.assert_array_equal(out, whole.data)
    np.testing.assert_array_equal(chunked.edge_padded, whole.edge_padded)
    with pytest.raises(ValueError):
        extract_patches(cube, rows, cols, 9, out=np.zeros((14, 9, 9, 5)))  # float64


def test_memory_mapped_cube_gives_same_patches(tmp_path):
    cube = coded_cube()
    wcs = WCS(naxis=2)
    path = tmp_path / "cube.fits"
    write_cube(path, cube, wcs, "ugriz", {"SIMULAT": True})
    mapped = read_cube(path)
    rows, cols = np.array([0, 20, 39]), np.array([3, 25, 49])
    np.testing.assert_array_equal(
        extract_patches(mapped.data, rows, cols, 11).data, extract_patches(cube, rows, cols, 11).data
    )


@pytest.mark.parametrize("size", [0, -3, 4, 24, 2.0, True])
def test_bad_patch_sizes(size):
    with pytest.raises(StargalError, match="patch-size"):
        check_patch_size(size)


def test_patch_larger_than_frame():
    assert check_patch_size(39, SHAPE) == 39
    with pytest.raises(StargalError, match="larger than the frame"):
        check_patch_size(41, SHAPE)


def test_edge_policy_names():
    assert check_edge_policy("drop") == "drop"
    with pytest.raises(StargalError, match="--edge"):
        check_edge_policy("crop")
