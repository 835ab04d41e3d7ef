"""Run independent per-field tasks in order-preserving parallel: in-process, on a local process pool,
or on an existing Dask cluster (``--scheduler ADDRESS``). Results are identical whichever runs them."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from . import fsio
from .progress import track

STOP_SIGNALS = set(fsio.STOP_SIGNALS)
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): the signal a process gets when its parent dies


def map_tasks(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    description: str = "tasks",
    on_result: Callable[[int, Any], Any] | None = None,
    keep_finished: bool = False,
) -> list[Any]:
    """``[fn(item) for item in items]``, possibly in parallel; exceptions propagate; order is kept.

    ``fn`` must be a module-level function (it is pickled to the workers). ``on_result(index, result)``, if
    given, runs in this process as each result arrives (in completion order) and its return value is kept
    instead of the result: return None to let a large result go as soon as it has been used.

    ``keep_finished`` (Dask only): when ``on_result`` raises (00's full disk), the results of the other tasks that
    had already finished on the cluster are still given to it (its further exceptions dropped) before the first
    exception propagates, so that work done on the cluster is not lost (00 records the files fetched there).
    """
    items = list(items)
    keep = on_result if on_result is not None else _keep
    if scheduler:
        return _map_dask(fn, items, scheduler, description, keep, keep_finished)
    if workers <= 1 or len(items) <= 1:
        return [keep(i, fn(item)) for i, item in enumerate(track(items, description, unit="task"))]
    results: list[Any] = [None] * len(items)
    # Ctrl-C and a SIGTERM to the process group reach the workers too; they ignore both and this process stops
    # them (a worker interrupted between tasks left the pool's shutdown waiting forever, the data folder locked).
    # Both are held back while the workers are forked: until worker_init runs, a worker would act on them with
    # this process's handlers and die, breaking the pool under the run's own "interrupted".
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    pool, futures = None, {}
    try:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=worker_init)
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # one that came meanwhile is raised here, in the try
        for future in track(as_completed(futures), description, total=len(items), unit="task"):
            i = futures.pop(future)  # the pool's future holds the result: let both go once used
            results[i] = keep(i, future.result())
    except Exception:
        for future in futures:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=True)  # a failed task: the running ones end as they would have
        raise
    except BaseException:  # interrupted: no task is waited for (their outputs are written atomically)
        if pool is not None:
            _stop(pool)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    pool.shutdown(wait=True)
    return results


def worker_init() -> None:
    """In each pool worker: Ctrl-C and SIGTERM (sent to the whole process group) are the parent's to handle (it
    stops the pool); the worker ends with its parent however the parent ends (SIGTERM, SIGKILL, out of memory),
    and it holds none of the parent's folder locks, so that no orphan keeps the data folder locked."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # held back by map_tasks while forking
    fsio.forget_inherited_locks()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # Linux
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        os._exit(1)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down now: queued tasks cancelled, running ones killed."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()  # workers ignore SIGTERM
    for process in processes:
        process.join(timeout=10)


def _keep(index: int, result: Any) -> Any:
    return result


def _map_dask(
    fn: Callable[..., Any],
    items: list[Any],
    scheduler: str,
    description: str,
    keep: Callable[[int, Any], Any] = _keep,
    keep_finished: bool = False,
) -> list[Any]:
    from dask.distributed import Client
    from dask.distributed import as_completed as dask_completed

    from .errors import StargalError

    try:
        if Path(scheduler).is_file():  # a scheduler file, as written by `dask scheduler --scheduler-file`
            _check_scheduler_file(Path(scheduler))
            client = Client(scheduler_file=scheduler, timeout="20s")
        else:
            client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise StargalError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None
    with client:
        _ensure_package_on_workers(client)
        futures = client.map(fn, items, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        kept: set[int] = set()
        try:
            for future in track(dask_completed(futures), description, total=len(items), unit="task"):
                i = index[future.key]
                kept.add(i)
                results[i] = keep(i, future.result())
                future.release()  # the cluster may forget the result once it is here
        except Exception:
            if keep_finished:
                _keep_finished(futures, kept, keep)
            raise
    return results


def _keep_finished(futures: list, kept: set[int], keep: Callable[[int, Any], Any]) -> None:
    """Give ``keep`` the results of the tasks that finished on the cluster but had not been kept when the run
    stopped; its exceptions (the same stop again) are dropped: the first one is the run's."""
    for i, future in enumerate(futures):
        if i in kept or future.status != "finished":
            continue
        with contextlib.suppress(Exception):
            keep(i, future.result())


def _check_scheduler_file(path: Path) -> None:
    """A scheduler file is the JSON object ``dask scheduler --scheduler-file`` writes, with the address in it."""
    import json

    from .errors import StargalError

    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StargalError(f"--scheduler {path}: not a Dask scheduler file (not JSON: {exc})") from None
    if not isinstance(content, dict) or not isinstance(content.get("address"), str):
        raise StargalError(f'--scheduler {path}: not a Dask scheduler file (no "address" in it)')


def _ensure_package_on_workers(client) -> None:
    """Ship this stargal package (pure Python) to workers that cannot import it.

    A cluster started with ``PYTHONPATH=.../code`` already has it; otherwise the scheduler and the workers
    get a zip of ``code/stargal`` through ``client.upload_file``, which puts it on their ``sys.path``. The task
    functions are pickled by reference, so the workers must import the same package the client runs.
    Third-party dependencies (numpy, astropy, ...) must be installed on the workers.
    """
    # Recent Dask deserialises the task graph on the scheduler too, so it needs the package as well.
    if client.run_on_scheduler(_has_stargal) and all(client.run(_has_stargal).values()):
        return
    package = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "stargal.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(package.rglob("*.py")):
                zf.write(path, path.relative_to(package.parent).as_posix())
        client.upload_file(str(archive), load=True)  # load: puts the zip on sys.path


def _has_stargal() -> bool:
    """Runs on the scheduler and the workers: can they import stargal?"""
    import importlib.util

    return importlib.util.find_spec("stargal") is not None


# A cluster without stargal could not unpickle a reference to stargal.parallel._has_stargal; under a module
# name that is not importable, cloudpickle sends the function by value instead.
_has_stargal.__module__ = "__stargal_probe__"
