"""Train/validation/test splits by field and by sky region, with a leakage guard in sky coordinates.

Every row is one object in one field's aligned cube (``cube_field``). Consecutive fields overlap by
about 128 rows, so a source near a field edge appears in two cubes (same ``objid``, same ra/dec). The
selection (``select``) runs in this order, counting every removed row by reason:

1. ``assign_splits``: a row belongs to the split of its cube's field; a row inside any ``--test-region``
   goes to test whatever its field (``test_region`` moves, not a removal); a train/val row inside any
   ``--exclude-region`` is removed (``exclude_region``).
2. ``leakage_guard``: a train/val row is removed when it is the same source as any test candidate
   (same objid, or within ``MATCH_RADIUS_ARCSEC`` = 1", ``test_source``), or when its patch centre lies
   within half a patch (``P / 2 * 0.396"``) of any test candidate (``near_test``). Test candidates are
   all test rows before the edge policy and de-duplication, so a test source protects its surroundings
   even if its own patch is later dropped. The guard is a circle and a patch a square: a test source up to
   ``P / sqrt(2)`` from a training patch's centre can still sit in that patch's corner (never at its centre,
   where the label is read).
3. ``drop`` edge policy: rows whose patch crosses the frame edge are removed (``edge``).
4. ``deduplicate``, within each split: of several rows of the same source (same objid, or within 1" in
   different cubes or under different catalog fields), the one farthest from its frame edge is kept
   (``duplicate``).
5. Between train and validation: a source present in both keeps its training row and loses its
   validation row (``duplicate_train_val``): training data are the scarcer resource, and the
   validation set stays a set of distinct sources the model has not seen.

Matching uses ``stargal.geometry`` (a KD-tree on unit vectors: exact on the sphere and O(n log n)).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import PIXEL_SCALE_ARCSEC, REFERENCE, FieldSet
from .errors import StargalError
from .geometry import close_pairs, near_any

# split codes of rows, in the order of config.SPLITS
TRAIN, VAL, TEST, REMOVED = 0, 1, 2, -1
MATCH_RADIUS_ARCSEC = 1.0
REMOVAL_REASONS = ("exclude_region", "test_source", "near_test", "edge", "duplicate", "duplicate_train_val")


@dataclass(frozen=True)
class Region:
    """A box in equatorial coordinates (degrees): ra_min <= ra < ra_max, dec_min <= dec < dec_max."""

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        ra, dec = np.asarray(ra), np.asarray(dec)
        return (ra >= self.ra_min) & (ra < self.ra_max) & (dec >= self.dec_min) & (dec < self.dec_max)

    def as_list(self) -> list[float]:
        return [self.ra_min, self.ra_max, self.dec_min, self.dec_max]


def parse_region(values: Sequence[float], option: str = "--test-region") -> Region:
    """A validated Region from RA_MIN RA_MAX DEC_MIN DEC_MAX (degrees)."""
    if len(values) != 4:
        raise StargalError(f"{option}: expected RA_MIN RA_MAX DEC_MIN DEC_MAX, got {len(values)} value(s)")
    try:
        ra_min, ra_max, dec_min, dec_max = (float(v) for v in values)
    except (TypeError, ValueError):
        raise StargalError(f"{option} {' '.join(map(str, values))}: not numbers") from None
    text = f"{option} {ra_min:g} {ra_max:g} {dec_min:g} {dec_max:g}"
    if not all(math.isfinite(v) for v in (ra_min, ra_max, dec_min, dec_max)):
        raise StargalError(f"{text}: values must be finite")
    if not (0.0 <= ra_min < ra_max <= 360.0):
        raise StargalError(f"{text}: need 0 <= RA_MIN < RA_MAX <= 360 (a box across RA 0 is given as two regions)")
    if not (-90.0 <= dec_min < dec_max <= 90.0):
        raise StargalError(f"{text}: need -90 <= DEC_MIN < DEC_MAX <= 90")
    return Region(ra_min, ra_max, dec_min, dec_max)


def region_text(region: Region | Sequence[float]) -> str:
    """A region in words, e.g. ``RA 331.9 to 331.95, Dec 26.95 to 27.06`` (degrees, as the options take them)."""
    ra_min, ra_max, dec_min, dec_max = region.as_list() if isinstance(region, Region) else region
    return f"RA {ra_min:.10g} to {ra_max:.10g}, Dec {dec_min:.10g} to {dec_max:.10g}"


def regions_text(regions: Sequence[Region | Sequence[float]]) -> str:
    """``the region RA .. to .., Dec .. to ..`` or ``the regions (RA ..) and (RA ..)``; empty for none."""
    if not regions:
        return ""
    if len(regions) == 1:
        return "the region " + region_text(regions[0])
    return "the regions " + " and ".join(f"({region_text(r)})" for r in regions)


SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


def _and(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]])) if items else ""


def _fields_words(fields: Sequence[int]) -> str:
    return ("field " if len(fields) == 1 else "fields ") + " ".join(map(str, fields))


def names_of_test_set(record: dict) -> str:
    """What a dataset's test set is drawn from, from its record (dataset.json): ``field 81``, ``field 81 and the
    region RA .. to .., Dec .. to ..``, or the region alone."""
    fields = list((record.get("fields") or {}).get("test") or [])
    names = [_fields_words(fields)] if fields else []
    regions = record.get("test_regions") or []
    if regions:
        names.append(regions_text(regions))
    return " and ".join(names) or "nothing"


def origin_of_test_set(split: np.ndarray, cube_field: np.ndarray, spec: SplitSpec) -> dict:
    """Where the final test rows come from: ``fields``, the number cut from the test fields' cubes; ``regions``,
    the number a ``--test-region`` brought in from other fields; ``regions_by_field``, those per field."""
    test = np.flatnonzero(split == TEST)
    own = np.isin(cube_field[test], spec.test_fields)
    moved, counts = np.unique(cube_field[test][~own], return_counts=True)
    return {
        "fields": int(np.count_nonzero(own)),
        "regions": int(np.count_nonzero(~own)),
        "regions_by_field": {str(int(f)): int(n) for f, n in zip(moved, counts, strict=True)},
    }


def composition_of_test_set(record: dict, where: str | None = None) -> str | None:
    """How a dataset's test set was put together when a ``--test-region`` shaped it (None otherwise), from its
    record: e.g. ``82 of test field 81 and 65 of training field 83 in the region RA .. to .., Dec .. to ..``
    (``where`` in place of ``the region ...``, e.g. "it" where the sentence has named the region already)."""
    regions = record.get("test_regions") or []
    if not regions:
        return None
    fields = record.get("fields") or {}
    where = where or regions_text(regions)
    origin = record.get("test_origin")
    if not isinstance(origin, dict):  # a dataset prepared before the origin was recorded
        moved = record.get("moved_to_test_by_region")
        return f"{moved if moved is not None else 'some'} moved from other fields by {where}"
    parts = [f"{origin.get('fields', 0)} of test {_fields_words(fields['test'])}"] if fields.get("test") else []
    by_field = {int(f): int(n) for f, n in (origin.get("regions_by_field") or {}).items()}
    moved_parts = []
    for split in ("train", "val"):
        mine = [f for f in sorted(by_field) if f in (fields.get(split) or [])]
        if mine:
            moved_parts.append(f"{sum(by_field[f] for f in mine)} of {SPLIT_WORDS[split]} {_fields_words(mine)}")
    others = [f for f in sorted(by_field) if not any(f in (fields.get(s) or []) for s in ("train", "val"))]
    if others:
        moved_parts.append(f"{sum(by_field[f] for f in others)} of {_fields_words(others)}")
    if not moved_parts:
        return _and(parts) + f"; {where} holds no object of another field"
    return _and(parts + moved_parts) + f" in {where}"


def exclusion_text(record: dict) -> str | None:
    """What a dataset's ``--exclude-region`` boxes removed, from its record (None without one): ``12 training and
    validation objects in the region RA .. to .., Dec .. to ..``."""
    regions = record.get("exclude_regions") or []
    if not regions:
        return None
    removed = (record.get("removed") or {}).get("exclude_region")
    return f"{'the' if removed is None else removed} training and validation objects in {regions_text(regions)}"


def in_regions(ra: np.ndarray, dec: np.ndarray, regions: Iterable[Region]) -> np.ndarray:
    """True where (ra, dec) lies in any of ``regions``."""
    inside = np.zeros(np.shape(ra), dtype=bool)
    for region in regions:
        inside |= region.contains(ra, dec)
    return inside


@dataclass(frozen=True)
class SplitSpec:
    """Which fields feed which split, and the sky regions that override them."""

    train_fields: tuple[int, ...]
    val_fields: tuple[int, ...]
    test_fields: tuple[int, ...]
    test_regions: tuple[Region, ...] = ()
    exclude_regions: tuple[Region, ...] = ()

    @classmethod
    def from_fieldset(cls, fs: FieldSet, test_regions=(), exclude_regions=()) -> SplitSpec:
        return cls(
            tuple(fs.train_fields), tuple(fs.val_fields), tuple(fs.test_fields),
            tuple(test_regions), tuple(exclude_regions),
        )  # fmt: skip

    @property
    def fields(self) -> tuple[int, ...]:
        """All fields of the splits, in train, val, test order."""
        return tuple(dict.fromkeys(self.train_fields + self.val_fields + self.test_fields))

    def field_lists(self) -> tuple[tuple[int, ...], ...]:
        return self.train_fields, self.val_fields, self.test_fields

    def as_dict(self) -> dict:
        return {
            "train": sorted(self.train_fields),
            "val": sorted(self.val_fields),
            "test": sorted(self.test_fields),
            "test_regions": [r.as_list() for r in self.test_regions],
            "exclude_regions": [r.as_list() for r in self.exclude_regions],
        }


def validate_spec(spec: SplitSpec, available: Iterable[int] | None = None) -> None:
    """Raise StargalError for a field in two splits, a repeated field, empty splits or fields not selected."""
    options = ("--train-fields", "--val-fields", "--test-fields")
    seen: dict[int, str] = {}
    for option, fields in zip(options, spec.field_lists(), strict=True):
        for f in fields:
            if f in seen:
                where = "twice in " + option if seen[f] == option else f"in both {seen[f]} and {option}"
                raise StargalError(f"{option}: field {f} is listed {where}")
            seen[f] = option
    if not spec.train_fields:
        raise StargalError("--train-fields: no training field")
    if not spec.val_fields:
        raise StargalError("--val-fields: no validation field")
    if not spec.test_fields and not spec.test_regions:
        raise StargalError("--test-fields: no test field and no --test-region")
    if available is not None:
        available = set(available)
        for f, option in seen.items():
            if f not in available:
                raise StargalError(f"{option}: field {f} is not among --fields")


def dataset_name(
    rerun: int, run: int, camcol: int, patch_size: int, edge: str, spec: SplitSpec, reference: FieldSet = REFERENCE
) -> str:
    """Deterministic dataset name, e.g. ``301-8162-6_p25_pad``, plus an 8-hex hash of the splits when
    the fields or regions differ from the reference configuration."""
    name = f"{rerun}-{run}-{camcol}_p{patch_size}_{edge}"
    ref = SplitSpec.from_fieldset(reference)
    same_run = (rerun, run, camcol) == (reference.rerun, reference.run, reference.camcol)
    if same_run and spec.as_dict() == ref.as_dict():
        return name
    digest = hashlib.sha256(json.dumps(spec.as_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}_{digest}"


def check_dataset_name(name: str) -> str:
    """``name`` if it is a safe dataset folder name, else StargalError."""
    from .paths import check_folder_name

    return check_folder_name(name, "--dataset")


def half_patch_arcsec(patch_size: int) -> float:
    """Half a patch side on the sky (arcsec): the leakage guard's exclusion radius."""
    return patch_size / 2.0 * PIXEL_SCALE_ARCSEC


