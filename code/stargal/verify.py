"""Content checks of downloaded SDSS files, streamed so that no file is ever held in memory.

A file passes only if its compressed stream is complete (bz2/gzip end-of-stream marker and CRC), the FITS
inside has the expected HDU and is not cut short, or the JPEG decodes. HTML error pages served in place of a
file are recognised and named as such.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
BLOCK = 2880  # FITS block size
PREFIX_BYTES = 64 * BLOCK  # decompressed bytes kept for header parsing (calibObj headers end within 7 blocks)
# What every kind of file starts with: bz2 "BZh", gzip 1f 8b, JPEG SOI + marker.
_MAGIC = {"frame": b"BZh", "catalog": b"\x1f\x8b", "irg": b"\xff\xd8\xff"}
_KIND_NAMES = {"frame": "bz2-compressed FITS frame", "catalog": "gzip-compressed FITS catalog", "irg": "JPEG image"}


class VerificationError(Exception):
    """The file's content is not a complete file of the expected kind."""


class WrongFile(VerificationError):
    """A whole, readable file that is not the one its name claims (a frame whose header names another band, run,
    camcol or field, or is not in nanomaggies; another sweep's run/camcol/rerun or kind): fetching it again from
    the same place gives the same file, so it is refused at once, not retried."""


@dataclass(frozen=True)
class Verified:
    size: int
    sha256: str


def looks_like_html(head: bytes) -> bool:
    """True when bytes start like an HTML/XML page (what servers send as error or maintenance pages)."""
    text = head.lstrip()[:64].lower()
    return text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<title"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(
    path: str | os.PathLike,
    kind: str,
    expected_size: int | None = None,
    name: str | None = None,
    rerun: int | None = None,
) -> Verified:
    """Check a whole file of ``kind`` (frame, irg, catalog); return its size and sha256.

    Raises VerificationError with a short reason when the file is truncated, corrupt, an HTML page, or not
    of the expected kind; or, for a frame whose SDSS file ``name`` is given, raises WrongFile when its header names
    another band, run, camcol or field (a renamed file, or a server serving the wrong one), or another rerun than
    ``rerun`` when given (the name carries none: a frame fetched as rerun 40 must not be rerun 301's).
    """
    path = Path(path)
    if kind not in _MAGIC:
        raise ValueError(f"unknown file kind {kind!r}")
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise VerificationError(f"size {size} bytes, expected {expected_size}")
    if size == 0:
        raise VerificationError("empty file")
    with open(path, "rb") as fh:
        head = fh.read(512)
    if looks_like_html(head):
        raise VerificationError("an HTML page, not the file (a server error page?)")
    if not head.startswith(_MAGIC[kind]):
        raise VerificationError(f"not a {_KIND_NAMES[kind]} (starts with {head[:8]!r})")
    if kind == "irg":
        sha = sha256_file(path)
        _check_jpeg(path)
        return Verified(size, sha)
    sha, raw_size, prefix = _check_stream(path, kind)
    header = _check_fits(prefix, kind, raw_size)
    if kind == "frame" and name is not None:
        _check_frame_identity(header, name, rerun)
    return Verified(size, sha)


def _check_frame_identity(header, name: str, rerun: int | None = None) -> None:
    from .sdss import header_identity_problems, parse_filename

    info = parse_filename(name)
    if info is None or info["kind"] != "frame":
        return
    problems = header_identity_problems(header, info["band"], info["run"], info["camcol"], info["field"], rerun)
    if problems:
        raise WrongFile(f"its header is not this file name's frame: {'; '.join(problems)}")


def _new_decompressor(kind: str):
    # wbits 16+MAX_WBITS: a gzip member, whose header and CRC32/size trailer zlib checks.
    return bz2.BZ2Decompressor() if kind == "frame" else zlib.decompressobj(16 + zlib.MAX_WBITS)


def _check_stream(path: Path, kind: str) -> tuple[str, int, bytes]:
    """Hash the file and decompress it chunk by chunk; return (sha256, decompressed size, first bytes)."""
    digest = hashlib.sha256()
    decomp = _new_decompressor(kind)
    raw_size = 0
    prefix = bytearray()
    codec = "bz2" if kind == "frame" else "gzip"
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            try:
                while chunk:  # several concatenated streams are valid: restart after each end-of-stream
                    if decomp.eof:
                        decomp = _new_decompressor(kind)
                    out = decomp.decompress(chunk)
                    raw_size += len(out)
                    if len(prefix) < PREFIX_BYTES:
                        prefix += out[: PREFIX_BYTES - len(prefix)]
                    chunk = decomp.unused_data
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                raise VerificationError(f"corrupt {codec} stream ({exc})") from None
    if not decomp.eof:
        raise VerificationError(f"truncated {codec} stream (no end-of-stream marker)")
    return digest.hexdigest(), raw_size, bytes(prefix)


def _check_fits(prefix: bytes, kind: str, raw_size: int):
    """The expected HDU (image in HDU 0, binary table in HDU 1) exists and its data ends within the file; return
    its header.

    Headers are parsed from the first decompressed bytes; the data itself is never loaded.
    """
    index = 0 if kind == "frame" else 1
    pos = 0
    for i in range(index + 1):
        header, data_start = _read_header(prefix, pos, i)
        data_size = _data_size(header)
        if i == index:
            break
        pos = data_start + -(-data_size // BLOCK) * BLOCK
    if kind == "frame":
        if header.get("SIMPLE") is not True or header.get("NAXIS") != 2:
            raise VerificationError("FITS primary HDU holds no 2-D image")
    elif str(header.get("XTENSION", "")).strip() != "BINTABLE":
        raise VerificationError(f"FITS HDU 1 is {header.get('XTENSION', 'missing')!r}, not a binary table")
    if data_start + data_size > raw_size:
        raise VerificationError(f"FITS data cut short ({raw_size} of {data_start + data_size} bytes)")
    return header


def _read_header(buf: bytes, pos: int, index: int):
    """Parse the FITS header starting at ``pos``; return (header, offset of its data)."""
    from astropy.io import fits

    end = pos
    while True:
        block = buf[end : end + BLOCK]
        if len(block) < BLOCK:
            raise VerificationError(f"FITS header of HDU {index} incomplete or missing")
        end += BLOCK
        cards = [block[k : k + 80] for k in range(0, BLOCK, 80)]
        if any(card.rstrip() == b"END" for card in cards):
            break
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.Header.fromstring(buf[pos:end].decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(f"FITS header of HDU {index} unreadable ({exc})") from None
    if (index == 0 and "SIMPLE" not in header) or (index > 0 and "XTENSION" not in header):
        raise VerificationError(f"not a FITS file (HDU {index} header lacks {'SIMPLE' if index == 0 else 'XTENSION'})")
    return header, end


def _data_size(header) -> int:
    """Bytes of an HDU's data (FITS standard 4.4.1), without the padding to a whole block."""
    try:
        naxis = int(header.get("NAXIS", 0))
        if naxis == 0:
            return 0
        count = 1
        for k in range(1, naxis + 1):
            count *= int(header[f"NAXIS{k}"])
        bits = abs(int(header["BITPIX"]))
        return bits // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + count)
    except (KeyError, ValueError, TypeError) as exc:
        raise VerificationError(f"FITS header has no valid data size ({exc})") from None


def _check_jpeg(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                raise VerificationError(f"not a JPEG image ({image.format})")
            image.load()  # decodes the whole image; raises on truncated data
    except VerificationError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise VerificationError(f"JPEG does not decode ({exc})") from None
