"""Stage 00 with ``--source simulated``: render the simulated sky field by field (``stargal.simulate``) and
write it in the SDSS formats (``stargal.sim_formats``) where a download would put the real files: frames, irg
jpegs, calibObj sweeps, plus the simulation's truth table and per-frame catalog measurements.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import sdss, sim_formats, simulate
from ..config import BANDS, DEFAULT_SEEING, FRAME_SHAPE, OBJC_TYPE_GALAXY, OBJC_TYPE_STAR, SEED, SEEING_DRAWS, FieldSet
from ..errors import StargalError
from ..fsio import load_npy, save_npy, write_bytes
from ..parallel import map_tasks
from ..paths import DataPaths, FieldId
from ..tables import read_table, write_table

log = logging.getLogger("stargal")

# Peak memory of rendering and writing one field: measured 136 bytes a pixel for the rendering alone and 172 with
# the frames' compression (1000 x 1400 px), taken as 200 for safety, plus the process's own.
RENDER_BYTES_PER_PIXEL = 200
RENDER_BYTES_BASE = 200 << 20


def render_memory(shape: tuple[int, int]) -> int:
    """Bytes one process needs to render and write a field of frames of ``shape`` (an estimate, on the high side)."""
    return RENDER_BYTES_BASE + RENDER_BYTES_PER_PIXEL * int(shape[0]) * int(shape[1])


def available_memory() -> int | None:
    """Bytes this machine (and its cgroup, in a container) can still give: MemAvailable of /proc/meminfo, or the
    free physical pages; None when neither can be read."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    try:  # a container's limit (cgroup v2) is where its out-of-memory killer strikes
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def check_shape_fits(shape: tuple[int, int], option: str = "--sim-shape") -> None:
    """Refuse, in one line, a frame shape whose rendering would not fit in the memory this machine has available
    (the estimate of ``render_memory`` against ``available_memory``), before anything is written."""
    need, avail = render_memory(shape), available_memory()
    if avail is not None and need > avail:
        raise StargalError(
            f"{option} {shape[0]} {shape[1]}: rendering a field of {shape[0] * shape[1]:,} pixels needs about "
            f"{need / 2**30:.1f} GiB of memory (estimated at {RENDER_BYTES_PER_PIXEL} bytes a pixel), more than the "
            f"{avail / 2**30:.1f} GiB this machine has available: choose a smaller shape (real SDSS frames: 1489 2048)"
        )


def _workers_that_fit(workers: int, shape: tuple[int, int]) -> int:
    """``workers``, fewer if that many fields rendered at once would not fit in the available memory."""
    avail = available_memory()
    if avail is None or workers <= 1:
        return workers
    fit = max(1, min(workers, avail // render_memory(shape)))
    if fit < workers:
        log.info("rendering %d field(s) at a time, not %d: more would not fit in the available memory", fit, workers)
    return fit


def simulate_field(task: simulate.FieldTask) -> dict:
    """Render one field and write its five frames and irg jpeg; returns counts and timing."""
    start = time.perf_counter()
    paths = DataPaths.at(task.root)
    fid = FieldId(task.rerun, task.run, task.camcol, task.field)
    out = simulate.render_field(task)
    save_npy(paths.sim_measurements(fid), out["measured"])

    def write(b: str) -> None:
        tai = simulate.frame_tai(task.field, b, task.shape)
        header = sim_formats.frame_header(fid, b, out["wcs"][b], out["cond"].nmgy[b], tai)
        extra_hdus = sim_formats.calibration_hdus(*out["calibration"][b], task.shape)
        sdss.write_frame(paths.frame(fid, b), out["images"][b], header, extra_hdus=extra_hdus)

    # bz2 compression dominates and releases the GIL: compress the bands on two threads
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write, BANDS))
    write_bytes(paths.irg_jpeg(fid), sim_formats.irg_jpeg_bytes(out["images"], out["cond"].offsets))
    return {"field": task.field, "objects_rendered": out["n_objects"], "seconds": time.perf_counter() - start}


