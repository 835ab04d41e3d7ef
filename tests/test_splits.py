"""Splits: regions, field validation, dataset names, and the leakage guard on adjacent overlapping fields."""

from __future__ import annotations

import numpy as np
import pytest

from stargal import splits
from stargal.config import PIXEL_SCALE_ARCSEC, REFERENCE, FieldSet
from stargal.errors import StargalError
from stargal.geometry import near_any, nearest_neighbour_arcsec
from stargal.splits import TEST, TRAIN, VAL, Region, SplitSpec
from stargal.tables import OBJECT_DTYPE

ROWS, COLS, OVERLAP = 120, 150, 30  # small frames overlapping like SDSS fields (by OVERLAP rows)
DEC0, RA0 = 10.0, 150.0
SCALE_DEG = PIXEL_SCALE_ARCSEC / 3600.0


def strip(fields=(80, 81, 82), per_field=80, seed=1) -> tuple[np.ndarray, np.ndarray]:
    """Objects tables of consecutive overlapping fields, concatenated, and each row's cube field.

    A source in the overlap of two fields is listed in both tables with the same objid and sky position
    (the catalog field being the field whose non-overlapping part holds it), like stage 01's tables."""
    rng = np.random.default_rng(seed)
    step = ROWS - OVERLAP
    n = per_field * len(fields)
    grow = rng.uniform(-0.4, step * len(fields) + OVERLAP - 0.6, n)
    gcol = rng.uniform(0, COLS - 1, n)
    label = rng.integers(0, 2, n)
    cat_field = np.array(fields)[np.clip((grow // step).astype(int), 0, len(fields) - 1)]
    tables, cube_field = [], []
    for k, f in enumerate(fields):
        y = grow - k * step
        sel = np.flatnonzero((np.floor(y + 0.5) >= 0) & (np.floor(y + 0.5) <= ROWS - 1))
        t = np.zeros(sel.size, dtype=OBJECT_DTYPE)
        t["objid"] = [f"301-8162-6-{cat_field[i]}-{i}" for i in sel]
        t["run"], t["camcol"], t["field"], t["id"] = 8162, 6, cat_field[sel], sel
        t["dec"] = DEC0 + grow[sel] * SCALE_DEG
        t["ra"] = RA0 + gcol[sel] * SCALE_DEG / np.cos(np.radians(DEC0))
        t["x"], t["y"] = gcol[sel], y[sel]
        t["label"] = label[sel]
        t["r_psfmag"] = rng.uniform(15, 22, sel.size)
        t["r_modelmag"] = t["r_psfmag"] + 0.1
        tables.append(t)
        cube_field.append(np.full(sel.size, f))
    return np.concatenate(tables), np.concatenate(cube_field)


SPEC = SplitSpec(train_fields=(80,), val_fields=(82,), test_fields=(81,))


def edge_preference(table):
    return np.minimum.reduce([table["y"], ROWS - 1 - table["y"], table["x"], COLS - 1 - table["x"]])


def test_adjacent_fields_leak_without_the_guard():
    """The fixture really has the leak the guard exists for: shared sources and close neighbours."""
    table, cube_field = strip()
    sel = splits.select(table, cube_field, SPEC, patch_size=25, guard=False)
    assert splits.shared_sources(table, sel.split, TRAIN, TEST) > 5
    assert splits.shared_sources(table, sel.split, VAL, TEST) > 5


def test_guard_leaves_no_shared_source_and_no_close_patch():
    table, cube_field = strip()
    sel = splits.select(table, cube_field, SPEC, patch_size=25)  # the default: guard on
    for other in (TRAIN, VAL):
        assert splits.shared_sources(table, sel.split, other, TEST) == 0
        # no train/val patch centre within half a patch of a test object
        assert splits.shared_sources(table, sel.split, other, TEST, 25 / 2 * PIXEL_SCALE_ARCSEC) == 0
    assert sel.removed["test_source"] > 5 and sel.removed["near_test"] > 0
    unguarded = splits.select(table, cube_field, SPEC, patch_size=25, guard=False)
    lost = np.count_nonzero(np.isin(unguarded.split, (TRAIN, VAL))) - np.count_nonzero(np.isin(sel.split, (TRAIN, VAL)))
    assert lost == sel.removed["test_source"] + sel.removed["near_test"]
    assert np.count_nonzero(sel.split == TEST) == np.count_nonzero(unguarded.split == TEST)  # test is never cut


def test_guard_matches_by_sky_position_not_only_objid():
    """The same source catalogued under another objid (a neighbouring field's catalog) is still caught."""
    table, cube_field = strip()
    table["objid"] = [f"{f}-{i}" for i, f in enumerate(cube_field)]  # every row a different objid
    table["ra"] += np.where(cube_field == 80, 0.5 / 3600, 0.0)  # and 0.5" off in field 80
    sel = splits.select(table, cube_field, SPEC, patch_size=1)  # half patch 0.2" < 0.5": only the 1" match acts
    assert sel.removed["test_source"] > 5 and sel.removed["near_test"] == 0
    assert splits.shared_sources(table, sel.split, TRAIN, TEST) == 0


def test_duplicates_within_a_split_are_kept_once_preferring_the_interior_copy():
    table, cube_field = strip()
    spec = SplitSpec(train_fields=(80, 81), val_fields=(82,), test_fields=(), test_regions=(Region(0, 1, 0, 1),))
    pref = edge_preference(table)
    sel = splits.select(table, cube_field, spec, patch_size=25, preference=pref)
    train = sel.rows(TRAIN)
    assert np.unique(table["objid"][train]).size == train.size
    in_both = np.intersect1d(table["objid"][cube_field == 80], table["objid"][cube_field == 81])
    assert in_both.size > 5
    assert sel.removed["duplicate"] >= in_both.size
    for objid in in_both:
        copies = np.flatnonzero(table["objid"] == objid)
        kept = copies[np.isin(copies, train)]
        assert kept.size == 1 and pref[kept[0]] == pref[copies].max()


def test_a_source_catalogued_under_two_fields_is_kept_once_in_the_cube_that_holds_both():
    """A sweep listing one source twice, under two overlapping fields (two objids 0.2" apart): both rows lie in the
    same cube, and the de-duplication paired close rows of different cubes only, so the source went into the
    training and the test set twice, the same patch counted twice, exit 0."""
    table, cube_field = strip()
    alone = nearest_neighbour_arcsec(table["ra"], table["dec"]) > 3
    twins = []
    for f in (80, 81):  # train and test
        own = np.flatnonzero(alone & (cube_field == f) & (table["field"] == f) & (table["y"] > 45) & (table["y"] < 75))
        twin = table[own[:1]].copy()
        twin["objid"], twin["field"] = f"301-8162-6-{f + 1}-9999", f + 1
        twin["ra"] += 0.2 / 3600 / np.cos(np.radians(DEC0))
        twins.append(twin)
    table = np.concatenate([table, *twins])
    cube_field = np.concatenate([cube_field, [80, 81]])
    sel = splits.select(table, cube_field, SPEC, patch_size=25, preference=edge_preference(table))
    for twin, code in zip(twins, (TRAIN, TEST), strict=True):
        copies = near_any(table["ra"], table["dec"], twin["ra"], twin["dec"], 1.0)
        assert np.count_nonzero(copies) == 2 and np.count_nonzero(copies & (sel.split == code)) == 1
    # two entries of one field that close (deblended neighbours, as SDSS lists them) are both kept
    deblended = table[-1:].copy()
    deblended["objid"], deblended["field"] = "301-8162-6-81-9998", 81
    pair = np.concatenate([table[-1:], deblended])
    pair["field"] = 81
    assert splits.duplicate_pairs(pair, np.arange(2), np.array([81, 81])).size == 0


def test_train_val_duplicates_stay_in_train():
    table, cube_field = strip()
    spec = SplitSpec(train_fields=(80,), val_fields=(81,), test_fields=(82,))
    sel = splits.select(table, cube_field, spec, patch_size=25)
    unguarded = splits.select(table, cube_field, spec, patch_size=25, guard=False)
    assert splits.shared_sources(table, sel.split, TRAIN, VAL) == 0
    assert sel.removed["duplicate_train_val"] > 5
    # the removals came out of validation: training lost only what the test guard took
    shared_80_81 = np.intersect1d(table["objid"][cube_field == 80], table["objid"][cube_field == 81])
    train_ids = table["objid"][sel.rows(TRAIN)]
    assert np.isin(shared_80_81, train_ids).all()
    assert np.count_nonzero(unguarded.split == TRAIN) == np.count_nonzero(cube_field == 80)


def test_test_region_moves_objects_to_test_and_out_of_train_val():
    table, cube_field = strip()
    dec_cut = DEC0 + 50 * SCALE_DEG
    region = Region(0.0, 360.0, DEC0 - 1, dec_cut)  # the lower part of field 80
    spec = SplitSpec(train_fields=(80,), val_fields=(82,), test_fields=(81,), test_regions=(region,))
    sel = splits.select(table, cube_field, spec, patch_size=25)
    inside = table["dec"] < dec_cut
    assert sel.moved_to_test == np.count_nonzero(inside & (cube_field == 80))
    assert (sel.split[inside & (sel.split != splits.REMOVED)] == TEST).all()
    assert not np.isin(sel.split[inside], (TRAIN, VAL)).any()
    assert splits.shared_sources(table, sel.split, TRAIN, TEST) == 0


def test_exclude_region_empties_train_val_but_keeps_test():
    table, cube_field = strip()
    region = Region(0.0, 360.0, -90.0, 90.0)  # everything
    spec = SplitSpec(train_fields=(80,), val_fields=(82,), test_fields=(81,), exclude_regions=(region,))
    sel = splits.select(table, cube_field, spec, patch_size=25)
    assert not np.isin(sel.split, (TRAIN, VAL)).any()
    assert np.count_nonzero(sel.split == TEST) == np.count_nonzero(cube_field == 81)
    assert sel.removed["exclude_region"] == np.count_nonzero(cube_field != 81)


def test_drop_policy_removes_only_rows_outside():
    table, cube_field = strip()
    inside = edge_preference(table) >= 12
    sel = splits.select(
        table, cube_field, SPEC, patch_size=25, edge="drop", inside=inside, preference=edge_preference(table)
    )
    assert inside[sel.split != splits.REMOVED].all()
    assert sel.removed["edge"] > 0


def test_near_any_across_ra_zero_and_inclusive_radius():
    assert near_any(np.array([359.9999]), np.array([0.0]), np.array([0.0001]), np.array([0.0]), 1.0)[0]
    assert not near_any(np.array([359.99]), np.array([0.0]), np.array([0.01]), np.array([0.0]), 1.0)[0]
    dec = np.array([1.0 / 3600])
    assert near_any(np.array([10.0]), dec, np.array([10.0]), np.array([0.0]), 1.0)[0]  # exactly 1"
    assert near_any(np.array([]), np.array([]), np.array([1.0]), np.array([1.0]), 1.0).size == 0


@pytest.mark.parametrize(
    "values, message",
    [
        ([10, 5, 0, 1], "RA_MIN < RA_MAX"),
        ([10, 10, 0, 1], "RA_MIN < RA_MAX"),
        ([-1, 5, 0, 1], "RA_MIN < RA_MAX"),
        ([1, 361, 0, 1], "RA_MIN < RA_MAX"),
        ([1, 2, 3, 3], "DEC_MIN < DEC_MAX"),
        ([1, 2, -91, 3], "DEC_MIN < DEC_MAX"),
        ([1, 2, 0, float("nan")], "finite"),
        ([1, 2, 3], "expected"),
    ],
)
def test_malformed_regions(values, message):
    with pytest.raises(StargalError, match=message):
        splits.parse_region(values, "--exclude-region")


def test_region_contains_half_open_box():
    r = splits.parse_region([10, 20, -5, 5])
    assert r.contains(np.array([10, 19.99, 20, 15]), np.array([0, 0, 0, 5])).tolist() == [True, True, False, False]


def test_field_validation():
    with pytest.raises(StargalError, match="field 80 is listed in both --train-fields and --test-fields"):
        splits.validate_spec(SplitSpec((80, 103), (120,), (80,)))
    with pytest.raises(StargalError, match="twice"):
        splits.validate_spec(SplitSpec((80, 80), (120,), (81,)))
    with pytest.raises(StargalError, match="not among --fields"):
        splits.validate_spec(SplitSpec((80,), (120,), (81,)), available=(80, 81))
    with pytest.raises(StargalError, match="no test field"):
        splits.validate_spec(SplitSpec((80,), (120,), ()))
    splits.validate_spec(SplitSpec((80,), (120,), (), test_regions=(Region(0, 1, 0, 1),)))  # a region is enough


def test_dataset_name_reference_and_hashed():
    ref = SplitSpec.from_fieldset(REFERENCE)
    assert splits.dataset_name(301, 8162, 6, 25, "pad", ref) == "301-8162-6_p25_pad"
    other = SplitSpec((80, 83), (82,), (81,))
    name = splits.dataset_name(301, 8162, 6, 25, "pad", other)
    assert name.startswith("301-8162-6_p25_pad_") and len(name) == len("301-8162-6_p25_pad_") + 8
    assert name == splits.dataset_name(301, 8162, 6, 25, "pad", SplitSpec((83, 80), (82,), (81,)))  # order-free
    with_region = SplitSpec((80, 83), (82,), (81,), exclude_regions=(Region(1, 2, 3, 4),))
    assert splits.dataset_name(301, 8162, 6, 25, "pad", with_region) != name
    assert splits.dataset_name(301, 8162, 6, 21, "drop", ref) == "301-8162-6_p21_drop"
    fs = FieldSet(rerun=301, run=4510, camcol=4, fields=REFERENCE.fields)
    assert splits.dataset_name(301, 4510, 4, 25, "pad", SplitSpec.from_fieldset(fs)).startswith("301-4510-4_p25_pad_")


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 101, "LATEST", "/tmp/abs"])
def test_bad_dataset_names(name):
    with pytest.raises(StargalError, match="--dataset"):
        splits.check_dataset_name(name)


def test_a_model_name_that_is_a_path_or_the_latest_pointer_is_refused_before_training(tmp_path):
    """03_model.py --name names a folder under models/: a path would put the model outside the data folder
    (and --verify would not see it), LATEST would fail only after training, when the pointer's name is taken."""
    import subprocess
    import sys

    from stargal.paths import PROJECT_ROOT

    for name in ("../x", "LATEST", ""):
        run = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "code" / "03_model.py"), "--data-dir", str(tmp_path), "--name", name],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 2 and f"--name {name!r}: use letters, digits" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_test_sets_origin_counts_what_a_test_region_brought_from_other_fields():
    """With --test-region the test set is no longer "field 81": the record says how many of its objects came from
    the test fields and how many the region moved in, per field, after the guard and de-duplication."""
    table, cube_field = strip()
    region = Region(0.0, 360.0, DEC0 - 1, DEC0 + 50 * SCALE_DEG)  # the lower part of field 80
    spec = SplitSpec(train_fields=(80,), val_fields=(82,), test_fields=(81,), test_regions=(region,))
    sel = splits.select(table, cube_field, spec, patch_size=25)
    origin = splits.origin_of_test_set(sel.split, cube_field, spec)
    test = sel.split == TEST
    assert origin["fields"] == np.count_nonzero(test & (cube_field == 81)) > 0
    assert origin["regions"] == np.count_nonzero(test & (cube_field == 80)) > 0
    assert origin["regions_by_field"] == {"80": origin["regions"]}
    assert origin["fields"] + origin["regions"] == np.count_nonzero(test)
    none = splits.origin_of_test_set(splits.select(table, cube_field, SPEC, patch_size=25).split, cube_field, SPEC)
    assert none["regions"] == 0 and none["regions_by_field"] == {}


