#!/usr/bin/env python3
"""Real-data check: a model trained only on the simulated sky, applied to the real SDSS field 4510-4-30.

Runs stage 00 (``--source SAMPLE --frames-only``) and stage 01 on the real frames of the sample folder,
then predicts at the RA/Dec of the field's real catalog stars (calibObj-004510-4-star, FIELD == 30) and at
every other source detected in the frame (peaks above 5 sigma in the smoothed r band, farther than 1"
from every catalog star). Reports the fraction of catalog stars classified as stars (target >= 90 %)
and the p_star distribution of the other sources, as JSON, Markdown and a histogram.

    bench/real_check.py --model data/models/NAME [--sample ../shared/sdss-sample] [--work /tmp/real]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from stargal import cli
from stargal.cube import read_cube
from stargal.errors import StargalError
from stargal.fsio import write_json, write_text
from stargal.geometry import near_any
from stargal.normalise import MAD_TO_SIGMA
from stargal.paths import PROJECT_ROOT, DataPaths, FieldId

FIELD = FieldId(301, 4510, 4, 30)
FIELD_DIR = "004510-4-0030"
STAR_CATALOG = "calibObj-004510-4-star.fits.gz"
TARGET_STAR_FRACTION = 0.90
MATCH_ARCSEC = 1.0
MAG_BINS = (-np.inf, 14.0, 16.0, 18.0, 19.0, 20.0, 21.0, 22.0, 25.0, np.inf)


def prepare_field(sample: Path, paths: DataPaths, quiet: bool = True) -> Path:
    """Stages 00 and 01 on the real frames (idempotent: both skip current outputs); returns the cube path."""
    common = ["--data-dir", str(paths.root), "--rerun", str(FIELD.rerun), "--run", str(FIELD.run)]
    common += ["--camcol", str(FIELD.camcol), "--fields", str(FIELD.field)] + (["-q"] if quiet else [])
    for script, extra in (
        ("00_download.py", ["--source", str(sample), "--frames-only"]),
        ("01_alignment.py", ["--workers", "1", "--no-reports"]),
    ):
        done = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "code" / script), *common, *extra], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise StargalError(f"{script} failed on the sample field: {done.stderr.strip()[-500:]}")
    return paths.cube(FIELD)


def catalog_stars(sample: Path) -> np.ndarray:
    """The real catalog stars listed under field 30 (RA, DEC, r PSF magnitude)."""
    from stargal.sdss import magnitude, read_catalog

    cat = read_catalog(sample / FIELD_DIR / STAR_CATALOG)
    cat = cat[cat["FIELD"] == FIELD.field]
    out = np.empty(len(cat), dtype=[("ra", "f8"), ("dec", "f8"), ("r_psfmag", "f4")])
    out["ra"], out["dec"] = cat["RA"], cat["DEC"]
    out["r_psfmag"] = magnitude(cat["PSFFLUX"][:, 2])
    return out


def detect_sources(
    image: np.ndarray, *, nsigma: float = 5.0, smooth: float = 1.0, min_separation: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) 0-based of local maxima above ``nsigma`` noise in the Gaussian-smoothed image (NaN ignored).

    The noise is the robust sigma (MAD_TO_SIGMA x MAD) of the smoothed image itself, so the threshold is in
    units of the smoothed background's noise.
    """
    from scipy import ndimage

    img = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
    sm = ndimage.gaussian_filter(img, smooth)
    valid = np.isfinite(image)
    vals = sm[valid]
    med = np.median(vals)
    sigma = MAD_TO_SIGMA * np.median(np.abs(vals - med))
    peaks = (sm == ndimage.maximum_filter(sm, size=2 * min_separation + 1)) & (sm > med + nsigma * sigma) & valid
    rows, cols = np.nonzero(peaks)
    return cols.astype(np.float64), rows.astype(np.float64)