def _existing_simulated_fields(paths: DataPaths, fs: FieldSet) -> set[int]:
    """Fields of ``fs``'s run/camcol that already have an r frame in the data folder."""
    folder = paths.frames_dir(fs.rerun, fs.run, fs.camcol)
    found = set()
    for p in folder.glob("frame-r-*.fits.bz2") if folder.is_dir() else []:
        info = sdss.parse_filename(p.name)
        if info and info["run"] == fs.run and info["camcol"] == fs.camcol:
            found.add(info["field"])
    return found


def _intact(path: Path, read) -> bool:
    """Whether ``read`` takes ``path`` (``damaged_simulation``: stage 00 draws a damaged one again)."""
    try:
        read(path)
    except (OSError, ValueError, StargalError):
        return False
    return True


def damaged_simulation(paths: DataPaths, fs: FieldSet, frames_only: bool) -> tuple[set[int], bool]:
    """(fields whose measured catalog fluxes are there but unreadable, whether the truth table is) of a simulated
    sky: files no record seals, which a later field's catalogs are drawn from."""
    fields = {
        f
        for f in fs.fields
        if (path := paths.sim_measurements(FieldId(fs.rerun, fs.run, fs.camcol, f))).exists()
        and not _intact(path, _load_measurements)
    }
    truth = paths.sim_truth(fs.rerun, fs.run, fs.camcol)
    return fields, not frames_only and truth.exists() and not _intact(truth, _read_truth)


def _read_truth(path: Path) -> np.ndarray:
    return read_table(path, sim_formats.TRUTH_DTYPE)


def _load_measurements(path: Path) -> np.ndarray:
    """A frame's measured catalog fluxes, as ``simulate_field`` saved them."""
    rows = load_npy(path)
    if rows.dtype != sim_formats.MEASURED_DTYPE:
        raise StargalError(f"{path}: not a simulation measurement table (rerun stage 00 with --force)")
    return rows


def write_catalogs(
    paths: DataPaths,
    fs: FieldSet,
    fields: list[int],
    *,
    seed: int,
    shape: tuple[int, int],
    seeing: str = DEFAULT_SEEING,
) -> dict:
    """calibObj gal/star sweeps and the truth table for the cells of ``fields`` and their neighbours."""
    cell_fields = sorted({f + d for f in fields for d in (-1, 0, 1)})
    measured_by_frame = {}
    for f in fields:
        path = paths.sim_measurements(FieldId(fs.rerun, fs.run, fs.camcol, f))
        if path.exists():
            measured_by_frame[f] = _load_measurements(path)
    cells = []
    for f in cell_fields:
        n = len(simulate.cell_truth(seed, fs.run, fs.camcol, f, shape, seeing).pop)
        measured = simulate.cell_measurements(measured_by_frame, f, n)
        cells.append(simulate.make_cell(seed, fs.run, fs.camcol, f, shape, measured, seeing))
    header = fits.Header()
    header["SIMULAT"] = (True, sim_formats.SIMULAT_COMMENT)
    counts = {}
    for kind in sdss.CATALOG_KINDS:
        rows = simulate.catalog_rows(cells, kind, fs.run, fs.camcol, shape, seed, seeing)
        cols = sim_formats.calibobj_columns(rows, fs.rerun, fs.run, fs.camcol)
        sdss.write_catalog(paths.catalog(fs.rerun, fs.run, fs.camcol, kind), cols, header=header)
        counts[kind] = len(cols["ID"])
    write_table(paths.sim_truth(fs.rerun, fs.run, fs.camcol), sim_formats.truth_table(cells))
    per_field = {}
    for c in cells:
        per_field[c.field] = {
            "stars": int((c.objc_type == OBJC_TYPE_STAR).sum()),
            "galaxies": int((c.objc_type == OBJC_TYPE_GALAXY).sum()),
            "true_stars": int((c.catalogued & c.pop["star"]).sum()),
            "uncatalogued": int((~c.catalogued).sum()),
        }
    return {"catalog_rows": counts, "cells": per_field}


