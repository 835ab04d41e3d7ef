"""Atomic file writing, sealed output sets and the data-folder lock: nothing partial ever sits under a final
name, and nothing broken is ever taken for current.

- ``atomic_path`` / ``write_*`` / ``save_npy``: one file, written under a temporary name beside its final
  name (``.NAME.HEX.part``) and renamed when complete.
- ``OutputSet``: several files that become visible together. Each is written under a temporary name; at
  ``commit`` they are renamed into place and then a JSON *record* is written last, listing every file with
  its size and sha256 (key ``"integrity"``). Readers accept an output only when ``check_seal`` finds every
  listed file present and intact, so a set half replaced by a killed run is seen as broken, named, and redone;
  a rebuild that fails before its commit leaves the previous set untouched.
- ``previous_record``: the record of an earlier run with the same settings, when its outputs are intact.
- ``lock_folder``: one run at a time per data folder (``fcntl.flock``), and ``remove_stale_temporaries``.
- ``publishing``: a stage renames files into place holding the folder's publication lock (``guard_publications``
  names it), which a reader (predict.py) holds shared for its whole run instead of the folder lock: it never
  waits for a stage's hours of training, and never sees half of an output set.

A file's check is quick when its stamp (size, mtime, ctime, inode, recorded when sealed) is unchanged: any
write through the filesystem, even one that restores the modification time, changes the ctime. Otherwise,
and always with ``deep=True``, its sha256 is computed and compared.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CorruptFileError, StargalError

log = logging.getLogger("stargal")

INTEGRITY_KEY = "integrity"
# 2: the file list is sealed too ("files_sha256"); 1 (stargal before 2026-12-08): the record's own content only
INTEGRITY_VERSION = 2
# the temporary names of atomic writes: ".NAME.<12 hex>.part" (and Keras's ".NAME.<12 hex>.keras")
TEMPORARY_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.(part|keras)$")
_CHUNK = 1 << 20


def _create_temporary(final: Path) -> Path:
    """Create an empty, uniquely named file beside ``final``, with the permissions any file the user writes
    gets (0666 less the umask, which the kernel applies to ``os.open``'s mode; mkstemp would make it 0600)."""
    for _ in range(100):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.part")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:  # read-only folder, no permission, no space: name the file the user knows
            raise named_os_error(exc, final) from None
        return tmp
    raise FileExistsError(f"{final}: no free temporary name beside it")


def _check_not_folder(final: Path) -> None:
    if final.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(final))


