"""Band alignment core (stargal.align): synthetic WCS-shifted images, reproject_exact equivalence, real frames."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy import ndimage

from stargal import align, detection, sdss
from stargal.config import BANDS, PIXEL_SCALE_ARCSEC

DEG = PIXEL_SCALE_ARCSEC / 3600


def make_wcs(shape, *, crval=(332.4, 25.9), shift=(0.0, 0.0), rotation=0.0, scale=1.0) -> WCS:
    """A TAN WCS like an SDSS frame's; the sky at reference pixel p sits at pixel p + shift."""
    rows, cols = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = crval
    w.wcs.crpix = [(cols + 1) / 2 + shift[0], (rows + 1) / 2 + shift[1]]
    c, s = np.cos(rotation), np.sin(rotation)
    w.wcs.cd = DEG / scale * np.array([[-c, s], [s, c]])
    return w


def render(shape, xs, ys, fluxes, sigma=1.4) -> np.ndarray:
    """Gaussian point sources (integrated over each pixel's area, so sub-pixel positions are exact)."""
    from scipy.special import erf

    rows, cols = shape
    out = np.zeros(shape, dtype=np.float64)
    ex = np.arange(cols + 1) - 0.5
    ey = np.arange(rows + 1) - 0.5
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        px = np.diff(erf((ex - x) / (np.sqrt(2) * sigma))) / 2
        py = np.diff(erf((ey - y) / (np.sqrt(2) * sigma))) / 2
        out += f * np.outer(py, px)
    return out.astype(np.float32)


def centroid(image, x, y, half=8):
    """Flux-weighted centroid in a box around (x, y)."""
    xi, yi = int(round(x)), int(round(y))
    box = image[yi - half : yi + half + 1, xi - half : xi + half + 1].astype(np.float64)
    yy, xx = np.mgrid[yi - half : yi + half + 1, xi - half : xi + half + 1]
    return (box * xx).sum() / box.sum(), (box * yy).sum() / box.sum()


def jittered_stars(rng, rows: slice, cols: slice, jitter: float, flux: tuple[float, float]):
    """(x, y, flux) of stars on a 30 px grid, each moved by up to ``jitter`` px: isolated, one per centroid box."""
    gy, gx = np.mgrid[rows, cols]
    xs = gx.ravel() + rng.uniform(-jitter, jitter, gx.size)
    ys = gy.ravel() + rng.uniform(-jitter, jitter, gy.size)
    return xs, ys, rng.uniform(*flux, gx.size)


@pytest.fixture(scope="module")
def star_field():
    """Isolated stars (a jittered 30 px grid, so centroid boxes hold one star each)."""
    xs, ys, fluxes = jittered_stars(np.random.default_rng(3), slice(25, 100, 30), slice(20, 150, 30), 4, (50, 500))
    return (120, 160), xs, ys, fluxes


def test_affine_map_recovers_injected_offsets(star_field):
    shape = star_field[0]
    ref = make_wcs(shape)
    for shift in [(2.6, 2.6), (2.1, 12.6), (-3.3, 0.4)]:
        pmap = align.measure_map(ref, make_wcs(shape, shift=shift), shape)
        dx, dy = pmap.centre_offset
        assert dx == pytest.approx(shift[0], abs=1e-6) and dy == pytest.approx(shift[1], abs=1e-6)
        assert pmap.drift < 1e-5
        assert pmap.residual < 1e-4
        assert pmap.cx.shape == (2, 2)  # affine suffices for a translation


def test_rotation_gives_drift_and_exact_grid(star_field):
    shape = (400, 600)
    ref = make_wcs(shape)
    band = make_wcs(shape, shift=(2.0, 7.0), rotation=1e-3)
    pmap = align.measure_map(ref, band, shape, step=50)
    # a rotation of 1e-3 rad moves the corners by ~0.36 px relative to the centre
    corner = np.hypot(299.5, 199.5) * 1e-3
    assert pmap.drift == pytest.approx(corner, rel=0.05)
    gx, gy = pmap.grid()
    yy, xx = np.mgrid[0 : shape[0] : 37, 0 : shape[1] : 41].astype(float)
    ex, ey = align.exact_map(ref, band, xx, yy)
    assert np.max(np.abs(gx[::37, ::41] - ex)) < 1e-4
    assert np.max(np.abs(gy[::37, ::41] - ey)) < 1e-4


