"""Atomic file writing and freshness checks: nothing partial ever sits under a final name."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np


def _create_temporary(final: Path) -> Path:
    """Create an empty, uniquely named file beside ``final``, with the permissions any file the user writes
    gets (0666 less the umask, which the kernel applies to ``os.open``'s mode; mkstemp would make it 0600)."""
    for _ in range(100):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.part")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{final}: no free temporary name beside it")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(final)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON (numpy values and paths converted) atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike):
    """The JSON value in ``path``."""
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
    """Save ``array`` as .npy (no pickle) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Load a .npy file (never a pickle), memory-mapped read-only with ``mmap``."""
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
