"""Stage 00: the downloader against a real HTTP server on 127.0.0.1 with injected faults, and local sources."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image
from sas_server import HTML_PAGE, SasServer, make_sas_tree

from stargal import fsio, sdss
from stargal.config import BANDS, SIMULATION_VERSION, FieldSet
from stargal.download import HttpSettings, Manifest, backoff_delay, parse_retry_after, partial_path
from stargal.errors import StargalError
from stargal.paths import DataPaths, FieldId
from stargal.sources import LocalSource, resolve_source
from stargal.stages.download import DownloadOptions, final_path, plan_files, run_download
from stargal.verify import VerificationError, verify_file

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT_ROOT / "code" / "00_download.py"
FS = FieldSet(rerun=301, run=8162, camcol=6, fields=(80, 81), train_fields=(80,), val_fields=(), test_fields=(81,))
# fast failure handling for fault tests: tiny backoff and timeouts
FAST = HttpSettings(connect_timeout=2.0, read_timeout=2.0, retries=3, backoff=0.01, backoff_max=0.05)
U80 = sdss.frame_relpath("u", 301, 8162, 6, 80)
G81 = sdss.frame_relpath("g", 301, 8162, 6, 81)
STAR = sdss.catalog_relpath(301, 8162, 6, "star")


@pytest.fixture(scope="module")
def sas_tree(tmp_path_factory) -> Path:
    return make_sas_tree(tmp_path_factory.mktemp("sas"), 301, 8162, 6, FS.fields)


@pytest.fixture
def server(sas_tree):
    with SasServer(sas_tree) as srv:
        yield srv


def _options(source: str, **kw) -> DownloadOptions:
    kw.setdefault("http", FAST)
    return DownloadOptions(source=source, **kw)


def _assert_mirrors(paths: DataPaths, tree: Path, fs: FieldSet = FS, frames_only: bool = False) -> None:
    """Every planned file equals the served one, is in the manifest with its sha256, and no .part is left."""
    manifest = Manifest.load(paths.manifest)
    specs = plan_files(fs, BANDS, frames_only)
    for spec in specs:
        got = final_path(paths, spec)
        assert got.read_bytes() == (tree / spec.relpath).read_bytes(), spec.relpath
        entry = manifest.files[spec.relpath]
        assert entry["size"] == got.stat().st_size
        assert entry["sha256"] == verify_file(got, spec.kind).sha256
    assert not list(paths.sas.rglob("*.part"))


def _load_script():
    spec = importlib.util.spec_from_file_location("download_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------
# normal operation


def test_download_equals_served_bytes_and_rerun_transfers_nothing(server, sas_tree, tmp_path):
    paths = DataPaths(tmp_path / "data")
    summary = run_download(paths, FS, _options(server.base_url))
    assert summary.ok and summary.fetched == summary.planned == 2 + 2 * 6
    _assert_mirrors(paths, sas_tree)
    assert summary.bytes == sum((sas_tree / s.relpath).stat().st_size for s in plan_files(FS))
    gets = server.gets()
    assert len(gets) == summary.planned
    assert all(g.user_agent.startswith("stargal/") for g in gets)
    assert paths.frame(FieldId(301, 8162, 6, 80), "r").exists()
    assert paths.catalog(301, 8162, 6, "gal").exists()

    server.clear()
    again = run_download(paths, FS, _options(server.base_url))
    assert again.ok and again.skipped == again.planned and again.fetched == 0
    assert server.gets() == []  # nothing transferred

    forced = run_download(paths, FS, _options(server.base_url, force=True))
    assert forced.fetched == forced.planned and len(server.gets()) == forced.planned
    _assert_mirrors(paths, sas_tree)


def test_a_password_in_the_source_url_is_neither_shown_nor_kept(server, sas_tree, tmp_path):
    paths = DataPaths(tmp_path / "data")
    secret = server.base_url.replace("http://", "http://alice:s3cret@")
    server.add_fault(U80, *[{"redirect": True}] * 200)  # a redirect loop: the network's failure, not the disk's
    summary = run_download(paths, FS, _options(secret))
    assert summary.source == server.base_url.replace("http://", "http://***@")
    reason = summary.failures["frame-u-008162-6-0080.fits.bz2 (band u)"]
    assert reason.startswith("download failed (Exceeded 30 redirects") and "cannot write" not in reason, reason
    assert "s3cret" not in paths.manifest.read_text() and "s3cret" not in reason
    assert summary.fetched == summary.planned - 1


def test_frames_only_and_band_subset(server, sas_tree, tmp_path):
    paths = DataPaths(tmp_path / "data")
    summary = run_download(paths, FS, _options(server.base_url, frames_only=True, bands=("g", "r")))
    assert summary.ok and summary.fetched == 2 * 3
    assert not paths.catalog(301, 8162, 6, "gal").exists()
    assert not paths.frame(FieldId(301, 8162, 6, 80), "u").exists()
    assert paths.frame(FieldId(301, 8162, 6, 81), "g").read_bytes() == (sas_tree / G81).read_bytes()
    # without the irg jpegs (real_sky.py: a sample folder need not hold them): two frames per field, no picture
    bare = DataPaths(tmp_path / "bare")
    summary = run_download(bare, FS, _options(server.base_url, frames_only=True, bands=("g", "r"), pictures=False))
    assert summary.ok and summary.fetched == 2 * 2 and not list(bare.sas.rglob("*.jpg"))
    assert paths.irg_jpeg(FieldId(301, 8162, 6, 81)).is_file()


def test_file_changed_on_disk_is_refetched(server, sas_tree, tmp_path):
    paths = DataPaths(tmp_path / "data")
    fs = FieldSet(301, 8162, 6, (80,), (80,), (), ())
    run_download(paths, fs, _options(server.base_url, frames_only=True))
    target = paths.sas_file(U80)
    target.write_bytes(target.read_bytes()[:-10])  # damaged after download: size no longer matches
    server.clear()
    summary = run_download(paths, fs, _options(server.base_url, frames_only=True))
    assert summary.fetched == 1 and [g.relpath for g in server.gets()] == [U80]
    assert target.read_bytes() == (sas_tree / U80).read_bytes()

    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF  # same size, different content: the file's stamp changed, so a rerun checks its sha256
    target.write_bytes(bytes(data))
    server.clear()
    assert run_download(paths, fs, _options(server.base_url, frames_only=True)).fetched == 1
    # damage that leaves the stamp as recorded (bit rot beneath the file system): only --verify notices
    target.write_bytes(bytes(data))
    manifest = fsio.read_json(paths.manifest)
    manifest["files"][U80]["stamp"] = fsio.file_stamp(target)
    fsio.write_json(paths.manifest, manifest)
    server.clear()
    assert run_download(paths, fs, _options(server.base_url, frames_only=True)).fetched == 0
    summary = run_download(paths, fs, _options(server.base_url, frames_only=True, verify_existing=True))
    assert summary.fetched == 1 and summary.skipped == 5 and [g.relpath for g in server.gets()] == [U80]
    assert target.read_bytes() == (sas_tree / U80).read_bytes()


# ---------------------------------------------------------------------------------------------------------
# injected faults


def _one(server, tmp_path, relpath=U80, **kw):
    """Download field 80's frames; return (summary, paths)."""
    fs = FieldSet(301, 8162, 6, (80,), (80,), (), ())
    paths = DataPaths(tmp_path / "data")
    return run_download(paths, fs, _options(server.base_url, frames_only=True, **kw)), paths


def test_500_twice_then_success(server, sas_tree, tmp_path):
    server.add_fault(U80, {"status": 500}, {"status": 500})
    summary, paths = _one(server, tmp_path)
    assert summary.ok
    assert [g.status for g in server.gets(U80)] == [500, 500, 200]
    assert paths.sas_file(U80).read_bytes() == (sas_tree / U80).read_bytes()


