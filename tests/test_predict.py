"""predict.py: sky -> pixel -> patch -> p_star with a status per row, CSV input/output, and the CLI."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import toy_models as toy
from sklearn.metrics import matthews_corrcoef

from stargal import detection
from stargal.cube import read_cube, write_cube
from stargal.errors import StargalError
from stargal.fsio import content_digest
from stargal.geometry import sky_to_pixel
from stargal.paths import DataPaths, FieldId
from stargal.predict import Predictions, agreement_text, catalog_agreement, locate
from stargal.predict_io import read_coordinates
from stargal.stages.predict import load_bundle, run_predict

PROJECT = Path(__file__).resolve().parents[1]
P = 15


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return toy.trained_toy_model_dir(None, P, "drop")


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A cube with isolated stars and galaxies at known positions, and a u-band hole (NaN) in one corner."""
    data, wcs, xs, ys, kinds = toy.toy_cube()
    data[0, :20, -30:] = np.nan
    path = tmp_path_factory.mktemp("cube") / "cube-toy.fits"
    write_cube(path, data, wcs, "ugriz", {"REFBAND": "r", "SIMULAT": True})
    return path, wcs, xs, ys, kinds, data.shape[1:]


def read_out(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_known_positions_and_classes(tmp_path, model_dir, field):
    cube, wcs, xs, ys, kinds, _ = field
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    out, pred = run_predict(DataPaths(tmp_path), ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube))
    assert out.parent == tmp_path / "predictions"
    np.testing.assert_allclose(pred.x, xs, atol=1e-6)
    np.testing.assert_allclose(pred.y, ys, atol=1e-6)
    assert list(pred.status) == ["ok"] * len(xs)
    assert list(pred.label) == list(kinds)  # isolated bright sources are clear cases
    rows = read_out(out)
    assert list(rows[0]) == ["ra", "dec", "x", "y", "p_star", "label", "status"]
    assert [r["label"] for r in rows] == list(kinds)
    np.testing.assert_allclose([float(r["x"]) for r in rows], xs, atol=1e-3)
    np.testing.assert_allclose([float(r["p_star"]) for r in rows], pred.p_star, atol=1e-6)


def test_status_per_row_in_input_order(tmp_path, model_dir, field):
    cube, wcs, xs, ys, kinds, (rows, cols) = field
    px = np.array([xs[0], -3.0, 3.0, cols - 3.0, 5000.0, cols - 10.0, xs[1]])
    py = np.array([ys[0], 50.0, 60.0, 70.0, 10.0, 8.0, ys[1]])
    ra, dec = wcs.wcs_pix2world(px, py, 0)
    ra = np.append(ra, (wcs.wcs.crval[0] + 180.0) % 360)  # the antipode: the TAN projection must not fold it in
    dec = np.append(dec, -wcs.wcs.crval[1])
    _, pred = run_predict(DataPaths(tmp_path), ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube))
    expected = ["ok", "outside", "edge", "edge", "outside", "no_data", "ok", "outside"]
    assert list(pred.status) == expected
    bad = pred.status != "ok"
    assert np.all(np.isnan(pred.p_star[bad])) and set(pred.label[bad]) == {""}
    assert list(pred.label[~bad]) == [kinds[0], kinds[1]]
    rows = read_out(tmp_path / "predictions" / next(p.name for p in (tmp_path / "predictions").iterdir()))
    assert [r["status"] for r in rows] == expected
    assert rows[1]["p_star"] == "" and rows[1]["label"] == "" and rows[7]["x"] == ""


def test_pad_policy_classifies_edges_but_not_uncovered_pixels(tmp_path, model_dir, field):
    cube, wcs, xs, ys, kinds, (rows, cols) = field
    padded = tmp_path / "padded"
    shutil.copytree(model_dir, padded)
    meta = json.loads((padded / "model.json").read_text())
    edited = {**meta, "edge": "pad", "name": "padded"}
    edited["integrity"] = {**meta["integrity"], "content_sha256": content_digest(edited)}  # sealed again
    (padded / "model.json").write_text(json.dumps(edited))
    px = np.array([3.0, cols - 10.0, -1.0, 40.0])
    py = np.array([60.0, 8.0, 50.0, rows - 0.4])
    ra, dec = wcs.wcs_pix2world(px, py, 0)
    # blank-sky positions: classified here only because --min-snr 0 asks for every position
    _, pred = run_predict(DataPaths(tmp_path), ra=ra, dec=dec, model=str(padded), cube_path=str(cube), min_snr=0)
    # (cols-10, 8) lies in the u-band hole: no data, whatever the policy
    assert list(pred.status) == ["ok", "no_data", "outside", "outside"]
    assert np.isfinite(pred.p_star[0]) and np.isnan(pred.p_star[1])


def test_a_position_off_a_sources_peak_is_off_peak_not_classified(tmp_path, model_dir, field):
    """Light at the position but no source centred on it (a bright star's wing, or a few pixels off a source): it
    passed S/N and got the label of a patch that is no object's."""
    cube, wcs, xs, ys, _, _ = field
    ra, dec = wcs.wcs_pix2world(np.concatenate([xs, xs + 5.0]), np.concatenate([ys, ys]), 0)
    _, pred = run_predict(DataPaths(tmp_path), ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube))
    n = len(xs)
    assert list(pred.status[:n]) == ["ok"] * n
    off = pred.status[n:] == "off_peak"
    assert off.mean() > 0.5 and np.all(np.isnan(pred.p_star[n:][off])) and set(pred.label[n:][off]) == {""}
    _, every = run_predict(DataPaths(tmp_path), ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube), min_snr=0)
    assert "off_peak" not in set(every.status)  # --min-snr 0 classifies every position


def test_blank_sky_is_no_source_not_a_star_or_a_galaxy(tmp_path, model_dir, field):
    cube, wcs, xs, ys, kinds, (rows, cols) = field
    rng = np.random.default_rng(5)
    bx, by = rng.uniform(15, cols - 15, 400), rng.uniform(15, rows - 15, 400)
    far = np.hypot(bx[:, None] - xs[None], by[:, None] - ys[None]).min(axis=1) > 15  # well away from every source
    px, py = np.concatenate([xs, bx[far]]), np.concatenate([ys, by[far]])
    ra, dec = wcs.wcs_pix2world(px, py, 0)
    out, pred = run_predict(DataPaths(tmp_path), ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube))
    n = len(xs)
    assert list(pred.status[:n]) == ["ok"] * n and list(pred.label[:n]) == list(kinds)
    blank = pred.status[n:]
    assert far.sum() > 100 and np.mean(blank == "no_source") > 0.95  # pure noise passes S/N 3 in under 1 %
    assert np.all(np.isnan(pred.p_star[n:][blank == "no_source"])) and set(pred.label[n:][blank == "no_source"]) == {""}
    assert [r["status"] for r in read_out(out)][n:] == list(blank)
    _, every = run_predict(DataPaths(tmp_path), ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube), min_snr=0)
    assert set(every.status) == {"ok"}
    with pytest.raises(StargalError, match=r"--min-snr -1.0: must be a number >= 0"):
        run_predict(DataPaths(tmp_path), ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube), min_snr=-1.0)


def test_locate_boundaries():
    x = np.array([-0.5, -0.51, 9.49, 9.5, np.nan, 7.0, 6.4])
    y = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 7.0, 7.0])
    assert list(locate(x, y, (20, 10), 5, "pad")) == ["ok", "outside", "ok", "outside", "outside", "ok", "ok"]
    # with drop, a 5-pixel patch needs centre pixels 2..7 of 10 columns: 7.0 -> 7 fits, 6.4 -> 6 fits
    assert list(locate(x, y, (20, 10), 5, "drop")) == ["edge", "outside", "edge", "outside", "outside", "ok", "ok"]
    with pytest.raises(StargalError, match="edge"):
        locate(x, y, (20, 10), 5, "wrap")


def test_sky_to_pixel_round_trip():
    wcs = toy.toy_wcs((1489, 2048), ra0=359.99, dec0=-1.0)  # across RA = 0
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 2047, 100), rng.uniform(0, 1488, 100)
    ra, dec = wcs.wcs_pix2world(x, y, 0)
    assert ra.min() < 1 and ra.max() > 359
    gx, gy = sky_to_pixel(wcs, ra, dec)
    np.testing.assert_allclose(gx, x, atol=1e-6)
    np.testing.assert_allclose(gy, y, atol=1e-6)


def test_thousands_of_coordinates_each_get_a_row(tmp_path, model_dir, field):
    """Thousands of positions (a quarter of them repeated) each get their row, in input order; how fast is
    bench/bench_predict.py's to say, not a unit test's."""
    cube, wcs, *_, (rows, cols) = field
    rng = np.random.default_rng(1)
    n = 5000
    px, py = rng.uniform(-20, cols + 20, n), rng.uniform(-20, rows + 20, n)
    px[::4], py[::4] = px[1::4], py[1::4]  # the next position again
    ra, dec = wcs.wcs_pix2world(px, py, 0)
    bundle = load_bundle(model_dir)
    # min_snr=0: every position is classified, blank sky included
    _, pred = run_predict(DataPaths(tmp_path), ra=ra, dec=dec, cube_path=str(cube), bundle=bundle, min_snr=0)
    assert len(pred) == n and pred.counts()["ok"] > 2500
    np.testing.assert_allclose(pred.x, px, atol=1e-6)
    same = (pred.status[::4] == "ok") & (pred.status[1::4] == "ok")
    np.testing.assert_array_equal(pred.p_star[::4][same], pred.p_star[1::4][same])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n1,2\n", "line 1: missing column"),
        ("ra,dec\n10,5\n10,abc\n", "line 3: dec 'abc' is not an angle"),
        ("ra,dec\n10,5\n12:xx,5\n", "line 3: ra '12:xx' is not an angle"),
        ("ra,dec\n10,5\n10,95\n", "line 3: dec 95 is outside"),
        (
            "ra,dec\n10,5\n25h00m00s,5\n",
            "line 3: ra .25h00m00s. is not an angle \\(degrees or sexagesimal; RA in hours must be 0-24\\)",
        ),
        (
            "ra,dec\n10,5\n24:00:00,5\n",
            "line 3: ra .24:00:00. is not an angle \\(degrees or sexagesimal; RA in hours must be 0-24\\)",
        ),
        (
            "ra,dec\n10,5\n22:06:60,5\n",
            "line 3: ra .22:06:60. is not an angle \\(degrees or sexagesimal; minutes and seconds must",
        ),
        ("ra,dec\n10,5\n400,5\n", "line 3: ra 400 is not an angle in degrees \\(-360 to 360\\)"),
        ("ra,dec,name\n10,5,a\n11\n", "line 3: too few values"),
        ('name,ra,dec\n"a",10,5\nb,c,11,5\n', "line 3: more values than columns"),
        ("ra,dec,RA\n10,5,11\n", "line 1: column\\(s\\) ra appear more than once"),
        ("ra,dec\n", "no coordinates"),
        ("", "empty file"),
        ("ra,dec\nnan,1\n", "line 2: ra nan is not an angle"),
    ],
)
def test_malformed_csv(tmp_path, text, message):
    path = tmp_path / "coords.csv"
    path.write_text(text)
    with pytest.raises(StargalError, match=message) as info:
        read_coordinates(path)
    assert str(path) in str(info.value)