def split_of_rows(cube_field: np.ndarray, spec: SplitSpec) -> np.ndarray:
    """Split code of each row from its cube's field (REMOVED for a field in no split)."""
    split = np.full(np.shape(cube_field), REMOVED, dtype=np.int8)
    for code, fields in enumerate(spec.field_lists()):
        split[np.isin(cube_field, fields)] = code
    return split


def assign_splits(
    objects: np.ndarray, cube_field: np.ndarray, spec: SplitSpec, removed: dict[str, int] | None = None
) -> np.ndarray:
    """Split code per row (TRAIN, VAL, TEST or REMOVED) from its cube's field and the sky regions."""
    split = split_of_rows(cube_field, spec)
    if spec.test_regions:
        split[in_regions(objects["ra"], objects["dec"], spec.test_regions)] = TEST
    if spec.exclude_regions:
        excluded = ((split == TRAIN) | (split == VAL)) & in_regions(objects["ra"], objects["dec"], spec.exclude_regions)
        split[excluded] = REMOVED
        _count(removed, "exclude_region", excluded)
    return split


def leakage_guard(
    objects: np.ndarray, split: np.ndarray, patch_size: int, removed: dict[str, int] | None = None
) -> np.ndarray:
    """A copy of ``split`` in which no train/val row is a test source or has its centre near one.

    Removes train/val rows that share an objid with, or lie within 1" of, any test row
    (``test_source``), then those within half a patch of any test row (``near_test``).
    """
    split = split.copy()
    test = split == TEST
    trainval = (split == TRAIN) | (split == VAL)
    ra, dec = objects["ra"], objects["dec"]
    same = trainval & np.isin(objects["objid"], objects["objid"][test])
    idx = np.flatnonzero(trainval & ~same)
    same[idx] = near_any(ra[idx], dec[idx], ra[test], dec[test], MATCH_RADIUS_ARCSEC)
    split[same] = REMOVED
    _count(removed, "test_source", same)
    idx = np.flatnonzero((split == TRAIN) | (split == VAL))
    near = np.zeros_like(same)
    near[idx] = near_any(ra[idx], dec[idx], ra[test], dec[test], half_patch_arcsec(patch_size))
    split[near] = REMOVED
    _count(removed, "near_test", near)
    return split


