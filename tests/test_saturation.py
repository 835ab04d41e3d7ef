"""Saturated r-band cores (stargal.saturation): synthetic stars saturated as the simulator saturates them, and the
real field 4510-4-30 against its star sweep's SATURATED flags."""

from __future__ import annotations

import numpy as np
import pytest

from stargal import detection, saturation, sky_models
from stargal.stages.predict import r_photometry

SIGMA = 1.4  # pixels: a 1.3" star
LEVEL = 260.0  # nanomaggies: where the simulator's r band saturates


def star_field(fluxes: list[float], saturate: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, x, y): Gaussian stars of ``fluxes`` in a row on noisy sky; ``saturate``: None, "flat" (clipped at
    LEVEL and bled along the column) or "interpolated" (then interpolated over along the rows, as photo does)."""
    rng = np.random.default_rng(1)
    image = rng.normal(0, 0.03, (120, 60 * len(fluxes))).astype(np.float32)
    x, y = 30.0 + 60 * np.arange(len(fluxes)) + 0.3, np.full(len(fluxes), 60.2)
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    for flux, xk, yk in zip(fluxes, x, y, strict=True):
        image += flux / (2 * np.pi * SIGMA**2) * np.exp(-0.5 * ((xx - xk) ** 2 + (yy - yk) ** 2) / SIGMA**2)
    if saturate:
        sky_models.saturate(image, LEVEL)
        if saturate == "interpolated":
            sky_models.interpolate_rows(image, sky_models.saturation_mask(image, LEVEL))
    return image, x, y


def flagged(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    level = detection.local_sky_levels(image, x, y)
    flux = detection.local_gaussian_fluxes(image, x, y, SIGMA, level)
    return saturation.saturated(image, x, y, level, flux, SIGMA)


BRIGHT = [3_000.0, 10_000.0, 60_000.0]  # r 13.8, 12.5, 10.6: peaks 1.0-20 times LEVEL


@pytest.mark.parametrize("how", ["flat", "interpolated"])
def test_saturated_stars_are_flagged_however_the_frames_left_their_cores(how):
    assert flagged(*star_field(BRIGHT, how)).all()


def test_unsaturated_stars_of_any_brightness_are_not_flagged():
    """Up to just under the saturation level (peak 0.9 LEVEL, r ~ 14), and faint ones."""
    fluxes = [0.9 * LEVEL * 2 * np.pi * SIGMA**2, 1_000.0, 300.0, 50.0, 5.0]
    assert not flagged(*star_field(fluxes, None)).any()


def test_a_faint_star_beside_a_saturated_one_is_not_flagged():
    image, x, y = star_field([60_000.0], "interpolated")
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    fx, fy = x[0] + 7.0, y[0] + 2.0
    image += 20.0 / (2 * np.pi * SIGMA**2) * np.exp(-0.5 * ((xx - fx) ** 2 + (yy - fy) ** 2) / SIGMA**2)
    assert flagged(image, np.array([x[0], fx]), np.array([y[0], fy])).tolist() == [True, False]


@pytest.mark.real
def test_real_4510_flags_the_catalogs_saturated_stars_and_no_other(sample_dir):
    """The star sweep's r-band SATURATED stars on the frame (4 of field 30, 1 of field 29 in their overlap) are the
    sources flagged; no other catalog star is."""
    from astropy.io import fits

    from stargal.geometry import sky_to_pixel
    from stargal.sdss import read_frame

    folder = sample_dir / "004510-4-0030"
    r_frame = read_frame(folder / "frame-r-004510-4-0030.fits.bz2")
    frame, wcs = np.asarray(r_frame.image, np.float32), r_frame.wcs
    with fits.open(folder / "calibObj-004510-4-star.fits.gz") as hdul:
        stars = hdul[1].data
        ra, dec, flags = np.asarray(stars["RA"]), np.asarray(stars["DEC"]), np.asarray(stars["FLAGS"])[:, 2]
    sources = detection.measure_sources(frame[None], "r", faint=True)
    image = detection.background_subtracted(frame)[0]
    flux, _, sat = r_photometry(sources, image, 0)
    sx, sy = sky_to_pixel(wcs, ra, dec)
    d = np.hypot(sources.x[:, None] - sx[None], sources.y[:, None] - sy[None])
    star = d.min(axis=1) < 2.5
    catalog_saturated = star & ((flags[d.argmin(axis=1)] & (1 << 18)) != 0)
    bright_saturated = catalog_saturated & (detection.flux_to_mag(flux) < 17)  # not a faint child of one
    assert bright_saturated.sum() == 5 and sat[bright_saturated].all()
    assert sat.sum() == 5 and not (sat & star & ~catalog_saturated).any()


def test_a_half_light_radius_beyond_the_measured_radius_is_left_empty_not_served_as_its_bound():
    """sep gives the measuring radius itself where half the light lies beyond it: --detect served r50_px 8.0 for
    6,006 of the Galactic-plane field's sources (neighbours' light) and for large galaxies, as if measured."""
    from types import SimpleNamespace

    rows, cols = np.mgrid[0:120, 0:160]

    def star(x, y, flux):
        return flux / (2 * np.pi * 1.5**2) * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * 1.5**2))

    # a faint star 10 px from four brighter ones, as in a crowded field: most light within 12 px is theirs
    image = star(40.0, 60.0, 400.0) + star(115.0, 60.0, 20.0)
    for dx, dy in ((10, 0), (-10, 0), (0, 10), (0, -10)):
        image = image + star(115.0 + dx, 60.0 + dy, 200.0)
    image = image.astype(np.float32)
    sources = SimpleNamespace(x=np.array([40.0, 115.0]), y=np.array([60.0, 60.0]), stellar_r50=[1.77], flux_scale=[1.0])
    _, r50, _ = r_photometry(sources, image, 0)
    assert 1.5 < r50[0] < 2.2  # a Gaussian's r50 is 1.18 sigma
    assert np.isnan(r50[1])
    assert detection.half_light_radii(image, np.array([115.0]), np.array([60.0]))[0] == detection.SIZE_RADIUS


@pytest.mark.parametrize("how", ["flat", "interpolated", None])
def test_a_bright_core_without_data_is_flagged_not_served_as_measured(how):
    """A frame whose saturated (or nearly saturated) pixels are NaN or inf (stage 01 masks both as no data): the
    cores read 0, under the floor and neither hollow nor bright by their light, and the stars were served as
    unsaturated, exit 0. A faint star beside a missing pixel is left alone."""
    image, x, y = star_field([*BRIGHT, 20.0], how)
    image[image >= 200] = np.nan
    faint_x, faint_y = int(round(x[-1])) + 2, int(round(y[-1]))
    image[faint_y, faint_x] = np.nan  # a bad pixel in the faint star's core
    assert flagged(image, x, y).tolist() == [True, True, True, False]


@pytest.mark.parametrize("how", ["flat", "interpolated"])
def test_saturated_stars_are_found_without_a_source_list(how):
    """``bright_cores`` (the presence test of positions runs no detection) finds and flags each saturated core, however the
    frames left it, within CORE_RADIUS (an interpolated core can leave two groups, each listed), and no
    unsaturated star of any brightness."""
    image, x, y = star_field(BRIGHT, how)
    sx, sy = saturated_cores(image)
    d = np.hypot(sx[:, None] - x[None], sy[:, None] - y[None])
    assert (d.min(axis=0) < saturation.CORE_RADIUS).all() and (d.min(axis=1) < saturation.CORE_RADIUS).all()
    unsaturated = [0.9 * LEVEL * 2 * np.pi * SIGMA**2, 1_000.0, 300.0, 50.0, 5.0]
    assert len(saturated_cores(star_field(unsaturated, None)[0])[0]) == 0


def saturated_cores(image):
    x, y, _, flagged = saturation.bright_cores(image, SIGMA)
    return x[flagged], y[flagged]