def test_align_bands_puts_sources_on_reference_positions(star_field):
    shape, xs, ys, fluxes = star_field
    ref_wcs = make_wcs(shape)
    shifts = {"u": (2.8, 6.0), "g": (2.1, 12.6), "r": (0.0, 0.0), "i": (2.6, 2.6), "z": (-1.7, 7.6)}
    wcss = [make_wcs(shape, shift=shifts[b], rotation=2e-4 if b == "u" else 0.0) for b in BANDS]
    images = []
    for w in wcss:
        bx, by = align.exact_map(ref_wcs, w, xs, ys)  # where each star falls in this band's pixels
        images.append(render(shape, bx, by, fluxes))
    result = align.align_bands(images, wcss, BANDS.index("r"))
    assert result.cube.dtype == np.float32 and result.cube.shape == (5, *shape)
    np.testing.assert_array_equal(result.cube[2], images[2])  # the reference band is copied, not resampled
    for b, pmap in zip(BANDS, result.maps, strict=True):
        if b == "r":
            assert pmap is None
            continue
        assert pmap.centre_offset == pytest.approx(shifts[b], abs=1e-3)
        for x, y in zip(xs, ys, strict=True):
            cx, cy = centroid(result.cube[BANDS.index(b)], x, y)
            assert abs(cx - x) < 0.02 and abs(cy - y) < 0.02, (b, x, y, cx, cy)
    # uncovered pixels are NaN (never 0): g is shifted by +12.6 rows, so the top 12 rows lack g data
    g = result.cube[1]
    assert np.isnan(g[-12:]).all() and np.isfinite(g[:-13, :-3]).all()
    assert np.isnan(result.cube[4][:, :1]).all()  # z shifted by -1.7 columns: column 0 has no z data


def test_resample_integer_shift_is_exact_and_conserves_flux():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(50, 70)).astype(np.float32)
    out = align.shift_image(image, 3, -2)
    np.testing.assert_array_equal(out[:-2, 3:], image[2:, :-3])
    assert np.isnan(out[:, :3]).all() and np.isnan(out[-2:]).all()
    assert np.nansum(out) == pytest.approx(float(image[2:, :-3].sum()), rel=1e-5)


def test_resample_partial_cover_is_edge_mean_and_beyond_is_nan():
    image = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    # positions -0.9 .. 3.9 overlap the image (pixel area), -1 and 4 do not
    x = np.array([[-1.0, -0.9, 0.25, 3.9, 4.0]])
    y = np.zeros_like(x)
    out = align.resample(image, x, y)
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 4])
    assert out[0, 1] == image[0, 0] and out[0, 3] == image[0, 3]
    assert out[0, 2] == pytest.approx(0.75 * image[0, 0] + 0.25 * image[0, 1])


def test_margin_masking_equals_full_masking():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(60, 80)).astype(np.float32)
    yy, xx = np.mgrid[0:60, 0:80].astype(float)
    gx, gy = xx + 2.3 + 1e-3 * yy, yy - 4.6
    full = align.resample(image, gx, gy)
    strips = align.resample(image, gx, gy, margin=8)
    np.testing.assert_array_equal(np.isnan(full), np.isnan(strips))
    np.testing.assert_array_equal(full[np.isfinite(full)], strips[np.isfinite(strips)])