def duplicate_pairs(objects: np.ndarray, rows: np.ndarray, cube_field: np.ndarray) -> np.ndarray:
    """Pairs [k, 2] of indices into ``rows`` that are the same source: equal objid, or within 1" in
    different cubes or listed under different catalog fields (one source catalogued by two overlapping fields
    lies twice in each cube that holds it). Two entries of one field in one cube (deblended neighbours) are kept
    however close."""
    if rows.size < 2:
        return np.empty((0, 2), dtype=np.int64)
    pairs = close_pairs(objects["ra"][rows], objects["dec"][rows], MATCH_RADIUS_ARCSEC)
    cubes, listed = cube_field[rows], objects["field"][rows]
    other = (cubes[pairs[:, 0]] != cubes[pairs[:, 1]]) | (listed[pairs[:, 0]] != listed[pairs[:, 1]])
    pairs = pairs[other]
    ids = objects["objid"][rows]
    order = np.argsort(ids, kind="stable")
    same_next = ids[order][1:] == ids[order][:-1]
    # equal objids form runs in sorted order; link each member to the previous one
    id_pairs = np.column_stack([order[:-1][same_next], order[1:][same_next]])
    return np.unique(np.sort(np.vstack([pairs, id_pairs]), axis=1), axis=0)


def deduplicate(
    objects: np.ndarray,
    split: np.ndarray,
    cube_field: np.ndarray,
    preference: np.ndarray,
    removed: dict[str, int] | None = None,
) -> np.ndarray:
    """A copy of ``split`` keeping, within each split, one row per source (highest ``preference``,
    ties to the earlier row), then dropping validation rows whose source is in training."""
    split = split.copy()
    for code in (TRAIN, VAL, TEST):
        rows = np.flatnonzero(split == code)
        drop = rows[_greedy_drop(duplicate_pairs(objects, rows, cube_field), preference[rows])]
        split[drop] = REMOVED
        _count(removed, "duplicate", drop.size)
    rows = np.flatnonzero((split == TRAIN) | (split == VAL))
    pairs = duplicate_pairs(objects, rows, cube_field)
    a, b = rows[pairs[:, 0]], rows[pairs[:, 1]]
    cross = split[a] != split[b]
    val_rows = np.unique(np.where(split[a[cross]] == VAL, a[cross], b[cross]))
    split[val_rows] = REMOVED
    _count(removed, "duplicate_train_val", val_rows.size)
    return split


