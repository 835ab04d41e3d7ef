"""Stage 00's checks of what it fetches: a sweep's identity against its name, a full disk in a local copy, and the
files a lost manifest leaves behind."""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sas_server import SasServer, make_sas_tree

from stargal import sdss
from stargal.config import FieldSet
from stargal.download import FetchError, HttpSettings, Manifest, copy_local, partial_path
from stargal.paths import DataPaths
from stargal.stages.download import DownloadOptions, plan_files, run_download

FS = FieldSet(rerun=301, run=8162, camcol=6, fields=(80,), train_fields=(80,), val_fields=(), test_fields=())
FAST = HttpSettings(connect_timeout=2.0, read_timeout=2.0, retries=3, backoff=0.01, backoff_max=0.05)
STAR = sdss.catalog_relpath(301, 8162, 6, "star")
GAL = sdss.catalog_relpath(301, 8162, 6, "gal")
U80 = sdss.frame_relpath("u", 301, 8162, 6, 80)
STAR_LABEL = "calibObj-008162-6-star.fits.gz (catalog star)"


@pytest.fixture(scope="module")
def sas_tree(tmp_path_factory) -> Path:
    return make_sas_tree(tmp_path_factory.mktemp("sas"), 301, 8162, 6, FS.fields)


@pytest.fixture(scope="module")
def other_run(tmp_path_factory) -> Path:
    """The sweeps of run 8163 (same camcol and rerun)."""
    return make_sas_tree(tmp_path_factory.mktemp("other"), 301, 8163, 6, FS.fields)


def _tree_with(tmp_path: Path, sas_tree: Path, relpath: str, content: bytes) -> Path:
    tree = tmp_path / "mirror"
    shutil.copytree(sas_tree, tree)
    (tree / relpath).write_bytes(content)
    return tree


def _another_copy(frame: Path, origin: str) -> bytes:
    """A valid frame of this name that is not ``frame``'s bytes: one header card more."""
    with fits.open(io.BytesIO(bz2.decompress(frame.read_bytes()))) as hdul:
        hdul[0].header["ORIGIN"] = origin
        buf = io.BytesIO()
        hdul.writeto(buf)
    return bz2.compress(buf.getvalue())


def _download(paths: DataPaths, source: str, **kw):
    return run_download(paths, FS, DownloadOptions(source=source, http=FAST, **kw))


# ---------------------------------------------------------------------------------------------------------
# a sweep's identity


@pytest.mark.parametrize("over", ["local", "http"])
def test_a_sweep_of_another_run_under_this_name_is_refused_at_download(sas_tree, other_run, tmp_path, over):
    """00 checked a frame's header against its name but took any sweep under a sweep's name: run 8163's stars under
    run 8162's name were recorded as complete (exit 0), and only stage 01 refused them, after the whole download.
    Now the file fails where it is fetched, naming it, and nothing is left under its name (no retries: the server
    gives the same file again)."""
    wrong = (other_run / sdss.catalog_relpath(301, 8163, 6, "star")).read_bytes()
    tree = _tree_with(tmp_path, sas_tree, STAR, wrong)
    paths = DataPaths(tmp_path / "data")
    with SasServer(tree) as server:
        summary = _download(paths, str(tree) if over == "local" else server.base_url)
        if over == "http":
            assert len(server.gets(STAR)) == 1
            assert server.base_url + STAR in summary.failures[STAR_LABEL]
    assert list(summary.failures) == [STAR_LABEL]
    reason = summary.failures[STAR_LABEL]
    assert "not this file name's sweep" in reason and "rows of RUN 8163, but the file name says RUN 8162" in reason
    assert not paths.sas_file(STAR).exists() and not partial_path(paths.sas_file(STAR)).exists()
    assert STAR not in Manifest.load(paths.manifest).files
    assert summary.fetched == len(plan_files(FS)) - 1


def test_the_other_kinds_sweep_under_this_name_is_refused(sas_tree, tmp_path):
    """The galaxy sweep under the star sweep's name would label every galaxy a star."""
    tree = _tree_with(tmp_path, sas_tree, STAR, (sas_tree / GAL).read_bytes())
    paths = DataPaths(tmp_path / "data")
    summary = _download(paths, str(tree))
    assert list(summary.failures) == [STAR_LABEL]
    assert "rows are not OBJC_TYPE 6, as a star sweep's are" in summary.failures[STAR_LABEL]


