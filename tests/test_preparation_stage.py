"""Stage 02 end to end on synthetic aligned cubes: outputs, row alignment, leakage, normalisation,
edge policy, bad inputs, idempotency, the script; and stage 01 -> 02 on the simulated tiny sky."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.wcs import WCS
from test_splits import COLS, DEC0, ROWS, SCALE_DEG, strip

from stargal import fsio, normalise, splits
from stargal.config import REFERENCE, SPLITS, FieldSet
from stargal.cube import read_cube, write_cube
from stargal.errors import StargalError
from stargal.fsio import read_json, write_json
from stargal.paths import DataPaths, FieldId
from stargal.psf import PSFMap
from stargal.stages.preparation import SPLIT_DTYPE, prepare
from stargal.tables import read_table, write_table

PROJECT = Path(__file__).resolve().parents[1]
FS = FieldSet(
    rerun=301, run=8162, camcol=6, fields=(80, 81, 82), train_fields=(80,), val_fields=(82,), test_fields=(81,)
)
P = 9


def fid(field: int) -> FieldId:
    return FieldId(301, 8162, 6, field)


def write_field_cube(
    paths: DataPaths, field: int, scale: float = 1.0, offset: float = 0.0, seed: int | None = None
) -> None:
    rng = np.random.default_rng(field if seed is None else seed)
    data = rng.normal(0.0, 0.05, (5, ROWS, COLS)).astype(np.float32) * scale + offset
    data[:, 5, 7] = 5000.0  # a saturated star core: must not move the robust statistics
    if field == 82:
        data[0, :, :3] = np.nan  # the u band does not cover the first columns
    meta = {"RERUN": 301, "RUN": 8162, "CAMCOL": 6, "FIELD": field, "SIMULAT": True, "REFBAND": "r"}
    write_cube(paths.cube(fid(field)), data, WCS(naxis=2), "ugriz", meta)
    # a PSF that widens to the right: each patch's PSF must follow its own column
    coefficients = np.tile([2.0, 0.2, 0.0, 0.0], (5, 1))
    write_json(paths.psf_map(fid(field)), PSFMap("ugriz", (ROWS, COLS), coefficients, 10).to_dict())


@pytest.fixture
def synth(tmp_path) -> DataPaths:
    """Three adjacent overlapping fields (80 train, 81 test, 82 val) of aligned cubes and objects tables."""
    paths = DataPaths(tmp_path / "data")
    table, cube_field = strip(fields=(80, 81, 82), per_field=120)
    for f in (80, 81, 82):
        write_field_cube(paths, f)
        write_table(paths.objects(fid(f)), table[cube_field == f])
        seal_field(paths, f)
    return paths


def seal_field(paths: DataPaths, field: int) -> None:
    """The field record stage 01 writes last: stage 02 reads only sealed cubes and objects tables."""
    files = [paths.cube(fid(field)), paths.objects(fid(field)), paths.psf_map(fid(field))]
    rows = len(read_table(files[1]))
    fsio.seal(paths.field_record(fid(field)), files, {"field": str(fid(field)), "ref_band": "r", "objects": rows})


def load(paths: DataPaths, name: str, split: str):
    x = np.load(paths.split_x(name, split), allow_pickle=False)
    y = np.load(paths.split_y(name, split), allow_pickle=False)
    return x, y, read_table(paths.split_objects(name, split), SPLIT_DTYPE)


def written(paths: DataPaths) -> list[Path]:
    stage01 = ("cube-", "objects-", "field-", "psf-")
    return [p for p in paths.root.rglob("*") if p.is_file() and not p.name.startswith(stage01)]


def test_outputs_are_complete_and_rows_aligned(synth):
    summary = prepare(synth, FS, patch_size=P)
    name = summary["name"]
    assert name.startswith("301-8162-6_p9_pad_")
    assert synth.latest_dataset.read_text().strip() == name
    meta = read_json(synth.dataset_json(name))
    assert meta["bands"] == "ugriz" and meta["patch_size"] == P and meta["edge"] == "pad" and meta["simulated"] is True
    assert meta["fields"] == {"train": [80], "val": [82], "test": [81]}
    cubes = {f: read_cube(synth.cube(fid(f)), mmap=False).data for f in (80, 81, 82)}
    h = P // 2
    for split in SPLITS:
        x, y, objects = load(synth, name, split)
        n = len(objects)
        assert n > 20 and x.shape == (n, P, P, 5) and x.dtype == np.float32 and y.shape == (n,) and y.dtype == np.uint8
        np.testing.assert_array_equal(y, objects["label"])
        assert meta["counts"][split] == {"n": n, "stars": int(y.sum()), "galaxies": int(n - y.sum()),
                                         "star_fraction": round(y.sum() / n, 4)}  # fmt: skip
        # row i of the arrays is row i of the CSV: the patch centre is the cube pixel the CSV names
        for f in np.unique(objects["cube_field"]):
            rows = np.flatnonzero(objects["cube_field"] == f)
            centre = cubes[f][:, objects["row"][rows], objects["col"][rows]].T
            np.testing.assert_array_equal(x[rows, h, h, :], np.nan_to_num(centre, nan=0.0))
        assert set(objects["edge_policy"]) == {"pad"}
        assert (np.floor(objects["x"] + 0.5) == objects["col"]).all() and (
            np.floor(objects["y"] + 0.5) == objects["row"]
        ).all()
        assert np.isfinite(x).all()
        # each patch carries the PSF of its cube's map at its own pixel (2.0 px at the centre column)
        psf = np.load(synth.split_psf(name, split))
        assert psf.shape == (n, 5) and psf.dtype == np.float32
        expected = 2.0 + 0.2 * (objects["col"] - (COLS - 1) / 2) / (COLS / 2)
        np.testing.assert_allclose(psf, np.repeat(expected[:, None], 5, 1), rtol=1e-5)
    assert (load(synth, name, "train")[2]["cube_field"] == 80).all()
    assert meta["cube_fields"] == {"train": [80], "val": [82], "test": [81]}
    _, _, val = load(synth, name, "val")
    assert (val["nan_pixels"] > 0).any()  # field 82's u band gap is counted
    # leakage: no source shared between any two splits, no train/val centre within half a patch of test
    both = {s: load(synth, name, s)[2] for s in SPLITS}
    table = np.concatenate([both[s] for s in SPLITS])
    code = np.concatenate([np.full(len(both[s]), i) for i, s in enumerate(SPLITS)])
    for a, b in ((0, 2), (1, 2), (0, 1)):
        assert splits.shared_sources(table, code, a, b) == 0
    for a in (0, 1):
        assert splits.shared_sources(table, code, a, 2, splits.half_patch_arcsec(P)) == 0
    assert meta["removed"]["test_source"] > 5
    report = synth.reports("splits", name)
    assert {p.name for p in report.iterdir()} >= {"splits.md", "splits.json", "splits.png"}
    assert "| test |" in (report / "splits.md").read_text()


def test_normalisation_uses_training_data_only(synth):
    first = prepare(synth, FS, patch_size=P)
    name = first["name"]
    x, _, objects = load(synth, name, "train")
    usable = (objects["edge_padded"] == 0) & (objects["nan_pixels"] == 0)
    center, scale = normalise.robust_stats(x, usable)
    assert first["normalisation"]["center"] == pytest.approx(center.tolist())
    assert first["normalisation"]["scale"] == pytest.approx(scale.tolist())
    assert np.allclose(scale, 0.05, rtol=0.2)  # the noise level, not the saturated 5000
    # val and test data change a lot: the statistics must not move
    for f in (81, 82):
        write_field_cube(synth, f, scale=30.0, offset=7.0)
        seal_field(synth, f)
    second = prepare(synth, FS, patch_size=P, force=True)
    assert second["normalisation"]["center"] == first["normalisation"]["center"]
    assert second["normalisation"]["scale"] == first["normalisation"]["scale"]
    assert load(synth, name, "test")[0].std() > 1  # the test patches did change
    # the training data change: the statistics follow
    write_field_cube(synth, 80, scale=3.0, offset=1.0)
    seal_field(synth, 80)
    third = prepare(synth, FS, patch_size=P)  # new field records (other inputs): rebuilt without --force
    assert third["skipped"] is False
    assert third["normalisation"]["center"][0] == pytest.approx(1.0, abs=0.05)
    assert third["normalisation"]["scale"][0] == pytest.approx(0.15, rel=0.2)


def test_edge_policies(synth):
    pad = prepare(synth, FS, patch_size=P, edge="pad")
    drop = prepare(synth, FS, patch_size=P, edge="drop")
    assert pad["name"] != drop["name"] and "_pad_" in pad["name"] and "_drop_" in drop["name"]
    h = P // 2
    x, _, objects = load(synth, pad["name"], "train")
    padded = objects["edge_padded"] == 1
    assert padded.any() and pad["edge_padded"]["train"] == padded.sum()
    top = np.flatnonzero(objects["row"] < h)
    assert top.size and all((x[i, : h - objects["row"][i]] == 0).all() for i in top)  # rows above the frame
    assert drop["removed"]["edge"] > 0 and pad["removed"]["edge"] == 0
    for split in SPLITS:
        _, _, objects = load(synth, drop["name"], split)
        assert not objects["edge_padded"].any() and set(objects["edge_policy"]) <= {"drop"}
        assert (
            (objects["row"] >= h) & (objects["row"] < ROWS - h) & (objects["col"] >= h) & (objects["col"] < COLS - h)
        ).all()
    assert sum(drop["counts"][s]["n"] for s in SPLITS) < sum(pad["counts"][s]["n"] for s in SPLITS)


@pytest.mark.slow
def test_idempotent_and_force(synth, caplog):
    first = prepare(synth, FS, patch_size=P)
    outputs = sorted(synth.dataset_dir(first["name"]).iterdir())
    mtimes = [p.stat().st_mtime_ns for p in outputs]
    again = prepare(synth, FS, patch_size=P)
    assert again["skipped"] is True and again["name"] == first["name"]
    assert [p.stat().st_mtime_ns for p in outputs] == mtimes
    forced = prepare(synth, FS, patch_size=P, force=True)
    assert forced["skipped"] is False
    # a touched objects table is still the same input; a changed (and resealed) one makes the dataset stale
    later = max(mtimes) / 1e9 + 10
    os.utime(synth.objects(fid(81)), (later, later))
    assert prepare(synth, FS, patch_size=P)["skipped"] is True
    table = read_table(synth.objects(fid(81)))
    write_table(synth.objects(fid(81)), table[:-1])
    seal_field(synth, 81)
    assert prepare(synth, FS, patch_size=P)["skipped"] is False
    # a deleted report is redone
    (synth.reports("splits", first["name"]) / "splits.png").unlink()
    assert prepare(synth, FS, patch_size=P)["skipped"] is False
    # a changed configuration written under the same --dataset name is rebuilt, not skipped
    a = prepare(synth, FS, patch_size=P, name="mine")
    region = splits.Region(0, 360, -90, DEC0 + 20 * SCALE_DEG)
    caplog.clear()
    b = prepare(synth, FS, patch_size=P, name="mine", exclude_regions=[region])
    assert a["skipped"] is False and b["skipped"] is False
    assert "dataset mine: replacing the dataset of that name (splits; --dataset keeps both)" in caplog.text
    assert 0 < b["counts"]["train"]["n"] < a["counts"]["train"]["n"] and b["removed"]["exclude_region"] > 0
    assert read_json(synth.dataset_json("mine"))["exclude_regions"] == [region.as_list()]


def test_a_selection_leaving_a_split_empty_is_an_error(synth):
    everything = splits.Region(0, 360, -90, 90)
    with pytest.raises(StargalError, match="leaves no train and no val objects"):
        prepare(synth, FS, patch_size=P, exclude_regions=[everything])
    assert written(synth) == []


def _stars_only(paths: DataPaths) -> None:
    """The objects tables stage 01 writes beside a star sweep alone (the real 4510-4 has no galaxy sweep)."""
    for f in (80, 81, 82):
        table = read_table(paths.objects(fid(f)))
        write_table(paths.objects(fid(f)), table[table["label"] == 1])
        seal_field(paths, f)


def test_a_split_of_one_class_is_an_error(synth):
    """A star sweep without its galaxy sweep gave a dataset of stars only, on which 03 trained a model that calls
    everything star, with accuracy 1.0 on every split, exit 0, and made it the latest model predict.py uses."""
    _stars_only(synth)
    gal = synth.catalog(301, 8162, 6, "gal")
    with pytest.raises(StargalError, match=rf"^the train split holds \d+ stars and no galaxy: .*; {gal} is not in the "
                       r"data folder, so the objects tables list stars only: fetch it \(00_download.py --run 8162 "
                       r"--camcol 6 --fields 80 81 82"):  # fmt: skip
        prepare(synth, FS, patch_size=P, name="stars")
    assert written(synth) == []


def test_a_galaxy_sweep_added_after_the_alignment_makes_the_field_stale(synth):
    """A field aligned beside the star sweep alone, then the galaxy sweep fetched and 02 run without 01 again: the
    field's table (stars only) went into the test split as it was, 75 % stars instead of 53 %, exit 0."""
    from stargal.stages.alignment import fingerprints

    star, gal = synth.catalog(301, 8162, 6, "star"), synth.catalog(301, 8162, 6, "gal")
    star.parent.mkdir(parents=True)
    star.write_bytes(b"star sweep")
    files = [synth.cube(fid(81)), synth.objects(fid(81)), synth.psf_map(fid(81))]
    record = {"field": str(fid(81)), "ref_band": "r", "inputs": {"frames": {}, "catalogs": fingerprints([star])}}
    fsio.seal(synth.field_record(fid(81)), files, record)
    assert prepare(synth, FS, patch_size=P)["skipped"] is False  # the star sweep alone, as aligned
    gal.write_bytes(b"galaxy sweep")
    with pytest.raises(StargalError, match=rf"^field 301/8162/6/81: {gal.name} changed since stage 01 aligned it .*"
                       r"01_alignment.py --run 8162 --camcol 6 --fields 81 "):  # fmt: skip
        prepare(synth, FS, patch_size=P)


