"""Classify arbitrary sky coordinates in one aligned field: sky -> pixel -> patch -> p_star, with a status per row.

Pure functions (arrays in, arrays out). Every input coordinate gets one output row in input order; a
coordinate that cannot be classified honestly gets an explicit status and no probability:

- ``ok``       classified: ``p_star`` and ``label`` are set;
- ``outside``  the position falls outside the field (or the WCS cannot place it);
- ``edge``     inside the field but too near its border for the model's edge policy ``drop``
               (with ``pad`` such patches are padded exactly as in training and classified);
- ``no_data``  a band does not cover the position (NaN pixel at the patch centre in some band).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import patches
from .errors import StargalError
from .geometry import inside_frame, sky_to_pixel
from .model import predict
from .tables import csv_text

STATUS_OK = "ok"
STATUS_OUTSIDE = "outside"
STATUS_EDGE = "edge"
STATUS_NO_DATA = "no_data"
STATUSES = (STATUS_OK, STATUS_OUTSIDE, STATUS_EDGE, STATUS_NO_DATA)
OUTPUT_COLUMNS = ("ra", "dec", "x", "y", "p_star", "label", "status")


@dataclass
class Predictions:
    """One entry per input coordinate, in input order; p_star is NaN and label "" unless status is ok."""

    ra: np.ndarray
    dec: np.ndarray
    x: np.ndarray  # 0-based column in the cube (NaN when the WCS cannot place the position)
    y: np.ndarray  # 0-based row
    p_star: np.ndarray  # float32
    label: np.ndarray  # "star" | "galaxy" | ""
    status: np.ndarray  # one of STATUSES

    def __len__(self) -> int:
        return len(self.ra)

    def counts(self) -> dict[str, int]:
        return {s: int(np.count_nonzero(self.status == s)) for s in STATUSES}


def locate(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], patch_size: int, edge: str) -> np.ndarray:
    """Status of each position (before looking at pixel values): ok, outside or edge."""
    patches.check_edge_policy(edge)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    status = np.full(x.shape, STATUS_OK, dtype="U8")
    inside = inside_frame(x, y, shape)
    status[~inside] = STATUS_OUTSIDE
    if edge == "drop":
        r, c = patches.pixel_centres(np.where(inside, x, 0), np.where(inside, y, 0))
        status[inside & ~patches.inside_frame(r, c, patch_size, shape)] = STATUS_EDGE
    return status


def uncovered(data: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where some band has no data (NaN in the aligned cube) at the pixel of (x, y), inside the frame."""
    r, c = patches.pixel_centres(x, y)
    return ~np.all(np.isfinite(data[:, r, c]), axis=0)