def test_bilinear_equals_reproject_exact_on_shifted_grid():
    """The shortcut is exact for a translation, and within 1e-3 for SDSS-like small rotations."""
    from reproject import reproject_exact

    rng = np.random.default_rng(2)
    shape = (60, 80)
    xs, ys = rng.uniform(5, 75, 12), rng.uniform(5, 55, 12)
    image = render(shape, xs, ys, rng.uniform(20, 200, 12), sigma=1.2) + rng.normal(0, 0.05, shape).astype(np.float32)
    ref = make_wcs(shape)
    for rotation in (0.0, 2e-4):
        band = make_wcs(shape, shift=(2.37, 5.81), rotation=rotation)
        ours = align.align_bands([image, image], [ref, band], 0).cube[1]
        exact, footprint = reproject_exact((image, band), ref, shape_out=shape)
        both = np.isfinite(ours) & (footprint > 0)
        # coverage agrees (reproject counts slivers of < 1e-6 of a pixel that we do not)
        assert np.count_nonzero(np.isfinite(ours) != (footprint > 1e-6)) == 0
        full = both & (footprint > 0.999)
        diff = ours[full] - exact[full]
        rel_l2 = np.sqrt(np.sum(diff**2) / np.sum(exact[full] ** 2))
        assert rel_l2 < (1e-5 if rotation == 0 else 1e-3), rel_l2
        assert ours[full].sum() == pytest.approx(exact[full].sum(), rel=1e-3)
        partial = both & (footprint < 0.999)
        assert np.allclose(ours[partial], exact[partial], rtol=1e-3, atol=1e-3)


def test_mismatched_shapes_rejected():
    ref = make_wcs((10, 10))
    with pytest.raises(ValueError, match="shape"):
        align.align_bands([np.zeros((10, 10)), np.zeros((10, 11))], [ref, ref], 0)


# ---------------------------------------------------------------------------------------------------------
# real SDSS frames


@pytest.fixture(scope="module")
def real_field(sample_dir):
    frames = [sdss.read_frame(sample_dir / "008162-6-0080" / f"frame-{b}-008162-6-0080.fits.bz2") for b in BANDS]
    result = align.align_bands([f.image for f in frames], [f.wcs for f in frames], BANDS.index("r"))
    return frames, result


@pytest.mark.real
def test_real_offsets_match_readme(real_field):
    _, result = real_field
    expected = {"u": (2.8, 6.0), "g": (2.1, 12.6), "i": (2.2, 2.6), "z": (2.3, 7.6)}
    for b, pmap in zip(BANDS, result.maps, strict=True):
        if b in expected:
            assert pmap.centre_offset == pytest.approx(expected[b], abs=0.1)
            assert pmap.drift < 0.5
            assert pmap.residual < align.MAX_FIT_RESIDUAL_PX
    cube = result.cube
    assert cube.dtype == np.float32
    covered = np.isfinite(cube).all(axis=0)
    assert covered.mean() > 0.98  # only edge rows/columns lack some band (g is 12.6 rows off)


@pytest.mark.real
@pytest.mark.slow
def test_real_matches_reproject_exact_on_subregion(real_field):
    """Every band vs reproject_exact on a 300 x 400 region: rel. L2 <= 1e-3, flux within 0.1 %."""
    from reproject import reproject_exact

    frames, result = real_field
    ref = frames[BANDS.index("r")]
    y0, y1, x0, x1 = 600, 900, 800, 1200
    out_wcs = ref.wcs[y0:y1, x0:x1]
    m = 30  # the input cut-out must cover the output region after the band's shift
    for b, f in zip(BANDS, frames, strict=True):
        if b == "r":
            continue
        exact = reproject_exact(
            (f.image[y0 - m : y1 + m, x0 - m : x1 + m], f.wcs[y0 - m : y1 + m, x0 - m : x1 + m]),
            out_wcs,
            shape_out=(y1 - y0, x1 - x0),
            return_footprint=False,
        )
        ours = result.cube[BANDS.index(b), y0:y1, x0:x1]
        diff = ours - exact
        rel_l2 = np.sqrt(np.sum(diff**2) / np.sum(exact**2))
        assert rel_l2 < 1e-3, (b, rel_l2)
        assert ours.sum() == pytest.approx(exact.sum(), rel=1e-3), b
        assert np.isfinite(ours).all()


def bright_stars(r: np.ndarray, lo=15.0, hi=250.0, border=30):
    """Peaks of compact (star-like) bright, unsaturated sources in a reference-band image."""
    peak = r == ndimage.maximum_filter(np.nan_to_num(r), size=21)
    cand = np.argwhere(peak & (r > lo) & (r < hi))
    rows, cols = r.shape
    cand = cand[
        (cand[:, 0] > border) & (cand[:, 0] < rows - border) & (cand[:, 1] > border) & (cand[:, 1] < cols - border)
    ]
    widths = np.array([_moments(r, y, x)[2] for y, x in cand])
    return cand[widths < 1.15 * np.median(widths)]


