"""The HTTP core of stage 00: one file fetched robustly, and the manifest of fetched files.

``fetch_http`` retries connection errors, timeouts, HTTP 5xx and 429 with exponential backoff and jitter
(honouring ``Retry-After``), resumes a partial file with an HTTP ``Range`` request when the server supports
it (and restarts it when not), verifies the whole file (size against ``Content-Length``/``Content-Range``,
then its content with ``stargal.verify``) and only then renames it to its final name. The partial file has a
deterministic name (``<final>.part``) so that a later run, even after the process was killed, resumes it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests
import urllib3

from . import __version__
from .fsio import check_entry, file_stamp, read_json, write_json
from .sources import redact_url
from .verify import VerificationError, WrongFile, looks_like_html, verify_file

log = logging.getLogger("stargal")

PROJECT_URL = "https://github.com/stargal/stargal"  # placeholder until the project has a public home
USER_AGENT = f"stargal/{__version__} (+{PROJECT_URL})"
MANIFEST_VERSION = 1

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts (seconds), retry budget and backoff of HTTP fetches."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5  # further attempts after the first one fails
    backoff: float = 1.0  # first delay; doubles with each failed attempt, with jitter
    backoff_max: float = 60.0
    retry_after_max: float = 120.0  # never wait longer than this for a server's Retry-After
    min_rate: float = 1024.0  # bytes/s over each read_timeout: a server trickling slower than this is given up on
    chunk_size: int = 1 << 16
    user_agent: str = USER_AGENT


@dataclass(frozen=True)
class FetchResult:
    path: Path
    url: str
    size: int
    sha256: str
    attempts: int = 1
    transferred: int = 0  # bytes received over the network (or copied) by this fetch
    resumed: bool = False  # continued a partial file with a Range request


class FetchError(Exception):
    """A file could not be fetched; ``str(exc)`` is the reason shown to the user."""


class FetchCancelled(Exception):
    """The run is being stopped; the partial file is kept for the next run to resume."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def verify_sdss_file(
    path: Path, kind: str, expected_size: int | None = None, name: str | None = None, rerun: int | None = None
):
    """``verify_file`` (complete, of its kind; a frame's header its name's, else WrongFile), and for a sweep named
    ``name`` its headers' and first rows' RUN, CAMCOL and OBJC_TYPE against that name, and their RERUN against
    ``rerun`` when given (``sdss.catalog_head_problems``, reading only the start of the stream): a sweep of another
    run/camcol/rerun or kind under this name raises WrongFile."""
    verified = verify_file(path, kind, expected_size, name, rerun)
    if kind == "catalog" and name is not None:
        from . import sdss

        try:
            problems = sdss.catalog_head_problems(path, name, rerun=rerun)
        except FileNotFoundError:
            raise
        except (OSError, EOFError, ValueError, KeyError, TypeError, zlib.error) as exc:
            raise VerificationError(f"sweep table unreadable ({exc})") from None
        if problems:
            raise WrongFile(f"not this file name's sweep: {'; '.join(problems)}")
    return verified


class _ReadError(Exception):
    """Reading a local source file failed (its disk, not the data folder's)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, progressed: bool = False):
        super().__init__(reason)
        self.retry_after = retry_after
        self.progressed = progressed


def partial_path(final: Path) -> Path:
    """The deterministic name a file has while it is being fetched, beside its final name."""
    return final.with_name(final.name + ".part")


def make_session(settings: HttpSettings = HttpSettings()) -> requests.Session:
    """A requests session that identifies stargal and asks for the bytes as stored (no re-encoding)."""
    session = requests.Session()
    # identity: a server must not re-encode .gz/.bz2 files, so the bytes stored are the bytes served
    session.headers.update({"User-Agent": settings.user_agent, "Accept-Encoding": "identity"})
    return session


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(failures: int, settings: HttpSettings, retry_after: float | None = None, rng=random) -> float:
    """Delay before the next attempt: the server's Retry-After (capped), else exponential with full jitter."""
    if retry_after is not None:
        return min(retry_after, settings.retry_after_max)
    ceiling = min(settings.backoff_max, settings.backoff * 2 ** max(0, failures - 1))
    return ceiling * (0.5 + 0.5 * rng.random())  # jitter in [ceiling/2, ceiling]: spread out, never zero


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))