def test_a_field_aligned_without_the_galaxy_sweep_the_others_had_is_refused(synth):
    """The galaxy sweep deleted, then one more field aligned: that field's table listed its stars only, and as the
    test field it gave a test split of 70 % stars instead of 52 %, exit 0 (train and val held both classes)."""
    from stargal.stages.alignment import fingerprints

    star, gal = synth.catalog(301, 8162, 6, "star"), synth.catalog(301, 8162, 6, "gal")
    star.parent.mkdir(parents=True)
    star.write_bytes(b"star sweep")
    gal.write_bytes(b"galaxy sweep")
    for f in (80, 81, 82):
        files = [synth.cube(fid(f)), synth.objects(fid(f)), synth.psf_map(fid(f))]
        catalogs = fingerprints([star] if f == 81 else [star, gal])
        record = {"field": str(fid(f)), "ref_band": "r", "inputs": {"frames": {}, "catalogs": catalogs}}
        fsio.seal(synth.field_record(fid(f)), files, record)
    gal.unlink()
    with pytest.raises(StargalError, match=rf"^field 301/8162/6/81: its objects table was made without {gal.name}, "
                       r"which field\(s\) 80 82 were made with, .*fetch it \(00_download.py --run 8162 --camcol 6 "
                       r"--fields 80 81 82.*\), then 01_alignment.py --run 8162 --camcol 6 --fields 81 "):  # fmt: skip
        prepare(synth, FS, patch_size=P)
    assert written(synth) == [star]


