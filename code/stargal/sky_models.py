"""Physics of the simulated SDSS sky: object populations, profiles, rendering, detector effects.

Pure numpy functions (no files). Profiles are mixtures of Gaussians (MoG): Sersic profiles and the Moffat PSF
are each fitted once by non-negative least squares to a sum of circular Gaussians, so convolving a galaxy with
the PSF and integrating over a pixel are exact sums of Gaussians (pixel box ~ Gaussian of variance 1/12).
Numbers marked "measured" come from the real DR17 sample (run 4510 camcol 4 field 30 star catalog and frames,
run 8162 camcol 6 field 80 frames); see bench/calibrate_simulation.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls
from scipy.special import gammaincinv

BAND_INDEX = {"u": 0, "g": 1, "r": 2, "i": 3, "z": 4}

# measured: robust background sigma (nanomaggies) of the real frames; a field draws uniformly in the range
BACKGROUND_SIGMA = {
    "u": (0.043, 0.046),
    "g": (0.0155, 0.017),
    "r": (0.023, 0.031),
    "i": (0.037, 0.051),
    "z": (0.16, 0.19),
}
# camcol-typical CCD gains (electrons per DN) of the SDSS camera, for the objects' Poisson noise
GAIN = {"u": 1.6, "g": 3.9, "r": 4.8, "i": 4.9, "z": 4.6}
# measured on stacks of bright isolated stars in the six real fields of ../shared/sdss-sample (g, r, i; the
# encircled energy at 1.5-8 px fitted by this model, bench/psf_shape.py): the PSF is a Moffat core of beta 4
# (the atmosphere's; a near-Gaussian beta 6 core fits 15 of the 18 real profiles worse, with about twice the
# residual) plus power-law wings (a Moffat of beta 2.5, 2.5 times as wide) holding 2-17 % of the light (the fit
# recovers a simulated field's drawn share to 0-4 points); each band's core FWHM relative to r (median over the
# fields) and its field-to-field scatter
PSF_CORE_BETA = 4.0
PSF_WING_BETA = 2.5
PSF_WING_SCALE = 2.5
PSF_WING_FRACTION = (0.04, 0.18)
PSF_BAND_FACTOR = {"u": 1.15, "g": 1.10, "r": 1.0, "i": 1.05, "z": 1.02}
PSF_BAND_SCATTER = 0.07
# beyond the wings the real PSF has an aureole of scattered light falling as r^-2 from ~15 px out to at least
# 120 px. On the brightest catalog stars of 4510-4-30 (bench/aureole_level.py) it holds a share of the star's
# PSF flux per e-fold of radius of 0.012 in g and r, 0.028 in i and about 0.02 in u and z: 10-100 times the core's
# and wings' light at 30-100 px; around the six fields' brightest sources it falls alike (bench/fidelity.py,
# psf_aureole.png). Drawn per field within AUREOLE_FIELD_SCALE of these. Equal-flux Gaussians whose widths
# double from one to the next sum to an r^-2 profile between the narrowest and the widest.
AUREOLE_PER_EFOLD = {"u": 0.022, "g": 0.012, "r": 0.012, "i": 0.028, "z": 0.02}
AUREOLE_FIELD_SCALE = (0.7, 1.4)
AUREOLE_SIGMAS_PX = (10.0, 20.0, 40.0, 80.0, 160.0)
# measured: catalog PSF_FWHM relative to the core FWHM of the images (4510-4-30 star sweep against its frames:
# 1.05 / 1.13 / 1.08 in g / r / i)
CATALOG_FWHM_FACTOR = 1.08
# Schlafly & Finkbeiner (2011) A_b / E(B-V) for the SDSS filters (R_V = 3.1)
EXTINCTION_R = {"u": 4.239, "g": 3.303, "r": 2.285, "i": 1.698, "z": 1.263}
PIXEL_VARIANCE = 1.0 / 12.0  # a unit pixel box has variance 1/12: pixel integration of a Gaussian


# ----------------------------------------------------------------------------------------------------------
# Mixture-of-Gaussians profiles


def _fit_radial_mog(profile: np.ndarray, r: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative amplitudes (summing to 1) of circular unit-flux Gaussians matching a radial profile."""
    dr = np.gradient(r)
    w = np.sqrt(2 * np.pi * r * dr)  # least squares over the plane, not over radius
    design = np.exp(-0.5 * r[:, None] ** 2 / variances[None, :]) / (2 * np.pi * variances[None, :])
    amp, _ = nnls(design * w[:, None], profile * w)
    keep = amp > 1e-4 * amp.sum()
    amp, var = amp[keep], variances[keep]
    return (amp / amp.sum()).astype(np.float64), var.astype(np.float64)