def test_a_sweep_whose_header_names_another_camcol_is_refused(sas_tree, tmp_path):
    header = fits.Header()
    header["CAMCOL"] = 5
    raw = gzip.decompress((sas_tree / STAR).read_bytes())
    with fits.open(io.BytesIO(raw)) as hdul:
        columns = {name: np.asarray(hdul[1].data[name]) for name in hdul[1].columns.names}
    source = tmp_path / "made" / "calibObj-008162-6-star.fits.gz"
    sdss.write_catalog(source, columns, header)
    assert sdss.catalog_head_problems(source) == ["header CAMCOL is 5, but the file name says 6"]
    tree = _tree_with(tmp_path, sas_tree, STAR, source.read_bytes())
    summary = _download(DataPaths(tmp_path / "data"), str(tree))
    assert "header CAMCOL is 5" in summary.failures[STAR_LABEL]


def test_the_sweep_check_reads_only_the_start_of_the_stream(tmp_path):
    """Real sweeps are hundreds of MB: the identity is read from the headers and the first rows, so a sweep cut
    short after them (whose verification names that) is still told apart by its rows."""
    rows = sdss.CATALOG_HEAD_ROWS * 3
    for run in (8162, 8163):
        tree = make_sas_tree(tmp_path / str(run), 301, run, 6, (80,), rows=rows)
        sweep = tree / sdss.catalog_relpath(301, run, 6, "star")
        cut = tmp_path / f"cut{run}" / "calibObj-008162-6-star.fits.gz"  # both under run 8162's name
        cut.parent.mkdir()
        cut.write_bytes(sweep.read_bytes()[: sweep.stat().st_size // 2])  # half the stream, no gzip trailer
        with pytest.raises(EOFError):
            gzip.decompress(cut.read_bytes())
        problems = sdss.catalog_head_problems(cut)
        assert problems == ([] if run == 8162 else ["rows of RUN 8163, but the file name says RUN 8162"])
    assert sdss.catalog_head_problems(cut, "frame-r-008162-6-0080.fits.bz2") == []  # not a sweep's name


def test_verify_flags_a_recorded_sweep_of_another_run(sas_tree, other_run, tmp_path, caplog):
    """A sweep recorded before 00 checked sweeps (its sha256 the manifest's) passes --verify's hash: --verify reads
    its identity too, forgets it and fetches it again, here from a source that gives the same wrong file."""
    wrong = (other_run / sdss.catalog_relpath(301, 8163, 6, "star")).read_bytes()
    paths = DataPaths(tmp_path / "data")
    assert _download(paths, str(sas_tree)).ok
    paths.sas_file(STAR).write_bytes(wrong)
    manifest = Manifest.load(paths.manifest)
    manifest.record(STAR, "https://example.org/x", len(wrong), hashlib.sha256(wrong).hexdigest())
    manifest.save()
    tree = _tree_with(tmp_path, sas_tree, STAR, wrong)
    assert _download(paths, str(tree)).ok  # without --verify: the recorded file is complete
    summary = _download(paths, str(tree), verify_existing=True)
    assert list(summary.failures) == [STAR_LABEL]
    assert "not this file name's sweep: rows of RUN 8163" in caplog.text
    assert STAR not in Manifest.load(paths.manifest).files
    again = _download(paths, str(sas_tree))  # from a good copy
    assert again.ok and again.fetched == 1
    assert paths.sas_file(STAR).read_bytes() == (sas_tree / STAR).read_bytes()


@pytest.mark.real
def test_the_real_star_sweep_passes_and_under_another_runs_name_is_refused(sample_dir, tmp_path):
    real = sample_dir / "004510-4-0030" / "calibObj-004510-4-star.fits.gz"
    assert sdss.catalog_head_problems(real) == []
    assert sdss.catalog_head_problems(real, rerun=301) == []  # its RERUN column holds the string '301'
    assert sdss.catalog_head_problems(real, rerun=302) == ["rows of RERUN 301, but rerun 302 was asked for"]
    for name, expect in (
        ("calibObj-004511-4-star.fits.gz", "rows of RUN 4510, but the file name says RUN 4511"),
        ("calibObj-004510-3-star.fits.gz", "rows of CAMCOL 4, but the file name says CAMCOL 3"),
        ("calibObj-004510-4-gal.fits.gz", "rows are not OBJC_TYPE 3"),
    ):
        link = tmp_path / name
        link.symlink_to(real)  # a link: the sample is never copied
        problems = sdss.catalog_head_problems(link)
        assert any(expect in p for p in problems), problems


# ---------------------------------------------------------------------------------------------------------
# a full disk in a local copy


def test_a_full_disk_in_a_local_copy_names_the_destination_not_the_source(sas_tree, tmp_path, monkeypatch):
    """It said "cannot copy SOURCE (No space left on device)": the source is not at fault."""
    src, final = sas_tree / U80, tmp_path / "data" / "frame-u-008162-6-0080.fits.bz2"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FetchError) as caught:
        copy_local(src, final, "frame")
    message = str(caught.value)
    assert message.startswith(f"cannot write {final}: the disk is full") and str(src) not in message
    assert caught.value.__cause__.errno == errno.ENOSPC  # what stops the run in the full disk's line
    assert not final.exists() and not partial_path(final).exists()
    monkeypatch.undo()
    with pytest.raises(FetchError, match=f"cannot read {tmp_path}"):  # the source's own trouble names it
        copy_local(tmp_path, final, "frame")


# ---------------------------------------------------------------------------------------------------------
# a lost manifest


def test_a_lost_manifest_keeps_the_verified_files_and_fetches_only_the_bad_ones(sas_tree, tmp_path):
    """Without its manifest 00 fetched every file again, though its warning said "files will be verified again".
    The files are verified (content, header against name) and kept; a damaged one and a frame under another's
    name are fetched again."""
    paths = DataPaths(tmp_path / "data")
    with SasServer(sas_tree) as server:
        assert _download(paths, server.base_url).ok
        paths.manifest.unlink()
        damaged = paths.sas_file(U80)
        damaged.write_bytes(damaged.read_bytes()[:-100])
        renamed = sdss.frame_relpath("g", 301, 8162, 6, 80)
        shutil.copyfile(paths.sas_file(sdss.frame_relpath("r", 301, 8162, 6, 80)), paths.sas_file(renamed))
        server.clear()
        summary = _download(paths, server.base_url)
        assert summary.ok and summary.fetched == 2 and summary.skipped == len(plan_files(FS)) - 2
        assert sorted(g.relpath for g in server.gets()) == sorted([U80, renamed])
    manifest = Manifest.load(paths.manifest)
    assert set(manifest.files) == {spec.relpath for spec in plan_files(FS)}
    assert manifest.files[STAR]["url"] == server.base_url + STAR
    for spec in plan_files(FS):
        assert paths.sas_file(spec.relpath).read_bytes() == (sas_tree / spec.relpath).read_bytes()


def test_a_lost_manifest_keeps_only_the_files_a_local_source_holds_unchanged(sas_tree, tmp_path):
    paths = DataPaths(tmp_path / "data")
    assert _download(paths, str(sas_tree)).ok
    paths.manifest.unlink()
    # another copy of this frame (one header card more): a valid frame of this name, not the data folder's
    tree = _tree_with(tmp_path, sas_tree, U80, _another_copy(sas_tree / U80, "another copy"))
    header_fixed = tree / U80
    summary = _download(paths, str(tree))
    assert summary.ok and summary.fetched == 1 and summary.skipped == len(plan_files(FS)) - 1
    assert paths.sas_file(U80).read_bytes() == header_fixed.read_bytes()
    assert Manifest.load(paths.manifest).files[U80]["url"] == header_fixed.as_uri()


def test_a_lost_manifest_does_not_keep_a_simulated_file_for_a_real_download(tmp_path):
    """A simulated sky's files (whole, their headers their names') would be recorded as SDSS's: they are fetched."""
    paths = DataPaths(tmp_path / "data")
    assert run_download(paths, FS, DownloadOptions(source="simulated", sim_shape=(64, 96))).ok
    paths.manifest.unlink()
    tree = make_sas_tree(tmp_path / "real", 301, 8162, 6, FS.fields)
    with SasServer(tree) as server:
        summary = _download(paths, server.base_url)
        assert summary.ok and summary.skipped == 0 and len(server.gets()) == len(plan_files(FS))
    for spec in plan_files(FS):
        assert paths.sas_file(spec.relpath).read_bytes() == (tree / spec.relpath).read_bytes()


def test_a_lost_manifest_does_not_keep_a_file_the_server_serves_otherwise(sas_tree, tmp_path):
    """A whole, real frame of this name but not the one the server gives (another release's, another mirror's:
    its size differs from the server's for its URL) is fetched again, not recorded under the server's URL."""
    paths = DataPaths(tmp_path / "data")
    assert _download(paths, str(sas_tree)).ok
    paths.manifest.unlink()
    tree = _tree_with(tmp_path, sas_tree, U80, _another_copy(sas_tree / U80, "a later calibration"))
    with SasServer(tree) as server:
        summary = _download(paths, server.base_url)
        assert [g.relpath for g in server.gets()] == [U80]
    assert summary.ok and summary.fetched == 1 and summary.skipped == len(plan_files(FS)) - 1
    assert paths.sas_file(U80).read_bytes() == (tree / U80).read_bytes()


def test_a_data_folder_that_cannot_take_a_file_names_where(sas_tree, tmp_path):
    """It said "cannot write (File exists)" for every file, naming neither the file nor the folder at fault."""
    paths = DataPaths(tmp_path / "data")
    blocker = paths.sas_file(U80).parent  # a file where the frames' folder goes
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    summary = _download(paths, str(sas_tree), frames_only=True)
    assert len(summary.failures) == 6
    assert all(reason == f"cannot write {blocker} (File exists)" for reason in summary.failures.values())


# ---------------------------------------------------------------------------------------------------------
# a frame under another's name over HTTP; a sweep's run, camcol and rerun as integers


def test_a_frame_whose_header_names_another_fails_at_once_over_http(sas_tree, tmp_path):
    """The server's g frame under the u frame's name was fetched 1 + retries times with backoff, as if the network
    had garbled it, though the server sends the same file every time: it fails on the first, naming the URL and
    what the header says, as a sweep of another run does."""
    tree = _tree_with(tmp_path, sas_tree, U80, (sas_tree / U80.replace("frame-u-", "frame-g-")).read_bytes())
    paths = DataPaths(tmp_path / "data")
    label = "frame-u-008162-6-0080.fits.bz2 (band u)"
    with SasServer(tree) as server:
        summary = _download(paths, server.base_url, frames_only=True)
        assert len(server.gets(U80)) == 1
    assert list(summary.failures) == [label]
    reason = summary.failures[label]
    assert "its header is not this file name's frame: FILTER is 'g', not 'u'" in reason
    assert server.base_url + U80 in reason and "gave up" not in reason
    assert not paths.sas_file(U80).exists() and not partial_path(paths.sas_file(U80)).exists()


def _sweep(path: Path, sas_tree: Path, header: dict | None = None, **columns) -> Path:
    """The star sweep of ``sas_tree`` with ``columns`` replaced (any dtype: a string RUN) and ``header`` added."""
    with fits.open(io.BytesIO(gzip.decompress((sas_tree / STAR).read_bytes()))) as hdul:
        table = {name: np.asarray(hdul[1].data[name]) for name in hdul[1].columns.names}
    n = len(table["RUN"])
    table.update({name: np.full(n, value) for name, value in columns.items()})
    cols = [fits.Column(name=k, format=f"{v.dtype.itemsize}A" if v.dtype.kind == "U" else sdss._fits_format(v),
                        array=v) for k, v in table.items()]  # fmt: skip
    primary = fits.PrimaryHDU(header=fits.Header(list((header or {}).items())))
    buf = io.BytesIO()
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols)]).writeto(buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


def test_a_sweep_run_or_camcol_that_is_no_integer_is_refused(sas_tree, tmp_path):
    """A header RUN of 8162.7 was read as 8162 (passed); a string RUN column gave "rows of RUN '8162', but the file
    name says RUN 8162". Integer strings are compared as integers; anything else is named as no integer."""
    name = tmp_path / "calibObj-008162-6-star.fits.gz"
    cases = [
        ({"RUN": 8162.7}, {}, ["header RUN is 8162.7, not an integer"]),
        ({"CAMCOL": "six"}, {}, ["header CAMCOL is 'six', not an integer"]),
        ({"RUN": 8162.0}, {}, []),
        ({}, {"RUN": "8162"}, []),
        ({}, {"RUN": "8163"}, ["rows of RUN 8163, but the file name says RUN 8162"]),
        ({}, {"RUN": "abc"}, ["rows of RUN 'abc', not an integer"]),
        ({}, {"RUN": 8162.5}, ["rows of RUN 8162.5, not an integer"]),
        ({}, {"CAMCOL": np.int16(7)}, ["rows of CAMCOL 7, but the file name says CAMCOL 6"]),
    ]
    for header, columns, expect in cases:
        assert sdss.catalog_head_problems(_sweep(name, sas_tree, header, **columns)) == expect, (header, columns)


def test_a_sweep_of_another_rerun_is_refused(sas_tree, tmp_path):
    """A sweep's name carries no rerun (its folder does): rerun 302's sweep in rerun 301's folder was taken.
    Its RERUN column (or keyword), when present, is read against the rerun 00 was asked for."""
    made = tmp_path / "made" / "calibObj-008162-6-star.fits.gz"
    _sweep(made, sas_tree, RERUN="302")
    assert sdss.catalog_head_problems(made) == []  # the rerun unknown: nothing to compare with
    assert sdss.catalog_head_problems(made, rerun=301) == ["rows of RERUN 302, but rerun 301 was asked for"]
    assert sdss.catalog_head_problems(made, rerun=302) == []
    tree = _tree_with(tmp_path, sas_tree, STAR, made.read_bytes())
    paths = DataPaths(tmp_path / "data")
    with SasServer(tree) as server:
        summary = _download(paths, server.base_url)
        assert len(server.gets(STAR)) == 1
    assert list(summary.failures) == [STAR_LABEL]
    assert "rows of RERUN 302, but rerun 301 was asked for" in summary.failures[STAR_LABEL]
    summary = _download(DataPaths(tmp_path / "local"), str(tree))
    assert "rows of RERUN 302, but rerun 301 was asked for" in summary.failures[STAR_LABEL]
    _sweep(made, sas_tree, {"RERUN": 302})
    assert sdss.catalog_head_problems(made, rerun=301) == ["header RERUN is 302, but rerun 301 was asked for"]


def test_a_lost_manifests_kept_files_are_counted_as_verified_and_kept(sas_tree, tmp_path, caplog):
    """After a lost manifest the files that verified were kept, but the run said "N of M files already complete
    (manifest)", as if the manifest had recorded them."""
    paths = DataPaths(tmp_path / "data")
    assert _download(paths, str(sas_tree)).ok
    manifest = Manifest.load(paths.manifest)
    manifest.forget(U80)  # one file unrecorded, the rest in the manifest
    manifest.save()
    caplog.clear()
    with caplog.at_level("INFO", logger="stargal"):
        summary = _download(paths, str(sas_tree))
    total = len(plan_files(FS))
    assert summary.ok and summary.fetched == 0 and summary.skipped == total and summary.kept == 1
    assert (
        f"{total} of {total} files already complete ({total - 1} recorded in the manifest, 1 not recorded but "
        "verified and kept)" in caplog.text
    )
    assert f"{total} already complete (1 of them verified and kept)" in summary.lines()[0]
    caplog.clear()
    with caplog.at_level("INFO", logger="stargal"):
        again = _download(paths, str(sas_tree))
    assert again.kept == 0 and f"{total} of {total} files already complete (manifest)" in caplog.text


def test_a_frame_header_run_that_is_no_integer_is_named_not_truncated():
    from astropy.io import fits

    header = fits.Header({"FILTER": "r", "RUN": 8162.7, "CAMCOL": "6", "FRAME": 80, "BUNIT": "nanomaggy"})
    assert sdss.header_identity_problems(header, "r", 8162, 6, 80) == ["RUN is 8162.7, not an integer"]
    header["RUN"] = 8162
    assert sdss.header_identity_problems(header, "r", 8162, 6, 80) == []
