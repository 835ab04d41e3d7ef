"""Runner of bench/fidelity.py: the simulated sky against the real one, one figure per property.

Real fields come from a folder of SDSS frames (stage 00 from that folder, stage 01 aligns them, as the
real-sky evaluation does); simulated fields from a data folder's aligned cubes. Both are measured by
``stargal.fidelity``; the numbers go to ``paths.reports("fidelity")/fidelity.json`` and a figure per property.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import fidelity
from ..cube import read_cube
from ..errors import StargalError
from ..fsio import write_json
from ..paths import DataPaths, FieldId
from ..plots.fidelity import FIGURES
from .realsky import discover, prepare_field

log = logging.getLogger("stargal")


def measure(path: Path) -> dict:
    cube = read_cube(path)
    return fidelity.measure_cube(np.ascontiguousarray(np.asarray(cube.data, np.float32)), cube.bands, cube.header)


def run_fidelity(paths: DataPaths, sample: Path, sim_paths: DataPaths, sim_fields: list[FieldId]) -> dict:
    """Measure every real field of ``sample`` (prepared in ``paths.real_fields``, as real_sky.py does) and
    ``sim_fields`` of ``sim_paths``."""
    real = {}
    for field in discover(Path(sample)):
        prepare_field(paths.real_fields, field)
        log.info("fidelity: real field %s", field.fid)
        real[field.label] = measure(paths.real_fields.cube(field.fid))
    simulated = {}
    for fid in sim_fields:
        if not sim_paths.cube(fid).exists():
            raise StargalError(f"{sim_paths.cube(fid)}: simulated cube not found (run stages 00 and 01 first)")
        log.info("fidelity: simulated field %s", fid)
        simulated[str(fid.field)] = measure(sim_paths.cube(fid))
    measured = {"real": real, "simulated": simulated}
    out = paths.reports("fidelity")
    for name, plot in FIGURES.items():
        plot(out / name, measured)
    write_json(out / "fidelity.json", measured)
    return {"folder": out, "real": len(real), "simulated": len(simulated), "figures": list(FIGURES)}
