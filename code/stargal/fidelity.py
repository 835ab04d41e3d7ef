"""What the simulated sky must reproduce of the real one, measured the same way on aligned cubes of either.

Per cube (pure: arrays in, a dict of arrays out): the stellar half-light radius per band (the PSF; its
field-to-field range is the seeing range), how it changes across the frame, the PSF's radial profile (its
wings), the size-magnitude diagram of the detected sources (sizes over each one's local sky level,
``detection.local_sky_levels``), their number counts, the sky residual left by
sky subtraction, the colours of extended sources (galaxies), the band offsets alignment corrected, and the
PSF's aureole of scattered light about the brightest sources (out to 60 px). And the fit of the simulator's PSF
model (``sky_models``: Moffat core plus wings) to a stacked profile's encircled energy, which tells the real
cores' shape and wing share.
"""

from __future__ import annotations

import numpy as np

from . import sky_models
from .detection import annulus_stats, background_subtracted, half_light_radii_over, local_sky_levels, measure_sources

EE_RADII = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)  # pixels; encircled energy relative to EE_NORM_RADIUS
EE_NORM_RADIUS = 12.0
CORE_BETAS = (3.0, 4.0, 6.0, 10.0)  # core shapes fit_psf_shape is compared over (bench/psf_shape.py)
STACK_HALF = 15
COUNT_BINS = np.arange(14.0, 23.01, 0.5)
EXTENDED = 1.4  # a source is extended when its r-band r50 exceeds 1.4 times the stars'
COLOUR_LIMIT = 20.5
# the PSF's aureole: each bright source's median surface brightness x r^2 in annuli about these radii (px, a
# factor sqrt 2 apart), relative to its value at the first; flat for an r^-2 profile (further out the sky
# residual, weighted by r^2, drowns it)
AUREOLE_RADII = (15.0, 21.0, 30.0, 42.0, 60.0)
AUREOLE_SOURCES = 6  # the brightest sources of a field at least the largest radius from its edges


def stacked_profile(image: np.ndarray, x: np.ndarray, y: np.ndarray, half: int = STACK_HALF) -> np.ndarray | None:
    """Median of the stars' stamps, each re-centred on its sub-pixel position and normalised to unit flux
    within EE_NORM_RADIUS; None without stars fully inside the image."""
    from scipy import ndimage

    rows, cols = image.shape
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    disc = np.hypot(xx, yy) <= EE_NORM_RADIUS
    stamps = []
    for xi, yi in zip(x, y, strict=True):
        ix, iy = int(round(xi)), int(round(yi))
        if iy - half - 2 < 0 or ix - half - 2 < 0 or iy + half + 3 > rows or ix + half + 3 > cols:
            continue
        stamp = image[iy - half - 2 : iy + half + 3, ix - half - 2 : ix + half + 3].astype(np.float64)
        stamp = ndimage.shift(stamp, (iy - yi, ix - xi), order=3)[2:-2, 2:-2]
        total = stamp[disc].sum()
        if total > 0:
            stamps.append(stamp / total)
    return np.median(stamps, axis=0) if stamps else None


