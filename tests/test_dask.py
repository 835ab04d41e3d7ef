"""Scale-out: the per-field stages (00 download/simulation, 01 alignment, 02 patch extraction) give identical
results on a Dask cluster (a LocalCluster of two worker processes) and on local threads/processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from stargal import cli
from stargal.config import BANDS, SPLITS
from stargal.cube import read_cube
from stargal.download import Manifest
from stargal.parallel import map_tasks
from stargal.paths import DataPaths, FieldId

# one worker for the module: its cluster and aligned fields (module fixtures) are then started and made once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dask")]
CODE = Path(__file__).resolve().parents[1] / "code"
FIELDS = [str(f) for f in TINY.fields]


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def local_cluster(cluster) -> str:
    return cluster.scheduler_address


def _computed_on(cluster, function: str) -> float:
    """Seconds the cluster's workers spent computing tasks of ``function`` (0 when it never ran one there)."""
    prefix = cluster.scheduler.task_prefixes.get(function)
    return prefix.all_durations.get("compute", 0.0) if prefix is not None else 0.0


def _script(name: str, data_root: Path, *args: str, status: int = 0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(CODE / name), "--data-dir", str(data_root), "-q", *args]
    proc = subprocess.run(cmd, cwd=data_root.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == status, proc.stderr[-2000:]
    return proc


def _align(data_root: Path, *extra: str) -> None:
    _script("01_alignment.py", data_root, "--fields", *FIELDS, *extra)


@pytest.fixture(scope="module")
def aligned(tiny_sky, tmp_path_factory, local_cluster) -> dict[str, DataPaths]:
    """The tiny sky aligned twice: on the local process pool and on the Dask cluster."""
    roots = {}
    for how in ("pool", "dask"):
        roots[how] = tmp_path_factory.mktemp("aligned") / how
        shutil.copytree(tiny_sky.root, roots[how])
    _align(roots["pool"], "--workers", "2")
    _align(roots["dask"], "--scheduler", local_cluster)
    return {how: DataPaths(root) for how, root in roots.items()}


def test_alignment_on_a_dask_cluster_equals_the_local_pool(aligned):
    pool, dask = aligned["pool"], aligned["dask"]
    for fid in cli.field_ids(TINY):
        a, b = read_cube(pool.cube(fid), mmap=False), read_cube(dask.cube(fid), mmap=False)
        assert a.data.shape[0] == len(BANDS)
        assert np.array_equal(a.data, b.data, equal_nan=True), fid
        assert {k: a.header[k] for k in a.header if k.startswith(("DX_", "DY_", "SIMULAT", "FIELD", "BANDS"))} == {
            k: b.header[k] for k in b.header if k.startswith(("DX_", "DY_", "SIMULAT", "FIELD", "BANDS"))
        }
        assert pool.objects(fid).read_bytes() == dask.objects(fid).read_bytes(), fid


# ---------------------------------------------------------------------------------------------------------
# stage 00


def _sas_files(paths: DataPaths) -> dict[str, bytes]:
    """Every file under data/sas/ but the manifest (whose timestamps differ), by relative path."""
    return {
        p.relative_to(paths.sas).as_posix(): p.read_bytes()
        for p in sorted(paths.sas.rglob("*"))
        if p.is_file() and p != paths.manifest
    }


def _manifest_entries(paths: DataPaths) -> dict[str, dict]:
    """The manifest without the fetch times and file stamps (times and inodes of this copy)."""
    files = Manifest.load(paths.manifest).files
    return {rel: {k: v for k, v in entry.items() if k not in ("fetched", "stamp")} for rel, entry in files.items()}


def test_simulated_download_on_a_dask_cluster_equals_the_local_run(tmp_path, cluster, local_cluster):
    args = ["--source", "simulated", "--sim-shape", "128", "192", "--fields", "80", "81"]
    local, dask = DataPaths(tmp_path / "local"), DataPaths(tmp_path / "dask")
    _script("00_download.py", local.root, *args, "--workers", "1")
    before = _computed_on(cluster, "simulate_field")
    out = _script("00_download.py", dask.root, *args, "--scheduler", local_cluster).stdout
    assert _computed_on(cluster, "simulate_field") > before  # the fields were rendered on the cluster
    assert "14 files, 14 fetched" in out and "0 failed" in out
    files = _sas_files(dask)
    for f in (80, 81):
        assert all(dask.frame(FieldId(301, 8162, 6, f), b).relative_to(dask.sas).as_posix() in files for b in BANDS)
    assert files == _sas_files(local)  # byte-identical frames, jpegs, catalogs and truth table
    assert _manifest_entries(dask) == _manifest_entries(local) and len(_manifest_entries(dask)) == 14
    assert dask.sim_truth(301, 8162, 6).read_bytes() == local.sim_truth(301, 8162, 6).read_bytes()
    # a rerun on the cluster finds everything complete
    assert "14 already complete" in _script("00_download.py", dask.root, *args, "--scheduler", local_cluster).stdout


def test_download_from_a_folder_on_a_dask_cluster_equals_the_threaded_run(tiny_sky, tmp_path, cluster, local_cluster):
    source = tmp_path / "mirror"
    shutil.copytree(tiny_sky.sas, source)
    missing = FieldId(301, 8162, 6, 81)
    (source / tiny_sky.frame(missing, "g").relative_to(tiny_sky.sas)).unlink()  # one file the mirror lacks
    args = ["--source", str(source), "--fields", *FIELDS]
    local, dask = DataPaths(tmp_path / "local"), DataPaths(tmp_path / "dask")
    threaded = _script("00_download.py", local.root, *args, "--workers", "2", status=1).stdout
    clustered = _script("00_download.py", dask.root, *args, "--scheduler", local_cluster, status=1).stdout
    assert _computed_on(cluster, "fetch_task") > 0  # the files were fetched on the cluster
    for out in (threaded, clustered):
        assert "26 files, 25 fetched" in out and "1 failed" in out
        assert "FAILED frame-g-008162-6-0081.fits.bz2 (band g): not found in" in out
    files = _sas_files(dask)
    assert len(files) == 25 and not any(name.endswith(".part") for name in files)
    assert files == _sas_files(local)
    for rel, content in files.items():
        assert content == (source / rel).read_bytes(), rel
    entries = _manifest_entries(dask)
    assert entries == _manifest_entries(local) and len(entries) == 25
    assert all(e["url"].startswith(source.as_uri()) for e in entries.values())
    # the mirror gets the file: a rerun on the cluster fetches only it
    shutil.copy(tiny_sky.frame(missing, "g"), source / tiny_sky.frame(missing, "g").relative_to(tiny_sky.sas))
    again = _script("00_download.py", dask.root, *args, "--scheduler", local_cluster).stdout
    assert "1 fetched" in again and "25 already complete" in again
    assert len(_manifest_entries(dask)) == 26


def test_http_download_on_a_dask_cluster_retries_and_records_every_file(tmp_path, cluster, local_cluster):
    from sas_server import SasServer, make_sas_tree

    from stargal import sdss
    from stargal.config import FieldSet
    from stargal.download import HttpSettings
    from stargal.stages.download import DownloadOptions, final_path, plan_files, run_download

    fs = FieldSet(301, 8162, 6, (80, 81), (80,), (), (81,))
    tree = make_sas_tree(tmp_path / "mirror", 301, 8162, 6, fs.fields)
    flaky = sdss.frame_relpath("u", 301, 8162, 6, 81)
    paths = DataPaths(tmp_path / "data")
    http = HttpSettings(connect_timeout=2.0, read_timeout=2.0, retries=3, backoff=0.01, backoff_max=0.05)
    with SasServer(tree) as server:
        server.add_fault(flaky, {"status": 500})
        options = DownloadOptions(source=server.base_url, http=http, scheduler=local_cluster)
        before = _computed_on(cluster, "fetch_task")
        summary = run_download(paths, fs, options)
        assert _computed_on(cluster, "fetch_task") > before
        assert [g.status for g in server.gets(flaky)] == [500, 200]  # retried on the worker
    assert summary.ok and summary.fetched == summary.planned == 14
    assert summary.bytes == sum((tree / spec.relpath).stat().st_size for spec in plan_files(fs))
    entries = _manifest_entries(paths)
    for spec in plan_files(fs):
        assert final_path(paths, spec).read_bytes() == (tree / spec.relpath).read_bytes(), spec.relpath
        assert entries[spec.relpath]["url"] == server.base_url + spec.relpath
    assert not list(paths.sas.rglob("*.part"))


# ---------------------------------------------------------------------------------------------------------
# stage 02


def _dataset(paths: DataPaths) -> tuple[dict, dict[str, bytes]]:
    """The prepared dataset's dataset.json (without timing and location) and its files' bytes."""
    name = paths.latest_dataset.read_text().strip()
    meta = json.loads(paths.dataset_json(name).read_text())
    assert Path(meta.pop("report")) == paths.reports("splits", name)
    files = {}
    for s in SPLITS:
        for p in (paths.split_x(name, s), paths.split_y(name, s), paths.split_objects(name, s)):
            files[p.name] = p.read_bytes()
    files["splits.md"] = (paths.reports("splits", name) / "splits.md").read_bytes()
    report = json.loads((paths.reports("splits", name) / "splits.json").read_text())
    for record in (meta, report):
        record["integrity"].pop("content_sha256")  # covers the timing and location left out here
        for entry in record["integrity"]["files"].values():
            entry.pop("stamp")  # times and inode of this copy
    return {k: v for k, v in meta.items() if k not in ("seconds", "skipped")} | {"split_report": report}, files


def test_preparation_on_a_dask_cluster_equals_the_sequential_run(aligned, tmp_path, cluster, local_cluster):
    splits = ["--train-fields", "80", "83", "--val-fields", "82", "--test-fields", "81"]
    roots = {}
    for how in ("sequential", "pool", "dask"):
        roots[how] = DataPaths(tmp_path / how)
        shutil.copytree(aligned["pool"].root, roots[how].root, ignore=shutil.ignore_patterns("datasets", "reports"))
    _script("02_preparation.py", roots["sequential"].root, *splits, "--workers", "1")
    _script("02_preparation.py", roots["pool"].root, *splits, "--workers", "2")
    out = _script("02_preparation.py", roots["dask"].root, *splits, "--scheduler", local_cluster).stdout
    assert "prepared in" in out and _computed_on(cluster, "cut_field") > 0  # the patches were cut on the cluster
    meta, files = _dataset(roots["sequential"])
    assert sum(meta["counts"][s]["n"] for s in SPLITS) > 0 and meta["simulated"] is True
    for how in ("pool", "dask"):
        other_meta, other_files = _dataset(roots[how])
        assert other_meta == meta, how
        assert other_files.keys() == files.keys()
        for name, content in files.items():
            assert other_files[name] == content, (how, name)


# ---------------------------------------------------------------------------------------------------------
# a cluster started without stargal on its path


def _external_cluster(workdir: Path):
    """`dask scheduler` + `dask worker` started like on a real cluster: with the dependencies but without stargal.

    The project's environment has stargal installed (editable, through a .pth file in site-packages), so the
    cluster runs with ``-S`` (no site processing, hence no .pth files) and finds the dependencies through
    PYTHONPATH instead.
    """
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    sched_file = workdir / "scheduler.json"
    common = {"cwd": workdir, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [sys.executable, "-S", "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", ":0", "--scheduler-file", str(sched_file)], **common,
    )  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert time.monotonic() < deadline and scheduler.poll() is None, "the Dask scheduler did not start"
            time.sleep(0.2)
        worker = subprocess.Popen(
            [sys.executable, "-S", "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched_file),
             "--nworkers", "2", "--nthreads", "1", "--no-dashboard"], **common,
        )  # fmt: skip
        from dask.distributed import Client

        with Client(scheduler_file=str(sched_file), timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            # the cluster really lacks the package, so map_tasks must ship it
            assert not any(client.run(_can_import_stargal).values())
        return scheduler, worker, sched_file
    except BaseException:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        raise


def _can_import_stargal() -> bool:
    import importlib.util

    return importlib.util.find_spec("stargal") is not None


_can_import_stargal.__module__ = "__test_probe__"  # pickled by value: the workers cannot import this module


def test_map_tasks_ships_the_package_to_a_cluster_that_lacks_it(tmp_path):
    scheduler, worker, sched_file = _external_cluster(tmp_path)
    try:
        items = ["80 81", "100-103", "7"]
        expected = map_tasks(cli.field_list, items, workers=2)
        assert map_tasks(cli.field_list, items, scheduler=str(sched_file)) == expected  # by scheduler file
        address = json.loads(sched_file.read_text())["address"]
        assert map_tasks(cli.field_list, items, scheduler=address) == expected  # by address
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
            proc.wait(timeout=30)


INTERRUPTED_POOL = """
import sys, time
from stargal.parallel import map_tasks

def task(i):
    time.sleep(0.5 if i < 2 else 30)
    return i

if __name__ == "__main__":
    print("started", flush=True)
    try:
        map_tasks(task, range(6), workers=2)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
"""


def test_ctrl_c_stops_a_local_pool_at_once_without_waiting_for_its_tasks(tmp_path):
    """Ctrl-C reaches every process of the group: the pool's workers must not leave its shutdown waiting (a
    stage hung there, holding the data folder's lock), nor must the running 30-second tasks be waited for."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from stargal.paths import PROJECT_ROOT

    script = tmp_path / "pool.py"
    script.write_text(INTERRUPTED_POOL)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "code")}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "started"
    time.sleep(2.0)  # the first two tasks have ended; the next two run for 30 s
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130 and out.strip() == "interrupted"
    assert time.monotonic() - start < 10


TERMINATED_POOL = """
import argparse, os, sys, time
from pathlib import Path
from stargal import cli, fsio
from stargal.parallel import map_tasks

def task(i):
    Path(sys.argv[1], f"worker-{os.getpid()}").touch()
    if i < 2:
        time.sleep(0.5)
        return i
    with fsio.atomic_path(Path(sys.argv[1], "outputs", f"task-{i}.txt")) as tmp:
        tmp.write_text("half")
        time.sleep(30)  # killed here by the stop: its temporary file stays behind
    return i

def main(argv=None):
    cli.open_data_folder(argparse.Namespace(data_dir=sys.argv[1]))
    print("started", flush=True)
    map_tasks(task, range(6), workers=2)
    return 0

if __name__ == "__main__":
    cli.run_main(main, [])
"""


def _gone(pid: int) -> bool:
    from pathlib import Path

    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()  # a zombie no one reaps holds nothing
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_a_killed_stage_leaves_no_worker_holding_the_data_folder(tmp_path, how):
    """SIGTERM (a batch system, timeout, docker stop) unwinds like Ctrl-C: "terminated", exit 143, the pool's
    workers stopped; after SIGKILL (or the out-of-memory killer) the workers end with their parent. Orphaned
    workers used to hold the data folder's lock forever, and every later stage waited for them. After SIGTERM or
    Ctrl-C no half-written file of the stopped workers stays behind (they were left until the next run)."""
    import fcntl
    import os
    import signal
    import subprocess
    import sys
    import time

    from stargal.paths import PROJECT_ROOT

    script, data = tmp_path / "pool.py", tmp_path / "data"
    script.write_text(TERMINATED_POOL)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "code")}
    proc = subprocess.Popen([sys.executable, str(script), str(data)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "started"
    time.sleep(2.0)  # the first two tasks have ended; the next two run for 30 s
    workers = [int(p.name.split("-")[1]) for p in data.glob("worker-*")]
    assert len(workers) == 2
    assert len(list(data.glob("outputs/.task-*.part"))) == 2
    if how == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group
    else:
        proc.send_signal(getattr(signal, how))  # the stage alone, not its process group
    _, err = proc.communicate(timeout=20)
    if how != "SIGKILL":
        word, status = ("terminated", 143) if how == "SIGTERM" else ("interrupted", 130)
        assert proc.returncode == status and err.strip().endswith(word), err
        assert not list(data.glob("outputs/*")) and not list(data.glob("outputs/.*"))
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in workers)
    fd = os.open(data / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: the next stage need not wait
    finally:
        os.close(fd)


def _nap(x: int) -> int:
    time.sleep(0.05)
    return x


def test_a_dask_run_stopped_by_on_result_still_keeps_the_tasks_finished_on_the_cluster():
    """00 on a cluster stopped at a full disk (its on_result raises) left unrecorded the files of the tasks that had
    finished on the cluster meanwhile (fetched and written; a rerun had to verify them). With keep_finished they
    reach on_result before the stop propagates; without it, nothing more is kept (other stages' behaviour)."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        for keep_finished in (True, False):
            kept: list[int] = []

            def stop_at_first(index: int, result: int, kept: list[int] = kept) -> None:
                kept.append(result)
                if len(kept) == 1:
                    time.sleep(1.0)  # meanwhile the other tasks finish on the cluster
                    raise OSError(28, "No space left on device")
                raise OSError(28, "No space left on device (again)")  # dropped: the first one is the run's

            with pytest.raises(OSError, match="No space left on device$"):
                map_tasks(_nap, range(4), scheduler=cluster.scheduler_address, on_result=stop_at_first,
                          keep_finished=keep_finished)  # fmt: skip
            assert sorted(kept) == ([0, 1, 2, 3] if keep_finished else kept[:1]), keep_finished