def test_connection_dropped_mid_body_is_resumed(server, sas_tree, tmp_path):
    server.add_fault(U80, {"drop_after": 1000})
    summary, paths = _one(server, tmp_path)
    assert summary.ok and summary.resumed == 1
    gets = server.gets(U80)
    assert len(gets) == 2 and gets[0].range is None
    resumed_from = int(gets[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= 1000 and gets[1].status == 206
    assert paths.sas_file(U80).read_bytes() == (sas_tree / U80).read_bytes()


def test_body_shorter_than_content_length(server, sas_tree, tmp_path):
    server.add_fault(U80, {"short": 500}, {"short": 300})
    summary, paths = _one(server, tmp_path)
    assert summary.ok
    assert len(server.gets(U80)) == 3
    assert paths.sas_file(U80).read_bytes() == (sas_tree / U80).read_bytes()


def test_server_without_range_support_restarts(sas_tree, tmp_path):
    with SasServer(sas_tree, ranges=False) as server:
        server.add_fault(U80, {"drop_after": 1000})
        summary, paths = _one(server, tmp_path)
        assert summary.ok and summary.resumed == 0
        assert [g.status for g in server.gets(U80)] == [200, 200]
    assert paths.sas_file(U80).read_bytes() == (sas_tree / U80).read_bytes()


def test_server_that_always_breaks_off_without_range_support_gives_up(sas_tree, tmp_path):
    with SasServer(sas_tree, ranges=False) as server:
        server.add_fault(U80, {"drop_after": 1000, "sticky": True})
        summary, paths = _one(server, tmp_path)
        (reason,) = summary.failures.values()
        assert "connection dropped mid-body" in reason
        # the first attempt moved the file forward (free); each restart to the same 1000 bytes uses up a retry
        assert len(server.gets(U80)) == FAST.retries + 2
    assert not paths.sas_file(U80).exists()


def test_stale_partial_that_does_not_match_is_restarted(server, sas_tree, tmp_path):
    paths = DataPaths(tmp_path / "data")
    part = partial_path(paths.sas_file(U80))
    part.parent.mkdir(parents=True)
    part.write_bytes(b"BZh9" + b"\0" * 200)  # a partial file that is no prefix of the real one
    summary, _ = _one(server, tmp_path)
    assert summary.ok
    assert [g.status for g in server.gets(U80)] == [206, 200]  # resume attempt fails verification, then restart
    assert paths.sas_file(U80).read_bytes() == (sas_tree / U80).read_bytes()


@pytest.mark.parametrize("flavour", [True, "octet"], ids=["text-html", "html-labelled-binary"])
def test_html_page_with_status_200_is_rejected(server, tmp_path, flavour):
    """A page served with status 200 is the server's answer (a login or portal page, a mirror's "not found" page, a
    wrong base URL): the same page came back on each of the retries, which, with their backoff, cost every file
    half a minute for nothing. It fails at once, naming the URL that answered so."""
    server.add_fault(U80, {"html": flavour, "sticky": True})
    summary, paths = _one(server, tmp_path)
    assert not summary.ok
    ((label, reason),) = summary.failures.items()
    assert "frame-u-008162-6-0080.fits.bz2" in label and "HTML page" in reason
    assert server.base_url + U80 in reason
    assert not paths.sas_file(U80).exists() and not partial_path(paths.sas_file(U80)).exists()
    assert len(server.gets(U80)) == 1
    assert summary.fetched == 5  # the other bands


def test_html_page_once_then_the_file_on_the_rerun(server, sas_tree, tmp_path):
    server.add_fault(U80, {"html": "octet"})
    summary, paths = _one(server, tmp_path)
    assert not summary.ok and len(server.gets(U80)) == 1
    summary, paths = _one(server, tmp_path)
    assert summary.ok and summary.fetched == 1 and len(server.gets(U80)) == 2
    assert paths.sas_file(U80).read_bytes() == (sas_tree / U80).read_bytes()


def test_404_for_one_band_names_it_and_fetches_the_rest(server, sas_tree, tmp_path):
    server.add_fault(G81, {"status": 404, "sticky": True})
    paths = DataPaths(tmp_path / "data")
    argv = ["--data-dir", str(paths.root), "--source", server.base_url, "--fields", "80", "81", "--retries", "3",
            "--backoff", "0.01"]  # fmt: skip
    status = _load_script().main(argv)
    assert status == 1
    assert len(server.gets(G81)) == 1  # a 404 is not retried
    manifest = Manifest.load(paths.manifest)
    assert G81 not in manifest.files and len(manifest.files) == 13
    summary = run_download(paths, FS, _options(server.base_url))
    ((label, reason),) = summary.failures.items()
    assert label == "frame-g-008162-6-0081.fits.bz2 (band g)" and "HTTP 404" in reason
    for spec in plan_files(FS):
        assert final_path(paths, spec).exists() == (spec.relpath != G81)


def test_script_prints_the_failed_file(server, tmp_path, capsys):
    server.add_fault(G81, {"status": 404, "sticky": True})
    paths = DataPaths(tmp_path / "data")
    argv = ["--data-dir", str(paths.root), "--source", server.base_url, "--fields", "81", "--frames-only", "-q"]
    assert _load_script().main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED frame-g-008162-6-0081.fits.bz2 (band g): HTTP 404" in out
    assert "5 fetched" in out


def test_server_slower_than_read_timeout(server, sas_tree, tmp_path):
    settings = HttpSettings(connect_timeout=1.0, read_timeout=0.3, retries=2, backoff=0.01, backoff_max=0.05)
    server.add_fault(U80, {"delay": 1.0})
    summary, paths = _one(server, tmp_path, http=settings)
    assert summary.ok and len(server.gets(U80)) == 2
    assert paths.sas_file(U80).read_bytes() == (sas_tree / U80).read_bytes()

    server.clear()
    server.add_fault(U80, {"delay": 0.8, "sticky": True})
    summary, paths = _one(server, tmp_path / "again", http=settings)
    ((label, reason),) = summary.failures.items()
    assert "band u" in label and "timed out" in reason and "3 attempts" in reason
    assert not paths.sas_file(U80).exists()


def test_429_honours_retry_after(server, sas_tree, tmp_path):
    server.add_fault(U80, {"status": 429, "retry_after": "1"})
    summary, paths = _one(server, tmp_path, workers=1)
    assert summary.ok
    first, second = server.gets(U80)
    assert first.status == 429 and second.status == 200
    assert second.time - first.time >= 0.9  # waited for Retry-After, not for the 0.01 s backoff
    assert paths.sas_file(U80).read_bytes() == (sas_tree / U80).read_bytes()


def test_retries_exhausted_on_persistent_503(server, tmp_path):
    server.add_fault(U80, {"status": 503, "sticky": True})
    summary, _ = _one(server, tmp_path)
    (reason,) = summary.failures.values()
    assert "HTTP 503" in reason and "4 attempts" in reason
    assert summary.fetched == 5


@pytest.mark.slow
def test_download_killed_with_sigkill_then_rerun(sas_tree, tmp_path):
    tree = make_sas_tree(tmp_path / "big", 301, 8162, 6, (80,), shape=(160, 240), seed=3)
    paths = DataPaths(tmp_path / "data")
    argv = [sys.executable, str(SCRIPT), "--data-dir", str(paths.root), "--fields", "80", "--workers", "1",
            "--retries", "1", "--backoff", "0.01"]  # fmt: skip
    with SasServer(tree, rate=200_000) as server:  # ~0.75 s per frame: slow enough to be killed mid-file
        proc = subprocess.Popen([*argv, "--source", server.base_url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        killed_part = None
        while time.monotonic() < deadline and proc.poll() is None:
            complete = [p for p in paths.sas.rglob("*") if p.is_file() and p.suffix in (".bz2", ".gz", ".jpg")]
            parts = [p for p in paths.sas.rglob("*.part") if p.stat().st_size > 0]
            if len(complete) >= 2 and parts:
                os.kill(proc.pid, signal.SIGKILL)
                killed_part = parts[0]
                break
            time.sleep(0.02)
        proc.wait(timeout=30)
        assert killed_part is not None, proc.stderr.read().decode()
        assert proc.returncode == -signal.SIGKILL
        # a kill between a file's rename and the manifest's save leaves it complete but unrecorded: the rerun
        # cannot vouch for it and fetches it whole once; every recorded file must be kept
        recorded = set(Manifest.load(paths.manifest).files)
        complete = [p for p in paths.sas.rglob("*") if p.is_file() and p.suffix in (".bz2", ".gz", ".jpg")]
        before = {p.name for p in complete if p.relative_to(paths.sas).as_posix() in recorded}
        unrecorded = {p.name for p in complete} - before
        assert len(unrecorded) <= 1, unrecorded  # one worker: one file in flight at the kill
        partial_size = killed_part.stat().st_size if killed_part.exists() else 0
        for p in complete:  # nothing under a final name is partial or corrupt
            verify_file(p, "catalog" if p.name.endswith(".gz") else "frame" if p.name.endswith(".bz2") else "irg")

        server.rate = None
        server.clear()
        done = subprocess.run([*argv, "--source", server.base_url], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        fetched = [g.relpath.rsplit("/", 1)[-1] for g in server.gets()]
        assert not set(fetched) & before  # no recorded file refetched
        assert all(fetched.count(name) == 1 for name in unrecorded), (sorted(unrecorded), fetched, killed_part.name)
        killed_rel = killed_part.relative_to(paths.sas).as_posix().removesuffix(".part")
        gets = server.gets(killed_rel)
        if partial_size:  # the usual case: the partial file is resumed where it stopped
            assert [(g.range, g.status) for g in gets] == [(f"bytes={partial_size}-", 206)]
        else:  # it was completed in the instant before the kill
            assert len(gets) <= 1
    _assert_mirrors(paths, tree, FieldSet(301, 8162, 6, (80,), (80,), (), ()))


# ---------------------------------------------------------------------------------------------------------
# local sources


def test_local_sas_layout(sas_tree, tmp_path):
    paths = DataPaths(tmp_path / "data")
    summary = run_download(paths, FS, _options(str(sas_tree)))
    assert summary.ok and summary.fetched == summary.planned
    _assert_mirrors(paths, sas_tree)
    assert Manifest.load(paths.manifest).files[U80]["url"] == (sas_tree / U80).as_uri()
    # another stargal data folder works too (its sas/ holds the SAS layout)
    other = DataPaths(tmp_path / "other")
    assert run_download(other, FS, _options(str(paths.root))).fetched == summary.planned
    _assert_mirrors(other, sas_tree)


def test_a_local_source_replaces_files_another_source_left(server, sas_tree, tmp_path, caplog):
    """A file the manifest records is complete for a local --source only when that folder holds the same content:
    files copied from another folder (another sky under the same names) or fetched over HTTP are kept only then."""
    other = make_sas_tree(tmp_path / "other", 301, 8162, 6, FS.fields, seed=1)  # the same names, other content
    paths = DataPaths(tmp_path / "data")
    assert run_download(paths, FS, _options(server.base_url)).ok
    # fetched over HTTP: the folder holding the same files finds them complete, without copying a byte
    same = run_download(paths, FS, _options(str(sas_tree)))
    assert same.ok and same.skipped == same.planned and same.bytes == 0
    with caplog.at_level(logging.INFO, logger="stargal"):
        replaced = run_download(paths, FS, _options(str(other)))
    assert replaced.ok and replaced.fetched == replaced.planned == 14 and replaced.skipped == 0
    _assert_mirrors(paths, other)
    said = [r.getMessage() for r in caplog.records if "differ from those in --source" in r.getMessage()]
    assert said == [
        f"14 file(s) of the data folder differ from those in --source {other} "
        "(calibObj-008162-6-gal.fits.gz, ...): copying them again"
    ]
    assert Manifest.load(paths.manifest).files[U80]["url"] == (other / U80).as_uri()
    again = run_download(paths, FS, _options(str(other)))
    assert again.ok and again.skipped == again.planned and again.bytes == 0
    # the first folder again, through the script (exit 0 only when every file is its own)
    assert _load_script().main(["--data-dir", str(paths.root), "--source", str(sas_tree), "--fields", "80", "81"]) == 0
    _assert_mirrors(paths, sas_tree)
    # a folder lacking a frame the data folder holds from elsewhere: that frame is named, not taken as its own
    partial = tmp_path / "partial"
    shutil.copytree(other, partial)
    (partial / U80).unlink()
    lacking = run_download(paths, FS, _options(str(partial)))
    assert list(lacking.failures) == ["frame-u-008162-6-0080.fits.bz2 (band u)"]
    assert lacking.fetched == 13 and not lacking.ok


def test_local_reference_bundle_layout(sas_tree, tmp_path):
    bundle = tmp_path / "old-project" / "data"
    camcol = bundle / "rerun_301" / "run_8162" / "camcol_6"
    camcol.mkdir(parents=True)
    for spec in plan_files(FS):
        name = (
            f"{spec.band}.fits.gz"
            if spec.kind == "catalog"
            else (f"field_{spec.field}_{spec.band}." + ("jpg" if spec.kind == "irg" else "fits.bz2"))
        )
        shutil.copyfile(sas_tree / spec.relpath, camcol / name)
    for root in (bundle, bundle.parent):  # the bundle's data/ folder or the project folder holding it
        paths = DataPaths(tmp_path / f"data-{root.name}")
        summary = run_download(paths, FS, _options(str(root)))
        assert summary.ok and summary.fetched == summary.planned
        _assert_mirrors(paths, sas_tree)


def test_a_bundle_without_its_galaxy_sweep_gives_its_other_files(sas_tree, tmp_path):
    """The course project's bundle holding frames and the star sweep but no gal.fits.gz (the first file planned) was
    refused whole as holding no SDSS file at all; and a bundle of other fields is no "mistyped folder" either."""
    bundle = tmp_path / "old-project" / "data"
    camcol = bundle / "rerun_301" / "run_8162" / "camcol_6"
    camcol.mkdir(parents=True)
    for spec in plan_files(FS):
        if spec.kind == "catalog":
            name = f"{spec.band}.fits.gz"
        else:
            name = f"field_{spec.field}_{spec.band}." + ("jpg" if spec.kind == "irg" else "fits.bz2")
        if name != "gal.fits.gz":
            shutil.copyfile(sas_tree / spec.relpath, camcol / name)
    paths = DataPaths(tmp_path / "data")
    summary = run_download(paths, FS, _options(str(bundle.parent)))
    assert list(summary.failures) == ["calibObj-008162-6-gal.fits.gz (catalog gal)"]
    assert "not found" in summary.failures["calibObj-008162-6-gal.fits.gz (catalog gal)"]
    assert summary.fetched == summary.planned - 1
    other = FieldSet(rerun=301, run=8162, camcol=6, fields=(99,), train_fields=(), val_fields=(), test_fields=())
    summary = run_download(DataPaths(tmp_path / "data2"), other, _options(str(bundle), frames_only=True))
    assert summary.fetched == 0 and all("not found" in reason for reason in summary.failures.values())


def test_a_local_copy_without_the_irg_pictures_is_complete(sas_tree, tmp_path, caplog):
    """A copy of the FITS files alone (no frame-irg-*.jpg, which no stage reads) failed stage 00 with exit 1, so
    ``run_scripts.sh --source DIR`` stopped there: the pictures it lacks are now left out with one warning."""
    tree = tmp_path / "fits-only"
    shutil.copytree(sas_tree, tree)
    for jpg in tree.rglob("*.jpg"):
        jpg.unlink()
    paths = DataPaths(tmp_path / "data")
    with caplog.at_level("WARNING", logger="stargal"):
        summary = run_download(paths, FS, _options(str(tree)))
    assert summary.ok and summary.fetched == summary.planned == len(plan_files(FS)) - 2
    assert "2 irg picture(s) not in" in caplog.text and not list(paths.sas.rglob("*.jpg"))
    # a damaged picture the copy holds is still named
    jpg = sas_tree / sdss.irg_relpath(301, 8162, 6, 80)
    (tree / sdss.irg_relpath(301, 8162, 6, 80)).write_bytes(jpg.read_bytes()[:100])
    summary = run_download(DataPaths(tmp_path / "data2"), FS, _options(str(tree)))
    assert list(summary.failures) == ["frame-irg-008162-6-0080.jpg (band irg)"]


def test_local_any_tree_of_sas_names(sas_tree, tmp_path):
    tree = tmp_path / "loose"
    for i, spec in enumerate(plan_files(FS)):
        folder = tree / f"sub{i % 3}" / ("deeper" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sas_tree / spec.relpath, folder / spec.name)
    paths = DataPaths(tmp_path / "data")
    summary = run_download(paths, FS, _options(str(tree)))
    assert summary.ok and summary.fetched == summary.planned
    _assert_mirrors(paths, sas_tree)


def test_local_missing_and_corrupt_files_are_named(sas_tree, tmp_path):
    tree = tmp_path / "partial"
    shutil.copytree(sas_tree, tree)
    (tree / U80).unlink()
    star = tree / STAR
    star.write_bytes(star.read_bytes()[:-40])  # truncated gzip
    paths = DataPaths(tmp_path / "data")
    summary = run_download(paths, FS, _options(str(tree)))
    assert set(summary.failures) == {
        "frame-u-008162-6-0080.fits.bz2 (band u)",
        "calibObj-008162-6-star.fits.gz (catalog star)",
    }
    assert "not found" in summary.failures["frame-u-008162-6-0080.fits.bz2 (band u)"]
    assert "gzip" in summary.failures["calibObj-008162-6-star.fits.gz (catalog star)"]
    assert not paths.sas_file(STAR).exists() and not partial_path(paths.sas_file(STAR)).exists()
    assert summary.fetched == summary.planned - 2


def test_a_folder_without_sdss_files_is_one_error(tmp_path):
    empty = tmp_path / "mistyped"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("not an SDSS file")
    paths = DataPaths(tmp_path / "data")
    with pytest.raises(StargalError, match=f"--source {empty}: no SDSS file in it"):
        run_download(paths, FS, _options(str(empty)))
    assert not paths.manifest.exists()


def test_frames_unpacked_or_gzipped_are_named_with_what_to_do(sas_tree, tmp_path):
    """A local copy whose frames are uncompressed (.fits) or gzipped (.fits.gz) holds SDSS frames that stage 00 does
    not take: it says so, naming the file and how to make it one it takes, instead of "no SDSS file in it" or a bare
    "not found"."""
    only_fits = tmp_path / "unpacked"
    only_fits.mkdir()
    for spec in plan_files(FS, frames_only=True, pictures=False):
        raw = bz2.decompress((sas_tree / spec.relpath).read_bytes())
        (only_fits / spec.name.removesuffix(".bz2")).write_bytes(raw)
    paths = DataPaths(tmp_path / "data")
    with pytest.raises(StargalError, match=r"it holds .*frame-g-008162-6-0080\.fits and 9 more, .*bzip2 the \.fits"):
        run_download(paths, FS, _options(str(only_fits), frames_only=True))
    mixed = tmp_path / "mixed"
    shutil.copytree(sas_tree, mixed)
    raw = bz2.decompress((mixed / U80).read_bytes())
    (mixed / U80).unlink()
    (mixed / "frame-u-008162-6-0080.fits.gz").write_bytes(gzip.compress(raw))
    summary = run_download(DataPaths(tmp_path / "data2"), FS, _options(str(mixed)))
    (reason,) = summary.failures.values()
    assert f"not found in {mixed}" in reason
    assert f"it holds {mixed / 'frame-u-008162-6-0080.fits.gz'} instead" in reason and "bzip2" in reason


def test_a_frame_under_another_frames_name_is_refused_at_download(sas_tree, tmp_path):
    """A g frame copied under the r frame's name (or another field's frame under this one's) would be aligned as
    the r band: its header says which frame it is, and the download checks that against the name."""
    tree = tmp_path / "renamed"
    shutil.copytree(sas_tree, tree)
    shutil.copyfile(tree / U80.replace("frame-u-", "frame-g-"), tree / U80)
    paths = DataPaths(tmp_path / "data")
    summary = run_download(paths, FS, _options(str(tree)))
    assert list(summary.failures) == ["frame-u-008162-6-0080.fits.bz2 (band u)"]
    assert (
        "its header is not this file name's frame: FILTER is 'g', not 'u'"
        in summary.failures["frame-u-008162-6-0080.fits.bz2 (band u)"]
    )
    assert not paths.sas_file(U80).exists() and not partial_path(paths.sas_file(U80)).exists()


def test_a_frame_in_counts_is_refused_at_download(sas_tree, tmp_path):
    """A frame whose header says BUNIT = 'counts' (its pixels not calibrated to nanomaggies) was copied and then
    aligned into a cube that says nanomaggy, that band some 200 times too bright, exit 0."""
    tree = tmp_path / "counts"
    shutil.copytree(sas_tree, tree)
    with fits.open(io.BytesIO(bz2.decompress((tree / U80).read_bytes()))) as hdul:
        hdul[0].header["BUNIT"] = "counts"
        buf = io.BytesIO()
        hdul.writeto(buf)
    (tree / U80).write_bytes(bz2.compress(buf.getvalue()))
    paths = DataPaths(tmp_path / "data")
    summary = run_download(paths, FS, _options(str(tree), frames_only=True))
    assert list(summary.failures) == ["frame-u-008162-6-0080.fits.bz2 (band u)"]
    assert "BUNIT is 'counts', not nanomaggy" in summary.failures["frame-u-008162-6-0080.fits.bz2 (band u)"]
    assert not paths.sas_file(U80).exists()


@pytest.mark.real
def test_local_real_sdss_sample(sample_dir, tmp_path):
    """The real DR17 files of shared/sdss-sample (any-tree layout): verified, and hashes match SHA256SUMS."""
    sums = {}
    for line in (sample_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[Path(name).name] = digest
    paths = DataPaths(tmp_path / "data")
    fs = FieldSet(301, 4510, 4, (30,), (30,), (), ())
    summary = run_download(paths, fs, _options(str(sample_dir), bands=("r",)))
    # the sample has the star sweep of 4510/4 but not the gal one
    assert list(summary.failures) == ["calibObj-004510-4-gal.fits.gz (catalog gal)"]
    assert summary.fetched == 3
    manifest = Manifest.load(paths.manifest)
    for relpath, entry in manifest.files.items():
        assert entry["sha256"] == sums[relpath.rsplit("/", 1)[-1]]
    assert sdss.read_catalog(paths.catalog(301, 4510, 4, "star")).shape == (5232,)


@pytest.mark.real
def test_real_files_over_http_with_a_dropped_connection(sample_dir, tmp_path):
    """The real DR17 test field served over HTTP in SAS layout (symlinks), one transfer broken off and resumed."""
    fs = FieldSet(301, 8162, 6, (80,), (), (), (80,))
    tree = tmp_path / "tree"
    for spec in plan_files(fs, ("r",), frames_only=True):  # one real frame: bz2 verification costs ~1 s each
        (tree / spec.relpath).parent.mkdir(parents=True, exist_ok=True)
        (tree / spec.relpath).symlink_to(sample_dir / "008162-6-0080" / spec.name)
    r80 = sdss.frame_relpath("r", 301, 8162, 6, 80)
    paths = DataPaths(tmp_path / "data")
    with SasServer(tree) as server:
        server.add_fault(r80, {"drop_after": 1_000_000})
        summary = run_download(paths, fs, _options(server.base_url, frames_only=True, bands=("r",)))
        assert summary.ok and summary.resumed == 1 and summary.fetched == 2
        assert server.gets(r80)[1].range.startswith("bytes=")
    for spec in plan_files(fs, ("r",), frames_only=True):
        assert final_path(paths, spec).read_bytes() == (tree / spec.relpath).read_bytes()
    assert sdss.read_frame(paths.frame(FieldId(301, 8162, 6, 80), "r")).image.shape == (1489, 2048)


# ---------------------------------------------------------------------------------------------------------
# simulated source


def test_fields_added_to_a_simulated_sky_keep_its_catalogs_true(server, tmp_path):
    """A run/camcol's catalogs cover all its fields: adding a field with other settings (or real frames) would
    rewrite them for another sky under the fields already there; adding one with the same settings records the
    rewritten catalogs."""
    from dataclasses import replace

    from stargal.integrity import verify_data_folder

    paths = DataPaths(tmp_path / "data")
    sim = _options("simulated", sim_shape=(96, 128), workers=1)
    assert not run_download(paths, FS, sim).failures
    one_more = replace(FS, fields=(82,))
    catalogs = {k: paths.catalog(301, 8162, 6, k).read_bytes() for k in sdss.CATALOG_KINDS}
    for other in (replace(sim, seed=7), replace(sim, sim_shape=(96, 160)), replace(sim, sim_seeing="survey")):
        with pytest.raises(StargalError, match="field\\(s\\) 80 81 hold the sky simulated:.*add those fields"):
            run_download(paths, one_more, other)
    assert {k: paths.catalog(301, 8162, 6, k).read_bytes() for k in sdss.CATALOG_KINDS} == catalogs
    assert not paths.frame(FieldId(301, 8162, 6, 82), "r").exists()
    summary = run_download(paths, one_more, sim)
    assert not summary.failures and summary.fetched == 8 and summary.skipped == 0  # 6 frame files, 2 catalogs
    assert verify_data_folder(paths)[0] == []
    with pytest.raises(StargalError, match="field\\(s\\) 81 82 hold the sky simulated:.*, not real SDSS"):
        run_download(paths, replace(FS, fields=(80,)), _options(server.base_url))  # real catalogs over them
    with pytest.raises(
        StargalError, match="calibObj-008162-6-gal.fits.gz: a catalog of the sky simulated:.*no --frames"
    ):
        run_download(paths, FS, replace(sim, seed=7, frames_only=True))  # frames alone, beside another sky's catalogs
    assert run_download(paths, replace(FS, fields=(80, 81, 82)), replace(sim, seed=7)).fetched == 20  # all replaced


def test_simulated_source(tmp_path):
    pytest.importorskip("stargal.simulate")
    paths = DataPaths(tmp_path / "data")
    fs = FieldSet(301, 8162, 6, (80,), (80,), (), ())
    argv = ["--data-dir", str(paths.root), "--source", "simulated", "--fields", "80", "--sim-shape", "64", "96", "-q"]
    assert _load_script().main(argv) == 0
    manifest = Manifest.load(paths.manifest)
    assert len(manifest.files) == len(plan_files(fs)) == 8
    assert all(e["url"].startswith("simulated:") for e in manifest.files.values())
    frame = sdss.read_frame(paths.frame(FieldId(301, 8162, 6, 80), "r"))
    assert frame.image.shape == (64, 96) and frame.simulated
    before = paths.frame(FieldId(301, 8162, 6, 80), "r").read_bytes()
    assert _load_script().main(argv) == 0  # rerun: all complete
    assert paths.frame(FieldId(301, 8162, 6, 80), "r").read_bytes() == before
    # the simulation's own files, which no record seals: damaged, they were kept (a field added later failed on
    # them, --verify passed them); a rerun draws them again, the same
    truth, measured = paths.sim_truth(301, 8162, 6), paths.sim_measurements(FieldId(301, 8162, 6, 80))
    kept = {p: p.read_bytes() for p in (truth, measured)}
    truth_stamp = truth.stat().st_mtime_ns
    assert _load_script().main(argv) == 0
    assert truth.stat().st_mtime_ns == truth_stamp  # intact: not rewritten
    for path, data in kept.items():
        path.write_bytes(data[:50])
    assert _load_script().main(argv) == 0
    assert {p: p.read_bytes() for p in kept} == kept

    # files from another simulation (older simulator version, other seed) are rendered again, not kept
    for entry in manifest.files.values():
        entry["url"] = entry["url"].replace(f"simulated:v{SIMULATION_VERSION}:", "simulated:v1:")
    manifest.save()
    assert _load_script().main(argv) == 0
    manifest = Manifest.load(paths.manifest)
    assert all(e["url"].startswith(f"simulated:v{SIMULATION_VERSION}:seed=42,") for e in manifest.files.values())
    assert paths.frame(FieldId(301, 8162, 6, 80), "r").read_bytes() == before  # deterministic: same pixels
    assert _load_script().main([*argv, "--seed", "5"]) == 0
    assert paths.frame(FieldId(301, 8162, 6, 80), "r").read_bytes() != before
    assert all(":seed=5," in e["url"] for e in Manifest.load(paths.manifest).files.values())

    # another seeing draw is another simulation: rendered again, and the manifest says which
    five = paths.frame(FieldId(301, 8162, 6, 80), "r").read_bytes()
    assert _load_script().main([*argv, "--seed", "5", "--sim-seeing", "survey"]) == 0
    assert paths.frame(FieldId(301, 8162, 6, 80), "r").read_bytes() != five
    assert all(e["url"].endswith(",seeing=survey") for e in Manifest.load(paths.manifest).files.values())


# ---------------------------------------------------------------------------------------------------------
# bad arguments: one line, no traceback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bands", "ugx"], "unknown band 'x'"),
        (["--source", "ftp://example.org/sas/"], "unsupported URL scheme"),
        (["--source", "http://"], "malformed URL"),
        (["--source", "http://host:99999/"], "malformed URL"),
        (["--source", "/no/such/folder/anywhere"], "no such folder"),
        (["--source", "PORT"], "cannot reach the server"),
        (["--sim-shape", "10", "10"], "only with --source simulated"),
        (["--sim-seeing", "survey"], "--sim-seeing: only with --source simulated"),
        # the OOM killer, not one line, ended this: refused up front from the simulator's memory per pixel
        (["--source", "simulated", "--sim-shape", "100000", "100000"], r"needs about .* GiB of memory \(estimated"),
        (["--source", "simulated", "--bands", "g"], "--bands g: the simulated sky writes every band of a field"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, argv, message):
    argv = [a.replace("PORT", f"http://127.0.0.1:{_free_port()}/sas/") for a in argv]
    base = ["--data-dir", str(tmp_path / "d"), "--fields", "80", "--retries", "1", "--backoff", "0.01", "-q"]
    with pytest.raises(StargalError, match=message) as info:
        _load_script().main([*base, *argv])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "d" / "sas").exists()
    # refused before the data folder is made (it was made, and left empty), but for a server found unreachable
    assert not (tmp_path / "d").exists() or message == "cannot reach the server"


def test_script_error_is_one_line_without_traceback(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--data-dir", str(tmp_path / "d"), "--source", str(tmp_path / "missing")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip() == f"00_download.py: error: --source {tmp_path / 'missing'}: no such folder "
        "(expected sdss, simulated, an http(s):// URL or a local folder)"
    )


def test_negative_field_is_rejected_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--fields", "-3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    # numbers SDSS file names cannot hold, durations beyond the clock, and a scheduler file that is none
    (tmp_path / "sched.json").write_text("")
    for argv, words in (
        (["--fields", "1-100000"], "argument --fields: field numbers have at most 4 digits in SDSS (0-9999)"),
        (["--run", "99999999"], "argument --run: run numbers have at most 6 digits in SDSS"),
        (["--backoff", "inf"], "argument --backoff: must be more than 0 and at most 3600 seconds: 'inf'"),
        (["--timeout", "1e9"], "argument --timeout: must be more than 0 and at most 3600 seconds"),
        (["--retries", "-1"], "argument --retries: must be 0 or more: '-1'"),
        (["--source", "simulated", "--scheduler", str(tmp_path / "sched.json")], "not a Dask scheduler file"),
    ):
        done = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(tmp_path / "d"), "--fields", "80", *argv],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 2 and words in done.stderr.splitlines()[-1] and "Traceback" not in done.stderr, (
            done.stderr
        )
    with pytest.raises(StargalError, match="non-negative"):
        plan_files(FieldSet(301, 8162, 6, (-1,), (), (), ()))


def test_verify_names_a_download_left_unfinished(server, sas_tree, tmp_path):
    from stargal.integrity import verify_data_folder

    paths = DataPaths(tmp_path / "data")
    run_download(paths, FS, _options(server.base_url))
    assert verify_data_folder(paths)[0] == []
    frame = paths.sas_file(U80)
    partial = partial_path(frame)
    partial.write_bytes(frame.read_bytes()[:1000])  # as an interrupted fetch of it again (--force) leaves it
    findings = verify_data_folder(paths)[0]
    assert [(f.path, f.redo) for f in findings] == [(partial, "00_download.py, which resumes it")]


def test_resolve_source():
    assert resolve_source("sdss").base_url == "https://data.sdss.org/sas/dr17/eboss/"
    assert (
        resolve_source("http://127.0.0.1:8000/m").url(plan_files(FS)[0]).startswith("http://127.0.0.1:8000/m/sweeps/")
    )
    assert isinstance(resolve_source("."), LocalSource)


def test_a_local_search_stops_after_its_folder_budget(tmp_path, monkeypatch, caplog):
    import stargal.sources as sources

    spec = plan_files(FS)[0]
    deep = tmp_path / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / spec.name).write_bytes(b"x")
    assert LocalSource(tmp_path).locate(spec) == deep / spec.name
    monkeypatch.setattr(sources, "MAX_SEARCHED_FOLDERS", 3)
    with caplog.at_level("WARNING", logger="stargal"):
        assert LocalSource(tmp_path).locate(spec) is None  # `--source /` must not walk the whole disk
    assert f"--source {tmp_path}: searched 3 folders" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# verification and backoff units


def _frame_bytes(shape=(8, 12), hdu_image=True) -> bytes:
    buf = io.BytesIO()
    if hdu_image:
        fits.PrimaryHDU(np.zeros(shape, np.float32)).writeto(buf)
    else:
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros(shape, np.float32))]).writeto(buf)
    return buf.getvalue()