@functools.lru_cache(maxsize=8)
def sersic_mog(n: float) -> tuple[np.ndarray, np.ndarray]:
    """MoG of a unit-flux Sersic profile of index n and half-light radius 1 (truncated softly at 8 re)."""
    b = gammaincinv(2 * n, 0.5)
    r = np.geomspace(1e-3, 10.0, 600)
    prof = np.exp(-b * (r ** (1 / n) - 1))
    prof *= np.clip((10.0 - r) / 2.0, 0, 1)  # soft truncation 8-10 re, as photo's model fits do
    prof /= np.trapezoid(prof * 2 * np.pi * r, r)
    # few components keep rendering cheap; cumulative-flux error < 0.5 % (exp), 1.2 % (deV)
    variances = np.geomspace(5e-4, 8.0, 5) if n > 2 else np.geomspace(0.01, 3.0, 6)
    return _fit_radial_mog(prof, r, variances)


@functools.lru_cache(maxsize=32)
def moffat_mog(beta: float) -> tuple[np.ndarray, np.ndarray]:
    """MoG of a unit-flux Moffat PSF of FWHM 1 (variances in FWHM^2 units)."""
    alpha = 0.5 / np.sqrt(2 ** (1 / beta) - 1)
    r = np.geomspace(1e-3, 25.0, 800)
    prof = (beta - 1) / (np.pi * alpha**2) * (1 + (r / alpha) ** 2) ** (-beta)
    variances = np.geomspace(0.1, 10.0, 6)  # 4-5 components, cumulative-flux error < 0.3 %
    return _fit_radial_mog(prof, r, variances)


def det2(m: np.ndarray) -> np.ndarray:
    """Determinants of a stack of 2x2 matrices (much faster than np.linalg.det for many small ones)."""
    return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]


def mat2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Products ``a @ b`` of (stacks of) 2x2 matrices, written out: numpy's matmul runs the BLAS kernels OpenBLAS
    picks for the processor, whose last bits differ between machines (an AMD and an Intel one simulate the same
    sky to the bit only without them; tests/test_simulate.py)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), np.float64)
    for i in range(2):
        for j in range(2):
            out[..., i, j] = a[..., i, 0] * b[..., 0, j] + a[..., i, 1] * b[..., 1, j]
    return out


def inv2(m: np.ndarray) -> np.ndarray:
    """Inverses of a stack of 2x2 matrices."""
    out = np.empty_like(m)
    d = det2(m)
    out[..., 0, 0] = m[..., 1, 1] / d
    out[..., 1, 1] = m[..., 0, 0] / d
    out[..., 0, 1] = -m[..., 0, 1] / d
    out[..., 1, 0] = -m[..., 1, 0] / d
    return out


def ellipse_covariance(re_arcsec: np.ndarray, q: np.ndarray, pa_deg: np.ndarray) -> np.ndarray:
    """Sky-plane (east, north) covariance [n, 2, 2] in arcsec^2 of an ellipse with unit variance along re."""
    theta = np.radians(pa_deg)  # position angle east of north
    major = np.stack([np.sin(theta), np.cos(theta)], -1)
    minor = np.stack([np.cos(theta), -np.sin(theta)], -1)
    a2 = re_arcsec**2
    b2 = (re_arcsec * q) ** 2
    return (
        a2[:, None, None] * major[:, :, None] * major[:, None, :]
        + b2[:, None, None] * minor[:, :, None] * minor[:, None, :]
    )


# ----------------------------------------------------------------------------------------------------------
# Populations


def _sample_counts(rng: np.random.Generator, n: int, edges: list[float], slopes: list[float]) -> np.ndarray:
    """Magnitudes from piecewise dN/dm ~ 10^(slope m) number counts (continuous at the edges)."""
    m = np.linspace(edges[0], edges[-1], 4000)
    logd = np.zeros_like(m)
    level = 0.0
    for lo, hi, s in zip(edges[:-1], edges[1:], slopes, strict=True):
        seg = (m >= lo) & (m <= hi)
        logd[seg] = level + s * (m[seg] - lo)
        level += s * (hi - lo)
    cdf = np.cumsum(10**logd)
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    return np.interp(rng.random(n), cdf, m)


def expected_count(total_bright: float, edges: list[float], slopes: list[float], limit: float) -> float:
    """Objects over the whole magnitude range when ``total_bright`` of them are brighter than ``limit``."""
    m = np.linspace(edges[0], edges[-1], 4000)
    logd = np.zeros_like(m)
    level = 0.0
    for lo, hi, s in zip(edges[:-1], edges[1:], slopes, strict=True):
        seg = (m >= lo) & (m <= hi)
        logd[seg] = level + s * (m[seg] - lo)
        level += s * (hi - lo)
    d = 10**logd
    return total_bright * d.sum() / d[m <= limit].sum()