def test_the_test_set_and_the_exclusions_are_described_with_their_regions_and_counts():
    record = {
        "fields": {"train": [80, 83], "val": [82], "test": [81]},
        "test_regions": [[331.9, 331.95, 26.95, 27.06]],
        "test_origin": {"fields": 82, "regions": 65, "regions_by_field": {"83": 65}},
    }
    assert splits.names_of_test_set(record) == "field 81 and the region RA 331.9 to 331.95, Dec 26.95 to 27.06"
    assert splits.composition_of_test_set(record) == (
        "82 of test field 81 and 65 of training field 83 in the region RA 331.9 to 331.95, Dec 26.95 to 27.06"
    )
    assert splits.composition_of_test_set(record, "it") == "82 of test field 81 and 65 of training field 83 in it"
    # a test set of the region alone, drawing on training and validation fields
    alone = {**record, "fields": {"train": [80, 81, 83], "val": [82], "test": []},
             "test_origin": {"fields": 0, "regions": 70, "regions_by_field": {"81": 5, "82": 3, "83": 62}}}  # fmt: skip
    assert splits.names_of_test_set(alone) == "the region RA 331.9 to 331.95, Dec 26.95 to 27.06"
    assert splits.composition_of_test_set(alone, "it") == (
        "67 of training fields 81 83 and 3 of validation field 82 in it"
    )
    # two regions; a dataset recorded before the origin was
    two = {**record, "test_regions": [[1, 2, -3, 4], [5, 6.5, 7, 8]]}
    assert splits.names_of_test_set(two).endswith("the regions (RA 1 to 2, Dec -3 to 4) and (RA 5 to 6.5, Dec 7 to 8)")
    old = {k: v for k, v in record.items() if k != "test_origin"} | {"moved_to_test_by_region": 66}
    assert (
        splits.composition_of_test_set(old)
        == "66 moved from other fields by the region RA 331.9 to 331.95, Dec 26.95 to 27.06"
    )
    # no region: nothing to add to "field 81"
    assert splits.composition_of_test_set({"fields": record["fields"]}) is None
    assert splits.exclusion_text(record) is None
    excluded = {"exclude_regions": [[10, 11, -80, -79]], "removed": {"exclude_region": 12}}
    assert (
        splits.exclusion_text(excluded)
        == "12 training and validation objects in the region RA 10 to 11, Dec -80 to -79"
    )