def _greedy_drop(pairs: np.ndarray, preference: np.ndarray) -> np.ndarray:
    """Indices to drop so no linked pair survives, visiting rows from most to least preferred."""
    if pairs.size == 0:
        return np.empty(0, dtype=np.int64)
    rank = np.empty(preference.size, dtype=np.int64)
    rank[np.lexsort((np.arange(preference.size), -preference))] = np.arange(preference.size)
    better = np.where(rank[pairs[:, 0]] < rank[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    worse = np.where(better == pairs[:, 0], pairs[:, 1], pairs[:, 0])
    links: dict[int, list[int]] = {}
    for b, w in zip(better.tolist(), worse.tolist(), strict=True):
        links.setdefault(b, []).append(w)
    dropped: set[int] = set()
    for b in sorted(links, key=lambda i: rank[i]):
        if b not in dropped:
            dropped.update(links[b])
    return np.array(sorted(dropped), dtype=np.int64)


def _count(removed: dict[str, int] | None, reason: str, mask_or_n) -> None:
    if removed is None:
        return
    n = int(mask_or_n) if np.isscalar(mask_or_n) else int(np.count_nonzero(mask_or_n))
    removed[reason] = removed.get(reason, 0) + n


@dataclass
class Selection:
    split: np.ndarray  # int8 per row: TRAIN, VAL, TEST or REMOVED
    removed: dict[str, int] = field(default_factory=dict)
    moved_to_test: int = 0  # rows of train/val fields moved to test by --test-region

    def rows(self, code: int) -> np.ndarray:
        return np.flatnonzero(self.split == code)


def select(
    objects: np.ndarray,
    cube_field: np.ndarray,
    spec: SplitSpec,
    *,
    patch_size: int,
    edge: str = "pad",
    inside: np.ndarray | None = None,
    preference: np.ndarray | None = None,
    guard: bool = True,
) -> Selection:
    """The full selection (module docstring). ``inside``: patch fully inside the frame (for ``drop``);
    ``preference``: higher is kept among duplicates (e.g. distance to the frame edge).
    ``guard=False`` skips the leakage guard -- only for demonstrating the leak it prevents."""
    removed = {reason: 0 for reason in REMOVAL_REASONS}
    by_field = split_of_rows(cube_field, spec)
    split = assign_splits(objects, cube_field, spec, removed)
    moved = int(np.count_nonzero((by_field != TEST) & (by_field != REMOVED) & (split == TEST)))
    if guard:
        split = leakage_guard(objects, split, patch_size, removed)
    if edge == "drop":
        if inside is None:
            raise ValueError("edge='drop' needs the inside-frame mask")
        outside = (split != REMOVED) & ~inside
        split[outside] = REMOVED
        _count(removed, "edge", outside)
    if preference is None:
        preference = np.zeros(len(objects))
    split = deduplicate(objects, split, cube_field, np.asarray(preference, dtype=np.float64), removed)
    return Selection(split, removed, moved)


def shared_sources(
    objects: np.ndarray, split: np.ndarray, a: int, b: int, radius_arcsec: float = MATCH_RADIUS_ARCSEC
) -> int:
    """How many rows of split ``a`` are within ``radius_arcsec`` of (or share an objid with) a row of ``b``."""
    rows_a, rows_b = np.flatnonzero(split == a), np.flatnonzero(split == b)
    ra, dec, ids = objects["ra"], objects["dec"], objects["objid"]
    hit = near_any(ra[rows_a], dec[rows_a], ra[rows_b], dec[rows_b], radius_arcsec)
    hit |= np.isin(ids[rows_a], ids[rows_b])
    return int(np.count_nonzero(hit))
