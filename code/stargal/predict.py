"""Classify arbitrary sky coordinates in one aligned field: sky -> pixel -> patch -> p_star, with a status per row.

Pure functions (arrays in, arrays out). Every input coordinate gets one output row in input order; a
coordinate that cannot be classified honestly gets an explicit status and no probability:

- ``ok``       classified: ``p_star`` and ``label`` are set;
- ``outside``  the position falls outside the field (or the WCS cannot place it);
- ``edge``     inside the field but too near its border for the model's edge policy ``drop``
               (with ``pad`` such patches are padded exactly as in training and classified); and a source
               ``predict.py --detect`` finds centred within 2 pixels of the border, which the border cuts
               (``stargal.detection.at_frame_edge``), whatever the policy, and so is a position given for the
               presence test (``min_snr`` > 0: ``--ra/--dec``, ``--csv``) centred that near it;
- ``no_data``  a band does not cover the position (NaN pixel at the patch centre in some band);
- ``no_source`` the frame shows no source there (PSF-matched S/N over the bands below ``min_snr``:
               ``stargal.presence``), so the network, trained on catalogued objects, has nothing to classify;
- ``off_peak``  the S/N is reached but the filter's response does not peak at the position: a bright star's
               wing, or a place more than about 1" from a source's centre, where a patch centred on it is no
               object's patch; and a place in a saturated or bright star's light (its halo, spikes and bleed
               trail, within HALO_RADIUS) that does not stand above that light by ``min_snr`` and where the
               detection finds no source (``in_bright_star_light``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import patches, presence, saturation
from .detection import (
    BACKGROUND_CELL,
    DUPLICATE_PX,
    GAUSS_R50_TO_SIGMA,
    at_frame_edge,
    background_subtracted,
    column_noise,
    detect,
    gaussian_fluxes,
    near_noisy_columns,
    noise_peaks,
    single_band,
)
from .errors import StargalError
from .geometry import inside_frame, sky_to_pixel
from .metrics import mcc_from_counts
from .model import predict
from .onnx_engine import OnnxNetwork

log = logging.getLogger("stargal")

STATUS_OK = "ok"
STATUS_OUTSIDE = "outside"
STATUS_EDGE = "edge"
STATUS_NO_DATA = "no_data"
STATUS_NO_SOURCE = "no_source"
STATUS_OFF_PEAK = "off_peak"  # light there, but no source centred on it: a bright star's wing, or > ~1" off a source
STATUS_ARTEFACT = "artefact"  # seen in r alone (a cosmic ray: single_band, unseen_beside_r); or a noise peak
STATUSES = (STATUS_OK, STATUS_OUTSIDE, STATUS_EDGE, STATUS_NO_DATA, STATUS_NO_SOURCE, STATUS_OFF_PEAK, STATUS_ARTEFACT)
STATUS_DTYPE = f"U{max(map(len, STATUSES))}"
OUTPUT_COLUMNS = ("ra", "dec", "x", "y", "p_star", "label", "status")


@dataclass
class Predictions:
    """One entry per input coordinate, in input order; p_star is NaN and label "" unless status is ok."""

    ra: np.ndarray
    dec: np.ndarray
    x: np.ndarray  # 0-based column in the cube (NaN when the WCS cannot place the position)
    y: np.ndarray  # 0-based row
    p_star: np.ndarray  # float32
    label: np.ndarray  # "star" | "galaxy" | ""
    status: np.ndarray  # one of STATUSES
    catalog_star: np.ndarray | None = None  # with --all: the catalog's class of each entry (True: star)
    catalog_r: np.ndarray | None = None  # with --all: its catalog r-band PSF magnitude
    saturated: np.ndarray | None = None  # with --detect: the source's r-band core saturated (stargal.saturation)

    def __len__(self) -> int:
        return len(self.ra)

    def counts(self) -> dict[str, int]:
        return {s: int(np.count_nonzero(self.status == s)) for s in STATUSES}


# r-band ranges of the agreement with the catalog: SDSS's own types grow unsure beyond r ~ 21
AGREEMENT_RANGES = ((-np.inf, 21.0), (21.0, 22.0), (22.0, np.inf))


def _agreement(is_star: np.ndarray, called_star: np.ndarray) -> dict:
    stars, galaxies = is_star, ~is_star
    out = {
        "n": int(is_star.size),
        "stars": int(stars.sum()),
        "stars_called_star": int((stars & called_star).sum()),
        "galaxies": int(galaxies.sum()),
        "galaxies_called_galaxy": int((galaxies & ~called_star).sum()),
    }
    out["accuracy"] = float((is_star == called_star).mean()) if is_star.size else None
    tn, tp = out["galaxies_called_galaxy"], out["stars_called_star"]
    mcc = float(mcc_from_counts(tn, out["galaxies"] - tn, out["stars"] - tp, tp))  # one class called: 0
    out["mcc"] = mcc if stars.any() and galaxies.any() else None  # undefined when the catalog holds one class
    return out


def catalog_agreement(pred: Predictions) -> dict | None:
    """How the labels of the classified (status ok) catalogued objects agree with the catalog's own classes,
    overall and per r range (AGREEMENT_RANGES; objects without a catalog r magnitude in one more, whose r_min and
    r_max are None); None without catalog classes (not --all)."""
    if pred.catalog_star is None:
        return None
    ok = pred.status == STATUS_OK
    is_star, called = np.asarray(pred.catalog_star, bool)[ok], pred.label[ok] == "star"
    r = np.asarray(pred.catalog_r, np.float64)[ok]
    ranges = [
        {"r_min": _finite(lo), "r_max": _finite(hi), **_agreement(is_star[sel], called[sel])}
        for lo, hi in AGREEMENT_RANGES
        if (sel := (r >= lo) & (r < hi)).any()
    ]
    if (unknown := ~np.isfinite(r)).any():  # no r flux in the catalog: listed for its light in other bands
        ranges.append({"r_min": None, "r_max": None, **_agreement(is_star[unknown], called[unknown])})
    return {**_agreement(is_star, called), "by_r": ranges}


def agreement_text(agreement: dict) -> str:
    """``catalog_agreement`` as two lines for people: overall, then per r range."""

    def part(a: dict, lacking: str = "") -> str:
        mcc = "" if a["mcc"] is None else f", MCC {a['mcc']:.3f}"
        counts = [f"stars called star {a['stars_called_star']}/{a['stars']}"] if a["stars"] else []
        counts += [f"galaxies called galaxy {a['galaxies_called_galaxy']}/{a['galaxies']}"] if a["galaxies"] else []
        if a["stars"] and a["galaxies"]:
            return f"accuracy {a['accuracy']:.3f}{mcc} ({', '.join(counts)})"
        # one catalogued class (a star sweep alone): the fraction right is that class's recall, not an accuracy
        return f"{'star' if a['stars'] else 'galaxy'} recall {a['accuracy']:.3f} ({counts[0]}{lacking})"

    def span(a: dict) -> str:
        lo, hi = a["r_min"], a["r_max"]
        if lo is None and hi is None:
            return "no r magnitude"
        return f"r < {hi:g}" if lo is None else f"r > {lo:g}" if hi is None else f"r {lo:g}-{hi:g}"

    if not agreement["n"]:
        return "agreement with the catalog's classes: no catalogued object classified"
    one_class = not (agreement["stars"] and agreement["galaxies"])
    lacking = f"; the catalog lists no {'galaxy' if agreement['stars'] else 'star'}" if one_class else ""
    head = f"agreement with the catalog's classes (SDSS photometric types, unsure beyond r ~ 21): {part(agreement, lacking)}"
    return head + "\n  " + "; ".join(f"{span(a)}: {part(a)}" for a in agreement["by_r"])


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def locate(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], patch_size: int, edge: str) -> np.ndarray:
    """Status of each position (before looking at pixel values): ok, outside or edge."""
    patches.check_edge_policy(edge)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    status = np.full(x.shape, STATUS_OK, dtype=STATUS_DTYPE)
    inside = inside_frame(x, y, shape)
    status[~inside] = STATUS_OUTSIDE
    if edge == "drop":
        r, c = patches.pixel_centres(np.where(inside, x, 0), np.where(inside, y, 0))
        status[inside & ~patches.inside_frame(r, c, patch_size, shape)] = STATUS_EDGE
    return status


def mark_status(pred: Predictions, mask: np.ndarray, status: str) -> None:
    """Set the status of ``mask`` entries that were classified (``ok``) to ``status``, without p_star or label."""
    hit = np.asarray(mask, bool) & (pred.status == STATUS_OK)
    pred.status[hit] = status
    pred.p_star[hit] = np.nan
    pred.label[hit] = ""


def mark_artefacts(pred: Predictions, artefact: np.ndarray) -> None:
    """Set the status of ``artefact`` entries that were classified to artefact, without p_star or label."""
    mark_status(pred, artefact, STATUS_ARTEFACT)


def uncovered(data: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where some band has no data (NaN in the aligned cube) at the pixel of (x, y), inside the frame."""
    r, c = patches.pixel_centres(x, y)
    return ~np.all(np.isfinite(data[:, r, c]), axis=0)


