#!/usr/bin/env python3
"""The PSF shape each field's stars imply: the simulator's PSF model (``sky_models``: a Moffat core plus
power-law wings) fitted to the encircled-energy curve of every real and simulated field's stacked bright
stars, for several core Moffat betas. Per field and band: the fit's rms residual for each beta (the beta that
fits best is the real core's shape) and the wing share at the simulator's beta; for simulated fields also the
share they were drawn with (from ``--seed``), which the fit recovers to 1-2 points.

    .venv/bin/python bench/psf_shape.py [--fidelity data/reports/fidelity/fidelity.json] [--seed 42]

Reads what ``bench/fidelity.py`` wrote; prints one Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np

from stargal import cli, simulate, sky_models
from stargal.config import BANDS
from stargal.fidelity import CORE_BETAS, EE_NORM_RADIUS, EE_RADII, fit_psf_shape
from stargal.fsio import read_json
from stargal.paths import PROJECT_ROOT
from stargal.tables import markdown_table

FIT_BANDS = "gri"  # u and z stacks are too noisy to tell the shapes apart


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = PROJECT_ROOT / "data" / "reports" / "fidelity" / "fidelity.json"
    parser.add_argument("--fidelity", default=str(default), help="fidelity.json of bench/fidelity.py")
    parser.add_argument("--seed", type=int, default=None, help="sky seed of the simulated fields (drawn shares)")
    parser.add_argument("--run", type=int, default=8162, help="run of the simulated fields")
    parser.add_argument("--camcol", type=int, default=6, help="camcol of the simulated fields")
    args = parser.parse_args(argv)
    record = read_json(args.fidelity)
    rows, wins = [], {"real": [], "simulated": []}
    for sky in ("real", "simulated"):
        for name, field in record[sky].items():
            drawn = None
            if sky == "simulated" and args.seed is not None:
                drawn = simulate.field_conditions(args.seed, args.run, args.camcol, int(name)).wing
            for band in FIT_BANDS:
                b = BANDS.index(band)
                ee = np.asarray(field["encircled_energy"][b], np.float64)
                fits = {beta: fit_psf_shape(ee, beta) for beta in CORE_BETAS}
                best = min(fits, key=lambda beta: fits[beta][0])
                wins[sky].append(best)
                share = fits[sky_models.PSF_CORE_BETA][1]
                rows.append(
                    [sky, name, band, f"{field['stellar_r50'][b]:.2f}",
                     *(f"{1000 * fits[beta][0]:.1f}" for beta in CORE_BETAS), f"{best:g}", f"{100 * share:.0f} %",
                     "-" if drawn is None else f"{100 * drawn[band]:.0f} %"]
                )  # fmt: skip
    columns = ["sky", "field", "band", "stellar r50 (px)", *(f"rms x1000, core beta {beta:g}" for beta in CORE_BETAS),
               "best beta", f"wing share (beta {sky_models.PSF_CORE_BETA:g})", "drawn share"]  # fmt: skip
    print(
        "The simulator's PSF model fitted to each field's stacked stars (encircled energy at "
        f"{', '.join(f'{r:g}' for r in EE_RADII)} px relative to {EE_NORM_RADIUS:g} px)\n"
    )
    print(markdown_table(columns, rows))
    for sky, best in wins.items():
        if best:
            counts = ", ".join(f"beta {beta:g}: {best.count(beta)}" for beta in CORE_BETAS)
            print(f"\n{sky}: best-fitting core beta over {len(best)} field-bands: {counts}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