def test_a_test_split_of_one_class_is_named(synth, caplog):
    """A test field whose table lists stars only (train and val hold both classes) was prepared without a word, and
    03 then printed an MCC of 0 and a balanced accuracy for a test set that holds one class."""
    table = read_table(synth.objects(fid(81)))
    write_table(synth.objects(fid(81)), table[table["label"] == 1])
    seal_field(synth, 81)
    summary = prepare(synth, FS, patch_size=P)
    n = summary["counts"]["test"]["n"]
    assert n > 0 and summary["counts"]["test"]["stars"] == n
    assert f"the test split holds {n} stars and no galaxy: its scores measure one class only" in caplog.text
    caplog.clear()
    assert prepare(synth, FS, patch_size=P)["skipped"] is True
    assert f"the test split holds {n} stars and no galaxy" in caplog.text  # and again when it is current


def test_a_one_class_dataset_built_before_is_refused_too(synth, monkeypatch):
    from stargal.stages import preparation

    _stars_only(synth)
    with monkeypatch.context() as m:
        m.setattr(preparation, "require_both_classes", lambda *args: None)
        assert prepare(synth, FS, patch_size=P, name="stars")["counts"]["train"]["galaxies"] == 0
    with pytest.raises(StargalError, match="the train split holds"):
        prepare(synth, FS, patch_size=P, name="stars")


