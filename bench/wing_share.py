#!/usr/bin/env python3
"""The PSF wing share each field's stars imply: for every real and simulated field of a fidelity run, its
stellar half-light radius and encircled-energy ratio EE(3 px) / EE(8 px) in one band, and the wing share of the
simulator's PSF model (``sky_models.psf_components``: Moffat core plus wings) that has both. On simulated fields
in good seeing it recovers the wing share they were drawn with to about 1 point.

    .venv/bin/python bench/wing_share.py [--fidelity data/reports/fidelity/fidelity.json] [--band r]

Reads what ``bench/fidelity.py`` wrote; prints one Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import brentq

from stargal import cli, sky_models
from stargal.config import BANDS
from stargal.detection import SIZE_RADIUS
from stargal.fsio import read_json
from stargal.paths import PROJECT_ROOT
from stargal.tables import markdown_table

EE_RADII = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)  # stargal.fidelity's encircled-energy radii (pixels)
NORM_RADIUS = SIZE_RADIUS + 4.0  # fidelity normalises sizes and encircled energy to the flux within 12 px
WINGS = np.linspace(0.0, 0.4, 81)
# beyond this stellar r50 (px) EE3/EE8 depends too little on the wings: on simulated fields of r50 1.7-2.0 px the
# implied share is off by up to 10 points (within 1 point below 1.65 px)
MAX_R50 = 1.7


def encircled(radius: float, fwhm: float, wing: float) -> float:
    """Flux of the simulator's PSF (unit flux, pixel-integrated) within ``radius`` pixels."""
    amp, var = sky_models.psf_components(sky_models.PSF(fwhm, wing), 1)
    return float(np.sum(amp * (1 - np.exp(-(radius**2) / (2 * (var[0] + 1 / 12))))))


def half_light(fwhm: float, wing: float) -> float:
    total = encircled(NORM_RADIUS, fwhm, wing)
    return brentq(lambda r: encircled(r, fwhm, wing) - total / 2, 0.05, NORM_RADIUS)


def concentration(r50: float, wing: float) -> float:
    """EE(3 px) / EE(8 px) of the model PSF with this wing share whose half-light radius is ``r50``."""
    fwhm = brentq(lambda f: half_light(f, wing) - r50, 0.5, 20.0)
    return encircled(3.0, fwhm, wing) / encircled(8.0, fwhm, wing)


def implied_wing(r50: float, ratio: float) -> float | None:
    """The wing share whose model PSF of half-light radius ``r50`` has EE(3)/EE(8) = ``ratio``; None outside the
    model's range, or in poorer seeing (r50 > MAX_R50), where 3 px lies inside the core whatever the wings hold."""
    if r50 > MAX_R50:
        return None
    curve = np.array([concentration(r50, w) for w in WINGS])  # falls as the wings take more light
    if not curve[-1] <= ratio <= curve[0]:
        return None
    return float(np.interp(ratio, curve[::-1], WINGS[::-1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = PROJECT_ROOT / "data" / "reports" / "fidelity" / "fidelity.json"
    parser.add_argument("--fidelity", default=str(default), help="fidelity.json of bench/fidelity.py")
    parser.add_argument("--band", default="r", choices=list(BANDS))
    args = parser.parse_args(argv)
    record = read_json(args.fidelity)
    b = BANDS.index(args.band)
    three, eight = EE_RADII.index(3.0), EE_RADII.index(8.0)
    rows = []
    for sky in ("real", "simulated"):
        for name, field in sorted(record[sky].items(), key=lambda kv: kv[1]["stellar_r50"][b]):
            r50 = field["stellar_r50"][b]
            ee = field["encircled_energy"][b]
            ratio = ee[three] / ee[eight]
            wing = implied_wing(r50, ratio)
            rows.append([sky, name, f"{r50:.2f}", f"{ratio:.3f}", "-" if wing is None else f"{100 * wing:.0f} %"])
    print(
        f"{args.band} band: stellar r50, EE(3 px)/EE(8 px) and the wing share of the simulator's PSF model with both\n"
    )
    print(markdown_table(["sky", "field", "r50 (px)", "EE3/EE8", "implied wing share"], rows))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