def test_csv_reader_accepts_extra_columns_and_any_case(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("name,RA,Dec\na,10.5,-3\n\nb,11,4.25\n")
    ra, dec = read_coordinates(path)
    assert ra.tolist() == [10.5, 11.0] and dec.tolist() == [-3.0, 4.25]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT / "code" / "predict.py"), *args], capture_output=True, text=True, timeout=120
    )


def test_a_reader_that_stops_reading_ends_predict_silently_as_unix_tools_do(tmp_path, model_dir, field):
    """`predict.py ... | head -1`: the summary meets a closed pipe. That ended in "predict.py: error: (no file
    named): Broken pipe" and exit 1 after a complete table; now silently, with SIGPIPE's status, as `yes | head`."""
    cube, wcs, xs, ys, *_ = field
    ra, dec = wcs.wcs_pix2world(xs[:1], ys[:1], 0)
    out = tmp_path / "p.csv"
    args = ["--data-dir", str(tmp_path / "data"), "--cube", str(cube), "--model", str(model_dir), "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT / "code" / "predict.py"), *args, "--ra", repr(float(ra[0])), "--dec", repr(float(dec[0]))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # the summary, written after the table, meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "error" not in err, err
    assert len(read_out(out)) == 1  # the table is whole


@pytest.mark.slow
def test_cli(tmp_path, model_dir, field):
    cube, wcs, xs, ys, kinds, _ = field
    ra, dec = wcs.wcs_pix2world(xs[:4], ys[:4], 0)
    coords = tmp_path / "coords.csv"
    coords.write_text(
        "ra,dec\n" + "".join(f"{float(r)!r},{float(d)!r}\n" for r, d in zip(ra, dec, strict=True)) + "0,0\n"
    )
    out = tmp_path / "out.csv"
    done = run_cli(
        "--data-dir",
        str(tmp_path / "data"),
        "--model",
        str(model_dir),
        "--cube",
        str(cube),
        "--csv",
        str(coords),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "5 coordinates: 4 classified" in done.stdout
    rows = read_out(out)
    assert [r["label"] for r in rows] == [*kinds[:4], ""]
    assert rows[-1]["status"] == "outside"

    bad = tmp_path / "bad.csv"
    bad.write_text("ra,dec\n1,2\n3,-91\n")
    done = run_cli("--data-dir", str(tmp_path), "--model", str(model_dir), "--cube", str(cube), "--csv", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and f"{bad}: line 3: dec" in done.stderr

    done = run_cli(
        "--data-dir", str(tmp_path), "--model", str(model_dir), "--cube", str(cube), "--ra", "1", "2", "--dec", "3"
    )
    assert done.returncode == 2 and "--ra has 2 values but --dec has 1" in done.stderr
    done = run_cli("--data-dir", str(tmp_path), "--model", str(model_dir), "--cube", str(cube), "--dec", "3")
    assert done.returncode == 2 and "--ra has 0 values but --dec has 1" in done.stderr  # was "no coordinates"

    done = run_cli("--data-dir", str(tmp_path), "--model", str(model_dir), "--field", "5", "--ra", "1", "--dec", "3")
    assert done.returncode == 2 and "aligned cube not found" in done.stderr
    # --all named the missing cube's objects table, with advice to fetch the sweeps
    missing = tmp_path / "nonexist.fits"
    done = run_cli("--data-dir", str(tmp_path), "--model", str(model_dir), "--cube", str(missing), "--all")
    assert done.returncode == 2 and f"{missing}: aligned cube not found" in done.stderr, done.stderr

    done = run_cli("--data-dir", str(tmp_path), "--cube", str(cube), "--field", "80", "--ra", "1", "--dec", "3")
    assert done.returncode == 2 and "give the field one way: --cube PATH or --field N" in done.stderr
    # --fields, --run, --camcol beside --cube were ignored without a word: the cube's own field was classified
    done = run_cli("--data-dir", str(tmp_path), "--cube", str(cube), "--fields", "31", "--run", "1234", "--ra", "1",
                   "--dec", "3")  # fmt: skip
    assert done.returncode == 2 and "(--cube with --run, --fields: the cube's own field" in done.stderr, done.stderr

    # options that did nothing: --min-snr beside --detect/--all, --fields naming other fields than --field
    done = run_cli("--data-dir", str(tmp_path), "--field", "30", "--detect", "--min-snr", "50")
    assert done.returncode == 2 and "--min-snr applies to --ra/--dec and --csv positions; --detect" in done.stderr
    done = run_cli("--data-dir", str(tmp_path), "--field", "30", "--fields", "80", "--ra", "1", "--dec", "3")
    assert (
        done.returncode == 2
        and "--fields 80: predict.py classifies one field; give it as --field N (--field 30" in (done.stderr)
    )

    out = tmp_path / "a-file"
    out.write_text("")
    done = run_cli("--data-dir", str(tmp_path), "--cube", str(cube), "--ra", "1", "--dec", "3", "--out", f"{out}/p.csv")
    assert done.returncode == 2 and f"--out {out}/p.csv: {out} is a file, not a folder" in done.stderr

    done = run_cli("--data-dir", str(tmp_path), "--cube", str(cube), "--model", "nosuch", "--ra", "1", "--dec", "3")
    assert done.returncode == 2 and "--model nosuch: no model.keras there" in done.stderr

    # no model trained in the data folder: the shipped pretrained model classifies, and says so
    done = run_cli("--data-dir", str(tmp_path / "empty"), "--cube", str(cube), "--ra", "1", "--dec", "3")
    assert done.returncode == 0, done.stderr
    assert "using the pretrained model stargal-pretrained" in done.stdout + done.stderr


def test_simulated_sky_positions(tiny_data, model_dir):
    """Stage 01 on a simulated field, then predict at the catalog objects' RA/Dec: pixel positions match
    stage 01's and the simulation's true positions."""
    from stargal.config import FieldSet
    from stargal.paths import FieldId
    from stargal.stages.alignment import run_alignment
    from stargal.tables import read_table

    fs = FieldSet(301, 8162, 6, (81,), (), (), (81,))
    run_alignment(tiny_data, fs, reports=False)
    fid = FieldId(301, 8162, 6, 81)
    objects = read_table(tiny_data.objects(fid))
    assert len(objects) > 20
    _, pred = run_predict(tiny_data, ra=objects["ra"], dec=objects["dec"], model=str(model_dir), fid=fid)
    np.testing.assert_allclose(pred.x, objects["x"], atol=1e-3)
    np.testing.assert_allclose(pred.y, objects["y"], atol=1e-3)
    truth = np.genfromtxt(tiny_data.sim_truth(301, 8162, 6), delimiter=",", names=True, dtype=None, encoding="utf-8")
    truth = truth[truth["field"] == 81]
    # every catalog object of field 81 is a simulated object at (nearly) the same pixel
    d = np.hypot(pred.x[:, None] - truth["x"][None], pred.y[:, None] - truth["y"][None]).min(axis=1)
    own = objects["field"] == 81
    assert np.median(d[own]) < 0.3 and np.all(d[own] < 1.5)
    rows, cols = read_cube_shape(tiny_data.cube(fid))
    near_edge = (pred.x < 7 - 0.5) | (pred.y < 7 - 0.5) | (pred.x > cols - 8 + 0.5) | (pred.y > rows - 8 + 0.5)
    assert set(pred.status[near_edge]) <= {"edge", "outside"}
    # as a user's coordinates, a catalog object too faint to show in this frame is no_source; no brighter one is,
    faint = objects["r_psfmag"] > 22.5
    # but one on a much brighter neighbour's wing, which makes no bump of its own there, may be no_source too
    apart = np.hypot(objects["x"][:, None] - objects["x"][None], objects["y"][:, None] - objects["y"][None])
    on_wing = ((apart < 10) & (objects["r_psfmag"][None] < objects["r_psfmag"][:, None] - 3)).any(axis=1)
    assert set(pred.status[~near_edge & ~faint & ~on_wing]) <= {"ok", "no_data"}
    assert np.count_nonzero(pred.status == "no_source") <= 0.05 * len(objects)
    assert np.count_nonzero(pred.status == "ok") > 0.8 * np.count_nonzero(~near_edge)


def read_cube_shape(path) -> tuple[int, int]:
    from stargal.cube import read_cube

    return read_cube(path).shape


# ---- formats, sexagesimal input, --all, batching ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "degrees"),
    [
        ("12:34:56.7", "ra", 188.73625),
        ("12h34m56.7s", "ra", 188.73625),
        ("12 34 56.7", "ra", 188.73625),
        ("188d44m10.5s", "ra", 188.73625),
        ("188.73625", "ra", 188.73625),
        ("+12:34:56", "dec", 12.582222222),
        ("12d34m56s", "dec", 12.582222222),
        ("-00:30:00", "dec", -0.5),
        ("-0d30m00s", "dec", -0.5),
    ],
)
def test_sexagesimal_and_degree_angles(text, kind, degrees):
    from stargal.predict_io import parse_angles

    values, bad = parse_angles([text], kind)
    assert bad is None
    np.testing.assert_allclose(values, [degrees], atol=1e-8)


def test_csv_with_sexagesimal_coordinates(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("name,ra,dec\na,12:34:56.7,+12:34:56\nb,12h34m56.7s,-12d34m56s\nc,10.5,-3\n")
    ra, dec = read_coordinates(path)
    np.testing.assert_allclose(ra, [188.73625, 188.73625, 10.5])
    np.testing.assert_allclose(dec, [12.582222222, -12.582222222, -3.0])


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".fits"])
def test_a_csvs_other_columns_are_carried_beside_their_positions(tmp_path, model_dir, field, suffix):
    """Names and magnitudes of the input were dropped: a user had to join the table back by position."""
    from astropy.table import Table

    from stargal.predict_io import read_coordinate_table

    cube, wcs, xs, ys, kinds, _ = field
    ra, dec = wcs.wcs_pix2world(xs[:3], ys[:3], 0)
    path = tmp_path / "in.csv"
    lines = ["Name,ra,mag,dec,status,\n"] + [f"src {i},{r!r},{20 + i},{d!r},mine {i},x\n" for i, (r, d) in
                                             enumerate(zip(ra.tolist(), dec.tolist(), strict=True))]  # fmt: skip
    path.write_text("".join(lines).replace("src 1", '"src, 1"').replace("mine 2", '"mine ""2"""'))
    ra_in, dec_in, carried = read_coordinate_table(path)
    assert list(carried) == ["Name", "mag", "input_status", "column_6"]
    out = tmp_path / f"p{suffix}"
    run_predict(DataPaths(tmp_path / "data"), ra=ra_in, dec=dec_in, model=str(model_dir), cube_path=str(cube),
                out=str(out), carried=carried)  # fmt: skip
    table = Table.read(out)
    assert table.colnames == ["Name", "mag", "input_status", "column_6", "ra", "dec", "x", "y", "p_star", "label",
                              "status"]  # fmt: skip
    assert [str(v) for v in table["Name"]] == ["src 0", "src, 1", "src 2"]
    assert [str(v) for v in table["input_status"]] == ["mine 0", "mine 1", 'mine "2"']
    assert list(table["status"]) == ["ok"] * 3 and list(table["label"]) == list(kinds[:3])


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".fits"])
def test_each_output_format_round_trips_through_astropy(tmp_path, model_dir, field, suffix):
    from astropy.table import Table

    cube, wcs, xs, ys, kinds, _ = field
    ra, dec = wcs.wcs_pix2world(np.append(xs[:3], -50.0), np.append(ys[:3], 10.0), 0)
    out = tmp_path / f"p{suffix}"
    data = DataPaths(tmp_path / "data")
    _, pred = run_predict(data, ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube), out=str(out))
    table = Table.read(out)
    assert table.colnames == ["ra", "dec", "x", "y", "p_star", "label", "status"]
    np.testing.assert_allclose(table["ra"], ra, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(table["p_star"][:3], float), pred.p_star[:3], atol=1e-6)
    assert list(table["label"][:3]) == list(kinds[:3]) and list(table["status"]) == ["ok"] * 3 + ["outside"]
    missing = table["p_star"][3]
    assert np.ma.is_masked(missing) or not np.isfinite(missing)
    if suffix == ".csv":
        assert (tmp_path / "p.csv").read_text().splitlines()[4].endswith(",-50.000,10.000,,,outside")
        return
    assert str(table["ra"].unit) == "deg" and str(table["x"].unit) == "pix"
    meta = table.meta
    assert meta["MODEL"] == load_bundle(model_dir).name and meta["THRESH"] == pytest.approx(0.5, abs=0.5)
    assert {"MODELVER", "TTA", "SKY", "STARGAL"} <= set(meta)
    assert meta["SKY"] == "simulated"  # the toy cube carries SIMULAT = T
    if suffix == ".fits":
        from astropy.io import fits

        with fits.open(out) as hdul:
            assert hdul[1].header["TUNIT1"] == "deg" and hdul[1].header["MODEL"] == meta["MODEL"]


