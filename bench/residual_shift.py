#!/usr/bin/env python3
"""How the simulator's sky-subtraction residual moves faint objects' labels, against the real fields: one
simulated field (the real-sky tests' field 80) rendered with its residual scaled by each factor, aligned, and
measured by ``bench/inject_real.py``'s label shift (simulated objects injected; their types and model fluxes
measured on the field against independent noise).

    .venv/bin/python bench/residual_shift.py [--scales 1 0.5 0.25 0] [--seeds 8 11] [--draws 3]

Compare with ``bench/inject_real.py --data-dir DIR --label-shift`` on the real fields. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import inject_real
import numpy as np

from stargal import cli, sky_models
from stargal.config import FieldSet
from stargal.paths import DataPaths, FieldId
from stargal.stages.alignment import FieldTask, process_field
from stargal.stages.simulate import simulate_sky
from stargal.tables import markdown_table

FIELD = FieldSet(301, 8162, 6, (80,), (80,), (), ())
FIELD_ID = FieldId(301, 8162, 6, 80)
FIELD_EBV = 0.03  # the injected objects' reddening: the real 8162-6-80's, as in the inject bench's tests


def simulated_field(root: Path, seed: int, scale: float) -> inject_real.RealField:
    """Field 80 of ``seed``, its sky residual times ``scale``, simulated and aligned under ``root``."""
    residual = sky_models.sky_residual

    def scaled(rng: np.random.Generator, shape: tuple[int, int], modes: int = 8) -> np.ndarray:
        return residual(rng, shape, modes) * np.float32(scale)

    sky_models.sky_residual = scaled  # the simulator's own residual, scaled; restored below
    try:
        paths = DataPaths(root / "data")
        simulate_sky(paths, FIELD, seed=seed, workers=1)
    finally:
        sky_models.sky_residual = residual
    process_field(FieldTask(str(paths.root), FIELD_ID))
    return inject_real.load_field(paths, "8162-6-80", inject_real.PATCH_MARGIN, FIELD_EBV)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.5, 0.25, 0.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[8, 11], help="simulation seeds of field 80")
    parser.add_argument("--draws", type=int, default=3, help="injections per field")
    args = parser.parse_args(argv)
    if args.draws < 1 or min(args.scales) < 0:
        parser.error("--draws must be at least 1 and --scales not negative")
    header = ["seed", "residual scale", *inject_real.LABEL_SHIFT_COLUMNS]
    draws = range(inject_real.VAL_DRAW_START, inject_real.VAL_DRAW_START + args.draws)
    rows = []
    for seed in args.seeds:
        for scale in args.scales:
            with tempfile.TemporaryDirectory() as tmp:
                field = simulated_field(Path(tmp), seed, scale)
                rows.append([seed, f"{scale:g}", *inject_real.label_shift(field, draws, 42)])
            print(f"  seed {seed}, scale {scale:g}: done", file=sys.stderr, flush=True)
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
