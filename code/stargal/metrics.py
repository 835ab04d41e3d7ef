"""Classification metrics of star (1) / galaxy (0) predictions: arrays in, dicts out.

The standard metrics come from scikit-learn; this module adds what it lacks: one dict of every metric with
the project's names, metrics per magnitude bin, the MCC-maximising decision threshold (vectorised over all
candidate thresholds) and the trivial baselines.

Convention: the positive class is "star". Purity of a class is the fraction of objects predicted as
that class that truly are (precision); completeness is the fraction of true members recovered (recall).
Undefined ratios (empty denominators) are reported as None (JSON null). A set of one class (a test split or a
magnitude bin holding stars only, say) has no MCC, balanced accuracy or ROC AUC: they are None too, not the 0.0 or
0.5 scikit-learn gives by convention, which would read as scores (``ONE_CLASS_UNDEFINED``; ``defined`` gives the
same for a record written before). Predictions of one class on a set of both classes keep MCC 0 (scikit-learn's
convention: no better than chance).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

# r-band PSF magnitude bins of the per-magnitude evaluation (open-ended at both ends).
MAGNITUDE_EDGES = (16.0, 18.0, 19.0, 20.0, 21.0, 22.0)
LABELS = [0, 1]  # galaxy, star: fixed, so a split holding one class still gives 2x2 counts
# undefined for a set of one class (no negatives or no positives to tell apart): None, never a number
ONE_CLASS_UNDEFINED = ("mcc", "balanced_accuracy", "roc_auc")


def one_class(m: dict) -> bool:
    """Whether a metrics record (``classification_metrics``, a magnitude bin of ``by_magnitude``) is of a set
    holding one class only (or nothing); False when it does not say (no "stars"/"galaxies" counts)."""
    stars, galaxies = m.get("stars"), m.get("galaxies")
    if not isinstance(stars, int) or not isinstance(galaxies, int):
        return False
    return stars == 0 or galaxies == 0


def defined(m: dict, key: str, counts: dict | None = None):
    """``m[key]`` (None when absent), or None when the metric is undefined because the set holds one class: for
    readers of metrics.json, whose records written before stargal said so held 0.0 there. ``counts`` is the record
    whose "stars"/"galaxies" say what the set held, when ``m`` does not (a baseline of the test split)."""
    value = m.get(key)
    if key in ONE_CLASS_UNDEFINED and one_class(m if counts is None else counts):
        return None
    return value


def _none_if_nan(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def mcc_from_counts(tn, fp, fn, tp):
    """Matthews correlation coefficient of many confusion matrices at once (arrays of counts); 0 where undefined.

    scikit-learn's ``matthews_corrcoef`` scores one prediction at a time; ``choose_threshold`` needs every
    candidate threshold's score in one pass.
    """
    tn, fp, fn, tp = (np.asarray(v, dtype=np.float64) for v in (tn, fp, fn, tp))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        mcc = np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1.0), 0.0)
    return mcc


def classification_metrics(y_true: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    """Every metric of one set of predictions ``p`` (probability of star) at ``threshold``."""
    from sklearn import metrics as skm  # here, not at the top: predict.py uses this module without it (0.8 s)

    y_true = np.asarray(y_true).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    n = int(y_true.size)
    if n == 0:
        return {"n": 0, "stars": 0, "galaxies": 0}
    y_pred = (p >= threshold).astype(np.int64)
    cm = skm.confusion_matrix(y_true, y_pred, labels=LABELS)
    (tn, fp), (fn, tp) = cm
    both_classes = 0 < tp + fn < n
    with warnings.catch_warnings():
        # one class absent (a faint magnitude bin, say): sklearn warns, the undefined ratios become None
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        precision = skm.precision_score(y_true, y_pred, labels=LABELS, average=None, zero_division=np.nan)
        recall = skm.recall_score(y_true, y_pred, labels=LABELS, average=None, zero_division=np.nan)
        balanced = skm.balanced_accuracy_score(y_true, y_pred)
        mcc = skm.matthews_corrcoef(y_true, y_pred)
    return {
        "n": n,
        "stars": int(tp + fn),
        "galaxies": int(tn + fp),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "mcc": float(mcc) if both_classes else None,  # sklearn's 0.0 for one class would read as a score
        "balanced_accuracy": float(balanced) if both_classes else None,  # that class's recall: the accuracy again
        "roc_auc": float(skm.roc_auc_score(y_true, p)) if both_classes else None,
        "log_loss": float(skm.log_loss(y_true, y_proba=p, labels=LABELS)),
        "star_purity": _none_if_nan(precision[1]),
        "star_completeness": _none_if_nan(recall[1]),
        "galaxy_purity": _none_if_nan(precision[0]),
        "galaxy_completeness": _none_if_nan(recall[0]),
        "confusion_matrix": cm.tolist(),
        "threshold": float(threshold),
    }


def magnitude_bins(edges=MAGNITUDE_EDGES) -> list[tuple[float, float]]:
    """Bins (lo, hi) with open ends: (-inf, e0), (e0, e1), ..., (e_last, inf)."""
    bounds = [-np.inf, *edges, np.inf]
    return [(float(lo), float(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def bin_label(lo: float | None, hi: float | None) -> str:
    """A magnitude bin in words a reader cannot misread: "< 16" and ">= 22" for its open ends, "16-18" between."""
    if lo is None:
        return f"< {hi:g}"
    return f">= {lo:g}" if hi is None else f"{lo:g}-{hi:g}"


def magnitude_bin_label(row: dict) -> str:
    """``bin_label`` of a ``by_magnitude`` row (its own "bin", "-16" or "22-", reads as a magnitude of minus 16);
    the row's "bin" where it has no bounds ("unknown")."""
    lo, hi = row.get("lo"), row.get("hi")
    number = (int, float)
    if (lo is None or isinstance(lo, number)) and (hi is None or isinstance(hi, number)) and (lo, hi) != (None, None):
        return bin_label(lo, hi)
    return str(row.get("bin"))