TTA_MODES = ("auto", "all", "off")
TTA_MARGIN = 0.15  # "auto": the eight-symmetry mean where the single pass lies this close to the threshold
# a band whose matched-filter S/N stays under this does not show a source: a real star or galaxy seen at S/N 3.5-6
# in r shows in g or i (blue ones in g, red ones in i)
UNSEEN_SNR = 1.0
CHUNK = 4096  # patches cut and classified at a time (50 MB of 25 x 25 x 5 float32): memory stays flat


def classify(
    model,
    data: np.ndarray,
    wcs,
    ra: np.ndarray,
    dec: np.ndarray,
    *,
    patch_size: int,
    edge: str,
    threshold: float = 0.5,
    batch_size: int = 256,  # with 590 MB for TensorFlow itself, small batches keep the peak low
    tta: str = "off",
    tta_margin: float = TTA_MARGIN,
    chunk: int = CHUNK,
    psf_map=None,
    min_snr: float = 0.0,
    bands: str | None = None,
    track: Callable | None = None,
) -> Predictions:
    """Classify sky positions in an aligned cube [bands, rows, cols] with a Keras model taking raw patches or an
    ``onnx_engine.OnnxNetwork`` (the same network, patches cut from the cube normalised once).

    Positions on the same pixel share one patch, which is cut and classified once; patches are cut and
    classified ``chunk`` at a time, so memory does not grow with the number of positions. ``tta``: "off" one
    pass per patch; "all" the mean over the patch's eight square symmetries (as stage 03 evaluates a model whose
    model.json says ``tta``); "auto" one pass, then the eight-symmetry mean for the patches whose single-pass
    p_star lies within ``tta_margin`` of the threshold, the only ones whose label it can change.
    ``psf_map`` (a ``stargal.psf.PSFMap`` of the cube): the PSF at each position, for models that take it.
    ``min_snr``: positions centred within ``detection.EDGE_PX`` of the border are ``edge`` (as --detect marks
    them), positions where the bands' combined PSF-matched S/N does not reach it are ``no_source``, and
    those where it does but the response does not peak, or that lie in a saturated star's light without standing
    above it or being detected (``in_bright_star_light``), are ``off_peak`` (0, for positions known to hold a source
    such as catalogued or detected ones: classify them all); with the cube's ``bands`` named, a source there seen
    in r alone (``detection.single_band`` of its PSF-matched fluxes, or ``unseen_beside_r``: a cosmic ray) is an
    ``artefact``, as ``--detect`` marks it, and so is a noise peak of a noisy r column that the other bands do not
    show (``unshown_noise_peaks``, the rule --detect applies). ``track(iterable, description, total=, unit=)``: a
    progress display of the chunks when there are several (``stargal.progress.track``); none without.
    """
    if tta not in TTA_MODES:
        raise StargalError(f"--tta {tta!r}: must be one of {', '.join(TTA_MODES)}")
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    x, y = sky_to_pixel(wcs, ra, dec)
    status = locate(x, y, data.shape[1:], patch_size, edge)
    p_star = np.full(len(ra), np.nan, dtype=np.float32)
    ok = np.flatnonzero(status == STATUS_OK)
    if ok.size:
        empty = uncovered(data, x[ok], y[ok])
        status[ok[empty]] = STATUS_NO_DATA
        ok = ok[~empty]
    if ok.size and min_snr > 0:
        faint, off_peak, artefact = _no_source(data, x[ok], y[ok], psf_map, min_snr, bands)
        status[ok[faint]] = STATUS_NO_SOURCE
        status[ok[off_peak]] = STATUS_OFF_PEAK
        status[ok[artefact]] = STATUS_ARTEFACT
        ok = ok[~faint & ~off_peak & ~artefact]
    if ok.size and min_snr > 0:  # after the refusals above, as --detect marks edge only what it would classify
        # a position centred within detection.EDGE_PX of the border is cut by it as a detected source is (--detect
        # calls that edge): half its patch or more beyond the frame. Classified, 4510-4-30's three sources on its
        # first two columns came out ok (one star at p_star 0.998) where --detect refuses them
        border = at_frame_edge(x[ok], y[ok], data.shape[1:])
        status[ok[border]] = STATUS_EDGE
        ok = ok[~border]
    if ok.size:
        rows, cols = patches.pixel_centres(x[ok], y[ok])
        pixel, inverse = np.unique(rows * data.shape[2] + cols, return_inverse=True)  # row-major: cache friendly
        u_rows, u_cols = np.divmod(pixel, data.shape[2])
        p_unique = np.empty(len(pixel), dtype=np.float32)
        cut, run = _network(model, data, patch_size, batch_size)
        starts = range(0, len(pixel), chunk)
        if track is not None and len(starts) > 1:  # one chunk's progress says no more than the closing line
            starts = track(starts, f"classifying {len(pixel)} sources", total=len(starts), unit="chunk")
        for start in starts:
            stop = min(start + chunk, len(pixel))
            batch = cut(u_rows[start:stop], u_cols[start:stop])
            # the PSF at the pixel centre, as stage 02 gives it in training
            psf = None if psf_map is None else psf_map.at(u_cols[start:stop], u_rows[start:stop])
            p = run(batch, psf, tta == "all", None)
            if tta == "auto":
                near = np.flatnonzero(np.abs(p - threshold) < tta_margin)
                if near.size:  # the single pass just run is the mean's identity term
                    p[near] = run(batch[near], None if psf is None else psf[near], True, p[near])
            p_unique[start:stop] = p
        p_star[ok] = p_unique[inverse.ravel()]
    label = np.full(len(ra), "", dtype="U6")
    # in float64: a float32 comparison rounds the threshold first, and a p_star just under it was called star
    label[ok] = np.where(p_star[ok].astype(np.float64) >= threshold, "star", "galaxy")
    return Predictions(ra, dec, x, y, p_star, label, status)


