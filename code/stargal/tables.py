"""Every table the pipeline writes: CSV and Markdown text, and per-object CSV files read back into numpy
structured arrays (no pickle, no pandas).

``OBJECT_DTYPE`` is the table stage 01 writes for each field and stage 02 carries into its splits.
``csv_text`` and ``markdown_table`` are the one CSV and the one Markdown writer of the package.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Collection, Iterable, Sequence

import numpy as np

from .errors import StargalError
from .fsio import write_text

OBJECT_DTYPE = np.dtype(
    [
        ("objid", "U32"),  # rerun-run-camcol-field-id, unique over SDSS
        ("run", "i4"),
        ("camcol", "i4"),
        ("field", "i4"),  # field the catalog lists the object under
        ("id", "i4"),  # catalog ID within that field
        ("ra", "f8"),
        ("dec", "f8"),
        ("x", "f8"),  # 0-based column in the aligned cube of the field the table belongs to
        ("y", "f8"),  # 0-based row
        ("label", "i1"),  # 0 galaxy, 1 star
        ("r_psfmag", "f4"),
        ("r_modelmag", "f4"),
    ]
)


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """CSV text ("\n" line ends) of a header row and data rows (values written as ``str`` does)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def format_cell(value, digits: int = 4) -> str:
    """A Markdown cell: "-" for None, fixed ``digits`` decimals for floats ("nan" for NaN), else ``str``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(
    header: Sequence[str],
    rows: Iterable[Sequence],
    *,
    fmt: Callable[[object], str] = format_cell,
    right: Collection[str] = (),
) -> str:
    """A Markdown table: ``rows`` of values, each formatted by ``fmt``; columns named in ``right`` right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if name in right else "---" for name in header) + "|",
    ]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"table row has {len(row)} cells for {len(header)} columns: {row}")
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def records_markdown(records: Iterable[dict], columns: Sequence[str], **kwargs) -> str:
    """``markdown_table`` of dicts, one row per dict (missing keys as None)."""
    return markdown_table(columns, ([r.get(c) for c in columns] for r in records), **kwargs)


def write_table(path: str | os.PathLike, table: np.ndarray) -> None:
    """Write a structured array as CSV (header row = field names), atomically."""
    names = table.dtype.names
    columns = [_format_column(table[name]) for name in names]
    write_text(path, csv_text(names, zip(*columns, strict=True)))


def _format_column(values: np.ndarray) -> list[str]:
    if values.dtype.kind == "f":
        # repr-precision floats round-trip exactly; NaN stays "nan"
        return [repr(float(v)) for v in values]
    return [str(v) for v in values.tolist()]


def read_table(path: str | os.PathLike, dtype: np.dtype = OBJECT_DTYPE) -> np.ndarray:
    """Read a CSV written by ``write_table`` (or by hand) into a structured array of ``dtype``."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise StargalError(f"{path}: file not found") from None
    if not rows:
        raise StargalError(f"{path}: empty table (no header row)")
    header, body = rows[0], rows[1:]
    missing = [n for n in dtype.names if n not in header]
    if missing:
        raise StargalError(f"{path}: missing column(s) {', '.join(missing)}")
    index = [header.index(n) for n in dtype.names]
    out = np.empty(len(body), dtype=dtype)
    for name, col in zip(dtype.names, index, strict=True):
        try:
            out[name] = [row[col] for row in body]
        except (ValueError, IndexError, OverflowError) as exc:
            raise StargalError(f"{path}: bad value in column {name!r} ({exc})") from None
    return out
