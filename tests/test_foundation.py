"""Foundation modules: paths, SDSS file formats, atomic I/O, tables, CLI helpers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from stargal import cli, fsio, sdss, tables
from stargal.config import BANDS, REFERENCE
from stargal.cube import read_cube, write_cube
from stargal.errors import StargalError
from stargal.paths import DataPaths, FieldId


def test_paths_mirror_the_sas_layout(tmp_path):
    paths = DataPaths(tmp_path)
    fid = FieldId(301, 8162, 6, 80)
    assert paths.frame(fid, "r") == tmp_path / "sas/photoObj/frames/301/8162/6/frame-r-008162-6-0080.fits.bz2"
    assert paths.irg_jpeg(fid).name == "frame-irg-008162-6-0080.jpg"
    assert paths.catalog(301, 8162, 6, "gal") == tmp_path / "sas/sweeps/dr13_final/301/calibObj-008162-6-gal.fits.gz"
    assert paths.cube(fid).name == "cube-008162-6-0080.fits"


def test_sdss_names_round_trip():
    assert sdss.parse_filename(sdss.frame_filename("g", 8162, 6, 80)) == {
        "kind": "frame",
        "band": "g",
        "run": 8162,
        "camcol": 6,
        "field": 80,
    }
    assert sdss.parse_filename("calibObj-004510-4-star.fits.gz")["catalog"] == "star"
    assert sdss.parse_filename("index.html") is None
    with pytest.raises(StargalError, match="unknown band"):
        sdss.frame_filename("y", 8162, 6, 80)


def _header() -> fits.Header:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [331.7, 26.96]
    wcs.wcs.crpix = [10, 8]
    wcs.wcs.cd = [[-3e-5, 1.06e-4], [1.06e-4, 3e-5]]
    header = wcs.to_header()
    header["FILTER"] = "r"
    header["RADECSYS"] = "ICRS"  # deprecated keyword the real frames carry
    return header


def test_frame_write_read_round_trip_without_warnings(tmp_path, recwarn):
    image = np.random.default_rng(0).normal(size=(15, 20)).astype(np.float32)
    path = tmp_path / "frame-r-008162-6-0080.fits.bz2"
    sdss.write_frame(path, image, _header())
    frame = sdss.read_frame(path)
    np.testing.assert_array_equal(frame.image, image)
    assert frame.band == "r" and frame.image.dtype == np.float32
    assert frame.wcs.has_celestial
    assert not [w for w in recwarn if "RADECSYS" in str(w.message)]


def test_read_frame_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "frame-r-008162-6-0080.fits.bz2"
    corrupt.write_bytes(b"BZh91AY&SY not really bz2")
    with pytest.raises(StargalError, match=str(corrupt.name)):
        sdss.read_frame(corrupt)
    with pytest.raises(StargalError, match="not found"):
        sdss.read_frame(tmp_path / "missing.fits.bz2")
    no_wcs = tmp_path / "nowcs.fits.bz2"
    sdss.write_frame(no_wcs, np.zeros((4, 4)), fits.Header())
    with pytest.raises(StargalError, match="WCS"):
        sdss.read_frame(no_wcs)


def test_catalog_write_read_keeps_real_dtypes(tmp_path):
    n = 4
    columns = {
        "RUN": np.full(n, 8162, np.int16),
        "RERUN": np.array(["301"] * n),
        "CAMCOL": np.full(n, 6, np.uint8),
        "FIELD": np.arange(n, dtype=np.int16),
        "ID": np.arange(1, n + 1, dtype=np.int16),
        "OBJC_TYPE": np.full(n, 6, np.int32),
        "RA": np.linspace(1, 2, n),
        "DEC": np.linspace(3, 4, n),
        "PSF_FWHM": np.ones((n, 5), np.float32),
        "PSFFLUX": np.ones((n, 5), np.float32),
        "MODELFLUX": np.ones((n, 5), np.float32),
    }
    path = tmp_path / "calibObj-008162-6-star.fits.gz"
    sdss.write_catalog(path, columns)
    cat = sdss.read_catalog(path)
    assert cat["PSFFLUX"].shape == (n, 5)
    np.testing.assert_array_equal(cat["RA"], columns["RA"])
    with fits.open(path) as hdul:
        assert hdul[1].columns["RERUN"].format == "3A" and hdul[1].columns["PSFFLUX"].format == "5E"
    with pytest.raises(StargalError, match="lacks column"):
        sdss.read_catalog(path, columns=("RA", "NOPE"))


@pytest.mark.real
def test_real_catalog_reads_with_the_same_code(sample_dir):
    cat = sdss.read_catalog(sample_dir / "004510-4-0030" / "calibObj-004510-4-star.fits.gz")
    assert len(cat) == 5232 and set(np.unique(cat["OBJC_TYPE"])) == {6}
    assert int(np.sum(cat["FIELD"] == 30)) == 161


def test_magnitude():
    np.testing.assert_allclose(sdss.magnitude([1.0, 100.0]), [22.5, 17.5])
    assert np.isnan(sdss.magnitude([0.0, -1.0])).all()


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.npy"
    with pytest.raises(RuntimeError), fsio.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert not target.exists() and list(target.parent.iterdir()) == []
    fsio.save_npy(target, np.arange(3, dtype=np.float32))
    assert fsio.load_npy(target).dtype == np.float32


def test_table_round_trip_keeps_order_and_nan(tmp_path):
    table = np.zeros(3, tables.OBJECT_DTYPE)
    table["objid"] = ["301-8162-6-80-1", "301-8162-6-80-2", "301-8162-6-81-1"]
    table["x"] = [1.25, np.nan, 1 / 3]
    table["label"] = [0, 1, 1]
    path = tmp_path / "objects.csv"
    tables.write_table(path, table)
    back = tables.read_table(path)
    np.testing.assert_array_equal(back["objid"], table["objid"])
    np.testing.assert_array_equal(back["x"], table["x"])  # NaN == NaN for array_equal on floats
    path.write_text("objid,x\n1,2\n")
    with pytest.raises(StargalError, match="missing column"):
        tables.read_table(path)


def test_cube_round_trip(tmp_path):
    header = _header()
    data = np.random.default_rng(1).normal(size=(5, 15, 20)).astype(np.float32)
    data[0, :, :2] = np.nan
    write_cube(tmp_path / "cube.fits", data, sdss.quiet_wcs(header), "".join(BANDS), {"REFBAND": "r", "FIELD": 80})
    cube = read_cube(tmp_path / "cube.fits")
    np.testing.assert_array_equal(cube.data, data)
    assert cube.bands == "ugriz" and cube.band_index("r") == 2 and cube.header["FIELD"] == 80


def test_cli_parses_fields_and_defaults():
    parser = cli.make_parser("test", splits=True, workers=True)
    args = parser.parse_args([])
    fs = cli.field_set(args)
    assert fs == REFERENCE
    args = parser.parse_args(["--fields", "80,81", "82-84", "--train-fields", "80", "81"])
    assert cli.field_set(args).fields == (80, 81, 82, 83, 84)
    assert args.train_fields == (80, 81)


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5"])
def test_a_seed_numpy_and_tensorflow_refuse_is_an_argument_error(seed, capsys):
    """--seed -1 reached numpy and ended in "unexpected ..., please report it"."""
    with pytest.raises(SystemExit) as exit_info:
        cli.make_parser("test").parse_args(["--seed", seed])
    assert exit_info.value.code == 2 and "argument --seed:" in capsys.readouterr().err
    assert cli.make_parser("test").parse_args(["--seed", "4294967295"]).seed == 2**32 - 1


def test_cli_errors_are_one_line(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "from stargal.cli import run_main\nfrom stargal.errors import StargalError\n"
        "def main(argv):\n    raise StargalError('data/x.fits: broken')\nrun_main(main)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "s.py: error: data/x.fits: broken"


def test_atomic_files_get_ordinary_permissions(tmp_path):
    target = tmp_path / "out.txt"
    fsio.write_text(target, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_markdown_table_refuses_a_row_that_does_not_match_its_header():
    assert tables.markdown_table(["a", "b"], [[1, 2]]).splitlines()[-1] == "| 1 | 2 |"
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        tables.markdown_table(["a", "b"], [[1, 2, 3]])


def test_a_previous_record_of_other_settings_is_redone_as_such_not_called_damaged(tmp_path, caplog):
    """real_sky.py on a sample that gained a field said its earlier outputs were "incomplete or damaged": another
    set of inputs names other outputs, which is no damage."""
    import logging

    record, table = tmp_path / "record.json", tmp_path / "a.csv"
    fsio.write_text(table, "x\n")
    fsio.seal(record, [table], {"settings": {"fields": ["a"]}})
    assert fsio.previous_record(record, [table], {"fields": ["a"]}) is not None
    more = [table, tmp_path / "b.csv"]
    with caplog.at_level(logging.INFO, logger="stargal"):
        assert fsio.previous_record(record, more, {"fields": ["a", "b"]}) is None
        assert fsio.previous_record(record, more, {"fields": ["a"]}) is None  # same settings, a file missing
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == f"{record}: made with other settings or inputs; redoing it"
    assert said[1].startswith(f"{record}: earlier outputs incomplete or damaged (")


def test_a_bad_latest_dataset_pointer_is_named_not_blamed_on_dataset(tmp_path):
    """A damaged datasets/LATEST was reported as "--dataset '../../../etc': use letters...", an option the user
    never gave; a LATEST naming a missing dataset did not say where the name came from."""
    from stargal.dataset import resolve_dataset

    paths = DataPaths(tmp_path / "data")
    paths.latest_dataset.parent.mkdir(parents=True)
    for text, words in (("../../../etc\n", "not a dataset's name"), ("gone\n", "names the dataset 'gone'")):
        paths.latest_dataset.write_text(text)
        with pytest.raises(StargalError) as caught:
            resolve_dataset(paths, None)
        message = str(caught.value)
        assert message.startswith(f"{paths.latest_dataset}: {words}") and "--dataset '" not in message, message
    with pytest.raises(StargalError, match=r"^--dataset '\.\./x': use letters"):
        resolve_dataset(paths, "../x")  # the option's own value is still named as the option


@pytest.mark.parametrize("script", ["01_alignment.py", "02_preparation.py", "predict.py", "make_report.py"])
def test_scripts_with_nothing_random_refuse_a_seed(script):
    """01 and 02 took --seed and ignored it: a user changing it got 'current' and no word that it did nothing."""
    from stargal.paths import PROJECT_ROOT

    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "code" / script), "--seed", "5"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2 and "unrecognized arguments: --seed 5" in res.stderr, res.stderr


@pytest.mark.parametrize("lock_name", [".lock", ".publish.lock"])
def test_a_run_on_a_data_folder_inside_another_keeps_the_in_use_ones_temporaries(tmp_path, lock_name):
    """A stage started on data/ deleted the temporary files a run on data/exp (its own --data-dir) was writing at that
    moment, whose commit then failed (or a predict there, holding its publication lock shared); --verify of data/
    called them left by an interrupted run. A nested folder nobody holds is cleaned as before."""
    import fcntl

    from stargal.integrity import verify_data_folder

    outer = DataPaths(tmp_path / "data")
    stale = outer.root / "aligned" / ".cube.fits.0123456789ab.part"
    writing = outer.root / "exp" / "datasets" / ".train_x.npy.0123456789ab.part"
    idle = outer.root / "old" / ".x.npy.0123456789ab.part"
    for path in (stale, writing, idle):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"half")
    for folder in ("exp", "old"):
        (outer.root / folder / lock_name).touch()
    fd = os.open(outer.root / "exp" / lock_name, os.O_RDONLY)  # another open file: as another process holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if lock_name == ".publish.lock" else fcntl.LOCK_EX)
        assert {f.path for f in verify_data_folder(outer)[0]} == {stale, idle}
        assert set(fsio.remove_stale_temporaries(outer.root)) == {stale, idle}
        assert writing.exists()
    finally:
        os.close(fd)


@pytest.mark.parametrize("entry", [[], "sealed", 3])
def test_a_record_whose_integrity_entry_is_not_an_object_is_damaged_not_a_crash(tmp_path, entry):
    """A record damaged into valid JSON whose integrity entry is no object (a list, a string) ended every reader and
    the stage that writes it in "unexpected AttributeError ... please report it", exit 1; it is a damaged output,
    named, that a rerun redoes."""
    import json

    from stargal import integrity

    paths = DataPaths(tmp_path)
    paths.dataset_json("d").parent.mkdir(parents=True)
    paths.dataset_json("d").write_text(json.dumps({"name": "d", "integrity": entry}))
    assert not fsio.check_seal(paths.dataset_json("d")).ok
    with pytest.raises(StargalError, match="dataset 'd' is incomplete or damaged: .*no integrity record"):
        integrity.require_dataset(paths, "d")