def _no_source(
    data: np.ndarray, x: np.ndarray, y: np.ndarray, psf_map, min_snr: float, bands: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faint, off_peak, artefact) bool masks at (x, y): PSF-matched S/N over the bands below ``min_snr``;
    reached, but the response does not peak there, as on a bright star's wing (``presence.source_refusals``), or in
    a saturated star's light with no source of its own (``in_bright_star_light``, with ``bands`` naming r);
    a source that peaks there seen in r alone (r at ``min_snr`` or more, g and i not), or a noise peak of a noisy
    r column that the other bands do not show (``unshown_noise_peaks``, as --detect marks its sources), with
    ``bands`` named (all False without)."""
    r50_at = _r50_at(psf_map, data.shape[0])
    rows, cols = patches.pixel_centres(x, y)
    local = presence.local_background_subtracted(data)
    noise = presence.filter_noise(local, r50_at)
    r50 = r50_at(cols, rows)
    faint, off_peak = presence.source_refusals(local, rows, cols, r50, noise, min_snr)
    artefact = np.zeros_like(faint)
    if bands is not None and set("gri") <= set(bands) and (shown := np.flatnonzero(~faint & ~off_peak)).size:
        # fluxes as --detect measures them (a Gaussian of the PSF's size at the exact position), over the local sky
        sigma = np.asarray(r50, np.float64)[shown] * GAUSS_R50_TO_SIGMA
        flux = np.full((len(shown), len(bands)), np.nan)
        for band in "gri":
            b = bands.index(band)
            flux[:, b] = gaussian_fluxes(np.nan_to_num(local[b]), x[shown], y[shown], sigma[:, b])
        snr = presence.band_snr(local, rows[shown], cols[shown], r50[shown], noise)
        # ... and r itself seen: a source of u or z alone has g, i and a noise-level r too, and no r-band cosmic ray
        seen = snr[:, bands.index("r")] >= min_snr
        artefact[shown[(single_band(flux, bands) & seen) | unseen_beside_r(snr, bands, min_snr)]] = True
    if bands is not None and "r" in bands and (peaked := np.flatnonzero(~faint & ~off_peak & ~artefact)).size:
        artefact[peaked] = unshown_noise_peaks(data, x[peaked], y[peaked], bands, r50_at, min_snr, local, noise)
    if bands is not None and "r" in bands and (left := np.flatnonzero(~faint & ~off_peak & ~artefact)).size:
        off_peak[left] = in_bright_star_light(data, local, x[left], y[left], r50[left], noise, bands, min_snr, r50_at)
    return faint, off_peak, artefact


# pixels: how far out a saturated star's light lifts the presence test's S/N. Along rows, columns and diagonals that
# of the six real fields' saturated stars stays at 3.5 or more up to 114 px out, mostly 20-50; of 360 places 8-59 px
# from 4510-4-30's five, 14 were classified, 12 with no detected source within 3 px (docs/predict.md)
HALO_RADIUS = 64.0
# pixels: the star's light at a position is the mean of the response this far nearer the star and as far beyond it,
# along the line from the star's centre: a halo's linear fall cancels, and a spike or bleed trail, which lies along
# that line, is read on itself. At 4 px a point source's own response has fallen to a fifth (seeing of 1-1.6")
HALO_STEP = 4
WINDOW_MARGIN = 64  # pixels about a star's doubtful positions that the detection runs on (its footprints whole)


def in_bright_star_light(
    data: np.ndarray,
    local: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    r50: np.ndarray,
    noise: presence.FilterNoise,
    bands: str,
    min_snr: float,
    r50_at,
) -> np.ndarray:
    """bool [n]: positions (x, y) of a cube [bands, H, W] that lie in a bright star's light and show no source of
    their own: more than saturation.CORE_RADIUS and at most HALO_RADIUS px from a saturated r core, or from
    UNSATURATED_INNER px out to its flux's reach from an unsaturated one of r < ~16.5 (``halo_stars`` of ``local``'s
    r band), whose ``presence.detection_snr`` does not reach ``min_snr`` over the star's light there (the mean of
    the S/N HALO_STEP px nearer the star and beyond it), and where ``detection.detect`` (its faint pass too, as
    --detect) finds no source within DUPLICATE_PX on the r band less the detection's background, in a window
    WINDOW_MARGIN px about them.

    Why: a bright star's halo (and a saturated one's spikes and bleed trail) add S/N to every place around it, so
    the presence test's noise passes there, and its light curves too little for the peak test to tell. A source on
    that light stands above it, or the detection (which deblends it from the star, as --detect does) finds it. The
    star's own core is left to the other tests, as --detect classifies the source it finds there. ``local``, ``noise``: the cube's
    ``presence.local_background_subtracted`` and ``presence.filter_noise``; ``r50``: the PSF's half-light radii at
    the positions [n, bands]; ``r50_at(cols, rows)``: the PSF anywhere."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    out = np.zeros(len(x), bool)
    r = bands.index("r")
    rows, cols = data.shape[1:]
    sigma = float(r50_at(np.array([cols / 2]), np.array([rows / 2]))[0, r]) * GAUSS_R50_TO_SIGMA
    sx, sy, inner, radius = halo_stars(local[r], sigma)
    if not len(sx) or not len(x):
        return out
    distance, star = _covering_star(np.c_[sx, sy], inner, radius, x, y)
    near = np.flatnonzero(np.isfinite(distance))
    if not near.size:
        return out
    ux, uy = (x[near] - sx[star[near]]) / distance[near], (y[near] - sy[star[near]]) / distance[near]
    pr, pc = patches.pixel_centres(x[near], y[near])
    snr = presence.detection_snr(local, pr, pc, r50[near], noise)
    for sign in (1, -1):  # nearer the star and beyond it, along its radius
        sr = np.clip(pr + np.rint(sign * HALO_STEP * uy).astype(np.int64), 0, rows - 1)
        sc = np.clip(pc + np.rint(sign * HALO_STEP * ux).astype(np.int64), 0, cols - 1)
        snr -= presence.detection_snr(local, sr, sc, r50[near], noise) / 2
    doubtful = near[snr < min_snr]
    if doubtful.size:
        out[doubtful] = ~_detected_near(data[r], x[doubtful], y[doubtful], star[doubtful])
    return out