def encircled_energy(profile: np.ndarray, radii=EE_RADII) -> np.ndarray:
    """Fraction of the light within each radius of a centred profile (sub-pixel apertures, sep)."""
    import sep

    img = np.ascontiguousarray(profile, np.float32)
    c = np.array([profile.shape[1] // 2], np.float64), np.array([profile.shape[0] // 2], np.float64)
    total = sep.sum_circle(img, *c, EE_NORM_RADIUS, subpix=11)[0][0]
    return np.array([sep.sum_circle(img, *c, r, subpix=11)[0][0] / total for r in radii])


def model_encircled_energy(fwhm: float, wing: float, beta: float, radii=EE_RADII) -> np.ndarray:
    """Encircled energy of the simulator's PSF model (core Moffat ``beta``, FWHM ``fwhm`` px, ``wing`` share of
    the light in its wings), pixel-integrated, at ``radii`` relative to EE_NORM_RADIUS (as ``encircled_energy``)."""
    amp, var = sky_models.psf_components(sky_models.PSF(fwhm, wing), 1, core_beta=beta)
    var = var[0] + sky_models.PIXEL_VARIANCE
    r = np.asarray([*radii, EE_NORM_RADIUS], np.float64)
    ee = (amp[None, :] * (1 - np.exp(-(r[:, None] ** 2) / (2 * var[None, :])))).sum(1)
    return ee[:-1] / ee[-1]


def fit_psf_shape(ee: np.ndarray, beta: float, wings=np.linspace(0.0, 0.45, 46)) -> tuple[float, float, float]:
    """(rms residual, wing share, FWHM px) of the PSF model of core ``beta`` closest to a measured encircled-energy
    curve ``ee`` (at EE_RADII); on simulated stacks it recovers the drawn wing share to 0-4 points."""
    from scipy.optimize import minimize_scalar

    ee = np.asarray(ee, np.float64)
    best = (np.inf, np.nan, np.nan)
    for wing in wings:
        res = minimize_scalar(
            lambda f, wing=wing: np.sum((model_encircled_energy(f, wing, beta) - ee) ** 2), bounds=(0.5, 15.0)
        )
        best = min(best, (float(np.sqrt(res.fun / len(ee))), float(wing), float(res.x)))
    return best


def annulus_levels(image: np.ndarray, x: np.ndarray, y: np.ndarray, radii=AUREOLE_RADII) -> np.ndarray:
    """[n, radii] median surface brightness (robust to neighbours) times r^2 in annuli a factor sqrt 2 wide
    about each source at (x, y); NaN rows for sources nearer the edges than the last annulus."""
    rows, cols = image.shape
    radii = np.asarray(radii, np.float64)
    half = int(np.ceil(radii[-1] * 2**0.25)) + 1
    levels = np.full((len(x), len(radii)), np.nan)
    for k, (xi, yi) in enumerate(zip(x, y, strict=True)):
        ix, iy = int(round(xi)), int(round(yi))
        if iy - half < 0 or ix - half < 0 or iy + half >= rows or ix + half >= cols:
            continue
        stamp = image[iy - half : iy + half + 1, ix - half : ix + half + 1]
        yy, xx = np.mgrid[iy - half : iy + half + 1, ix - half : ix + half + 1]
        dist = np.hypot(xx - xi, yy - yi)
        rings = [(dist >= r / 2**0.25) & (dist < r * 2**0.25) for r in radii]
        levels[k] = np.array([np.nanmedian(stamp[ring]) for ring in rings]) * radii**2
    return levels


def local_levels(image: np.ndarray, x: np.ndarray, y: np.ndarray, annulus: tuple[float, float]) -> np.ndarray:
    """Median of ``image`` in the annulus (inner, outer radius in pixels) about each (x, y): the level a source
    sits on; NaN nearer the edges than the annulus."""
    return annulus_stats(image, x, y, annulus)[0]


def aureole_profile(image: np.ndarray, x: np.ndarray, y: np.ndarray, radii=AUREOLE_RADII) -> np.ndarray:
    """Median over sources at (x, y) of their ``annulus_levels`` relative to the first radius: how the PSF's
    outskirts fall (flat: as r^-2). NaN without a source far enough from the edges."""
    levels = annulus_levels(image, x, y, radii)
    usable = levels[:, 0] > 0
    return np.median(levels[usable] / levels[usable, :1], axis=0) if usable.any() else np.full(len(radii), np.nan)


def measure_cube(data: np.ndarray, bands: str, header=None) -> dict:
    """Every fidelity measurement of one aligned cube [bands, rows, cols] (see the module docstring)."""
    rows, cols = data.shape[1:]
    sources = measure_sources(data, bands)
    ref = bands.index("r")
    mag = sources.magnitude
    r = mag[:, ref]
    stars = sources.star
    xn = (sources.x[stars] - (cols - 1) / 2) / (cols / 2)
    slope = []
    ee = []
    residual = []
    aureole = []
    brightest = np.argsort(-np.nan_to_num(sources.flux[:, ref], nan=-np.inf))
    for b in range(len(bands)):
        sizes = sources.r50[stars, b]
        ok = np.isfinite(sizes)
        slope.append(float(np.polyfit(xn[ok], sizes[ok], 1)[0] / np.median(sizes[ok])) if ok.sum() >= 8 else np.nan)
        image, rms = background_subtracted(data[b])
        if b == ref:  # sizes over each source's own sky level: the mesh's offset on real frames inflates faint ones
            level = local_sky_levels(image, sources.x, sources.y)
            local_r50 = half_light_radii_over(image, sources.x, sources.y, level)
        profile = stacked_profile(image, sources.x[stars], sources.y[stars])
        ee.append(encircled_energy(profile) if profile is not None else np.full(len(EE_RADII), np.nan))
        residual.append(_sky_residual(data[b]))
        inside = _far_from_edges(sources.x[brightest], sources.y[brightest], (rows, cols), AUREOLE_RADII[-1])
        chosen = brightest[inside][:AUREOLE_SOURCES]
        aureole.append(aureole_profile(data[b], sources.x[chosen], sources.y[chosen]))
    extended = (sources.r50[:, ref] > EXTENDED * sources.stellar_r50[ref]) & (r < COLOUR_LIMIT)
    g, i = bands.index("g"), bands.index("i")
    offsets = {}
    if header is not None:
        offsets = {b: (float(header.get(f"DX_{b}", np.nan)), float(header.get(f"DY_{b}", np.nan))) for b in bands}
    area = rows * cols / (1361.0 * 2048.0)  # in full SDSS fields (owned rows)
    return {
        "stellar_r50": sources.stellar_r50.tolist(),
        "stars": int(stars.sum()),
        "psf_slope_x": slope,
        "encircled_energy": np.array(ee).tolist(),
        "aureole": np.array(aureole).tolist(),
        "size_magnitude": {
            "r": r.tolist(),
            "r50_over_stellar": (local_r50 / sources.stellar_r50[ref]).tolist(),
        },
        "counts_per_field": (np.histogram(r[np.isfinite(r)], COUNT_BINS)[0] / area).tolist(),
        "sources_per_field": float(len(sources) / area),
        "sky_residual": residual,
        "galaxy_colours": {
            "g_r": (mag[extended, g] - mag[extended, ref]).tolist(),
            "r_i": (mag[extended, ref] - mag[extended, i]).tolist(),
        },
        "band_offsets": offsets,
    }


def _far_from_edges(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], margin: float) -> np.ndarray:
    rows, cols = shape
    return (
        (x > margin * 1.2 + 1) & (y > margin * 1.2 + 1) & (x < cols - margin * 1.2 - 2) & (y < rows - margin * 1.2 - 2)
    )


def _sky_residual(image: np.ndarray) -> float:
    """Spread of sep's 64-pixel background mesh, in units of the background noise: what sky subtraction left."""
    import sep

    data = np.ascontiguousarray(np.nan_to_num(np.asarray(image, np.float32)))
    bkg = sep.Background(data, bw=64, bh=64, fw=3, fh=3)
    return float(np.std(bkg.back()) / bkg.globalrms)