def test_verify_rejects_damaged_files(sas_tree, tmp_path):
    def check(name, data, kind, match):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(VerificationError, match=match):
            verify_file(path, kind)

    frame = (sas_tree / U80).read_bytes()
    check("trunc.fits.bz2", frame[: len(frame) // 2], "frame", "truncated bz2")
    check("flip.fits.bz2", frame[:100] + bytes([frame[100] ^ 0xFF]) + frame[101:], "frame", "corrupt bz2|truncated")
    raw = _frame_bytes()
    check("cut.fits.bz2", bz2.compress(raw[:-2880]), "frame", "cut short")
    check("html.fits.bz2", HTML_PAGE, "frame", "HTML page")
    check("gz.fits.bz2", gzip.compress(raw), "frame", "not a bz2")
    star = (sas_tree / STAR).read_bytes()
    check("trunc.fits.gz", star[:-8], "catalog", "truncated gzip|corrupt gzip")
    check("image.fits.gz", gzip.compress(_frame_bytes(hdu_image=False)), "catalog", "not a binary table")
    check("nohdu1.fits.gz", gzip.compress(raw), "catalog", "HDU 1")
    jpg = (sas_tree / sdss.irg_relpath(301, 8162, 6, 80)).read_bytes()
    check("trunc.jpg", jpg[: len(jpg) // 2], "irg", "JPEG does not decode")
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    check("png.jpg", png.getvalue(), "irg", "not a JPEG")
    check("empty.jpg", b"", "irg", "empty")
    path = tmp_path / "ok.fits.bz2"
    path.write_bytes(frame)
    with pytest.raises(VerificationError, match="expected 3"):
        verify_file(path, "frame", expected_size=3)
    assert verify_file(path, "frame").size == len(frame)


def test_backoff_and_retry_after():
    settings = HttpSettings(backoff=1.0, backoff_max=10.0, retry_after_max=30.0)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 10.0)]:
        delays = [backoff_delay(failures, settings) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jitter
    assert backoff_delay(1, settings, retry_after=7.0) == 7.0
    assert backoff_delay(1, settings, retry_after=500.0) == 30.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_a_server_that_trickles_is_given_up_on_and_what_arrived_is_kept(sas_tree, tmp_path):
    """Each read arrives within the read timeout, yet the file would take hours: the fetch gives up on a rate
    under ``min_rate`` over a read timeout's time, keeping the partial file for a later run to resume."""
    from stargal.download import FetchError, fetch_http, make_session

    tree = tmp_path / "big"
    make_sas_tree(tree, 301, 8162, 6, [80], shape=(300, 400))  # frames of ~0.4 MB: 16 KB sent every 0.16 s
    final = tmp_path / "data" / U80
    trickle = HttpSettings(connect_timeout=2.0, read_timeout=0.5, retries=1, backoff=0.01, min_rate=1_000_000)
    with SasServer(tree, rate=100_000) as slow, make_session(trickle) as session:
        start = time.monotonic()
        with pytest.raises(FetchError, match=r"the server sent \d+ bytes/s for \d s, under 1000000 \(gave up after 2"):
            fetch_http(session, slow.base_url + U80, final, "frame", trickle)
    assert time.monotonic() - start < 5 and not final.exists()
    assert 0 < partial_path(final).stat().st_size < (tree / U80).stat().st_size


def test_a_server_sending_a_few_bytes_per_connection_then_stalling_is_given_up_on(sas_tree, tmp_path):
    """Each connection gets a few bytes and then stalls past the read timeout: the partial file grows, but at a few
    bytes a second, and such attempts use up the retry budget (they once counted as progress, so the fetch asked
    again forever)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from stargal.download import FetchCancelled, FetchError, fetch_http, make_session

    data = (sas_tree / U80).read_bytes()
    stop = threading.Event()

    class Stalling(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            start = int(self.headers.get("Range", "bytes=0-")[len("bytes=") : -1])
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            self.wfile.write(data[start : start + 10])
            self.wfile.flush()
            stop.wait(10)  # then nothing more: the client's read times out

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/{U80}"
    final = tmp_path / "data" / U80
    settings = HttpSettings(connect_timeout=2.0, read_timeout=0.3, retries=2, backoff=0.01, backoff_max=0.05)
    cancel = threading.Event()
    timer = threading.Timer(8.0, cancel.set)  # the old behaviour: still asking when this stops it
    timer.start()
    try:
        with make_session(settings) as session:
            start = time.monotonic()
            with pytest.raises(FetchError, match=r"read timed out\) \(gave up after 3 attempts\)"):
                fetch_http(session, url, final, "frame", settings, cancel=cancel)
    except FetchCancelled:
        pytest.fail("the fetch kept asking a server that sends a few bytes per connection")
    finally:
        timer.cancel()
        stop.set()
        httpd.shutdown()
        httpd.server_close()
    assert time.monotonic() - start < 5 and not final.exists()
    assert partial_path(final).stat().st_size == 30  # what arrived is kept for a later run to resume


def test_cancel_stops_a_retrying_fetch_at_once_and_keeps_nothing_under_the_final_name(server, tmp_path):
    """A stopping run (Ctrl-C in the main thread sets the event) ends a worker waiting to retry at once."""
    import threading

    from stargal.download import FetchCancelled, fetch_http, make_session

    server.add_fault(U80, {"status": 503, "sticky": True})
    final = tmp_path / "data" / U80
    cancel = threading.Event()
    slow = HttpSettings(connect_timeout=2.0, read_timeout=2.0, retries=5, backoff=30.0, backoff_max=30.0)
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(FetchCancelled), make_session(slow) as session:
        fetch_http(session, server.base_url + U80, final, "frame", slow, cancel=cancel)
    assert time.monotonic() - start < 5  # not the 30 s backoff
    assert len(server.gets(U80)) == 1 and not final.exists()


def test_interrupt_cancels_the_other_downloads_and_records_the_finished_ones(server, sas_tree, tmp_path, monkeypatch):
    """KeyboardInterrupt while files are in flight: the run stops, workers are told to stop, the manifest keeps
    every file that finished, and a rerun completes the rest."""
    from stargal.stages import download as stage

    seen = []
    original = stage._collect

    def interrupt_after_two(spec, future, manifest, summary, display):
        original(spec, future, manifest, summary, display)
        seen.append(spec)
        if len(seen) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(stage, "_collect", interrupt_after_two)
    server.add_fault(G81, {"delay": 1.0})
    paths = DataPaths(tmp_path / "data")
    with pytest.raises(KeyboardInterrupt):
        run_download(paths, FS, _options(server.base_url, workers=2))
    manifest = Manifest.load(paths.manifest)
    assert 2 <= len(manifest.files) < len(plan_files(FS))
    monkeypatch.undo()
    summary = run_download(paths, FS, _options(server.base_url, workers=2))
    assert summary.ok and summary.skipped >= 2
    _assert_mirrors(paths, sas_tree)


@pytest.mark.parametrize("content", ["{not json", '{"files": [1, 2]}', '{"version": 1}', ""])
def test_corrupt_manifest_is_rebuilt_by_verifying_the_files(server, sas_tree, tmp_path, content):
    """An unreadable manifest is never an error and is written whole again; the files it recorded are verified
    (content, and header against name) and kept, not fetched again (it cost a refetch of every file, which for a
    cluster-sized field set is hours of downloads that the warning's "verified again" did not announce)."""
    paths = DataPaths(tmp_path / "data")
    assert run_download(paths, FS, _options(server.base_url)).ok
    paths.manifest.write_text(content)
    assert Manifest.load(paths.manifest).files == {}
    server.clear()
    summary = run_download(paths, FS, _options(server.base_url))
    assert summary.ok and summary.fetched == 0 and summary.skipped == len(plan_files(FS))
    assert server.gets() == []
    rebuilt = Manifest.load(paths.manifest)
    assert set(rebuilt.files) == {spec.relpath for spec in plan_files(FS)}
    _assert_mirrors(paths, sas_tree)


def test_the_refetch_command_of_a_simulated_file_names_its_simulation(tmp_path):
    """--verify named `00_download.py --run 8162 --camcol 6 --fields 81` for a damaged simulated frame: run as
    printed it asks SDSS for real frames, which the folder of the simulated sky refuses."""
    from stargal.integrity import download_command
    from stargal.sdss import frame_relpath

    paths = DataPaths(tmp_path / "data")
    frame, real = frame_relpath("g", 301, 8162, 6, 81), frame_relpath("r", 301, 8162, 6, 81)
    fsio.write_json(paths.manifest, {"version": 1, "files": {
        frame: {"url": "simulated:v13:seed=7,shape=600x800,seeing=survey"}, real: {"url": "https://x/y"}}})  # fmt: skip
    assert download_command(frame, paths) == (
        "00_download.py --run 8162 --camcol 6 --fields 81 --frames-only --source simulated --seed 7 --sim-shape 600 800 "
        f"--sim-seeing survey --data-dir {paths.root}"
    )
    assert (
        download_command(real, paths)
        == f"00_download.py --run 8162 --camcol 6 --fields 81 --frames-only --data-dir {paths.root}"
    )
    assert (  # the field's download with its run/camcol's catalogs, where those are what must be fetched
        download_command(real, paths, force=True, catalogs=True)
        == f"00_download.py --force --run 8162 --camcol 6 --fields 81 --data-dir {paths.root}"
    )


def test_a_band_of_the_simulated_sky_is_refused_and_nothing_unrecorded_is_written(sas_tree, tmp_path):
    """--source simulated --bands g drew the whole field and wrote its five frames and jpeg, over real ones the
    manifest still described, but recorded only g (exit 0)."""
    paths = DataPaths(tmp_path / "data")
    assert run_download(paths, FS, _options(str(sas_tree), frames_only=True)).ok
    before = {p: p.read_bytes() for p in paths.sas.rglob("*") if p.is_file()}
    one = FieldSet(301, 8162, 6, (80,), (80,), (), ())
    with pytest.raises(StargalError, match="^--bands g: the simulated sky writes every band of a field"):
        run_download(paths, one, _options("simulated", bands=("g",), frames_only=True, sim_shape=(64, 96)))
    assert {p: p.read_bytes() for p in paths.sas.rglob("*") if p.is_file()} == before
    # without the pictures (as real_sky.py asks of a local folder) the simulator's jpeg is still recorded
    sim = DataPaths(tmp_path / "sim")
    summary = run_download(sim, one, _options("simulated", pictures=False, sim_shape=(64, 96), workers=1))
    assert summary.ok and summary.fetched == 8
    recorded = set(Manifest.load(sim.manifest).files)
    assert {str(p.relative_to(sim.sas)) for p in sim.sas.rglob("*") if p.is_file()} - recorded == {"manifest.json"}


def test_an_interrupted_simulation_keeps_the_fields_it_wrote(tmp_path):
    """An interrupted 00 --source simulated recorded nothing (HTTP records each file as it arrives): its rerun
    rendered every field again."""
    paths = DataPaths(tmp_path / "data")
    argv = [sys.executable, str(SCRIPT), "--data-dir", str(paths.root), "--source", "simulated", "--sim-shape", "300",
            "400", "--fields", "80-91", "--frames-only", "--workers", "1", "-q"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not paths.manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # stopped with fields still to render
    files = Manifest.load(paths.manifest).files
    done = {sdss.parse_filename(Path(r).name)["field"] for r in files}
    assert done and len(files) == 6 * len(done) and len(done) < 12, sorted(files)
    for relpath, entry in files.items():  # each recorded file whole, as recorded
        assert (
            verify_file(paths.sas_file(relpath), "irg" if relpath.endswith(".jpg") else "frame").sha256
            == (entry["sha256"])
        )
    rerun = subprocess.run([*argv[:-1]], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 * len(done)} of 72 files already complete" in rerun.stderr
    assert f"simulated {12 - len(done)} field(s)" in rerun.stderr


def test_redo_commands_name_the_source_the_manifest_records(tmp_path):
    """The redo of a file copied from a local folder lacked --source DIR (offline: "cannot reach the server"), and
    a simulated catalog's lacked --fields (it rendered the reference fields too)."""
    from stargal.integrity import download_command

    paths = DataPaths(tmp_path / "data")
    sim = "simulated:v13:seed=7,shape=96x128"
    files = {sdss.frame_relpath("r", 301, 8162, 6, f): {"url": sim} for f in (80, 81, 82, 83, 90)}
    files[sdss.frame_relpath("r", 301, 8162, 6, 99)] = {"url": "https://x/y"}  # another sky: not its fields
    files[STAR] = {"url": sim}
    sas = tmp_path / "my copy" / "sas"
    files[G81] = {"url": (sas / G81).as_uri()}  # a SAS tree in a data folder (and a space in its name)
    bundle = tmp_path / "bundle" / "rerun_301" / "run_4510" / "camcol_4"
    gal4510 = sdss.catalog_relpath(301, 4510, 4, "gal")
    files[gal4510] = {"url": (bundle / "gal.fits.gz").as_uri()}
    files[sdss.frame_relpath("g", 301, 4510, 4, 30)] = {"url": (tmp_path / "any" / "x.fits.bz2").as_uri()}
    mirror = "http://mirror.example.org/sas/dr17/eboss/"
    files[U80] = {"url": mirror + U80}
    fsio.write_json(paths.manifest, {"version": 1, "files": files})
    tail = f"--data-dir {paths.root}"
    assert download_command(STAR, paths) == (
        f"00_download.py --run 8162 --camcol 6 --fields 80-83 90 --source simulated --seed 7 --sim-shape 96 128 {tail}"
    )
    assert download_command(G81, paths) == (
        f"00_download.py --run 8162 --camcol 6 --fields 81 --frames-only --source '{tmp_path / 'my copy'}' {tail}"
    )
    assert download_command(gal4510, paths) == (
        f"00_download.py --run 4510 --camcol 4 --fields 30 --source {tmp_path / 'bundle'} {tail}"
    )
    assert download_command(U80, paths, force=True) == (
        f"00_download.py --force --run 8162 --camcol 6 --fields 80 --frames-only --source {mirror} {tail}"
    )
    files[U80]["url"] = "https://data.sdss.org/sas/dr17/eboss/" + U80  # SDSS itself: the default source
    fsio.write_json(paths.manifest, {"version": 1, "files": files})
    assert download_command(U80, paths) == f"00_download.py --run 8162 --camcol 6 --fields 80 --frames-only {tail}"


def test_the_redo_of_a_frame_never_fetched_names_the_source_of_its_fields_other_frames(tmp_path):
    """A frame stage 00 failed to copy (unreadable in the local folder) has no manifest entry: stage 01's redo
    command for it left out --source, so run as printed it asked the SDSS server, not the folder the field's other
    four frames came from."""
    from stargal.integrity import download_command

    paths = DataPaths(tmp_path / "data")
    local = tmp_path / "copy"
    files = {
        sdss.frame_relpath(band, 301, 1992, 1, 87): {"url": (local / sdss.frame_filename(band, 1992, 1, 87)).as_uri()}
        for band in "ugrz"
    }
    fsio.write_json(paths.manifest, {"version": 1, "files": files})
    tail = f"--data-dir {paths.root}"
    assert download_command(sdss.frame_relpath("i", 301, 1992, 1, 87), paths) == (
        f"00_download.py --run 1992 --camcol 1 --fields 87 --frames-only --source {local} {tail}"
    )
    # another field's frames say nothing about this one's source: SDSS, the default
    assert download_command(sdss.frame_relpath("i", 301, 1992, 1, 88), paths) == (
        f"00_download.py --run 1992 --camcol 1 --fields 88 --frames-only {tail}"
    )


def test_files_fetched_before_a_stop_are_recorded_not_fetched_again(sas_tree, tmp_path, monkeypatch):
    """Ctrl-C while the files in flight had finished (whole, verified, at their final names) but were not yet
    recorded: the manifest missed them, and the next run fetched them all again."""
    from concurrent.futures import ALL_COMPLETED

    from stargal.stages import download as stage

    def stopped_wait(futures, return_when):
        stage_wait(futures, return_when=ALL_COMPLETED)  # every file in flight ends, then the stop comes
        raise KeyboardInterrupt

    stage_wait = stage.wait
    monkeypatch.setattr(stage, "wait", stopped_wait)
    paths = DataPaths(tmp_path / "data")
    fs = FieldSet(301, 8162, 6, (80,), (80,), (), ())
    with pytest.raises(KeyboardInterrupt):
        run_download(paths, fs, _options(str(sas_tree), workers=1))
    recorded = Manifest.load(paths.manifest).files
    assert len(recorded) == len(plan_files(fs)) == 8  # the window holds them all: all ended before the stop
    monkeypatch.undo()
    again = run_download(paths, fs, _options(str(sas_tree)))
    assert again.fetched == 0 and again.skipped == 8


def test_suggested_commands_quote_a_data_folder_with_a_space(tmp_path):
    """`... --data-dir /tmp/d sp brings it up to date`: pasted as printed, the command named two arguments."""
    import shlex

    from stargal.integrity import alignment_command, download_command
    from stargal.paths import FieldId

    paths = DataPaths(tmp_path / "my data")
    for command in (
        download_command(sdss.frame_relpath("r", 301, 8162, 6, 80), paths),
        alignment_command(FieldId(301, 8162, 6, 80), paths),
    ):
        words = shlex.split(command)
        assert words[words.index("--data-dir") + 1] == str(paths.root), command


def test_a_frame_of_another_rerun_is_refused_not_filed_under_the_one_asked_for(sas_tree, tmp_path):
    """A frame's name carries no rerun: rerun 301's frames fetched as rerun 40 were stored under frames/40/ (exit 0
    with --frames-only), and stage 01 made a cube labelled rerun 40 of them. Its header's RERUN tells."""
    tree = tmp_path / "tree"
    shutil.copytree(sas_tree, tree)
    frame = tree / sdss.frame_relpath("r", 301, 8162, 6, 80)
    with fits.open(bz2.open(frame)) as hdus:
        header, image = hdus[0].header.copy(), hdus[0].data.copy()
    header["RERUN"] = "301"  # as real frames write it: text
    sdss.write_frame(frame, image, header)
    paths = DataPaths(tmp_path / "data")
    other = FieldSet(rerun=40, run=8162, camcol=6, fields=(80,), train_fields=(80,), val_fields=(), test_fields=())
    summary = run_download(paths, other, _options(str(tree)))
    failure = summary.failures["frame-r-008162-6-0080.fits.bz2 (band r)"]
    assert "RERUN is 301, expected 40" in failure
    assert not paths.sas_file(sdss.frame_relpath("r", 40, 8162, 6, 80)).exists()
    assert run_download(
        DataPaths(tmp_path / "same"), FieldSet(301, 8162, 6, (80,), (80,), (), ()), _options(str(tree))
    ).ok
