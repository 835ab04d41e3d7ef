"""Run independent per-field tasks in order-preserving parallel: in-process, on a local process pool,
or on an existing Dask cluster (``--scheduler ADDRESS``). Results are identical whichever runs them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
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
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise StargalError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None
    with client:
        futures = client.map(fn, items, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        for future in track(dask_completed(futures), description, total=len(items), unit="task"):
            results[index[future.key]] = future.result()
    return results
