"""The text of each page of a PDF written by reportlab (standard fonts), without a PDF library: enough for tests."""

from __future__ import annotations

import base64
import re
import zlib
from pathlib import Path

_OBJECT = re.compile(rb"(\d+) 0 obj(.*?)endobj", re.S)
_STRING = re.compile(rb"\(((?:\\.|[^\\)])*)\)\s*Tj")


def _objects(data: bytes) -> dict[int, bytes]:
    return {int(m.group(1)): m.group(2) for m in _OBJECT.finditer(data)}


def _stream(body: bytes) -> bytes:
    head, _, rest = body.partition(b"stream")
    raw = rest.lstrip(b"\r\n").rsplit(b"endstream", 1)[0].strip()
    if b"/ASCII85Decode" in head:
        raw = base64.a85decode(raw.removesuffix(b"~>"))
    if b"/FlateDecode" in head:
        raw = zlib.decompress(raw)
    return raw


def _unescape(s: bytes) -> str:
    s = re.sub(rb"\\([0-7]{1,3})", lambda m: bytes([int(m.group(1), 8)]), s)
    s = re.sub(rb"\\(.)", rb"\1", s)
    return s.decode("cp1252", errors="replace")


def page_texts(path: str | Path) -> list[str]:
    """One string per page, in page order: every shown text line, joined by newlines."""
    objects = _objects(Path(path).read_bytes())
    root = next(body for body in objects.values() if re.search(rb"/Type\s*/Pages\b", body))
    kids = [int(k) for k in re.findall(rb"(\d+)\s+0\s+R", re.search(rb"/Kids\s*\[(.*?)\]", root, re.S).group(1))]
    texts = []
    for kid in kids:
        refs = re.search(rb"/Contents\s+(\d+)\s+0\s+R", objects[kid])
        content = _stream(objects[int(refs.group(1))]) if refs else b""
        texts.append("\n".join(_unescape(m.group(1)) for m in _STRING.finditer(content)))
    return texts
