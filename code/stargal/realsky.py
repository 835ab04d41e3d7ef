"""How a classifier does on real SDSS frames, with the few labels the real sky gives us (pure: arrays in, dicts out).

Two kinds of evidence, each also split by frame quadrant so that a failure tied to a place shows:

- **Two-sided, on a field with a complete star catalog** (4510-4-30's real star sweep): the fraction of the
  catalog's stars called star (recall, per r magnitude bin), and the fraction called star among detected
  sources brighter than r = 21 lying more than 2" from every catalog star (the sweep is complete there, so
  these are almost all galaxies); with both, an MCC of "catalog star" against "bright non-catalog source".
- **The stellar locus, on any field** (no labels): stars lie on a tight curve in the g-r / r-i plane, galaxies
  do not (``stargal.locus``). For sources called star with 16 < r < 20 (brighter ones saturate, their colours
  cannot be measured), the fraction within 0.15 mag of the locus; the same for sources called galaxy; and for
  context the fraction of the field's *point-like* sources (picked by size alone, no classifier) on the locus,
  the field's own ceiling; plus the predicted star fraction per magnitude bin.
- **Labelled, on a field with both sweeps** (the camcol's ``calibObj`` star and galaxy files; none in our
  sample, but any SDSS field has them): every object the sweeps list under the field, classified at its catalog
  position and scored against the sweep it comes from (SDSS's photometric type): accuracy, MCC, ROC AUC, per r
  bin the stars called star and the galaxies called star, and the accuracy per quadrant.
- **Bright sources, on any field**: sources brighter than r = 16 are almost all stars with cores at or past
  saturation (galaxies that bright are under one per frame); the fraction called star.

Every fraction comes with its count and a 95 % Wilson interval: quadrants of a high-latitude field hold a few
dozen bright stars, so a single source moves a fraction by several points. Whether the quadrants differ by more
than that is a test (``quadrant_p_value``): the chance of quadrants as different by counting noise alone.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import matthews_corrcoef

from . import locus
from .metrics import bin_label, classification_metrics

RECALL_BINS = ((None, 21.0), (21.0, 22.0), (22.0, None))  # the three bins the recall targets are set on
FINE_BINS = ((None, 16.0), (16.0, 18.0), (18.0, 20.0), (20.0, 21.0), (21.0, 22.0), (22.0, 23.0), (23.0, None))
LOCUS_RANGE = (16.0, 20.0)  # r: bright enough for clean colours, faint enough not to saturate
LOCUS_BINS = ((16.0, 18.0), (18.0, 19.0), (19.0, 20.0))
STAR_FRACTION_BINS = ((16.0, 18.0), (18.0, 19.0), (19.0, 20.0), (20.0, 21.0), (21.0, 22.0), (22.0, 23.0))
BRIGHT_LIMIT = 21.0  # r: "bright" non-catalog sources
# r: the star sweep lists every star brighter than this (its limit is 22.5 in some band), so the non-catalog sources
# up to it are galaxies too; counting them as negatives charges a model for the faint galaxies it calls star
SWEEP_COMPLETE_LIMIT = 22.0
# r: the star sweep's own PSF-magnitude limit; non-catalog sources at r 22-22.5 are mostly galaxies too, with some
# stars measured brighter than they are: counted apart, as the faintest negatives the sweep can vouch for
SWEEP_LIMIT = 22.5
# r: brighter than this, star cores approach or pass saturation, while galaxies are ~10 per square degree (under
# one per frame): a label-free check that saturated stars are called star
SATURATING_LIMIT = 16.0
MATCH_RADIUS_ARCSEC = 2.0
QUADRANT_NAMES = ("x<half, y<half", "x>=half, y<half", "x<half, y>=half", "x>=half, y>=half")
# a sweep is the frames' own when most of its objects brighter than this (every detection finds them) sit on a
# detected source; another sky's or another field's sweep places its objects on blank sky
SWEEP_MATCH_LIMIT = 20.0
MIN_SWEEP_MATCH = 0.5
MIN_SWEEP_OBJECTS = 10  # fewer objects than this say nothing either way
# where a sweep places fewer than MIN_SWEEP_OBJECTS objects brighter than SWEEP_MATCH_LIMIT in the frame (a galaxy
# sweep on a small simulated frame: 3-6 of them), its objects down to this r are counted instead (the detection
# finds 27 of 28 of a simulated galaxy sweep's down to it, 1 in 20 of another sky's): else another sky's galaxy
# sweep passed and the labelled check scored the frames against it (accuracy 0.70, MCC -0.06, exit status 0)
SWEEP_MATCH_FAINT_LIMIT = 22.0


def quadrant(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """0..3 per position: left/right half of the columns (+1 right), lower/upper half of the rows (+2 upper)."""
    rows, cols = shape
    return (np.asarray(x) >= cols / 2).astype(np.int8) + 2 * (np.asarray(y) >= rows / 2).astype(np.int8)


def sweep_mismatch(on_source: np.ndarray, r: np.ndarray) -> tuple[int, int, float] | None:
    """(matched, listed, r limit) of a sweep's objects in the frame brighter than SWEEP_MATCH_LIMIT (or, with fewer
    than MIN_SWEEP_OBJECTS of them, SWEEP_MATCH_FAINT_LIMIT) when fewer than MIN_SWEEP_MATCH of them sit on a
    detected source (``on_source``), else None: scored against it, the frames would be judged by another sky's
    labels."""
    on_source, r = np.asarray(on_source, bool), np.asarray(r, np.float64)
    for limit in (SWEEP_MATCH_LIMIT, SWEEP_MATCH_FAINT_LIMIT):
        with np.errstate(invalid="ignore"):
            bright = r < limit
        listed, matched = int(bright.sum()), int(on_source[bright].sum())
        if listed >= MIN_SWEEP_OBJECTS:
            return (matched, listed, limit) if matched < MIN_SWEEP_MATCH * listed else None
    return None


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """95 % Wilson score interval of a fraction k / n (None, None when n is 0)."""
    if n == 0:
        return None, None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def fraction(flags: np.ndarray, select: np.ndarray | None = None) -> dict:
    """{"n", "k", "fraction", "low", "high"} of the True ``flags`` among the ``select``ed entries."""
    flags = np.asarray(flags, bool)
    if select is not None:
        flags = flags[np.asarray(select, bool)]
    n, k = int(flags.size), int(flags.sum())
    low, high = wilson(k, n)
    return {"n": n, "k": k, "fraction": k / n if n else None, "low": low, "high": high}


def in_bin(mag: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    mag = np.asarray(mag, np.float64)
    ok = np.isfinite(mag)
    if lo is not None:
        ok &= mag >= lo
    if hi is not None:
        ok &= mag < hi
    return ok


def by_bins(flags: np.ndarray, mag: np.ndarray, bins, select: np.ndarray | None = None) -> list[dict]:
    """``fraction`` of ``flags`` in each magnitude bin (within ``select``)."""
    select = np.ones(len(flags), bool) if select is None else np.asarray(select, bool)
    return [{"bin": bin_label(lo, hi), **fraction(flags, select & in_bin(mag, lo, hi))} for lo, hi in bins]


def by_quadrant(flags: np.ndarray, quad: np.ndarray, select: np.ndarray | None = None) -> list[dict]:
    select = np.ones(len(flags), bool) if select is None else np.asarray(select, bool)
    return [{"quadrant": QUADRANT_NAMES[q], **fraction(flags, select & (quad == q))} for q in range(4)]


def catalog_check(called_star: np.ndarray, r_mag: np.ndarray, quad: np.ndarray) -> dict:
    """Recall on a catalog's stars: overall, per RECALL_BINS and FINE_BINS of r PSF magnitude (the stars with
    no positive r flux, listed for their u or z light, in a bin of their own), and per quadrant."""
    no_r = ~np.isfinite(np.asarray(r_mag, np.float64))
    quadrants = by_quadrant(called_star, quad)
    faint_quadrants = by_quadrant(called_star, quad, in_bin(r_mag, 22.0, None))
    return {
        "overall": fraction(called_star),
        "by_r": by_bins(called_star, r_mag, RECALL_BINS),
        "by_r_fine": by_bins(called_star, r_mag, FINE_BINS) + [{"bin": "no r flux", **fraction(called_star, no_r)}],
        "by_quadrant": quadrants,
        "quadrant_p": quadrant_p_value(quadrants),
        "faint_by_quadrant": faint_quadrants,
        "faint_quadrant_p": quadrant_p_value(faint_quadrants),
    }


def two_sided(catalog_called_star: np.ndarray, others_called_star: np.ndarray) -> dict:
    """MCC, accuracy and both rates of "catalog star" (positives) against "bright non-catalog source"."""
    truth = np.r_[np.ones(len(catalog_called_star), int), np.zeros(len(others_called_star), int)]
    called = np.r_[np.asarray(catalog_called_star, int), np.asarray(others_called_star, int)]
    both = len(catalog_called_star) > 0 and len(others_called_star) > 0
    return {
        "mcc": float(matthews_corrcoef(truth, called)) if both else None,
        "accuracy": float((truth == called).mean()) if len(truth) else None,
        "star_recall": fraction(catalog_called_star),
        "non_catalog_called_star": fraction(others_called_star),
    }


def labelled_check(
    is_star: np.ndarray, p_star: np.ndarray, r_mag: np.ndarray, quad: np.ndarray, threshold: float
) -> dict:
    """The catalog objects of a field with both sweeps, scored against their sweep (``is_star``): every metric
    (``metrics.classification_metrics``), per RECALL_BINS of r PSF magnitude (objects with no positive r flux in
    a bin of their own) the stars and the galaxies called star, accuracy and MCC, the two fractions per FINE_BINS
    as well, and the accuracy per quadrant."""
    is_star, p_star = np.asarray(is_star, bool), np.asarray(p_star, np.float64)
    called = p_star >= threshold
    correct = called == is_star
    no_r = ~np.isfinite(np.asarray(r_mag, np.float64))
    bins = [(bin_label(lo, hi), in_bin(r_mag, lo, hi)) for lo, hi in RECALL_BINS] + [("no r flux", no_r)]
    quadrants = by_quadrant(correct, quad)
    return {
        "overall": classification_metrics(is_star, p_star, threshold),
        "by_r": [
            {
                "bin": label,
                **_called_star(called, is_star, select),
                "accuracy": fraction(correct, select),
                "mcc": _mcc(is_star[select], called[select]),
            }
            for label, select in bins
            if select.any()
        ],
        "by_r_fine": [
            {"bin": bin_label(lo, hi), **_called_star(called, is_star, in_bin(r_mag, lo, hi))} for lo, hi in FINE_BINS
        ],
        "accuracy_by_quadrant": quadrants,
        "accuracy_quadrant_p": quadrant_p_value(quadrants),
    }


def _called_star(called: np.ndarray, is_star: np.ndarray, select: np.ndarray) -> dict:
    """Of the ``select``ed objects, the fractions of the stars and of the galaxies called star."""
    return {
        "stars_called_star": fraction(called, is_star & select),
        "galaxies_called_star": fraction(called, ~is_star & select),
    }


def _mcc(truth: np.ndarray, called: np.ndarray) -> float | None:
    """MCC, None where it is undefined (one class only)."""
    return float(matthews_corrcoef(truth, called)) if 0 < truth.sum() < truth.size else None


def locus_check(
    gr: np.ndarray,
    ri: np.ndarray,
    r: np.ndarray,
    called_star: np.ndarray,
    pointlike: np.ndarray,
    quad: np.ndarray,
    deblended: np.ndarray | None = None,
) -> dict:
    """The stellar-locus test of one field (see the module docstring); with ``deblended``, the called-star
    fraction also apart for the sources the deblending split from a blend and for the isolated ones.

    The locus is reddened by the field's E(B-V), fitted to its bright point-like sources (size alone, no
    classifier), so dust in the field (the Galactic plane) moves the curve and not the verdict.
    """
    bright = in_bin(r, *LOCUS_RANGE) & np.isfinite(gr) & np.isfinite(ri)
    ebv = locus.fit_reddening(gr[bright & pointlike], ri[bright & pointlike])
    on = locus.locus_distance(gr, ri, ebv) < locus.LOCUS_TOLERANCE
    star, galaxy = bright & called_star, bright & ~called_star
    star_quadrants = by_quadrant(on, quad, star)
    apart = {}
    if deblended is not None:
        deblended = np.asarray(deblended, bool)
        apart = {"called_star_isolated": fraction(on, star & ~deblended),
                 "called_star_deblended": fraction(on, star & deblended)}  # fmt: skip
    return {
        "ebv": ebv,
        "tolerance": locus.LOCUS_TOLERANCE,
        "r_range": list(LOCUS_RANGE),
        "called_star": fraction(on, star),
        "called_galaxy": fraction(on, galaxy),
        "pointlike": fraction(on, bright & pointlike),
        "called_star_by_r": by_bins(on, r, LOCUS_BINS, star),
        "called_galaxy_by_r": by_bins(on, r, LOCUS_BINS, galaxy),
        "called_star_by_quadrant": star_quadrants,
        "called_star_quadrant_p": quadrant_p_value(star_quadrants),
        # the same for point-like sources: whether a quadrant's gap is the classifier's or the field's own
        "pointlike_by_quadrant": by_quadrant(on, quad, bright & pointlike),
        **apart,
        "on_locus": on,
    }


def star_fractions(called_star: np.ndarray, r: np.ndarray, quad: np.ndarray) -> dict:
    """The predicted star fraction per STAR_FRACTION_BINS of r, overall and per quadrant."""
    return {
        "by_r": by_bins(called_star, r, STAR_FRACTION_BINS),
        "by_quadrant": [
            {"quadrant": QUADRANT_NAMES[q], "by_r": by_bins(called_star, r, STAR_FRACTION_BINS, quad == q)}
            for q in range(4)
        ],
    }


def saturating_check(called_star: np.ndarray, r: np.ndarray) -> dict:
    """The fraction called star among sources brighter than SATURATING_LIMIT (almost all stars at any latitude)."""
    return fraction(called_star, in_bin(r, None, SATURATING_LIMIT))


def largest_quadrant_gap(overall: dict, per_quadrant: list[dict]) -> float | None:
    """The largest |quadrant fraction - field fraction|, in fraction units (None without data)."""
    if overall["fraction"] is None:
        return None
    gaps = [abs(q["fraction"] - overall["fraction"]) for q in per_quadrant if q["fraction"] is not None]
    return max(gaps) if gaps else None


def quadrant_p_value(per_quadrant: list[dict], draws: int = 20_000, seed: int = 0) -> float | None:
    """How likely quadrants as different as these are by chance alone, were the fraction the same everywhere: a
    Monte Carlo chi-square test of homogeneity (``per_quadrant``: ``by_quadrant`` entries), exact enough for the
    few dozen sources a high-latitude quadrant holds. None with fewer than two quadrants with sources, or with
    every fraction 0 or 1."""
    k = np.array([q["k"] for q in per_quadrant if q["n"]], np.float64)
    n = np.array([q["n"] for q in per_quadrant if q["n"]], np.float64)
    if len(n) < 2 or k.sum() in (0, n.sum()):
        return None
    rng = np.random.default_rng(seed)
    drawn = rng.binomial(n.astype(np.int64), k.sum() / n.sum(), size=(draws, len(n))).astype(np.float64)
    observed = _homogeneity_statistic(k[None], n)[0]
    return float((1 + np.sum(_homogeneity_statistic(drawn, n) >= observed - 1e-12)) / (1 + draws))


def _homogeneity_statistic(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Pearson's chi-square of [draws, quadrants] counts ``k`` of ``n`` against their pooled fraction."""
    pooled = k.sum(1, keepdims=True) / n.sum()
    spread = n * pooled * (1 - pooled)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 0, (k - n * pooled) ** 2 / np.where(spread > 0, spread, 1.0), 0.0).sum(1)
