"""Scale-out: the per-field stages give identical results on a Dask cluster and on a local process pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from stargal import cli
from stargal.config import BANDS
from stargal.cube import read_cube
from stargal.parallel import map_tasks

pytestmark = pytest.mark.slow
CODE = Path(__file__).resolve().parents[1] / "code"
FIELDS = [str(f) for f in TINY.fields]


@pytest.fixture(scope="module")
def local_cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def _align(data_root: Path, *extra: str) -> None:
    cmd = [
        sys.executable,
        str(CODE / "01_alignment.py"),
        "--data-dir",
        str(data_root),
        "--fields",
        *FIELDS,
        "-q",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=data_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_alignment_on_a_dask_cluster_equals_the_local_pool(tiny_sky, tmp_path, local_cluster):
    import shutil

    roots = {}
    for how in ("pool", "dask"):
        roots[how] = tmp_path / how
        shutil.copytree(tiny_sky.root, roots[how])
    _align(roots["pool"], "--workers", "2")
    _align(roots["dask"], "--scheduler", local_cluster)
    from stargal.paths import DataPaths

    pool, dask = DataPaths(roots["pool"]), DataPaths(roots["dask"])
    for fid in cli.field_ids(TINY):
        a, b = read_cube(pool.cube(fid), mmap=False), read_cube(dask.cube(fid), mmap=False)
        assert a.data.shape[0] == len(BANDS)
        assert np.array_equal(a.data, b.data, equal_nan=True), fid
        assert {k: a.header[k] for k in a.header if k.startswith(("DX_", "DY_", "SIMULAT", "FIELD", "BANDS"))} == {
            k: b.header[k] for k in b.header if k.startswith(("DX_", "DY_", "SIMULAT", "FIELD", "BANDS"))
        }
        assert pool.objects(fid).read_bytes() == dask.objects(fid).read_bytes(), fid


def _external_cluster(workdir: Path):
    """`dask scheduler` + `dask worker` started like on a real cluster: from a folder without stargal."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    sched_file = workdir / "scheduler.json"
    common = {"cwd": workdir, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", ":0", "--scheduler-file", str(sched_file)], **common,
    )  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert time.monotonic() < deadline and scheduler.poll() is None, "the Dask scheduler did not start"
            time.sleep(0.2)
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched_file),
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
        expected = map_tasks(cli._field_list, items, workers=2)
        assert map_tasks(cli._field_list, items, scheduler=str(sched_file)) == expected  # by scheduler file
        address = json.loads(sched_file.read_text())["address"]
        assert map_tasks(cli._field_list, items, scheduler=address) == expected  # by address
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
            proc.wait(timeout=30)