# nanomaggies: an unsaturated bright star's light reaches HALO_RADIUS * sqrt(flux / HALO_REFERENCE_FLUX) px, at most
# HALO_RADIUS: a halo falling as the distance squared lifts the S/N by a given amount at a distance growing as the
# square root of the flux. r = 14, about where stars saturate: 25 px at r = 16, where blank places 20-40 px out
# passed 2.8-5.2 % of the time in the high-latitude fields (far from bright stars 0.8-1.8 %; docs/predict.md)
HALO_REFERENCE_FLUX = 2512.0
# pixels: an unsaturated star's light is judged from this far out. Nearer, the peak test judges its wing, and its
# PSF's steep fall does not cancel over HALO_STEP: the rule refused simulated objects of r 19.4-21.1 7-11 px from
# such stars, which the detection does not separate from them
UNSATURATED_INNER = 16.0
COVER_NEIGHBOURS = 8  # stars that may reach a position: a smaller star nearer it does not hide a saturated one's halo


def halo_stars(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, inner, radius) float64 [n]: the bright r cores of a background-subtracted r ``image``
    (``saturation.bright_cores``; ``sigma`` the stars' Gaussian width, pixels) and the span of distances over which
    their light can pass for a source: a saturated core's from saturation.CORE_RADIUS to HALO_RADIUS, an unsaturated
    one's from UNSATURATED_INNER to its flux's reach (HALO_REFERENCE_FLUX); cores whose reach ends within their
    inner distance are left out."""
    x, y, flux, flagged = saturation.bright_cores(image, sigma)
    scaled = HALO_RADIUS * np.sqrt(np.maximum(flux, 0.0) / HALO_REFERENCE_FLUX)
    radius = np.where(flagged, HALO_RADIUS, np.minimum(scaled, HALO_RADIUS))
    inner = np.where(flagged, saturation.CORE_RADIUS, UNSATURATED_INNER)
    keep = radius > inner
    return x[keep], y[keep], inner[keep], radius[keep]


def _covering_star(
    xy: np.ndarray, inner: np.ndarray, radius: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(distance, star) [n]: the nearest of the stars at ``xy`` [m, 2] whose span (``inner``, ``radius``] holds
    (x, y), among the COVER_NEIGHBOURS nearest (inf and 0 where none does, or where the nearest star lies within
    saturation.CORE_RADIUS: a star's own core is left to the other tests)."""
    from scipy.spatial import cKDTree

    k = min(COVER_NEIGHBOURS, len(xy))
    distance, star = cKDTree(xy).query(np.c_[x, y], k=k)
    distance, star = distance.reshape(len(x), k), star.reshape(len(x), k)
    covered = (distance <= radius[star]) & (distance > inner[star]) & (distance[:, :1] > saturation.CORE_RADIUS)
    first = np.argmax(covered, axis=1)
    pick = np.arange(len(x))
    hit = covered[pick, first]
    return np.where(hit, distance[pick, first], np.inf), np.where(hit, star[pick, first], 0)


def _detected_near(image: np.ndarray, x: np.ndarray, y: np.ndarray, group: np.ndarray) -> np.ndarray:
    """bool [n]: ``detection.detect`` (faint) finds a source within DUPLICATE_PX of (x, y) on the r ``image`` less the
    detection's background (``detection.background_subtracted``, the whole frame's, as --detect sees it), run once
    per ``group`` (a star) on the window WINDOW_MARGIN px or more about its positions, its edges on the frame's
    BACKGROUND_CELL grid; once on the whole frame where those windows would cover more pixels than it has."""
    from scipy.spatial import cKDTree

    subtracted, rms = background_subtracted(image)
    rows, cols = subtracted.shape
    found = np.zeros(len(x), bool)
    groups = np.unique(group)
    # edges on the frame's 64-pixel grid: the faint pass's 32-pixel background cells are then the frame's own.
    # Cut anywhere, the window lost 6 of 5405-6-99's detected sources fed back by position, on it 2 (both faint
    # deblended pieces of r 21.1 and 22.0 in the crowded Galactic plane, whose deblending shifts with the window)
    windows = [(*_on_grid(x[group == g], cols), *_on_grid(y[group == g], rows)) for g in groups]
    if sum((x1 - x0) * (y1 - y0) for x0, x1, y0, y1 in windows) > rows * cols:
        # the crowded 5405-6-99's hundreds of bright stars: their overlapping windows took 10 s for 100,000
        # uniformly drawn positions, the whole frame 2.5 s, and it is --detect's own view
        sx, sy, _ = detect(subtracted, rms, faint=True)
        if len(sx):
            found[:] = cKDTree(np.c_[sx, sy]).query(np.c_[x, y])[0] <= DUPLICATE_PX
        return found
    for g, (x0, x1, y0, y1) in zip(groups, windows, strict=True):
        mine = np.flatnonzero(group == g)
        sx, sy, _ = detect(np.ascontiguousarray(subtracted[y0:y1, x0:x1]), rms, faint=True)
        if len(sx):
            d = np.hypot(x[mine, None] - (sx[None] + x0), y[mine, None] - (sy[None] + y0))
            found[mine] = d.min(axis=1) <= DUPLICATE_PX
    return found


def _on_grid(v: np.ndarray, size: int) -> tuple[int, int]:
    """(start, stop): the span WINDOW_MARGIN px beyond positions ``v`` along an axis of ``size`` pixels, widened to
    multiples of detection.BACKGROUND_CELL and clipped to the frame."""
    start = max(int(np.floor(v.min())) - WINDOW_MARGIN, 0) // BACKGROUND_CELL * BACKGROUND_CELL
    stop = -(-(int(np.ceil(v.max())) + WINDOW_MARGIN + 1) // BACKGROUND_CELL) * BACKGROUND_CELL
    return start, min(stop, size)


def _r50_at(psf_map, n_bands: int):
    """``r50_at(cols, rows)`` -> [n, bands] PSF half-light radii: the PSF map's, or presence.DEFAULT_R50_PX without."""
    if psf_map is not None:
        return psf_map.at
    return lambda c, r: np.full((len(c), n_bands), presence.DEFAULT_R50_PX)


def unshown_noise_peaks(
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    bands: str,
    r50_at,
    min_snr: float,
    local: np.ndarray | None = None,
    noise: presence.FilterNoise | None = None,
    subtracted: tuple[list[np.ndarray], list[float]] | None = None,
) -> np.ndarray:
    """bool [n]: positions (x, y) of a cube [bands, H, W] that ``detection.noise_peaks`` calls a noise peak of a noisy
    r column and that the other bands together do not show (``presence.combined_snr`` under ``min_snr``): a source
    they show is left to be classified. The one noisy-column rule of positions (``classify``) and of detected
    sources (``detected_refusals``), so that a source gets the same status either way: the peak is judged on the r
    band less the detection's own background (``detection.background_subtracted``, what --detect found it on), the
    other bands as the presence test sees them. ``r50_at(cols, rows)``: the PSF's half-light radii [n, bands];
    ``local``, ``noise``, ``subtracted``: the cube's ``presence.local_background_subtracted``,
    ``presence.filter_noise`` and ``detection.subtract_backgrounds``, measured here when needed and not given."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    out = np.zeros(len(x), bool)
    if "r" not in bands or len(bands) < 2 or not len(x):
        return out
    r = bands.index("r")
    image, rms = background_subtracted(data[r]) if subtracted is None else (subtracted[0][r], subtracted[1][r])
    if not rms > 0:  # no r data: nothing to call a peak on
        return out
    sigma = column_noise(image, rms)
    near = np.flatnonzero(near_noisy_columns(x, sigma))  # only these can be on such a column
    if not near.size:
        return out
    peak = noise_peaks(image, x[near], y[near], rms, sigma)
    if not peak.any():
        return out
    cube = presence.local_background_subtracted(data) if local is None else local
    noise = presence.filter_noise(cube, r50_at) if noise is None else noise
    rows, cols = patches.pixel_centres(x[near], y[near])
    elsewhere = presence.combined_snr(np.delete(presence.band_snr(cube, rows, cols, r50_at(cols, rows), noise), r, 1))
    out[near] = peak & (elsewhere < min_snr)
    return out


def detected_refusals(
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    bands: str,
    psf_map=None,
    min_snr: float = presence.MIN_SNR,
    subtracted: tuple[list[np.ndarray], list[float]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(artefact, edge) bool [n]: the detected sources (x, y; ``detection.Sources.flux``) of a cube [bands, H, W]
    that predict.py --detect does not classify, and the real-sky evaluation leaves out: artefacts, seen in r alone
    (``detection.single_band``, ``unseen_beside_r``) or a noisy r column's noise peak the other bands do not show
    (``unshown_noise_peaks``, as for positions); edge, centred within EDGE_PX of the frame's border
    (``detection.at_frame_edge``).
    ``psf_map``: the cube's PSF (``stargal.psf.PSFMap``), None for presence.DEFAULT_R50_PX; ``subtracted``: the
    cube's ``detection.subtract_backgrounds`` the sources were found on, when already made."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    r50_at = _r50_at(psf_map, len(data))
    artefact = single_band(flux, bands)
    if len(x):  # the presence test's measure, as for positions, so that both modes see the same S/N
        local = presence.local_background_subtracted(data)
        noise = presence.filter_noise(local, r50_at)
        if set("gri") <= set(bands):
            rows, cols = patches.pixel_centres(x, y)
            artefact |= unseen_beside_r(presence.band_snr(local, rows, cols, r50_at(cols, rows), noise), bands, min_snr)
        artefact |= unshown_noise_peaks(data, x, y, bands, r50_at, min_snr, local, noise, subtracted)
    return artefact, at_frame_edge(x, y, data.shape[1:])


def unseen_beside_r(snr: np.ndarray, bands: str, min_snr: float) -> np.ndarray:
    """bool [n]: sources whose per-band matched-filter S/N [n, bands] (``presence.band_snr``) reaches ``min_snr`` in
    r while neither g nor i reaches UNSEEN_SNR: seen in r alone. ``detection.single_band``'s flux ratio alone is
    decided by noise for a faint source (at S/N 6 in r, 5 % of its flux is S/N 0.3 in i): 1035-6-17's r-only source
    on its noisy columns had i at 4 % of r on the detection's background and 12 % on the presence test's."""
    g, r, i = (snr[:, bands.index(b)] for b in "gri")
    return (r >= min_snr) & (g < UNSEEN_SNR) & (i < UNSEEN_SNR)


def _network(model, data: np.ndarray, patch_size: int, batch_size: int):
    """(cut(rows, cols) -> patches, run(patches, psf, tta, identity) -> p_star) for a Keras model or an ONNX
    network."""
    if isinstance(model, OnnxNetwork):
        prepared = model.prepare(data)  # normalised once for every patch
        return (lambda r, c: model.cut(prepared, r, c)), (
            lambda b, psf, tta, identity: model.predict(b, psf, tta=tta, identity=identity)
        )

    def cut(rows, cols):  # exactly as stage 02 cut for training: outside-frame and NaN pixels become 0
        return patches.extract_patches(data, rows, cols, patch_size).data

    return cut, (
        lambda b, psf, tta, identity: predict(model, b, psf, batch_size=batch_size, tta=tta, identity=identity)
    )