def test_patches_too_large_for_the_memory_are_refused_before_cutting(synth, monkeypatch):
    """`--patch-size 599` on the reference fields would need some 400 GB: one line, not a crash."""
    from stargal.stages import preparation

    monkeypatch.setattr(preparation, "MEMORY_SHARE", 1e-9)  # this machine's memory as if it were a few bytes
    with pytest.raises(StargalError, match=rf"^--patch-size {P}: [\d,]+ patches of {P} x {P} x 5 would take .* GB "
                       "of memory; use a smaller patch size"):  # fmt: skip
        prepare(synth, FS, patch_size=P)
    assert written(synth) == []


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        ("unknown", {}, "unknown field"),
        ("twice", {}, "field 80 is listed in both --train-fields and --test-fields"),
        ("none", {"patch_size": 8}, "positive odd"),
        ("none", {"patch_size": 5}, "smaller than any network takes"),
        ("none", {"patch_size": 121}, "larger than the frame"),
        ("nocube", {}, "aligned cube not found"),
        ("noobjects", {}, "objects table not found"),
        ("none", {"edge": "crop"}, "--edge"),
        ("none", {"name": "../evil"}, "--dataset"),
    ],
)
def test_bad_inputs_raise_and_write_nothing(synth, change, kwargs, message):
    fs = FS
    if change == "unknown":
        fs = FieldSet(301, 8162, 6, (80, 81, 82, 99), (80, 99), (82,), (81,))
    elif change == "twice":
        fs = FieldSet(301, 8162, 6, (80, 81, 82), (80,), (82,), (81, 80))
    elif change == "nocube":
        synth.cube(fid(82)).unlink()
    elif change == "noobjects":
        synth.objects(fid(81)).unlink()
    with pytest.raises(StargalError, match=message):
        prepare(synth, fs, **kwargs)
    assert written(synth) == []


def test_default_splits_outside_the_users_fields_are_named_as_defaults():
    """``02_preparation.py --run 4510 --camcol 4 --fields 30`` said "--train-fields: field 103 is not among
    --fields", a field the user never gave: the message now says it is the reference configuration's default."""
    from stargal import cli

    parser = cli.make_parser("", splits=True, workers=True)
    args = parser.parse_args(["--run", "4510", "--camcol", "4", "--fields", "30"])
    with pytest.raises(StargalError, match=r"^--train-fields: not given, and its default \(the reference "
                       r"configuration's 103 111 147 174 177 214 222\) is not among --fields 30: give"):  # fmt: skip
        cli.check_default_splits(args, cli.field_set(args))
    given = ["--fields", "80", "81", "82", "--train-fields", "80", "--val-fields", "82", "--test-fields", "81"]
    args = parser.parse_args(given)
    cli.check_default_splits(args, cli.field_set(args))  # all given: nothing to say
    args = parser.parse_args([])
    cli.check_default_splits(args, cli.field_set(args))  # the reference configuration itself


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, str(PROJECT / "code" / "02_preparation.py"), *args],
        capture_output=True, text=True, env=env, timeout=120, cwd="/",
    )  # fmt: skip


@pytest.mark.slow
def test_script_prints_name_and_rejects_bad_regions(synth):
    common = ["--data-dir", str(synth.root), "--train-fields", "80", "--val-fields", "82", "--test-fields", "81"]
    bad = run_script(*common, "--test-region", "150.1", "150.0", "10", "10.1")
    assert bad.returncode == 2 and "RA_MIN < RA_MAX" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert written(synth) == []
    ok = run_script(
        *common, "--patch-size", "11", "--edge", "drop", "--exclude-region", "0", "360", "-90", "10.0001", "-q"
    )
    assert ok.returncode == 0, ok.stderr
    name = synth.latest_dataset.read_text().strip()
    assert "dataset prepared in" in ok.stdout and name in ok.stdout and name.startswith("301-8162-6_p11_drop_")
    meta = read_json(synth.dataset_json(name))
    assert meta["exclude_regions"] == [[0.0, 360.0, -90.0, 10.0001]] and meta["removed"]["exclude_region"] > 0
    again = run_script(
        *common, "--patch-size", "11", "--edge", "drop", "--exclude-region", "0", "360", "-90", "10.0001", "-q"
    )
    assert again.returncode == 0 and "already current" in again.stdout


@pytest.mark.slow
def test_tiny_sky_alignment_then_preparation(tiny_data):
    """Stage 01 then stage 02 on the simulated tiny sky (train 80 83, val 82, test 81)."""
    script01 = PROJECT / "code" / "01_alignment.py"
    fields = ["--train-fields", "80", "83", "--val-fields", "82", "--test-fields", "81"]
    one = subprocess.run(
        [sys.executable, str(script01), "--data-dir", str(tiny_data.root), "--fields", "80", "81", "82", "83", "-q"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = run_script("--data-dir", str(tiny_data.root), *fields, "-q")
    assert two.returncode == 0, two.stderr
    name = tiny_data.latest_dataset.read_text().strip()
    meta = read_json(tiny_data.dataset_json(name))
    assert meta["simulated"] is True and meta["removed"]["test_source"] > 0
    parts = {s: load(tiny_data, name, s) for s in SPLITS}
    assert all(len(parts[s][2]) > 0 for s in SPLITS)
    table = np.concatenate([parts[s][2] for s in SPLITS])
    code = np.concatenate([np.full(len(parts[s][2]), i) for i, s in enumerate(SPLITS)])
    for a, b in ((0, 2), (1, 2), (0, 1), (0, 0)):
        if a != b:
            assert splits.shared_sources(table, code, a, b) == 0
    assert np.unique(parts["train"][2]["objid"]).size == len(parts["train"][2])  # 80 and 83 do not overlap, still
    for s in SPLITS:
        x, y, objects = parts[s]
        assert x.shape[1:] == (25, 25, 5) and (y == objects["label"]).all()
    # a touched frame holds the same content: still current; a frame fetched again after the alignment with other
    # content (another sky, say; here the same image compressed otherwise): the cube is stale, and 02 says so
    import bz2
    import os

    frame = tiny_data.frame(FieldId(301, 8162, 6, 82), "g")
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 10**9))
    touched = run_script("--data-dir", str(tiny_data.root), *fields, "-q")
    assert touched.returncode == 0, touched.stderr
    frame.write_bytes(bz2.compress(bz2.decompress(frame.read_bytes()), compresslevel=1))
    again = run_script("--data-dir", str(tiny_data.root), *fields, "-q")
    assert again.returncode == 2, again.stderr
    assert f"field 301/8162/6/82: {frame.name} changed since stage 01 aligned it" in again.stderr
    assert "01_alignment.py --run 8162 --camcol 6 --fields 82 --data-dir" in again.stderr


