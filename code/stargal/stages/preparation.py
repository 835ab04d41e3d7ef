"""Stage 02 runner: patches from the aligned cubes, leakage-free splits, normalisation, split report.

Reads ``paths.cube(fid)`` (memory-mapped: only patch pixels are read) and ``paths.objects(fid)`` for
every field of the splits, selects rows with ``stargal.splits.select``, cuts patches straight into
preallocated split arrays, and writes ``paths.dataset_dir(name)`` as one sealed output set: the arrays and
tables under temporary names, renamed into place together, then ``dataset.json`` last with their sizes and
sha256 and the identities of the field records they were cut from. A dataset is current when that record's
files are intact and its inputs and options unchanged; a broken one is named and rebuilt, and a failed rebuild
(even with --force) leaves the previous dataset usable. Also the split report under
``paths.reports("splits", name)`` (a sealed set of its own, committed after the dataset, whose identity its
splits.json names) and the name in ``paths.latest_dataset`` (rewritten only when it changes). Every input is
validated (field records, cube headers), and every output place (no file where a folder goes), before anything is
written; a failed run leaves no folder it made behind.

With ``workers`` > 1 or a Dask ``scheduler``, each field's patches are cut in a task of its own (``cut_field``:
cube in, that field's patches out, nothing written) on local processes or the cluster, whose workers must
share the data folder; this process copies each field's patches into the preallocated split arrays as they
arrive and lets them go, so memory stays one split-array set plus the fields in flight. Selection, the
leakage guard and normalisation run here, on the object tables only. The outputs are byte-identical.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, fsio, integrity, normalise, patches, psf, sdss, splits
from ..config import BANDS, LABEL_STAR, MIN_PATCH_SIZE, PATCH_SIZE, SPLITS, FieldSet, config_changes
from ..cube import read_cube
from ..errors import StargalError
from ..fsio import OutputSet, save_npy, write_text, write_text_if_changed
from ..parallel import map_tasks
from ..paths import DataPaths, FieldId
from ..progress import track
from ..tables import OBJECT_DTYPE, markdown_table, read_table, write_table

log = logging.getLogger("stargal")

MEMORY_SHARE = 0.5  # of physical memory the patches may take: the normalisation statistics need room beside them
FORMAT_VERSION = 2  # 2: {split}_psf.npy, the PSF at every patch
EXTRA_COLUMNS = [
    ("cube_field", "i4"),  # field whose aligned cube the patch was cut from
    ("row", "i4"),  # patch centre pixel in that cube (nearest pixel centre of (y, x))
    ("col", "i4"),
    ("edge_policy", "U4"),  # pad | drop, the policy the dataset was built with
    ("edge_padded", "u1"),  # 1: part of the patch lay outside the frame and is 0 (0/1, not True/False, so
    # the CSV reads back into numpy and pandas alike)
    ("nan_pixels", "i4"),  # pixel-band values without data (no band coverage, or NaN/inf in a frame), set to 0
]
SPLIT_DTYPE = np.dtype(OBJECT_DTYPE.descr + EXTRA_COLUMNS)
MAG_BINS = np.arange(12.0, 25.01, 0.5)
REPORT_FILES = ("splits.json", "splits.md", "splits.png")


def prepare(
    paths: DataPaths,
    fs: FieldSet,
    *,
    patch_size: int = PATCH_SIZE,
    edge: str = "pad",
    test_regions: Sequence[splits.Region] = (),
    exclude_regions: Sequence[splits.Region] = (),
    name: str | None = None,
    force: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
) -> dict:
    """Prepare (or find current) the dataset of ``fs`` and return its summary (``dataset.json`` + extras).

    ``workers`` > 1 cuts the fields' patches on that many local processes, ``scheduler`` on that Dask cluster.
    """
    start = time.monotonic()
    patches.check_edge_policy(edge)
    patches.check_patch_size(patch_size)
    if patch_size < min(MIN_PATCH_SIZE.values()):
        raise StargalError(
            f"--patch-size {patch_size}: smaller than any network takes ("
            + ", ".join(f"{a} {n}" for a, n in MIN_PATCH_SIZE.items())
            + " px at least)"
        )
    spec = splits.SplitSpec.from_fieldset(fs, test_regions, exclude_regions)
    splits.validate_spec(spec, available=fs.fields)
    unused = [f for f in fs.fields if f not in spec.fields]
    if unused:
        log.warning("fields %s are in no split and are ignored", " ".join(map(str, unused)))
    name = (
        splits.check_dataset_name(name)
        if name is not None  # "" is refused, not taken for "derive one"
        else splits.dataset_name(fs.rerun, fs.run, fs.camcol, patch_size, edge, spec)
    )
    _check_output_places(paths, name)  # a file where a folder goes: one line now, not "File exists" after the work
    fids = [FieldId(fs.rerun, fs.run, fs.camcol, f) for f in spec.fields]
    records = {fid.field: _check_field(paths, fid) for fid in fids}  # cube and objects table intact
    _check_up_to_date(paths, fids, records)
    _check_same_sweeps(paths, fids, records)
    cubes = {fid.field: _check_cube(paths, fid, patch_size) for fid in fids}  # headers only: shape, SIMULAT
    inputs = {str(f): fsio.seal_digest(r) for f, r in records.items()}
    config = {
        "format": FORMAT_VERSION,
        "name": name,
        "rerun": fs.rerun,
        "run": fs.run,
        "camcol": fs.camcol,
        "splits": spec.as_dict(),
        "patch_size": patch_size,
        "edge": edge,
    }
    # read and checked before a current dataset is taken: one cut from a table this check refuses is not current
    table, cube_field = _read_objects(paths, fids)
    previous = None if force else _current(paths, name, config, inputs)
    if previous is not None:
        require_both_classes(paths, fs, previous.get("counts", {}))  # one built before this check existed
        warn_one_class_test(previous.get("counts", {}))
        log.info("dataset %s is current (use --force to rebuild)", name)
        write_text_if_changed(paths.latest_dataset, name + "\n")
        previous["skipped"] = True
        return previous
    fsio.require_writable_output(paths.dataset_json(name))
    fsio.require_writable_output(paths.reports("splits", name) / REPORT_FILES[0])  # written with it: both, first

    _check_regions(table, spec)
    rows, cols = patches.pixel_centres(table["x"], table["y"])
    split, removed, moved = _select(table, cube_field, rows, cols, cubes, spec, patch_size, edge)
    selected = {s: class_counts(table["label"][split == code]) for code, s in enumerate(SPLITS)}
    require_both_classes(paths, fs, selected)
    warn_one_class_test(selected)
    arrays = _cut_patches(paths, fids, table, cube_field, rows, cols, split, patch_size, edge, workers, scheduler)

    psf_at = _psf_features(paths, fids, {s: arrays[s][2] for s in SPLITS})
    train_x, _, train_objects = arrays["train"]
    usable = (train_objects["edge_padded"] == 0) & (train_objects["nan_pixels"] == 0)
    center, scale = normalise.robust_stats(train_x, usable if usable.any() else None)
    counts = {s: class_counts(arrays[s][1]) for s in SPLITS}
    summary = {
        "name": name,
        "bands": "".join(BANDS),
        "channel_order": list(BANDS),
        "patch_size": patch_size,
        "patch_centre": "nearest pixel centre of the object's (x, y) in the aligned cube, ties rounded up",
        "edge": edge,
        "rerun": fs.rerun,
        "run": fs.run,
        "camcol": fs.camcol,
        "fields": {"train": list(fs.train_fields), "val": list(fs.val_fields), "test": list(fs.test_fields)},
        "cube_fields": {s: sorted({int(f) for f in arrays[s][2]["cube_field"]}) for s in SPLITS},
        "test_regions": [r.as_list() for r in spec.test_regions],
        "exclude_regions": [r.as_list() for r in spec.exclude_regions],
        "counts": counts,
        "class_ratio": {s: counts[s]["star_fraction"] for s in SPLITS},
        "edge_padded": {s: int(arrays[s][2]["edge_padded"].sum()) for s in SPLITS},
        "psf": {
            "quantity": "stellar half-light radius r50 per band at the object, pixels (stargal.psf)",
            "train_median": [float(v) for v in np.median(psf_at["train"], axis=0)] if len(psf_at["train"]) else [],
        },
        "normalisation": normalise.normalisation_record(
            center, scale, int(usable.sum() if usable.any() else usable.size)
        ),
        "simulated": any(simulated for _, simulated in cubes.values()),
        "removed": removed,
        "moved_to_test_by_region": moved,
        "test_origin": splits.origin_of_test_set(split, cube_field, spec),
        "candidates": int(len(table)),
        "leakage_guard": {
            "match_radius_arcsec": splits.MATCH_RADIUS_ARCSEC,
            "exclusion_radius_arcsec": splits.half_patch_arcsec(patch_size),
            "train_val_duplicates": "kept in train, removed from val",
        },
        "labels": {"0": "galaxy", "1": "star"},
        "config": config,
        "inputs": inputs,
        "stargal_version": __version__,
    }

    # the new dataset is written beside the current one, which stays usable until the commit renames it away; its
    # split report too, committed after it (a report never describes splits that are not the dataset's: a run
    # stopped in between leaves the dataset with no intact report, which the next run rebuilds). A failed run
    # leaves no folder it made behind.
    report_folder = paths.reports("splits", name)
    with (
        _remove_made_folders_on_failure(paths, [paths.dataset_dir(name), report_folder]),
        OutputSet(paths.dataset_json(name)) as out,
        OutputSet(report_folder / REPORT_FILES[0]) as report_out,
    ):
        for split_name, (x, y, objects) in arrays.items():
            save_npy(out.path(paths.split_x(name, split_name)), x)
            save_npy(out.path(paths.split_y(name, split_name)), y)
            save_npy(out.path(paths.split_psf(name, split_name)), psf_at[split_name])
            write_table(out.path(paths.split_objects(name, split_name)), objects)
        report = _write_split_report_files(
            report_out,
            paths,
            name,
            {s: arrays[s][2] for s in SPLITS},
            counts,
            removed,
            description=split_description(summary),
        )
        summary["report"] = str(report_folder)
        summary = out.commit(summary)  # dataset.json last: it lists every file with its checksum
        report_out.commit({**report, "dataset_id": fsio.seal_digest(summary)})  # splits.json last, naming it
    write_text_if_changed(paths.latest_dataset, name + "\n")
    summary["skipped"] = False
    summary["seconds"] = round(time.monotonic() - start, 2)
    return summary


def _output_files(paths: DataPaths, name: str) -> list[Path]:
    """Every file stage 02 writes for dataset ``name``: the dataset's and its split report's (and the LATEST
    pointer, whatever the name)."""
    files = [f(name, s) for s in SPLITS for f in (paths.split_x, paths.split_y, paths.split_psf, paths.split_objects)]
    return [*files, paths.dataset_json(name), *(paths.reports("splits", name) / f for f in REPORT_FILES)]


def _check_output_places(paths: DataPaths, name: str) -> None:
    """Before anything is read or written: no file where a folder of dataset ``name`` goes (the rename at the end
    failed with "File exists" after the work, leaving an empty dataset folder behind), no folder where a file goes."""
    folders = {
        paths.dataset_dir(name): f"dataset {name}",
        paths.reports("splits", name): f"split report of dataset {name}",
    }
    fsio.require_output_places(
        paths.root, folders, _output_files(paths, name), "stage 02", "--dataset", shared=[paths.latest_dataset]
    )


@contextlib.contextmanager
def _remove_made_folders_on_failure(paths: DataPaths, folders: Sequence[Path]):
    """Remove again, when the block fails (or is interrupted), the folders among ``folders`` and their parents
    under the data folder that did not exist before it and are still empty: a refused or failed run leaves no
    empty dataset or report folder behind."""
    made = set()
    for folder in folders:
        for place in (folder, *folder.parents):
            if place == paths.root or place in paths.root.parents or place.exists():
                break
            made.add(place)
    try:
        yield
    except BaseException:
        for place in sorted(made, key=lambda p: len(p.parts), reverse=True):  # the deepest first
            with contextlib.suppress(OSError):
                place.rmdir()  # only when empty
        raise


def _select(table, cube_field, rows, cols, cubes, spec, patch_size: int, edge: str) -> tuple[np.ndarray, dict, int]:
    """Split code per row, removals by reason and rows moved to test (``splits.select`` plus the frame checks)."""
    shapes = np.array([cubes[int(f)][0] for f in cube_field], dtype=np.int64).reshape(-1, 2)
    frame = (shapes[:, 0], shapes[:, 1])
    # objects whose centre pixel is outside their cube cannot be cut; they are not candidates at all
    kept = np.flatnonzero(patches.inside_frame(rows, cols, 1, frame))
    sel = splits.select(
        table[kept], cube_field[kept], spec, patch_size=patch_size, edge=edge,
        inside=patches.inside_frame(rows[kept], cols[kept], patch_size, (frame[0][kept], frame[1][kept])),
        preference=patches.edge_distance(rows[kept], cols[kept], (frame[0][kept], frame[1][kept])).astype(float),
    )  # fmt: skip
    split = np.full(len(table), splits.REMOVED, dtype=np.int8)
    split[kept] = sel.split
    removed = {"outside_frame": int(len(table) - kept.size), **sel.removed}
    empty = [s for code, s in enumerate(SPLITS) if not np.any(split == code)]
    if empty:
        dropped = ", ".join(f"{k} {v}" for k, v in removed.items() if v) or "none"
        raise StargalError(
            f"the selection leaves no {' and no '.join(empty)} objects "
            f"({len(table)} candidates, removed: {dropped}); check the fields and regions"
        )
    return split, removed, sel.moved_to_test


def _cut_patches(
    paths, fids, table, cube_field, rows, cols, split, patch_size: int, edge: str, workers: int = 1, scheduler=None
) -> dict:
    """{split: (x, y, objects)}: preallocated arrays filled field by field, rows in cube-field then table order."""
    index = {s: np.flatnonzero(split == code) for code, s in enumerate(SPLITS)}
    _check_memory(int(np.count_nonzero(split >= 0)), patch_size)
    arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for s, idx in index.items():
        x = np.empty((idx.size, patch_size, patch_size, len(BANDS)), dtype=np.float32)
        objects = np.zeros(idx.size, dtype=SPLIT_DTYPE)
        for column in OBJECT_DTYPE.names:
            objects[column] = table[column][idx]
        objects["cube_field"], objects["row"], objects["col"] = cube_field[idx], rows[idx], cols[idx]
        objects["edge_policy"] = edge
        arrays[s] = (x, (objects["label"] == LABEL_STAR).astype(np.uint8), objects)
    if workers > 1 or scheduler:
        _cut_in_tasks(paths, fids, index, rows, cols, cube_field, arrays, patch_size, workers, scheduler)
        return arrays
    # one cube mapped at a time, so resident memory holds at most one cube's touched pages
    for fid in track(fids, "cutting patches", unit="field"):
        cube = read_cube(paths.cube(fid))
        for s, idx in index.items():
            block = np.flatnonzero(cube_field[idx] == fid.field)  # contiguous within the split
            if block.size == 0:
                continue
            a, b = block[0], block[-1] + 1
            x, _, objects = arrays[s]
            cut = patches.extract_patches(cube.data, rows[idx[a:b]], cols[idx[a:b]], patch_size, out=x[a:b])
            objects["edge_padded"][a:b] = cut.edge_padded
            objects["nan_pixels"][a:b] = cut.nan_pixels
        del cube
    return arrays


def _check_regions(table: np.ndarray, spec: splits.SplitSpec) -> None:
    """A region box no object lies in does nothing: most likely a mistyped box (RA and Dec swapped, hours for
    degrees). A ``--test-region`` is an error then (nothing written): the test set would not be what the command
    says, yet be made the latest dataset under a name of its own; an ``--exclude-region`` only removes, so an
    empty one is a warning."""
    fields = " ".join(map(str, sorted(spec.fields)))
    for option, regions in (("--test-region", spec.test_regions), ("--exclude-region", spec.exclude_regions)):
        for region in regions:
            if region.contains(table["ra"], table["dec"]).any():
                continue
            box = f"{option} {' '.join(f'{v:g}' for v in region.as_list())}"
            if option == "--test-region":
                raise StargalError(
                    f"{box}: no object of fields {fields} lies in it (RA and Dec in degrees, RA_MIN RA_MAX DEC_MIN "
                    "DEC_MAX); correct the box or leave it out"
                )
            log.warning("%s: no object of the fields lies in it, so it changes nothing (RA and Dec in degrees)", box)


def _check_memory(n_patches: int, patch_size: int) -> None:
    """Refuse patches that would not fit in this machine's memory (all splits are held at once) before
    allocating them: a huge ``--patch-size`` is a one-line error, not a crash or a swap storm."""
    need = n_patches * patch_size * patch_size * len(BANDS) * 4
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # a platform without these: nothing to compare with
        return
    if need > MEMORY_SHARE * have:
        raise StargalError(
            f"--patch-size {patch_size}: {n_patches:,} patches of {patch_size} x {patch_size} x {len(BANDS)} would take "
            f"{need / 2**30:.1f} GB, more than {MEMORY_SHARE:.0%} of this machine's {have / 2**30:.1f} GB of memory; "
            "use a smaller patch size or fewer fields"
        )


@dataclass(frozen=True)
class PatchTask:
    """The patches of one field: its cube (on a filesystem every worker shares) and their centre pixels."""

    cube: str
    rows: np.ndarray
    cols: np.ndarray
    patch_size: int


def cut_field(task: PatchTask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A worker's task: (patches, edge_padded, nan_pixels) of one field, cut from its memory-mapped cube."""
    cube = read_cube(task.cube)
    cut = patches.extract_patches(cube.data, task.rows, task.cols, task.patch_size)
    return cut.data, cut.edge_padded, cut.nan_pixels


