"""A real HTTP server on 127.0.0.1 serving a SAS tree, with fault injection, for downloader tests and benchmarks.

Faults are queued per SAS relative path; each request to the path consumes one (``sticky`` ones stay):

- ``{"status": 500}`` / ``{"status": 429, "retry_after": "1"}`` / ``{"status": 404, "sticky": True}``
- ``{"drop_after": n}``: announce the full length, send n body bytes, then reset the connection
- ``{"short": n}``: announce the full length, send n body bytes, then close the connection cleanly
- ``{"html": True}`` (Content-Type text/html) or ``{"html": "octet"}`` (HTML body labelled as binary)
- ``{"delay": s}``: wait s seconds before answering (slower than a client's read timeout)

Server-wide: ``latency`` (seconds before every answer), ``rate`` (bytes/s throttle of bodies), ``ranges``
(honour ``Range`` requests or ignore them). Every request is logged (method, path, Range, status, time).
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

PREFIX = "/sas/dr17/eboss/"
HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head><body>down</body></html>\n"


@dataclass
class Logged:
    method: str
    relpath: str
    range: str | None
    status: int  # 0 until the answer is sent
    time: float
    user_agent: str | None


class _QuietServer(ThreadingHTTPServer):
    """Clients that the tests cut off (timeouts, killed downloads) are expected: no tracebacks for them."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SasServer:
    """``with SasServer(root) as server:`` serves ``root`` (a SAS tree) at ``server.base_url``."""

    def __init__(self, root: Path, *, latency: float = 0.0, rate: float | None = None, ranges: bool = True):
        self.root = Path(root)
        self.latency = latency
        self.rate = rate
        self.ranges = ranges
        self.faults: dict[str, list[dict]] = {}
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{PREFIX}"

    def __enter__(self) -> SasServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_fault(self, relpath: str, *faults: dict) -> None:
        with self.lock:
            self.faults.setdefault(relpath, []).extend(faults)

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.log.clear()

    def gets(self, relpath: str | None = None) -> list[Logged]:
        """Logged GET requests (of one path, or all)."""
        with self.lock:
            return [r for r in self.log if r.method == "GET" and (relpath is None or r.relpath == relpath)]

    def _next_fault(self, relpath: str) -> dict | None:
        with self.lock:
            queue = self.faults.get(relpath)
            if not queue:
                return None
            return queue[0] if queue[0].get("sticky") else queue.pop(0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: SasServer

    def log_message(self, format, *args):  # keep test output clean
        pass

    def finish(self):
        with contextlib.suppress(OSError, ValueError):  # a fault may have closed the socket already
            super().finish()

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _arrived(self, relpath: str) -> None:
        """Log the request as it arrives (a client may give up before the answer); status comes later."""
        state = self.server_state
        self._entry = Logged(
            self.command, relpath, self.headers.get("Range"), 0, time.monotonic(), self.headers.get("User-Agent")
        )
        with state.lock:
            state.log.append(self._entry)

    def _log(self, relpath: str, status: int) -> None:
        self._entry.status = status

    def _simple(self, status: int, body: bytes = b"", ctype: str = "text/plain", extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        state = self.server_state
        path = self.path.split("?", 1)[0]
        self._arrived(path[len(PREFIX) :] if path.startswith(PREFIX) else path)
        if not path.startswith(PREFIX):
            self._log(path, 404)
            return self._simple(404, b"not found\n")
        relpath = path[len(PREFIX) :]
        if state.latency:
            time.sleep(state.latency)
        fault = state._next_fault(relpath) if not head else None
        if fault and "delay" in fault:
            time.sleep(fault["delay"])
        if fault and "status" in fault:
            self._log(relpath, fault["status"])
            extra = {"Retry-After": fault["retry_after"]} if "retry_after" in fault else None
            return self._simple(fault["status"], b"error\n", extra=extra)
        if fault and fault.get("redirect"):  # to itself: a redirect loop when queued often enough
            self._log(relpath, 302)
            return self._simple(302, b"", extra={"Location": self.path})
        if fault and fault.get("html"):
            self._log(relpath, 200)
            ctype = "application/octet-stream" if fault["html"] == "octet" else "text/html; charset=utf-8"
            return self._simple(200, HTML_PAGE, ctype)
        target = state.root / relpath
        if relpath == "" or target.is_dir():
            self._log(relpath, 200)
            return self._simple(200, b"index\n")
        if not target.is_file():
            self._log(relpath, 404)
            return self._simple(404, b"not found\n")
        data = target.read_bytes()
        status, start = 200, 0
        rng = self.headers.get("Range")
        if rng and state.ranges and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes=") : -1])
            if start >= len(data):
                self._log(relpath, 416)
                return self._simple(416, b"", extra={"Content-Range": f"bytes */{len(data)}"})
            status = 206
        self._log(relpath, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes" if state.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        body = data[start:]
        cut = fault.get("drop_after", fault.get("short")) if fault else None
        if cut is not None:
            body = body[:cut]
        self._send_body(body, state.rate)
        if cut is not None:
            self.wfile.flush()
            time.sleep(0.1)  # let the client read what was sent before the connection goes
            if "drop_after" in fault:  # abortive close: the client sees a connection reset
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_WR)
            self.close_connection = True
            self.connection.close()

    def _send_body(self, body: bytes, rate: float | None) -> None:
        step = 16384
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                if rate:
                    self.wfile.flush()
                    time.sleep(step / rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# ---------------------------------------------------------------------------------------------------------
# a small SAS tree in the real formats


def make_sas_tree(
    root: Path, rerun: int, run: int, camcol: int, fields, *, shape=(32, 48), rows: int = 30, seed: int = 0
):
    """Write tiny real-format frames (bz2 FITS), irg jpegs and calibObj gal/star sweeps under ``root``."""
    from astropy.io import fits
    from PIL import Image

    from stargal import sdss
    from stargal.config import BANDS

    rng = np.random.default_rng(seed)
    for field in fields:
        for band in BANDS:
            header = fits.Header()
            header["FILTER"] = band
            header["RUN"], header["CAMCOL"] = run, camcol
            header["FRAME"] = field + sdss.FRAME_STAGGER[band]  # the camera's filter rows, as real headers say
            image = rng.normal(0.0, 0.05, shape).astype(np.float32)  # noise: compresses like real sky
            sdss.write_frame(root / sdss.frame_relpath(band, rerun, run, camcol, field), image, header)
        rgb = rng.integers(0, 255, (shape[0], shape[1], 3), dtype=np.uint8)
        jpg = root / sdss.irg_relpath(rerun, run, camcol, field)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
        jpg.write_bytes(buf.getvalue())
    for kind in sdss.CATALOG_KINDS:
        n = rows
        columns = {
            "RUN": np.full(n, run, np.int16),
            "RERUN": np.full(n, str(rerun)),
            "CAMCOL": np.full(n, camcol, np.uint8),
            "FIELD": rng.choice(np.asarray(fields, np.int16), n),
            "ID": np.arange(1, n + 1, dtype=np.int16),
            "OBJC_TYPE": np.full(n, 6 if kind == "star" else 3, np.int32),
            "RA": rng.uniform(0, 1, n),
            "DEC": rng.uniform(0, 1, n),
            "PSF_FWHM": rng.uniform(1, 2, (n, 5)).astype(np.float32),
            "PSFFLUX": rng.uniform(0, 100, (n, 5)).astype(np.float32),
            "MODELFLUX": rng.uniform(0, 100, (n, 5)).astype(np.float32),
        }
        sdss.write_catalog(root / sdss.catalog_relpath(rerun, run, camcol, kind), columns)
    return root
