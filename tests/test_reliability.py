"""Fault injection: real files truncated, bit-flipped, mislabelled, unwritable and on a full disk.

Each class of fault the README's reliability promise lists is injected into real outputs of the stages (the
simulated tiny sky run through stages 00-02, a tiny model for stage 03) or into the real SDSS sample, and each
test asserts the exit status, a single-line message naming the file, that nothing wrong is served, and that a
rerun without --force recovers. A full disk is a small tmpfs (as root) or a file-size limit; a read-only
data folder is a read-only bind mount (skipped where mounting is not allowed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import gzip
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import STAR_FIELD_DIR, TEST_FIELD_DIR, TINY, run_script_here

from stargal import cli, fsio, integrity, sdss
from stargal.config import BANDS, SPLITS
from stargal.errors import CorruptFileError, StargalError
from stargal.paths import DataPaths, FieldId

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT / "code"
F80, F81 = (FieldId(301, 8162, 6, f) for f in (80, 81))
TINY_FIELDS = ["--fields", "80", "81", "82", "83"]
SPLIT_ARGS = ["--train-fields", "80", "83", "--val-fields", "82", "--test-fields", "81"]
MODEL_CONFIG = {"architecture": "reference_base", "hyperparameters": {"filters": 8, "dense_units": 16}}
MODEL_ARGS = ["--epochs", "1", "--batch-size", "128", "--no-plots"]


# ---------------------------------------------------------------------------------------------------------
# helpers


def run(
    script: str, paths: DataPaths | Path | None, *args: str, preexec=None, timeout=600
) -> subprocess.CompletedProcess:
    """Run a script (or ``-m stargal.pipeline``) on a data folder, quietly; returns the finished process."""
    cmd = [sys.executable, *(["-m", "stargal.pipeline"] if script == "pipeline" else [str(CODE / script)])]
    if paths is not None:
        cmd += ["--data-dir", str(paths.root if isinstance(paths, DataPaths) else paths)]
    cmd += [*args] if script == "pipeline" else [*args, "-q"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)


def run_here(script: str, paths: DataPaths | Path, *args: str, capsys) -> subprocess.CompletedProcess:
    """``run`` in this process (``conftest.run_script_here``), for a script whose process is not what is tested: a
    Python and TensorFlow started for each run cost seconds; the exit status, stdout and stderr are the script's."""
    root = paths.root if isinstance(paths, DataPaths) else paths
    return run_script_here(CODE / script, ["--data-dir", str(root), *args, "-q"], capsys)


def error_line(proc: subprocess.CompletedProcess, *needles: str, status: int | None = None) -> str:
    """The one error line of a failed run (no traceback), checked to contain every needle."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if status is not None:
        assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    return errors[0]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def flip(path: Path, at: float = 0.5, keep_time: bool = False) -> None:
    """Invert one byte in place (at a fraction of the file); with ``keep_time`` the modification time is put
    back, so that only the content (and the inode change time) tells."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(int(st.st_size * at))
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    if keep_time:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def truncate(path: Path, keep: float = 0.5, keep_time: bool = True) -> None:
    st = path.stat()
    os.truncate(path, int(st.st_size * keep))
    if keep_time:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy_data(template: DataPaths, tmp_path: Path, name: str = "data") -> DataPaths:
    paths = DataPaths(tmp_path / name)
    shutil.copytree(template.root, paths.root)
    return paths


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if fsio.TEMPORARY_RE.match(p.name)]


def dataset_name(paths: DataPaths) -> str:
    return paths.latest_dataset.read_text().strip()


@contextlib.contextmanager
def mounted(target: Path, *options: str):
    """``mount`` at ``target`` for the block (skips the test where this process may not mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root")
    for args in options:
        proc = subprocess.run(["mount", *args.split("\0"), str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            subprocess.run(["umount", str(target)], capture_output=True)
            pytest.skip(f"cannot mount here: {proc.stderr.strip()}")
    try:
        yield target
    finally:
        # a script run in this process (run_here) can leave a memory map of a file there in a reference cycle: it
        # would keep the mount busy, and it would stay behind the test
        gc.collect()
        if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` seen through a read-only bind mount (root ignores permission bits, so chmod would not do)."""
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    with mounted(view, f"--bind\0{folder}", "-o\0remount,bind,ro"):
        probe = view / ".probe"
        with pytest.raises(OSError):
            probe.write_text("x")
        yield view


# ---------------------------------------------------------------------------------------------------------
# data: the tiny sky through stages 00-02 (and a tiny model)


@pytest.fixture(scope="module")
def prepared(tiny_sky, tmp_path_factory) -> DataPaths:
    """Stage 00 from the tiny sky as a local mirror, then stages 01 and 02: a template data folder (copy it)."""
    from stargal.stages.alignment import run_alignment
    from stargal.stages.download import DownloadOptions, run_download
    from stargal.stages.preparation import prepare

    paths = DataPaths(tmp_path_factory.mktemp("prepared") / "data")
    assert run_download(paths, TINY, DownloadOptions(source=str(tiny_sky.root), workers=2)).ok
    run_alignment(paths, TINY, workers=1)
    prepare(paths, TINY)
    return paths


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> DataPaths:
    """The template plus a one-epoch model (03_model.py --config MODEL_CONFIG MODEL_ARGS would make it)."""
    from stargal.stages.training import run_training
    from stargal.train_options import TrainOptions

    paths = copy_data(prepared, tmp_path_factory.mktemp("trained"))
    options = TrainOptions(**MODEL_CONFIG, epochs=1, batch_size=128, plots=False)
    run_training(paths, None, options)
    return paths


def model_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "model-config.json"
    cfg.write_text(json.dumps(MODEL_CONFIG))
    return cfg


# ---------------------------------------------------------------------------------------------------------
# sealed output sets (fsio): all or nothing, intact or named


