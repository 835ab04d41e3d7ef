"""Sky and frame geometry shared by every stage: unit vectors, angular distances, sky -> pixel, inside a frame.

Pure functions (arrays in, arrays out). Angles are degrees unless a name says otherwise. Pixel coordinates
are 0-based with pixel ``i`` covering ``[i - 0.5, i + 0.5)``, the convention of ``stargal.patches``.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS
from scipy.spatial import cKDTree

# A margin that keeps "exactly on the radius" inside a KD-tree query despite rounding.
_RADIUS_MARGIN = 1 + 1e-9


def unit_vectors(ra, dec) -> np.ndarray:
    """Unit vectors of (ra, dec): [n, 3] for arrays, [3] for scalars."""
    ra_r, dec_r = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, dtype=np.float64))
    cos_dec = np.cos(dec_r)
    return np.stack([cos_dec * np.cos(ra_r), cos_dec * np.sin(ra_r), np.sin(dec_r)], axis=-1)


def east_north(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors pointing east and north on the sky at the unit vector ``p`` [3]."""
    ra = np.arctan2(p[1], p[0])
    dec = np.arcsin(np.clip(p[2], -1, 1))
    east = np.array([-np.sin(ra), np.cos(ra), 0.0])
    north = np.array([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)])
    return east, north


def chord(radius_arcsec: float) -> float:
    """Chord length on the unit sphere of an angular separation."""
    return 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)


def chord_to_arcsec(d: np.ndarray) -> np.ndarray:
    """Angular separation (arcsec) of chord lengths on the unit sphere (the inverse of ``chord``)."""
    return np.degrees(2 * np.arcsin(np.clip(d / 2, 0, 1))) * 3600


def near_any(
    ra: np.ndarray, dec: np.ndarray, ref_ra: np.ndarray, ref_dec: np.ndarray, radius_arcsec: float
) -> np.ndarray:
    """True where (ra, dec) lies within ``radius_arcsec`` (inclusive) of any reference position.

    A KD-tree on unit vectors (chord distance): exact on the sphere and O(n log n).
    """
    n = np.size(ra)
    if n == 0 or np.size(ref_ra) == 0:
        return np.zeros(n, dtype=bool)
    tree = cKDTree(unit_vectors(ref_ra, ref_dec))
    dist, _ = tree.query(unit_vectors(ra, dec), k=1, distance_upper_bound=chord(radius_arcsec) * _RADIUS_MARGIN)
    return np.isfinite(dist)


def close_pairs(ra: np.ndarray, dec: np.ndarray, radius_arcsec: float) -> np.ndarray:
    """Index pairs [k, 2] (i < j) of positions within ``radius_arcsec`` (inclusive) of each other."""
    if np.size(ra) < 2:
        return np.empty((0, 2), dtype=np.int64)
    tree = cKDTree(unit_vectors(ra, dec))
    return tree.query_pairs(chord(radius_arcsec) * _RADIUS_MARGIN, output_type="ndarray").astype(np.int64)


def nearest_neighbour_arcsec(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Distance from each position to its nearest other position (arcsec); inf when there is no other."""
    ra = np.asarray(ra, np.float64)
    if ra.size < 2:
        return np.full(ra.size, np.inf)
    v = unit_vectors(ra, dec)
    d, _ = cKDTree(v).query(v, k=2)
    return chord_to_arcsec(d[:, 1])


def has_sky_axes(wcs: WCS) -> bool:
    """True when ``wcs`` is a 2-axis celestial WCS with RA on the first axis and Dec on the second, the order
    ``sky_to_pixel`` passes them in (a header without CTYPE1/2 gives a linear WCS that maps any numbers)."""
    return wcs.naxis == 2 and wcs.has_celestial and wcs.wcs.lng == 0 and wcs.wcs.lat == 1


def sky_to_pixel(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel coordinates (x column, y row) of sky positions, in one vectorised call; NaN where the WCS
    cannot place a position.

    ``all_world2pix`` includes any distortion terms (and equals ``wcs_world2pix`` without them). A TAN
    projection maps the far hemisphere onto the plane too, so points more than ~84 degrees from the tangent
    point (certainly not in a 0.2-degree frame) get NaN instead of a false position.
    """
    if not has_sky_axes(wcs):  # a linear WCS would place any (ra, dec) somewhere, silently wrong
        raise ValueError("the WCS has no celestial RA, Dec axes (in that order)")
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    if ra.size == 0:
        return np.empty(0), np.empty(0)
    with np.errstate(invalid="ignore"):
        x, y = wcs.all_world2pix(ra, dec, 0)
    ra0, dec0 = (float(v) for v in wcs.wcs.crval[:2])
    cos_sep = np.sin(np.radians(dec)) * np.sin(np.radians(dec0)) + np.cos(np.radians(dec)) * np.cos(
        np.radians(dec0)
    ) * np.cos(np.radians(ra - ra0))
    far = ~(cos_sep > 0.1)
    x = np.where(far, np.nan, x)
    y = np.where(far, np.nan, y)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def inside_frame(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """True where a position lies on a frame of ``shape`` (rows, columns): finite and within the outer edges of
    its pixels."""
    rows, cols = shape
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x < cols - 0.5) & (y >= -0.5) & (y < rows - 0.5)


def footprint_overlap(ref_wcs: WCS, ref_shape: tuple[int, int], wcs: WCS, shape: tuple[int, int], n: int = 16) -> float:
    """Fraction of a reference frame that another frame covers, sampled at the centres of an ``n`` x ``n`` grid of
    cells mapped to the sky and into the other frame. The bands of one SDSS field cover all of each other but a
    few edge pixels; a frame of another field (they overlap by ~128 of 1489 rows) or run covers little or none."""
    rows, cols = ref_shape
    centres = (np.arange(n) + 0.5) / n
    y, x = np.meshgrid(centres * rows - 0.5, centres * cols - 0.5, indexing="ij")
    with np.errstate(invalid="ignore"):
        ra, dec = ref_wcs.all_pix2world(x.ravel(), y.ravel(), 0)
    bx, by = sky_to_pixel(wcs, ra, dec)
    return float(np.mean(inside_frame(bx, by, shape)))
