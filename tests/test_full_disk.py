"""A full disk met where the atomic writers of stargal.fsio do not write: stage 00's copies and downloads, and the
tuning study's SQLite file. The disk is filled without mounting (no root needed): the writer's fsync answers
ENOSPC, as it does on a full disk, and SQLite's page limit makes it answer exactly as on one (SQLITE_FULL)."""

from __future__ import annotations

import errno
import logging
import os
import time

import pytest
from sas_server import SasServer, make_sas_tree
from sqlalchemy import event
from sqlalchemy.engine import Engine

from stargal import cli, model, tune
from stargal.config import FieldSet
from stargal.download import HttpSettings, Manifest
from stargal.paths import DataPaths
from stargal.stages import tuning
from stargal.stages.download import DownloadOptions, run_download

FS = FieldSet(rerun=301, run=8162, camcol=6, fields=(80, 81), train_fields=(80,), val_fields=(), test_fields=(81,))


@pytest.fixture
def sqlite_pages(monkeypatch):
    """Limit every SQLite database opened from now on to ``limit["pages"]`` pages: a write past it fails with
    "database or disk is full" (SQLITE_FULL), as on a full disk."""
    limit = {"pages": 0}

    def small(connection, record) -> None:
        if limit["pages"]:
            connection.execute(f"PRAGMA max_page_count = {limit['pages']}")

    event.listen(Engine, "connect", small)
    yield limit
    event.remove(Engine, "connect", small)


def _one_line(exc: OSError) -> str:
    return cli.describe_os_error(exc)


def test_a_study_created_on_a_full_disk_is_the_disk_full_line_not_a_damaged_study(tmp_path, sqlite_pages):
    """It said "study.db: cannot read the study (database or disk is full); tune.py --force starts it over": advice
    that, on a study with trials, deletes them all, for a disk that only needed space."""
    db, lock = tmp_path / "study.db", tmp_path / "trials.lock"
    sqlite_pages["pages"] = 3  # the schema alone needs more
    with pytest.raises(OSError) as caught:
        tuning.create_or_load(db, lock, "s", 1, {"a": 1})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(db)
    assert "--force" not in _one_line(caught.value) and "the disk is full" in _one_line(caught.value)


def test_trials_that_fill_the_disk_end_in_the_disk_full_line_and_the_study_continues(
    tmp_path, sqlite_pages, monkeypatch
):
    """A worker asking for a trial on a full disk ended in "unexpected StorageInternalError: An exception is raised
    during the commit ... please report it", naming no file. The trials finished before stay, and the study goes
    on once there is space."""
    db, lock = tmp_path / "study.db", tmp_path / "trials.lock"
    tuning.create_or_load(db, lock, "s", 1, {"a": 1})
    monkeypatch.setattr(model, "configure_threads", lambda threads=None: None)
    monkeypatch.setattr(tuning, "load_data", lambda spec: None)
    monkeypatch.setattr(tune, "train_trial", lambda trial, data, spec: 0.5)
    spec = {"db": str(db), "lock": str(lock), "study": "s", "seed": 1, "worker": 0, "offset": 0, "target": 500,
            "threads": 1, "log_level": logging.WARNING}  # fmt: skip
    sqlite_pages["pages"] = db.stat().st_size // 4096 + 2  # room for a few trials, not for 500
    with pytest.raises(OSError) as caught:
        tuning.worker_main(spec)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(db)
    sqlite_pages["pages"] = 0  # space freed
    study, _ = tuning.create_or_load(db, lock, "s", 1, {"a": 1})
    finished, _ = tuning.count_trials(study)
    assert finished > 0
    assert tuning.worker_main({**spec, "target": finished + 2}) == 2


def _stops_on_the_full_disk_and_goes_on(paths: DataPaths, options: DownloadOptions, monkeypatch) -> None:
    """The disk fills after three files: the download stops at the fourth in one line naming the data folder's
    file, the three recorded; with the space freed, a rerun fetches only the others."""
    fsync, synced = os.fsync, []

    def full_after_three(fd: int) -> None:
        if len(synced) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        synced.append(fd)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_after_three)
    with pytest.raises(OSError) as caught:
        run_download(paths, FS, options)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename.startswith(str(paths.sas))  # the data folder's file, not the source's
    assert "the disk is full: free some space" in cli.describe_os_error(caught.value)
    assert len(Manifest.load(paths.manifest).files) == 3  # what was written is recorded
    monkeypatch.setattr(os, "fsync", fsync)  # space freed
    again = run_download(paths, FS, options)
    assert again.ok and again.skipped == 3 and again.fetched == again.planned - 3


