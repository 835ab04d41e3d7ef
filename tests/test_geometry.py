"""The one geometry module: unit vectors, angular distances, sky -> pixel and the inside-frame test."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from stargal import geometry


def make_wcs(shape=(100, 150), crval=(200.0, 30.0)) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [shape[1] / 2 + 1, shape[0] / 2 + 1]
    w.wcs.crval = list(crval)
    w.wcs.cd = np.array([[-0.396 / 3600, 0], [0, 0.396 / 3600]])
    return w


def test_unit_vectors_of_scalars_and_arrays_agree():
    v = geometry.unit_vectors([0.0, 90.0, 331.7], [0.0, 0.0, 26.96])
    assert v.shape == (3, 3)
    np.testing.assert_allclose(v[0], [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(v[1], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0)
    single = geometry.unit_vectors(331.7, 26.96)
    assert single.shape == (3,)
    assert single.tobytes() == v[2].tobytes()  # bit for bit: the simulator relies on it


def test_east_north_is_an_orthonormal_tangent_basis():
    p = geometry.unit_vectors(120.0, -40.0)
    east, north = geometry.east_north(p)
    for a, b in ((east, north), (east, p), (north, p)):
        assert abs(a @ b) < 1e-15
    # north points to increasing declination, east to increasing right ascension
    assert (geometry.unit_vectors(120.0, -39.99) - p) @ north > 0
    assert (geometry.unit_vectors(120.01, -40.0) - p) @ east > 0


def test_chord_round_trip_and_nearest_neighbour():
    assert geometry.chord_to_arcsec(geometry.chord(3.0)) == pytest.approx(3.0, rel=1e-9)
    d = geometry.nearest_neighbour_arcsec([10.0, 10.0 + 2 / 3600, 10.1], [0.0, 0.0, 0.0])
    assert d[:2] == pytest.approx([2.0, 2.0], rel=1e-6) and d[2] == pytest.approx(0.1 * 3600 - 2, rel=1e-3)
    assert geometry.nearest_neighbour_arcsec([1.0], [1.0]).tolist() == [np.inf]


def test_close_pairs_is_inclusive_and_symmetric_free():
    ra = np.array([10.0, 10.0 + 1 / 3600, 10.0 + 5 / 3600])
    dec = np.zeros(3)
    assert geometry.close_pairs(ra, dec, 1.0).tolist() == [[0, 1]]
    assert geometry.close_pairs(ra[:1], dec[:1], 1.0).shape == (0, 2)


def test_sky_to_pixel_round_trip_and_far_side():
    w = make_wcs()
    x = np.array([0.0, 74.5, 149.0])
    y = np.array([0.0, 49.5, 99.0])
    ra, dec = w.all_pix2world(x, y, 0)
    px, py = geometry.sky_to_pixel(w, ra, dec)
    np.testing.assert_allclose(px, x, atol=1e-8)
    np.testing.assert_allclose(py, y, atol=1e-8)
    # the antipode projects onto the plane too; it must not land on the frame
    fx, fy = geometry.sky_to_pixel(w, [20.0], [-30.0])
    assert np.isnan(fx[0]) and np.isnan(fy[0])
    ex, ey = geometry.sky_to_pixel(w, np.empty(0), np.empty(0))
    assert ex.size == 0 and ey.size == 0


def test_inside_frame_uses_pixel_edges_and_rejects_nan():
    x = np.array([-0.5, -0.51, 149.49, 149.5, 10.0, np.nan])
    y = np.array([0.0, 0.0, 99.0, 0.0, 99.5, 5.0])
    assert geometry.inside_frame(x, y, (100, 150)).tolist() == [True, False, True, False, False, False]


def test_sky_to_pixel_refuses_a_wcs_without_ra_dec_axes():
    """A header without CTYPE1/2 gives a linear WCS, which would place any (ra, dec) at some wrong pixel."""
    linear = WCS(naxis=2)
    linear.wcs.crpix, linear.wcs.crval, linear.wcs.cdelt = [1, 1], [200.0, 30.0], [1e-4, 1e-4]
    swapped = make_wcs().swapaxes(0, 1)  # Dec first: (ra, dec) would be taken as (dec, ra)
    assert geometry.has_sky_axes(make_wcs())
    for wcs in (linear, swapped):
        assert not geometry.has_sky_axes(wcs)
        with pytest.raises(ValueError, match="no celestial RA, Dec axes"):
            geometry.sky_to_pixel(wcs, np.array([200.0]), np.array([30.0]))
