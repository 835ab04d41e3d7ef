"""The pretrained model shipped in models/: present, small, described, and classifying simulated and real fields."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from stargal.config import BANDS, SIMULATION_VERSION
from stargal.cube import read_cube
from stargal.errors import StargalError
from stargal.fsio import read_json
from stargal.integrity import require_model
from stargal.paths import PRETRAINED, PRETRAINED_MODEL_DIR, DataPaths, FieldId, ModelFiles
from stargal.predict import classify
from stargal.psf import PSFMap
from stargal.stages.predict import load_bundle, resolve_model_dir
from stargal.tables import read_table

FILES = ModelFiles(PRETRAINED_MODEL_DIR)
PROJECT = Path(__file__).resolve().parents[1]


def test_pretrained_model_is_shipped_small_and_described():
    assert FILES.keras.is_file() and FILES.json.is_file()
    size = sum(p.stat().st_size for p in PRETRAINED_MODEL_DIR.iterdir())
    assert size < 5e6
    meta = require_model(PRETRAINED_MODEL_DIR)  # sealed: every file matches its record
    assert meta["name"] == PRETRAINED_MODEL_DIR.name == "stargal-pretrained"
    assert meta["architecture"] == "stargal" and meta["model_inputs"] == ["patch", "psf"] and meta["simulated"] is True
    card = read_json(PRETRAINED_MODEL_DIR / "card.json")
    assert card["simulation_version"] == SIMULATION_VERSION  # trained on the sky this code simulates
    assert (PRETRAINED_MODEL_DIR.parent / "README.md").is_file()
    trained = meta["psf_range"]  # the PSF sizes it has seen, which predict.py checks every field against
    assert trained["bands"] == "".join(BANDS) and all(
        0 < lo < hi < 5 for lo, hi in zip(trained["low"], trained["high"], strict=True)
    )


def _build_script():
    """bench/train_pretrained.py as a module (benches are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_pretrained", PROJECT / "bench" / "train_pretrained.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_model_card_is_what_the_build_script_writes_from_the_card_data():
    bench = _build_script()
    card, meta = read_json(PRETRAINED_MODEL_DIR / "card.json"), read_json(FILES.json)
    # no hand edits, no stale text: models/README.md is generated from the shipped model's own records
    assert (PRETRAINED_MODEL_DIR.parent / "README.md").read_text() == bench.model_card(card, meta)


def test_model_card_takes_the_faint_star_recall_from_the_real_sky_record():
    bench = _build_script()
    bins = [{"bin": "< 21", "fraction": 1.0}, {"bin": ">= 22", "fraction": 0.8}]
    catalog = {"recall": {"by_r": bins}, "recall_detected": {"by_r": [{"bin": ">= 22", "fraction": 0.9}]}}
    record = {"fields": [{"label": "1035-6-17"}, {"label": "4510-4-30", "catalog": catalog}]}
    assert bench.faint_recall(record) == {"field": "4510-4-30", "all": 0.8, "detected": 0.9}
    assert bench.faint_recall({"fields": [{"label": "1035-6-17"}]}) is None
    text = "\n".join(bench._faint_stars_bullet({"real_sky": {"faint_recall": bench.faint_recall(record)}}))
    assert "80 % of 4510-4-30's" in text and "90 % of those the detection finds" in text


def test_resolves_as_pretrained_and_as_the_default(tmp_path):
    paths = DataPaths(tmp_path / "data")  # no model trained here
    assert resolve_model_dir(paths, PRETRAINED) == PRETRAINED_MODEL_DIR
    assert resolve_model_dir(paths, None) == PRETRAINED_MODEL_DIR


def test_a_data_folder_with_models_but_no_latest_is_refused_not_served_by_the_pretrained_model(tmp_path):
    """A training stopped before it named its model latest left models/NAME but no LATEST: predict.py said "no model
    trained" and served the shipped model's classes, exit 0. Temporary folders (dot names) are no model."""
    paths = DataPaths(tmp_path / "data")
    (paths.models_root / ".half.part").mkdir(parents=True)
    assert resolve_model_dir(paths, None) == PRETRAINED_MODEL_DIR
    paths.model_dir("mine").mkdir()
    paths.model("mine").keras.write_bytes(b"a network")
    with pytest.raises(StargalError, match=r"LATEST: missing, yet .*models holds mine .*--model pretrained"):
        resolve_model_dir(paths, None)
    assert resolve_model_dir(paths, PRETRAINED) == PRETRAINED_MODEL_DIR


def test_model_card_marks_networks_alone_evaluated_by_an_earlier_real_sky_format():
    """--refresh-real-sky evaluates the shipped ensemble again; its networks alone, whose folders are not shipped,
    keep their figures, and the card says those come from an earlier evaluation."""
    bench = _build_script()
    table = {"title": "Catalog stars", "columns": ["field", "recall"], "rows": [["4510-4-30", "94.4 %"]]}
    card = {"real_sky": {"format": 13}, "members": [{"seed": 42, "real_sky_catalog": [table]}]}
    for member_format, noted in ((13, False), ("before 13", True)):
        card["members"][0]["real_sky_format"] = member_format
        text = "\n".join(bench._members_real_sky(card))
        assert "| seed 42 alone, 4510-4-30 | 94.4 % |" in text
        assert ("an earlier version of the evaluation" in text) == noted, member_format
    assert "(format before 13; the ensemble's tables above: 13)" in text


@pytest.mark.slow
def test_pretrained_model_classifies_a_simulated_field(tiny_data):
    from stargal.stages.alignment import run_alignment

    run_alignment(tiny_data, TINY, workers=1, reports=False)
    bundle = load_bundle(PRETRAINED_MODEL_DIR)
    fast = load_bundle(PRETRAINED_MODEL_DIR, "auto")  # what predict.py runs: ONNX Runtime
    assert (bundle.engine, fast.engine) == ("keras", "onnx")
    right, total = 0, 0
    for field in TINY.fields:
        fid = FieldId(TINY.rerun, TINY.run, TINY.camcol, field)
        cube = read_cube(tiny_data.cube(fid))
        objects = read_table(tiny_data.objects(fid))
        bright = objects["r_psfmag"] < 21
        preds = [
            classify(
                b.model,
                np.asarray(cube.data, np.float32),
                cube.wcs,
                objects["ra"],
                objects["dec"],
                patch_size=b.patch_size,
                edge=b.edge,
                threshold=b.threshold,
                tta="auto",
                psf_map=PSFMap.from_dict(read_json(tiny_data.psf_map(fid))),
            )
            for b in (bundle, fast)
        ]
        pred = preds[0]
        np.testing.assert_array_equal(preds[1].status, pred.status)
        np.testing.assert_allclose(preds[1].p_star, pred.p_star, atol=2e-5)  # every object, edges included
        assert np.mean(preds[1].label == pred.label) >= 0.998
        ok = (pred.status == "ok") & bright
        right += int(((pred.label[ok] == "star") == (objects["label"][ok] == 1)).sum())
        total += int(ok.sum())
    assert total >= 30
    assert right / total >= 0.9

    # predict.py on the ONNX engine never starts TensorFlow (its start-up is seconds and half a gigabyte)
    out = tiny_data.predictions_dir / "p.csv"
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['predict.py', '--data-dir', {str(tiny_data.root)!r}, '--field', '81', '--all', "
        f"'--model', 'pretrained', '--engine', 'onnx', '-q', '--out', {str(out)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(PROJECT / 'code' / 'predict.py')!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"
    assert len(out.read_text().splitlines()) > 30


@pytest.mark.slow
def test_predict_says_when_the_fields_psf_is_outside_what_the_model_was_trained_on(tiny_data, caplog):
    from dataclasses import replace

    from stargal.errors import StargalError
    from stargal.predict_io import read_predictions
    from stargal.stages.alignment import run_alignment
    from stargal.stages.predict import run_predict

    fid = FieldId(TINY.rerun, TINY.run, TINY.camcol, 81)
    run_alignment(tiny_data, TINY, workers=1, reports=False)
    centre = PSFMap.from_dict(read_json(tiny_data.psf_map(fid))).centre()
    shipped = load_bundle(PRETRAINED_MODEL_DIR, "auto")

    def run(psf_range):
        bundle = replace(shipped, meta={**shipped.meta, "psf_range": psf_range})
        out = tiny_data.predictions_dir / "p.ecsv"
        caplog.clear()
        _, pred = run_predict(tiny_data, fid=fid, all_objects=True, bundle=bundle, out=str(out), tta="off")
        return read_predictions(out).meta.get("PSFRANGE"), pred

    inside = {"bands": shipped.bands, "low": list(centre * 0.9), "high": list(centre * 1.1)}
    note, pred = run(inside)
    assert note == "inside" and "outside the sizes" not in caplog.text
    # a field in worse seeing in r than the model saw: still classified, with a warning and the note in the file
    worse = {**inside, "low": list(centre * 0.5), "high": [*centre[:2] * 1.1, centre[2] * 0.8, *centre[3:] * 1.1]}
    note, again = run(worse)
    assert note == f"outside: r {centre[2]:.2f} px > {centre[2] * 0.8:.2f}"
    assert "outside the sizes stargal-pretrained was trained on (r " in caplog.text
    np.testing.assert_array_equal(again.label, pred.label)
    assert run(None)[0] == "not recorded"  # a model from before the range was recorded
    with pytest.raises(StargalError, match=r"model\.json: psf_range malformed"):
        run({"bands": shipped.bands, "low": [1.0]})


def read_table_csv(path: Path) -> dict:
    rows = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    return {name: rows[name] for name in rows.dtype.names}


def _sample_of(tmp_path, frames: dict, *catalogs):
    """A folder laid out like ../shared/sdss-sample: one field's files, and its camcol's sweeps in a folder of
    their own (as SAS keeps them; the real sample has its star sweep beside the frames)."""
    sample = tmp_path / "sample"
    (sample / "sweeps").mkdir(parents=True)
    for path in frames.values():
        (sample / Path(path).name).symlink_to(path)
    for path in catalogs:
        (sample / "sweeps" / Path(path).name).symlink_to(path)
    return sample


def _tables_are_whole(result: dict) -> None:
    for table in result["tables"]:
        assert all(len(row) == len(table["columns"]) for row in table["rows"]), table["title"]


@pytest.mark.slow
def test_real_sky_evaluation_runs_on_a_simulated_field(tiny_sky, tiny_data, tmp_path, monkeypatch):
    from stargal import detection
    from stargal.stages.realsky import FIGURES, run_real_sky

    fid = FieldId(TINY.rerun, TINY.run, TINY.camcol, 81)
    sample = _sample_of(
        tmp_path,
        {b: tiny_sky.frame(fid, b) for b in BANDS},  # no irg jpeg: a picture for people, not needed here
        *(tiny_sky.catalog(fid.rerun, fid.run, fid.camcol, kind) for kind in ("star", "gal")),
    )
    # evaluated from a data folder that holds a simulated sky with a field of the same name: the sample's
    # field is prepared in data/real, and the data folder's own files stay as they were
    paths = tiny_data
    before = [(st.st_ino, st.st_mtime_ns) for st in (paths.frame(fid, b).stat() for b in BANDS)]
    out = tmp_path / "real_sky"
    result = run_real_sky(paths, sample, model=PRETRAINED, out=out)
    assert [(st.st_ino, st.st_mtime_ns) for st in (paths.frame(fid, b).stat() for b in BANDS)] == before
    assert not paths.manifest.exists() and not paths.cube(fid).exists()
    assert paths.real_fields.cube(fid).is_file() and paths.real_fields.root == paths.root / "real"
    # --verify covers data/real and names what prepares it again
    from stargal.integrity import verify_data_folder

    assert verify_data_folder(paths)[0] == []
    cube = paths.real_fields.cube(fid)
    cube.write_bytes(cube.read_bytes()[:-2880])
    findings = verify_data_folder(paths)[0]
    assert [(f.path, f.redo) for f in findings] == [(cube, "real_sky.py (prepares the real fields again)")]
    assert not result["skipped"] and [f["label"] for f in result["fields"]] == ["8162-6-81"]
    _tables_are_whole(result)
    for name in ("real_sky.json", "real_sky.md", *FIGURES, "sources-8162-6-81.csv"):
        assert (out / name).is_file(), name
    field = result["fields"][0]
    catalog = field["catalog"]
    # simulated catalog stars are recognised, and bright sources away from them (galaxies) are not called stars
    assert catalog["recall"]["overall"]["n"] >= 15 and catalog["recall"]["overall"]["fraction"] >= 0.8
    assert catalog["bright_non_catalog"]["n"] >= 4 and catalog["bright_non_catalog"]["fraction"] <= 0.25
    assert catalog["two_sided"]["mcc"] >= 0.6
    # the fuller check's negatives are the bright non-catalog sources and those with r 21-22, no others
    fuller, faint = catalog["two_sided_to_complete"], catalog["faint_non_catalog"]
    assert fuller["non_catalog_called_star"]["n"] == catalog["bright_non_catalog"]["n"] + faint["n"]
    assert fuller["star_recall"] == catalog["two_sided"]["star_recall"] and fuller["mcc"] >= 0.5
    # down to the sweep's limit, the non-catalog sources at r 22-22.5 are negatives as well
    fullest, fainter = catalog["two_sided_to_limit"], catalog["fainter_non_catalog"]
    assert fainter["n"] >= 1 and fainter["r_range"] == [22.0, 22.5]
    assert fullest["non_catalog_called_star"]["n"] == fuller["non_catalog_called_star"]["n"] + fainter["n"]
    assert fullest["star_recall"] == catalog["two_sided"]["star_recall"]
    # few bright sources in a 400 x 600 frame: the locus test's power is checked on a full-size field
    # (test_realsky.py); here it must run and find the called stars mostly on the locus
    assert field["locus"]["called_star"]["n"] >= 3 and field["locus"]["called_star"]["fraction"] >= 0.5
    # with both sweeps, the labelled check scores every object they list under the field against its sweep
    from stargal import sdss

    listed = {
        kind: int(np.sum(sdss.read_catalog(tiny_sky.catalog(fid.rerun, fid.run, fid.camcol, kind))["FIELD"] == 81))
        for kind in ("star", "gal")
    }
    labelled = field["labelled"]
    assert labelled["objects_listed"] == listed["star"] + listed["gal"] and listed["gal"] >= 10
    overall = labelled["overall"]
    assert overall["n"] == labelled["objects_classified"] and overall["stars"] == catalog["recall"]["overall"]["n"]
    (_, _), (_, stars_called_star) = overall["confusion_matrix"]
    assert stars_called_star == catalog["recall"]["overall"]["k"]  # the same stars, classified the same way
    assert overall["accuracy"] >= 0.85 and overall["mcc"] >= 0.6
    assert sum(e["accuracy"]["n"] for e in labelled["by_r"]) == overall["n"]
    assert sum(q["n"] for q in labelled["accuracy_by_quadrant"]) == overall["n"]
    assert any(t["title"].startswith("Labelled check") for t in result["tables"])
    assert "Labelled check" in (out / "real_sky.md").read_text()
    assert (out / "labelled.png").is_file() and "labelled.png" in [f["file"] for f in result["figures"]]
    fine_stars = sum(e["stars_called_star"]["n"] for e in labelled["by_r_fine"])
    no_r = next((e["stars_called_star"]["n"] for e in labelled["by_r"] if e["bin"] == "no r flux"), 0)
    assert fine_stars + no_r == overall["stars"]
    # every object listed is in labelled-FIELD.csv, and the check recomputed from it is the record's
    import csv

    with open(out / "labelled-8162-6-81.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == labelled["objects_listed"] and {r["field"] for r in rows} == {"81"}
    scored = [r for r in rows if r["status"] == "ok"]
    assert len(scored) == overall["n"]
    assert [[sum(1 for r in scored if (r["catalog_type"], r["label"]) == (t, c)) for c in ("galaxy", "star")]
            for t in ("galaxy", "star")] == overall["confusion_matrix"]  # fmt: skip
    assert all((float(r["p_star"]) >= result["threshold"]) == (r["label"] == "star") for r in scored)
    again = run_real_sky(paths, sample, model=PRETRAINED, out=out)
    assert again["skipped"]
    # the detection is part of what makes the record current: found with other settings, it is redone
    monkeypatch.setattr(detection, "FAINT_SNR", detection.FAINT_SNR + 1.0)
    redone = run_real_sky(paths, sample, model=PRETRAINED, out=out)
    assert not redone["skipped"] and redone["fields"][0]["sources"] <= field["sources"]


@pytest.mark.slow
def test_real_sky_outputs_are_one_sealed_set_that_a_failing_field_leaves_as_it_was(tiny_sky, tiny_data, tmp_path):
    """The per-field source tables are sealed with the report: a damaged one is not served as current, and a run
    that fails on a later field leaves the previous outputs whole, without tables of its own beside them."""
    from stargal.stages.realsky import run_real_sky

    good = FieldId(TINY.rerun, TINY.run, TINY.camcol, 81)
    sample = _sample_of(tmp_path, {b: tiny_sky.frame(good, b) for b in BANDS})
    out = tmp_path / "real_sky"
    first = run_real_sky(tiny_data, sample, model=PRETRAINED, out=out)
    table = out / "sources-8162-6-81.csv"
    assert "sources-8162-6-81.csv" in first["integrity"]["files"]
    whole = table.read_bytes()
    table.write_text("x,y\n")
    again = run_real_sky(tiny_data, sample, model=PRETRAINED, out=out)
    assert not again["skipped"] and table.read_bytes() == whole
    # a second field whose i frame is cut short: the run fails there, after the first field's table is made
    broken = FieldId(TINY.rerun, TINY.run, TINY.camcol, 82)
    for b in BANDS:
        frame = tiny_sky.frame(broken, b)
        if b == "i":
            (sample / frame.name).write_bytes(frame.read_bytes()[:5000])
        else:
            (sample / frame.name).symlink_to(frame)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(StargalError):
        run_real_sky(tiny_data, sample, model=PRETRAINED, out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.real
@pytest.mark.slow
def test_real_sky_evaluation_on_real_frames(sample_dir, tmp_path):
    from stargal.stages.realsky import run_real_sky

    # the field with a real star catalog and one high-latitude field without one: both checks on real frames
    sample = tmp_path / "sample"
    sample.mkdir()
    for folder in ("004510-4-0030", "007264-3-0111"):
        (sample / folder).symlink_to(sample_dir / folder)
    if not (sample / "007264-3-0111").is_dir():
        pytest.skip("the sample lacks field 7264-3-111")
    result = run_real_sky(DataPaths(tmp_path / "data"), sample, model=PRETRAINED, out=tmp_path / "real_sky")
    _tables_are_whole(result)
    by_label = {f["label"]: f for f in result["fields"]}
    assert set(by_label) == {"4510-4-30", "7264-3-111"}
    catalog = by_label["4510-4-30"]["catalog"]
    assert "labelled" not in by_label["4510-4-30"]  # its folder holds the star sweep alone
    assert not (tmp_path / "real_sky" / "labelled.png").exists()
    assert catalog["recall"]["overall"]["n"] >= 150  # the real sweep's stars inside the frame
    # the shipped model's measured quality on this field (models/README.md), with room for run-to-run noise
    assert catalog["recall"]["by_r"][0]["fraction"] >= 0.95  # r < 21
    assert catalog["bright_non_catalog"]["fraction"] <= 0.1
    assert catalog["two_sided"]["mcc"] >= 0.65
    # the sweep is complete to r = 22 (128 non-catalog sources at r 21-22, 9 called star): with them as negatives
    # too, the MCC is 0.882
    faint = catalog["faint_non_catalog"]
    assert faint["n"] >= 100 and faint["fraction"] <= 0.12
    assert (
        catalog["two_sided_to_complete"]["non_catalog_called_star"]["n"]
        == catalog["bright_non_catalog"]["n"] + faint["n"]
    )
    assert catalog["two_sided_to_complete"]["mcc"] >= 0.75
    # and down to the sweep's own limit, r 22.5 (116 more non-catalog sources, 17 called star): MCC 0.828
    fainter, fullest = catalog["fainter_non_catalog"], catalog["two_sided_to_limit"]
    assert fainter["n"] >= 100 and fainter["fraction"] <= 0.25
    assert fullest["non_catalog_called_star"]["n"] == (
        catalog["two_sided_to_complete"]["non_catalog_called_star"]["n"] + fainter["n"]
    )
    assert fullest["mcc"] >= 0.75
    # counted apart: the deblended bright sources (7 of 71) and the isolated ones, of which 1 is called star
    bright = catalog["bright_non_catalog"]
    assert bright["isolated"]["n"] + bright["deblended"]["n"] == bright["n"] and 3 <= bright["deblended"]["n"] <= 15
    assert bright["isolated"]["fraction"] <= 0.05
    # the detection reaches SDSS's depth: it finds 127 of the catalog's stars (the bright detection alone, 106);
    # the shipped model recognises 95 % of those
    detected = catalog["recall_detected"]["overall"]
    assert detected["n"] >= 120 and detected["fraction"] >= 0.9
    assert by_label["4510-4-30"]["sources"] >= 640  # 692; the bright detection alone found 336
    for f in by_label.values():
        locus = f["locus"]
        assert locus["called_star"]["fraction"] >= 0.7
        assert locus["called_star_isolated"]["n"] + locus["called_star_deblended"]["n"] == locus["called_star"]["n"]
    # 7264-3-111's sources brighter than r = 16 are stars, most of them saturated: all 11 are called star
    bright = by_label["7264-3-111"]["saturating"]
    assert bright["n"] >= 8 and bright["fraction"] >= 0.9

    # predict.py with the real catalog stars' coordinates, as a user would give them (--csv): the frame shows
    # every star (none is no_source), and blank places between the sources are mostly no_source
    from stargal import sdss
    from stargal.stages.predict import run_predict

    paths = DataPaths(tmp_path / "data")
    fid = FieldId(301, 4510, 4, 30)
    stars = sdss.read_catalog(next((sample / "004510-4-0030").glob("calibObj-*-star.fits.gz")))
    stars = stars[stars["FIELD"] == 30]
    cube = read_cube(paths.real_fields.cube(fid))
    rng = np.random.default_rng(4)
    bx, by = rng.uniform(30, cube.shape[1] - 30, 300), rng.uniform(30, cube.shape[0] - 30, 300)
    found = read_table_csv(tmp_path / "real_sky" / "sources-4510-4-30.csv")
    blank = np.hypot(bx[:, None] - found["x"][None], by[:, None] - found["y"][None]).min(axis=1) > 20
    ra, dec = cube.wcs.wcs_pix2world(bx[blank], by[blank], 0)
    _, pred = run_predict(
        paths.real_fields,
        ra=np.concatenate([stars["RA"], ra]),
        dec=np.concatenate([stars["DEC"], dec]),
        model=PRETRAINED,
        cube_path=str(paths.real_fields.cube(fid)),
        out=str(tmp_path / "stars.csv"),
    )
    n = len(stars)
    assert np.count_nonzero(pred.status[:n] == "ok") >= 150 and "no_source" not in set(pred.status[:n])
    assert blank.sum() > 100 and np.mean(pred.status[n:] == "no_source") > 0.8


@pytest.mark.real
def test_readme_transcript_is_what_the_shipped_model_prints_on_4510(real_star_data, tmp_path):
    """The README's ```text transcript of predict.py --all on the real field 4510-4-30, run as written there (its
    output path aside): the figures it shows are the shipped model's, current."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    transcript = re.search(r"```text\n\$ (code/predict\.py [^\n]*)\n(.*?)```", readme, re.S)
    assert transcript and "--run 4510 --camcol 4 --field 30 --all --model pretrained" in transcript[1]
    args = shlex.split(transcript[1])
    run = subprocess.run(
        [sys.executable, str(PROJECT / args[0]), *args[1:], "--data-dir", str(real_star_data.root)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    printed = run.stdout.replace(str(tmp_path), "/...")
    assert printed.strip().splitlines() == transcript[2].strip().splitlines()


def test_a_damaged_shipped_model_says_how_to_restore_it(tmp_path, monkeypatch):
    """No 03_model.py options made the shipped model: its damage names the way to get it back."""
    import shutil

    from stargal import integrity

    copy = tmp_path / "stargal-pretrained"
    shutil.copytree(PRETRAINED_MODEL_DIR, copy)
    with open(copy / "model.keras", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\0" * 8)
    with pytest.raises(StargalError, match=r"03_model.py with the options that made it"):
        require_model(copy)  # a model of one's own is retrained
    monkeypatch.setattr(integrity, "PRETRAINED_MODEL_DIR", copy)
    monkeypatch.setattr(integrity, "PROJECT_ROOT", tmp_path)
    with pytest.raises(StargalError, match=r"it ships with stargal: restore it \(git checkout -- stargal-pretrained"):
        require_model(copy)
