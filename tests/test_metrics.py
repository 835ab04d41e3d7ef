"""Metrics agree with scikit-learn on fixed predictions; threshold and baselines behave."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from stargal import metrics as m


@pytest.fixture
def preds():
    rng = np.random.default_rng(11)
    y = (rng.random(500) < 0.3).astype(np.uint8)
    p = np.clip(0.35 * y + rng.random(500) * 0.65, 0, 1)
    p[:20] = np.round(p[:20], 1)  # some ties
    return y, p


def test_metrics_are_sklearns(preds):
    y, p = preds
    th = 0.55
    pred = (p >= th).astype(int)
    got = m.classification_metrics(y, p, th)
    assert got["accuracy"] == skm.accuracy_score(y, pred)
    assert got["mcc"] == skm.matthews_corrcoef(y, pred)
    assert got["balanced_accuracy"] == skm.balanced_accuracy_score(y, pred)
    assert got["roc_auc"] == skm.roc_auc_score(y, p)
    assert got["log_loss"] == skm.log_loss(y, y_proba=p)
    assert got["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert got["star_purity"] == skm.precision_score(y, pred)
    assert got["star_completeness"] == skm.recall_score(y, pred)
    assert got["galaxy_purity"] == skm.precision_score(1 - y, 1 - pred)
    assert got["galaxy_completeness"] == skm.recall_score(1 - y, 1 - pred)
    (tn, fp), (fn, tp) = got["confusion_matrix"]
    assert m.mcc_from_counts(tn, fp, fn, tp) == pytest.approx(got["mcc"], abs=1e-15)


def test_degenerate_cases():
    y = np.zeros(10, np.uint8)
    got = m.classification_metrics(y, np.full(10, 0.2))
    # one class: MCC, balanced accuracy and AUC undefined (None, JSON null), not sklearn's 0.0 (tests/test_one_class.py)
    assert got["mcc"] is None and got["roc_auc"] is None and got["star_purity"] is None
    assert got["star_completeness"] is None and got["galaxy_completeness"] == 1.0
    assert got["accuracy"] == 1.0 and got["balanced_accuracy"] is None
    assert m.classification_metrics(y, np.full(10, 0.9))["galaxy_purity"] is None  # no galaxy predicted
    assert m.mcc_from_counts(0, 0, 0, 2) == 0.0  # undefined: 0, as scikit-learn
    assert m.classification_metrics([], []) == {"n": 0, "stars": 0, "galaxies": 0}


def test_by_magnitude_bins_partition(preds):
    y, p = preds
    mag = np.linspace(15, 23, len(y)).astype(np.float32)
    mag[:5] = np.nan
    rows = m.by_magnitude(y, p, mag, 0.5)
    assert sum(r["n"] for r in rows) == len(y)
    assert rows[-1]["bin"] == "unknown" and rows[-1]["n"] == 5
    sel = (mag >= 19) & (mag < 20)
    row = next(r for r in rows if r["bin"] == "19-20")
    assert row["accuracy"] == pytest.approx(skm.accuracy_score(y[sel], p[sel] >= 0.5))


def test_choose_threshold_maximises_mcc(preds):
    y, p = preds
    th = m.choose_threshold(y, p)
    best = skm.matthews_corrcoef(y, p >= th)
    grid = np.unique(p)
    assert best >= max(skm.matthews_corrcoef(y, p >= t) for t in grid) - 1e-12
    # a perfectly separable set keeps a threshold between the classes
    y2 = np.array([0, 0, 1, 1])
    th2 = m.choose_threshold(y2, np.array([0.1, 0.2, 0.8, 0.9]))
    assert 0.2 < th2 < 0.8


def test_baselines():
    y_train = np.array([0, 0, 0, 1])
    y_test = np.array([0, 1, 1, 1, 0])
    b = m.baselines(y_train, y_test)
    assert b["majority"]["accuracy"] == pytest.approx(0.4)  # always "galaxy": 2 of 5
    assert b["random"]["accuracy"] == pytest.approx(0.25 * 0.6 + 0.75 * 0.4)
    # the random baseline's expected accuracy agrees with simulation
    rng = np.random.default_rng(0)
    sims = [(rng.random(y_test.size) < 0.25).astype(int) == y_test for _ in range(20000)]
    assert np.mean(sims) == pytest.approx(b["random"]["accuracy"], abs=0.01)