def _cut_in_tasks(paths, fids, index, rows, cols, cube_field, arrays, patch_size, workers, scheduler) -> None:
    """Cut each field's patches in a task of its own; copy them into the split arrays as they arrive."""
    tasks, placements = [], []
    for fid in fids:
        blocks = []  # (split, a, b): this field's rows of each split, contiguous within the split
        for s, idx in index.items():
            block = np.flatnonzero(cube_field[idx] == fid.field)
            if block.size:
                blocks.append((s, int(block[0]), int(block[-1]) + 1))
        if not blocks:
            continue
        take = np.concatenate([index[s][a:b] for s, a, b in blocks])
        tasks.append(PatchTask(str(paths.cube(fid)), rows[take], cols[take], patch_size))
        placements.append(blocks)

    def place(i: int, result: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        data, edge_padded, nan_pixels = result
        offset = 0
        for s, a, b in placements[i]:
            x, _, objects = arrays[s]
            n = b - a
            x[a:b] = data[offset : offset + n]
            objects["edge_padded"][a:b] = edge_padded[offset : offset + n]
            objects["nan_pixels"][a:b] = nan_pixels[offset : offset + n]
            offset += n
        # returning None lets this field's patches go before the next field's arrive

    map_tasks(cut_field, tasks, workers=workers, scheduler=scheduler, description="cutting patches", on_result=place)


def _psf_features(paths: DataPaths, fids: list[FieldId], objects: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{split: float32 [n, bands]}: each object's PSF from the PSF map of the cube its patch was cut from (the
    maps are part of each field's sealed stage-01 output, checked intact with it)."""
    maps = {}
    for fid in fids:
        path = paths.psf_map(fid)
        try:
            maps[fid.field] = psf.PSFMap.from_dict(fsio.read_json(path), str(path))
        except FileNotFoundError:
            raise StargalError(f"{path}: PSF map not found (run {integrity.alignment_command(fid, paths)})") from None
        except ValueError as exc:
            raise StargalError(
                f"{path}: not valid JSON ({exc}); run {integrity.alignment_command(fid, paths)}"
            ) from None
    out = {}
    for split, table in objects.items():
        features = np.zeros((len(table), len(BANDS)), np.float32)
        for field in np.unique(table["cube_field"]):
            sel = table["cube_field"] == field
            features[sel] = maps[int(field)].at(table["col"][sel], table["row"][sel])
        out[split] = features
    return out


def _current(paths: DataPaths, name: str, config: dict, inputs: dict) -> dict | None:
    """dataset.json of an intact dataset made with ``config`` from ``inputs``, with its split report; else None."""
    split_files = [
        p
        for s in SPLITS
        for p in (
            paths.split_x(name, s),
            paths.split_y(name, s),
            paths.split_psf(name, s),
            paths.split_objects(name, s),
        )
    ]
    check = fsio.check_seal(paths.dataset_json(name), split_files)
    if not check.ok:
        if paths.dataset_dir(name).exists():
            log.warning("dataset %s: %s; rebuilding it", name, check.describe())
        return None
    record = check.record
    report_check = fsio.check_seal(
        paths.reports("splits", name) / REPORT_FILES[0], [paths.reports("splits", name) / f for f in REPORT_FILES[1:]]
    )
    # the report of this build of the dataset (one whose commit failed after the dataset's describes another;
    # reports written before they named it are taken as they are)
    made_for = (report_check.record or {}).get("dataset_id", fsio.seal_digest(record))
    reports = report_check.ok and made_for == fsio.seal_digest(record)
    if record.get("config") != config:
        # a name given twice (--dataset) for other options: the earlier dataset goes, as 03 says of a model
        changes = ", ".join(config_changes(record.get("config") or {}, config))
        log.warning("dataset %s: replacing the dataset of that name (%s; --dataset keeps both)", name, changes)
        return None
    if record.get("inputs") != inputs or not reports:
        return None
    return record


def _check_field(paths: DataPaths, fid: FieldId) -> dict:
    """The field's stage-01 record, its cube and objects table checked intact."""
    cube_path, objects_path = paths.cube(fid), paths.objects(fid)
    if not cube_path.exists() and not objects_path.exists() and not paths.field_record(fid).exists():
        raise StargalError(f"field {fid}: unknown field, no aligned cube or objects table (run 01_alignment.py for it)")
    if not cube_path.exists():
        raise StargalError(f"{cube_path}: aligned cube not found (run {integrity.alignment_command(fid, paths)})")
    if not objects_path.exists():
        raise StargalError(
            f"{objects_path}: objects table not found (field {fid} has no catalog objects? "
            f"{integrity.alignment_command(fid, paths)} lists them once the calibObj catalogs are downloaded)"
        )
    return integrity.require_field(paths, fid, objects=True)


def _check_up_to_date(paths: DataPaths, fids: list[FieldId], records: dict[int, dict]) -> None:
    """Refuse fields whose frames or sweeps changed since stage 01 made their cubes and tables, naming the first
    and, in its command, every one: a sweep replaced makes every field of the camcol stale, and a command for the
    first alone left the next run to refuse the next field, one field at a time."""
    changed = {fid: _changed_since_alignment(paths, fid, records[fid.field]) for fid in fids}
    stale = sorted((fid for fid in fids if changed[fid]), key=lambda f: f.field)
    if not stale:
        return
    fid = stale[0]
    command = integrity.alignment_command(fid, paths)
    if len(stale) > 1:  # one command for them all (the command names the field as "--fields N")
        command = command.replace(f"--fields {fid.field}", "--fields " + " ".join(str(f.field) for f in stale), 1)
    also = f" (and fields {' '.join(str(f.field) for f in stale[1:])})" if len(stale) > 1 else ""
    raise StargalError(
        f"field {fid}{also}: {', '.join(changed[fid])} changed since stage 01 aligned it (fetched again, another sky, "
        f"or a sweep added since): {command} brings it up to date"
    )


def _check_same_sweeps(paths: DataPaths, fids: list[FieldId], records: dict[int, dict]) -> None:
    """Refuse a field whose objects table stage 01 made from fewer sweeps than another field's (one aligned while
    the galaxy sweep was missing lists its stars only): its splits would lack that class, and nothing would say so."""
    made_from = {}
    for fid in fids:
        inputs = records[fid.field].get("inputs")
        if isinstance(inputs, dict) and isinstance(inputs.get("catalogs"), dict):
            made_from[fid] = set(inputs["catalogs"])
    every = set().union(*made_from.values())
    short = [fid for fid, names in made_from.items() if names != every]
    if not short:
        return
    fid = short[0]
    others = " ".join(str(f.field) for f, names in sorted(made_from.items()) if names == every)
    lacking = [
        k for k in sdss.CATALOG_KINDS if paths.catalog(fid.rerun, fid.run, fid.camcol, k).name in every - made_from[fid]
    ]
    fetch = [
        integrity.download_command(
            sdss.catalog_relpath(fid.rerun, fid.run, fid.camcol, k), paths, False, sorted(f.field for f in fids)
        )
        for k in lacking
        if not paths.catalog(fid.rerun, fid.run, fid.camcol, k).exists()
    ]
    names = ", ".join(paths.catalog(fid.rerun, fid.run, fid.camcol, k).name for k in lacking)
    redo = (f"fetch it ({fetch[0]}), then " if fetch else "") + integrity.alignment_command(fid, paths)
    raise StargalError(
        f"field {fid}: its objects table was made without {names}, which field(s) {others} were made with, so it "
        f"lacks that sweep's objects (its splits would miss a class): {redo} lists them"
    )


def _changed_since_alignment(paths: DataPaths, fid: FieldId, record: dict) -> list[str]:
    """The frames and catalogs, still in the folder, that differ from those the field's cube and objects table
    were made from (a frame deleted to save space after aligning is not a change; ``alignment.changed_inputs``),
    and the sweeps that have appeared since: a table made from the star sweep alone lists no galaxy, and taken
    as it is it would give the field's splits its stars only (stage 01 lists the new sweep's objects)."""
    from .alignment import changed_inputs

    inputs = record.get("inputs", {})
    present = [paths.frame(fid, b) for b in BANDS] + [paths.catalog(fid.rerun, fid.run, fid.camcol, k)
                                                      for k in sdss.CATALOG_KINDS]  # fmt: skip
    recorded = {**inputs.get("frames", {}), **inputs.get("catalogs", {})}
    files = [p for p in present if p.name in recorded and p.exists()]
    added = []
    if "catalogs" in inputs:  # a record that lists the sweeps its table was made from
        sweeps = [paths.catalog(fid.rerun, fid.run, fid.camcol, k) for k in sdss.CATALOG_KINDS]
        added = [p.name for p in sweeps if p.name not in recorded and p.exists()]
    # with the file stamps, a frame or sweep replaced by one of its size and time (``cp -p``) is read, not trusted
    # (a record of before the sweeps' digests were kept judges them by size and time, as it did)
    digests = _merged(inputs, "frames_sha256", "catalogs_sha256")
    changed = changed_inputs(files, recorded, digests, _merged(inputs, "frames_stamp", "catalogs_stamp"))
    return sorted(changed + added)


def _merged(inputs: dict, *keys: str) -> dict | None:
    """The union of a record's ``inputs[key]`` dicts; None when it has none of them (then not recorded at all)."""
    present = [inputs[k] for k in keys if isinstance(inputs.get(k), dict)]
    return {k: v for d in present for k, v in d.items()} if present else None


def _check_cube(paths: DataPaths, fid: FieldId, patch_size: int) -> tuple[tuple[int, int], bool]:
    """Validate a field's cube without reading pixels; return the cube's (rows, columns) and SIMULAT."""
    cube_path = paths.cube(fid)
    cube = read_cube(cube_path)
    if cube.bands != "".join(BANDS):
        raise StargalError(f"{cube_path}: bands {cube.bands!r}, expected {''.join(BANDS)!r}")
    try:
        patches.check_patch_size(patch_size, cube.shape)
    except StargalError as exc:
        raise StargalError(f"{exc} of {cube_path.name}") from None
    return cube.shape, bool(cube.header.get("SIMULAT", False))


def _read_objects(paths: DataPaths, fids: list[FieldId]) -> tuple[np.ndarray, np.ndarray]:
    tables = []
    for fid in fids:
        t = read_table(paths.objects(fid))
        if not (np.isfinite(t["x"]).all() and np.isfinite(t["y"]).all()):
            raise StargalError(f"{paths.objects(fid)}: non-finite x/y positions")
        if not (np.isfinite(t["ra"]).all() and np.isfinite(t["dec"]).all()):
            raise StargalError(f"{paths.objects(fid)}: non-finite ra/dec")
        bad = ~np.isin(t["label"], (0, 1))
        if bad.any():
            raise StargalError(
                f"{paths.objects(fid)}: label must be 0 (galaxy) or 1 (star), found {t['label'][bad][0]}"
            )
        tables.append(t)
    table = np.concatenate(tables) if tables else np.empty(0, dtype=OBJECT_DTYPE)
    cube_field = np.repeat(np.array([f.field for f in fids], dtype=np.int32), [len(t) for t in tables])
    _check_one_label_per_object(paths, fids, table, cube_field)
    return table, cube_field


def _check_one_label_per_object(
    paths: DataPaths, fids: list[FieldId], table: np.ndarray, cube_field: np.ndarray
) -> None:
    """Refuse an object listed both as a star and as a galaxy (in both sweeps, in one table or in two): the
    de-duplication would keep one of its rows and with it a label chosen by row order, not by the sky."""
    order = np.lexsort((table["label"], table["objid"]))
    ids, labels = table["objid"][order], table["label"][order]
    clash = np.flatnonzero((ids[1:] == ids[:-1]) & (labels[1:] != labels[:-1]))
    if clash.size == 0:
        return
    rows = order[[clash[0], clash[0] + 1]]
    by_field = {fid.field: fid for fid in fids}
    where = " and ".join(dict.fromkeys(str(paths.objects(by_field[int(cube_field[r])])) for r in rows))
    fid = by_field[int(cube_field[rows[0]])]
    raise StargalError(
        f"{where}: object {ids[clash[0]]} is listed both as a star and as a galaxy (its sweeps disagree), "
        f"{np.unique(ids[clash]).size} such object(s) in all; {integrity.alignment_command(fid, paths)} --force lists them no more"
    )


def require_both_classes(paths: DataPaths, fs: FieldSet, counts: dict[str, dict]) -> None:
    """Raise StargalError when the training or validation split holds one class only (``class_counts`` of each
    split): a network trained on it calls everything that class, and its metrics read perfect. The usual cause is a
    run/camcol with one sweep catalog alone (the real 4510-4's star sweep has no galaxy sweep beside it)."""
    for split in SPLITS[:2]:
        n, stars = counts.get(split, {}).get("n", 0), counts.get(split, {}).get("stars", 0)
        if not n or 0 < stars < n:
            continue
        have, lack, kind = ("stars", "galaxy", "gal") if stars else ("galaxies", "star", "star")
        sweep = paths.catalog(fs.rerun, fs.run, fs.camcol, kind)
        fetch = integrity.download_command(
            sdss.catalog_relpath(fs.rerun, fs.run, fs.camcol, kind), paths, False, fs.fields
        )
        why = (
            f"{sweep} is not in the data folder, so the objects tables list {have} only: fetch it ({fetch}) and rerun "
            "01_alignment.py"
            if not sweep.exists()
            else "choose fields that hold both"
        )
        raise StargalError(
            f"the {split} split holds {n} {have} and no {lack}: a classifier cannot be trained or checked on one "
            f"class; {why} (predict.py --model pretrained classifies these fields without training)"
        )


def warn_one_class_test(counts: dict[str, dict]) -> None:
    """Warn when the test split holds one class only: its accuracy is then that class's recall, and its MCC and
    balanced accuracy say nothing about telling stars from galaxies (03 prints them all the same)."""
    n, stars = counts.get("test", {}).get("n", 0), counts.get("test", {}).get("stars", 0)
    if n and stars in (0, n):
        have, lack = ("stars", "galaxy") if stars else ("galaxies", "star")
        log.warning(
            "the test split holds %d %s and no %s: its scores measure one class only (MCC and balanced accuracy "
            "are not defined); choose test fields or a --test-region that hold both",
            n,
            have,
            lack,
        )


def class_counts(y: np.ndarray) -> dict:
    """A split's size and class balance, as dataset.json records them."""
    stars = int(np.count_nonzero(y == LABEL_STAR))
    return {
        "n": int(y.size),
        "stars": stars,
        "galaxies": int(y.size - stars),
        "star_fraction": round(stars / y.size, 4) if y.size else None,
    }


def split_report(objects: dict[str, np.ndarray], counts: dict, removed: dict) -> dict:
    """Per split counts, class ratio and r-magnitude (PSF) distribution, plus train-vs-other KS tests."""
    report: dict = {"counts": counts, "removed": removed, "r_psfmag": {}, "ks_vs_train": {}, "bins": MAG_BINS.tolist()}
    mags = {s: objects[s]["r_psfmag"][np.isfinite(objects[s]["r_psfmag"])].astype(np.float64) for s in objects}
    for s, m in mags.items():
        q = np.percentile(m, [5, 25, 50, 75, 95]).round(3).tolist() if m.size else [None] * 5
        report["r_psfmag"][s] = {
            "n": int(m.size),
            "p05": q[0], "p25": q[1], "median": q[2], "p75": q[3], "p95": q[4],
            "histogram": np.histogram(np.clip(m, MAG_BINS[0], MAG_BINS[-1]), MAG_BINS)[0].tolist(),
        }  # fmt: skip
    for s in ("val", "test"):
        if mags["train"].size and mags[s].size:
            report["ks_vs_train"][s] = ks_two_sample(mags["train"], mags[s])
    return report


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> dict:
    """Two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value (scipy.stats costs seconds to import)."""
    from scipy.special import kolmogorov

    a, b = np.sort(a), np.sort(b)
    both = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, both, side="right") / a.size
    cdf_b = np.searchsorted(b, both, side="right") / b.size
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    n_eff = a.size * b.size / (a.size + b.size)
    return {"statistic": round(d, 4), "pvalue": float(kolmogorov(d * np.sqrt(n_eff)))}


SPLIT_DESCRIPTION_KEYS = ("fields", "test_regions", "exclude_regions", "test_origin", "moved_to_test_by_region")


def split_description(record: dict) -> dict:
    """The keys of a dataset's record (dataset.json) that say how its splits were made (``describe_splits``): the
    split report keeps them beside its counts."""
    return {k: record[k] for k in SPLIT_DESCRIPTION_KEYS if k in record}


def describe_splits(record: dict) -> list[tuple[str, str]]:
    """(label, text) pairs on how a dataset's splits were made, from its record (02's summary, splits.md): the
    fields of each split and, with sky regions, what made up the test set and what left training and validation."""
    fields = record.get("fields") or {}
    lists = ", ".join(
        f"{splits.SPLIT_WORDS[s]} {' '.join(map(str, fields.get(s) or [])) or 'none'}" for s in ("train", "val", "test")
    )
    lines = [("fields", lists)]
    composition = splits.composition_of_test_set(record)
    if composition:
        n = ((record.get("counts") or {}).get("test") or {}).get("n")
        lines.append(("test set", (f"{n} objects, " if n is not None else "") + composition + " (--test-region)"))
    excluded = splits.exclusion_text(record)
    if excluded:
        lines.append(("excluded", f"{excluded} (--exclude-region)"))
    return lines


def split_report_markdown(name: str, report: dict) -> str:
    """splits.md: how the splits were made (fields, regions), counts, class ratio and r-magnitude quantiles per
    split, KS tests, removals by reason."""
    quantile_keys = ("p05", "p25", "median", "p75", "p95")
    header = ["split", "n", "stars", "galaxies", "star fraction", "r psfmag p05", "p25", "median", "p75", "p95"]
    header.append("KS vs train (p)")
    rows = []
    for s in SPLITS:
        c, m = report["counts"][s], report["r_psfmag"][s]
        ks = report["ks_vs_train"].get(s)
        ks_text = f"{ks['statistic']:.3f} ({ks['pvalue']:.2g})" if ks else "-"
        frac = "-" if c["star_fraction"] is None else f"{c['star_fraction']:.3f}"
        quantiles = ["-" if m[k] is None else f"{m[k]:.2f}" for k in quantile_keys]
        rows.append([s, c["n"], c["stars"], c["galaxies"], frac, *quantiles, ks_text])
    numeric = set(header[1:-1])
    lines = [f"# Splits of dataset {name}", ""]
    if report.get("splits"):
        record = {**report["splits"], "counts": report["counts"], "removed": report["removed"]}
        lines += [f"- {label}: {text}" for label, text in describe_splits(record)] + [""]
    lines += [markdown_table(header, rows, fmt=str, right=numeric).rstrip("\n")]
    lines += ["", "Removed rows by reason (see stargal/splits.py):", ""]
    lines += [f"- {reason}: {n}" for reason, n in report["removed"].items()]
    return "\n".join(lines) + "\n"


def _write_split_report_files(
    out: OutputSet,
    paths: DataPaths,
    name: str,
    objects: dict[str, np.ndarray],
    counts: dict,
    removed: dict,
    description: dict | None = None,
) -> dict:
    """splits.md and splits.png written into the output set ``out`` (of splits.json), not yet committed; returns
    the content of splits.json for ``out.commit``."""
    from ..plots.splits import plot_splits

    folder = paths.reports("splits", name)
    report = split_report(objects, counts, removed)
    if description:
        report["splits"] = description
    _, md_file, png_file = (folder / f for f in REPORT_FILES)
    write_text(out.path(md_file), split_report_markdown(name, report))
    plot_splits(out.path(png_file), objects, counts, MAG_BINS, title=name)
    return {"name": name, **report}