def by_magnitude(
    y_true: np.ndarray, p: np.ndarray, magnitude: np.ndarray, threshold: float = 0.5, edges=MAGNITUDE_EDGES
) -> list[dict]:
    """``classification_metrics`` per magnitude bin (lo <= m < hi); objects with a NaN magnitude go in
    their own bin labelled "unknown". Empty bins are left out."""
    y_true = np.asarray(y_true)
    p = np.asarray(p)
    magnitude = np.asarray(magnitude, dtype=np.float64)
    rows = []
    for lo, hi in magnitude_bins(edges):
        sel = (magnitude >= lo) & (magnitude < hi)
        if sel.any():
            label = f"{'' if np.isinf(lo) else f'{lo:g}'}-{'' if np.isinf(hi) else f'{hi:g}'}"
            rows.append(
                {
                    "bin": label,
                    "lo": _finite(lo),
                    "hi": _finite(hi),
                    **classification_metrics(y_true[sel], p[sel], threshold),
                }
            )
    unknown = ~np.isfinite(magnitude)
    if unknown.any():
        rows.append(
            {"bin": "unknown", "lo": None, "hi": None, **classification_metrics(y_true[unknown], p[unknown], threshold)}
        )
    return rows


def _finite(v: float) -> float | None:
    return None if np.isinf(v) else float(v)


def choose_threshold(y_true: np.ndarray, p: np.ndarray) -> float:
    """The decision threshold maximising MCC on (validation) predictions.

    Candidates are midpoints between consecutive distinct scores; ties in MCC go to the candidate closest
    to 0.5, so a perfectly separable set keeps a central threshold.
    """
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    if y.all() or (~y).all():
        return 0.5
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    n_pos, n_neg = ys.sum(), (~ys).sum()
    fn, tn = n_pos - tp, n_neg - fp
    scores = mcc_from_counts(tn, fp, fn, tp)
    # predicted star when p >= threshold; cutting after distinct score i -> threshold between ps[i] and next
    nxt = np.r_[ps[last[1:]], -np.inf] if last.size > 1 else np.array([-np.inf])
    cand = np.where(np.isfinite(nxt), 0.5 * (ps[last] + nxt), ps[last])
    best = scores.max()
    tied = np.flatnonzero(scores >= best - 1e-12)
    return float(cand[tied[np.argmin(np.abs(cand[tied] - 0.5))]])


def baselines(y_train: np.ndarray, y_eval: np.ndarray) -> dict:
    """Expected scores of the reference's trivial classifiers on ``y_eval``.

    "random": guess star with the training star fraction q (expected accuracy q*s + (1-q)*(1-s) for a
    test star fraction s; MCC 0, AUC 0.5). "majority": always the training majority class. On a ``y_eval`` of
    one class MCC, balanced accuracy and AUC are undefined: None.
    """
    y_train = np.asarray(y_train).astype(bool)
    y_eval = np.asarray(y_eval).astype(bool)
    q = float(y_train.mean()) if y_train.size else 0.5
    s = float(y_eval.mean()) if y_eval.size else 0.0
    majority = 1 if q > 0.5 else 0
    majority_acc = s if majority == 1 else 1 - s
    both = bool(y_eval.any() and not y_eval.all())
    chance = {"mcc": 0.0, "balanced_accuracy": 0.5, "roc_auc": 0.5} if both else dict.fromkeys(ONE_CLASS_UNDEFINED)
    return {
        "random": {"accuracy": q * s + (1 - q) * (1 - s), **chance, "star_fraction": q},
        "majority": {"accuracy": majority_acc, **chance, "class": "star" if majority else "galaxy"},
    }