def test_an_output_set_is_visible_whole_or_not_at_all(tmp_path, monkeypatch):
    record, a, b = tmp_path / "set.json", tmp_path / "a.bin", tmp_path / "b.bin"
    with fsio.OutputSet(record) as out:
        out.path(a).write_bytes(b"first a" * 100)
        out.path(b).write_bytes(b"first b" * 100)
        out.commit({"run": 1})
    assert fsio.check_seal(record, [a, b]).ok
    # a rebuild that fails while writing leaves the previous set, record and all, untouched
    with pytest.raises(OSError), fsio.OutputSet(record) as out:
        out.path(a).write_bytes(b"second a")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert a.read_bytes() == b"first a" * 100 and fsio.read_json(record)["run"] == 1 and not temporaries(tmp_path)
    # a run killed between the renames of its commit: a new a beside the old b; the record names what is wrong
    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill, after the first file was renamed into place
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt), fsio.OutputSet(record) as out:
        out.path(a).write_bytes(b"second a")
        out.path(b).write_bytes(b"second b")
        out.commit({"run": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    check = fsio.check_seal(record, [a, b])
    assert not check.ok and [p.name for p, _ in check.problems] == ["a.bin"] and "a.bin" in check.describe()


def test_a_seal_tells_truncated_and_flipped_files_even_with_their_old_times(tmp_path):
    files = [tmp_path / f"f{i}.bin" for i in range(3)]
    for i, f in enumerate(files):
        f.write_bytes(bytes(range(256)) * (i + 4))
    fsio.seal(tmp_path / "rec.json", files, {"what": "test"})
    assert fsio.check_seal(tmp_path / "rec.json").ok
    truncate(files[0])
    flip(files[1], keep_time=True)  # same size, same mtime: only the ctime and the checksum tell
    files[2].unlink()
    problems = dict(fsio.check_seal(tmp_path / "rec.json").problems)
    assert "cut short" in problems[files[0]] and "sha256" in problems[files[1]] and problems[files[2]] == "missing"
    (tmp_path / "rec.json").write_text("{ not json")
    assert "not valid JSON" in fsio.check_seal(tmp_path / "rec.json").describe()
    # a deep check hashes every file, stamps or not
    fsio.seal(tmp_path / "rec2.json", [files[1]], {})
    assert fsio.check_seal(tmp_path / "rec2.json", deep=True).ok


def test_a_sealed_record_edited_by_hand_is_damaged_and_an_older_one_without_its_checksum_still_reads(tmp_path):
    """A threshold or a split changed in model.json or dataset.json by hand changes what is served: the record's
    own content is sealed too. Records written before that have no content checksum and still read."""
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    record = tmp_path / "model.json"
    fsio.seal(record, [model], {"threshold": 0.5, "normalisation": {"scale": [1.5, 2.0]}})
    assert fsio.check_seal(record).ok
    record.write_text(record.read_text().replace('"threshold": 0.5', '"threshold": 0.01'))
    problems = dict(fsio.check_seal(record).problems)
    assert problems == {record: "edited after it was sealed (its content no longer matches its checksum)"}
    older = fsio.read_json(record)
    del older[fsio.INTEGRITY_KEY]["content_sha256"]
    fsio.write_json(record, older)
    assert fsio.check_seal(record).ok
    # the shipped model's record carries its checksum
    from stargal.paths import PRETRAINED_MODEL_DIR

    shipped = fsio.read_json(PRETRAINED_MODEL_DIR / "model.json")
    assert shipped[fsio.INTEGRITY_KEY]["content_sha256"] == fsio.content_digest(shipped)


def test_temporary_files_of_killed_runs_are_removed_but_resumable_downloads_kept(tmp_path):
    stale = [tmp_path / "reports" / "x" / ".splits.png.0123456789ab.part", tmp_path / ".model.keras.a1b2c3d4e5f6.keras"]
    keep = [tmp_path / "sas" / "frame-r-008162-6-0080.fits.bz2.part", tmp_path / "reports" / "notes.part"]
    for p in stale + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert sorted(fsio.remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_runs_on_one_data_folder_take_turns(tmp_path):
    lock = tmp_path / ".lock"
    code = (
        "import sys; from stargal import fsio; fsio.lock_folder(sys.argv[1], holder='pid 1: first run'); "
        "print('locked', flush=True); sys.stdin.readline()"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    waited, order = [], []
    try:
        assert first.stdout.readline().strip() == "locked"

        def finish_first():
            time.sleep(0.3)
            order.append("first done")
            first.stdin.write("\n")
            first.stdin.flush()

        threading.Thread(target=finish_first).start()
        assert fsio.lock_folder(lock, on_wait=waited.append)  # waits for the first run
        order.append("second")
        assert order == ["first done", "second"] and waited == ["pid 1: first run"]
        assert fsio.lock_folder(lock)  # taken again at once by the process that holds it
    finally:
        fsio.release_folder_locks()
        first.kill()
        first.wait()


def _holding(lock: Path, shared: bool) -> subprocess.Popen:
    """Another process holding ``lock`` (as a stage holds .lock, or predict .publish.lock) until told to stop."""
    code = (
        f"import sys; from stargal import fsio; fsio.lock_folder(sys.argv[1], shared={shared}, holder='pid 1: 03'); "
        "print('locked', flush=True); sys.stdin.readline()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(timeout=30)


def test_predict_reads_a_data_folder_while_a_stage_holds_it(tmp_path):
    import argparse

    stage = _holding(tmp_path / ".lock", shared=False)  # 03_model.py training for hours
    second = None
    try:
        opened = []
        reader = threading.Thread(
            target=lambda: opened.append(cli.open_data_folder(argparse.Namespace(data_dir=str(tmp_path)), shared=True)),
            daemon=True,
        )
        reader.start()
        reader.join(timeout=20)
        assert opened and opened[0].root == tmp_path.resolve()  # did not wait for the stage
        # a second stage still waits for the first
        waited = []
        second = threading.Thread(
            target=lambda: fsio.lock_folder(tmp_path / ".lock", on_wait=waited.append), daemon=True
        )
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and waited == ["pid 1: 03"]
    finally:
        _stop(stage)
        if second is not None:
            second.join(timeout=20)
        fsio.release_folder_locks()


def test_predict_on_a_field_not_yet_aligned_names_the_run_that_holds_the_folder(tmp_path):
    from stargal.paths import DataPaths, FieldId
    from stargal.stages.predict import run_predict

    paths, fid = DataPaths(tmp_path), FieldId(301, 8162, 6, 80)
    kwargs = {"ra": np.array([0.0]), "dec": np.array([0.0]), "model": "pretrained", "fid": fid}
    with pytest.raises(StargalError, match="aligned cube not found") as err:
        run_predict(paths, **kwargs)
    assert "in use" not in str(err.value)
    stage = _holding(paths.lock_file, shared=False)  # 01_alignment.py, say, aligning it right now
    try:
        with pytest.raises(StargalError, match="aligned cube not found.*in use by pid 1: 03: try again once"):
            run_predict(paths, **kwargs)
    finally:
        _stop(stage)
    assert fsio.lock_holder(paths.lock_file) is None
    try:
        fsio.lock_folder(paths.lock_file)
        assert fsio.lock_holder(paths.lock_file) is None  # held by this very process: no other run to name
    finally:
        fsio.release_folder_locks()


def test_a_stage_renames_an_output_set_into_place_only_when_no_reader_holds_the_folder(tmp_path):
    reader = _holding(tmp_path / ".publish.lock", shared=True)  # predict.py reading a cube and its record
    record = tmp_path / "model.json"
    committed = []
    try:
        fsio.guard_publications(tmp_path / ".publish.lock")

        def commit():
            with fsio.OutputSet(record) as out:
                fsio.write_text(out.path(tmp_path / "weights.bin"), "new")  # nested: write_text renames too
                out.commit({"name": "m"})
            committed.append(True)

        writer = threading.Thread(target=commit, daemon=True)
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive() and not record.exists() and not (tmp_path / "weights.bin").exists()
        _stop(reader)
        writer.join(timeout=20)
        assert committed and fsio.check_seal(record, deep=True).ok
        with fsio.publishing(), fsio.publishing():  # re-entrant: a commit inside a commit's lock
            fsio.write_text(tmp_path / "LATEST", "m\n")
        assert (tmp_path / "LATEST").read_text() == "m\n"
    finally:
        if reader.poll() is None:
            reader.kill()
        fsio.release_folder_locks()
    assert fsio.PUBLISH_LOCK_ENV not in os.environ  # a run's guard ends with it


# ---------------------------------------------------------------------------------------------------------
# inputs are what they claim to be


def test_a_bit_flip_inside_a_gzip_catalog_is_caught_not_lost_rows(tiny_sky, tmp_path):
    source = tiny_sky.catalog(301, 8162, 6, "star")
    damaged = tmp_path / source.name
    raw = bytearray(source.read_bytes())
    raw[len(raw) * 3 // 4] ^= 0x01  # one bit, deep inside the deflate stream
    damaged.write_bytes(bytes(raw))
    with pytest.raises(StargalError, match=damaged.name) as err:
        sdss.read_catalog(damaged)
    assert "00_download.py" in str(err.value)
    assert len(sdss.read_catalog(source)) > 0


@pytest.mark.real
def test_real_star_catalog_bit_flip_is_caught(sample_dir, tmp_path):
    source = STAR_FIELD_DIR / "calibObj-004510-4-star.fits.gz"
    assert len(sdss.read_catalog(source)) == 5232
    damaged = tmp_path / source.name
    raw = bytearray(source.read_bytes())
    for k in range(8):  # a few bytes inside the compressed stream, as in the report: rows vanished silently
        raw[len(raw) // 2 + 1000 * k] ^= 0x5A
    damaged.write_bytes(bytes(raw))
    with pytest.raises(StargalError, match="calibObj-004510-4-star.fits.gz"):
        sdss.read_catalog(damaged)


def test_catalog_columns_and_run_are_checked(tmp_path):
    n = 3
    good = {"RUN": np.full(n, 8162, np.int16), "RERUN": np.array(["301"] * n), "CAMCOL": np.full(n, 6, np.uint8),
            "FIELD": np.full(n, 80, np.int16), "ID": np.arange(n, dtype=np.int16),
            "OBJC_TYPE": np.full(n, 6, np.int32), "RA": np.zeros(n), "DEC": np.zeros(n),
            "PSF_FWHM": np.ones((n, 5), np.float32), "PSFFLUX": np.ones((n, 5), np.float32),
            "MODELFLUX": np.ones((n, 5), np.float32)}  # fmt: skip
    path = tmp_path / "calibObj-008162-6-star.fits.gz"
    sdss.write_catalog(path, good)
    assert len(sdss.read_catalog(path)) == n
    from astropy.io import fits

    cols = [fits.Column(name=k, format=sdss.CATALOG_COLUMNS[k][0], array=v) for k, v in good.items() if k != "PSFFLUX"]
    cols.append(fits.Column(name="PSFFLUX", format="3I", array=np.ones((n, 3), np.int16)))
    bad = tmp_path / "calibObj-008162-6-gal.fits.gz"
    raw = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)])
    raw.writeto(tmp_path / "plain.fits")
    bad.write_bytes(gzip.compress((tmp_path / "plain.fits").read_bytes()))
    with pytest.raises(StargalError, match="column PSFFLUX holds int16\\[3\\], expected 5 float values"):
        sdss.read_catalog(bad)
    other_run = tmp_path / "calibObj-004510-6-star.fits.gz"
    shutil.copyfile(path, other_run)
    with pytest.raises(StargalError, match="RUN 8162, but the file name says RUN 4510"):
        sdss.read_catalog(other_run)


def test_a_frame_under_another_band_or_field_name_is_refused(tiny_data):
    from stargal.stages.alignment import read_field_frames

    i_band = tiny_data.frame(F80, "i")
    shutil.copyfile(tiny_data.frame(F80, "r"), i_band)  # the r frame under the i-band name
    with pytest.raises(StargalError, match="FILTER is 'r', not 'i'") as err:
        read_field_frames(tiny_data, F80, "r")
    assert i_band.name in str(err.value) and "00_download.py" in str(err.value)
    shutil.copyfile(tiny_data.frame(F81, "g"), tiny_data.frame(F80, "i"))  # another field's frame
    shutil.copyfile(tiny_data.frame(F81, "g"), tiny_data.frame(F80, "g"))
    with pytest.raises(StargalError, match="frame-g-008162-6-0080.fits.bz2: header FRAME is 89, expected 88"):
        read_field_frames(tiny_data, F80, "r")


@pytest.mark.real
def test_real_r_frame_under_the_i_band_name_is_refused(sample_dir, tmp_path):
    from stargal.stages.alignment import read_field_frames

    paths = DataPaths(tmp_path / "data")
    fid = FieldId(301, 8162, 6, 80)
    for band in BANDS:  # links, not copies: the sample stays outside the project
        paths.frame(fid, band).parent.mkdir(parents=True, exist_ok=True)
        source = "r" if band == "i" else band
        paths.frame(fid, band).symlink_to(TEST_FIELD_DIR / f"frame-{source}-008162-6-0080.fits.bz2")
    with pytest.raises(StargalError, match="frame-i-008162-6-0080.fits.bz2: header FILTER is 'r', not 'i'"):
        read_field_frames(paths, fid, "r")


def test_non_finite_pixels_are_masked_and_counted(tiny_data):
    from astropy.io import fits

    from stargal.patches import extract_patches
    from stargal.stages.alignment import run_alignment

    frame = sdss.read_frame(tiny_data.frame(F81, "g"))
    image = frame.image.copy()
    image[100:104, 200:203] = np.inf
    image[300, 50] = -np.inf
    with fits.open(tiny_data.frame(F81, "g")) as hdul:
        extra = [h.copy() for h in hdul[1:]]
    sdss.write_frame(tiny_data.frame(F81, "g"), image, frame.header, extra_hdus=extra)
    run_alignment(tiny_data, dataclasses.replace(TINY, fields=(81,)), workers=1, reports=False)
    record = integrity.require_field(tiny_data, F81, objects=True)
    assert record["nonfinite"]["g"] == 13 and record["nonfinite"]["r"] == 0
    cube = fits.getdata(tiny_data.cube(F81))
    assert not np.isinf(cube).any() and np.isnan(cube[1, 20:-20, 20:-20]).sum() >= 13  # no data where inf was
    # a cube holding +-inf (written by anything else) still yields finite patches, the values counted
    data = np.nan_to_num(cube, nan=0.0)
    data[2, 10, 10] = np.inf
    data[3, 200, 301] = -np.inf
    cut = extract_patches(data, np.array([10, 200, 100]), np.array([10, 300, 100]), 5)
    assert np.isfinite(cut.data).all() and cut.nan_pixels.tolist() == [1, 1, 0]


def test_config_keys_and_values_are_checked(tmp_path):
    from stargal.train_options import load_config, options_from_args

    cfg = tmp_path / "cfg.json"
    cases = {
        '{"architecture": "stargal", "epoch": 5}': "unknown key 'epoch'; did you mean 'epochs'? (valid: ",
        '{"hyperparameters": {"batch_size": 0}}': "batch_size must be a whole number >= 1, got 0",
        '{"augment": "rotate"}': "augment 'rotate' is not one of",
        '{"hyperparameters": [1, 2]}': "hyperparameters must be a JSON object",
        '{"epochs": 3,}': "not valid JSON",
        "[1]": "expected a JSON object",
    }
    for text, message in cases.items():
        cfg.write_text(text)
        with pytest.raises(StargalError, match=str(cfg)) as err:
            load_config(cfg)
        assert message in str(err.value), text
    cfg.write_text('{"architecture": "stargal", "hyperparameters": {"learnig_rate": 0.01}}')

    class Args:
        config, learning_rate, seed, tta, name, force, no_plots = str(cfg), None, 1, None, None, False, True
        architecture = epochs = patience = batch_size = augment = schedule = class_weight = None

    with pytest.raises(StargalError, match="unknown hyper-parameter of stargal 'learnig_rate'; did you mean"):
        options_from_args(Args)
    cfg.write_text('{"architecture": "stargal", "hyperparameters": {"dense_dropout": 1.5}}')
    with pytest.raises(StargalError, match=r"dense_dropout must be a number in \[0, 1\), got 1.5"):
        options_from_args(Args)


# ---------------------------------------------------------------------------------------------------------
# one line for every failure, a traceback with --debug


@pytest.mark.parametrize(
    "raised, expected, status",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/d/x.npy"), "/d/x.npy: No space left on device (the disk is full", 1),
        (OSError(errno.EROFS, "Read-only file system", "/d/LATEST"), "/d/LATEST: Read-only file system (the folder is read-only", 1),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp/out"), "/tmp/out: Is a directory (that is a folder", 1),
        (CorruptFileError("/d/metrics.json: not valid JSON (x); the file is damaged"), "/d/metrics.json: not valid JSON", 2),
        (RuntimeError("boom\nsecond line"), "unexpected RuntimeError: boom second line (rerun with --debug", 1),
    ],
)  # fmt: skip
def test_run_main_turns_every_failure_into_one_line(raised, expected, status, capsys):
    def main(argv):
        raise raised

    with pytest.raises(SystemExit) as exit_:
        cli.run_main(main, [])
    err = capsys.readouterr().err
    assert exit_.value.code == status and err.count("\n") == 1 and expected in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        cli.run_main(main, ["--debug"])
    assert "Traceback" in capsys.readouterr().err


def test_writes_that_fail_name_the_final_file(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(OSError) as err, fsio.atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write error names no file
    assert err.value.filename == str(target) and not temporaries(tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        fsio.write_text(tmp_path / "folder", "x")
    assert err.value.filename == str(tmp_path / "folder")


@pytest.mark.slow
def test_bad_data_folders_end_in_one_line(tmp_path, prepared):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    error_line(run("01_alignment.py", a_file), f"--data-dir {a_file}: is a file, not a folder", status=2)
    debug = run("02_preparation.py", a_file, "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "is a file, not a folder" in debug.stderr
    # a truncated cube: stage 02 names it and what redoes it; --verify lists it; stage 01 redoes only it
    paths = copy_data(prepared, tmp_path)
    truncate(paths.cube(F81), 0.6)
    line = error_line(run("02_preparation.py", paths, *SPLIT_ARGS), paths.cube(F81).name, status=2)
    assert "cut short" in line and f"01_alignment.py --run 8162 --camcol 6 --fields 81 --data-dir {paths.root}" in line
    verify = run("pipeline", paths, "--verify")
    assert (
        verify.returncode == 1
        and f"{paths.cube(F81)}: " in verify.stdout
        and "redone by 01_alignment.py" in verify.stdout
    )
    refused = run("pipeline", paths, "--verify", "--stages", "preparation")
    assert refused.returncode == 2 and "--verify checks the whole folder and takes no other option (--stages)" in (
        refused.stderr
    )
    redo = ok(run("01_alignment.py", paths, *TINY_FIELDS, "--no-reports"))
    assert "aligned 1, up to date 3" in redo.stdout and "field 301/8162/6/81" in redo.stderr
    # the repaired cube has the content it had: the tensors and the dataset made from it are still current
    assert "already current" in ok(run("02_preparation.py", paths, *SPLIT_ARGS)).stdout
    assert ok(run("pipeline", paths, "--verify")).stdout.count("all intact") == 1


# ---------------------------------------------------------------------------------------------------------
# "current" means verified intact; the last good output survives; reruns repair without --force


@pytest.mark.slow
def test_broken_dataset_files_are_named_and_rebuilt_without_force(tmp_path, prepared):
    paths = copy_data(prepared, tmp_path)
    name = dataset_name(paths)
    before = np.load(paths.split_x(name, "val"))
    flip(paths.split_x(name, "val"), at=0.9, keep_time=True)  # same size, same time: "timestamps look right"
    truncate(paths.split_objects(name, "test"), 0.5)
    cfg = model_config(tmp_path)
    line = error_line(run("03_model.py", paths, "--config", str(cfg), *MODEL_ARGS), "dataset", status=2)
    assert "val_x.npy" in line and "02_preparation.py" in line
    redo = ok(run("02_preparation.py", paths, *SPLIT_ARGS))
    assert "prepared in" in redo.stdout and "val_x.npy" in redo.stderr and "rebuilding it" in redo.stderr
    assert fsio.check_seal(paths.dataset_json(name), deep=True).ok
    np.testing.assert_array_equal(np.load(paths.split_x(name, "val")), before)


def _dataset_files(paths: DataPaths, name: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(paths.dataset_dir(name).iterdir())}


@pytest.mark.slow
def test_a_failed_forced_rebuild_on_a_full_disk_keeps_the_last_good_dataset(tmp_path, prepared):
    paths = copy_data(prepared, tmp_path)
    name = dataset_name(paths)
    good = _dataset_files(paths, name)
    latest = paths.latest_dataset.read_bytes()
    size = sum(len(v) for v in good.values())
    try:  # a real full disk: a tmpfs holding the datasets and half as much again
        with mounted(paths.datasets_root, f"-t\0tmpfs\0-o\0size={size * 3 // 2 // 4096 * 4096}\0tmpfs"):
            paths.dataset_dir(name).mkdir()
            for file, data in good.items():
                (paths.dataset_dir(name) / file).write_bytes(data)
            paths.latest_dataset.write_bytes(latest)
            forced = run("02_preparation.py", paths, *SPLIT_ARGS, "--force")
            error_line(forced, "No space left on device", "the disk is full", status=1)
            _assert_intact(paths, name, good)
            assert "already current" in ok(run("02_preparation.py", paths, *SPLIT_ARGS)).stdout
    except pytest.skip.Exception:  # not root: the process's file-size limit makes the same failure
        limit = max(len(v) for v in good.values()) // 2

        def small_files():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        forced = run("02_preparation.py", paths, *SPLIT_ARGS, "--force", preexec=small_files)
        error_line(forced, "File too large", status=1)
        _assert_intact(paths, name, good)


def test_materializing_on_a_full_disk_fails_in_one_line_not_with_a_bus_error(tmp_path, prepared):
    # the augmented set is written through a memmap: on a sparse file a full disk would raise SIGBUS mid-write
    paths = copy_data(prepared, tmp_path)
    paths.augmented_root.mkdir()
    with mounted(paths.augmented_root, "-t\0tmpfs\0-o\0size=256k\0tmpfs"):
        full = run("04_augmentation.py", paths, "--materialize")
        error_line(full, "No space left on device", "the disk is full", status=1)
        assert not [p for p in paths.augmented_root.rglob("*") if p.is_file()]


def _assert_intact(paths: DataPaths, name: str, good: dict[str, bytes]) -> None:
    assert _dataset_files(paths, name) == good and not temporaries(paths.dataset_dir(name))
    assert integrity.require_dataset(paths, name, SPLITS)["name"] == name


@pytest.mark.slow
def test_a_model_folder_from_two_runs_is_never_served(tmp_path, trained, capsys):
    """The issue's case (a): model.keras of one run beside model.json of another. Before, the rerun said
    "current" and predict served the wrong network."""
    import toy_models

    paths = copy_data(trained, tmp_path)
    model = paths.latest_model.read_text().strip()
    files = paths.model(model)
    shutil.copyfile(toy_models.trained_toy_model_dir(None, 15, "drop") / "model.keras", files.keras)
    line = error_line(
        run_here("predict.py", paths, "--field", "81", "--ra", "1", "--dec", "1", capsys=capsys), files.keras, status=2
    )
    assert "03_model.py" in line and "incomplete or damaged" in line
    error_line(run_here("explain.py", paths, capsys=capsys), str(files.keras), status=2)
    (files.metrics).write_text('{"test": ')  # and a damaged metrics.json: the report says so, not "not run"
    error_line(run_here("make_report.py", paths, capsys=capsys), files.metrics, "incomplete or damaged", status=2)
    verify = run("pipeline", paths, "--verify")
    assert verify.returncode == 1 and "model.keras" in verify.stdout and "metrics.json" in verify.stdout
    cfg = model_config(tmp_path)
    retrain = ok(run_here("03_model.py", paths, "--config", str(cfg), *MODEL_ARGS, capsys=capsys))
    assert "training it again" in retrain.stderr and fsio.check_seal(files.json, deep=True).ok
    # predict serves the retrained model; a folder named as --out is one line
    out_dir = tmp_path / "predictions"
    out_dir.mkdir()
    args = ["--field", "81", "--ra", "1", "--dec", "1"]
    error_line(
        run_here("predict.py", paths, *args, "--out", str(out_dir), capsys=capsys), str(out_dir), "a folder", status=2
    )


@pytest.mark.slow
def test_a_read_only_data_folder_works_when_current_and_fails_in_one_line_otherwise(
    tmp_path, trained, tiny_sky, capsys
):
    from stargal.stages.augmentation import write_examples
    from stargal.stages.explain import run_explain
    from stargal.stages.report import build_report

    paths = copy_data(trained, tmp_path)
    write_examples(paths, None)
    run_explain(paths, per_group=2, steps=4)
    build_report(paths)
    cfg = model_config(tmp_path)
    with read_only(paths.root) as view:
        for script, args in (
            ("00_download.py", ["--source", str(tiny_sky.root), *TINY_FIELDS]),
            ("01_alignment.py", TINY_FIELDS),
            ("02_preparation.py", SPLIT_ARGS),
            ("04_augmentation.py", []),
            ("03_model.py", ["--config", str(cfg), *MODEL_ARGS]),
            ("explain.py", ["--per-group", "2", "--steps", "4"]),
            ("make_report.py", []),
        ):
            ok(run_here(script, view, *args, capsys=capsys))
        # work to do on a read-only folder: refused before the work (patches cut, a network trained), not after it
        forced = run_here("02_preparation.py", view, *SPLIT_ARGS, "--force", capsys=capsys)
        error_line(forced, "dataset.json: not current, and its folder cannot be written", status=2)
        assert "cutting" not in forced.stderr.lower()
        forced = run_here("03_model.py", view, "--config", str(cfg), *MODEL_ARGS, "--force", capsys=capsys)
        error_line(forced, "model.json: not current, and its folder cannot be written", status=2)
        assert "epoch" not in (forced.stdout + forced.stderr).lower()
        forced = run_here("explain.py", view, "--per-group", "2", "--steps", "4", "--force", capsys=capsys)
        error_line(forced, "explain.json: not current, and its folder cannot be written", status=2)
        # its examples current, the set not made
        forced = run_here("04_augmentation.py", view, "--materialize", capsys=capsys)
        error_line(forced, "augmented.json: not current, and its folder cannot be written", status=2)
        # predict.py without --out: its default output's folder refused before the work, not after it
        default = view / "predictions"
        proc = run_here("predict.py", view, "--field", "81", "--all", capsys=capsys)
        error_line(proc, f"{default}", "(the default output, no --out given): its folder cannot be written", status=2)
        assert "classified" not in proc.stdout + proc.stderr
        assert ok(run("pipeline", view, "--verify")).stdout.count("all intact") == 1


# ---------------------------------------------------------------------------------------------------------
# noise and debris


@pytest.mark.slow
def test_a_long_failure_list_is_summarised(tmp_path, tiny_sky):
    proc = run(
        "00_download.py", tmp_path / "data", "--source", str(tiny_sky.root), "--fields", "1-400", "--workers", "8"
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) < 40, lines[:50]
    # every frame of every field but the four the mirror has; the irg pictures it lacks are left out with a warning
    failed = 400 * 5 - 4 * 5
    assert (
        f"{failed} failed" in proc.stdout
        and f"... and {failed - 10} more failed files ({failed - 10} not found in" in proc.stdout
    )


@pytest.mark.slow
def test_concurrent_downloads_into_one_folder_lose_nothing_and_debris_is_cleaned(tmp_path, tiny_sky):
    data = DataPaths(tmp_path / "data")
    stale = data.reports("splits", ".splits.png.0123456789ab.part")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a figure")
    cmds = [
        [sys.executable, str(CODE / "00_download.py"), "--data-dir", str(data.root), "--source", str(tiny_sky.root),
         "--fields", *fields, "--frames-only", "--workers", "2"]
        for fields in (["80", "81"], ["82", "83"])
    ]  # fmt: skip
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    manifest = fsio.read_json(data.manifest)["files"]
    assert len(manifest) == 4 * 6 and all(data.sas_file(rel).is_file() for rel in manifest)
    assert not stale.exists()


@pytest.mark.slow
def test_a_damaged_download_is_fetched_again_and_mislabelled_frames_stop_alignment(tmp_path, prepared):
    paths = copy_data(prepared, tmp_path)
    source = copy_data(prepared, tmp_path, "mirror")  # the pristine files, as a local mirror
    catalog = paths.catalog(301, 8162, 6, "star")
    flip(catalog, at=0.6, keep_time=True)
    shutil.copyfile(paths.frame(F80, "r"), paths.frame(F80, "i"))  # a mislabelled frame
    line = error_line(run("01_alignment.py", paths, *TINY_FIELDS), catalog.name, status=2)
    assert "00_download.py" in line
    verify = run("pipeline", paths, "--verify")
    assert verify.returncode == 1 and catalog.name in verify.stdout and "frame-i-008162-6-0080" in verify.stdout
    fetched = ok(run("00_download.py", paths, "--source", str(source.root), *TINY_FIELDS))
    assert "2 fetched" in fetched.stdout and catalog.name in fetched.stderr
    ok(run("01_alignment.py", paths, *TINY_FIELDS))
    assert ok(run("pipeline", paths, "--verify")).stdout.count("all intact") == 1


# ---------------------------------------------------------------------------------------------------------
# the command --verify names for a damaged model trains the same model under the same name


def _fake_model(paths: DataPaths, options, dataset: str = "toy", dataset_id: str = "build 1") -> dict:
    """A model folder sealed as stage 03 seals it (model.json with the run's config); its files stand-ins."""
    from stargal.model import merged_hp
    from stargal.stages.training import _run_config
    from stargal.train_options import model_name

    opts = options.resolved()
    name = model_name(opts, dataset)
    files = paths.model(name)
    for path in (files.keras, files.metrics, files.history):
        fsio.write_bytes(path, f"{path.name} of {name}".encode())
    config = _run_config(opts, dataset, merged_hp(opts.architecture, opts.hyperparameters))
    content = {"name": name, "architecture": opts.architecture, "dataset": dataset, "config": config,
               "inputs": {"dataset": dataset_id}}  # fmt: skip
    return fsio.seal(files.json, [files.keras, files.metrics, files.history], content)


def _damage_and_verify(paths: DataPaths, name: str) -> str:
    """Damage the model's network and return what --verify says redoes it."""
    with open(paths.model(name).keras, "ab") as fh:
        fh.write(b"x")
    return {f.path: f.redo for f in integrity.verify_data_folder(paths)[0]}[paths.model(name).keras]


def _parse_redo(redo: str, folder: Path):
    """The arguments 03_model.py's own parser takes from a printed redo, and the config and name 03 makes of them
    (a file the redo spells out written into ``folder``)."""
    from test_training_stage import build_args

    from stargal.model import merged_hp
    from stargal.stages.training import _run_config
    from stargal.train_options import model_name, options_from_args

    command, _, note = redo.partition(", with ")
    words = shlex.split(command)
    assert words[0] == "03_model.py", redo
    if note:
        file, _, content = note.partition(" holding ")
        (folder / file).write_text(content)
        words = [str(folder / w) if w == file else w for w in words]
    args = build_args(words[1:])
    if args.ensemble:
        return args, None, args.name
    opts = options_from_args(args).resolved()
    config = _run_config(opts, args.dataset, merged_hp(opts.architecture, opts.hyperparameters))
    return args, json.loads(json.dumps(config)), model_name(opts, args.dataset)


def test_verify_names_the_03_command_that_trains_a_damaged_model_again(tmp_path):
    """--verify said "03_model.py (model NAME)": run as printed, 03 trained the default model on the latest dataset
    under another name. Every option the model was trained with comes back, its name too."""
    from stargal.train_options import TrainOptions

    paths = DataPaths(tmp_path / "data")
    options = TrainOptions(
        architecture="reference_regularised", hyperparameters={"filters": 8, "dense_units": 16, "learning_rate": 5e-4},
        epochs=7, patience=2, batch_size=32, augment="rotation", schedule="plateau", class_weight="balanced",
        seed=11, tta=True, name="mine",
    )  # fmt: skip
    record = _fake_model(paths, options)
    redo = _damage_and_verify(paths, "mine")
    assert redo.endswith(f' --name mine --data-dir {paths.root}, with hyperparameters.json holding {{"hyperparameters": '
                         '{"filters": 8, "dense_units": 16}}')  # fmt: skip
    args, config, name = _parse_redo(redo, tmp_path)
    assert (config, name, args.data_dir) == (record["config"], "mine", str(paths.root))
    # a reader of the model names the same command (a model of a data folder a stage has run on)
    paths.lock_file.touch()
    with pytest.raises(StargalError, match=r"incomplete or damaged") as err:
        integrity.require_model(paths.model_dir("mine"))
    assert f"; {redo} redoes it" in str(err.value)


def test_a_tuned_model_is_redone_with_its_study_and_a_default_name_stays(tmp_path):
    """Hyper-parameters of a tuning study's best.json: --config names it (its learning rate, batch size and other
    training keys overridden by the recorded ones); a name 03 derived from the options is kept."""
    from stargal.train_options import TrainOptions

    paths = DataPaths(tmp_path / "data")
    best = paths.best_config("study")
    fsio.write_json(best, {"architecture": "stargal", "hyperparameters": {"filters": 8, "learning_rate": 1e-3,
                                                                           "batch_size": 64}, "value": 0.9})  # fmt: skip
    record = _fake_model(paths, TrainOptions(hyperparameters={"filters": 8}, seed=5, tta=False))
    assert record["name"] == "stargal-toy-s5"
    redo = _damage_and_verify(paths, "stargal-toy-s5")
    assert f"--config {best} --learning-rate 0.002 " in redo and "holding" not in redo
    args, config, name = _parse_redo(redo, tmp_path)
    assert (config, name, args.tta) == (record["config"], "stargal-toy-s5", False)
    plain = _fake_model(paths, TrainOptions(architecture="reference_base", seed=6, augment="none"))
    redo = _damage_and_verify(paths, plain["name"])
    assert "--config" not in redo and "--learning-rate" not in redo
    assert _parse_redo(redo, tmp_path)[1:] == (plain["config"], "reference_base-toy-s6")


def test_ensembles_stale_and_unreadable_models_name_what_redoes_them(tmp_path):
    """An ensemble: --ensemble with its members. A stale model: the command that made it (on the rebuilt dataset).
    A record that cannot tell the options: said so, with the name, rather than a command training another model."""
    from test_training_stage import write_toy_dataset

    from stargal.train_options import TrainOptions

    paths = DataPaths(tmp_path / "data")
    for seed in (3, 4):
        _fake_model(paths, TrainOptions(seed=seed, name=f"tiny-s{seed}"))
    files = paths.model("tiny")
    fsio.write_bytes(files.keras, b"ensemble")
    members = [{"name": m, "model.keras": {}} for m in ("tiny-s3", "tiny-s4")]
    fsio.seal(
        files.json, [files.keras], {"name": "tiny", "ensemble": [], "config": {"ensemble": members, "tta": False}}
    )
    redo = _damage_and_verify(paths, "tiny")
    assert redo == f"03_model.py --ensemble tiny-s3 tiny-s4 --no-tta --name tiny --data-dir {paths.root}"
    args = _parse_redo(redo, tmp_path)[0]
    assert (args.ensemble, args.tta, args.name) == (["tiny-s3", "tiny-s4"], False, "tiny")
    # trained on an earlier build of the dataset: stale, and the same command trains it on the current one
    write_toy_dataset(paths, "toy", sizes=(20, 10, 10), patch=15)
    stale = _fake_model(paths, TrainOptions(seed=9, augment="blur"), dataset_id="an earlier build")
    finding = next(f for f in integrity.verify_data_folder(paths)[0] if f.path == paths.model(stale["name"]).json)
    assert finding.problem.startswith("stale") and finding.redo == integrity.model_command(paths, stale["name"])
    assert _parse_redo(finding.redo, tmp_path)[1:] == (stale["config"], "stargal-toy-s9")
    # the record damaged, edited after sealing, or of an older stargal: no options to trust
    for name, why in (("torn", "is unreadable"), ("edited", "was edited after it was sealed"),
                      ("older", "does not list them")):  # fmt: skip
        files = paths.model(name)
        record = _fake_model(paths, TrainOptions(seed=1, name=name))
        if name == "torn":
            files.json.write_text(files.json.read_text()[:40])
        elif name == "edited":
            files.json.write_text(json.dumps({**record, "config": {**record["config"], "seed": 2}}))
        else:
            content = {k: v for k, v in record.items() if k not in ("config", fsio.INTEGRITY_KEY)}
            fsio.seal(files.json, [files.keras], content)
        redo = integrity.model_command(paths, name)
        assert redo.startswith(f"03_model.py --name {name} --data-dir {paths.root} with the options that made it "
                               f"(its record model.json {why}"), redo  # fmt: skip


@pytest.mark.slow
def test_the_printed_redo_trains_a_damaged_model_again_under_its_name(tmp_path, capsys):
    """End to end: a model trained with options other than the defaults, its network damaged; the command --verify
    prints, run as printed (its hyper-parameter file written as it says), makes it intact again with the same
    config and name, and --verify finds nothing."""
    from test_training_stage import TINY_HP, write_toy_dataset

    from stargal.stages.training import run_training
    from stargal.train_options import TrainOptions

    paths = DataPaths(tmp_path / "data")
    write_toy_dataset(paths, "toy", sizes=(120, 60, 60), patch=15, seed=2)
    options = TrainOptions(
        architecture="reference_base", hyperparameters={**TINY_HP, "learning_rate": 3e-3}, epochs=1, patience=1,
        batch_size=64, augment="rotation", schedule="plateau", class_weight="balanced", seed=7, tta=True,
        name="mine", plots=False, verbose=0,
    )  # fmt: skip
    before = run_training(paths, "toy", options)["runs"][0]["model_json"]
    flip(paths.model("mine").keras)
    redo = _damage_and_verify(paths, "mine")
    command, _, note = redo.partition(", with ")
    file, _, content = note.partition(" holding ")
    assert file == "hyperparameters.json"  # TINY_HP: no option of 03 sets them
    (tmp_path / file).write_text(content)
    words = shlex.split(command)
    # run as printed, from tmp_path where the file is (in this process: what is tested is the command, not a process)
    proc = run_script_here(CODE / words[0], [*words[1:], "-q"], capsys, cwd=tmp_path)
    assert "training it again" in ok(proc).stderr
    after = fsio.check_seal(paths.model("mine").json, [paths.model("mine").keras], deep=True)
    assert after.ok and after.record["config"] == before["config"] and after.record["name"] == "mine"
    assert sorted(p.name for p in paths.models_root.iterdir() if p.is_dir()) == ["mine"]
    assert integrity.verify_data_folder(paths)[0] == []


# ---------------------------------------------------------------------------------------------------------
# stage 00: damaged simulated catalogs, frames beside another sky's catalogs, redo commands that work offline

SIM_SMALL = ["--source", "simulated", "--sim-shape", "96", "128", "--fields", "80", "81", "--workers", "1"]


@pytest.mark.parametrize("damage", [flip, truncate], ids=["bit-flipped", "truncated"])
def test_a_damaged_simulated_catalog_is_drawn_again_by_a_rerun(tmp_path, damage):
    """A damaged (not missing) simulated sweep was named "content differs ... fetching it again" on every rerun,
    which rendered nothing (its fields were current) and then failed it as "simulated file invalid", exit 1."""
    paths = DataPaths(tmp_path / "data")
    ok(run("00_download.py", paths, *SIM_SMALL))
    star = paths.catalog(301, 8162, 6, "star")
    good, frame = star.read_bytes(), paths.frame(F80, "r").read_bytes()
    damage(star)
    ok(run("00_download.py", paths, *SIM_SMALL))
    assert star.read_bytes() == good and paths.frame(F80, "r").read_bytes() == frame
    assert integrity.verify_data_folder(paths)[0] == []
    assert "0 fetched" in ok(run("00_download.py", paths, *SIM_SMALL)).stdout  # current now


def _sky_folder(tmp_path: Path) -> DataPaths:
    """A folder of the simulated sky (fields 80 81 and their catalogs), as stage 00 leaves it."""
    paths = DataPaths(tmp_path / "sim")
    ok(run("00_download.py", paths, *SIM_SMALL))
    return paths


def _real_frames(tmp_path: Path) -> Path:
    """A local folder of real-sky frames (no SIMULAT) of field 80, under their SAS names."""
    from sas_server import make_sas_tree

    tree = make_sas_tree(tmp_path / "real", 301, 8162, 6, (80,))
    for catalog in tree.rglob("calibObj-*"):
        catalog.unlink()
    return tree


def test_real_frames_copied_alone_beside_simulated_catalogs_are_refused(tmp_path):
    """A local --source skipped the mixed-sky check ("a local folder may hold either sky"): real frames copied
    with --frames-only over the simulated sky replaced its frames beside its simulated sweeps, exit 0."""
    paths, tree = _sky_folder(tmp_path), _real_frames(tmp_path)
    before = {p: p.read_bytes() for p in paths.sas.rglob("*") if p.is_file()}
    proc = run("00_download.py", paths, "--source", str(tree), "--fields", "80", "--frames-only")
    line = error_line(proc, "frame-", "a frame of real SDSS", paths.catalog(301, 8162, 6, "gal"), status=2)
    assert str(tree) in line
    assert {p: p.read_bytes() for p in paths.sas.rglob("*") if p.is_file()} == before  # nothing replaced
    assert temporaries(paths.root) == [] and not list(paths.sas.rglob("*.part"))
    # without --frames-only the sweeps the folder keeps (the source has none) are the other sky's: refused too
    error_line(run("00_download.py", paths, "--source", str(tree), "--fields", "80"), "a frame of real SDSS")
    # the simulated sky copied from a local folder over it is one sky: fine, and so are real frames elsewhere
    shutil.copytree(paths.root, tmp_path / "sim_copy")
    ok(run("00_download.py", paths, "--source", str(tmp_path / "sim_copy"), "--fields", "80", "81", "--frames-only"))
    ok(run("00_download.py", tmp_path / "fresh", "--source", str(tree), "--fields", "80", "--frames-only"))
    # simulated catalogs copied from a local folder under other fields' real frames: refused, naming them
    real = DataPaths(tmp_path / "fresh")
    proc = run("00_download.py", real, "--source", str(paths.root), "--fields", "81")
    error_line(proc, "field(s) 80 hold the sky real SDSS, not a simulated sky")


def test_the_redo_of_a_file_copied_from_a_local_folder_works_offline(tmp_path):
    """--verify named `00_download.py ... --fields 80 --frames-only` for a damaged file copied from a local folder:
    run as printed it asked the SDSS server, unreachable offline; a simulated catalog's redo lacked --fields."""
    sky = _sky_folder(tmp_path)
    paths = DataPaths(tmp_path / "copy")
    ok(run("00_download.py", paths, "--source", str(sky.root), "--fields", "80", "81"))
    frame, star = paths.frame(F81, "g"), paths.catalog(301, 8162, 6, "star")
    good = {p: p.read_bytes() for p in (frame, star)}
    flip(frame)
    flip(star)
    for target in (paths, sky):  # the copy's redo names the folder; the simulated sky's its fields and simulation
        if target is sky:
            flip(sky.catalog(301, 8162, 6, "star"))
        findings, _ = integrity.verify_data_folder(target)
        assert findings, target
        for finding in findings:
            words = shlex.split(finding.redo)
            assert words[0] == "00_download.py" and "--source" in words and "--fields" in words, finding.redo
            ok(run(words[0], None, *words[1:]))
        assert integrity.verify_data_folder(target)[0] == []
    assert {p: p.read_bytes() for p in good} == good
    assert "--fields 80 81 --source simulated --seed 42 --sim-shape 96 128" in integrity.download_command(
        sdss.catalog_relpath(301, 8162, 6, "gal"), sky
    )


def test_verify_names_a_damaged_simulation_file_and_the_download_that_draws_it_again(tmp_path):
    """The simulation's own files (truth table, measured catalog fluxes) are sealed by no record: --verify called a
    folder with them cut short intact. It names each, with the 00 command that draws it again, as printed."""
    data = tmp_path / "data"
    draw = ["--source", "simulated", "--fields", "80", "81", "--sim-shape", "64", "96", "-q", "--data-dir", str(data)]
    subprocess.run([sys.executable, CODE / "00_download.py", *draw], check=True, capture_output=True, timeout=300)
    paths = DataPaths(data)
    assert integrity.verify_data_folder(paths)[0] == []
    truth, measured = paths.sim_truth(301, 8162, 6), paths.sim_measurements(FieldId(301, 8162, 6, 81))
    kept = {p: p.read_bytes() for p in (truth, measured)}
    for path, content in kept.items():
        path.write_bytes(content[:50])
    findings = integrity.verify_data_folder(paths)[0]
    assert {f.path: f.problem for f in findings} == {truth: "unreadable (damaged)", measured: "unreadable (damaged)"}
    for finding in findings:
        words = shlex.split(finding.redo)
        assert words[0] == "00_download.py" and "--source" in words and str(data) in words
        proc = subprocess.run([sys.executable, CODE / words[0], *words[1:], "-q"], capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    assert {p: p.read_bytes() for p in kept} == kept  # the simulation is deterministic: the same files again
    assert integrity.verify_data_folder(paths)[0] == []
