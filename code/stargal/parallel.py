"""Run independent per-field tasks in order-preserving parallel: in-process, on a local process pool,
or on an existing Dask cluster (``--scheduler ADDRESS``). Results are identical whichever runs them."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from .progress import track


def map_tasks(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    description: str = "tasks",
) -> list[Any]:
    """``[fn(item) for item in items]``, possibly in parallel; exceptions propagate; order is kept.

    ``fn`` must be a module-level function (it is pickled to the workers).
    """
    items = list(items)
    if scheduler:
        return _map_dask(fn, items, scheduler, description)
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in track(items, description, unit="task")]
    results: list[Any] = [None] * len(items)
    with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        try:
            for future in track(as_completed(futures), description, total=len(items), unit="task"):
                results[futures[future]] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def _map_dask(fn: Callable[..., Any], items: list[Any], scheduler: str, description: str) -> list[Any]:
    from dask.distributed import Client
    from dask.distributed import as_completed as dask_completed

    from .errors import StargalError

    try:
        if Path(scheduler).is_file():  # a scheduler file, as written by `dask scheduler --scheduler-file`
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
        for future in track(dask_completed(futures), description, total=len(items), unit="task"):
            results[index[future.key]] = future.result()
    return results


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
