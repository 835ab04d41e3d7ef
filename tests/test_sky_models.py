"""measure_fluxes computes a star's own-profile stamp once (it is the PSF's): the fluxes stay those of computing
every family member's stamp, to the bit."""

from __future__ import annotations

import numpy as np
from conftest import TINY_SHAPE

from stargal import simulate, sky_models


def _every_stamp(noise, x, y, flux, family):
    """measure_fluxes as it was: every member's stamps and sums computed."""
    rows, cols = noise.shape
    psf_flux, model_flux = np.full(len(x), np.nan), np.full(len(x), np.nan)
    ix, iy = np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)
    inside = (ix >= 0) & (ix < cols) & (iy >= 0) & (iy < rows)
    radius = np.maximum(*(sky_models.stamp_radius(a, c, sky_models.MEASURE_THRESHOLD) for a, c in family[:2]))
    pad = int(radius[inside].max())
    noise_p, valid_p = np.pad(noise, pad), np.pad(np.ones(noise.shape, np.float32), pad)
    components = sum(a.shape[1] for a, _ in family)
    for rad, sel in sky_models._radius_batches(radius, inside, components):
        offsets = np.arange(-rad, rad + 1)
        r_idx = (iy[sel] + pad)[:, None, None] + offsets[None, :, None]
        c_idx = (ix[sel] + pad)[:, None, None] + offsets[None, None, :]
        valid = valid_p[r_idx, c_idx]
        dx, dy = x[sel] - ix[sel], y[sel] - iy[sel]
        stamps = [sky_models.profile_stamps(dx, dy, a[sel], c[sel], rad) * valid for a, c in family]
        data = flux[sel, None, None].astype(np.float32) * stamps[1] + noise_p[r_idx, c_idx] * valid
        dot = np.stack([(s * data).sum((1, 2), dtype=np.float64) for s in stamps], 1)
        norm = np.stack([(s * s).sum((1, 2), dtype=np.float64) for s in stamps], 1)
        fits = dot / norm
        best = np.argmax(dot * fits, axis=1)
        psf_flux[sel], model_flux[sel] = fits[:, 0], fits[np.arange(len(sel)), best]
    return psf_flux, model_flux


def test_stars_own_stamps_reused_to_the_bit():
    pop = simulate.cell_truth(7, 8162, 6, 81, TINY_SHAPE).pop
    assert pop["star"].any() and (~pop["star"]).any()
    rng = np.random.default_rng(5)
    shape = (90, 110)
    noise = rng.normal(0, 0.05, shape).astype(np.float32)
    x, y = rng.uniform(-5, shape[1] + 5, len(pop)), rng.uniform(-5, shape[0] + 5, len(pop))
    flux = rng.uniform(0.5, 200, len(pop))
    sky_to_pix = np.eye(2) / 0.396
    for members in (pop, pop[pop["star"]]):  # stars among galaxies; stars alone (the same profile arrays)
        family = sky_models.measurement_family(members, "r", sky_models.PSF(3.0, 0.1), sky_to_pix)
        assert (sky_models.own_profile_is_psf(family[0], family[1]) == members["star"]).all()
        n = len(members)
        got = sky_models.measure_fluxes(noise, x[:n], y[:n], flux[:n], family)
        want = _every_stamp(noise, x[:n], y[:n], flux[:n], family)
        for g, w in zip(got, want, strict=True):
            assert g.tobytes() == w.tobytes()
    # a zero-flux component whose covariance is not safely positive definite: computed, not assumed zero
    amp, cov = family[0]
    bad = np.concatenate([cov, np.zeros_like(cov[:, :1])], 1)
    padded = (np.concatenate([amp, np.zeros_like(amp[:, :1])], 1), bad)
    assert not sky_models.own_profile_is_psf(family[0], padded).any()
