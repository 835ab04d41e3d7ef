#!/usr/bin/env python3
"""Catalogued objects against predict.py's source check: every catalogued object of aligned fields, given as a
position, passes the check (``--min-snr``) by S/N alone (``presence.detection_snr``) or with the response's
curvature too (``presence.shows_source``)? Counted per r magnitude and class; the objects only the curvature
refuses are listed with their nearest brighter catalogued neighbour, and how often a model, made to classify
every object (``--min-snr 0``), gives them the catalog's class, against the other objects as faint.

    bench/catalog_presence.py --data-dir DIR [--fields 80 103 ...] [--model pretrained]

DIR holds the fields aligned with their sweeps (by default the simulated reference sky's ten:
``00_download.py --source simulated`` and ``01_alignment.py``); it is only read. Prints two Markdown tables.
"""

from __future__ import annotations

import numpy as np
from blank_sky import model_and_fields  # bench/ is on the path: it holds the script being run

from stargal import cli

R_BINS = ((-np.inf, 20.0), (20.0, 21.0), (21.0, 22.0), (22.0, 23.0), (23.0, np.inf))


def field_outcomes(paths, fid, bundle) -> dict[str, np.ndarray]:
    """Each catalogued object of ``fid``: r, class (True: star), passes by S/N, passes with the curvature, its
    nearest brighter catalogued neighbour's distance (pixels) and r, and whether ``bundle`` classifies it as the
    catalog does when made to classify every position."""
    from stargal import patches, presence
    from stargal.stages.realsky import classify_positions, field_inputs
    from stargal.tables import read_table

    cube, data, pmap = field_inputs(paths, fid)  # seals checked, files only read
    objects = read_table(paths.objects(fid))
    x, y = np.asarray(objects["x"], np.float64), np.asarray(objects["y"], np.float64)
    r = np.asarray(objects["r_psfmag"], np.float64)
    local = presence.local_background_subtracted(data)  # as predict.py checks
    noise = presence.filter_noise(local, pmap.at)
    rows, cols = patches.pixel_centres(x, y)
    inside = patches.inside_frame(rows, cols, 1, data.shape[1:])
    rows, cols = np.where(inside, rows, 0), np.where(inside, cols, 0)
    r50 = pmap.at(cols, rows)
    faint, off_peak = presence.source_refusals(local, rows, cols, r50, noise, presence.MIN_SNR)  # S/N computed once
    distance = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    distance[~(r[None] < r[:, None])] = np.inf  # brighter ones only
    nearest = distance.argmin(axis=1)
    star = np.asarray(objects["label"]) == 1
    pred = classify_positions(bundle, data, cube.wcs, objects["ra"], objects["dec"], pmap)  # every position
    right = np.where(pred.status == "ok", (pred.label == "star") == star, False)
    return {
        "r": r[inside],
        "star": star[inside],
        "classified": (pred.status == "ok")[inside],
        "right": right[inside],
        "snr": ~faint[inside],
        "shown": ~(faint | off_peak)[inside],
        "neighbour_px": distance[np.arange(len(r)), nearest][inside],
        "neighbour_r": r[nearest][inside],
        "field": np.full(int(inside.sum()), fid.field),
    }


def share_at_same_r(right: np.ndarray, r: np.ndarray, refused: np.ndarray, others: np.ndarray) -> float | None:
    """The share of ``others`` whose class is right, per R_BINS range weighted as the ``refused`` ones' r (the same
    magnitudes); a range without others has no share and is left out of the weighting; None when none is left."""
    weights, shares = [], []
    for lo, hi in R_BINS:
        in_range = (r >= lo) & (r < hi)
        alike = others & in_range
        if alike.any():
            weights.append(int((in_range & refused).sum()))
            shares.append(float(right[alike].mean()))
    return sum(w * a for w, a in zip(weights, shares, strict=True)) / sum(weights) if sum(weights) else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def main(argv=None) -> int:
    from stargal.tables import markdown_table

    paths, bundle, fids = model_and_fields(__doc__.split("\n\n")[0], argv)
    fields = [fid.field for fid in fids]
    parts = [field_outcomes(paths, fid, bundle) for fid in fids]
    d = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    rows = []
    for lo, hi in R_BINS:
        span = f"r < {hi:g}" if lo == -np.inf else f"r > {lo:g}" if hi == np.inf else f"r {lo:g}-{hi:g}"
        for name, kind in (("stars", d["star"]), ("galaxies", ~d["star"])):
            sel = kind & (d["r"] >= lo) & (d["r"] < hi)
            n = int(sel.sum())
            rows.append([span, name, n, int((sel & ~d["snr"]).sum()), int((sel & ~d["shown"]).sum())])
    print(f"fields {' '.join(map(str, fields))}: {len(d['r'])} catalogued objects inside the frames\n")
    print(markdown_table(["r", "class", "objects", "refused by S/N", "refused by S/N + curvature"], rows))
    only = np.flatnonzero(d["snr"] & ~d["shown"])
    listed = [
        [
            int(d["field"][i]),
            f"{d['r'][i]:.2f}",
            "star" if d["star"][i] else "galaxy",
            f"{d['neighbour_px'][i]:.1f}",
            f"{d['neighbour_r'][i]:.2f}",
        ]
        for i in only[np.argsort(d["r"][only])]
    ]
    refused = d["classified"] & d["snr"] & ~d["shown"]
    others = d["classified"] & d["shown"]
    matched = share_at_same_r(d["right"], d["r"], refused, others)
    print(f"\nrefused by the curvature alone: {len(only)}; model {bundle.name}, made to classify every object:")
    print(
        f"  the catalog's class for {int(d['right'][refused].sum())} of the {int(refused.sum())} refused "
        f"({_percent(d['right'][refused].mean() if refused.any() else None)}); for {_percent(matched)} of the "
        "others, at the same r"
    )
    if listed:
        print(markdown_table(["field", "r", "class", "nearest brighter (px)", "its r"], listed))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