def test_ks_statistic_matches_scipy():
    from scipy.stats import ks_2samp

    from stargal.stages.preparation import ks_two_sample

    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 500), rng.normal(0.2, 1, 200)
    mine = ks_two_sample(a, b)
    ref = ks_2samp(a, b, method="asymp")
    assert mine["statistic"] == pytest.approx(ref.statistic, abs=1e-4)
    assert mine["pvalue"] == pytest.approx(ref.pvalue, rel=0.3) and mine["pvalue"] < 0.05


def test_test_region_takes_objects_from_training_fields(synth):
    region = splits.Region(0, 360, -90, DEC0 + 40 * SCALE_DEG)  # the lower third of field 80
    summary = prepare(synth, FS, patch_size=P, test_regions=[region])
    assert summary["moved_to_test_by_region"] > 10
    assert summary["cube_fields"]["test"] == [80, 81]
    parts = {s: load(synth, summary["name"], s)[2] for s in SPLITS}
    assert (parts["test"]["dec"][parts["test"]["cube_field"] == 80] < DEC0 + 40 * SCALE_DEG).all()
    assert not (parts["train"]["dec"] < DEC0 + 40 * SCALE_DEG).any()
    table = np.concatenate([parts[s] for s in SPLITS])
    code = np.concatenate([np.full(len(parts[s]), i) for i, s in enumerate(SPLITS)])
    assert splits.shared_sources(table, code, 0, 2, splits.half_patch_arcsec(P)) == 0


def test_a_region_no_object_lies_in_is_named(synth, caplog):
    """A mistyped box (hours for degrees, RA and Dec swapped) changed nothing without a word."""
    empty = splits.Region(10, 11, -80, -79)
    with caplog.at_level("WARNING", logger="stargal"):
        prepare(synth, FS, patch_size=P, exclude_regions=[empty])
    assert "--exclude-region 10 11 -80 -79: no object of the fields lies in it" in caplog.text


def test_verify_names_the_preparation_command_that_rebuilds_a_damaged_dataset(synth):
    """--verify said "02_preparation.py (dataset NAME)": run as printed, 02 prepared the reference's fields."""
    from stargal.integrity import verify_data_folder

    region = splits.Region(0, 360, -90, DEC0 + 40 * SCALE_DEG)
    name = prepare(synth, FS, patch_size=P, test_regions=[region])["name"]
    with open(synth.split_y(name, "train"), "ab") as fh:
        fh.write(b"x")
    redo = {f.path.name: f.redo for f in verify_data_folder(synth)[0]}["train_y.npy"]
    region_words = " ".join(repr(float(v)) for v in region.as_list())
    assert redo == (
        f"02_preparation.py --run {FS.run} --camcol {FS.camcol} --fields 80 81 82 --train-fields "
        f"{' '.join(map(str, FS.train_fields))} --val-fields {' '.join(map(str, FS.val_fields))} --test-fields "
        f"{' '.join(map(str, FS.test_fields))} --patch-size {P} --edge pad --test-region {region_words} --dataset "
        f"{name} --data-dir {synth.root}"
    )


LOWER_80 = splits.Region(0, 360, -90, DEC0 + 40 * SCALE_DEG)  # the lower third of field 80 (no other field's rows)
UPPER_82 = splits.Region(0, 360, DEC0 + 250 * SCALE_DEG, 90)  # the upper part of field 82 (no other field's rows)


def test_the_record_and_splits_md_say_what_a_test_region_moved_and_an_exclude_region_removed(synth):
    """`--test-region` moved 65 objects of training field 83 into a test set then described everywhere as "field 81":
    dataset.json said so only as moved_to_test_by_region, splits.md not at all. Now the record counts the test set's
    origin, and splits.md names the fields, the regions and what they moved or removed."""
    summary = prepare(synth, FS, patch_size=P, test_regions=[LOWER_80], exclude_regions=[UPPER_82])
    test = load(synth, summary["name"], "test")[2]
    origin = read_json(synth.dataset_json(summary["name"]))["test_origin"]
    n81, n80 = int(np.count_nonzero(test["cube_field"] == 81)), int(np.count_nonzero(test["cube_field"] == 80))
    assert origin == {"fields": n81, "regions": n80, "regions_by_field": {"80": n80}} and n80 > 10 and n81 > 10
    removed = summary["removed"]["exclude_region"]
    assert removed > 10
    report = synth.reports("splits", summary["name"])
    text = (report / "splits.md").read_text()
    region = f"RA 0 to 360, Dec -90 to {DEC0 + 40 * SCALE_DEG:.10g}"
    assert "- fields: training 80, validation 82, test 81\n" in text
    assert (
        f"- test set: {len(test)} objects, {n81} of test field 81 and {n80} of training field 80 in the region "
        f"{region} (--test-region)\n" in text
    )
    assert (
        f"- excluded: {removed} training and validation objects in the region RA 0 to 360, Dec "
        f"{DEC0 + 250 * SCALE_DEG:.10g} to 90 (--exclude-region)\n" in text
    )
    assert read_json(report / "splits.json")["splits"]["test_origin"] == origin


