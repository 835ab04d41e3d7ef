"""Progress display: a bar on a terminal, sparse log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("stargal")


def interactive() -> bool:
    """True when stderr is a terminal (progress bars), False in logs and pipes."""
    return sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate with a tqdm bar on a terminal, or with a log line about every 10 % otherwise."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if interactive():
        from tqdm import tqdm

        yield from tqdm(items, desc=description, total=total, unit=unit, leave=False, file=sys.stderr)
        return
    start = time.monotonic()
    step = max(1, (total or 10) // 10)
    for done, item in enumerate(items, start=1):
        yield item
        if done % step == 0 or done == total:
            of = f"/{total}" if total else ""
            log.info("%s: %d%s %s (%.1f s)", description, done, of, unit, time.monotonic() - start)