def test_a_threshold_of_ones_own_labels_by_it_and_is_recorded(tmp_path, model_dir, field):
    from astropy.table import Table

    cube, wcs, xs, ys, _, _ = field
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    common = dict(ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube), tta="off", min_snr=0)
    data = DataPaths(tmp_path / "data")
    _, default = run_predict(data, out=str(tmp_path / "d.csv"), **common)
    ok = default.status == "ok"
    model_threshold = load_bundle(model_dir).threshold
    p = default.p_star[ok]
    stars, galaxies = (p >= model_threshold).sum(), np.sort(p[p < model_threshold])
    assert stars > 0 and len(galaxies) >= 2
    # between the two most star-like galaxies (the toy model's p spread over decades there): the first becomes a star
    cut = float(np.sqrt(galaxies[-1] * galaxies[-2]))
    out = tmp_path / "t.ecsv"
    _, pred = run_predict(data, out=str(out), threshold=cut, **common)
    assert list(pred.label[ok]) == list(np.where(pred.p_star[ok] >= cut, "star", "galaxy"))
    assert (pred.label[ok] == "star").sum() == stars + 1
    meta = Table.read(out).meta
    assert meta["THRESH"] == pytest.approx(cut) and meta["MODELTHR"] == pytest.approx(model_threshold)
    for bad in (0.0, 1.0, -0.2, float("nan")):
        with pytest.raises(StargalError, match="--threshold"):
            run_predict(data, out=str(tmp_path / "bad.csv"), threshold=bad, **common)
        assert not (tmp_path / "bad.csv").exists()


def test_an_unknown_extension_is_a_one_line_error(tmp_path, field):
    cube = field[0]
    done = run_cli("--data-dir", str(tmp_path), "--cube", str(cube), "--ra", "1", "--dec", "2", "--out", "p.txt")
    assert done.returncode == 2
    assert done.stderr.strip() == "predict.py: error: --out p.txt: unknown extension '.txt'; use .csv, .ecsv or .fits"


