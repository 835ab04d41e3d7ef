#!/usr/bin/env python3
"""How a model fares on a field of worse seeing than it was trained on: the catalog check of every sample field
with a star sweep (4510-4-30 in ../shared/sdss-sample), on its cube blurred as on a night of worse seeing
(`stargal.psf.widen_psf`: each band convolved with a Gaussian, its pixel noise restored), the PSF measured
again on the blurred stars as stage 01 would, and predict.py's PSF-range note beside the scores. With
--noise-scales, also on the cube as under a brighter sky: white noise added to every band so that its pixel
noise grows that many times (the training sky's noise spans 1.35 times in r; the aligned bands' noise is a little
correlated by the resampling, the added noise is not).

    .venv/bin/python bench/worse_seeing.py [--model pretrained] [--scales 1 1.2 1.4 1.6 1.8] [--data-dir DIR]
    .venv/bin/python bench/worse_seeing.py --scales 1 --noise-scales 1.25 1.5 2    # a brighter sky
    .venv/bin/python bench/worse_seeing.py --simulated DIR --fields 380 409    # simulated fields, by their seeing

The real fields are prepared in DIR/real (as real_sky.py does). Prints one Markdown table. With --simulated, the
model instead classifies the training patches of those fields of a prepared simulated dataset in DIR (fields it
must not have been trained on), grouped by the field's r-band PSF: fields of naturally poor seeing, their labels
measured in their own seeing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stargal import cli
from stargal.paths import DEFAULT_SAMPLE_DIR
from stargal.tables import markdown_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pretrained", help="model name, folder or 'pretrained'")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 1.2, 1.4, 1.6, 1.8])
    parser.add_argument("--noise-scales", nargs="*", type=float, default=[], help="pixel noise times these (> 1)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the noise added back")
    parser.add_argument("--data-dir", default=None, help="data folder (the real fields go to DIR/real)")
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE_DIR))
    parser.add_argument("--simulated", default=None, help="data folder of a prepared simulated dataset")
    parser.add_argument("--fields", nargs=2, type=int, default=None, help="with --simulated: first and last field")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    if args.simulated:
        if not args.fields:
            parser.error("--simulated needs --fields FIRST LAST (fields the model was not trained on)")
        return simulated_by_seeing(args.simulated, args.model, *args.fields)
    from stargal.psf import measure_psf_map, widen_psf
    from stargal.stages.predict import load_bundle, psf_range_note, resolve_model_dir
    from stargal.stages.realsky import discover, evaluate_cube, field_inputs, prepare_field

    if any(s < 1 for s in args.scales):
        parser.error("--scales: every scale must be >= 1 (seeing can be made worse, not better)")
    if any(not s > 1 for s in args.noise_scales):
        parser.error("--noise-scales: every scale must be > 1 (noise can be added, not taken away)")
    paths = cli.data_paths(args)
    fields = [f for f in discover(Path(args.sample)) if f.star_catalog is not None]
    if not fields:
        raise SystemExit(f"worse_seeing: no field with a star sweep in {args.sample}")
    bundle = load_bundle(resolve_model_dir(paths, args.model), "auto")
    rows = []
    for field in fields:
        prepare_field(paths.real_fields, field)
        cube, data, measured = field_inputs(paths.real_fields, field.fid)
        for scale in args.scales:
            if scale == 1.0:
                blurred, pmap = data, measured
            else:
                blurred = widen_psf(data, measured.centre(), scale, np.random.default_rng(args.seed))
                pmap = measure_psf_map(blurred, cube.bands)
            result = evaluate_cube(field, bundle, cube, blurred, pmap)["result"]
            note = psf_range_note(bundle, pmap, f"{field.fid} x{scale:g}")
            rows.append(_row(field, scale, 1.0, pmap.centre()[cube.bands.index("r")], note, result["catalog"]))
        for noise in args.noise_scales:
            noisy = noisier(data, noise, np.random.default_rng(args.seed))
            pmap = measure_psf_map(noisy, cube.bands)
            result = evaluate_cube(field, bundle, cube, noisy, pmap)["result"]
            note = psf_range_note(bundle, pmap, f"{field.fid} noise x{noise:g}")
            rows.append(_row(field, 1.0, noise, pmap.centre()[cube.bands.index("r")], note, result["catalog"]))
    columns = ["field", "seeing scale", "noise scale", "r-band r50 (px)", "PSF range", "recall", "r < 21", "r 21-22",
               "r > 22", "non-catalog r < 21 called star", "two-sided MCC"]  # fmt: skip
    print(f"model {bundle.name}: the field blurred to worse seeing or made noisier, its PSF measured again\n")
    print(markdown_table(columns, rows))
    return 0


PSF_BINS = (1.3, 1.7, 2.0, 2.2, 2.5)  # r-band r50 of a field, pixels


def simulated_by_seeing(data_dir: str, model: str, first: int, last: int) -> int:
    from sklearn.metrics import matthews_corrcoef

    from stargal.dataset import load_dataset, resolve_dataset
    from stargal.model import predict
    from stargal.paths import DataPaths
    from stargal.stages.predict import load_bundle, resolve_model_dir
    from stargal.tables import read_table

    paths = DataPaths(Path(data_dir))
    name = resolve_dataset(paths, None)
    train = load_dataset(paths, name, ("train",))["train"]
    field = read_table(paths.split_objects(name, "train"), np.dtype([("cube_field", np.int64)]))["cube_field"]
    take = np.flatnonzero((field >= first) & (field <= last))
    if not len(take):
        raise SystemExit(f"worse_seeing: no training patch of fields {first}-{last} in dataset {name}")
    bundle = load_bundle(resolve_model_dir(paths, model))
    called = predict(bundle.model, train["x"][take], train["psf"][take], tta=True) >= bundle.threshold
    star, r, field = train["y"][take] == 1, train["mag"][take], field[take]
    r_band = bundle.bands.index("r")
    field_psf = {f: np.median(train["psf"][take][field == f, r_band]) for f in np.unique(field)}
    rows = []
    for lo, hi in zip(PSF_BINS[:-1], PSF_BINS[1:], strict=True):
        chosen = [f for f, v in field_psf.items() if lo <= v < hi]
        sel = np.isin(field, chosen)
        faint, bright_gal = sel & star & (r > 22), sel & ~star & (r < 21)
        rows.append([
            f"{lo:.1f}-{hi:.1f}", len(chosen), _share(called, sel & star), _share(called, faint),
            _share(called, bright_gal), f"{matthews_corrcoef(star[sel], called[sel]):.3f}" if sel.any() else "-",
        ])  # fmt: skip
    print(f"model {bundle.name} on fields {first}-{last} of dataset {name} ({len(take):,} patches), by seeing\n")
    columns = ["field r-band r50 (px)", "fields", "star recall", "r > 22", "galaxies r < 21 called star", "MCC"]
    print(markdown_table(columns, rows))
    return 0


def noisier(data: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A cube [bands, rows, cols] whose every band's pixel noise is ``scale`` times larger: white Gaussian noise
    of sqrt(scale^2 - 1) times the band's robust pixel scatter added; pixels without data stay NaN. float32."""
    from stargal.psf import pixel_noise

    out = np.empty(data.shape, np.float32)
    for b, band in enumerate(np.asarray(data, np.float32)):
        sky = np.isfinite(band)
        extra = pixel_noise(band[sky]) * np.sqrt(scale**2 - 1.0)
        out[b] = np.where(sky, band + rng.normal(0.0, extra, band.shape), np.nan)
    return out


def _share(called: np.ndarray, among: np.ndarray) -> str:
    from stargal.realsky import fraction
    from stargal.stages.realsky import percent_cell

    return percent_cell(fraction(called, among))


def _row(field, scale: float, noise: float, r50_r: float, note: str, catalog: dict) -> list:
    from stargal.stages.realsky import percent_cell

    recall = catalog["recall"]
    return [
        field.label,
        f"{scale:.2f}",
        f"{noise:.2f}",
        f"{r50_r:.2f}",
        note,
        percent_cell(recall["overall"]),
        *(percent_cell(b) for b in recall["by_r"]),
        percent_cell(catalog["bright_non_catalog"]),
        f"{catalog['two_sided']['mcc']:.3f}",
    ]


if __name__ == "__main__":
    cli.run_main(main)
