"""Atomic file writing and freshness checks: nothing partial ever sits under a final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; outputs should be as readable as any file the user writes
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def is_current(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike] = ()) -> bool:
    """True when every output exists and none is older than any existing input."""
    outputs = [Path(p) for p in outputs]
    if not outputs or not all(p.exists() for p in outputs):
        return False
    newest_input = max((Path(p).stat().st_mtime for p in inputs if Path(p).exists()), default=0.0)
    return min(p.stat().st_mtime for p in outputs) >= newest_input


def previous_record(
    record: str | os.PathLike,
    outputs: Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike],
    settings: dict,
    force: bool = False,
) -> dict | None:
    """The JSON ``record`` of an earlier run made with the same ``settings`` (its "settings" entry) whose
    record and ``outputs`` are all newer than the ``inputs``; None when the work must be done (again)."""
    if force or not is_current([record, *outputs], inputs):
        return None
    previous = read_json(record)
    return previous if previous.get("settings") == settings else None
