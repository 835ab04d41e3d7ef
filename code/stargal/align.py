"""Band alignment: resample every band of a field onto the reference band's pixel grid (pure core).

Why not ``reproject_exact``: for SDSS frames the bands differ from the reference band by a near-constant
sub-pixel-accurate translation of equal square pixels (the offsets drift < 0.5 px over a frame). For a
pure translation the exact overlap area of an output pixel with the input pixels is the bilinear weight
(1 - fx)(1 - fy), fx(1 - fy), ... of the fractional shift, so flux-conserving spherical-polygon overlap
reduces to bilinear interpolation. We therefore

1. map reference pixel centres into the band's pixel grid through both WCSs on a coarse grid
   (``all_pix2world`` then ``all_world2pix``, every ``step`` pixels),
2. fit a low-order polynomial to that smooth, nearly affine mapping and check its residual,
3. evaluate it at every pixel (separably) and resample with bilinear weights
   (``scipy.ndimage.map_coordinates(order=1)``).

4. where the WCSs leave a band's stars off the reference band's (real SDSS frames: up to ~1 px), align it
   again with the measured shift added to the mapping (``registration_shifts``; the runner measures it).

Output pixels whose area a band covers only in part take the mean of the covered input pixels, as
``reproject_exact`` does (it divides by the covered area); pixels a band does not cover at all are NaN.
``tests/test_align.py`` and ``bench/bench_alignment.py`` compare the result with ``reproject_exact``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

from .detection import StarOffsets
from .lstsq import evaluate, least_squares
from .normalise import MAD_TO_SIGMA

# A polynomial mapping is trusted only if it reproduces the exact WCS mapping this well (pixels);
# otherwise every pixel is mapped through the WCSs (slow but exact).
MAX_FIT_RESIDUAL_PX = 1e-3
# Registration on the field's stars: real SDSS frames' WCSs leave the bands 0.1-1 px apart in some fields (the
# six real fields: up to 0.3 px at high latitude, 1.1 px in i in the Galactic plane), simulated ones < 0.03 px.
MIN_REGISTRATION_PX = 0.1
MAX_REGISTRATION_PX = 3.0


@dataclass(frozen=True)
class PixelMap:
    """Where the centre of reference pixel (x, y) falls in a band's pixel grid: ``(x + dx, y + dy)``.

    ``dx`` and ``dy`` are polynomials in normalised coordinates ``u = (x - x0) / s``, ``v = (y - y0) / s``
    with coefficient arrays ``cx[i, j]`` of ``u**i * v**j``. ``residual`` is the largest distance (pixels)
    between the polynomial and the exact WCS mapping on the sampling grid.
    """

    cx: np.ndarray
    cy: np.ndarray
    x0: float
    y0: float
    scale: float
    shape: tuple[int, int]  # reference grid (rows, columns)
    residual: float

    def offsets(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Band-minus-reference pixel offsets (dx, dy) at reference pixel positions (any shapes)."""
        u = (np.asarray(x, dtype=np.float64) - self.x0) / self.scale
        v = (np.asarray(y, dtype=np.float64) - self.y0) / self.scale
        return np.polynomial.polynomial.polyval2d(u, v, self.cx), np.polynomial.polynomial.polyval2d(u, v, self.cy)

    @property
    def centre_offset(self) -> tuple[float, float]:
        """(dx, dy) at the centre of the reference frame."""
        rows, cols = self.shape
        dx, dy = self.offsets(np.array((cols - 1) / 2), np.array((rows - 1) / 2))
        return float(dx), float(dy)

    @property
    def drift(self) -> float:
        """Largest change of the offset over the frame relative to its centre value (pixels)."""
        rows, cols = self.shape
        y, x = np.meshgrid(np.linspace(0, rows - 1, 9), np.linspace(0, cols - 1, 9), indexing="ij")
        dx, dy = self.offsets(x, y)
        cdx, cdy = self.centre_offset
        return float(np.max(np.hypot(dx - cdx, dy - cdy)))

    def grid(self, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
        """Band pixel coordinates (x, y) of every reference pixel centre, [rows, columns] each."""
        coords = self.coords(dtype)
        return coords[1], coords[0]

    def coords(self, dtype=np.float32) -> np.ndarray:
        """Band pixel coordinates of every reference pixel centre stacked as ``[y, x]`` (map_coordinates order).

        float32 by default: coordinates below 4096 keep ~2e-4 px precision, far below the accuracy needed,
        while halving the memory traffic of the resampling.
        """
        rows, cols = self.shape
        xr = np.arange(cols, dtype=np.float64)
        yr = np.arange(rows, dtype=np.float64)
        u, v = (xr - self.x0) / self.scale, (yr - self.y0) / self.scale
        out = np.empty((2, rows, cols), dtype=dtype)
        # the offsets are small and smooth: evaluate them per row/column, add the integer pixel grid
        for k, (coeffs, base) in enumerate(((self.cy, yr[:, None]), (self.cx, xr[None, :]))):
            _separable_polyval(coeffs, u, v, out[k])
            out[k] += base.astype(dtype)
        return out


def _separable_polyval(coeffs: np.ndarray, u: np.ndarray, v: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:] = sum_ij c[i, j] u**i v**j`` on the grid (v rows, u columns): one broadcast per power of v."""
    out[:] = np.polynomial.polynomial.polyval(u, coeffs[:, 0])[None, :]
    for j in range(1, coeffs.shape[1]):
        out += ((v**j)[:, None] * np.polynomial.polynomial.polyval(u, coeffs[:, j])[None, :]).astype(out.dtype)
    return out


def exact_map(ref_wcs: WCS, band_wcs: WCS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band pixel coordinates of reference pixel positions through both WCSs (0-based, exact)."""
    ra, dec = ref_wcs.all_pix2world(x, y, 0)
    bx, by = band_wcs.all_world2pix(ra, dec, 0)
    return np.asarray(bx, dtype=np.float64), np.asarray(by, dtype=np.float64)


def measure_map(
    ref_wcs: WCS,
    band_wcs: WCS,
    shape: tuple[int, int],
    *,
    step: int = 64,
    max_degree: int = 3,
    tolerance: float = MAX_FIT_RESIDUAL_PX / 10,
) -> PixelMap:
    """Fit the reference-to-band pixel mapping sampled every ``step`` px (edges included).

    Uses the lowest polynomial degree (1 = affine, up to ``max_degree``) whose largest residual is within
    ``tolerance`` pixels, since evaluating an affine map at every pixel is much cheaper than a cubic.
    """
    rows, cols = shape
    xs = np.unique(np.r_[np.arange(0, cols, step), cols - 1]).astype(np.float64)
    ys = np.unique(np.r_[np.arange(0, rows, step), rows - 1]).astype(np.float64)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    bx, by = exact_map(ref_wcs, band_wcs, gx, gy)
    x0, y0, scale = (cols - 1) / 2, (rows - 1) / 2, max(rows, cols) / 2
    u, v = (gx - x0) / scale, (gy - y0) / scale
    target = np.c_[bx - gx, by - gy]
    best: PixelMap | None = None
    # the sampling grid must support the degree (tiny frames have few samples)
    for deg in range(1, int(min(max_degree, len(xs) - 1, len(ys) - 1)) + 1):
        design = np.polynomial.polynomial.polyvander2d(u, v, [deg, deg])
        coef = least_squares(design, target)
        fit = evaluate(design, coef)
        residual = float(np.max(np.hypot(*(fit - target).T)))
        cx, cy = (coef[:, k].reshape(deg + 1, deg + 1) for k in (0, 1))
        best = PixelMap(cx, cy, x0, y0, scale, (rows, cols), residual)
        if residual <= tolerance:
            break
    if best is None:
        raise ValueError(f"frame of shape {shape} is too small to fit a pixel mapping")
    return best


def resample(image: np.ndarray, coords_x: np.ndarray, coords_y: np.ndarray, *, margin: int | None = None) -> np.ndarray:
    """Bilinear samples of ``image`` at pixel positions (x, y); float32, NaN where the image has no cover.

    An output pixel counts as covered while its pixel area overlaps the image (-1 < x < columns,
    -1 < y < rows); where it overlaps only in part the edge pixels' values are used (``mode="nearest"``),
    which equals the covered-area mean ``reproject_exact`` returns for a translated grid.
    ``margin``: if given, only the outermost ``margin`` rows and columns can be uncovered (the caller
    knows the shift is smaller), so coverage is only tested there.
    """
    coords = np.empty((2, *np.shape(coords_x)), dtype=np.result_type(coords_x, coords_y, np.float32))
    coords[0], coords[1] = coords_y, coords_x
    return resample_stacked(image, coords, margin=margin)


def resample_stacked(
    image: np.ndarray, coords: np.ndarray, *, margin: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``resample`` with coordinates stacked as ``[y, x]`` (no copy of them), optionally into ``out`` (float32)."""
    image = np.asarray(image, dtype=np.float32)
    rows, cols = image.shape
    if out is None:
        out = np.empty(coords.shape[1:], dtype=np.float32)
    ndimage.map_coordinates(image, coords, order=1, mode="nearest", output=out, prefilter=False)
    if margin is None or 2 * margin >= min(out.shape):
        strips = [(slice(None), slice(None))]
    else:
        m = margin
        strips = [
            (slice(0, m), slice(None)),
            (slice(-m, None), slice(None)),
            (slice(m, -m), slice(0, m)),
            (slice(m, -m), slice(-m, None)),
        ]
    for strip in strips:
        cy, cx = coords[0][strip], coords[1][strip]
        outside = (cx <= -1) | (cx >= cols) | (cy <= -1) | (cy >= rows)
        out[strip][outside] = np.nan
    return out


@dataclass
class Alignment:
    """Result of aligning a field's bands: the cube and each band's pixel map (identity for the reference)."""

    cube: np.ndarray  # float32 [bands, rows, columns]
    maps: list[PixelMap | None]  # None for the reference band
    exact_fallback: list[bool]


def align_bands(
    images: Sequence[np.ndarray],
    wcss: Sequence[WCS],
    ref: int,
    *,
    step: int = 64,
    max_degree: int = 3,
    max_residual: float = MAX_FIT_RESIDUAL_PX,
    shifts: Sequence[tuple[float, float]] | None = None,
) -> Alignment:
    """Resample every image onto the grid of ``images[ref]``; all images must share one shape.

    ``shifts``: per image, (dx, dy) pixels added to where the WCSs map each reference pixel, to correct a
    band whose WCS misplaces it (``registration_shifts``); the reference image's shift is ignored.
    """
    shape = np.shape(images[ref])
    for i, im in enumerate(images):
        if np.shape(im) != shape:
            raise ValueError(f"image {i} has shape {np.shape(im)}, reference has {shape}")
    cube = np.empty((len(images), *shape), dtype=np.float32)
    maps: list[PixelMap | None] = []
    fallback: list[bool] = []
    for i, (im, w) in enumerate(zip(images, wcss, strict=True)):
        if i == ref:
            cube[i] = im  # the reference grid onto itself is the identity
            maps.append(None)
            fallback.append(False)
            continue
        pmap = measure_map(wcss[ref], w, shape, step=step, max_degree=max_degree)
        if pmap.residual <= max_residual:
            coords = pmap.coords()
            fallback.append(False)
            margin = _max_edge_shift(coords[1], coords[0]) + 2
        else:  # a mapping the polynomial cannot follow (strong distortion): map every pixel exactly
            yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
            gx, gy = exact_map(wcss[ref], w, xx, yy)
            coords = np.stack([gy, gx])
            fallback.append(True)
            margin = None
        if shifts is not None and any(shifts[i]):
            dx, dy = shifts[i]
            coords[1] += dx
            coords[0] += dy
            margin = None if margin is None else margin + int(np.ceil(max(abs(dx), abs(dy))))
        resample_stacked(im, coords, margin=margin, out=cube[i])
        del coords
        maps.append(pmap)
    return Alignment(cube, maps, fallback)


def registration_shifts(offsets: Sequence[tuple[float, float, int]]) -> list[tuple[float, float]]:
    """The (dx, dy) to add to each band's WCS mapping so that its stars land where the reference band's do:
    each band's measured star offset (``detection.band_offsets`` of the aligned cube), where it is at least
    MIN_REGISTRATION_PX and at most MAX_REGISTRATION_PX; (0, 0) otherwise (too small to matter, unmeasured,
    or too large to be a WCS error rather than a mismatch)."""
    out = []
    for dx, dy, _ in offsets:
        size = float(np.hypot(dx, dy))
        out.append((dx, dy) if MIN_REGISTRATION_PX <= size <= MAX_REGISTRATION_PX else (0.0, 0.0))
    return out


def common_offset(
    offsets: Sequence[tuple[float, ...]], ref: int, min_px: float, spread_px: float
) -> tuple[float, float] | None:
    """The (dx, dy) by which every other band sits alike from band ``ref`` when each is at least ``min_px`` off
    and all lie within ``spread_px`` of their median: the other bands agree among themselves, so it is the
    reference band's own WCS that misplaces it. None otherwise, or with fewer than three other bands measured
    (an unmeasured offset is NaN; ``offsets`` as ``registration_shifts`` takes them, or whole-pixel shifts)."""
    others = np.array([o[:2] for k, o in enumerate(offsets) if k != ref], dtype=np.float64).reshape(-1, 2)
    others = others[np.all(np.isfinite(others), axis=1)]
    if len(others) < 3:
        return None
    median = np.median(others, axis=0)
    if np.min(np.hypot(*others.T)) < min_px or np.max(np.hypot(*(others - median).T)) > spread_px:
        return None
    return float(median[0]), float(median[1])


def _max_edge_shift(gx: np.ndarray, gy: np.ndarray) -> int:
    """Largest |shift| (pixels, rounded up) on the frame's edges; a smooth near-affine map peaks there."""
    rows, cols = gx.shape
    xr, yr = np.arange(cols), np.arange(rows)
    edges = [
        gx[0] - xr,
        gx[-1] - xr,
        gx[:, 0],
        gx[:, -1] - (cols - 1),
        gy[0],
        gy[-1] - (rows - 1),
        gy[:, 0] - yr,
        gy[:, -1] - yr,
    ]
    return int(np.ceil(max(float(np.max(np.abs(e))) for e in edges)))


def shift_image(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved by (dx, dy) pixels (content at (x, y) goes to (x + dx, y + dy)); NaN where uncovered.

    A helper for tests and synthetic data: sampling position (x - dx, y - dy) of the input.
    """
    rows, cols = np.shape(image)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    return resample(image, xx - dx, yy - dy)


# ---------------------------------------------------------------------------------------------------------
# a band's WCS wrong by a rotation or scale: its stars' offsets from the reference band's grow with position


# An affine offset field needs stars over the frame: with fewer, or when the corners' offsets are known to worse than
# this fraction of the tolerance they are judged against, only the median offset is checked (as before).
MIN_AFFINE_STARS = 12
CLIP_SIGMA = 3.0
MIN_CLIP_SCATTER_PX = 0.02  # sep.winpos centroids of bright stars agree to ~0.01 px: clip no tighter than this


@dataclass(frozen=True)
class OffsetField:
    """A band's offset from the reference band as an affine function of reference position (x, y):
    ``(dx, dy) = c[0] + c[1] * u + c[2] * v`` with ``u = (x - x0) / s``, ``v = (y - y0) / s`` (``coef`` [3, 2]);
    ``used``: the stars kept after clipping; ``scatter``: their robust residual sigma per axis (pixels)."""

    coef: np.ndarray
    x0: float
    y0: float
    scale: float
    used: int
    scatter: float
    inverse_gram: np.ndarray  # [3, 3] (D^T D)^-1 of the kept stars: the prediction's uncertainty

    def at(self, x, y) -> np.ndarray:
        """Predicted (dx, dy) at positions x, y: [n, 2]."""
        design = self._design(np.atleast_1d(x), np.atleast_1d(y))
        return evaluate(design, self.coef)

    def uncertainty(self, x, y) -> np.ndarray:
        """1-sigma uncertainty (pixels, per axis) of ``at(x, y)``: [n]."""
        design = self._design(np.atleast_1d(x), np.atleast_1d(y))
        return self.scatter * np.sqrt(np.einsum("ni,ij,nj->n", design, self.inverse_gram, design))

    def _design(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = (np.asarray(x, np.float64) - self.x0) / self.scale
        v = (np.asarray(y, np.float64) - self.y0) / self.scale
        return np.c_[np.ones_like(u), u, v]


def fit_offset_field(
    stars: StarOffsets, shape: tuple[int, int], *, clip: float = CLIP_SIGMA, iterations: int = 10
) -> OffsetField | None:
    """Affine fit of a band's star offsets over a frame of ``shape`` (rows, columns), resistant to a few bad stars
    (a blend, a cosmic ray, a variable star): iterative clipping at ``clip`` robust sigma (MAD) of the residuals,
    started from the median offset so that the first fit is not pulled by them. None with fewer than
    MIN_AFFINE_STARS stars (before or after clipping), or stars that do not determine the three terms."""
    if len(stars.x) < MIN_AFFINE_STARS:
        return None
    rows, cols = shape
    x0, y0, scale = (cols - 1) / 2, (rows - 1) / 2, max(rows, cols) / 2
    u, v = (stars.x - x0) / scale, (stars.y - y0) / scale
    design = np.c_[np.ones_like(u), u, v]
    target = np.c_[stars.dx, stars.dy]
    model = np.broadcast_to(np.median(target, axis=0), target.shape)
    keep = np.ones(len(u), bool)
    coef = None
    for _ in range(iterations):
        residual = target - model
        sigma = np.maximum(MAD_TO_SIGMA * np.median(np.abs(residual[keep]), axis=0), MIN_CLIP_SCATTER_PX)
        new = np.all(np.abs(residual) <= clip * sigma, axis=1)
        if coef is not None and np.array_equal(new, keep):
            break
        keep = new
        if keep.sum() < MIN_AFFINE_STARS:
            return None
        try:
            coef = least_squares(design[keep], target[keep])
        except ValueError:  # the stars lie on a line: the slope across it is not determined
            return None
        model = evaluate(design, coef)
    used = design[keep]
    gram = used.T @ used
    if np.linalg.cond(gram) > 1e8:
        return None
    scatter = float(MAD_TO_SIGMA * np.median(np.abs(target[keep] - model[keep])))
    return OffsetField(coef, x0, y0, scale, int(keep.sum()), max(scatter, 1e-3), np.linalg.inv(gram))


def frame_corners(shape: tuple[int, int]) -> np.ndarray:
    """(x, y) of a frame's four corner pixel centres: [4, 2]."""
    rows, cols = shape
    return np.array([(0, 0), (cols - 1, 0), (0, rows - 1), (cols - 1, rows - 1)], np.float64)


def worst_corner(
    fit: OffsetField, shape: tuple[int, int], shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[tuple[float, float], float, float]:
    """The corner (x, y) where a band's stars would sit farthest from the reference band's once ``shift`` (the
    registration shift applied to the band) is taken off the fitted offsets; that distance (pixels) and its
    1-sigma uncertainty."""
    corners = frame_corners(shape)
    offset = fit.at(corners[:, 0], corners[:, 1]) - np.asarray(shift, np.float64)
    distance = np.hypot(offset[:, 0], offset[:, 1])
    k = int(np.argmax(distance))
    sigma = float(fit.uncertainty(corners[k : k + 1, 0], corners[k : k + 1, 1])[0])
    return (float(corners[k, 0]), float(corners[k, 1])), float(distance[k]), sigma