def fetch_http(
    session: requests.Session,
    url: str,
    final: Path,
    kind: str,
    settings: HttpSettings = HttpSettings(),
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rerun: int | None = None,
) -> FetchResult:
    """Fetch ``url`` to ``final`` (verified as ``kind``: frame, irg or catalog; a sweep's RERUN against ``rerun``
    when given); raise FetchError on failure: at once for a file that is not its name's (WrongFile), an HTML page
    or an HTTP 4xx but 429; after the retries for a transient failure (connection, timeout, 429, 5xx, a cut or
    corrupt body)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(final)
    attempts = failures = transferred = 0
    resumed = False
    while True:
        attempts += 1
        try:
            got, did_resume, expected = _attempt(session, url, part, kind, settings, progress, cancel)
            transferred += got
            resumed |= did_resume
            try:
                verified = verify_sdss_file(part, kind, expected, final.name, rerun)
            except VerificationError as exc:
                html = _starts_like_html(part)
                part.unlink(missing_ok=True)  # corrupt content: the next attempt starts afresh
                if isinstance(exc, WrongFile):  # the server's file under this name (a frame's header or a sweep's rows
                    # naming another): another attempt gets the same file, so it fails at once
                    raise FetchError(f"{exc} (served by {redact_url(url)})") from None
                if html:  # an HTML page labelled as data, with status 200: the server's answer, not a glitch
                    raise FetchError(_html_reason(url, "")) from None
                raise _Retry(str(exc)) from None
            os.replace(part, final)
            return FetchResult(final, url, verified.size, verified.sha256, attempts, transferred, resumed)
        except _Retry as exc:
            reason, retry_after = str(exc), exc.retry_after
            # An attempt that moved the file forward does not use up the retry budget (flaky but working link).
            failures += 0 if exc.progressed else 1
        except requests.Timeout as exc:
            reason, retry_after = describe_error(exc), None
            failures += 1
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            reason, retry_after = f"connection failed ({describe_error(exc)})", None
            failures += 1
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            raise FetchError(f"invalid URL {redact_url(url)} ({exc})") from None
        if failures > settings.retries:
            raise FetchError(f"{reason} (gave up after {attempts} attempt{'s' if attempts > 1 else ''})")
        delay = backoff_delay(failures, settings, retry_after)
        log.info("%s: %s; retrying in %.1f s (attempt %d)", final.name, reason, delay, attempts + 1)
        if cancel is not None and cancel.wait(delay):
            raise FetchCancelled(final.name)
        if cancel is None:
            sleep(delay)


def _attempt(session, url, part, kind, settings, progress, cancel) -> tuple[int, bool, int | None]:
    """One request: append to or (re)write the partial file; return (bytes received, resumed, expected size)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    got = 0
    started = time.monotonic()

    def moved_forward(size: int) -> bool:
        # An attempt that grew the partial file at min_rate or more does not use up the retry budget (a flaky but
        # working link); one that got a few bytes and then stalled for a read timeout does, or a server sending a
        # handful of bytes per connection would be asked again forever.
        return size > offset and size - offset >= settings.min_rate * (time.monotonic() - started)

    timeout = (settings.connect_timeout, settings.read_timeout)
    with session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True) as resp:
        status = resp.status_code
        if status == 416 and offset:
            part.unlink(missing_ok=True)  # the partial file is not a prefix the server recognises: restart
            raise _Retry("partial file rejected by the server (HTTP 416); restarting", progressed=True)
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status} {resp.reason}", parse_retry_after(resp.headers.get("Retry-After")))
        if status not in (200, 206):
            raise FetchError(f"HTTP {status} {resp.reason} for {redact_url(url)}")
        if "html" in resp.headers.get("Content-Type", "").lower():
            # a status 200 (206) page: a login or portal page, a mirror's "not found" page, a wrong base URL; the same
            # page comes back on every retry, so the file fails at once (a rerun asks again) naming what answered
            raise FetchError(_html_reason(resp.url or url, resp.headers["Content-Type"]))
        resumed = False
        if status == 206:
            crange = _parse_content_range(resp.headers.get("Content-Range"))
            if crange is None or crange[0] != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"unexpected Content-Range {resp.headers.get('Content-Range')!r}; restarting")
            expected, mode, resumed = crange[1], "ab", True
        else:  # 200: the whole file (a server without Range support restarts the partial file)
            length = resp.headers.get("Content-Length")
            expected, mode = (int(length) if length and length.isdigit() else None), "wb"
        window_start, window_bytes = time.monotonic(), 0  # read_timeout bounds each read, not a trickle of them
        try:
            with open(part, mode) as fh:
                # read1: whatever has arrived, so that bytes received before a dropped connection are kept;
                # decode_content=False: the bytes stored are the bytes served (no transfer decoding of .gz)
                while chunk := resp.raw.read1(settings.chunk_size, decode_content=False):
                    if cancel is not None and cancel.is_set():
                        raise FetchCancelled(part.name)
                    fh.write(chunk)
                    got += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                    window_bytes += len(chunk)
                    elapsed = time.monotonic() - window_start
                    if elapsed >= settings.read_timeout:
                        if window_bytes < settings.min_rate * elapsed:  # kept: a later attempt resumes from here
                            raise _Retry(f"the server sent {window_bytes / elapsed:.0f} bytes/s for {elapsed:.0f} s, "
                                         f"under {settings.min_rate:.0f}")  # fmt: skip
                        window_start, window_bytes = time.monotonic(), 0
                fh.flush()
                os.fsync(fh.fileno())
        except (urllib3.exceptions.HTTPError, requests.RequestException, ConnectionError, TimeoutError) as exc:
            # keep what arrived: the next attempt resumes from there
            size = part.stat().st_size
            raise _Retry(
                f"connection dropped mid-body after {size} bytes ({describe_error(exc)})",
                progressed=moved_forward(size),
            ) from None
    size = part.stat().st_size
    if expected is not None and size < expected:
        # progress = the partial file grew at min_rate or more (a server that ignores Range and always breaks off, or
        # sends a few bytes per connection, does not progress)
        raise _Retry(f"body ended after {size} of {expected} bytes", progressed=moved_forward(size))
    if expected is not None and size > expected:
        part.unlink(missing_ok=True)
        raise _Retry(f"received {size} bytes, more than the announced {expected}")
    return got, resumed, expected