def classify(
    model,
    data: np.ndarray,
    wcs,
    ra: np.ndarray,
    dec: np.ndarray,
    *,
    patch_size: int,
    edge: str,
    threshold: float = 0.5,
    batch_size: int = 1024,
    tta: bool = False,
    psf_map=None,
) -> Predictions:
    """Classify sky positions in an aligned cube [bands, rows, cols] with a model taking raw patches.

    ``tta``: average p_star over the patch's eight square symmetries (as stage 03 does when its model.json says so).
    ``psf_map`` (a ``stargal.psf.PSFMap`` of the cube): the PSF at each position, for models that take it.
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    x, y = sky_to_pixel(wcs, ra, dec)
    status = locate(x, y, data.shape[1:], patch_size, edge)
    p_star = np.full(len(ra), np.nan, dtype=np.float32)
    ok = np.flatnonzero(status == STATUS_OK)
    if ok.size:
        empty = uncovered(data, x[ok], y[ok])
        status[ok[empty]] = STATUS_NO_DATA
        ok = ok[~empty]
    if ok.size:
        # Cut exactly as stage 02 did for training: outside-frame and off-centre NaN pixels become 0.
        rows, cols = patches.pixel_centres(x[ok], y[ok])
        batch = patches.extract_patches(data, rows, cols, patch_size).data
        psf = None if psf_map is None else psf_map.at(cols, rows)  # at the pixel centre, as stage 02 does
        p_star[ok] = predict(model, batch, psf, batch_size=batch_size, tta=tta)
    label = np.full(len(ra), "", dtype="U6")
    label[ok] = np.where(p_star[ok] >= threshold, "star", "galaxy")
    return Predictions(ra, dec, x, y, p_star, label, status)


# ---- input and output tables -------------------------------------------------------------------------


def validate_coordinates(ra: np.ndarray, dec: np.ndarray, source: str = "coordinates") -> None:
    """Raise StargalError naming the first bad value (1-based position) when RA/Dec are not valid degrees."""
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    bad_ra = np.flatnonzero(~(np.isfinite(ra) & (ra >= -360) & (ra <= 360)))
    if bad_ra.size:
        i = int(bad_ra[0])
        raise StargalError(f"{source}: coordinate {i + 1}: ra {ra[i]!r} is not an angle in degrees")
    bad_dec = np.flatnonzero(~(np.isfinite(dec) & (np.abs(dec) <= 90)))
    if bad_dec.size:
        i = int(bad_dec[0])
        raise StargalError(f"{source}: coordinate {i + 1}: dec {dec[i]!r} is outside [-90, 90]")


def read_coordinates(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec (degrees) from a CSV with ``ra`` and ``dec`` columns (any case, other columns ignored).

    Any malformed row raises one StargalError naming the file and the line.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise StargalError(f"{path}: coordinate file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StargalError(f"{path}: cannot read coordinate file ({exc})") from None
    if not rows:
        raise StargalError(f"{path}: empty file; expected a header row with ra,dec columns")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("ra", "dec") if c not in header]
    if missing:
        raise StargalError(f"{path}: line 1: missing column(s) {', '.join(missing)} (header: {','.join(rows[0])})")
    ira, idec = header.index("ra"), header.index("dec")
    ra = np.empty(len(rows) - 1)
    dec = np.empty(len(rows) - 1)
    n = 0
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue  # blank lines carry no coordinate
        try:
            r, d = float(row[ira]), float(row[idec])
        except IndexError:
            raise StargalError(f"{path}: line {line}: too few values ({len(row)} for {len(header)} columns)") from None
        except ValueError:
            raise StargalError(f"{path}: line {line}: ra/dec not numeric ({row[ira]!r}, {row[idec]!r})") from None
        if not (math.isfinite(r) and -360 <= r <= 360):
            raise StargalError(f"{path}: line {line}: ra {row[ira]!r} is not an angle in degrees")
        if not (math.isfinite(d) and -90 <= d <= 90):
            raise StargalError(f"{path}: line {line}: dec {row[idec]!r} is outside [-90, 90]")
        ra[n], dec[n] = r, d
        n += 1
    if n == 0:
        raise StargalError(f"{path}: no coordinates (only a header row)")
    return ra[:n], dec[:n]


def format_rows(pred: Predictions) -> list[list[str]]:
    """CSV rows (without header) of OUTPUT_COLUMNS; empty strings for undefined values."""

    def num(v: float, digits: int) -> str:
        return f"{v:.{digits}f}" if math.isfinite(v) else ""

    out = []
    for i in range(len(pred)):
        out.append(
            [
                repr(float(pred.ra[i])),
                repr(float(pred.dec[i])),
                num(float(pred.x[i]), 3),
                num(float(pred.y[i]), 3),
                num(float(pred.p_star[i]), 6),
                str(pred.label[i]),
                str(pred.status[i]),
            ]
        )
    return out


def predictions_csv(pred: Predictions) -> str:
    """The CSV predict.py writes: a header row of OUTPUT_COLUMNS, then one row per input coordinate."""
    return csv_text(OUTPUT_COLUMNS, format_rows(pred))