def _moments(img, y, x, half=6, sigma=1.5):
    """Iterated Gaussian-weighted centroid (x, y) and the second-moment width around peak (x, y)."""
    box = img[y - half : y + half + 1, x - half : x + half + 1].astype(np.float64)
    box = box - np.median(img[y - 20 : y + 21, x - 20 : x + 21])
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    cx = cy = 0.0
    for _ in range(5):
        w = box * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    pos = np.clip(box, 0, None)
    width = np.sqrt((pos * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum() / pos.sum() / 2)
    return x + cx, y + cy, width


@pytest.mark.real
def test_real_star_centroids_agree_across_bands(real_field):
    """Bright unsaturated stars found in r sit at the same place in every aligned band (median within 0.1 px).

    Individual stars scatter by ~0.1-0.3 px between bands in reproject_exact output too (real inter-band
    astrometric residuals, chromatic refraction, PSF differences): the systematic offset is what alignment sets.
    """
    _, result = real_field
    cube = result.cube
    stars = bright_stars(cube[BANDS.index("r")])
    assert len(stars) >= 30
    ref = np.array([_moments(cube[2], y, x)[:2] for y, x in stars])
    for b in range(5):
        pos = np.array([_moments(cube[b], y, x)[:2] for y, x in stars])
        median = np.median(pos - ref, axis=0)
        assert np.all(np.abs(median) < 0.1), (BANDS[b], median)


def test_exact_wcs_fallback_when_the_polynomial_cannot_follow(star_field):
    """A band whose pixel map the polynomial fits worse than ``max_residual`` is mapped through the WCSs at
    every pixel instead; the result lands the stars where the polynomial path does, and the flag says so."""
    shape, xs, ys, fluxes = star_field
    ref_wcs = make_wcs(shape)
    wcss = [make_wcs(shape, shift=(2.1, 3.4), rotation=2e-4 if b == "u" else 0.0) for b in BANDS]
    wcss[BANDS.index("r")] = ref_wcs
    images = [render(shape, *align.exact_map(ref_wcs, w, xs, ys), fluxes) for w in wcss]
    ref = BANDS.index("r")
    fitted = align.align_bands(images, wcss, ref)
    exact = align.align_bands(images, wcss, ref, max_residual=-1.0)  # no fit is good enough: always fall back
    assert fitted.exact_fallback == [False] * len(BANDS)
    assert exact.exact_fallback == [b != "r" for b in BANDS]
    both = np.isfinite(fitted.cube) & np.isfinite(exact.cube)
    assert both.mean() > 0.9
    np.testing.assert_allclose(exact.cube[both], fitted.cube[both], atol=1e-3 * float(np.nanmax(fitted.cube)))
    for x, y in zip(xs, ys, strict=True):
        cx, cy = centroid(exact.cube[0], x, y)
        assert abs(cx - x) < 0.02 and abs(cy - y) < 0.02


def test_registration_measures_and_removes_a_bands_wcs_error():
    """A band whose stars sit 0.6 px right and 0.4 px up of where its WCS puts them (real SDSS frames are off
    by up to ~1 px): the aligned cube shows the offset, and aligning again with it puts the band on its stars."""
    from stargal import detection

    rng = np.random.default_rng(5)
    shape = (300, 400)
    xs, ys, fluxes = jittered_stars(rng, slice(20, 290, 30), slice(20, 390, 30), 3, (40, 300))
    ref_wcs = make_wcs(shape)
    wcss = [make_wcs(shape, shift=(1.3 * k, 2.0)) if b != "r" else ref_wcs for k, b in enumerate(BANDS)]
    error = {"i": (0.6, -0.4)}
    images = []
    for b, w in zip(BANDS, wcss, strict=True):
        bx, by = align.exact_map(ref_wcs, w, xs, ys)
        ex, ey = error.get(b, (0.0, 0.0))
        images.append(render(shape, bx + ex, by + ey, fluxes) + rng.normal(0, 0.02, shape).astype(np.float32))
    first = align.align_bands(images, wcss, BANDS.index("r"))
    offsets = detection.band_offsets(first.cube, BANDS)
    assert all(n >= detection.MIN_OFFSET_STARS for _, _, n in offsets)
    for b, (dx, dy, _) in zip(BANDS, offsets, strict=True):
        assert (dx, dy) == pytest.approx(error.get(b, (0.0, 0.0)), abs=0.05), b
    shifts = align.registration_shifts(offsets)
    assert shifts[BANDS.index("i")] == pytest.approx(error["i"], abs=0.05)
    assert all(s == (0.0, 0.0) for b, s in zip(BANDS, shifts, strict=True) if b != "i")
    second = align.align_bands(images, wcss, BANDS.index("r"), shifts=shifts)
    for dx, dy, _ in detection.band_offsets(second.cube, BANDS):
        assert abs(dx) < 0.03 and abs(dy) < 0.03


def test_registration_leaves_small_unmeasured_and_implausible_offsets_alone():
    shifts = align.registration_shifts(
        [(0.05, 0.05, 40), (float("nan"), float("nan"), 3), (4.0, 0.0, 40), (0.1, 0.2, 40)]
    )
    assert shifts == [(0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.1, 0.2)]


def test_common_offset_finds_a_reference_band_the_other_bands_agree_is_off():
    nan = float("nan")
    ref_off = [(2.0, 0.1, 30), (2.1, -0.1, 30), (0.0, 0.0, 30), (1.9, 0.0, 30), (2.0, 0.2, 30)]
    assert align.common_offset(ref_off, 2, 1.0, 0.5) == pytest.approx((2.0, 0.05))
    # one band off, or all off but each its own way, or too few measured: no common offset
    assert align.common_offset([(0.1, 0, 9), (2.0, 0, 9), (0, 0, 9), (0.2, 0, 9), (0, 0.1, 9)], 2, 1.0, 0.5) is None
    assert align.common_offset([(2.0, 0, 9), (0, 2.0, 9), (0, 0, 9), (-2.0, 0, 9), (0, -2, 9)], 2, 1.0, 0.5) is None
    assert align.common_offset([(nan, nan, 3), (nan, nan, 2), (0, 0, 9), (2, 0, 9), (2, 0, 9)], 2, 1.0, 0.5) is None
    # the six real fields' registration shifts (5405-6-99, all bands off by up to 1.06 px) are not a wrong r band
    real = [(0.325, -0.383), (0.375, -0.496), (0.0, 0.0), (0.881, -0.591), (0.414, -0.234)]
    assert align.common_offset(real, 2, 1.0, 0.5) is None


def _star_field_bands(errors: dict[str, tuple[float, float]]):
    """Five bands of a 300 x 400 star field whose WCSs differ, each band's stars ``errors[band]`` px from where its
    WCS puts them."""
    rng = np.random.default_rng(5)
    shape = (300, 400)
    xs, ys, fluxes = jittered_stars(rng, slice(20, 290, 30), slice(20, 390, 30), 3, (40, 300))
    ref_wcs = make_wcs(shape)
    wcss = [make_wcs(shape, shift=(1.3 * k, 2.0)) if b != "r" else ref_wcs for k, b in enumerate(BANDS)]
    images = []
    for b, w in zip(BANDS, wcss, strict=True):
        bx, by = align.exact_map(ref_wcs, w, xs, ys)
        ex, ey = errors.get(b, (0.0, 0.0))
        images.append(render(shape, bx + ex, by + ey, fluxes) + rng.normal(0, 0.02, shape).astype(np.float32))
    return images, wcss


def test_a_band_about_3_px_off_is_registered_and_one_beyond_it_refused():
    """A band whose stars sit 2.8 px off matched none of the reference band's (band_offsets follows a star ~3 px at
    most) and was left misaligned, as was one 3.4 px or (2.5, 2.5) px off, neither registered nor refused: exit 0."""
    from stargal.stages.alignment import BandMisalignedError, align_on_stars

    images, wcss = _star_field_bands({"i": (2.8, -0.3)})
    _, _, shifts = align_on_stars(images, wcss)
    assert shifts[BANDS.index("i")] == pytest.approx((2.8, -0.3), abs=0.05)
    for error, distance in (((3.4, 0.0), "3.4"), ((2.5, 2.5), "3.5")):
        images, wcss = _star_field_bands({"g": error})
        with pytest.raises(BandMisalignedError, match=rf"^its sources sit {distance} px from the r band's") as exc:
            align_on_stars(images, wcss)
        assert exc.value.band == "g"


def test_a_reference_band_whose_wcs_is_off_is_named():
    """The other four bands' stars all 2 px from the r band's where the WCSs put them: it is r's WCS that is off,
    and the cube (r's WCS) would place the catalog's objects 2 px off their sources; it was registered, exit 0."""
    from stargal.stages.alignment import BandMisalignedError, align_on_stars

    images, wcss = _star_field_bands({b: (2.0, 0.0) for b in BANDS if b != "r"})
    with pytest.raises(
        BandMisalignedError, match=r"other bands' sources all sit \(\+2\.0, \+0\.0\) px .* r band's"
    ) as exc:
        align_on_stars(images, wcss)
    assert exc.value.band == "r"
    images, wcss = _star_field_bands({"u": (1.0, 0.5), "g": (0.5, 0.2), "i": (-0.5, 0.0), "z": (1.2, 0.0)})
    _, _, shifts = align_on_stars(images, wcss)  # offsets of their own: registered
    assert shifts[BANDS.index("u")] == pytest.approx((1.0, 0.5), abs=0.05)


def test_an_offset_field_is_fitted_through_a_few_bad_stars_and_not_from_too_few():
    """The affine fit of a band's star offsets recovers a rotation's offsets at the frame's corners although a few
    stars (blends, cosmic rays) sit far off; with fewer than MIN_AFFINE_STARS stars there is no fit to judge by."""
    rng = np.random.default_rng(3)
    shape = (300, 400)
    x, y = rng.uniform(10, 390, 80), rng.uniform(10, 290, 80)
    angle = np.radians(0.25)  # offsets of a rotation about the frame's centre: 0 there, 1.09 px at the corners
    dx = -angle * (y - 149.5) + rng.normal(0, 0.03, 80)
    dy = angle * (x - 199.5) + rng.normal(0, 0.03, 80)
    dx[:5] += 1.5  # bad stars
    fit = align.fit_offset_field(detection.StarOffsets(x, y, dx, dy), shape)
    assert fit is not None and fit.used <= 75
    corner, distance, sigma = align.worst_corner(fit, shape)
    assert distance == pytest.approx(angle * np.hypot(199.5, 149.5), abs=0.03) and sigma < 0.02
    assert align.worst_corner(fit, shape, shift=(0.5, 0.0))[1] > distance  # the registration shift is taken off
    few = detection.StarOffsets(x[: align.MIN_AFFINE_STARS - 1], y[: align.MIN_AFFINE_STARS - 1], dx[:11], dy[:11])
    assert align.fit_offset_field(few, shape) is None


@pytest.mark.parametrize(("rotation", "scale"), [(0.25, 1.0), (0.0, 1.005)])
def test_a_band_whose_wcs_is_rotated_or_scaled_is_refused_at_its_corners(rotation: float, scale: float):
    """A band's WCS rotated by 0.25 degrees or scaled by 0.5 %: its stars sit on the reference band's at the frame's
    centre (median offset ~0, so it passed) and ~1.1-1.25 px off at its corners: the cube was written misaligned."""
    from stargal.stages.alignment import BandDistortedError, align_on_stars

    images, wcss = _star_field_bands({})
    k = BANDS.index("g")
    wrong = make_wcs((300, 400), shift=(1.3 * k, 2.0), rotation=np.radians(rotation), scale=scale)
    with pytest.raises(
        BandDistortedError, match=r"^its sources sit 1\.[0-3] px from the r band's at the frame's corner"
    ):
        align_on_stars(images, [wrong if i == k else w for i, w in enumerate(wcss)])
    k = BANDS.index("r")  # every other band drifts alike: the reference band's WCS is named
    wrong = make_wcs((300, 400), rotation=np.radians(rotation), scale=scale)
    with pytest.raises(BandDistortedError, match=r"^the other bands' sources all drift .* r band's header WCS") as exc:
        align_on_stars(images, [wrong if i == k else w for i, w in enumerate(wcss)])
    assert exc.value.band == "r"
