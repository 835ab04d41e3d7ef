"""Classification metrics of star (1) / galaxy (0) predictions: pure numpy, arrays in, dicts out.

Convention: the positive class is "star". Purity of a class is the fraction of objects predicted as
that class that truly are (precision); completeness is the fraction of true members recovered (recall).
Undefined ratios (empty denominators) are reported as None, MCC as 0 (scikit-learn's convention).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

# r-band PSF magnitude bins of the per-magnitude evaluation (open-ended at both ends).
MAGNITUDE_EDGES = (16.0, 18.0, 19.0, 20.0, 21.0, 22.0)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 int64 matrix [[TN, FP], [FN, TP]]: rows true galaxy/star, columns predicted galaxy/star."""
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    tp = np.count_nonzero(y_true & y_pred)
    tn = np.count_nonzero(~y_true & ~y_pred)
    fp = np.count_nonzero(~y_true & y_pred)
    fn = np.count_nonzero(y_true & ~y_pred)
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def mcc_from_counts(tn, fp, fn, tp):
    """Matthews correlation coefficient (vectorised over arrays of counts); 0 where undefined."""
    tn, fp, fn, tp = (np.asarray(v, dtype=np.float64) for v in (tn, fp, fn, tp))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        mcc = np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1.0), 0.0)
    return mcc


def mcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    (tn, fp), (fn, tp) = confusion(y_true, y_pred)
    return float(mcc_from_counts(tn, fp, fn, tp))


def roc_auc(y_true: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count half); None for one class."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos = np.count_nonzero(y_true)
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(p, dtype=np.float64))
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds (descending), starting at (0, 0)."""
    y_true = np.asarray(y_true).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y_true[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]  # last index of each distinct score
    tps = np.cumsum(ys)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = max(int(ys.sum()), 1), max(int((~ys).sum()), 1)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, ps[last]]
    return fpr, tpr, thresholds


def log_loss(y_true: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy (natural log), probabilities clipped to [eps, 1 - eps] as scikit-learn."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def classification_metrics(y_true: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    """Every metric of one set of predictions ``p`` (probability of star) at ``threshold``."""
    y_true = np.asarray(y_true).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    n = int(y_true.size)
    if n == 0:
        return {"n": 0, "stars": 0, "galaxies": 0}
    cm = confusion(y_true, p >= threshold)
    (tn, fp), (fn, tp) = cm
    star_completeness = _ratio(tp, tp + fn)
    galaxy_completeness = _ratio(tn, tn + fp)
    recalls = [r for r in (star_completeness, galaxy_completeness) if r is not None]
    return {
        "n": n,
        "stars": int(tp + fn),
        "galaxies": int(tn + fp),
        "accuracy": float((tp + tn) / n),
        "mcc": float(mcc_from_counts(tn, fp, fn, tp)),
        "balanced_accuracy": float(np.mean(recalls)),
        "roc_auc": roc_auc(y_true, p),
        "log_loss": log_loss(y_true, p),
        "star_purity": _ratio(tp, tp + fp),
        "star_completeness": star_completeness,
        "galaxy_purity": _ratio(tn, tn + fn),
        "galaxy_completeness": galaxy_completeness,
        "confusion_matrix": cm.tolist(),
        "threshold": float(threshold),
    }


def magnitude_bins(edges=MAGNITUDE_EDGES) -> list[tuple[float, float]]:
    """Bins (lo, hi) with open ends: (-inf, e0), (e0, e1), ..., (e_last, inf)."""
    bounds = [-np.inf, *edges, np.inf]
    return [(float(lo), float(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


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
    test star fraction s; MCC 0, AUC 0.5). "majority": always the training majority class.
    """
    y_train = np.asarray(y_train).astype(bool)
    y_eval = np.asarray(y_eval).astype(bool)
    q = float(y_train.mean()) if y_train.size else 0.5
    s = float(y_eval.mean()) if y_eval.size else 0.0
    majority = 1 if q > 0.5 else 0
    majority_acc = s if majority == 1 else 1 - s
    return {
        "random": {
            "accuracy": q * s + (1 - q) * (1 - s),
            "mcc": 0.0,
            "balanced_accuracy": 0.5,
            "roc_auc": 0.5,
            "star_fraction": q,
        },
        "majority": {
            "accuracy": majority_acc,
            "mcc": 0.0,
            "balanced_accuracy": 0.5,
            "roc_auc": 0.5,
            "class": "star" if majority else "galaxy",
        },
    }