# number counts per full field (2048 x 1361 owned pixels) brighter than r = 22.5, and count slopes. Measured on the
# real sample: 150-170 stars per field at the Galactic pole (the 4510-4 star sweep: 169), rising as csc|b|
# (capped at 30 times: the Galactic-plane field 5405-6-99 holds ~40 times as many sources); galaxies 7 per field and
# magnitude at r = 18 and 38 at r = 19.75 (extended sources of the four high-latitude fields)
STAR_COUNTS = {"per_field": 150.0, "edges": [12.0, 21.5, 24.5], "slopes": [0.15, 0.05]}
MAX_STAR_DENSITY = 30.0
GALAXY_COUNTS = {"per_field": 375.0, "edges": [14.0, 20.0, 24.3], "slopes": [0.42, 0.30]}

# stellar locus (Covey et al. 2007 style) parameterised by g-r
_LOCUS_GR = np.array([-0.3, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.5, 1.6])
_LOCUS_UG = np.array([0.5, 0.6, 0.8, 0.95, 1.15, 1.6, 2.1, 2.45, 2.6, 2.6, 2.6, 2.6])
_LOCUS_RI = np.array([-0.2, -0.15, -0.05, 0.05, 0.12, 0.2, 0.3, 0.4, 0.6, 1.0, 1.5, 1.9])
_LOCUS_IZ = np.array([-0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.22, 0.3, 0.5, 0.8, 1.0])

# galaxy colour tracks against redshift for early and late types
_TRACK_Z = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.3])
_EARLY = {
    "ug": [1.75, 1.85, 2.0, 2.1, 2.1, 2.1, 2.1, 2.1, 2.1],
    "gr": [0.75, 0.92, 1.25, 1.55, 1.75, 1.85, 1.85, 1.8, 1.7],
    "ri": [0.38, 0.42, 0.46, 0.52, 0.63, 0.78, 1.05, 1.2, 1.2],
    "iz": [0.30, 0.33, 0.36, 0.38, 0.40, 0.45, 0.60, 0.70, 0.8],
}
_LATE = {
    "ug": [1.0, 1.05, 1.15, 1.25, 1.35, 1.4, 1.45, 1.45, 1.4],
    "gr": [0.45, 0.55, 0.75, 0.95, 1.1, 1.15, 1.1, 1.0, 0.9],
    "ri": [0.28, 0.32, 0.36, 0.40, 0.48, 0.55, 0.7, 0.75, 0.8],
    "iz": [0.18, 0.20, 0.25, 0.28, 0.30, 0.32, 0.42, 0.5, 0.6],
}
# blue star-forming galaxies: measured on the real sample, a tenth of the extended sources at r = 17-20.5 have
# g-r < 0.5 and many u-g < 1, colours the early and late tracks alone never reach
_BLUE = {
    "ug": [0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.0, 0.9],
    "gr": [0.3, 0.35, 0.45, 0.6, 0.75, 0.85, 0.85, 0.75, 0.6],
    "ri": [0.15, 0.2, 0.25, 0.3, 0.38, 0.45, 0.55, 0.6, 0.6],
    "iz": [0.05, 0.08, 0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4],
}

POPULATION_DTYPE = np.dtype(
    [
        ("x", "f8"),  # position in the owning field's r frame (0-based pixels)
        ("y", "f8"),
        ("star", "?"),
        ("mag", "f8", (5,)),  # true total AB-like magnitudes u g r i z
        ("re", "f8"),  # disk (or single-component) half-light radius, arcsec; 0 for stars
        ("q", "f8"),
        ("pa", "f8"),  # degrees east of north
        ("bulge_frac", "f8"),  # fraction of flux in the de Vaucouleurs component
        ("bulge_re", "f8"),
        ("bulge_q", "f8"),
        ("redshift", "f8"),
    ]
)


def _mags_from_colours(r: np.ndarray, ug, gr, ri, iz) -> np.ndarray:
    g = r + gr
    u = g + ug
    i = r - ri
    z = i - iz
    return np.stack([u, g, r, i, z], -1)