def test_a_test_region_no_object_lies_in_is_an_error_and_writes_nothing(synth):
    """It only warned, then wrote a dataset under a name of its own (the region hashed into it) and made it LATEST,
    its test set the test fields alone whatever the command said."""
    with pytest.raises(StargalError, match=r"^--test-region 10 11 -80 -79: no object of fields 80 81 82 lies in it"):
        prepare(synth, FS, patch_size=P, test_regions=[splits.Region(10, 11, -80, -79)])
    assert written(synth) == [] and not synth.latest_dataset.exists()


def test_an_empty_dataset_name_is_refused_not_replaced_by_the_derived_one(synth):
    with pytest.raises(StargalError, match=r"^--dataset '': use letters"):
        prepare(synth, FS, patch_size=P, name="")
    assert written(synth) == []


def _split_args(*argv: str):
    """02's arguments parsed as 02 parses them (its split options and --test-region)."""
    from stargal import cli

    parser = cli.make_parser("", splits=True, workers=True)
    parser.add_argument("--test-region", nargs=4, type=float, action="append", default=[])
    args = parser.parse_args(list(argv))
    fs = cli.field_set(args)
    cli.check_default_splits(args, fs)
    return fs


REGION_ARGS = ("--test-region", "331.9", "331.95", "26.95", "27.06")


@pytest.mark.parametrize(
    "argv, message",
    [
        # the user's own training fields hold the reference's test field 80: it said "--test-fields: field 80 is
        # listed in both --train-fields and --test-fields", an option never given
        (["--train-fields", "80", "83", "--val-fields", "82"], r"is also in --train-fields \(80\): give --test-fields"),
        (["--fields", "80", "81", "82", "83", "--train-fields", "80", "81", "83", "--val-fields", "82"],
         r"is also in --train-fields \(80\): give --test-fields"),
        (["--fields", "81", "82", "83", "--train-fields", "81", "83", "--val-fields", "82"],
         r"is not among --fields 81 82 83: give --test-fields"),
    ],
)  # fmt: skip
def test_a_default_test_field_that_does_not_fit_the_users_splits_is_named_as_the_default(argv, message):
    with pytest.raises(StargalError, match=r"^--test-fields: not given, and its default \(the reference "
                       rf"configuration's 80\) {message} \(or, for a test set of a sky region's objects alone, "
                       r"--test-region\)$"):  # fmt: skip
        _split_args(*argv)


def test_a_default_training_list_holding_the_given_test_field_is_named_as_the_default():
    with pytest.raises(StargalError, match=r"^--train-fields: not given, and its default \(the reference "
                       r"configuration's 103 111 147 174 177 214 222\) is also in --test-fields \(111\): give "
                       r"--train-fields$"):  # fmt: skip
        _split_args("--test-fields", "111")


def test_a_test_region_with_the_users_own_splits_and_no_test_fields_is_the_whole_test_set():
    """`--fields 81 82 83 --train-fields 81 83 --val-fields 82 --test-region ...` demanded --test-fields, though a
    test set of a region alone is valid (validate_spec); with 80 among the fields it was "listed in both"."""
    fs = _split_args("--fields", "81", "82", "83", "--train-fields", "81", "83", "--val-fields", "82", *REGION_ARGS)
    assert (fs.fields, fs.train_fields, fs.val_fields, fs.test_fields) == ((81, 82, 83), (81, 83), (82,), ())
    fs = _split_args("--train-fields", "80", "81", "83", "--val-fields", "82", *REGION_ARGS)
    assert (fs.fields, fs.test_fields) == ((80, 81, 82, 83), ())
    # no split field option: the reference configuration whole, the region adding its objects to field 80's
    assert _split_args(*REGION_ARGS) == _split_args() == REFERENCE
    # one list of the user's: the others keep their reference defaults
    fs = _split_args("--val-fields", "120")
    assert (fs.train_fields, fs.val_fields, fs.test_fields) == (REFERENCE.train_fields, (120,), (80,))


@pytest.mark.slow
def test_script_region_only_test_set_summary_empty_region_and_empty_name(synth):
    common = ["--data-dir", str(synth.root), "--fields", "80", "81", "82", "--val-fields", "82"]
    region = ["--test-region", "0", "360", "-90", repr(DEC0 + 40 * SCALE_DEG)]
    empty = run_script(*common, "--train-fields", "80", "81", "--test-region", "10", "11", "-80", "-79", "-q")
    assert empty.returncode == 2 and empty.stderr.strip().splitlines() == [
        "02_preparation.py: error: --test-region 10 11 -80 -79: no object of fields 80 81 82 lies in it (RA and Dec "
        "in degrees, RA_MIN RA_MAX DEC_MIN DEC_MAX); correct the box or leave it out"
    ]
    nameless = run_script(*common, "--train-fields", "80", "81", *region, "--dataset", "")
    assert nameless.returncode == 2 and len(nameless.stderr.strip().splitlines()) == 1
    assert "--dataset '': use letters" in nameless.stderr
    assert not synth.latest_dataset.exists() and not synth.datasets_root.exists()
    ok = run_script(*common, "--train-fields", "80", "81", *region, "-q")
    assert ok.returncode == 0, ok.stderr
    meta = read_json(synth.dataset_json(synth.latest_dataset.read_text().strip()))
    assert meta["fields"] == {"train": [80, 81], "val": [82], "test": []}
    n = meta["counts"]["test"]["n"]
    assert n > 10 and meta["test_origin"] == {"fields": 0, "regions": n, "regions_by_field": {"80": n}}
    assert "fields: training 80 81, validation 82, test none\n" in ok.stdout
    assert (
        f"test set: {n} objects, {n} of training field 80 in the region RA 0 to 360, Dec -90 to "
        f"{DEC0 + 40 * SCALE_DEG:.10g} (--test-region)\n" in ok.stdout
    )