@pytest.mark.parametrize("over", ["local", "http"])
def test_a_download_that_fills_the_disk_stops_in_one_line_naming_the_file_and_the_rerun_goes_on(
    tmp_path, monkeypatch, over
):
    """Each file after the disk filled was copied (or fetched) for nothing and failed on its own line, "FAILED
    frame-...: cannot copy SOURCE (No space left on device)", naming the source folder as if it were at fault, and
    the run ended without the full disk's line or its advice. It now stops at the first file the disk refuses."""
    tree = make_sas_tree(tmp_path / "sas", 301, 8162, 6, FS.fields)
    paths = DataPaths(tmp_path / "data")
    http = HttpSettings(connect_timeout=2.0, read_timeout=2.0, retries=1, backoff=0.01, backoff_max=0.05)
    with SasServer(tree) as server:
        source = str(tree) if over == "local" else server.base_url
        options = DownloadOptions(source=source, workers=1, http=http)
        _stops_on_the_full_disk_and_goes_on(paths, options, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("over", ["local", "http"])
def test_a_download_on_a_dask_cluster_that_fills_the_disk_stops_in_one_line_naming_the_file(
    tmp_path, monkeypatch, over
):
    """With --scheduler the full disk was a "FAILED ... cannot copy SOURCE (No space left on device)" line per
    remaining file, each fetched on the cluster for nothing, and exit 1 without the full disk's line. It stops as
    the threaded run does: one line naming the data folder's file, the files fetched so far recorded. The cluster
    runs in this process (threads), so that its fetches meet the full disk this test makes."""
    from dask.distributed import LocalCluster

    tree = make_sas_tree(tmp_path / "sas", 301, 8162, 6, FS.fields)
    paths = DataPaths(tmp_path / "data")
    http = HttpSettings(connect_timeout=2.0, read_timeout=2.0, retries=1, backoff=0.01, backoff_max=0.05)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        SasServer(tree) as server,
    ):
        source = str(tree) if over == "local" else server.base_url
        options = DownloadOptions(source=source, http=http, scheduler=cluster.scheduler_address)
        _stops_on_the_full_disk_and_goes_on(paths, options, monkeypatch)


@pytest.mark.slow
def test_a_dask_download_stopped_by_a_full_disk_records_the_tasks_finished_on_the_cluster(tmp_path, monkeypatch):
    """The files of tasks that finished on the cluster but had not reached this process when the disk filled were
    written but left out of the manifest (a rerun verified and kept them): they are recorded before the stop."""
    from dask.distributed import LocalCluster

    from stargal.stages import download as stage

    tree = make_sas_tree(tmp_path / "sas", 301, 8162, 6, FS.fields)
    paths = DataPaths(tmp_path / "data")
    fsync, save, fetch = os.fsync, Manifest.save, stage._fetch_file

    def full_for_field_80(fd: int) -> None:  # only field 80's u frame meets the full disk
        if "frame-u-008162-6-0080" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    def slow_field_81(spec, *args, **kw):  # field 81 finishes on the cluster after field 80 has failed ...
        if spec.field == 81:
            time.sleep(0.3)
        return fetch(spec, *args, **kw)

    def slow_save(manifest) -> None:  # ... and before this process is done with field 80's outcome
        save(manifest)
        field_81 = [stage.final_path(paths, s) for s in stage.plan_files(FS) if s.field == 81]
        deadline = time.monotonic() + 60  # however loaded the machine: until field 81's files are in place
        while not all(p.exists() for p in field_81) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # and its task has returned them

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster:
        options = DownloadOptions(source=str(tree), scheduler=cluster.scheduler_address)
        monkeypatch.setattr(os, "fsync", full_for_field_80)
        monkeypatch.setattr(stage, "_fetch_file", slow_field_81)
        monkeypatch.setattr(Manifest, "save", slow_save)
        with pytest.raises(OSError) as caught:
            run_download(paths, FS, options)
    assert caught.value.errno == errno.ENOSPC and "frame-u-008162-6-0080" in caught.value.filename
    recorded = set(Manifest.load(paths.manifest).files)
    field_81 = {s.relpath for s in stage.plan_files(FS) if s.field == 81}
    assert field_81 <= recorded and not any("-0080." in rel for rel in recorded)
