"""Catalog objects of a field: which calibObj objects fall inside a frame, and their pixel coordinates.

Pure functions (arrays and WCS in, arrays out). Fields of a camcol overlap by about 128 rows, so an
object the sweep lists under a neighbouring field may lie inside this field's frame: selection uses the
frame footprint on the sky (every object's RA/DEC converted to pixels in one vectorised call,
``stargal.geometry``), with a
cheap pre-filter on the FIELD number.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from .config import BANDS, LABEL_GALAXY, LABEL_STAR, OBJC_TYPE_GALAXY, OBJC_TYPE_STAR
from .geometry import inside_frame, sky_to_pixel
from .sdss import CATALOG_KINDS, magnitude
from .tables import OBJECT_DTYPE

# Objects listed up to this many fields away can still fall inside a frame (the overlap is ~128 rows,
# a field ~1361 new rows, so +-1 suffices; +-2 is a cheap safety margin, the exact test follows).
FIELD_WINDOW = 2
LABEL_OF_KIND = {"gal": LABEL_GALAXY, "star": LABEL_STAR}
OBJC_TYPE_OF_KIND = {"gal": OBJC_TYPE_GALAXY, "star": OBJC_TYPE_STAR}
R_INDEX = BANDS.index("r")


def prefilter(catalog: np.ndarray, field: int, window: int = FIELD_WINDOW) -> np.ndarray:
    """Rows listed under fields ``field - window .. field + window`` (a cheap superset of the frame's objects)."""
    fields = catalog["FIELD"].astype(np.int64)
    return catalog[np.abs(fields - field) <= window]


def objects_in_frame(
    catalog: np.ndarray, kind: str, wcs: WCS, shape: tuple[int, int], rerun: int
) -> tuple[np.ndarray, int]:
    """The catalog's objects inside the frame as an ``OBJECT_DTYPE`` table, and how many were dropped
    because their OBJC_TYPE contradicts the catalog kind (gal 3, star 6).

    ``catalog`` is a calibObj structured array (already pre-filtered or not); ``kind`` is "gal" or "star",
    which sets the label; x, y are 0-based pixel coordinates of ``wcs``.
    """
    if kind not in LABEL_OF_KIND:
        raise ValueError(f"unknown catalog kind {kind!r}")
    x, y = sky_to_pixel(wcs, catalog["RA"], catalog["DEC"])
    keep = inside_frame(x, y, shape)
    consistent = catalog["OBJC_TYPE"] == OBJC_TYPE_OF_KIND[kind]
    mismatched = int(np.count_nonzero(keep & ~consistent))
    keep &= consistent
    rows = catalog[keep]
    out = np.empty(len(rows), dtype=OBJECT_DTYPE)
    out["run"] = rows["RUN"]
    out["camcol"] = rows["CAMCOL"]
    out["field"] = rows["FIELD"]
    out["id"] = rows["ID"]
    out["objid"] = [
        f"{rerun}-{r}-{c}-{f}-{i}"
        for r, c, f, i in zip(rows["RUN"], rows["CAMCOL"], rows["FIELD"], rows["ID"], strict=True)
    ]
    out["ra"] = rows["RA"]
    out["dec"] = rows["DEC"]
    out["x"] = x[keep]
    out["y"] = y[keep]
    out["label"] = LABEL_OF_KIND[kind]
    out["r_psfmag"] = magnitude(rows["PSFFLUX"][:, R_INDEX])
    out["r_modelmag"] = magnitude(rows["MODELFLUX"][:, R_INDEX])
    return out, mismatched


def field_objects(
    catalogs: dict[str, np.ndarray], wcs: WCS, shape: tuple[int, int], rerun: int
) -> tuple[np.ndarray, int]:
    """Objects of every given catalog kind inside the frame, galaxies first, each sorted by (field, id), and how
    many rows were dropped because their type is contradicted (``objects_in_frame``, ``drop_conflicting``)."""
    tables, mismatched = [], 0
    for kind in CATALOG_KINDS:
        if kind in catalogs:
            table, bad = objects_in_frame(catalogs[kind], kind, wcs, shape, rerun)
            tables.append(np.sort(table, order=["field", "id"]))
            mismatched += bad
    tables, conflicting = drop_conflicting(tables)
    out = np.concatenate(tables) if tables else np.empty(0, dtype=OBJECT_DTYPE)
    return out, mismatched + conflicting


def drop_conflicting(tables: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """The tables without the objects (objids) that more than one of them lists, and how many rows that drops.

    An object in both the star and the galaxy sweep has no label one could trust: kept, the de-duplication of
    stage 02 would silently keep its galaxy row (the first), a coin toss presented as a label."""
    seen = [np.unique(t["objid"]) for t in tables]
    if len(seen) < 2:
        return tables, 0
    ids, counts = np.unique(np.concatenate(seen), return_counts=True)
    both = ids[counts > 1]
    if both.size == 0:
        return tables, 0
    keep = [~np.isin(t["objid"], both) for t in tables]
    return [t[k] for t, k in zip(tables, keep, strict=True)], int(sum(np.count_nonzero(~k) for k in keep))


def padded_coords(tables: list[np.ndarray], label: int) -> np.ndarray:
    """[N, K, 2] float32 (x, y) of the objects with ``label`` per table, NaN-padded to the largest count."""
    picked = [t[t["label"] == label] for t in tables]
    k = max((len(p) for p in picked), default=0)
    out = np.full((len(tables), k, 2), np.nan, dtype=np.float32)
    for i, p in enumerate(picked):
        out[i, : len(p), 0] = p["x"]
        out[i, : len(p), 1] = p["y"]
    return out
