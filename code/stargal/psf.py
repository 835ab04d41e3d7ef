"""The PSF of a field, measured on its own stars: each band's stellar half-light radius across the frame.

Whether a faint source is a star or a small galaxy depends on how its size compares with the PSF, and the
PSF changes from field to field (seeing 1.0-1.6"), from band to band and across one frame (up to +-7 %
from the centre to the edges in the real sample). A patch alone cannot tell a star in bad seeing from a
small galaxy in good seeing, so the network is also given the PSF at the source: the half-light radius
``r50`` (pixels) of the stars of each band, fitted as a low-order polynomial of the frame position to the
stellar sequence that ``stargal.detection`` finds. The same measurement runs on simulated and real cubes.

A network has seen only its training sky's PSF sizes: ``trained_psf_range`` is what stage 03 records of them,
``outside_trained_range`` what predict.py checks a field against; ``widen_psf`` makes a cube look as in worse
seeing (bench/worse_seeing.py).

Pure functions; ``PSFMap.to_dict``/``from_dict`` give the JSON stage 01 writes beside each cube.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import StargalError
from .lstsq import evaluate, least_squares
from .normalise import MAD_TO_SIGMA

if TYPE_CHECKING:
    from .detection import Sources

PSF_MAP_VERSION = 1
# polynomial terms of the frame position x', y' in [-1, 1]: 1, x', y', x'^2 (SDSS's PSF varies most along the
# columns, across the camera's field of view); fewer terms when few stars constrain the fit
TERMS = ("1", "x", "y", "x2")
MIN_STARS_FOR_TERMS = {1: 1, 3: 12, 4: 30}
MAX_VARIATION = 0.25  # the map never leaves +-25 % of its centre value (extrapolation guard)
CLIP_SIGMA = 3.0
# the PSF sizes a network has seen: these percentiles of r50 over its training patches, per band (model.json
# "psf_range"); a field whose PSF lies outside is classified by extrapolation
TRAINED_PERCENTILES = (0.5, 99.5)


class NoStarError(StargalError):
    """A band without a single star to measure its PSF on: a classifier must not run on a guessed PSF."""

    def __init__(self, band: str):
        super().__init__(f"band {band}: no star to measure the PSF on (an empty or blank frame?)")
        self.band = band


@dataclass(frozen=True)
class PSFMap:
    """Per band: r50 (pixels) = coefficients . (1, x', y', x'^2) at normalised frame position (x', y')."""

    bands: str
    shape: tuple[int, int]  # rows, columns of the cube
    coefficients: np.ndarray  # [bands, len(TERMS)]
    stars: int  # stars the fit used

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """float32 [n, bands] r50 at 0-based cube positions (clamped near the frame)."""
        design = _design(*_normalised(np.asarray(x, np.float64), np.asarray(y, np.float64), self.shape))
        values = evaluate(design, self.coefficients.T)
        centre = self.coefficients[:, 0]
        return np.clip(values, centre * (1 - MAX_VARIATION), centre * (1 + MAX_VARIATION)).astype(np.float32)

    def centre(self) -> np.ndarray:
        """float64 [bands] r50 at the frame centre: the field's PSF."""
        return self.coefficients[:, 0].copy()

    def to_dict(self) -> dict:
        return {
            "version": PSF_MAP_VERSION,
            "quantity": "stellar half-light radius r50, pixels",
            "bands": self.bands,
            "shape": list(self.shape),
            "terms": list(TERMS),
            "coefficients": self.coefficients.tolist(),
            "stars": self.stars,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "PSF map") -> PSFMap:
        try:
            if d["version"] != PSF_MAP_VERSION or list(d["terms"]) != list(TERMS):
                raise StargalError(f"{source}: PSF map version {d.get('version')}; rerun 01_alignment.py --force")
            coefficients = np.asarray(d["coefficients"], np.float64)
            out = cls(str(d["bands"]), (int(d["shape"][0]), int(d["shape"][1])), coefficients, int(d["stars"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StargalError(f"{source}: not a PSF map ({exc})") from None
        if coefficients.shape != (len(out.bands), len(TERMS)) or not np.all(coefficients[:, 0] > 0):
            raise StargalError(f"{source}: PSF map coefficients malformed")
        return out


def _normalised(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = shape
    xn = np.clip((x - (cols - 1) / 2) / (cols / 2), -1.2, 1.2)
    yn = np.clip((y - (rows - 1) / 2) / (rows / 2), -1.2, 1.2)
    return xn, yn


def _design(xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(xn), xn, yn, xn**2], -1)


def fit_psf_map(
    r50: np.ndarray, x: np.ndarray, y: np.ndarray, stars: np.ndarray, shape: tuple[int, int], bands: str
) -> PSFMap:
    """Fit every band's r50 [n, bands] of the ``stars`` (bool [n]) as a polynomial of position.

    Iteratively clipped least squares (3 sigma, robust scale); as many terms as the stars support. Raises
    StargalError when a band has no usable star, since a classifier must not run on a guessed PSF.
    """
    xn, yn = _normalised(np.asarray(x, np.float64), np.asarray(y, np.float64), shape)
    design = _design(xn, yn)
    coefficients = np.zeros((len(bands), len(TERMS)))
    used = 0
    for b, band in enumerate(bands):
        keep = stars & np.isfinite(r50[:, b]) & (r50[:, b] > 0)
        if not keep.any():
            raise NoStarError(band)
        # noisy sizes (faint stars in u and z, blends) first clipped about the median
        centre = np.median(r50[keep, b])
        spread = max(MAD_TO_SIGMA * np.median(np.abs(r50[keep, b] - centre)), 0.05 * centre)
        keep &= np.abs(r50[:, b] - centre) <= CLIP_SIGMA * spread
        terms = max(t for t, need in MIN_STARS_FOR_TERMS.items() if keep.sum() >= need)
        coef = np.zeros(len(TERMS))
        coef[0] = np.median(r50[keep, b])
        for _ in range(4 if terms > 1 else 0):
            coef[:terms] = least_squares(design[keep, :terms], r50[keep, b])
            residual = r50[:, b] - evaluate(design[:, :terms], coef[:terms])
            scale = MAD_TO_SIGMA * np.median(np.abs(residual[keep])) + 1e-6
            clipped = keep & (np.abs(residual) <= CLIP_SIGMA * scale)
            if clipped.sum() == keep.sum() or clipped.sum() < MIN_STARS_FOR_TERMS[terms]:
                break
            keep = clipped
        coefficients[b] = coef
        used = max(used, int(keep.sum()))
    return PSFMap(bands, (int(shape[0]), int(shape[1])), coefficients, used)


def measure_psf_map(cube: np.ndarray, bands: str) -> PSFMap:
    """The PSF map of an aligned cube [bands, rows, cols], from the stars ``stargal.detection`` finds."""
    from .detection import measure_sources

    return psf_map_of(measure_sources(cube, bands), cube.shape[1:], bands)


def psf_map_of(sources: Sources, shape: tuple[int, int], bands: str) -> PSFMap:
    """The PSF map of a cube of ``shape`` (rows, columns) from its sources (``detection.measure_sources``)."""
    if not sources.star.any():
        raise StargalError("no star found to measure the PSF on (an empty, blank or tiny frame?)")
    return fit_psf_map(sources.r50, sources.x, sources.y, sources.star, shape, bands)


def trained_psf_range(r50: np.ndarray, bands: str) -> dict:
    """What model.json records as ``psf_range``: per band, the TRAINED_PERCENTILES of r50 [n, bands] over the
    training patches."""
    r50 = np.asarray(r50, np.float64)
    if r50.ndim != 2 or r50.shape[1] != len(bands) or not len(r50):
        raise ValueError(f"expected r50 [n > 0, {len(bands)}], got {r50.shape}")
    low, high = np.percentile(r50, TRAINED_PERCENTILES, axis=0)
    return {
        "quantity": "stellar half-light radius r50 over the training patches, pixels",
        "percentiles": list(TRAINED_PERCENTILES),
        "bands": bands,
        "low": [round(float(v), 3) for v in low],
        "high": [round(float(v), 3) for v in high],
    }


def outside_trained_range(r50: np.ndarray, trained: dict, bands: str) -> list[str]:
    """The bands whose r50 (one value per band of ``bands``) lies outside ``trained`` (``trained_psf_range``),
    each as 'r 2.91 px > 2.44'; empty when the PSF is one the network was trained on. Raises ValueError when
    ``trained`` is malformed or names other bands."""
    try:
        low = np.asarray(trained["low"], np.float64)
        high = np.asarray(trained["high"], np.float64)
        same_bands = str(trained["bands"]) == bands
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"psf_range malformed ({exc})") from None
    if not same_bands or low.shape != (len(bands),) or high.shape != low.shape or not np.all(low <= high):
        raise ValueError(f"psf_range malformed or for other bands than {bands}")
    out = []
    for band, value, lo, hi in zip(bands, np.asarray(r50, np.float64), low, high, strict=True):
        if value < lo:
            out.append(f"{band} {value:.2f} px < {lo:.2f}")
        elif value > hi:
            out.append(f"{band} {value:.2f} px > {hi:.2f}")
    return out


GAUSSIAN_R50_PER_SIGMA = 1.1774  # half-light radius of a circular Gaussian, in units of its sigma


def widen_psf(data: np.ndarray, r50: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A cube [bands, rows, cols] as on a night of ``scale`` times worse seeing: each band convolved with the
    Gaussian that widens a Gaussian PSF of half-light radius ``r50`` [bands] ``scale`` times, plus the noise that
    makes its noise white again at the original pixel level (a worse night has the same sky; its sources spread
    wider): the convolution keeps the noise's large-scale power and removes the small-scale part, which is added
    back filtered by sqrt(1 - |K|^2), K the kernel's transfer function (as GalSim whitens noise). Pixels without
    data stay NaN. float32."""
    from scipy.ndimage import gaussian_filter

    if not scale >= 1.0:
        raise ValueError(f"scale {scale}: must be >= 1 (a PSF can be widened, not sharpened)")
    out = np.empty(data.shape, np.float32)
    for b, band in enumerate(np.asarray(data, np.float32)):
        missing = ~np.isfinite(band)
        filled = np.where(missing, 0.0, band)
        sigma = float(r50[b]) / GAUSSIAN_R50_PER_SIGMA * np.sqrt(scale**2 - 1.0)
        if sigma > 0:
            noise = pixel_noise(filled[~missing])
            filled = gaussian_filter(filled, sigma, mode="nearest") + _whitening_noise(band.shape, sigma, noise, rng)
        out[b] = np.where(missing, np.nan, filled)
    return out


def _whitening_noise(shape: tuple[int, int], sigma: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """White noise of scatter ``noise`` filtered by sqrt(1 - K^2), K the transfer function of a Gaussian of
    ``sigma`` pixels: what a blurred white noise lacks to be white again."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * np.pi**2 * sigma**2 * (fx**2 + fy**2))
    white = np.fft.rfft2(rng.normal(0.0, noise, shape))
    return np.fft.irfft2(white * np.sqrt(1.0 - kernel**2), s=shape)


def pixel_noise(values: np.ndarray) -> float:
    """Robust pixel scatter (most pixels are sky)."""
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values)))) if values.size else 0.0