def draw_stars(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` stars: magnitudes from the number counts, colours from the stellar locus, a few quasars."""
    out = np.zeros(n, POPULATION_DTYPE)
    r = _sample_counts(rng, n, STAR_COUNTS["edges"], STAR_COUNTS["slopes"])
    # g-r: blue halo turn-off stars, a spread of disk stars, red M dwarfs more common at faint magnitudes
    pick = rng.random(n)
    # measured: real star catalog (r < 20) g-r percentiles 10/50/90 = 0.30 / 0.88 / 1.45
    frac_m = np.clip(0.18 + 0.05 * (r - 16), 0.15, 0.45)
    gr = np.where(
        pick < frac_m,
        rng.normal(1.42, 0.08, n),
        np.where(pick < frac_m + 0.28, rng.normal(0.35, 0.1, n), rng.uniform(0.45, 1.35, n)),
    )
    gr = np.clip(gr, -0.3, 1.6)
    ug = np.interp(gr, _LOCUS_GR, _LOCUS_UG) + rng.normal(0, 0.08, n)
    ri = np.interp(gr, _LOCUS_GR, _LOCUS_RI) + rng.normal(0, 0.04, n)
    iz = np.interp(gr, _LOCUS_GR, _LOCUS_IZ) + rng.normal(0, 0.04, n)
    # a few quasars: point sources with flat, UV-excess colours
    qso = (rng.random(n) < 0.04) & (r > 18.5)
    ug[qso] = rng.normal(0.25, 0.15, qso.sum())
    gr[qso] = rng.normal(0.2, 0.12, qso.sum())
    ri[qso] = rng.normal(0.15, 0.1, qso.sum())
    iz[qso] = rng.normal(0.05, 0.1, qso.sum())
    out["mag"] = _mags_from_colours(r, ug, gr, ri, iz)
    out["star"] = True
    out["q"] = 1.0
    return out


def draw_galaxies(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` galaxies: magnitudes, redshifts, colours of early/late types, sizes, shapes, bulge fractions."""
    out = np.zeros(n, POPULATION_DTYPE)
    r = _sample_counts(rng, n, GALAXY_COUNTS["edges"], GALAXY_COUNTS["slopes"])
    z = np.clip(0.1 * 10 ** (0.148 * (r - 17.5) + rng.normal(0, 0.15, n)), 0.01, 1.3)
    early = rng.random(n) < np.clip(0.45 - 0.04 * (r - 17), 0.2, 0.45)
    blue = ~early & (rng.random(n) < np.clip(0.2 + 0.04 * (r - 17), 0.2, 0.4))
    cols = {}
    for key, sig in (("ug", 0.25), ("gr", 0.1), ("ri", 0.07), ("iz", 0.08)):
        e = np.interp(z, _TRACK_Z, _EARLY[key])
        lt = np.interp(z, _TRACK_Z, _LATE[key])
        bl = np.interp(z, _TRACK_Z, _BLUE[key])
        # late types span a range of star formation: mix towards the early track
        mix = np.where(early, 1.0, rng.uniform(0.0, 0.5, n))
        cols[key] = np.where(blue, bl, mix * e + (1 - mix) * lt) + rng.normal(0, sig, n)
    out["mag"] = _mags_from_colours(r, cols["ug"], cols["gr"], cols["ri"], cols["iz"])
    # size-magnitude relation: median half-light radius 2.2" at r = 18, shrinking 0.13 dex per magnitude
    re = 2.2 * 10 ** (-0.13 * (r - 18) + rng.normal(0, 0.2, n)) * np.where(early, 0.8, 1.0)
    out["re"] = np.clip(re, 0.12, 30.0)
    bt = np.where(early, rng.uniform(0.6, 1.15, n), np.where(rng.random(n) < 0.7, 0.0, rng.uniform(0.1, 0.4, n)))
    bt = np.where(bt > 0.95, 1.0, bt)  # pure de Vaucouleurs ellipticals
    out["bulge_frac"] = bt
    out["bulge_re"] = np.where(bt > 0.95, out["re"], 0.5 * out["re"])
    out["q"] = np.where(early, rng.uniform(0.5, 1.0, n), np.clip(rng.beta(2.2, 1.3, n), 0.15, 1.0))
    out["bulge_q"] = rng.uniform(0.6, 1.0, n)
    out["pa"] = rng.uniform(0, 180, n)
    out["redshift"] = z
    return out


# ----------------------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class PSF:
    """One band's PSF at each object: core FWHM in pixels (scalar or one per object) and the wings' light share."""

    fwhm_px: np.ndarray | float
    wing: float


def psf_components(psf: PSF, n: int, core_beta: float = PSF_CORE_BETA) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes [K] (summing to 1) and isotropic variances [n, K] (pixel^2) of the PSF's Gaussian mixture
    (``core_beta``: another core shape, for fitting the model to measured profiles)."""
    core_amp, core_var = moffat_mog(core_beta)
    wing_amp, wing_var = moffat_mog(PSF_WING_BETA)
    amp = np.concatenate([(1 - psf.wing) * core_amp, psf.wing * wing_amp])
    unit_var = np.concatenate([core_var, wing_var * PSF_WING_SCALE**2])
    fwhm = np.broadcast_to(np.asarray(psf.fwhm_px, np.float64), (n,))
    return amp, fwhm[:, None] ** 2 * unit_var[None, :]


def object_gaussians(
    pop: np.ndarray, band: str, psf: PSF, sky_to_pix: np.ndarray, pixel_integrate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Amplitudes [n, K] (flux nanomaggies), pixel covariances [n, K, 2, 2] of each object's PSF-convolved MoG.

    ``sky_to_pix`` [2, 2] maps sky (east, north) arcsec offsets to pixel (x, y) offsets.
    """
    bi = BAND_INDEX[band]
    flux = 10 ** (-0.4 * (pop["mag"][:, bi] - 22.5))
    n = len(pop)
    psf_amp, psf_var = psf_components(psf, n)
    eye = np.eye(2)
    comps_amp = []
    comps_cov = []
    # stars and galaxies share one component list: [point] + disk (exp) + bulge (deV); zero amplitudes pad
    exp_amp, exp_var = sersic_mog(1.0)
    dev_amp, dev_var = sersic_mog(4.0)
    star = pop["star"]
    bt = np.where(star, 0.0, pop["bulge_frac"])
    point = star.astype(float)
    disk = (~star) * (1 - bt)
    bulge = (~star) * bt
    to_pixels = lambda cov: mat2(mat2(sky_to_pix, cov), np.swapaxes(sky_to_pix, -1, -2))  # noqa: E731  [n,2,2] px^2
    m_disk = to_pixels(ellipse_covariance(pop["re"], pop["q"], pop["pa"]))
    m_bulge = to_pixels(ellipse_covariance(pop["bulge_re"], pop["bulge_q"], pop["pa"]))
    shape_sets = [(point, np.ones(1), np.zeros(1), None)]
    if disk.any():
        shape_sets.append((disk, exp_amp, exp_var, m_disk))
    if bulge.any():
        shape_sets.append((bulge, dev_amp, dev_var, m_bulge))
    extra = PIXEL_VARIANCE if pixel_integrate else 0.0
    for weight, s_amp, s_var, m in shape_sets:
        for a, v in zip(s_amp, s_var, strict=True):
            gal_cov = np.zeros((n, 2, 2)) if m is None else v * m
            for k, pa_ in enumerate(psf_amp):
                comps_amp.append(weight * a * pa_)
                comps_cov.append(gal_cov + (psf_var[:, k] + extra)[:, None, None] * eye)
    amp = np.stack(comps_amp, 1) * flux[:, None]
    cov = np.stack(comps_cov, 1)
    # drop components no object uses (e.g. the galaxy ones when only stars are drawn)
    used = np.abs(amp).max(0) > 0
    return amp[:, used], cov[:, used], flux


def aureole_gaussians(flux: np.ndarray, per_efold: float) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes [n, K] (nanomaggies) and pixel covariances [n, K, 2, 2] of the PSF aureole of objects of
    ``flux`` (nanomaggies) holding ``per_efold`` of it per e-fold of radius (an r^-2 profile, see
    AUREOLE_PER_EFOLD). Every object is taken as a point: the aureole is far wider than any galaxy."""
    sigmas = np.asarray(AUREOLE_SIGMAS_PX)
    share = per_efold * np.log(sigmas[1] / sigmas[0])  # each Gaussian stands for one doubling of the radius
    amp = np.asarray(flux, np.float64)[:, None] * np.full(len(sigmas), share)[None, :]
    cov = (sigmas**2)[None, :, None, None] * np.eye(2)[None, None]
    return amp, np.broadcast_to(cov, amp.shape + (2, 2)).copy()


def psf_flux_ratio(pop: np.ndarray, band: str, psf: PSF, sky_to_pix: np.ndarray):
    """PSF-fit flux / total flux of each object, and the noise-equivalent areas (pixels) of PSF and model fits.

    A PSF fit measures sum(I P) / sum(P P); for Gaussian mixtures both are sums of Gaussian overlap integrals.
    """
    amp, cov, flux = object_gaussians(pop, band, psf, sky_to_pix, pixel_integrate=False)
    amp = amp / flux[:, None]
    psf_amp, psf_var = psf_components(psf, len(pop))
    eye = np.eye(2)
    pp = psf_amp[None, :, None] * psf_amp[None, None, :] / (2 * np.pi * (psf_var[:, :, None] + psf_var[:, None, :]))
    pp = pp.sum((1, 2))
    ip = np.zeros(len(pop))
    for k, a in enumerate(psf_amp):
        ip += (amp * a / (2 * np.pi * np.sqrt(det2(cov + psf_var[:, k, None, None, None] * eye)))).sum(1)
    # model fits weight by the object's own (wider) profile: scale the PSF's noise-equivalent area by the
    # ratio of second moments (exact for Gaussians)
    second = (amp * 0.5 * (cov[..., 0, 0] + cov[..., 1, 1])).sum(1)
    psf_second = (psf_amp[None, :] * psf_var).sum(1)
    return ip / pp, 1 / pp, (1 / pp) * np.maximum(second / psf_second, 1.0)


def sky_residual(rng: np.random.Generator, shape: tuple[int, int], modes: int = 8) -> np.ndarray:
    """A smooth float32 field of unit standard deviation with structure on 150-600 pixel scales: what sky
    subtraction leaves behind in real frames."""
    rows, cols = shape
    yy = np.arange(rows, dtype=np.float32)[:, None]
    xx = np.arange(cols, dtype=np.float32)[None, :]
    field = np.zeros(shape, np.float32)
    for _ in range(modes):
        wavelength = rng.uniform(150.0, 600.0)
        angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        k = np.float32(2 * np.pi / wavelength)
        field += np.cos(k * (np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy) + np.float32(phase))
    return field / np.float32(np.sqrt(modes / 2))


def quantize_counts(image: np.ndarray, sky_dn: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """Round to whole data numbers the way calibrated frames are: (round(DN) - sky) * calibration per column.

    ``image`` in nanomaggies above sky, ``sky_dn`` [rows, cols] or scalar, ``calib`` nanomaggies per DN per column.
    """
    dn = np.round(image / calib[None, :] + sky_dn)
    return ((dn - sky_dn) * calib[None, :]).astype(np.float32)


_RADII = np.array([4, 6, 8, 11, 15, 20, 28, 40, 56, 80, 112, 160, 224, 320])


def stamp_radius(amp: np.ndarray, cov: np.ndarray, threshold: float) -> np.ndarray:
    """Half-size of the stamp beyond which every component is below ``threshold`` (per object)."""
    det = det2(cov)
    peak = np.abs(amp) / (2 * np.pi * np.sqrt(det))
    half_tr = 0.5 * (cov[..., 0, 0] + cov[..., 1, 1])
    lam = half_tr + np.sqrt(np.clip(half_tr**2 - det2(cov), 0, None))  # larger eigenvalue
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(np.clip(2 * np.log(peak / threshold), 0, None) * lam)
    need = np.nanmax(r, axis=1) + 1.5
    idx = np.searchsorted(_RADII, need)
    return _RADII[np.clip(idx, 0, len(_RADII) - 1)]


def profile_stamps(dx: np.ndarray, dy: np.ndarray, amp: np.ndarray, cov: np.ndarray, rad: int) -> np.ndarray:
    """float32 stamps [m, 2 rad + 1, 2 rad + 1] of Gaussian mixtures centred (dx, dy) px from the stamp's centre."""
    inv = inv2(cov)
    norm = amp / (2 * np.pi * np.sqrt(det2(cov)))
    grid = np.arange(-rad, rad + 1, dtype=np.float64)
    # float32 is ample here (sub-pixel offsets are exact to ~1e-6 px) and twice as fast
    gx = (grid[None, :] - dx[:, None]).astype(np.float32)  # [m,S]
    gy = (grid[None, :] - dy[:, None]).astype(np.float32)
    a = (-0.5 * inv[:, :, 0, 0]).astype(np.float32)[:, :, None, None]
    b = (-inv[:, :, 0, 1]).astype(np.float32)[:, :, None, None]
    c = (-0.5 * inv[:, :, 1, 1]).astype(np.float32)[:, :, None, None]
    gx2 = (gx * gx)[:, None, None, :]
    gy2 = (gy * gy)[:, None, :, None]
    gxy = (gy[:, :, None] * gx[:, None, :])[:, None]  # [m,1,S,S]
    expo = a * gx2 + b * gxy + c * gy2
    np.exp(expo, out=expo)
    return np.einsum("mk,mkij->mij", norm.astype(np.float32), expo)


def _radius_batches(radius: np.ndarray, chosen: np.ndarray, components: int, budget: float = 4e6):
    """(radius, object indices) batches of ``chosen`` objects sharing a stamp radius, ~``budget`` floats each."""
    for rad in np.unique(radius[chosen]):
        members = np.flatnonzero(chosen & (radius == rad))
        size = 2 * int(rad) + 1
        chunk = max(1, int(budget // (size * size * components)))
        for start in range(0, len(members), chunk):
            yield int(rad), members[start : start + chunk]


def render(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, amp: np.ndarray, cov: np.ndarray, radius: np.ndarray
) -> None:
    """Add each object's Gaussian mixture (centred at 0-based pixel x, y) into ``image`` in place."""
    rows, cols = image.shape
    ix = np.floor(x + 0.5).astype(np.int64)
    iy = np.floor(y + 0.5).astype(np.int64)
    inside = (ix + radius >= 0) & (ix - radius < cols) & (iy + radius >= 0) & (iy - radius < rows)
    for rad, sel in _radius_batches(radius, inside, amp.shape[1]):
        stamps = profile_stamps(x[sel] - ix[sel], y[sel] - iy[sel], amp[sel], cov[sel], rad)
        for k, j in enumerate(sel):
            _add_stamp(image, stamps[k], iy[j] - rad, ix[j] - rad)


# photo's model fit has free sizes; a few circular exponentials stand in for its size freedom
FAMILY_RE_ARCSEC = (0.3, 0.7, 1.5)
MEASURE_THRESHOLD = 2e-4  # unit-flux profile level (per pixel) at which measurement stamps end


def measurement_family(
    pop: np.ndarray, band: str, psf: PSF, sky_to_pix: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Unit-flux profiles photo fits to each object: [PSF, the object's own profile, exponentials of FAMILY_RE]."""

    def unit(**changes) -> tuple[np.ndarray, np.ndarray]:
        p = pop.copy()
        p["mag"] = 22.5  # 1 nanomaggy in every band
        for key, value in changes.items():
            p[key] = value
        amp, cov, _ = object_gaussians(p, band, psf, sky_to_pix)
        return amp, cov

    family = [unit(star=True), unit()]
    family += [unit(star=False, bulge_frac=0.0, re=re, q=1.0, pa=0.0) for re in FAMILY_RE_ARCSEC]
    return family


def _stamp_sums(stamps: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per stamp, the sums (stamp x data) and (stamp x stamp) of a linear flux fit (float64)."""
    return (stamps * data).sum((1, 2), dtype=np.float64), (stamps * stamps).sum((1, 2), dtype=np.float64)


def own_profile_is_psf(psf: tuple[np.ndarray, np.ndarray], own: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Objects [n] whose own profile (``measurement_family``'s second member) is their PSF (its first): the same
    components, then zero-flux ones only (a star's galaxy components in a cell that also holds galaxies).

    Their ``profile_stamps`` are the PSF's to the bit: a stamp adds its components in order, one per object, and
    a zero-flux component adds exactly 0 when its covariance is symmetric and positive definite with room to
    spare (the float32 exponent is then finite and negative), which is checked here too.
    """
    (amp0, cov0), (amp1, cov1) = psf, own
    n, k = amp0.shape
    if amp1 is amp0 and cov1 is cov0:
        return np.ones(n, bool)
    if amp1.shape[1] < k:
        return np.zeros(n, bool)
    c00, c01, c10, c11 = cov1[:, k:, 0, 0], cov1[:, k:, 0, 1], cov1[:, k:, 1, 0], cov1[:, k:, 1, 1]
    with np.errstate(over="ignore", invalid="ignore"):
        definite = (c00 > 1e-6) & (c00 < 1e30) & (c11 > 1e-6) & (c11 < 1e30) & (c01 * c01 < 0.975 * c00 * c11)
    return (
        (amp1[:, :k] == amp0).all(1)
        & (cov1[:, :k] == cov0).all((1, 2, 3))
        & (amp1[:, k:] == 0).all(1)
        & (definite & (c01 == c10)).all(1)
    )


def measure_fluxes(
    noise: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    family: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """photo-like PSF and model fluxes [n] of objects after perfect deblending, fitted on ``flux`` times each
    object's own profile (``family[1]``) plus the frame's ``noise`` (the very pixels written to the frame).

    The PSF flux is the linear fit of ``family[0]``; the model flux is the fit of the member whose fit
    lowers chi-square most, as photo keeps the better of its exponential and de Vaucouleurs fits. Pixels
    outside the frame do not count; objects whose centre pixel is outside get NaN.
    """
    rows, cols = noise.shape
    n = len(x)
    psf_flux, model_flux = np.full(n, np.nan), np.full(n, np.nan)
    ix = np.floor(x + 0.5).astype(np.int64)
    iy = np.floor(y + 0.5).astype(np.int64)
    inside = (ix >= 0) & (ix < cols) & (iy >= 0) & (iy < rows)
    if not inside.any():
        return psf_flux, model_flux
    radius = np.maximum(*(stamp_radius(amp, cov, MEASURE_THRESHOLD) for amp, cov in family[:2]))
    pad = int(radius[inside].max())
    noise_p = np.pad(np.asarray(noise, np.float32), pad)
    valid_p = np.pad(np.ones(noise.shape, np.float32), pad)
    psf_own = own_profile_is_psf(family[0], family[1])
    components = sum(amp.shape[1] for amp, _ in family)
    for rad, sel in _radius_batches(radius, inside, components):
        offsets = np.arange(-rad, rad + 1)
        r_idx = (iy[sel] + pad)[:, None, None] + offsets[None, :, None]
        c_idx = (ix[sel] + pad)[:, None, None] + offsets[None, None, :]
        valid = valid_p[r_idx, c_idx]
        dx, dy = x[sel] - ix[sel], y[sel] - iy[sel]
        psf_stamps = profile_stamps(dx, dy, family[0][0][sel], family[0][1][sel], rad) * valid
        # the own profile's stamps and sums are the PSF's where the two profiles are the same (stars,
        # own_profile_is_psf): computed for the other objects only
        differ = np.flatnonzero(~psf_own[sel])
        own_stamps = psf_stamps
        if differ.size:
            amp, cov = family[1]
            own_stamps = psf_stamps.copy()
            own_stamps[differ] = (
                profile_stamps(dx[differ], dy[differ], amp[sel[differ]], cov[sel[differ]], rad) * valid[differ]
            )
        others = [profile_stamps(dx, dy, amp[sel], cov[sel], rad) * valid for amp, cov in family[2:]]
        data = flux[sel, None, None].astype(np.float32) * own_stamps + noise_p[r_idx, c_idx] * valid
        dot, norm = np.empty((len(sel), len(family))), np.empty((len(sel), len(family)))  # [m, J]
        for j, s in [(0, psf_stamps), *enumerate(others, 2)]:
            dot[:, j], norm[:, j] = _stamp_sums(s, data)
        dot[:, 1], norm[:, 1] = dot[:, 0], norm[:, 0]
        if differ.size:
            dot[differ, 1], norm[differ, 1] = _stamp_sums(own_stamps[differ], data[differ])
        fits = dot / norm
        best = np.argmax(dot * fits, axis=1)  # the chi-square drop of a linear fit is dot^2 / norm
        psf_flux[sel] = fits[:, 0]
        model_flux[sel] = fits[np.arange(len(sel)), best]
    return psf_flux, model_flux


def _add_stamp(image: np.ndarray, stamp: np.ndarray, r0: int, c0: int) -> None:
    rows, cols = image.shape
    h, w = stamp.shape
    ra, rb = max(r0, 0), min(r0 + h, rows)
    ca, cb = max(c0, 0), min(c0 + w, cols)
    if ra < rb and ca < cb:
        image[ra:rb, ca:cb] += stamp[ra - r0 : rb - r0, ca - c0 : cb - c0]


def saturate(image: np.ndarray, level: float) -> int:
    """Clip pixels at ``level`` and bleed the excess charge up and down their column; returns #columns bled."""
    hot = np.flatnonzero((image > level).any(axis=0))
    for c in hot:
        col = image[:, c]
        over = col > level
        excess = float((col[over] - level).sum())
        col[over] = level
        rows = np.flatnonzero(over)
        lo, hi = rows.min(), rows.max()
        # charge spreads from the saturated run alternately into the pixels below and above it
        step = 0
        while excess > 0 and (lo > 0 or hi < len(col) - 1):
            target = lo - 1 if (step % 2 == 0 and lo > 0) or hi >= len(col) - 1 else hi + 1
            room = max(level - col[target], 0.0)
            take = min(room, excess)
            col[target] += take
            excess -= take
            if target < lo:
                lo = target
            else:
                hi = target
            step += 1
    return len(hot)


def saturation_mask(image: np.ndarray, level: float) -> np.ndarray:
    """Pixels photo interpolates over after ``saturate``: those at the level, grown by one pixel to the left and
    right (charge-transfer trails) and above and below (bled charge under the threshold), as correctFrames does."""
    hit = image >= np.float32(level) * np.float32(1 - 1e-6)
    mask = hit.copy()
    mask[:, 1:] |= hit[:, :-1]
    mask[:, :-1] |= hit[:, 1:]
    mask[1:, :] |= hit[:-1, :]
    mask[:-1, :] |= hit[1:, :]
    return mask


def interpolate_rows(image: np.ndarray, mask: np.ndarray) -> None:
    """Replace masked pixels in place by linear interpolation along their row from the nearest unmasked
    pixels, as the frames pipeline interpolates over bleed trails and saturated cores."""
    cols = np.arange(image.shape[1])
    for row in np.flatnonzero(mask.any(axis=1)):
        bad = mask[row]
        if bad.all():
            continue
        image[row, bad] = np.interp(cols[bad], cols[~bad], image[row, ~bad])


def truncate_floats(image: np.ndarray, bits: int = 10) -> np.ndarray:
    """Round float32 values to ``bits`` significant binary digits, as SDSS's FLOATCOMPRESS does."""
    drop = 24 - bits  # float32 has 24 significant bits
    raw = np.ascontiguousarray(image, dtype=np.float32).view(np.uint32)
    rounded = (raw + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return rounded.view(np.float32)