def _starts_like_html(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return looks_like_html(fh.read(512))
    except OSError:
        return False


def _html_reason(url: str, content_type: str) -> str:
    label = f" ({content_type})" if content_type else ""
    return (
        f"the server answered {redact_url(url)} with an HTML page{label}, not the file (a login, error or "
        "missing-file page? check --source)"
    )


def copy_local(
    src: Path, final: Path, kind: str, *, progress: ProgressFn | None = None, rerun: int | None = None
) -> FetchResult:
    """Copy a file from a local folder through the same partial name, verification and atomic rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(final)
    try:
        fin = open(src, "rb")  # noqa: SIM115 (closed below; its errors are the source's, the writes' the disk's)
        expected = os.fstat(fin.fileno()).st_size
    except OSError as exc:
        raise FetchError(f"cannot read {src} ({exc.strerror or exc})") from None
    try:
        with fin, open(part, "wb") as fout:
            while True:
                try:
                    chunk = fin.read(1 << 20)
                except OSError as exc:
                    raise _ReadError(exc) from None
                if not chunk:
                    break
                fout.write(chunk)
                if progress is not None:
                    progress(len(chunk))
            fout.flush()
            os.fsync(fout.fileno())
        verified = verify_sdss_file(part, kind, expected, final.name, rerun)
    except VerificationError as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"{src}: {exc}") from None
    except _ReadError as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"cannot read {src} ({exc.error.strerror or exc.error})") from None
    except OSError as exc:  # the data folder's disk: full, read-only, permissions; the source is not at fault
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        if exc.errno in DISK_FULL:
            raise FetchError(f"cannot write {final}: the disk is full ({exc.strerror or exc})") from exc
        raise FetchError(f"cannot write {final} ({exc.strerror or exc})") from exc
    os.replace(part, final)
    return FetchResult(final, src.as_uri(), verified.size, verified.sha256, 1, expected, False)


def describe_error(exc: BaseException) -> str:
    """A short, one-line reason for a requests/urllib3 network error."""
    text = " ".join(str(exc).split())
    known = {
        "Failed to resolve": "host name does not resolve",
        "Name or service not known": "host name does not resolve",
        "Connection refused": "connection refused",
        "Connection reset": "connection reset by the server",
        "Connection aborted": "connection aborted",
        "Read timed out": "read timed out",
        "timed out": "timed out",
        "IncompleteRead": "connection closed before the end of the body",
        "CERTIFICATE_VERIFY_FAILED": "TLS certificate verification failed",
        "Network is unreachable": "network is unreachable",
    }
    for marker, reason in known.items():
        if marker in text:
            return reason
    return text[:120]


# ---------------------------------------------------------------------------------------------------------
# manifest


class Manifest:
    """``data/sas/manifest.json``: source URL, size and sha256 of every fetched file, keyed by SAS path.

    Only the main thread changes and saves it (workers return results); every save is atomic.
    """

    def __init__(self, path: Path, files: dict[str, dict] | None = None):
        self.path = Path(path)
        self.files: dict[str, dict] = files or {}

    @classmethod
    def load(cls, path: Path) -> Manifest:
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            data = read_json(path)
            files = data["files"]
            if not isinstance(files, dict):
                raise TypeError("files is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable manifest (%s); files will be verified again", path, exc)
            return cls(path)
        return cls(path, files)

    def problem(self, relpath: str, final: Path) -> str | None:
        """None when the file sits under its final name intact (the size and sha256 the manifest recorded, the
        checksum computed only when the file's stamp changed since); else what is wrong."""
        entry = self.files.get(relpath)
        if not entry:
            return "not recorded"
        if "sha256" not in entry:
            return "recorded without checksum"
        problem = check_entry(final, entry)
        if problem is None:
            entry["stamp"] = file_stamp(final)  # saved with the manifest's next save: later checks are quick
        return problem

    def is_complete(self, relpath: str, final: Path) -> bool:
        """True when the file sits under its final name intact (see ``problem``)."""
        return self.problem(relpath, final) is None

    def record(self, relpath: str, url: str, size: int, sha256: str, path: Path | None = None) -> None:
        self.files[relpath] = {
            "url": redact_url(url),  # a password in --source stays out of the folder
            "size": size,
            "sha256": sha256,
            "fetched": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if path is not None:
            with contextlib.suppress(OSError):
                self.files[relpath]["stamp"] = file_stamp(path)

    def forget(self, relpath: str) -> None:
        self.files.pop(relpath, None)

    def save(self) -> None:
        write_json(self.path, {"version": MANIFEST_VERSION, "files": dict(sorted(self.files.items()))})
