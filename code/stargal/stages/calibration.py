"""Calibration of the simulated sky against the real SDSS sample (bench/calibrate_simulation.py): measure
both the same way (``stargal.sky_calibration``) and write ``reports/simulation/calibration.json`` and the
``real_vs_simulated.png`` figure."""

from __future__ import annotations

import os
from pathlib import Path

from .. import sdss
from ..config import BANDS, FieldSet
from ..fsio import write_json
from ..paths import DataPaths, FieldId
from ..sky_calibration import REAL_FIELDS, compare, measure_frames, measure_real_sample


def run_calibration(
    sample_dir: str | os.PathLike, paths: DataPaths, fieldset: FieldSet, *, crop: int = 256, plot: bool = True
) -> dict:
    """Compare the simulated frames of ``fieldset`` in ``paths`` with the real sample frames.

    Writes ``paths.reports("simulation")/calibration.json`` and ``real_vs_simulated.png``; returns the numbers.
    """
    real, real_frames80 = measure_real_sample(str(Path(sample_dir).resolve()))
    sim = {}
    sim_frames = None
    for f in fieldset.fields:
        fid = FieldId(fieldset.rerun, fieldset.run, fieldset.camcol, f)
        frames = {b: sdss.read_frame(paths.frame(fid, b)) for b in BANDS}
        sim[str(f)] = measure_frames(frames)
        if sim_frames is None:
            sim_frames = frames
    summary = compare(real, sim)
    result = {"real": real, "simulated": sim, "summary": summary}
    out_dir = paths.reports("simulation")
    write_json(out_dir / "calibration.json", result)
    if plot:
        from ..plots.sky import plot_real_vs_simulated

        def crops(frames):
            img_r = frames["r"].image
            size = min(crop, img_r.shape[0], img_r.shape[1])
            r0, c0 = (img_r.shape[0] - size) // 2, (img_r.shape[1] - size) // 2
            return {b: frames[b].image[r0 : r0 + size, c0 : c0 + size] for b in ("g", "r", "i")}

        sigmas = {
            "real": {b: real[REAL_FIELDS[0][0]][b]["sigma"] for b in BANDS},
            "simulated": {b: sim[str(fieldset.fields[0])][b]["sigma"] for b in BANDS},
        }
        notes = {
            b: f'FWHM real {summary[b]["fwhm_real"][0]:.2f}-{summary[b]["fwhm_real"][1]:.2f}" sim {summary[b]["fwhm_simulated"][0]:.2f}-{summary[b]["fwhm_simulated"][1]:.2f}"'
            for b in BANDS
        }
        plot_real_vs_simulated(
            out_dir / "real_vs_simulated.png",
            crops(real_frames80),
            crops(sim_frames),
            sigmas,
            title=f"real 301/8162/6/80 vs simulated {fieldset.label}/{fieldset.fields[0]}",
            notes=notes,
        )
    return result