def require_writable_destination(path: str | os.PathLike, option: str, *, folder: bool = False) -> None:
    """Before any work: ``path`` (a file, or with ``folder`` a folder) can be written where the option puts it,
    its nearest existing ancestor being a writable folder; StargalError naming ``option`` otherwise."""
    path = Path(path).expanduser().absolute()
    if folder and path.exists() and not path.is_dir():
        raise StargalError(f"{option} {path}: a file, not a folder")
    parent = path if folder else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise StargalError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StargalError(
            f"{option} {path}: {parent} is not writable (read-only or no permission); choose another {option}"
        )


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    _check_not_folder(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(final)
    try:
        yield tmp_path
        with publishing():
            os.replace(tmp_path, final)
    except OSError as exc:
        if exc.filename is None or exc.filename == str(tmp_path):
            raise named_os_error(exc, final, tmp_path) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def named_os_error(exc: OSError, path: str | os.PathLike, written: str | os.PathLike | None = None) -> OSError:
    """``exc`` naming ``path`` (a write to a temporary file names no file, or the temporary one). numpy's
    writes fail without an errno ("N requested and M written"): a full disk or the file-size limit is then
    told from the file system (``written``: the file being written, ``path`` by default)."""
    code, text = exc.errno, exc.strerror or str(exc)
    if code is None:
        code = _short_write_cause(Path(written or path))
        text = os.strerror(code) if code else text
    return OSError(code, text, str(path))


def _short_write_cause(path: Path) -> int | None:
    import resource

    try:
        fs = os.statvfs(path.parent)
        if fs.f_bavail * fs.f_frsize < max(16 * fs.f_frsize, 1 << 20):
            return errno.ENOSPC
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and path.exists() and path.stat().st_size >= limit:
            return errno.EFBIG
    except OSError:
        pass
    return None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` atomically unless ``path`` already holds exactly it (so that a current run writes nothing,
    and works on a read-only data folder); True when written."""
    try:
        if Path(path).read_bytes() == text.encode("utf-8"):
            return False
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        pass
    write_text(path, text)
    return True


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON (numpy values and paths converted) atomically."""
    write_text(path, json_text(obj))


def json_text(obj) -> str:
    """``obj`` as the indented JSON text ``write_json`` writes."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def read_json(path: str | os.PathLike, advice: str = "the file is damaged"):
    """The JSON value in ``path``; CorruptFileError (a StargalError and ValueError) naming the file, followed by
    ``advice``, when the content is not valid JSON. FileNotFoundError when it does not exist."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}); {advice}"
        ) from None
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"{path}: not valid JSON (not UTF-8 text: {exc.reason}); {advice}") from None


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


def new_npy_memmap(path: str | os.PathLike, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy file of ``shape`` opened as a writable memmap, its disk space reserved first: a sparse file on
    a full disk would kill the process with SIGBUS at the first page written, where this raises OSError
    (ENOSPC) before any work is done."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems that cannot reserve: as before
                del array
                raise OSError(exc.errno, exc.strerror, str(path)) from None
    return array


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Load a .npy file (never a pickle), memory-mapped read-only with ``mmap``; CorruptFileError naming the
    file when it is cut short or not a .npy array."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError) as exc:  # numpy: bad magic or header, or fewer bytes than the header says
        raise CorruptFileError(f"{path}: not a complete .npy array ({exc}); the file is damaged") from None
    if not isinstance(array, np.ndarray):
        raise CorruptFileError(f"{path}: not a single .npy array")
    return array


# ---------------------------------------------------------------------------------------------------------
# integrity records: sizes, checksums and stamps of a set of files


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_stamp(path: str | os.PathLike) -> list[int]:
    """A file's stamp: modification and change times and inode; any write changes it (see the module doc)."""
    return _stamp(os.stat(path))


def check_entry(path: str | os.PathLike, entry: dict, deep: bool = False) -> str | None:
    """None when ``path`` matches its record ``entry`` ({"size", "sha256", "stamp"}), else what is wrong."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not os.path.isfile(path):
        return "not a file"
    recorded = entry.get("size")
    if st.st_size != recorded:
        how = "cut short" if isinstance(recorded, int) and st.st_size < recorded else "changed"
        return f"{st.st_size} bytes, recorded {recorded} ({how})"
    if not deep and entry.get("stamp") == _stamp(st):
        return None
    try:
        digest = sha256_file(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if digest != entry.get("sha256"):
        return "content differs from its record (sha256): damaged or replaced"
    return None


@dataclass
class SealCheck:
    """What ``check_seal`` found: the record (None when unreadable) and every problem as (file, reason)."""

    record_path: Path
    record: dict | None
    problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.record is not None and not self.problems

    def files(self) -> list[Path]:
        """The files the record lists."""
        if not self.record:
            return []
        base = self.record_path.parent
        return [base / name for name in self.record.get(INTEGRITY_KEY, {}).get("files", {})]

    def describe(self, limit: int = 3) -> str:
        """The problems in one line: "FILE: reason; FILE: reason; ... (N more)"."""
        parts = [f"{p}: {why}" for p, why in self.problems[:limit]]
        if len(self.problems) > limit:
            parts.append(f"{len(self.problems) - limit} more")
        return "; ".join(parts)


def edited_after_sealing(record: dict) -> bool:
    """Whether a sealed record's content or file list no longer matches the checksums sealed with it. Records of
    stargal before 2026-12-06 have neither (never called edited), those before 2026-12-08 (integrity version 1)
    the content's only: their file list is checked against the files, as it always was."""
    integrity = record.get(INTEGRITY_KEY)
    if not isinstance(integrity, dict):
        return False
    recorded = integrity.get("content_sha256")
    if recorded is not None and recorded != content_digest(record):
        return True
    return _file_list_edited(integrity)


def _file_list_edited(integrity: dict) -> bool:
    # a file dropped from the list would otherwise go unnoticed: its consumer falls back to another (model.onnx
    # gone, predict serves model.keras). From version 2 on, a list without its checksum was edited too.
    version = integrity.get("version")
    if not isinstance(version, int) or version < 2:
        return False
    return integrity.get("files_sha256") != files_digest(integrity.get("files"))


def check_seal(
    record_path: str | os.PathLike, expected: Iterable[str | os.PathLike] = (), deep: bool = False
) -> SealCheck:
    """Check a sealed output set: its record is valid JSON with an integrity entry, lists every ``expected``
    file, and every file it lists is present with its recorded size and content."""
    record_path = Path(record_path)
    try:
        record = read_json(record_path)
    except FileNotFoundError:
        return SealCheck(record_path, None, [(record_path, "missing")])
    except CorruptFileError:
        return SealCheck(record_path, None, [(record_path, "not valid JSON (damaged)")])
    except OSError as exc:
        return SealCheck(record_path, None, [(record_path, f"unreadable ({exc.strerror})")])
    integrity = record.get(INTEGRITY_KEY) if isinstance(record, dict) else None
    files = integrity.get("files") if isinstance(integrity, dict) else None  # a damaged entry: any JSON value
    if not isinstance(files, dict):
        why = "no integrity record (written by an older stargal or by hand)"
        return SealCheck(record_path, None, [(record_path, why)])
    check = SealCheck(record_path, record)
    if edited_after_sealing(record):
        check.problems.append((record_path, "edited after it was sealed (its content no longer matches its checksum)"))
    base = record_path.parent
    listed = {os.path.normpath(base / name) for name in files}
    for p in expected:
        if os.path.normpath(Path(p)) not in listed:
            check.problems.append((Path(p), "not part of the sealed output (written by another run)"))
    for name, entry in files.items():
        problem = check_entry(base / name, entry if isinstance(entry, dict) else {}, deep)
        if problem:
            check.problems.append((Path(os.path.normpath(base / name)), problem))
    return check


def content_digest(record: dict) -> str:
    """sha256 of a record's own content (everything but its integrity entry), as canonical JSON: sealed with it,
    so that a sealed record edited afterwards (a threshold, a split, a metric) shows as damaged."""
    content = {k: v for k, v in record.items() if k != INTEGRITY_KEY}
    canonical = json.dumps(
        json.loads(json.dumps(content, default=_json_default)), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def files_digest(files) -> str:
    """sha256 of a record's file list: each file's name, size and sha256, as canonical JSON. Not the stamps: they
    are added after the record is sealed (``OutputSet.commit``) and are a cache, checked against the file itself.
    ``files`` may be anything a damaged record holds."""
    if isinstance(files, dict):
        files = {
            name: {"size": entry.get("size"), "sha256": entry.get("sha256")} if isinstance(entry, dict) else entry
            for name, entry in files.items()
        }
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _integrity(content: dict, files: dict) -> dict:
    return {
        "version": INTEGRITY_VERSION,
        "content_sha256": content_digest(content),
        "files_sha256": files_digest(files),
        "files": files,
    }


def seal_digest(record: dict) -> str:
    """One sha256 naming a sealed set's content (its files' names and checksums): what a later stage records
    as the identity of its inputs."""
    files = record.get(INTEGRITY_KEY, {}).get("files", {})
    text = "\n".join(f"{name} {entry.get('sha256')}" for name, entry in sorted(files.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _relname(final: Path, base: Path) -> str:
    return Path(os.path.relpath(final, base)).as_posix()


class OutputSet:
    """Files that become visible together, sealed by a JSON record written last.

    ::

        with OutputSet(paths.dataset_json(name)) as out:
            save_npy(out.path(paths.split_x(name, "train")), x)   # a temporary name beside the final one
            ...
            out.commit(summary)   # renames every file into place, then writes the record with the checksums

    Until ``commit`` the previous output (files and record) is untouched; an exception discards the new files.
    ``keep`` carries an unchanged file of the previous set over; ``remove`` deletes a file the set no longer has.
    Adding a file to a set is one more ``out.path(...)``.
    """

    def __init__(self, record: str | os.PathLike):
        self.record = Path(record)
        self._temps: dict[Path, Path] = {}
        self._kept: dict[Path, dict] = {}
        self._removed: list[Path] = []
        self.committed = False

    def path(self, final: str | os.PathLike) -> Path:
        """A new temporary file beside ``final`` that ``commit`` renames to ``final``. Once per file (``forget``
        it to write it anew): a second temporary would leave the first behind until the next run's clean-up."""
        final = Path(final)
        if final in self._temps:
            raise ValueError(f"{final}: already written to in this output set ({self._temps[final]}); ask once")
        self._refuse_removed(final, "written")
        _check_not_folder(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temporary(final)
        self._temps[final] = tmp
        return tmp

    def keep(self, final: str | os.PathLike, entry: dict) -> None:
        """Seal the existing, unchanged ``final`` again with its previous record ``entry``."""
        self._refuse_removed(Path(final), "kept")
        self._kept[Path(final)] = {"size": entry["size"], "sha256": entry["sha256"]}

    def forget(self, final: str | os.PathLike) -> None:
        """Drop ``final`` from the set again (its temporary file, if any, is deleted)."""
        tmp = self._temps.pop(Path(final), None)
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    def remove(self, final: str | os.PathLike) -> None:
        """Delete ``final`` at commit (it no longer belongs to the set)."""
        final = Path(final)
        if final in self._temps or final in self._kept:
            # the commit would delete the file it has just renamed into place, or seal one it deleted
            raise ValueError(f"{final}: written to this output set (or kept), so it cannot also be removed")
        self._removed.append(final)

    def _refuse_removed(self, final: Path, how: str) -> None:
        if final in self._removed:
            raise ValueError(f"{final}: removed by this output set, so it cannot also be {how}")

    def commit(self, content: dict) -> dict:
        """Rename every file into place and write the record (``content`` + integrity) last; return the record."""
        base = self.record.parent
        files = {_relname(final, base): dict(entry) for final, entry in self._kept.items()}
        for final, tmp in self._temps.items():
            files[_relname(final, base)] = {"size": tmp.stat().st_size, "sha256": sha256_file(tmp)}
        record = {**content, INTEGRITY_KEY: _integrity(content, files)}
        # a reader holding the publication lock sees the files and their record change together; a stop signal
        # (Ctrl-C, a kill) is taken once the lock is held, and then only after the record is in place
        with publishing(), stop_signals_deferred():
            with atomic_path(self.record) as record_tmp:
                record_tmp.write_text(json_text(record), encoding="utf-8")
                # From here on nothing needs disk space: renames only. A run killed (SIGKILL, a crash) in between
                # leaves files that do not match the previous record, which readers then see as broken (reruns redo).
                for final, tmp in self._temps.items():
                    os.replace(tmp, final)
                for final in self._removed:
                    final.unlink(missing_ok=True)
            self.committed = True  # before a deferred stop unwinds through __exit__, which would discard the set
        try:  # the stamps make later checks quick; without them (disk full just now) checks hash the files
            for name, entry in files.items():
                entry["stamp"] = _stamp(os.stat(base / name))
            write_text(self.record, json_text(record))
        except OSError as exc:
            log.debug("%s: stamps not recorded (%s)", self.record, exc)
        return record

    def discard(self) -> None:
        for tmp in self._temps.values():
            tmp.unlink(missing_ok=True)
        self._temps.clear()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.committed:
            return
        finals = {str(tmp): final for final, tmp in self._temps.items()}
        last = next(reversed(self._temps), None)
        self.discard()
        if isinstance(exc, OSError) and (exc.filename is None or exc.filename in finals):
            raise named_os_error(exc, finals.get(exc.filename, last or self.record)) from exc
        if isinstance(exc, OSError) and exc.errno is None:
            raise named_os_error(exc, exc.filename or self.record) from exc


def seal(record: str | os.PathLike, files: Iterable[str | os.PathLike], content: dict) -> dict:
    """Write ``record`` (``content`` + integrity of ``files``, already in place) last, atomically; return it.
    For output sets whose files are written one by one under their final names (reports)."""
    record = Path(record)
    base = record.parent
    entries = {}
    for final in files:
        st = os.stat(final)
        entries[_relname(Path(final), base)] = {"size": st.st_size, "sha256": sha256_file(final), "stamp": _stamp(st)}
    out = {**content, INTEGRITY_KEY: _integrity(content, entries)}
    write_json(record, out)
    return out


def require_writable_output(record: str | os.PathLike) -> None:
    """Before the work of outputs that are not current: a StargalError naming ``record`` when their folder cannot be
    written (a read-only data folder), rather than an OSError once the work is done."""
    try:
        require_writable_destination(record, "output")
    except StargalError:
        raise StargalError(
            f"{record}: not current, and its folder cannot be written (read-only or no permission): run on a "
            "writable folder (a run whose outputs are all current writes nothing)"
        ) from None


def previous_record(
    record: str | os.PathLike,
    outputs: Iterable[str | os.PathLike],
    settings: dict,
    force: bool = False,
) -> dict | None:
    """The JSON ``record`` of an earlier run made with the same ``settings`` (its "settings" entry, which names
    the inputs' identities) whose sealed ``outputs`` are all intact; None when the work must be done (again)."""
    if not force:
        check = check_seal(record, outputs)
        wanted = json.loads(json.dumps(settings, default=_json_default))
        same = isinstance(check.record, dict) and check.record.get("settings") == wanted
        if check.ok and same:
            return check.record
        if not check.ok and isinstance(check.record, dict) and check.record.get("settings") is not None and not same:
            log.info("%s: made with other settings or inputs; redoing it", record)  # other outputs: not damage
        elif not check.ok and (check.record is not None or Path(record).exists()):
            log.info("%s: earlier outputs incomplete or damaged (%s); redoing them", record, check.describe(1))
    require_writable_output(record)
    return None


# ---------------------------------------------------------------------------------------------------------
# stop signals held back while an output set is renamed into place

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # the user's ways of stopping a run (cli, parallel use these)


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block (an output set's renames and record: a few milliseconds), then
    deliver them to the handlers they would have reached: a stop lands before or after the block, never inside.

    The handlers are swapped for one that notes the signal, rather than the signals blocked with
    ``pthread_sigmask``: that mask is the calling thread's only, so the kernel hands a process's signal to another
    thread (TensorFlow's, the downloads'), and Python runs the handler in the main thread all the same, inside the
    block. A signal the process ignores stays ignored; one with the default action (SIGTERM outside run_main)
    is noted too and then kills the process, after the block. Only the main thread can set handlers (Python runs
    them there); from another one the block runs unguarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def note(signum: int, frame) -> None:
        received.append(signum)

    previous: dict[int, object] = {}
    try:
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler not in (signal.SIG_IGN, None):  # None: set outside Python, left alone
                previous[signum] = handler
                signal.signal(signum, note)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):  # each once, in order; the first stop raises or ends the process
            signal.raise_signal(signum)


# ---------------------------------------------------------------------------------------------------------
# one run at a time per data folder

_HELD_LOCKS: dict[str, tuple[int, bool]] = {}  # lock file -> (descriptor, shared) held by this process


def lock_folder(lock_file: str | os.PathLike, *, shared: bool = False, on_wait=None, holder: str = "") -> bool:
    """Hold ``lock_file``'s flock (exclusive, or ``shared``) until ``release_folder_locks`` or the process exits;
    wait while another process holds it, calling ``on_wait(text the holder wrote)`` once. A lock this process
    already holds is taken again at once. Returns False when the lock cannot be taken because the folder is
    read-only and has no lock file (then nothing can write there anyway)."""
    key = os.path.realpath(lock_file)
    if key in _HELD_LOCKS:
        fd, held_shared = _HELD_LOCKS[key]
        if held_shared and not shared:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _HELD_LOCKS[key] = (fd, False)
        return True
    if _adopt_handed_lock(key):
        return True
    writable = True
    try:
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        writable = False
        try:
            fd = os.open(key, os.O_RDONLY)
        except FileNotFoundError:
            return False
    operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        if on_wait is not None:
            try:
                text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            except OSError:
                text = ""
            on_wait(text)
        fcntl.flock(fd, operation)
    if writable and not shared and holder:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode("utf-8"), 0)
    _HELD_LOCKS[key] = (fd, shared)
    return True


# "FD:LOCK FILE": the exclusive folder lock a parent process (run_scripts.sh) holds for its whole run and hands to
# the stage it starts (the descriptor passed with ``pass_fds``), so that no other run's stage gets in between two of
# its stages (another run's 02 between its 02 and 03 would have its 03 train on the other run's dataset)
HANDED_LOCK_ENV = "STARGAL_HANDED_LOCK"


def hand_on_lock(lock_file: str | os.PathLike) -> tuple[dict[str, str], tuple[int, ...]]:
    """The environment entries and descriptors that hand this process's exclusive hold of ``lock_file`` (taken with
    ``lock_folder``) to a child process (``subprocess.Popen(..., env=..., pass_fds=...)``); nothing when not held."""
    key = os.path.realpath(lock_file)
    held = _HELD_LOCKS.get(key)
    if held is None or held[1]:
        return {}, ()
    return {HANDED_LOCK_ENV: f"{held[0]}:{key}"}, (held[0],)


def _adopt_handed_lock(key: str) -> bool:
    """Whether the parent handed this process its hold of the lock file ``key`` (``hand_on_lock``): then it is held
    here too (the same open file, so taking it again cannot wait), and stays held by the parent after this process
    lets go of it. The entry is dropped from the environment: no process this one starts has the descriptor."""
    fd_text, _, path = os.environ.get(HANDED_LOCK_ENV, "").partition(":")
    if path != key or not fd_text.isdigit():
        return False
    os.environ.pop(HANDED_LOCK_ENV, None)
    fd = int(fd_text)
    try:
        st, own = os.fstat(fd), os.stat(key)
        if (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino):
            return False
        # already ours, so at once; never LOCK_SH, which would turn the parent's exclusive lock into a shared one
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # not the parent's open file after all (BlockingIOError: another process holds it)
        return False
    _HELD_LOCKS[key] = (fd, False)
    return True


def lock_holder(lock_file: str | os.PathLike) -> str | None:
    """What the run holding ``lock_file`` exclusively wrote of itself ("another run" if nothing), or None when no
    run holds it (or this process does, or it cannot be read)."""
    if os.path.realpath(lock_file) in _HELD_LOCKS:
        return None
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        return text or "another run"
    finally:
        os.close(fd)  # also lets go of the shared lock just taken
    return None


def forget_inherited_locks() -> None:
    """In a forked worker: close the folder locks' descriptors inherited from the parent. The parent still holds
    the locks; a worker outliving it (killed with SIGKILL) would otherwise hold them on, forever."""
    while _HELD_LOCKS:
        _, (fd, _) = _HELD_LOCKS.popitem()
        with contextlib.suppress(OSError):
            os.close(fd)


def remove_interrupted_writes() -> list[Path]:
    """After this run was interrupted: the temporary files that its writers stopped mid-write (pool workers
    killed, download threads cut off at exit) left in the data folders it holds exclusively. Skipped for a folder
    whose publication lock a reader holds (its own temporaries are not stale): the next run there removes them."""
    removed: list[Path] = []
    for key, (_, shared) in list(_HELD_LOCKS.items()):
        if shared:
            continue
        root = Path(key).parent
        guard = os.environ.get(PUBLISH_LOCK_ENV)
        try:
            fd = os.open(guard, os.O_RDWR) if guard else None
        except OSError:
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            removed += remove_stale_temporaries(root)
        except BlockingIOError:
            continue
        finally:
            if fd is not None:
                os.close(fd)
    return removed


def release_folder_locks() -> None:
    """Let go of every lock ``lock_folder`` took, and of the publication guard."""
    while _HELD_LOCKS:
        _, (fd, _) = _HELD_LOCKS.popitem()
        os.close(fd)
    os.environ.pop(PUBLISH_LOCK_ENV, None)


# the publication lock of the data folder a stage writes, in the environment so that worker processes use it too
PUBLISH_LOCK_ENV = "STARGAL_PUBLISH_LOCK"
_PUBLISHING = threading.RLock()  # one thread of this process at a time holds the publication lock
_PUBLISH_FD: dict[str, int] = {}  # its descriptor while held


def _forget_publishing_in_child() -> None:
    """A forked worker starts holding nothing, whatever thread of its parent held the lock at the fork."""
    global _PUBLISHING
    _PUBLISHING = threading.RLock()
    if _PUBLISH_FD:
        with contextlib.suppress(OSError):
            os.close(_PUBLISH_FD["fd"])  # the parent's descriptor stays open: its lock holds
        _PUBLISH_FD.clear()


os.register_at_fork(after_in_child=_forget_publishing_in_child)


def guard_publications(lock_file: str | os.PathLike) -> None:
    """From now on this process (and its workers) renames files into place holding ``lock_file`` exclusively."""
    os.environ[PUBLISH_LOCK_ENV] = os.path.realpath(lock_file)


@contextlib.contextmanager
def publishing() -> Iterator[None]:
    """Hold the publication lock ``guard_publications`` named (if any) exclusively for the block; re-entrant.
    Without one, or where it cannot be opened (a read-only folder, where no reader can be disturbed), no lock."""
    lock_file = os.environ.get(PUBLISH_LOCK_ENV)
    if not lock_file:
        yield
        return
    with _PUBLISHING:
        if _PUBLISH_FD:  # this thread holds it already
            yield
            return
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits while a reader holds it shared
            _PUBLISH_FD["fd"] = fd
            yield
        finally:
            _PUBLISH_FD.clear()
            os.close(fd)  # releases the flock


# the lock files of a data folder (``DataPaths.lock_file``, ``DataPaths.publish_lock``)
FOLDER_LOCKS = (".lock", ".publish.lock")


def in_use_by_another_run(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a data folder of its own (``--data-dir`` inside another one) that another process holds
    now, a stage exclusively or predict shared: its temporary files are being written, not left by a killed run."""
    for name in FOLDER_LOCKS:
        lock = os.path.join(folder, name)
        if os.path.realpath(lock) in _HELD_LOCKS or not os.path.isfile(lock):
            continue
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # refused while anyone holds it, even shared
        except BlockingIOError:
            return True
        except OSError:
            continue
        finally:
            os.close(fd)  # also lets go of the lock just taken
    return False


def remove_stale_temporaries(root: str | os.PathLike, skip: Iterable[str] = ()) -> list[Path]:
    """Delete the temporary files (``TEMPORARY_RE``) that runs killed mid-write left under ``root``; call only
    while holding the folder's exclusive lock. Folders named in ``skip`` are not entered, nor a data folder inside
    ``root`` that another run holds (``in_use_by_another_run``). Returns what went."""
    removed = []
    skip = set(skip)
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip and not in_use_by_another_run(os.path.join(folder, d))]
        for name in names:
            if TEMPORARY_RE.match(name):
                path = Path(folder, name)
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:  # read-only folder: leave it for a run that can
                    log.debug("%s: not removed (%s)", path, exc)
                    continue
                removed.append(path)
    return removed


def require_output_places(
    root: Path,
    folders: dict[Path, str],
    files: Sequence[Path],
    stage: str,
    option: str | None = None,
    shared: Sequence[Path] = (),
) -> None:
    """StargalError naming the path when a file of the data folder ``root`` sits where ``stage`` writes one of
    ``folders`` ({folder: what it holds}), or above it, or a folder sits where it writes one of ``files`` or
    ``shared``: said before the work, not found by its last rename. ``option``: the one that gives the output
    another name; ``shared``: files written whatever that name (a LATEST pointer), whose error does not offer it."""
    other = f", or give another {option}" if option else ""
    for folder, what in folders.items():
        for place in (folder, *folder.parents):
            if place == root or place in root.parents:
                break
            # a link to nothing is no folder either: exists() is False for it, and mkdir then said only "File exists"
            if (place.exists() or place.is_symlink()) and not place.is_dir():
                where = "there" if place == folder else f"under it ({folder})"
                kind = "a file" if place.exists() else f"a broken symbolic link (to {os.readlink(place)})"
                raise StargalError(
                    f"{place}: {kind}, not a folder: {stage} writes the {what} {where}; move or delete it"
                    + (other if place == folder else "")
                )
    for path in [*files, *shared]:
        if path.is_dir():
            advice = "" if path in shared else other
            raise StargalError(f"{path}: a folder, not a file: {stage} writes that file; move or delete it{advice}")
