#!/usr/bin/env python3
"""Benchmark stage 01's band alignment against ``reproject.reproject_exact`` on a real SDSS field.

Times, in one process, (a) stargal: read + decompress the five bz2 frames, align onto the r grid and write
the cube, and (b) the reference method: ``reproject_exact`` of every non-reference band onto the r grid (frames
already in memory). Prints the time ratio, per band the relative L2 difference and flux ratio over the common
footprint and the maximum deviation, and the peak memory of one worker aligning one field (a fresh process,
``resource.getrusage`` ru_maxrss). Needs the real sample (../shared/sdss-sample). The CPU may be shared with other
jobs: the CPU time of our run is printed beside its wall time.

    .venv/bin/python bench/bench_alignment.py [--field-dir DIR] [--repeat 3] [--bands ugiz]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from stargal import align, sdss
from stargal.config import BANDS
from stargal.paths import PROJECT_ROOT, DataPaths, FieldId
from stargal.stages.alignment import align_field, align_on_stars

DEFAULT_DIR = PROJECT_ROOT.parent / "shared" / "sdss-sample" / "008162-6-0080"


def link_field(field_dir: Path, root: Path) -> FieldId:
    """A data folder whose SAS tree links to the sample frames (no copies)."""
    info = sdss.parse_filename(next(field_dir.glob("frame-r-*.fits.bz2")).name)
    fid = FieldId(301, info["run"], info["camcol"], info["field"])
    paths = DataPaths(root)
    for b in BANDS:
        target = paths.frame(fid, b)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(field_dir / target.name)
    return fid


def ours_once(args: tuple[str, FieldId]) -> dict:
    """One field through stargal (read, align, write); run in a fresh worker to measure its peak memory."""
    root, fid = args
    t0, c0 = time.perf_counter(), time.process_time()
    align_field(DataPaths(Path(root)), fid)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--field-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of ours (the best and median are shown)")
    parser.add_argument("--bands", default="ugiz", help="bands to reproject with reproject_exact (slow: ~15 s each)")
    args = parser.parse_args()
    if not args.field_dir.is_dir():
        sys.exit(f"{args.field_dir}: real SDSS sample not found")
    from reproject import reproject_exact

    with tempfile.TemporaryDirectory() as tmp:
        fid = link_field(args.field_dir, Path(tmp))
        with ProcessPoolExecutor(1) as pool:  # fresh process: the peak memory of one worker aligning one field
            worker = pool.submit(ours_once, (tmp, fid)).result()
        runs = [ours_once((tmp, fid)) for _ in range(args.repeat)]
        from stargal.cube import read_cube

        cube = read_cube(DataPaths(Path(tmp)).cube(fid), mmap=False)
        walls, cpus = [r["wall"] for r in runs], [r["cpu"] for r in runs]
        print(
            f"field {fid}: stargal read+decompress+align+write  wall best {min(walls):.2f} s, median {np.median(walls):.2f} s; CPU best {min(cpus):.2f} s"
        )
        print(
            f"peak memory of one worker aligning one field (ru_maxrss, incl. interpreter and imports): {worker['maxrss_mb']:.0f} MB"
        )

        import bz2

        raw = [DataPaths(Path(tmp)).frame(fid, b).read_bytes() for b in BANDS]
        c0 = time.process_time()
        for blob in raw:
            bz2.decompress(blob)
        c_bz2 = time.process_time() - c0
        del raw
        t0, c0 = time.perf_counter(), time.process_time()
        frames = [sdss.read_frame(DataPaths(Path(tmp)).frame(fid, b)) for b in BANDS]
        t_read, c_read = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        result = align.align_bands([f.image for f in frames], [f.wcs for f in frames], BANDS.index("r"))
        t_align, c_align = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        registered, _, shifts = align_on_stars([f.image for f in frames], [f.wcs for f in frames], "r", fid)
        t_register = time.perf_counter() - t0
        print(
            f"  of which: read+decompress 5 frames {t_read:.2f} s wall / {c_read:.2f} s CPU (bare bz2.decompress "
            f"{c_bz2:.2f} s CPU), align 4 bands {t_align:.2f} s wall / {c_align:.2f} s CPU; alignment registered "
            f"on the stars (detection, offsets, aligning again where a band is off) {t_register:.2f} s wall"
        )
        assert np.array_equal(registered.cube, cube.data, equal_nan=True)  # what was timed is what stage 01 writes
        if not any(dx or dy for dx, dy in shifts):
            assert np.array_equal(result.cube, cube.data, equal_nan=True)

        ref = frames[BANDS.index("r")]
        total_exact = cpu_exact = 0.0
        print(
            f"{'band':>4} {'dx':>7} {'dy':>7} {'drift':>6} {'reproject s':>11} {'rel L2':>9} {'flux ratio-1':>12} {'max |dev|':>10} {'max |dev|/peak':>14} {'cover diff px':>13}"
        )
        for b in args.bands:
            i = BANDS.index(b)
            t0, c0 = time.perf_counter(), time.process_time()
            exact, footprint = reproject_exact((frames[i].image, frames[i].wcs), ref.wcs, shape_out=ref.image.shape)
            dt = time.perf_counter() - t0
            total_exact += dt
            cpu_exact += time.process_time() - c0
            ours = result.cube[i]
            common = np.isfinite(ours) & (footprint > 0.999)
            diff = ours[common].astype(np.float64) - exact[common]
            rel_l2 = np.sqrt(np.sum(diff**2) / np.sum(exact[common] ** 2))
            flux = ours[common].sum(dtype=np.float64) / exact[common].sum() - 1
            cover = int(np.count_nonzero(np.isfinite(ours) != (footprint > 1e-6)))
            dx, dy = result.maps[i].centre_offset
            peak = np.max(np.abs(exact[common]))
            print(
                f"{b:>4} {dx:7.3f} {dy:7.3f} {result.maps[i].drift:6.3f} {dt:11.1f} {rel_l2:9.2e} {flux:12.2e} {np.max(np.abs(diff)):10.2e} {np.max(np.abs(diff)) / peak:14.2e} {cover:13d}"
            )
        if not args.bands:
            return
        per_band_ours = t_align / 4
        per_band_exact = total_exact / len(args.bands)
        print(
            f"CPU time per band: reproject_exact {cpu_exact / len(args.bands):.1f} s, ours {c_align / 4:.3f} s: "
            f"{cpu_exact / c_align * 4 / len(args.bands):.0f}x less CPU"
        )
        print(
            f"reproject_exact {per_band_exact:.1f} s per band vs ours {per_band_ours:.3f} s per band (alignment only): "
            f"{per_band_exact / per_band_ours:.0f}x faster"
        )
        est_exact_field = t_read + 4 * per_band_exact
        print(
            f"whole field (read + 4 bands): reproject_exact ~{est_exact_field:.1f} s vs ours {min(walls):.2f} s: "
            f"{est_exact_field / min(walls):.0f}x faster"
        )


if __name__ == "__main__":
    main()
