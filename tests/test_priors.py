"""stargal.priors: a field's share of stars from p_star, and p_star moved to it; bench/prior_shift.py's tables."""

import csv
import re
import sys

import numpy as np
import pytest

from stargal.priors import PRIOR_LIMITS, adjusted, field_prior

TRAINING_PRIOR = 0.64


def calibrated_sample(share: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sources whose classes look alike in every field (one score, unit Gaussians 1.5 apart) in a field with
    ``share`` stars, and their exact p_star under TRAINING_PRIOR, as a calibrated network gives it."""
    rng = np.random.default_rng(seed)
    star = rng.random(n) < share
    score = rng.normal(np.where(star, 1.5, 0.0), 1.0)
    likelihood_ratio = np.exp(1.5 * score - 1.125)  # N(1.5, 1) over N(0, 1) at the score
    odds = likelihood_ratio * TRAINING_PRIOR / (1 - TRAINING_PRIOR)
    return odds / (1 + odds), star


@pytest.mark.parametrize("share", [0.1, 0.25, 0.64, 0.9])
def test_the_estimate_recovers_the_share_of_stars_the_sources_were_drawn_with(share):
    p, star = calibrated_sample(share, 20_000)
    assert field_prior(p, TRAINING_PRIOR) == pytest.approx(star.mean(), abs=0.02)


def test_moved_p_star_is_the_posterior_under_the_new_share():
    p = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    assert np.allclose(adjusted(p, TRAINING_PRIOR, TRAINING_PRIOR), p)
    # odds scale by (0.25 / 0.75) / (0.64 / 0.36): p = 0.5 goes to 0.1579
    assert adjusted(np.array([0.5]), 0.25, TRAINING_PRIOR)[0] == pytest.approx(0.1579, abs=1e-4)
    moved = adjusted(np.linspace(0, 1, 11), 0.25, TRAINING_PRIOR)
    assert np.all(np.diff(moved) > 0) and moved[0] == 0 and moved[-1] == 1


def test_moving_to_the_estimate_raises_mcc_where_the_share_is_far_from_training():
    from stargal.metrics import classification_metrics

    p, star = calibrated_sample(0.2, 20_000, seed=1)
    moved = adjusted(p, field_prior(p, TRAINING_PRIOR), TRAINING_PRIOR)
    before = classification_metrics(star.astype(int), p, 0.5)["mcc"]
    after = classification_metrics(star.astype(int), moved, 0.5)["mcc"]
    assert after > before + 0.01


def test_one_class_fields_stay_inside_the_limits_and_no_source_gives_the_training_share():
    assert field_prior(np.ones(100), TRAINING_PRIOR) == pytest.approx(PRIOR_LIMITS[1])
    assert field_prior(np.zeros(100), TRAINING_PRIOR) == pytest.approx(PRIOR_LIMITS[0])
    assert field_prior(np.array([np.nan]), TRAINING_PRIOR) == TRAINING_PRIOR
    with pytest.raises(ValueError, match="training_prior"):
        field_prior(np.array([0.5]), 1.0)


def test_the_bench_tables_read_a_real_sky_folder_and_subsample_to_each_share(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parents[1] / "bench"))
    sys.modules.pop("prior_shift", None)
    import prior_shift

    p, star = calibrated_sample(0.25, 400, seed=2)
    columns = ["x", "r", "p_star", "status", "catalog_star_within_2arcsec"]
    with open(tmp_path / "sources-4510-4-30.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for k, (pk, sk) in enumerate(zip(p, star, strict=True)):
            writer.writerow([k, "21.0", f"{pk:.5f}", "ok", str(bool(sk))])
        writer.writerow([999, "21.0", "", "edge", "False"])  # not classified: left out
    shares, checks = prior_shift.real_fields(tmp_path, TRAINING_PRIOR, 0.5)
    assert shares[0][:2] == ["4510-4-30", 400]
    assert float(shares[0][3]) == pytest.approx(star.mean(), abs=0.06)
    assert [c[2] for c in checks] == [400, 400]  # every source brighter than both limits

    rows = prior_shift.share_sweep([(p, star)], TRAINING_PRIOR, 0.5, repeats=2)
    assert [r[0] for r in rows] == [f"{s:.2f}" for s in prior_shift.SHARES]
    for row in rows:
        assert float(row[1].split()[0]) == pytest.approx(float(row[0]), abs=0.12)


@pytest.mark.parametrize("prior", [0.05, 0.23, 0.64, 0.97])
def test_the_threshold_at_a_share_labels_as_the_moved_p_star_does(prior):
    from stargal.priors import threshold_at

    p = np.random.default_rng(3).random(5000)
    cut = threshold_at(0.498, prior, TRAINING_PRIOR)
    disagree = (p >= cut) != (adjusted(p, prior, TRAINING_PRIOR) >= 0.498)
    assert disagree.sum() <= 1 and np.all(np.abs(p[disagree] - cut) < 1e-9)  # only rounding at the cut itself
    assert adjusted(np.array([cut]), prior, TRAINING_PRIOR)[0] == pytest.approx(0.498)
    assert (cut > 0.498) == (prior < TRAINING_PRIOR) or prior == TRAINING_PRIOR


def test_prior_option_values_and_a_model_without_its_training_share():
    from types import SimpleNamespace

    from stargal.errors import StargalError
    from stargal.stages.predict import check_options, prior_share, training_share

    assert [prior_share(v) for v in ("training", "field", "0.3")] == ["training", "field", 0.3]
    for bad in ("0", "1", "nan", "fields", "-0.2"):
        with pytest.raises(StargalError, match=rf"^--prior {re.escape(bad)}: must be training, field or a share"):
            check_options(None, prior=bad)
    with pytest.raises(StargalError, match="records no share of stars of its training set"):
        training_share(SimpleNamespace(meta={"dataset_counts": {}}, directory="old-model"))


@pytest.mark.slow
def test_prior_field_moves_the_threshold_to_the_share_estimated_over_the_detected_sources(tiny_data):
    """The same share, and so the same threshold, whichever mode classifies the field; labels follow it."""
    from astropy.table import Table
    from conftest import TINY

    from stargal.fsio import read_json
    from stargal.paths import PRETRAINED, PRETRAINED_MODEL_DIR, FieldId
    from stargal.priors import threshold_at
    from stargal.stages.alignment import run_alignment
    from stargal.stages.predict import run_predict
    from stargal.tables import read_table

    run_alignment(tiny_data, TINY, workers=1, reports=False)
    fid = FieldId(TINY.rerun, TINY.run, TINY.camcol, 81)
    meta = read_json(PRETRAINED_MODEL_DIR / "model.json")
    training, model_cut = meta["dataset_counts"]["train"]["star_fraction"], meta["threshold"]
    out = tiny_data.predictions_dir
    common = {"model": PRETRAINED, "fid": fid}
    _, one_pass = run_predict(tiny_data, detect=True, tta="off", out=str(out / "d.ecsv"), **common)
    ok = one_pass.status == "ok"
    share = field_prior(one_pass.p_star[ok], training)
    assert abs(share - training) > 0.02  # a field whose share differs: the threshold moves
    want = threshold_at(model_cut, share, training)

    detected_path, detected = run_predict(tiny_data, detect=True, prior="field", out=str(out / "f.ecsv"), **common)
    table = Table.read(detected_path)
    assert table.meta["THRESH"] == pytest.approx(want, abs=1e-12) and table.meta["MODELTHR"] == model_cut
    assert table.meta["PRIOR"].startswith(f"{share:.3f} stars (the field's, over its {int(ok.sum())} detected")
    served = detected.status == "ok"
    np.testing.assert_array_equal(detected.label[served] == "star", detected.p_star[served] >= want)
    assert abs(want - model_cut) > 0.02

    # positions of the field (its catalog objects): the same share and threshold
    objects = read_table(tiny_data.objects(fid))
    all_path, _ = run_predict(tiny_data, all_objects=True, prior="field", out=str(out / "a.ecsv"), **common)
    assert Table.read(all_path).meta["THRESH"] == pytest.approx(want, abs=1e-12)
    pos_path, _ = run_predict(
        tiny_data, ra=objects["ra"][:3], dec=objects["dec"][:3], prior="0.5", out=str(out / "p.ecsv"), **common
    )
    assert Table.read(pos_path).meta["THRESH"] == pytest.approx(threshold_at(model_cut, 0.5, training), abs=1e-12)


def test_the_bench_ends_a_failed_predict_run_in_one_line_naming_the_field(tmp_path, monkeypatch):
    from stargal.errors import StargalError

    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parents[1] / "bench"))
    sys.modules.pop("prior_shift", None)
    import prior_shift

    missing = str(tmp_path / "no-data")
    with pytest.raises(StargalError, match=rf"^predict.py --detect on field 375 of {re.escape(missing)} failed"):
        prior_shift.predicted(missing, 375, "--detect", "pretrained", tmp_path / "out.ecsv")