def other_sources(cube_path: Path, stars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec of detected r-band sources farther than MATCH_ARCSEC from every catalog star."""
    cube = read_cube(cube_path)
    x, y = detect_sources(np.asarray(cube.data[cube.band_index("r")], np.float32))
    ra, dec = cube.wcs.celestial.wcs_pix2world(x, y, 0)
    near = near_any(ra, dec, stars["ra"], stars["dec"], MATCH_ARCSEC)
    ra, dec = ra[~near], dec[~near]
    return np.asarray(ra), np.asarray(dec)


def summarise(star_pred, star_mag: np.ndarray, other_pred, threshold: float) -> dict:
    """Fraction of catalog stars called star (over classified ones), per magnitude, and the others' p_star spread."""
    ok = star_pred.status == "ok"
    is_star = star_pred.label == "star"
    per_mag = []
    for lo, hi in zip(MAG_BINS[:-1], MAG_BINS[1:], strict=True):
        sel = ok & (star_mag >= lo) & (star_mag < hi)
        n = int(sel.sum())
        edges = [float(e) if np.isfinite(e) else None for e in (lo, hi)]  # JSON has no infinity
        per_mag.append({"r_psfmag": edges, "n": n, "star_fraction": float(is_star[sel].mean()) if n else None})
    sel = ok & ~np.isfinite(star_mag)  # no positive r flux: listed for their u or z light
    per_mag.append(
        {"r_psfmag": None, "n": int(sel.sum()), "star_fraction": float(is_star[sel].mean()) if sel.any() else None}
    )
    o_ok = other_pred.status == "ok"
    p = other_pred.p_star[o_ok].astype(np.float64)
    hist, edges = np.histogram(p, bins=10, range=(0, 1))
    return {
        "field": str(FIELD),
        "threshold": threshold,
        "catalog_stars": {
            "n": len(star_pred),
            "status": star_pred.counts(),
            "classified_as_star": int((ok & is_star).sum()),
            "star_fraction": float(is_star[ok].mean()) if ok.any() else None,
            "target": TARGET_STAR_FRACTION,
            "median_p_star": float(np.median(star_pred.p_star[ok])) if ok.any() else None,
            "by_r_psfmag": per_mag,
        },
        "other_sources": {
            "n": len(other_pred),
            "status": other_pred.counts(),
            "star_fraction": float((p >= threshold).mean()) if p.size else None,
            "p_star_quantiles": {q: float(np.quantile(p, float(q))) for q in ("0.1", "0.25", "0.5", "0.75", "0.9")}
            if p.size
            else {},
            "p_star_histogram": {"edges": edges.tolist(), "counts": hist.tolist()},
        },
    }


def _bin_label(edges) -> str:
    if edges is None:
        return "no r flux"
    lo, hi = edges
    if lo is None:
        return f"< {hi:.0f}"
    return f">= {lo:.0f}" if hi is None else f"{lo:.0f}-{hi:.0f}"


def markdown(s: dict, model: str) -> str:
    c, o = s["catalog_stars"], s["other_sources"]
    frac = c["star_fraction"]
    lines = [
        f"# Real-data check on field {s['field']} (model {model})",
        "",
        f"- Catalog stars (FIELD 30): {c['n']}; classified {c['status']['ok']} (others: {c['status']}).",
        f"- Recognised as stars: {c['classified_as_star']} = **{frac:.1%}** (target {c['target']:.0%}); "
        f"median p_star {c['median_p_star']:.3f}."
        if frac is not None
        else "- No catalog star could be classified.",
        f'- Other detected sources (>5 sigma in smoothed r, > {MATCH_ARCSEC}" from catalog stars): {o["n"]}, '
        f"classified {o['status']['ok']}; called star: {o['star_fraction']:.1%}."
        if o["star_fraction"] is not None
        else "",
        "",
        "| r PSF mag | stars | called star |",
        "| --- | --- | --- |",
    ]
    for b in c["by_r_psfmag"]:
        f = "" if b["star_fraction"] is None else f"{b['star_fraction']:.1%}"
        lines.append(f"| {_bin_label(b['r_psfmag'])} | {b['n']} | {f} |")
    lines += [
        "",
        "p_star of the other sources (deciles bins 0-1): " + " ".join(map(str, o["p_star_histogram"]["counts"])),
        "",
    ]
    return "\n".join(lines)


def plot(star_p: np.ndarray, other_p: np.ndarray, threshold: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stargal.fsio import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 21)
    ax.hist(star_p[np.isfinite(star_p)], bins=bins, alpha=0.6, label="catalog stars", density=True)
    ax.hist(other_p[np.isfinite(other_p)], bins=bins, alpha=0.6, label="other detected sources", density=True)
    ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set_xlabel("p_star")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_check(sample: Path, model: str, work: Path, out: Path | None = None) -> dict:
    """The whole check; returns the summary (also written to OUT/real_check.{json,md,png})."""
    from stargal.stages.predict import load_bundle, resolve_model_dir, run_predict

    paths = DataPaths.at(work)
    bundle = load_bundle(resolve_model_dir(paths, model))
    cube = prepare_field(sample, paths)
    stars = catalog_stars(sample)
    o_ra, o_dec = other_sources(cube, stars)
    out = Path(out) if out else paths.reports("real_check", bundle.name)
    _, star_pred = run_predict(
        paths, ra=stars["ra"], dec=stars["dec"], cube_path=str(cube), bundle=bundle, out=str(out / "catalog_stars.csv")
    )
    _, other_pred = run_predict(
        paths, ra=o_ra, dec=o_dec, cube_path=str(cube), bundle=bundle, out=str(out / "other_sources.csv")
    )
    summary = summarise(star_pred, stars["r_psfmag"], other_pred, bundle.threshold)
    summary["model"] = str(bundle.directory)
    summary["model_dataset"] = bundle.meta.get("dataset")
    write_json(out / "real_check.json", summary)
    write_text(out / "real_check.md", markdown(summary, bundle.name))
    plot(
        star_pred.p_star,
        other_pred.p_star,
        bundle.threshold,
        out / "real_check.png",
        f"field {FIELD}, model {bundle.name}",
    )
    summary["folder"] = str(out)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder, .keras file, or name in --work's models/")
    parser.add_argument(
        "--sample", default=str(PROJECT_ROOT.parent / "shared" / "sdss-sample"), help="real SDSS sample folder"
    )
    parser.add_argument(
        "--work", default=str(PROJECT_ROOT / "data"), help="data folder for the real field's files and reports"
    )
    parser.add_argument("--out", default=None, help="report folder (default: WORK/reports/real_check/MODEL)")
    args = parser.parse_args(argv)
    cli.setup_logging(True)
    sample = Path(args.sample)
    if not (sample / FIELD_DIR / STAR_CATALOG).exists():
        raise StargalError(f"{sample}: not the real SDSS sample folder (no {FIELD_DIR}/{STAR_CATALOG})")
    s = run_check(sample, args.model, Path(args.work), Path(args.out) if args.out else None)
    c, o = s["catalog_stars"], s["other_sources"]
    nan = float("nan")
    print(
        f"{c['classified_as_star']}/{c['status']['ok']} classified catalog stars called star "
        f"({c['star_fraction'] if c['star_fraction'] is not None else nan:.1%}, target {TARGET_STAR_FRACTION:.0%}); "
        f"{o['status']['ok']} other sources, {o['star_fraction'] if o['star_fraction'] is not None else nan:.1%} "
        f"called star, median p_star {o['p_star_quantiles'].get('0.5', nan):.3f} -> {s['folder']}"
    )
    return 0


if __name__ == "__main__":
    cli.run_main(main)