def test_duplicate_positions_and_chunks_give_the_same_answers(model_dir, field):
    from stargal.cube import read_cube
    from stargal.predict import classify

    cube_path, wcs, xs, ys, *_ = field
    bundle = load_bundle(model_dir)
    cube = read_cube(cube_path)
    rng = np.random.default_rng(3)
    px = np.concatenate([xs, xs + 0.2, rng.uniform(10, 100, 40)])  # each source twice, on the same pixel
    py = np.concatenate([ys, ys - 0.2, rng.uniform(10, 80, 40)])
    ra, dec = wcs.wcs_pix2world(px, py, 0)
    kwargs = {"patch_size": bundle.patch_size, "edge": bundle.edge, "threshold": 0.5}
    whole = classify(bundle.model, np.asarray(cube.data), cube.wcs, ra, dec, **kwargs)
    shown = []

    def track(items, description, total, unit):  # as stargal.progress.track is called
        shown.append((description, total, unit))
        yield from items

    chunked = classify(bundle.model, np.asarray(cube.data), cube.wcs, ra, dec, chunk=7, track=track, **kwargs)
    ok = whole.status == "ok"
    unique = len(set(zip(np.floor(py[ok] + 0.5), np.floor(px[ok] + 0.5), strict=True)))
    assert shown == [(f"classifying {unique} sources", -(-unique // 7), "chunk")]  # a progress display of chunks
    # a batch's size may change the order of the convolutions' sums (TensorFlow's kernels without oneDNN, as on
    # AMD processors): the last bits, never the label
    np.testing.assert_allclose(whole.p_star, chunked.p_star, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(whole.label, chunked.label)
    n = len(xs)
    np.testing.assert_array_equal(whole.p_star[:n], whole.p_star[n : 2 * n])
    # "auto" test-time augmentation: the 8-symmetry mean exactly where one pass is near the threshold
    one = classify(bundle.model, np.asarray(cube.data), cube.wcs, ra, dec, tta="off", **kwargs)
    every = classify(bundle.model, np.asarray(cube.data), cube.wcs, ra, dec, tta="all", **kwargs)
    auto = classify(bundle.model, np.asarray(cube.data), cube.wcs, ra, dec, tta="auto", tta_margin=0.3, **kwargs)
    ok = one.status == "ok"
    near = ok & (np.abs(one.p_star - 0.5) < 0.3)
    np.testing.assert_allclose(auto.p_star[near], every.p_star[near], atol=1e-6)
    np.testing.assert_array_equal(auto.p_star[ok & ~near], one.p_star[ok & ~near])
    # the label compares in float64: a threshold a hair above a p_star, which rounds to it in float32, left the
    # label star while p_star < THRESH
    k = int(np.flatnonzero(ok)[0])
    hair = float(one.p_star[k]) + 1e-9
    assert np.float32(hair) == one.p_star[k] and hair > float(one.p_star[k])
    at_hair = classify(bundle.model, np.asarray(cube.data), cube.wcs, ra[k : k + 1], dec[k : k + 1], tta="off",
                       **{**kwargs, "threshold": hair})  # fmt: skip
    assert at_hair.p_star[0] == one.p_star[k] and at_hair.label[0] == "galaxy"


def test_all_classifies_every_catalogued_object_in_table_order(tiny_data, model_dir):
    from astropy.table import Table

    from stargal.config import FieldSet
    from stargal.paths import FieldId
    from stargal.stages.alignment import run_alignment
    from stargal.tables import read_table

    run_alignment(tiny_data, FieldSet(301, 8162, 6, (82,), (), (), (82,)), reports=False)
    fid = FieldId(301, 8162, 6, 82)
    objects = read_table(tiny_data.objects(fid))
    out = tiny_data.root.parent / "all.ecsv"
    _, pred = run_predict(tiny_data, model=str(model_dir), fid=fid, all_objects=True, out=str(out))
    table = Table.read(out)
    assert list(table["objid"]) == list(objects["objid"]) and len(pred) == len(objects)
    assert list(table["catalog_type"]) == ["star" if v == 1 else "galaxy" for v in objects["label"]]
    assert table.colnames == ["objid", "ra", "dec", "x", "y", "r_psfmag", "catalog_type", "p_star", "label", "status"]
    np.testing.assert_allclose(np.ma.filled(table["x"], np.nan), objects["x"], atol=1e-3)
    assert table.meta["FIELD"] == "301/8162/6/82" and table.meta["SKY"] == "simulated"
    assert ("SIMVER" in table.meta) == tiny_data.manifest.is_file()  # the version comes from the download manifest
    assert set(table["label"][table["status"] == "ok"]) <= {"star", "galaxy"}
    # --cube of another data folder: the version of the cube's own folder, never --data-dir's; none for a loose cube
    import shutil

    from stargal.stages.predict import sky_metadata

    cube = read_cube(tiny_data.cube(fid))
    assert sky_metadata(tiny_data.cube(fid), cube).get("SIMVER") == table.meta.get("SIMVER")
    loose = tiny_data.root.parent / "elsewhere" / tiny_data.cube(fid).name
    loose.parent.mkdir()
    shutil.copy(tiny_data.cube(fid), loose)
    assert "SIMVER" not in sky_metadata(loose, cube) and sky_metadata(loose, cube)["SKY"] == "simulated"

    # the agreement with the catalog's classes counts exactly the table's classified rows
    agreement = catalog_agreement(pred)
    ok = np.asarray(table["status"]) == "ok"
    is_star, called = np.asarray(table["catalog_type"])[ok] == "star", np.asarray(table["label"])[ok] == "star"
    assert agreement["n"] == ok.sum() and agreement["stars"] == is_star.sum() > 0 and agreement["galaxies"] > 0
    assert agreement["stars_called_star"] == (is_star & called).sum()
    assert agreement["galaxies_called_galaxy"] == (~is_star & ~called).sum()
    assert agreement["accuracy"] == pytest.approx((is_star == called).mean())
    assert agreement["mcc"] == pytest.approx(matthews_corrcoef(is_star, called))
    assert sum(a["n"] for a in agreement["by_r"]) == agreement["n"]
    r = np.asarray(table["r_psfmag"], np.float64)[ok]
    faint = next(a for a in agreement["by_r"] if a["r_min"] == 22.0)
    assert faint["n"] == (r >= 22).sum() and faint["stars_called_star"] == (is_star & called & (r >= 22)).sum()
    text = agreement_text(agreement)
    assert f"MCC {agreement['mcc']:.3f}" in text.splitlines()[0] and "r > 22:" in text.splitlines()[1]


def test_agreement_with_one_catalog_class_or_one_called_class():
    """A star-only catalog (4510-4-30's sweep) has no MCC; a model calling everything star has MCC 0."""
    n = 6
    status, r = np.full(n, "ok"), np.array([18.0, 19, 21.5, 22.5, 23, np.nan])
    pred = Predictions(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.full(n, 0.9, np.float32),
                       np.array(["star"] * 5 + ["galaxy"]), status, np.ones(n, bool), r)  # fmt: skip
    stars_only = catalog_agreement(pred)
    assert stars_only["mcc"] is None and stars_only["stars_called_star"] == 5 and stars_only["accuracy"] == 5 / 6
    assert [a["n"] for a in stars_only["by_r"]] == [2, 1, 2, 1]  # r < 21, 21-22, > 22, no r magnitude
    assert "MCC" not in agreement_text(stars_only) and "no r magnitude" in agreement_text(stars_only)
    # its fraction right is the star recall: "accuracy 0.833" said more than a star sweep alone can show
    head = agreement_text(stars_only).splitlines()[0]
    assert (
        head.endswith("star recall 0.833 (stars called star 5/6; the catalog lists no galaxy)")
        and "accuracy" not in head
    )
    pred.catalog_star = np.array([True, False] * 3)
    pred.label = np.full(n, "star")
    pred.status[0] = "edge"  # not classified: not counted
    everything_star = catalog_agreement(pred)
    assert everything_star["n"] == 5 and everything_star["mcc"] == 0.0 and everything_star["galaxies"] == 3
    pred.catalog_star = None
    assert catalog_agreement(pred) is None


def test_all_without_an_objects_table_says_what_makes_one_and_writes_nothing(tmp_path, model_dir, field):
    """A cube aligned without its sweeps (00_download.py --frames-only, as for a real field) has no objects table."""
    path = field[0]
    out = tmp_path / "all.csv"
    with pytest.raises(StargalError, match="sweeps.*01_alignment.py.*--detect"):
        run_predict(
            DataPaths(tmp_path / "data"), model=str(model_dir), cube_path=str(path), all_objects=True, out=str(out)
        )
    assert not out.exists()


def test_detect_classifies_every_source_found_in_the_field(tmp_path, model_dir, field):
    """--detect on a cube without any catalog: one row per source sep finds, at the known positions."""
    path, _, xs, ys, kinds, _ = field
    out = tmp_path / "detected.csv"
    _, pred = run_predict(
        DataPaths(tmp_path / "data"), model=str(model_dir), cube_path=str(path), detect=True, out=str(out)
    )
    rows = read_out(out)
    assert list(rows[0]) == ["source", "ra", "dec", "x", "y", "r_mag", "saturated", "r50_px", "deblended", "p_star",
                             "label", "status"]  # fmt: skip
    assert {r["deblended"] for r in rows} <= {"True", "False"}
    assert {r["saturated"] for r in rows} == {"False"} and all(r["r_mag"] for r in rows)  # the toy stars are faint
    found = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    d = np.hypot(xs[:, None] - found[None, :, 0], ys[:, None] - found[None, :, 1])
    assert np.all(d.min(axis=1) < 1.0)  # every toy source found
    nearest = d.argmin(axis=1)
    ok = pred.status[nearest] == "ok"
    assert ok.sum() >= len(xs) - 3
    assert (pred.label[nearest][ok] == kinds[ok]).mean() >= 0.8  # the toy model tells them apart
    assert not (pred.status == "artefact").any()  # every toy source is seen in every band
    r50 = np.array([float(r["r50_px"]) for r in rows])[nearest]  # over each source's local sky level
    assert np.all(np.isfinite(r50)) and np.median(r50[kinds == "galaxy"]) > 1.2 * np.median(r50[kinds == "star"])


def test_detect_reports_a_single_band_spike_as_an_artefact(tmp_path, model_dir, field):
    """A hot pixel in r alone (as on the real 1035-6-17: 266 nanomaggies in one pixel) is found by sep but is
    no star: status artefact, no p_star or label, in the table as in the returned predictions."""
    path, wcs, xs, ys, kinds, shape = field
    data = read_cube(path).data.astype(np.float32)
    gy, gx = np.mgrid[20 : shape[0] - 20 : 4, 20 : shape[1] - 20 : 4]
    free = np.hypot(gx.ravel()[:, None] - xs, gy.ravel()[:, None] - ys).min(axis=1) > 20
    sy, sx = int(gy.ravel()[free][0]), int(gx.ravel()[free][0])
    data[2, sy, sx] += 266.0
    data[2, sy + 1, sx] += 34.0
    spiked = tmp_path / "cube-spike.fits"
    write_cube(spiked, data, wcs, "ugriz", {"REFBAND": "r", "SIMULAT": True})
    out = tmp_path / "detected.csv"
    _, pred = run_predict(
        DataPaths(tmp_path / "data"), model=str(model_dir), cube_path=str(spiked), detect=True, out=str(out)
    )
    at_spike = np.hypot(pred.x - sx, pred.y - sy) < 2
    assert at_spike.sum() == 1 and pred.status[at_spike][0] == "artefact"
    assert np.isnan(pred.p_star[at_spike][0]) and pred.label[at_spike][0] == ""
    row = [r for r in read_out(out) if r["status"] == "artefact"]
    assert len(row) == 1 and row[0]["p_star"] == "" and row[0]["label"] == ""
    assert pred.counts()["artefact"] == 1
    # given by position (--ra/--dec, --csv) it is an artefact too: it was classified, a "star" with exit 0
    ra, dec = pred.ra[at_spike], pred.dec[at_spike]
    ra_all, dec_all = np.r_[ra, pred.ra[~at_spike]], np.r_[dec, pred.dec[~at_spike]]
    _, by_position = run_predict(DataPaths(tmp_path / "data"), model=str(model_dir), cube_path=str(spiked), ra=ra_all,
                                 dec=dec_all, out=str(tmp_path / "positions.csv"))  # fmt: skip
    assert by_position.status[0] == "artefact" and np.isnan(by_position.p_star[0])
    assert not (by_position.status[1:] == "artefact").any()  # the toy sources, seen in every band, are not


def test_a_psf_map_beside_a_cube_is_used_only_when_its_field_record_seals_both(tmp_path, field):
    """A PSF map merely newer than the cube may be another cube's: without a record sealing the two together the
    PSF is measured on the cube's own stars."""
    from stargal import fsio
    from stargal.paths import psf_map_beside
    from stargal.psf import PSFMap, measure_psf_map
    from stargal.stages.predict import load_psf_map

    source, *_ = field
    cube = tmp_path / source.name
    shutil.copyfile(source, cube)
    data = np.asarray(read_cube(cube).data, np.float32)
    measured = measure_psf_map(data, "ugriz")
    foreign = PSFMap("ugriz", measured.shape, np.tile([5.0, 0.0, 0.0, 0.0], (5, 1)), 40)  # another field's
    sidecar = psf_map_beside(cube)
    fsio.write_json(sidecar, foreign.to_dict())  # newer than the cube
    np.testing.assert_allclose(load_psf_map(cube, data, "ugriz").coefficients, measured.coefficients)
    fsio.seal(DataPaths.record_beside_cube(cube), [cube, sidecar], {})
    np.testing.assert_allclose(load_psf_map(cube, data, "ugriz").coefficients, foreign.coefficients)  # sealed: used


def test_a_cube_whose_bands_are_not_aligned_is_refused_not_classified(tmp_path, model_dir, field):
    """A stack of frames never aligned (each band's sources where its own frame put them) reads as a cube of
    smeared sources: without stage 01's record beside it, predict.py checks the bands lie on each other."""
    path, wcs, xs, ys, kinds, _ = field
    data = read_cube(path).data.astype(np.float32)
    assert detection.coarse_band_shifts(data, 2) == [(0, 0)] * 5
    data[1] = np.roll(data[1], (12, 3), axis=(0, 1))  # g: 3 px right, 12 px down, as raw SDSS frames sit
    stacked = tmp_path / "cube-stacked.fits"
    write_cube(stacked, data, wcs, "ugriz", {"REFBAND": "r", "SIMULAT": True})
    assert detection.coarse_band_shifts(data, 2)[1] == (3, 12)
    out = tmp_path / "stacked.csv"
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    with pytest.raises(StargalError, match=r"cube-stacked.fits: not an aligned cube: the g band's sources sit 12 px"):
        run_predict(
            DataPaths(tmp_path / "data"), ra=ra, dec=dec, model=str(model_dir), cube_path=str(stacked), out=str(out)
        )
    assert not out.exists()


# ---- inputs that would give a wrong answer or overwrite an input (audit of predict.py) ----------------------


def toy_objects(wcs, xs, ys, kinds) -> np.ndarray:
    """An objects table of the toy cube's sources, as stage 01 writes one."""
    from stargal.tables import OBJECT_DTYPE

    objects = np.zeros(len(xs), OBJECT_DTYPE)
    objects["ra"], objects["dec"] = wcs.wcs_pix2world(xs, ys, 0)
    objects["objid"] = [f"301-8162-6-80-{i}" for i in range(len(xs))]
    objects["label"], objects["r_psfmag"] = kinds == "star", 20.0
    return objects


def test_all_refuses_an_objects_table_not_sealed_with_the_cube(tmp_path, model_dir, field):
    """--all classifies without the presence test: an objects table merely lying beside a cube (a simulated
    field's of the same name, say) would be "classified" where the frame shows nothing, with agreement figures."""
    from stargal import fsio
    from stargal.paths import objects_for_cube
    from stargal.tables import write_table

    source, wcs, xs, ys, kinds, _ = field
    cube = tmp_path / "mix" / "cube-008162-6-0080.fits"
    cube.parent.mkdir()
    shutil.copyfile(source, cube)
    objects = objects_for_cube(cube)
    write_table(objects, toy_objects(wcs, xs, ys, kinds))
    record, out = DataPaths.record_beside_cube(cube), tmp_path / "all.csv"
    common = dict(model=str(model_dir), cube_path=str(cube), all_objects=True, out=str(out))
    with pytest.raises(
        StargalError, match=rf"{objects}: not sealed with the cube by a field record \({record}: missing"
    ):
        run_predict(DataPaths(tmp_path / "data"), **common)
    fsio.seal(record, [cube], {})  # a record of the cube alone: the table is not its
    with pytest.raises(StargalError, match=r"objects-008162-6-0080.csv: not part of the sealed output"):
        run_predict(DataPaths(tmp_path / "data"), **common)
    assert not out.exists()
    fsio.seal(record, [cube, objects], {})  # as stage 01 seals them
    _, pred = run_predict(DataPaths(tmp_path / "data"), **common)
    assert len(pred) == len(xs) and list(pred.label[pred.status == "ok"]) == list(kinds[pred.status == "ok"])


def test_out_naming_an_input_or_a_file_of_the_data_folder_is_refused(tmp_path, model_dir, field):
    """--out is written over atomically: naming the cube, a file beside it, the --csv or any file of the data
    folder but predictions/ would replace an input with a table."""
    source, wcs, xs, ys, _, _ = field
    paths = DataPaths(tmp_path / "data")
    cube = tmp_path / "cube-toy.fits"
    shutil.copyfile(source, cube)
    coords = tmp_path / "coords.csv"
    sky = zip(*wcs.wcs_pix2world(xs, ys, 0), strict=True)
    coords.write_text("name,ra,dec\n" + "".join(f"s,{float(r)!r},{float(d)!r}\n" for r, d in sky))
    ra, dec = read_coordinates(coords)
    (paths.root / "aligned").mkdir(parents=True)
    link = tmp_path / "link.fits"
    link.symlink_to(cube)
    hard = tmp_path / "hard.csv"
    hard.hardlink_to(coords)
    common = dict(ra=ra, dec=dec, model=str(model_dir), cube_path=str(cube), inputs=(str(coords),))
    refused = {
        cube: "is this run's own input",
        link: "is this run's own input",
        coords: "is this run's own input",
        hard: "is this run's own input",
        tmp_path / "objects-toy.csv": "is this run's own input",  # the objects table beside the cube (--all)
        paths.root / "aligned" / "p.csv": "lies in the data folder",
        paths.root / "p.csv": "lies in the data folder",
        model_dir / "p.csv": "lies in the model folder",
    }
    other = DataPaths(tmp_path / "other-data")  # another data folder a stage has run on (its lock file)
    (other.root / "aligned").mkdir(parents=True)
    other.lock_file.touch()
    refused[other.root / "aligned" / "objects.csv"] = f"lies in the data folder {other.root.resolve()}"
    real_only = DataPaths(tmp_path / "real-only")  # a data folder only real_sky.py has run on: real/ and reports/
    real_only.real_fields.cube(FieldId(301, 4510, 4, 30)).parent.mkdir(parents=True)
    real_only.lock_file.touch()
    refused[real_only.real_fields.cube(FieldId(301, 4510, 4, 30))] = (
        f"lies in the data folder {real_only.root.resolve()}"
    )
    before = {p: p.read_bytes() for p in (cube, coords)}
    for out, why in refused.items():
        with pytest.raises(StargalError, match=f"--out {out.resolve()}: {why}"):
            run_predict(paths, out=str(out), **common)
    assert {p: p.read_bytes() for p in (cube, coords)} == before
    assert not (paths.root / "p.csv").exists() and not (model_dir / "p.csv").exists()
    out, _ = run_predict(paths, out=str(paths.predictions_dir / "p.csv"), **common)  # where the default goes
    assert len(read_out(out)) == len(xs)
    out, _ = run_predict(paths, out=str(other.predictions_dir / "p.csv"), **common)  # the other's predictions/
    assert len(read_out(out)) == len(xs) and not (other.root / "aligned" / "objects.csv").exists()
    # predict.py passes its --csv
    done = run_cli("--data-dir", str(paths.root), "--cube", str(cube), "--csv", str(coords), "--out", str(coords))
    assert done.returncode == 2 and f"--out {coords}: is this run's own input" in done.stderr
    assert coords.read_bytes() == before[coords]


def test_a_cube_without_sky_coordinates_or_a_folder_is_one_line(tmp_path, model_dir, field):
    """A header without CTYPE1/2 reads as a linear WCS: every position would land on a wrong pixel."""
    from astropy.io import fits

    source, wcs, xs, ys, _, _ = field
    data, header = fits.getdata(source, header=True)
    for key in ("CTYPE1", "CTYPE2"):
        del header[key]
    cube = tmp_path / "cube-nowcs.fits"
    fits.writeto(cube, data, header)
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    for kwargs in ({"ra": ra, "dec": dec}, {"detect": True}):
        with pytest.raises(StargalError, match=rf"^{cube}: no celestial \(RA---TAN/DEC--TAN\) WCS in its header$"):
            run_predict(DataPaths(tmp_path / "data"), model=str(model_dir), cube_path=str(cube), **kwargs)
    with pytest.raises(StargalError, match=rf"^{tmp_path}: is a folder, not a cube FITS file$"):
        read_cube(tmp_path)


def test_a_cube_renamed_as_another_field_is_refused(tmp_path, model_dir, field):
    """The cube's name gives the default output's name: a 4510-4-30 cube saved as cube-001035-6-0017.fits would
    publish predictions/001035-6-0017_... for the wrong field."""
    source, wcs, xs, ys, _, _ = field
    cube = read_cube(source)
    meta = {"REFBAND": "r", "SIMULAT": True, "RERUN": 301, "RUN": 4510, "CAMCOL": 4, "FIELD": 30}
    renamed, right = tmp_path / "cube-001035-6-0017.fits", tmp_path / "cube-004510-4-0030.fits"
    for path in (renamed, right):
        write_cube(path, np.asarray(cube.data), wcs, "ugriz", meta)
    paths, (ra, dec) = DataPaths(tmp_path / "data"), wcs.wcs_pix2world(xs, ys, 0)
    with pytest.raises(StargalError, match=r"name says field 001035-6-0017 but its header holds run 4510 camcol 4"):
        run_predict(paths, ra=ra, dec=dec, model=str(model_dir), cube_path=str(renamed))
    assert not paths.predictions_dir.exists()
    out, _ = run_predict(paths, ra=ra, dec=dec, model=str(model_dir), cube_path=str(right))
    assert out.name.startswith("004510-4-0030_")


def test_default_outputs_of_different_requests_never_replace_each_other(tmp_path, model_dir, field):
    """The default output is named by the request: other positions, another --csv (even of the same positions or
    name), another cube of the same name or other settings get their own table, so an earlier one is never
    silently replaced; the same request again rewrites its own."""
    import re
    import shutil

    from stargal.stages.predict import PredictionRequest, default_output_name

    cube_path, wcs, xs, ys, *_ = field
    paths = DataPaths(tmp_path / "data")
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    common = {"model": str(model_dir), "cube_path": str(cube_path)}
    first, _ = run_predict(paths, ra=ra[:3], dec=dec[:3], **common)
    first_text = first.read_text()
    other, _ = run_predict(paths, ra=ra[3:6], dec=dec[3:6], **common)
    lower, _ = run_predict(paths, ra=ra[:3], dec=dec[:3], threshold=0.3, **common)
    nearly, _ = run_predict(paths, ra=ra[:3], dec=dec[:3], threshold=0.3000001, **common)
    again, _ = run_predict(paths, ra=ra[:3], dec=dec[:3], **common)
    assert len({first, other, lower, nearly}) == 4 and again == first and first.read_text() == first_text
    assert first.name.startswith("toy_toy_p15_drop_positions-") and lower.name.endswith("_threshold0.3.csv")
    assert nearly.name.endswith("_threshold0.3000001.csv")
    # two tables of one name and the same positions, in two folders; the same cube name in another folder
    outputs = {first, other, lower, nearly}
    for folder in ("a", "b"):
        table = tmp_path / folder / "targets.csv"
        table.parent.mkdir()
        rows = [f"{r!r},{d!r},{folder}{i}\n" for i, (r, d) in enumerate(zip(ra, dec, strict=True))]
        table.write_text("ra,dec,name\n" + "".join(rows))
        outputs.add(run_predict(paths, ra=ra, dec=dec, inputs=(table,), **common)[0])
    moved = tmp_path / "c" / cube_path.name
    moved.parent.mkdir()
    shutil.copy(cube_path, moved)
    outputs.add(run_predict(paths, ra=ra[:3], dec=dec[:3], model=str(model_dir), cube_path=str(moved))[0])
    assert len(outputs) == 7 and sorted(p.name for p in paths.predictions_dir.iterdir()) == sorted(
        p.name for p in outputs
    )
    assert any(p.name.startswith("toy_toy_p15_drop_targets-") for p in outputs)
    for kind in ("all", "detected"):
        request = PredictionRequest(cube_path, model_dir, kind == "all", kind == "detected", None, None, None, None,
                                    "off", 2.0, "onnx")  # fmt: skip
        name = default_output_name("f", "m", request)
        assert re.fullmatch(rf"f_m_{kind}-[0-9a-f]{{8}}_tta-off", name), name  # --min-snr: positions only


def test_an_unclosed_quote_is_refused_not_folded_over_the_lines_after_it(tmp_path):
    """Python's csv reader folds every line after an unclosed quote into one value: positions lost, exit 0."""
    last = tmp_path / "last.csv"
    last.write_text('ra,dec,name\n10,5,"Star A\n' + "".join(f"11,6,t{i}\n" for i in range(100)))
    with pytest.raises(StargalError, match=rf"^{last}: line 2: a value runs on to line 102; a double quote not"):
        read_coordinates(last)
    big = tmp_path / "big.csv"  # past csv's 128 kB field limit: csv.Error, once "unexpected Error"
    big.write_text('name,ra,dec\n"Star A,10,5\n' + "".join(f"t{i},11,6\n" for i in range(20000)))
    with pytest.raises(StargalError, match=rf"^{big}: line 2: not valid CSV \(field larger than field limit"):
        read_coordinates(big)


@pytest.mark.parametrize(
    ("values", "split"),
    [
        (["02", "34", "13.1018"], True),
        (["-07", "07", "22.4612"], True),
        (["+0", "0", "0"], True),
        (["10", "20", "30"], True),  # three positions in degrees look the same: written 10.0, they are not
        (["10.0", "20", "30"], False),
        (["02", "60", "13"], False),
        (["02", "34", "60"], False),
        (["02", "-34", "13"], False),
        (["02", "34"], False),
        (["02:34:13", "1", "2"], False),
    ],
)
def test_a_sexagesimal_angle_split_at_its_spaces_is_recognised(values, split):
    from stargal.predict_io import split_sexagesimal

    assert split_sexagesimal(values) is split


def test_unquoted_sexagesimal_and_declinations_in_hours_are_refused(tmp_path, field):
    cube = field[0]
    common = ("--data-dir", str(tmp_path), "--cube", str(cube))
    done = run_cli(*common, "--ra", "02", "34", "13.1018", "--dec", "-07", "07", "22.4612")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "quote it: --ra '02 34 13.1018' --dec '-07 07 22.4612'" in done.stderr
    done = run_cli(*common, "--ra", "38.5", "--dec", "1h")
    assert done.returncode == 2 and "dec '1h': a declination is in degrees" in done.stderr


@pytest.mark.parametrize("text", ["1h", "-0h30m", "+2h00m00s"])
def test_a_declination_in_hours_is_not_an_angle(text):
    from stargal.predict_io import parse_angles

    assert parse_angles([text], "dec")[1] == 0
    assert parse_angles([text.lstrip("+-")], "ra")[1] is None  # hours are right ascension's unit


@pytest.mark.parametrize(
    ("text", "kind"), [("45:60:00", "dec"), ("45:00:60", "dec"), ("-5d60m", "dec"), ("12h60m", "ra")]
)
def test_minutes_or_seconds_of_60_are_not_an_angle(text, kind):
    """astropy carries "45:60:00" over to 46 degrees (with a warning we hide): a mistyped position, not a position."""
    from stargal.predict_io import parse_angles

    assert parse_angles([text], kind)[1] == 0
    assert parse_angles(["12:59:59.9"], kind)[1] is None


def test_detect_flags_a_saturated_star_and_leaves_its_r_mag_empty(tmp_path, model_dir, field):
    """A star whose r core saturated and was interpolated over, as in real frames: saturated True and no r_mag in the
    table, yet classified as any source is; the other sources keep theirs."""
    from stargal import sky_models

    path, wcs, xs, ys, kinds, shape = field
    data = read_cube(path).data.astype(np.float32)
    gy, gx = np.mgrid[20 : shape[0] - 20 : 4, 20 : shape[1] - 20 : 4]
    free = np.hypot(gx.ravel()[:, None] - xs, gy.ravel()[:, None] - ys).min(axis=1) > 25
    sy, sx = int(gy.ravel()[free][0]), int(gx.ravel()[free][0])
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    star = np.exp(-0.5 * ((xx - sx - 0.2) ** 2 + (yy - sy + 0.3) ** 2) / 1.4**2) / (2 * np.pi * 1.4**2)
    for band in range(5):
        data[band] += 20_000.0 * star  # r 11.7: peak 1600 nanomaggies
    sky_models.saturate(data[2], 260.0)
    sky_models.interpolate_rows(data[2], sky_models.saturation_mask(data[2], 260.0))
    saturated = tmp_path / "cube-saturated.fits"
    write_cube(saturated, data, wcs, "ugriz", {"REFBAND": "r", "SIMULAT": True})
    out = tmp_path / "detected.csv"
    _, pred = run_predict(
        DataPaths(tmp_path / "data"), model=str(model_dir), cube_path=str(saturated), detect=True, out=str(out)
    )
    rows = read_out(out)
    at_star = np.hypot(pred.x - sx, pred.y - sy) < 3
    assert at_star.sum() == 1 and pred.saturated[at_star].all() and pred.status[at_star][0] == "ok"
    row = rows[int(np.flatnonzero(at_star)[0])]
    assert row["saturated"] == "True" and row["r_mag"] == "" and row["p_star"] != ""
    assert sum(r["saturated"] == "True" for r in rows) == 1 and all(r["r_mag"] for r in rows if r is not row)


# ---- ECSV and FITS tables given to --csv -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(model_dir):
    return load_bundle(model_dir)


def write_table(path: Path, columns: dict) -> Path:
    """``columns`` written by astropy as ECSV, FITS or gzip-compressed FITS, by ``path``'s name."""
    import gzip

    from astropy.table import Table

    table = Table(columns)
    if path.name.endswith(".gz"):
        plain = path.with_name(path.name[: -len(".gz")])
        table.write(plain, format="fits")
        path.write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    else:
        table.write(path, format="ascii.ecsv" if path.suffix == ".ecsv" else "fits")
    return path


def test_ecsv_and_fits_tables_classify_as_the_same_csv_does(tmp_path, bundle, field):
    """What astronomers have (predict.py's own .ecsv/.fits outputs among them) reads back as the CSV does."""
    from astropy import units as u
    from astropy.table import Table

    from stargal.predict_io import read_coordinate_table

    cube, wcs, xs, ys, kinds, _ = field
    ra, dec = wcs.wcs_pix2world(np.append(xs[:5], -40.0), np.append(ys[:5], 30.0), 0)  # five sources, one outside
    names = [f"s{i}" for i in range(len(ra))]
    sky = zip(names, ra.tolist(), dec.tolist(), strict=True)
    (tmp_path / "in.csv").write_text("name,ra,dec\n" + "".join(f"{n},{r!r},{d!r}\n" for n, r, d in sky))
    ra_csv, dec_csv, _ = read_coordinate_table(tmp_path / "in.csv")
    data, common = DataPaths(tmp_path / "data"), {"cube_path": str(cube), "bundle": bundle}
    _, want = run_predict(data, ra=ra_csv, dec=dec_csv, **common)
    assert list(want.status) == ["ok"] * 5 + ["outside"] and list(want.label[:5]) == list(kinds[:5])
    for suffix, out_suffix in ((".ecsv", ".fits"), (".fits", ".ecsv"), (".fit", ".csv"), (".FITS.gz", ".fits")):
        path = write_table(tmp_path / f"in{suffix}", {"name": names, "RA": ra * u.deg, "Dec": dec})
        ra_in, dec_in, carried = read_coordinate_table(path)
        np.testing.assert_array_equal(ra_in, ra_csv)
        np.testing.assert_array_equal(dec_in, dec_csv)
        out = tmp_path / f"p-{suffix.lstrip('.')}{out_suffix}"
        _, pred = run_predict(data, ra=ra_in, dec=dec_in, out=str(out), carried=carried, **common)
        assert list(pred.status) == list(want.status) and list(pred.label) == list(want.label)
        np.testing.assert_array_equal(pred.p_star, want.p_star)
        table = Table.read(out)
        assert table.colnames[:3] == ["name", "ra", "dec"] and [str(v) for v in table["name"]] == names
    ra_back, dec_back, carried = read_coordinate_table(out)  # predict.py's own output read back
    assert list(carried) == ["name", "input_x", "input_y", "input_p_star", "input_label", "input_status"]
    np.testing.assert_array_equal(ra_back, ra_csv)
    assert list(carried["input_status"]) == list(want.status) and str(carried["input_x"].unit) == "pix"


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".fits"])
def test_a_tables_other_columns_are_carried_with_their_types_units_and_masks(tmp_path, bundle, field, suffix):
    """A FITS or ECSV input's magnitudes stay numbers (with their unit) in a FITS or ECSV output, not text."""
    from astropy import units as u
    from astropy.table import MaskedColumn, Table

    from stargal.predict_io import read_coordinate_table

    cube, wcs, xs, ys, kinds, _ = field
    ra, dec = wcs.wcs_pix2world(xs[:3], ys[:3], 0)
    path = write_table(tmp_path / "in.fits", {
        "ra": ra * u.deg, "dec": dec * u.deg,
        "r_mag": MaskedColumn(np.array([20.5, 21.25, 19.0], np.float32), mask=[False, True, False], unit=u.mag),
        "n_obs": MaskedColumn(np.array([3, 4, 5], np.int32), mask=[False, False, True]),
        "flag": [True, False, True], "status": ["a", "b", "c"],
    })  # fmt: skip
    ra_in, dec_in, carried = read_coordinate_table(path)
    assert list(carried) == ["input_r_mag", "n_obs", "flag", "input_status"]  # names clash as in a CSV
    out = tmp_path / f"p{suffix}"
    run_predict(DataPaths(tmp_path / "data"), ra=ra_in, dec=dec_in, cube_path=str(cube), bundle=bundle,
                out=str(out), carried=carried)  # fmt: skip
    if suffix == ".csv":
        rows = read_out(out)
        assert [r["input_r_mag"] for r in rows] == ["20.5", "", "19.0"]  # float32's own digits
        assert [r["n_obs"] for r in rows] == ["3", "4", ""] and [r["flag"] for r in rows] == ["True", "False", "True"]
        assert [r["label"] for r in rows] == list(kinds[:3])
        return
    table = Table.read(out)
    assert table.colnames[:6] == ["input_r_mag", "n_obs", "flag", "input_status", "ra", "dec"]
    mag, n_obs = table["input_r_mag"], table["n_obs"]
    assert mag.dtype.kind == "f" and mag.dtype.itemsize == 4 and str(mag.unit) == "mag"
    assert list(np.ma.getmaskarray(mag)) == [False, True, False]
    assert mag[0] == 20.5 and mag[2] == 19.0
    assert n_obs.dtype.kind == "i" and list(np.ma.getmaskarray(n_obs)) == [False, False, True] and n_obs[1] == 4
    assert table["flag"].dtype == bool and list(table["flag"]) == [True, False, True]
    assert [str(v) for v in table["input_status"]] == ["a", "b", "c"] and list(table["label"]) == list(kinds[:3])


def test_a_cut_short_text_table_is_refused_and_carried_nan_and_inf_stay_values(tmp_path, bundle, field):
    """A CSV or ECSV cut in the middle of its last line (an interrupted copy) gave that row a number cut in part:
    dec 36.7 for 36.75078448, a place 3' away, classified with exit 0. Carried NaN and inf came out empty; and
    FITS, whose column names are case-blind, got two columns it cannot tell apart."""
    from astropy.table import Table

    from stargal.predict_io import check_fits_text, read_coordinate_table

    cube, wcs, xs, ys, kinds, _ = field
    ra, dec = wcs.wcs_pix2world(xs[:3], ys[:3], 0)
    whole = write_table(tmp_path / "whole.ecsv", {"ra": ra, "dec": dec, "flux": np.array([np.nan, np.inf, -np.inf])})
    csv = tmp_path / "whole.csv"
    csv.write_text("ra,dec\n" + "".join(f"{r!r},{d!r}\n" for r, d in zip(ra, dec, strict=True)))
    for source in (whole, csv):
        cut = tmp_path / f"cut{source.suffix}"
        cut.write_bytes(source.read_bytes()[:-4])
        with pytest.raises(StargalError, match=rf"^{cut}: line \d+, the last, has no line end: the file looks cut"):
            read_coordinate_table(cut)
    ra_in, dec_in, carried = read_coordinate_table(whole)
    for suffix in (".ecsv", ".fits", ".csv"):
        out = tmp_path / f"p{suffix}"
        run_predict(DataPaths(tmp_path / "data"), ra=ra_in, dec=dec_in, cube_path=str(cube), bundle=bundle,
                    out=str(out), carried=carried)  # fmt: skip
        if suffix == ".csv":
            assert [r["flux"] for r in read_out(out)] == ["nan", "inf", "-inf"]
            continue
        flux = Table.read(out, **({"mask_invalid": False} if suffix == ".fits" else {}))["flux"]  # FITS: NaN is NaN
        assert not np.ma.getmaskarray(flux).any(), suffix
        assert np.isnan(flux[0]) and list(np.asarray(flux)[1:]) == [np.inf, -np.inf], suffix
    with pytest.raises(StargalError, match=r"columns 'mag' and 'MAG' differ only in case, which FITS does not"):
        check_fits_text(tmp_path / "o.fits", {"mag": np.zeros(2), "MAG": np.ones(2)})
    check_fits_text(tmp_path / "o.ecsv", {"mag": np.zeros(2), "MAG": np.ones(2)})  # ECSV tells them apart


def test_a_tables_angle_units_are_converted_and_its_text_read_as_a_csvs(tmp_path):
    from astropy import units as u
    from astropy.io import fits

    from stargal.predict_io import read_coordinate_table

    hours = write_table(tmp_path / "h.ecsv", {"ra": [1.5, 22.5] * u.hourangle, "dec": [-1800.0, 3600.0] * u.arcsec})
    ra, dec, carried = read_coordinate_table(hours)
    assert ra.tolist() == [22.5, 337.5] and dec.tolist() == [-0.5, 1.0] and carried == {}
    radians = write_table(tmp_path / "r.fits", {"RA": [np.pi / 2] * u.rad, "DEC": [-30.0] * u.arcmin})
    np.testing.assert_allclose(np.concatenate(read_coordinate_table(radians)[:2]), [90.0, -0.5], rtol=1e-12)
    # FITS has no hourangle unit: RA in hours is TUNIT 'h', or astropy's own name written by other software
    for unit in ("h", "hourangle"):
        path = write_table(tmp_path / f"{unit}.fits", {"ra": [1.5, 22.5], "dec": [0.0, 1.0]})
        fits.setval(path, "TUNIT1", value=unit, ext=1)
        assert read_coordinate_table(path)[0].tolist() == [22.5, 337.5]
    # other software's spellings of degrees (astropy knows only 'deg' and 'degree') are degrees, not "not an angle"
    for unit in ("DEG", "degrees", "Degree"):
        path = write_table(tmp_path / f"{unit}.fits", {"ra": [1.5, 22.5], "dec": [0.0, 1.0]})
        fits.setval(path, "TUNIT1", value=unit, ext=1)
        fits.setval(path, "TUNIT2", value=unit, ext=1)
        assert read_coordinate_table(path)[0].tolist() == [1.5, 22.5]
    # arcminutes and arcseconds written as primes; other times than hours are no RA (days read as hours: 360 x)
    path = write_table(tmp_path / "primes.fits", {"ra": [1.5, 22.5], "dec": [30.0, -60.0]})
    fits.setval(path, "TUNIT1", value="'", ext=1)
    fits.setval(path, "TUNIT2", value='"', ext=1)
    np.testing.assert_allclose(np.concatenate(read_coordinate_table(path)[:2]), [0.025, 0.375, 30 / 3600, -1 / 60])
    for unit in ("d", "s", "as", "min"):
        path = write_table(tmp_path / f"time-{unit}.fits", {"ra": [1.5, 22.5], "dec": [0.0, 1.0]})
        fits.setval(path, "TUNIT1", value=unit, ext=1)
        with pytest.raises(StargalError, match=rf"column ra: unit '{unit}' is a time, not an angle"):
            read_coordinate_table(path)
    with pytest.raises(StargalError, match=r"compass letters \(N, S, E, W\) are not read"):
        (tmp_path / "w.csv").write_text("ra,dec\n13:21:27.5W,+10:00:00\n")
        read_coordinates(tmp_path / "w.csv")
    text = write_table(tmp_path / "t.ecsv", {"ra": ["12:34:56.7", "12h34m56.7s", "188.73625"],
                                             "dec": ["+12:34:56", "-12d34m56s", "-3"]})  # fmt: skip
    ra, dec, _ = read_coordinate_table(text)
    np.testing.assert_allclose(ra, [188.73625] * 3)
    np.testing.assert_allclose(dec, [12.582222222, -12.582222222, -3.0])


def _bad_tables() -> list:
    from astropy import units as u
    from astropy.table import Column, MaskedColumn
    from astropy.time import Time

    one = {"ra": [1.0, 2.0], "dec": [1.0, 2.0]}
    return [
        (".ecsv", {"x": [1.0], "dec": [2.0]}, r": missing column\(s\) ra \(columns: x,dec\)$"),
        (".fits", {**one, "RA": [3.0, 4.0]}, r": column\(s\) ra appear more than once \(columns: ra,dec,RA\)$"),
        (".ecsv", {**one, "dec": MaskedColumn([1.0, 2.0], mask=[False, True])}, r": row 2: dec is missing \("),
        (".fits", {**one, "ra": [1.0, np.nan]}, r": row 2: ra is missing \(an empty, masked or NaN value\)$"),
        (".ecsv", {**one, "ra": [1.0, np.nan]}, r": row 2: ra nan is not an angle in degrees"),
        (".ecsv", {**one, "ra": ["10", "12:xx"]}, r": row 2: ra '12:xx' is not an angle \(degrees or sexagesimal\)$"),
        (".fits", {**one, "dec": [1.0, 95.0]}, r": row 2: dec 95 is outside \[-90, 90\]$"),
        (".ecsv", {**one, "ra": [1.0, 2.0] * u.mag}, r": column ra: unit 'mag' is not an angle \(deg, arcmin,"),
        (".fits", {**one, "dec": [1.0, 2.0] * u.pix}, r": column dec: unit 'pix' is not an angle"),
        (".ecsv", {**one, "dec": [1.0, 2.0] * u.hourangle}, r": column dec: unit 'hourangle': a declination is in"),
        (".ecsv", {**one, "dec": Column(["1", "2"], unit="hourangle")}, r": column dec: text with unit 'hourangle'"),
        (".fits", {**one, "ra": np.ones((2, 2))}, r": column ra: 2 values per row; a position is one value per row$"),
        (".ecsv", {"ra": Time([59000.0, 59001.0], format="mjd"), "dec": [1.0, 2.0]}, r": column ra: a Time column"),
        (".fits", {"ra": np.zeros(0), "dec": np.zeros(0)}, r": no coordinates \(a table without rows\)$"),
    ]


@pytest.mark.parametrize(("suffix", "columns", "message"), _bad_tables())
def test_a_bad_table_is_one_line_naming_the_file_and_row(tmp_path, suffix, columns, message):
    """No silent skip nor default: a masked, NaN or mistyped position, or a unit that is no angle, is refused."""
    from stargal.predict_io import read_coordinate_table

    path = write_table(tmp_path / f"in{suffix}", columns)
    with pytest.raises(StargalError, match=message) as info:
        read_coordinate_table(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_columns_the_output_cannot_hold_are_left_out_by_name_and_the_positions_read(tmp_path, caplog):
    """A catalog as it comes (an SDSS sweep's five-band PSFFLUX, a Time column) is classified, not refused: only
    those columns are left out of the output, named in one warning."""
    from astropy.time import Time

    from stargal.predict_io import read_coordinate_table

    columns = {"ra": [1.0, 2.0], "dec": [3.0, 4.0], "PSFFLUX": np.ones((2, 5)), "FIELD": [7, 8]}
    path = write_table(tmp_path / "sweep.fits", columns)
    with caplog.at_level(logging.WARNING, logger="stargal"):
        ra, dec, carried = read_coordinate_table(path)
    np.testing.assert_array_equal(ra, [1.0, 2.0])
    assert list(carried) == ["FIELD"] and list(carried["FIELD"]) == [7, 8]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: columns not carried to the output, which holds one number or text a cell: PSFFLUX (5 values per row)"
    ]
    caplog.clear()
    path = write_table(tmp_path / "seen.ecsv", {"ra": [1.0], "dec": [2.0], "seen": Time([59000.0], format="mjd")})
    with caplog.at_level(logging.WARNING, logger="stargal"):
        assert read_coordinate_table(path)[2] == {}
    assert "seen (a Time column)" in caplog.text


@pytest.mark.real
def test_a_real_sweep_is_read_as_a_catalog_of_positions(sample_dir):
    from stargal.predict_io import read_coordinate_table

    sweep = sample_dir / "004510-4-0030" / "calibObj-004510-4-star.fits.gz"
    if not sweep.is_file():
        pytest.skip("the sample lacks 4510-4-30's star sweep")
    ra, dec, carried = read_coordinate_table(sweep)
    assert len(ra) > 1000 and np.all((dec > -90) & (dec < 90))
    assert {"RUN", "CAMCOL", "FIELD", "ID"} <= set(carried) and "PSFFLUX" not in carried


def test_a_corrupt_or_truncated_table_is_one_line_naming_the_file(tmp_path):
    from astropy.io import fits

    from stargal.predict_io import read_coordinate_table

    whole = write_table(tmp_path / "whole.fits", {"ra": np.linspace(1, 2, 2000), "dec": np.zeros(2000)})
    raw = whole.read_bytes()
    gz = write_table(tmp_path / "gz.fits.gz", {"ra": np.linspace(1, 2, 2000), "dec": np.zeros(2000)}).read_bytes()
    image = tmp_path / "image.fits"
    fits.writeto(image, np.zeros((3, 3)))
    files = {
        "cut.fits": (raw[: len(raw) // 2], "a truncated FITS file"),
        "padding.fits": (raw[:-100], "a truncated FITS file"),  # every row there, the file still cut short
        "header.fits": (raw[:4000], r"a truncated or corrupt FITS file \(No table found\)"),  # the table's header cut
        "cut.fits.gz": (gz[: len(gz) // 2], "a truncated or corrupt gzip file"),
        "trailer.fits.gz": (gz[:-1], "a truncated or corrupt gzip file"),  # astropy reads this one whole
        "text.fits": (b"ra,dec\n1,2\n", "cannot read a FITS table"),
        "plain.ecsv": (b"ra,dec\n1,2\n", r"cannot read an ECSV table \(ECSV header line"),
    }
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
    cases = {tmp_path / n: m for n, (_, m) in files.items()}
    cases |= {
        image: r"cannot read a FITS table \(No table found\)",
        tmp_path / "none.fits": "coordinate file not found",
    }
    for path, message in cases.items():
        with pytest.raises(StargalError, match=f"^{path}: {message}") as info:
            read_coordinate_table(path)
        assert "\n" not in str(info.value)
    assert len(read_coordinate_table(whole)[0]) == 2000


def test_a_unit_fits_cannot_hold_is_dropped_from_a_fits_output_not_fatal(tmp_path, caplog):
    """astropy refuses to write hourangle (a scale of 15) to FITS: the table would be lost after the classification."""
    from astropy import units as u
    from astropy.table import Table

    from stargal.predict_io import predictions_table, read_coordinate_table, write_predictions

    path = write_table(tmp_path / "in.ecsv", {"ra": [10.0], "dec": [1.0], "ra_h": [0.6667] * u.hourangle})
    ra, dec, carried = read_coordinate_table(path)
    pred = Predictions(ra, dec, np.zeros(1), np.zeros(1), np.array([0.9], np.float32), np.array(["star"]),
                       np.array(["ok"]))  # fmt: skip
    table = predictions_table(pred, {"MODEL": "m"}, carried)
    write_predictions(tmp_path / "p.ecsv", table)
    assert str(Table.read(tmp_path / "p.ecsv")["ra_h"].unit) == "hourangle"
    write_predictions(tmp_path / "p.fits", table)
    written = Table.read(tmp_path / "p.fits")
    assert written["ra_h"].unit is None and written["ra_h"][0] == pytest.approx(0.6667)
    assert str(written["ra"].unit) == "deg" and str(table["ra_h"].unit) == "hourangle"  # the table itself kept it
    assert "FITS cannot hold the unit of ra_h (hourangle)" in caplog.text


def test_cli_names_the_table_formats_and_refuses_a_corrupt_table_in_one_line(tmp_path, field):
    from stargal.predict_io import table_format

    assert [table_format(n) for n in ("a.ecsv", "a.FITS", "a.fit", "a.fits.gz", "a.csv", "a.txt", "a.fits.bz2")] == [
        "ascii.ecsv", "fits", "fits", "fits", None, None, None]  # fmt: skip
    cube = field[0]
    bad = tmp_path / "targets.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    done = run_cli("--data-dir", str(tmp_path), "--cube", str(cube), "--csv", str(bad))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and f"{bad}: " in done.stderr
    done = run_cli("--help")
    assert "ECSV (.ecsv), FITS (.fits," in " ".join(done.stdout.split()) and "VOTable (.vot," in " ".join(
        done.stdout.split()
    )


def test_text_a_fits_output_cannot_hold_is_refused_before_any_classification(tmp_path, field):
    """A carried name like 'Café' made astropy's FITS writer fail after the work ("unexpected UnicodeEncodeError");
    it is one line naming the column and row before the model loads, and .ecsv writes it."""
    cube = field[0]
    coords = tmp_path / "targets.csv"
    coords.write_text("ra,dec,name\n336.7,26.94,Vega\n336.7,26.95,Café\n", encoding="utf-8")
    out = tmp_path / "p.fits"
    done = run_cli("--data-dir", str(tmp_path), "--cube", str(cube), "--csv", str(coords), "--out", str(out))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"--out {out}: column 'name' holds text that is not ASCII (row 2: 'Café')" in done.stderr
    assert not out.exists()
    from stargal.predict_io import check_fits_text

    check_fits_text(tmp_path / "p.ecsv", {"name": np.array(["Café"])})  # ECSV is UTF-8: no error
    with pytest.raises(StargalError, match="column name 'näme' is not ASCII"):
        check_fits_text(out, {"näme": np.array(["x"])})


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")  # reading "#name" back, below
@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".fits"])
def test_a_carried_value_beginning_with_a_hash_keeps_its_row(tmp_path, field, suffix):
    """A name "#1" in the first column made its output line a comment to astropy's readers: the ECSV output read
    back one row short, exit 0. Such values are quoted; a FITS output's advice on the name "#name" stays quiet."""
    from astropy.table import Table

    cube = field[0]
    xs, ys = [20.0, 35.0], [20.0, 40.0]
    ra, dec = read_cube(cube).wcs.celestial.wcs_pix2world(xs, ys, 0)
    coords = tmp_path / "targets.csv"
    coords.write_text(f"#name,ra,dec,note\n#1,{ra[0]:.9f},{dec[0]:.9f},#x\nB,{ra[1]:.9f},{dec[1]:.9f},y\n")
    out = tmp_path / f"p{suffix}"
    data = str(tmp_path / "data")
    done = run_cli("--data-dir", data, "--cube", str(cube), "--csv", str(coords), "--out", str(out), "-q")
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    table = Table.read(out)
    assert len(table) == 2 and list(table["#name"]) == ["#1", "B"] and list(table["note"]) == ["#x", "y"]


def test_a_model_named_by_one_of_its_files_is_its_folder(tmp_path, model_dir):
    """--model .../model.onnx said "no model.keras there nor in .../model.onnx", of a folder that holds one."""
    from stargal.stages.predict import resolve_model_dir

    paths = DataPaths(tmp_path / "data")
    for name in ("model.keras", "model.json"):
        assert resolve_model_dir(paths, str(model_dir / name)) == model_dir.resolve()
    with pytest.raises(StargalError, match=r"^--model nosuch: no model.keras there nor in .*models/nosuch \(a model"):
        resolve_model_dir(paths, "nosuch")


def test_positions_whose_ra_is_in_hours_get_a_warning_not_only_outside(tmp_path, field, caplog):
    """A table's RA in hours stored as bare numbers reads as degrees: every position 'outside', exit 0, no hint."""
    import logging

    from stargal.stages.predict import warn_hours_as_degrees

    cube = read_cube(field[0])
    ra, dec = cube.wcs.celestial.wcs_pix2world([20.0, 35.0], [20.0, 40.0], 0)
    nan = np.full(2, np.nan)
    pred = Predictions(ra / 15.0, dec, nan, nan, nan, np.array(["", ""]), np.array(["outside", "outside"]))
    with caplog.at_level(logging.WARNING, logger="stargal"):
        warn_hours_as_degrees(pred, cube.wcs, cube.shape, "toy")
        pred.ra = ra + 30.0  # outside whichever way it is read: nothing to say
        warn_hours_as_degrees(pred, cube.wcs, cube.shape, "toy")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("all 2 positions lie outside field toy, but 2 would lie in it")


def test_cube_array_gives_the_models_band_order_as_native_float32(tmp_path):
    from stargal.stages.predict import cube_array

    planes = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    _, wcs, *_ = toy.toy_cube()
    write_cube(tmp_path / "cube.fits", planes, wcs, "zirgu", {"REFBAND": "r"})
    cube = read_cube(tmp_path / "cube.fits")  # memory-mapped, big-endian as FITS stores it
    data = cube_array(cube, "ugriz")
    assert data.dtype == np.float32 and data.dtype.isnative and data.flags.c_contiguous
    np.testing.assert_array_equal(data, planes[::-1])
    with pytest.raises(StargalError, match="lacks band"):
        cube_array(cube, "ugrizy")


def test_a_bad_option_is_named_before_the_csv_is_read(tmp_path):
    """--threshold 1.5 (or --min-snr -1) beside a --csv table was named only after the table was read: a
    200,000-row table took a minute first, and a table's own error or warnings came instead of the option's."""
    table = tmp_path / "t.csv"
    table.write_text("ra,dec\n10,1\n11\n")  # its own error: line 3, too few values
    for option, message in [
        (("--threshold", "1.5"), "--threshold 1.5: must be a probability strictly between 0 and 1"),
        (("--min-snr", "-1"), "--min-snr -1.0: must be a number >= 0 (0 classifies every position)"),
    ]:
        proc = run_cli("--cube", str(tmp_path / "cube-000001-1-0001.fits"), "--csv", str(table), *option)
        assert proc.returncode == 2 and proc.stderr.strip() == f"predict.py: error: {message}"


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"threshold": 1.5}, r"threshold 1\.5: not a probability"),
        ({"threshold": None}, r"threshold None: not a probability"),
        ({"threshold": float("nan")}, r"threshold nan: not a probability"),
        ({"bands": "ugrr"}, r"bands 'ugrr': not distinct letters"),
        ({"bands": "gri"}, r"model\.keras: takes 5 bands, model\.json names 3 \(gri\)"),
    ],
)
def test_a_sealed_model_json_whose_threshold_or_bands_cannot_be_the_networks_is_refused(
    tmp_path, model_dir, change, refusal
):
    """Resealed by hand, a model.json with a threshold of 1.5 had every source called galaxy with exit 0, and a
    missing threshold fell back to 0.5; its bands must be the network's."""
    from stargal import fsio

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    meta = {k: v for k, v in json.loads((copy / "model.json").read_text()).items() if k != fsio.INTEGRITY_KEY}
    meta = {k: v for k, v in (meta | change).items() if v is not None}
    fsio.seal(copy / "model.json", [copy / "model.keras"], meta)
    with pytest.raises(StargalError, match=refusal):
        load_bundle(copy)