def simulate_sky(
    paths: DataPaths,
    fieldset: FieldSet,
    *,
    seed: int = SEED,
    shape: tuple[int, int] = FRAME_SHAPE,
    seeing: str = DEFAULT_SEEING,
    frames_only: bool = False,
    force: bool = False,
    catalogs: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
    on_field: Callable[[dict], None] | None = None,
) -> dict:
    """Write the simulated equivalent of an SDSS download of ``fieldset`` into ``paths``; returns a summary.

    ``seeing``: how each field's seeing is drawn (``SEEING_DRAWS``). Fields are rendered in parallel on
    ``workers`` local processes or, given ``scheduler``, on that Dask cluster (whose workers must share
    ``paths``' folder); the catalogs are written here. Files are identical. ``force``: render every field again;
    ``catalogs``: write the catalogs again even where they exist (a damaged one). ``on_field(result)`` runs here as
    each field's files are written (stage 00 records them then, so an interrupted run keeps them).
    """
    start = time.perf_counter()
    shape = (int(shape[0]), int(shape[1]))
    if shape[0] < 64 or shape[1] < 64:
        raise StargalError(f"shape {shape}: simulated frames need at least 64 x 64 pixels")
    if not fieldset.fields:
        raise StargalError("fields: no fields to simulate")
    if seeing not in SEEING_DRAWS:
        raise StargalError(f"seeing {seeing!r}: one of {', '.join(SEEING_DRAWS)}")
    if not scheduler:  # a cluster's workers have their own memory
        check_shape_fits(shape, "shape")
    fields = sorted(set(fieldset.fields))
    todo = []
    for f in fields:
        fid = FieldId(fieldset.rerun, fieldset.run, fieldset.camcol, f)
        outputs = [paths.frame(fid, b) for b in BANDS] + [paths.irg_jpeg(fid), paths.sim_measurements(fid)]
        if force or not all(p.exists() for p in outputs):
            todo.append(
                simulate.FieldTask(
                    str(paths.root), fieldset.rerun, fieldset.run, fieldset.camcol, f, seed, shape, seeing
                )
            )

    def done(_index: int, result: dict) -> dict:
        if on_field is not None:
            on_field(result)
        return result

    if not scheduler:
        workers = _workers_that_fit(min(workers, len(todo)), shape)
    results = map_tasks(
        simulate_field, todo, workers=workers, scheduler=scheduler, description="simulating fields", on_result=done
    )
    summary: dict = {
        "fields": fields,
        "simulated_fields": [r["field"] for r in results],
        "skipped_fields": [f for f in fields if f not in {r["field"] for r in results}],
        "field_seconds": {r["field"]: round(r["seconds"], 2) for r in results},
        "files_written": 7 * len(results),
    }
    if not frames_only:
        cat_paths = [paths.catalog(fieldset.rerun, fieldset.run, fieldset.camcol, k) for k in sdss.CATALOG_KINDS]
        truth = paths.sim_truth(fieldset.rerun, fieldset.run, fieldset.camcol)
        if force or catalogs or results or not all(p.exists() for p in [*cat_paths, truth]):
            all_fields = sorted(set(fields) | _existing_simulated_fields(paths, fieldset))
            cat = write_catalogs(paths, fieldset, all_fields, seed=seed, shape=shape, seeing=seeing)
            summary["catalog_rows"] = cat["catalog_rows"]
            summary["counts"] = {f: cat["cells"][f] for f in fields}
            summary["files_written"] += 3
    summary["seconds"] = round(time.perf_counter() - start, 2)
    log.info("simulated %d field(s) of %s in %.1f s", len(results), fieldset.label, summary["seconds"])
    return summary