def _tree(paths: DataPaths) -> set[Path]:
    return set(paths.root.rglob("*")) - {paths.root / ".lock", paths.root / ".publish.lock"}


@pytest.mark.parametrize(
    "blocker, kind",
    [
        ("reports/splits/mine", "file"),  # the reported defect: "File exists", and an empty datasets/mine left
        ("datasets/mine", "file"),
        ("datasets", "file"),
        ("reports", "file"),
        ("datasets/LATEST", "folder"),
        ("datasets/mine/train_x.npy", "folder"),
        ("reports/splits/mine/splits.json", "folder"),
    ],
)
def test_a_file_where_an_output_folder_goes_is_refused_before_anything_is_written(synth, blocker, kind):
    """`reports/splits/NAME` a file: 02 cut every patch, then failed with "File exists" (exit 1), leaving an empty
    datasets/NAME/ behind. Now one line naming the path, before any work, and nothing written."""
    place = synth.root / blocker
    place.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file":
        place.write_text("in the way\n")
    else:
        place.mkdir()
    before = _tree(synth)
    what = "a file, not a folder" if kind == "file" else "a folder, not a file"
    with pytest.raises(StargalError, match=rf"^{place}: {what}: stage 02 writes "):
        prepare(synth, FS, patch_size=P, name="mine")
    assert _tree(synth) == before


def test_a_failed_write_leaves_no_folder_behind_and_the_previous_dataset_and_report_whole(synth, monkeypatch):
    """The split report was written file by file beside the dataset's output set: a failure in between left an
    empty datasets/NAME/ and a splits.md of splits that were never made; a dataset committed after a report of
    other splits had been written would have been served with it."""
    from stargal.plots import splits as split_plots

    def full_disk(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    before = _tree(synth)
    with monkeypatch.context() as m:
        m.setattr(split_plots, "plot_splits", full_disk)
        with pytest.raises(OSError, match="No space left"):
            prepare(synth, FS, patch_size=P, name="mine")
    assert _tree(synth) == before  # no datasets/mine/, no reports/splits/mine/, no splits.md

    first = prepare(synth, FS, patch_size=P, name="mine")
    report = synth.reports("splits", "mine")
    kept = {p: p.read_bytes() for p in _tree(synth) if p.is_file()}
    region = splits.Region(0, 360, -90, DEC0 + 20 * SCALE_DEG)
    with monkeypatch.context() as m:
        m.setattr(split_plots, "plot_splits", full_disk)
        with pytest.raises(OSError, match="No space left"):
            prepare(synth, FS, patch_size=P, name="mine", exclude_regions=[region])  # another dataset of that name
    assert {p: p.read_bytes() for p in _tree(synth) if p.is_file()} == kept
    assert fsio.check_seal(report / "splits.json", [report / "splits.md", report / "splits.png"]).ok
    again = prepare(synth, FS, patch_size=P, name="mine")
    assert again["skipped"] is True and again["counts"] == first["counts"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "broken link"])
def test_script_refuses_a_file_named_like_the_split_report_folder_in_one_line(synth, kind):
    """A broken link passed the output-place check (``exists()`` is False for it): 02 cut every patch, then failed
    with "File exists" (exit 1)."""
    blocker = synth.reports("splits", "mine")
    blocker.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file":
        blocker.write_text("a file\n")
    else:
        blocker.symlink_to(synth.root / "nowhere")
    what = "a file" if kind == "file" else f"a broken symbolic link (to {synth.root / 'nowhere'})"
    before = _tree(synth)
    done = run_script("--data-dir", str(synth.root), "--fields", "80", "81", "82", "--train-fields", "80",
                      "--val-fields", "82", "--test-fields", "81", "--patch-size", str(P), "--dataset", "mine", "-q")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"02_preparation.py: error: {blocker}: {what}, not a folder: stage 02 writes the split report of dataset mine "
        "there; move or delete it, or give another --dataset"
    ]
    assert _tree(synth) == before and not (synth.root / "datasets").exists()


def test_a_split_report_left_from_another_build_is_not_taken_for_the_datasets(synth, monkeypatch):
    """A rebuild under the same name stopped after the dataset's commit and before its report's left the earlier
    splits' report, intact, beside the new dataset: the next run took both as current and showed the old report."""
    from stargal.stages import preparation

    prepare(synth, FS, patch_size=P, name="mine")
    region = splits.Region(0, 360, -90, DEC0 + 20 * SCALE_DEG)
    real = preparation.fsio.seal_digest

    def stop_after_the_dataset(record):
        if record.get("exclude_regions"):  # the new dataset's record, just committed: stop before the report's
            raise KeyboardInterrupt
        return real(record)

    with monkeypatch.context() as m:
        m.setattr(preparation.fsio, "seal_digest", stop_after_the_dataset)
        with pytest.raises(KeyboardInterrupt):
            prepare(synth, FS, patch_size=P, name="mine", exclude_regions=[region])
    dataset = read_json(synth.dataset_json("mine"))
    assert dataset["exclude_regions"] == [region.as_list()]  # the new dataset, with the earlier report beside it
    rerun = prepare(synth, FS, patch_size=P, name="mine", exclude_regions=[region])
    assert rerun["skipped"] is False
    report = read_json(synth.reports("splits", "mine", "splits.json"))
    assert report["counts"] == rerun["counts"] and report["dataset_id"] == fsio.seal_digest(rerun)
    assert prepare(synth, FS, patch_size=P, name="mine", exclude_regions=[region])["skipped"] is True


def test_a_broken_link_where_an_output_folder_goes_is_refused_in_one_line(synth):
    """A link to nothing where 02 makes a folder passed the output-place check (``exists()`` is False for it). Now
    one line naming the link, and nothing written (the script's own line: the test above)."""
    for blocker in ("datasets", "datasets/mine"):
        place = synth.root / blocker
        place.parent.mkdir(parents=True, exist_ok=True)
        place.symlink_to(synth.root / "nowhere")
        before = _tree(synth)
        with pytest.raises(StargalError, match=rf"^{place}: a broken symbolic link \(to .*nowhere\), not a folder: "):
            prepare(synth, FS, patch_size=P, name="mine")
        assert _tree(synth) == before
        place.unlink()


def test_an_object_listed_as_star_and_galaxy_is_refused_even_when_a_dataset_was_cut_before(synth, monkeypatch):
    """An objects table listing one objid as a galaxy and as a star (a table made before stage 01 dropped objects
    in both sweeps): the de-duplication kept the galaxy row, a label chosen by row order, exit 0; and a dataset cut
    from such a table before the check existed was taken as current."""
    from stargal.stages import preparation

    table = read_table(synth.objects(fid(80)))
    twin = table[:1].copy()
    twin["label"] = 1 - twin["label"]
    write_table(synth.objects(fid(80)), np.concatenate([table, twin]))
    seal_field(synth, 80)
    with monkeypatch.context() as m:  # the dataset an earlier version cut from this table
        m.setattr(preparation, "_check_one_label_per_object", lambda *args: None, raising=False)
        name = prepare(synth, FS, patch_size=P)["name"]
    before = {p: p.read_bytes() for p in written(synth)}
    with pytest.raises(StargalError, match=rf"^{synth.objects(fid(80))}: object {twin['objid'][0]} is listed both as "
                       r"a star and as a galaxy .*1 such object\(s\) in all; 01_alignment.py --run 8162 --camcol 6 "
                       r"--fields 80 .*--force"):  # fmt: skip
        prepare(synth, FS, patch_size=P)
    assert {p: p.read_bytes() for p in written(synth)} == before  # nothing rewritten
    assert synth.dataset_dir(name).exists()


def test_a_sweep_replaced_after_the_alignment_names_every_stale_field_in_one_command(synth):
    """The star sweep fetched again after stage 01: every field of the camcol is stale, but the error's command
    realigned the first field only, so following it met the same refusal for the next field, one at a time."""
    from stargal.stages.alignment import fingerprints

    star = synth.catalog(301, 8162, 6, "star")
    star.parent.mkdir(parents=True)
    star.write_bytes(b"star sweep")
    for f in (80, 81, 82):
        files = [synth.cube(fid(f)), synth.objects(fid(f)), synth.psf_map(fid(f))]
        record = {"field": str(fid(f)), "ref_band": "r", "inputs": {"frames": {}, "catalogs": fingerprints([star])}}
        fsio.seal(synth.field_record(fid(f)), files, record)
    star.write_bytes(b"the star sweep, fetched again")
    with pytest.raises(StargalError, match=rf"^field 301/8162/6/80 \(and fields 81 82\): {star.name} changed since "
                       r"stage 01 aligned it .*: 01_alignment.py --run 8162 --camcol 6 --fields 80 81 82 "):  # fmt: skip
        prepare(synth, FS, patch_size=P)
    assert written(synth) == [star]  # the sweep alone: nothing of stage 02


def test_a_frame_replaced_by_one_of_its_size_and_time_after_the_alignment_is_refused(synth):
    """A frame replaced by another version of the same size and modification time (``cp -p``): stage 02 judged it
    by size and time and cut patches from the cube of the old pixels, exit 0. Its file stamp (ctime) changed, so its
    content is read and found changed, as stage 01 does."""
    import os

    from stargal.stages.alignment import input_record

    frame = synth.frame(fid(80), "g")
    frame.parent.mkdir(parents=True, exist_ok=True)
    frame.write_bytes(b"the g frame stage 01 aligned")
    files = [synth.cube(fid(80)), synth.objects(fid(80)), synth.psf_map(fid(80))]
    record = {"field": str(fid(80)), "ref_band": "r", "inputs": input_record([frame], [])}
    fsio.seal(synth.field_record(fid(80)), files, record)
    st = frame.stat()
    frame.write_bytes(b"the g frame from elsewhere!!")
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert frame.stat().st_size == st.st_size
    with pytest.raises(StargalError, match=rf"^field 301/8162/6/80: {frame.name} changed since stage 01 aligned it"):
        prepare(synth, FS, patch_size=P)


def test_a_sweep_replaced_by_one_of_its_size_and_time_after_the_alignment_is_refused(synth):
    """A sweep replaced by another of the same size and modification time (``cp -p``, ``touch -r``): stage 02 judged
    it by size and time and cut patches labelled by the old sweep's objects, exit 0. Its stamp (ctime) changed, so its
    content is read and found changed, as for a frame; a record of before sweeps had digests is trusted on times."""
    from stargal.stages.alignment import input_record
    from stargal.stages.preparation import _changed_since_alignment

    star = synth.catalog(301, 8162, 6, "star")
    star.parent.mkdir(parents=True)
    star.write_bytes(b"the star sweep stage 01 listed")
    files = [synth.cube(fid(80)), synth.objects(fid(80)), synth.psf_map(fid(80))]
    inputs = input_record([], [star])
    old = {k: v for k, v in inputs.items() if not k.startswith("catalogs_")}
    st = star.stat()
    star.write_bytes(b"a star sweep from elsewhere!!!")
    os.utime(star, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert star.stat().st_size == st.st_size
    assert _changed_since_alignment(synth, fid(80), {"inputs": old}) == []  # as before: size and time
    fsio.seal(synth.field_record(fid(80)), files, {"field": str(fid(80)), "ref_band": "r", "inputs": inputs})
    with pytest.raises(StargalError, match=rf"^field 301/8162/6/80: {star.name} changed since stage 01 aligned it"):
        prepare(synth, FS, patch_size=P)
