"""Runner of real_sky.py: a model trained on the simulated sky, evaluated on real SDSS fields (stargal.realsky).

For every field of a folder of real SDSS frames (by default ``../shared/sdss-sample``): stage 00 takes its
five frames from that folder, stage 01 aligns them and measures the field's PSF, sep finds its sources
(``stargal.detection``), and the model classifies every source exactly as ``predict.py --detect`` would, leaving
out those it refuses (``stargal.predict.detected_refusals``: artefacts and sources the border cuts). A field whose
folder also holds its camcol's ``calibObj-*-star`` sweep gets the two-sided check as well, and one that holds
both its ``-star`` and ``-gal`` sweeps the labelled check (every object they list, scored against them).
Writes, under ``paths.reports("real_sky")``: ``real_sky.json`` (every number, plus the summary, tables and
figure list the report shows), ``real_sky.md``, one CSV of classified sources per field, and the figures. A field
of the simulated sky (SIMULAT = T) is evaluated too, and marked simulated wherever it is named.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import detection, fsio, geometry, integrity, realsky, sdss
from ..config import BANDS, FieldSet
from ..cube import read_cube
from ..errors import StargalError
from ..fsio import read_json, write_text
from ..paths import PRETRAINED_MODEL_DIR, DataPaths, FieldId
from ..plots.realsky import plot_labelled, plot_locus, plot_recall, plot_star_fractions
from ..predict import STATUS_EDGE, classify, detected_refusals, mark_artefacts, mark_status
from ..psf import PSFMap
from ..tables import csv_text, markdown_table
from .alignment import FieldTask, catalog_simulated, process_field, sky_name
from .download import DownloadOptions, run_download
from .predict import ModelBundle, load_bundle, resolve_model_dir

log = logging.getLogger("stargal")
RERUN = 301
# 2: point-like locus fractions per quadrant; 3: bands registered on the stars, fluxes scaled to 3.2";
# 4: bright sources (r < 16) called star, single-band artefacts left out; 5: sources to SDSS's depth, recall on
# the stars detected; 6: quadrant p; 7: star fraction r 22-23; 8: deblended sources marked, the bright non-catalog
# ones counted apart; 9: non-catalog r 21-22 as negatives too; 10: the labelled check where both sweeps are there;
# 11: non-catalog r 22-22.5 as negatives too, apart; 12: each field marked simulated or not; 13: the sources
# predict.py --detect refuses left out (edge, noisy columns' noise peaks), a catalog star only they match a miss;
# 14: r-alone artefacts also by S/N (g and i both under S/N 1, predict.unseen_beside_r); 15: labelled-FIELD.csv, a
# sweep of few bright objects matched down to r = 22, a sweep listing nothing under a field refused
FORMAT_VERSION = 15


@dataclass(frozen=True)
class SampleField:
    fid: FieldId
    folder: Path
    star_catalog: Path | None  # the camcol's calibObj star sweep when the folder holds it
    galaxy_catalog: Path | None = None  # and its galaxy sweep

    @property
    def label(self) -> str:
        """RUN-CAMCOL-FIELD, as tables name the field."""
        return f"{self.fid.run}-{self.fid.camcol}-{self.fid.field}"

    def simulated(self) -> bool | None:
        """Whether the folder's r frame is stargal's simulated sky (SIMULAT = T); None when its header is unreadable
        (preparing the field names what is wrong)."""
        path = self.folder / sdss.frame_filename("r", self.fid.run, self.fid.camcol, self.fid.field)
        try:
            return bool(fits.getheader(path, 0).get("SIMULAT", False))
        except (OSError, ValueError, EOFError):
            return None


def require_sample_folder(sample: Path) -> None:
    """StargalError unless ``sample`` is a folder (checked before a run makes its data folder)."""
    if not sample.exists():
        raise StargalError(
            f"--sample {sample}: no such folder (a folder of real SDSS frames; --sample or STARGAL_SAMPLE_DIR names it)"
        )
    if not sample.is_dir():
        raise StargalError(f"--sample {sample}: not a folder of SDSS frames")


def warn_other_compressions(sample: Path) -> None:
    """One warning naming the SDSS frames and sweeps of ``sample`` kept under another compression than SAS's, which
    the evaluation does not take: gunzipped sweeps beside the frames gave no catalog or labelled check and not a
    word about it, exit status 0; a field of uncompressed frames was left out as silently."""
    files = [Path(d) / n for d, _, names in os.walk(sample, followlinks=True) for n in names]
    taken = {p.name for p in files if sdss.parse_filename(p.name)}
    # a copy beside the file SAS's name is taken from (a frame bunzipped to look at it) misses nothing
    found = sorted(p for p in files if (sas := sdss.sas_name_of(p.name)) and sas not in taken)
    if found:
        others = f" and {len(found) - 1} other SDSS file(s)" if len(found) > 1 else ""
        log.warning(
            "%s%s: not used: real_sky.py takes SDSS frames as frame-*.fits.bz2 and sweeps as calibObj-*.fits.gz, "
            "as SAS serves them (bzip2 a frame, gzip a sweep)",
            found[0],
            others,
        )


def require_star_sweeps(sample: Path) -> None:
    """Refuse a camcol's galaxy sweep without its star sweep in ``sample`` (where the folder holds frames of that
    camcol): the galaxy sweep alone is not used, so the run gave neither the labelled check the user asked for by
    putting it there nor a word about it, exit status 0. Sweeps are looked for anywhere in the folder, as
    ``discover`` finds them."""
    names = {n for _, _, found in os.walk(sample, followlinks=True) for n in found}
    camcols = set()
    for name in names:
        info = sdss.parse_filename(name)
        if info and info["kind"] == "frame" and info["band"] != "irg":
            camcols.add((info["run"], info["camcol"]))
    for run, camcol in sorted(camcols):
        galaxy, star = (sdss.catalog_filename(run, camcol, k) for k in ("gal", "star"))
        if galaxy in names and star not in names:
            path = next(
                Path(d) / galaxy for d, _, found in sorted(os.walk(sample, followlinks=True)) if galaxy in found
            )
            raise StargalError(
                f"{path}: the galaxy sweep of run {run} camcol {camcol} without its star sweep {star} in {sample}: "
                "the labelled check needs both; put the star sweep in the folder, or remove the galaxy sweep"
            )


def check_sample_files(sample: Path) -> None:
    """``warn_other_compressions`` and ``require_star_sweeps`` on a --sample folder, before a run makes its data
    folder."""
    warn_other_compressions(sample)
    require_star_sweeps(sample)


def discover(sample: Path) -> list[SampleField]:
    """The fields of a folder of real SDSS files: every field whose five frames are there (sub-folders too), with
    its camcol's sweeps: beside the frames, else anywhere in the folder (one copy per camcol, as in SAS's layout)."""
    require_sample_folder(sample)
    found: dict[FieldId, Path] = {}
    # os.walk, not rglob: a field folder linked into the sample (a symlink) counts too
    files = [Path(d) / n for d, _, names in os.walk(sample, followlinks=True) for n in names]
    anywhere = {p.name: p for p in sorted(files, reverse=True) if p.is_file()}  # by name; the first in order wins
    incomplete: dict[tuple[FieldId, Path], str] = {}
    for path in sorted(p for p in files if p.name.startswith("frame-") and p.name.endswith(".fits.bz2")):
        info = sdss.parse_filename(path.name)
        if not info:
            continue
        fid = FieldId(RERUN, info["run"], info["camcol"], info["field"])
        names = [sdss.frame_filename(b, fid.run, fid.camcol, fid.field) for b in BANDS]
        missing = "".join(b for b, n in zip(BANDS, names, strict=True) if not (path.parent / n).is_file())
        if missing:
            incomplete[(fid, path.parent)] = missing
        elif fid not in found:
            found[fid] = path.parent
        elif found[fid] != path.parent and path.name.startswith("frame-r-"):  # once per other copy
            log.warning("%s: field %s is also in %s: evaluated from the first only", path.parent, fid, found[fid])
    for (fid, folder), missing in sorted(incomplete.items(), key=lambda item: str(item[0][1])):
        if fid not in found:
            log.warning("%s: field %s lacks the %s frame(s): not evaluated", folder, fid, ", ".join(missing))
    if not found:
        raise StargalError(f"{sample}: no field with all five frames frame-[ugriz]-RUN-C-FIELD.fits.bz2")
    out = []
    for fid, folder in found.items():
        star, gal = (_sweep(folder, anywhere, sdss.catalog_filename(fid.run, fid.camcol, k)) for k in ("star", "gal"))
        out.append(SampleField(fid, folder, star, gal))
    camcols = {(fid.run, fid.camcol) for fid in found}
    for path in sorted(p for p in files if p.name.startswith("calibObj-")):
        info = sdss.parse_filename(path.name)
        if info and (info["run"], info["camcol"]) not in camcols:  # e.g. a sweep of another camcol than the frames'
            log.warning("%s: no field of run %d camcol %d in the folder: not used", path, info["run"], info["camcol"])
    return out


def sample_fields(paths: DataPaths, sample: Path, *, star_catalog: bool = False) -> Iterator[SampleField]:
    """``discover``'s fields (``star_catalog``: only those with a star sweep), each prepared in ``paths`` (data/real)
    as it is yielded; none where the folder is absent: a bench then measures simulated fields alone."""
    for field in discover(sample) if sample.is_dir() else []:
        if star_catalog and field.star_catalog is None:
            continue
        prepare_field(paths, field)
        yield field


def _sweep(folder: Path, anywhere: dict[str, Path], name: str) -> Path | None:
    beside = folder / name
    return beside if beside.is_file() else anywhere.get(name)


def prepare_field(paths: DataPaths, field: SampleField, *, force: bool = False) -> None:
    """Stage 00 (the frames, from the sample folder) and stage 01 (cube and PSF map); both skip current work
    (frames copied earlier from another folder are not current), and ``force`` redoes both."""
    fid = field.fid
    fs = FieldSet(fid.rerun, fid.run, fid.camcol, (fid.field,), (), (), (fid.field,))
    # the irg colour jpeg is a picture for people, not needed here: a folder without it is evaluated all the same
    options = DownloadOptions(source=str(field.folder), frames_only=True, pictures=False, workers=2, force=force)
    summary = run_download(paths, fs, options)
    if not summary.ok:
        name, reason = next(iter(summary.failures.items()))
        raise StargalError(f"{field.folder}: cannot take {name} of field {fid} ({reason})")
    try:
        process_field(FieldTask(str(paths.root), fid, force=force))
    except StargalError as exc:  # it names the copy in the data folder: the file to mend is the sample's
        raise StargalError(f"{field.folder}: field {field.label} of the sample cannot be aligned: {exc}") from None


def field_inputs(paths: DataPaths, fid: FieldId):
    """(cube, its pixels float32 C-contiguous, PSF map) of an aligned field, its seal checked first."""
    integrity.require_field(paths, fid)  # cube and PSF map intact
    cube = read_cube(paths.cube(fid))
    data = np.ascontiguousarray(np.asarray(cube.data, np.float32))
    return cube, data, PSFMap.from_dict(read_json(paths.psf_map(fid)), str(paths.psf_map(fid)))


def evaluate_field(
    paths: DataPaths, field: SampleField, bundle: ModelBundle, psf_scale: float | np.ndarray = 1.0
) -> dict:
    """Detect, measure and classify one field's sources; the locus and star-fraction checks, and the
    two-sided check where the field has its star catalog. Returns the results and the per-source table.
    ``psf_scale`` (one value, or one per band) multiplies the field's measured PSF before the model sees it
    (bench/psf_sensitivity.py)."""
    cube, data, pmap = field_inputs(paths, field.fid)
    if np.any(np.asarray(psf_scale) != 1.0):
        pmap = replace(pmap, coefficients=pmap.coefficients * np.reshape(psf_scale, (-1, 1)))
    return evaluate_cube(field, bundle, cube, data, pmap)


def evaluate_cube(field: SampleField, bundle: ModelBundle, cube, data: np.ndarray, pmap: PSFMap) -> dict:
    """evaluate_field on given pixels ``data`` of the field's cube and PSF map (bench/worse_seeing.py gives a
    blurred copy)."""
    fid = field.fid
    subtracted = detection.subtract_backgrounds(data)  # the detection's, and the noise-peak rule's r band
    sources = detection.measure_sources(data, cube.bands, faint=True, subtracted=subtracted)
    ra, dec = cube.wcs.celestial.wcs_pix2world(sources.x, sources.y, 0)
    pred = classify_positions(bundle, data, cube.wcs, ra, dec, pmap)
    # what predict.py --detect does not classify (cosmic rays, noisy columns' noise peaks, sources the border cuts):
    # evaluated, their labels would be ones predict.py never serves
    artefact, edge = detected_refusals(
        data, sources.x, sources.y, sources.flux, cube.bands, pmap if bundle.takes_psf else None, subtracted=subtracted
    )
    served_before = pred.status == "ok"  # before these refusals: what a catalog star may be matched to
    mark_artefacts(pred, artefact)
    mark_status(pred, edge, STATUS_EDGE)
    ok = pred.status == "ok"
    refused = served_before & ~ok & ~detection.single_band(sources.flux, cube.bands)
    called_star = ok & (pred.label == "star")
    mag = sources.magnitude
    b = {band: cube.bands.index(band) for band in "gri"}
    gr, ri, r = mag[:, b["g"]] - mag[:, b["r"]], mag[:, b["r"]] - mag[:, b["i"]], mag[:, b["r"]]
    quad = realsky.quadrant(sources.x, sources.y, cube.shape)
    locus = realsky.locus_check(
        gr[ok], ri[ok], r[ok], called_star[ok], sources.star[ok], quad[ok], sources.deblended[ok]
    )
    on_locus = np.zeros(len(ok), bool)
    on_locus[ok] = locus.pop("on_locus")
    result = {
        "field": str(fid),
        "label": field.label,
        "simulated": bool(cube.header.get("SIMULAT", False)),  # stage 01 copies the frames' flag into the cube
        "sources": len(sources),
        "classified": int(ok.sum()),
        "psf_r50": [float(v) for v in pmap.coefficients[:, 0]],
        "locus": locus,
        "star_fraction": realsky.star_fractions(called_star[ok], r[ok], quad[ok]),
        "saturating": realsky.saturating_check(called_star[ok], r[ok]),
    }
    table = {
        "x": sources.x, "y": sources.y, "ra": ra, "dec": dec, "r": r, "g_r": gr, "r_i": ri,
        "r50_r": sources.r50[:, b["r"]], "pointlike": sources.star, "p_star": pred.p_star,
        "label": pred.label, "status": pred.status, "on_locus": on_locus, "quadrant": quad,
        "deblended": sources.deblended,
    }  # fmt: skip
    star_sweep = _read_sweep(field.star_catalog) if field.star_catalog is not None else None
    two_sided = star_sweep is not None and field.galaxy_catalog is not None  # the galaxy sweep alone is not used
    galaxy_sweep = _read_sweep(field.galaxy_catalog) if two_sided else None
    for path, sweep in ((field.star_catalog, star_sweep), (field.galaxy_catalog, galaxy_sweep)):
        if sweep is not None:
            _check_sweep(path, sweep, field, cube, (ra, dec))
    if star_sweep is not None:
        detected = (ra, dec, r, quad, ok, sources.deblended, refused)
        result["catalog"], near_star = _catalog_checks(
            field, star_sweep, bundle, data, cube, pmap, detected, called_star & ok
        )
        table["catalog_star_within_2arcsec"] = near_star
        # what a perfect classifier would score: the catalog's own stars on the locus (measured as above)
        bright = ok & realsky.in_bin(r, *realsky.LOCUS_RANGE)
        result["locus"]["catalog_stars"] = realsky.fraction(on_locus, bright & near_star)
    if two_sided:
        result["labelled"], labelled = _labelled_check(field, (star_sweep, galaxy_sweep), bundle, data, cube, pmap)
        return {"result": result, "table": table, "labelled_table": labelled}
    return {"result": result, "table": table}


def classify_positions(bundle: ModelBundle, data, wcs, ra, dec, pmap):
    """Classify sky positions of an aligned cube as predict.py does by default (its TTA, the PSF map)."""
    return classify(
        bundle.model,
        data,
        wcs,
        ra,
        dec,
        patch_size=bundle.patch_size,
        edge=bundle.edge,
        threshold=bundle.threshold,
        tta="auto" if bundle.meta.get("tta", False) else "off",  # as predict.py classifies by default
        psf_map=pmap,
    )


def _labelled_check(field, sweeps, bundle, data, cube, pmap) -> tuple[dict, dict]:
    """Every object the star and galaxy sweeps (``sweeps``, read already) list under the field, classified at its
    catalog position and scored against its sweep (``realsky.labelled_check``); and the objects' table."""
    stars, galaxies = (c[c["FIELD"] == field.fid.field] for c in sweeps)
    for listed, path in ((stars, field.star_catalog), (galaxies, field.galaxy_catalog)):
        if not len(listed):  # scored without it, the "accuracy" would be the other sweep's recall alone
            raise StargalError(
                f"{path}: lists no object under field {field.fid.field}, so the labelled check of {field.label} "
                f"({field.folder}) would score one class alone; put the camcol's whole sweep in the sample folder"
            )
    ra, dec, flux = (np.concatenate([stars[c], galaxies[c]]) for c in ("RA", "DEC", "PSFFLUX"))
    is_star = np.r_[np.ones(len(stars), bool), np.zeros(len(galaxies), bool)]
    pred = classify_positions(bundle, data, cube.wcs, ra, dec, pmap)
    ok = pred.status == "ok"
    r = sdss.magnitude(flux[:, BANDS.index("r")])
    quad = realsky.quadrant(pred.x, pred.y, cube.shape)
    check = {
        "catalogs": [field.star_catalog.name, field.galaxy_catalog.name],
        "objects_listed": len(ra),
        "objects_classified": int(ok.sum()),
        **realsky.labelled_check(is_star[ok], pred.p_star[ok], r[ok], quad[ok], bundle.threshold),
    }
    # every object listed, scored or not, so that the check can be recomputed from the outputs
    objects = {"field": np.full(len(ra), field.fid.field), "id": np.concatenate([stars["ID"], galaxies["ID"]]),
               "ra": ra, "dec": dec, "x": pred.x, "y": pred.y, "r_psfmag": r,
               "catalog_type": np.where(is_star, "star", "galaxy"), "p_star": pred.p_star, "label": pred.label,
               "status": pred.status, "quadrant": quad}  # fmt: skip
    return check, objects


def _catalog_checks(field, catalog, bundle, data, cube, pmap, detected, called_star) -> tuple[dict, np.ndarray]:
    """Recall on the field's catalog stars (``catalog``: its camcol's star sweep) and the bright non-catalog
    sources' star fraction (``detected``: the sources' ra, dec, r, quadrant, whether classified, whether deblended
    and whether refused as predict.py --detect refuses them, edge or a noise peak; ``called_star``: classified and
    called star). A catalog star the detection finds but only as a refused source counts as found and missed:
    predict.py serves no label for it, and leaving it out would shrink the recall's denominator unseen."""
    fid = field.fid
    ra, dec, r, quad, ok, deblended, refused = detected
    rows, cols = cube.shape
    cx, cy = geometry.sky_to_pixel(cube.wcs, catalog["RA"], catalog["DEC"])
    in_frame = geometry.inside_frame(cx, cy, (rows, cols))
    stars = catalog[catalog["FIELD"] == fid.field]  # the stars the sweep lists under this field
    pred = classify_positions(bundle, data, cube.wcs, stars["RA"], stars["DEC"], pmap)
    classified = pred.status == "ok"
    star_r = sdss.magnitude(stars["PSFFLUX"][:, BANDS.index("r")])
    sx, sy = pred.x[classified], pred.y[classified]
    recall = realsky.catalog_check(
        (pred.label == "star")[classified], star_r[classified], realsky.quadrant(sx, sy, cube.shape)
    )
    # every catalog star in the frame, whichever field lists it (the frames overlap their neighbours)
    near_star = geometry.near_any(
        ra, dec, catalog["RA"][in_frame], catalog["DEC"][in_frame], realsky.MATCH_RADIUS_ARCSEC
    )
    non_catalog = ok & ~near_star
    others = non_catalog & realsky.in_bin(r, None, realsky.BRIGHT_LIMIT)
    faint_others = non_catalog & realsky.in_bin(r, realsky.BRIGHT_LIMIT, realsky.SWEEP_COMPLETE_LIMIT)
    fainter_others = non_catalog & realsky.in_bin(r, realsky.SWEEP_COMPLETE_LIMIT, realsky.SWEEP_LIMIT)
    # the stars predict.py --detect would classify: those the detection finds (the rest are mostly too faint in
    # r to be found: below SDSS's own detection limit there, listed for their light in other bands)
    served = classified & geometry.near_any(stars["RA"], stars["DEC"], ra[ok], dec[ok], realsky.MATCH_RADIUS_ARCSEC)
    found = served | classified & geometry.near_any(
        stars["RA"], stars["DEC"], ra[refused], dec[refused], realsky.MATCH_RADIUS_ARCSEC
    )
    called = pred.label == "star"
    called_found = called & served  # a star matched to refused sources alone: no label served, a miss
    return {
        "catalog": str(field.star_catalog.name),
        "stars_listed": len(stars),
        "stars_classified": int(classified.sum()),
        "stars_detected_refused": int((found & ~served).sum()),  # found only as sources predict.py refuses
        "recall": recall,
        "recall_detected": realsky.catalog_check(
            called_found[found], star_r[found], realsky.quadrant(pred.x[found], pred.y[found], cube.shape)
        ),
        "two_sided_detected": realsky.two_sided(called_found[found], called_star[others]),
        "two_sided_detected_to_complete": realsky.two_sided(called_found[found], called_star[others | faint_others]),
        "two_sided_detected_to_limit": realsky.two_sided(
            called_found[found], called_star[others | faint_others | fainter_others]
        ),
        "bright_non_catalog": {
            "r_limit": realsky.BRIGHT_LIMIT,
            "match_radius_arcsec": realsky.MATCH_RADIUS_ARCSEC,
            **realsky.fraction(called_star, others),
            "by_quadrant": realsky.by_quadrant(called_star, quad, others),
            "isolated": realsky.fraction(called_star, others & ~deblended),
            "deblended": realsky.fraction(called_star, others & deblended),
        },
        "faint_non_catalog": {
            "r_range": [realsky.BRIGHT_LIMIT, realsky.SWEEP_COMPLETE_LIMIT],
            **realsky.fraction(called_star, faint_others),
        },
        "fainter_non_catalog": {
            "r_range": [realsky.SWEEP_COMPLETE_LIMIT, realsky.SWEEP_LIMIT],
            **realsky.fraction(called_star, fainter_others),
        },
        "two_sided": realsky.two_sided(called[classified], called_star[others]),
        # the same with the non-catalog sources down to where the sweep is complete as negatives as well
        "two_sided_to_complete": realsky.two_sided(called[classified], called_star[others | faint_others]),
        # and down to the sweep's own limit: charges a model for the faintest galaxies it calls star
        "two_sided_to_limit": realsky.two_sided(
            called[classified], called_star[others | faint_others | fainter_others]
        ),
    }, near_star


def run_real_sky(
    paths: DataPaths, sample: Path, *, model: str | None = None, out: Path | None = None, force: bool = False
) -> dict:
    """Evaluate ``model`` (default: the latest trained, else the pretrained one) on every field of ``sample``;
    the results go to ``out`` (default ``paths.reports("real_sky")``, the folder the report reads)."""
    start = time.monotonic()
    out = Path(out).expanduser() if out else paths.reports("real_sky")
    check_out_folder(out, paths)
    fsio.require_writable_destination(out, "--out", folder=True)  # before an evaluation of a minute or more
    fields = discover(Path(sample))
    model_dir = resolve_model_dir(paths, model)
    if out.resolve().is_relative_to(model_dir.resolve()):
        raise StargalError(f"--out {out}: lies in the model folder {model_dir}; name a folder elsewhere")
    settings = {
        "format": FORMAT_VERSION,
        "model": str(model_dir),
        "model_id": fsio.seal_digest(integrity.require_model(model_dir)),
        "fields": [str(f.fid) for f in fields],
        "sample": _fingerprints(fields),
        "detection": detection.detection_settings(),
    }
    labelled = any(f.star_catalog and f.galaxy_catalog for f in fields)
    tables_csv = [out / f"sources-{f.label}.csv" for f in fields]
    labelled_csv = {f.label: out / f"labelled-{f.label}.csv" for f in fields if f.star_catalog and f.galaxy_catalog}
    outputs = [out / "real_sky.md", *(out / f for f in FIGURES), *([out / LABELLED_FIGURE] if labelled else [])]
    outputs += tables_csv + list(labelled_csv.values())
    previous = fsio.previous_record(out / "real_sky.json", outputs, settings, force)
    if previous is not None:
        log.info("real-sky evaluation of %s is current (use --force to redo)", model_dir.name)
        return {**previous, "folder": out, "skipped": True}
    bundle = load_bundle(model_dir, "auto")  # as predict.py runs it
    results, tables = [], []
    real = paths.real_fields
    # every file appears with the record that seals it, or (a field failing) none does: no mix of two runs
    with fsio.OutputSet(out / "real_sky.json") as output:
        for field, csv_path in zip(fields, tables_csv, strict=True):
            sky = {True: "simulated field", False: "real field", None: "field"}[field.simulated()]
            log.info("%s %s: frames, alignment, PSF, sources, classification", sky, field.fid)
            prepare_field(real, field, force=force)
            evaluated = evaluate_field(real, field, bundle)
            results.append(evaluated["result"])
            tables.append(evaluated["table"])
            write_text(output.path(csv_path), _sources_csv(evaluated["table"]))
            if "labelled_table" in evaluated:
                write_text(output.path(labelled_csv[field.label]), _sources_csv(evaluated["labelled_table"]))
        record = {
            "settings": settings,
            "model": bundle.name,
            "model_sky": bundle.meta.get("sky") or bundle.meta.get("dataset"),
            "threshold": bundle.threshold,
            "fields": results,
            "seconds": round(time.monotonic() - start, 1),
        }
        record.update(report_content(record))
        named = [{**r, "label": field_name(r)} for r in results]  # the figures mark a simulated field too
        plot_locus(output.path(out / FIGURES[0]), named, tables)
        plot_recall(output.path(out / FIGURES[1]), named)
        plot_star_fractions(output.path(out / FIGURES[2]), named)
        if labelled:
            plot_labelled(output.path(out / LABELLED_FIGURE), named)
        elif (out / LABELLED_FIGURE).exists():
            output.remove(out / LABELLED_FIGURE)  # an earlier run's, of fields with both sweeps: not this run's
        write_text(output.path(out / "real_sky.md"), markdown(record))
        for stale in _previous_tables(out / "real_sky.json", {*tables_csv, *labelled_csv.values()}):
            output.remove(stale)  # the tables of fields an earlier run evaluated and this one does not
        record = output.commit(record)  # last: it lists every output with its checksum
    return {**record, "folder": out, "skipped": False}


def check_out_folder(out: Path, paths: DataPaths) -> None:
    """Refuse an --out in a data folder (this run's or another's, ``DataPaths.at_stake``) other than its reports/
    (the stages write and seal the rest, real fields' cubes among them) or in the project's models/ folder (the
    shipped model); links resolved."""
    out = out.expanduser().resolve()
    stake = paths.at_stake(out)
    root = stake.root.expanduser().resolve() if stake else None
    reports = stake.reports().expanduser().resolve() if stake else None
    if stake is not None and not out.is_relative_to(reports):
        raise StargalError(
            f"--out {out}: lies in the data folder {root}, whose files the stages write and seal; name a folder in "
            f"{reports} or outside the data folder"
        )
    models = PRETRAINED_MODEL_DIR.parent.resolve()
    if out.is_relative_to(models):
        raise StargalError(
            f"--out {out}: lies in the project's models folder {models}, which holds the shipped model; name a folder "
            "elsewhere"
        )


def field_name(result: dict) -> str:
    """How tables, figures and the console name an evaluated field: its label, marked when it is simulated."""
    return f"{result['label']} (simulated)" if result.get("simulated") else result["label"]


def fields_phrase(fields: list[dict], real: str = "real") -> str:
    """How many of ``fields`` (results) are real and how many simulated: "2 real fields and 1 simulated field"
    (``real``: the word for the real ones, e.g. "real SDSS")."""
    simulated = sum(bool(f.get("simulated")) for f in fields)
    counts = [(len(fields) - simulated, real), (simulated, "simulated")]
    parts = [f"{n} {word} field{'s' if n != 1 else ''}" for n, word in counts if n]
    return " and ".join(parts) or f"0 {real} fields"


def _check_sweep(path: Path, sweep: np.ndarray, field: SampleField, cube, detected: tuple) -> None:
    """Refuse a sweep that is not the field's frames' own: of the other sky (SIMULAT), or whose bright objects in
    the frame sit on no detected source (``detected``: their ra, dec), such as a simulated sky of another seed."""
    frames_simulated = bool(cube.header.get("SIMULAT", False))
    if catalog_simulated(path) != frames_simulated:
        raise StargalError(
            f"{path}: a sweep of {sky_name(not frames_simulated)}, but the frames of field {field.label} in "
            f"{field.folder} are of {sky_name(frames_simulated)}: their sources would be scored against another "
            "sky's labels; put the field's own sweeps in the sample folder"
        )
    x, y = geometry.sky_to_pixel(cube.wcs, sweep["RA"], sweep["DEC"])
    inside = geometry.inside_frame(x, y, cube.shape)
    ra, dec = sweep["RA"][inside], sweep["DEC"][inside]
    on_source = geometry.near_any(ra, dec, *detected, realsky.MATCH_RADIUS_ARCSEC)
    mismatch = realsky.sweep_mismatch(on_source, sdss.magnitude(sweep["PSFFLUX"][inside][:, BANDS.index("r")]))
    if mismatch is not None:
        raise StargalError(
            f"{path}: only {mismatch[0]} of the {mismatch[1]} objects brighter than r = {mismatch[2]:g} "
            f"it places in field {field.label}'s frames ({field.folder}) sit on a source there: not these frames' "
            "catalog (another sky's, or a damaged copy); put the field's own sweeps in the sample folder"
        )


def _read_sweep(path: Path) -> np.ndarray:
    """A sweep of the --sample folder (no download to repeat: the user's copy is what is damaged)."""
    return sdss.read_catalog(
        path,
        redo="the file is damaged: copy it into the --sample folder again",
        wrong_file="wrong file: put the camcol's own sweep under this name in the --sample folder, or remove it",
    )


def _previous_tables(record_path: Path, current: set[Path]) -> list[Path]:
    """The per-field tables an earlier run's record lists that are not among ``current``."""
    try:
        listed = fsio.read_json(record_path).get(fsio.INTEGRITY_KEY, {}).get("files", {})
    except (OSError, ValueError, AttributeError):
        return []
    folder = record_path.parent
    tables = ("sources-", "labelled-")
    return [folder / n for n in listed if n.startswith(tables) and folder / n not in current]


def _fingerprints(fields: list[SampleField]) -> dict[str, str]:
    """{file: "size:mtime"} of every sample file the evaluation reads: a changed file makes it out of date."""
    out = {}
    for f in fields:
        names = [sdss.frame_filename(b, f.fid.run, f.fid.camcol, f.fid.field) for b in BANDS]
        for p in [f.folder / n for n in names] + [c for c in (f.star_catalog, f.galaxy_catalog) if c]:
            st = p.stat()
            out[p.name] = f"{st.st_size}:{st.st_mtime_ns}"
    return out


FIGURES = ("locus.png", "catalog_recall.png", "star_fraction.png")
LABELLED_FIGURE = "labelled.png"  # only where a field has both sweeps


def _sources_csv(table: dict) -> str:
    columns = list(table)
    rows = []
    for i in range(len(table[columns[0]])):
        row = []
        for c in columns:
            v = table[c][i]
            row.append(f"{v:.5f}" if isinstance(v, float | np.floating) else str(v))
        rows.append(row)
    return csv_text(columns, rows)


def percent_cell(entry: dict | None) -> str:
    """A ``realsky.fraction`` as a table cell: "93.2 % (150/161)", or "-" without data."""
    if not entry or entry.get("fraction") is None:
        return "-"
    return f"{100 * entry['fraction']:.1f} % ({entry['k']}/{entry['n']})"


def _p_cell(p: float | None) -> str:
    return "-" if p is None else f"{p:.2f}"


def report_content(record: dict) -> dict:
    """The report's part of real_sky.json: a summary paragraph, tables and captioned figures."""
    locus_rows, catalog_rows = [], []
    for f in record["fields"]:
        lc = f["locus"]
        gap = realsky.largest_quadrant_gap(lc["called_star"], lc["called_star_by_quadrant"])
        ceiling_gap = realsky.largest_quadrant_gap(lc["pointlike"], lc.get("pointlike_by_quadrant", []))
        locus_rows.append(
            [field_name(f), f["sources"], f"{lc['ebv']:.2f}", percent_cell(lc["pointlike"]), percent_cell(lc.get("catalog_stars")),
             percent_cell(lc["called_star"]), percent_cell(lc["called_galaxy"]), "-" if gap is None else f"{100 * gap:.1f}",
             _p_cell(lc.get("called_star_quadrant_p")),
             "-" if ceiling_gap is None else f"{100 * ceiling_gap:.1f}", percent_cell(f.get("saturating"))]
        )  # fmt: skip
        if "catalog" in f:
            c = f["catalog"]
            for label, recall, both, fuller, fullest in (
                (field_name(f), c["recall"], c["two_sided"], c.get("two_sided_to_complete"), c.get("two_sided_to_limit")),
                (f"{field_name(f)}, stars detected", c["recall_detected"], c["two_sided_detected"],
                 c.get("two_sided_detected_to_complete"), c.get("two_sided_detected_to_limit")),
            ):  # fmt: skip
                by_r = {e["bin"]: e for e in recall["by_r"]}
                catalog_rows.append(
                    [
                        label,
                        percent_cell(recall["overall"]),
                        percent_cell(by_r["< 21"]),
                        percent_cell(by_r["21-22"]),
                        percent_cell(by_r[">= 22"]),
                        percent_cell(c["bright_non_catalog"]),
                        f"{percent_cell(c['bright_non_catalog']['isolated'])} / "
                        f"{percent_cell(c['bright_non_catalog']['deblended'])}",
                        "-" if both["mcc"] is None else f"{both['mcc']:.3f}",
                        percent_cell(c.get("faint_non_catalog")),
                        "-" if fuller is None or fuller["mcc"] is None else f"{fuller['mcc']:.3f}",
                        percent_cell(c.get("fainter_non_catalog")),
                        "-" if fullest is None or fullest["mcc"] is None else f"{fullest['mcc']:.3f}",
                    ]
                )
    tables = [
        {
            "title": "Stellar locus: sources with 16 < r < 20 within 0.15 mag of the (reddened) locus; bright sources",
            "columns": [
                "field",
                "sources",
                "E(B-V)",
                "point-like (ceiling)",
                "catalog stars",
                "called star",
                "called galaxy",
                "worst quadrant gap (points)",
                "chance of such quadrants (p)",
                "point-like worst quadrant gap",
                f"r < {realsky.SATURATING_LIMIT:.0f} called star",
            ],  # fmt: skip
            "rows": locus_rows,
        }
    ]
    if catalog_rows:
        tables.append(
            {
                "title": "Catalog stars recognised (recall) and bright non-catalog sources called star",
                "columns": [
                    "field",
                    "recall",
                    "r < 21",
                    "r 21-22",
                    "r > 22",
                    "non-catalog r < 21 called star",
                    "of them isolated / deblended",
                    "two-sided MCC",
                    f"non-catalog r {realsky.BRIGHT_LIMIT:.0f}-{realsky.SWEEP_COMPLETE_LIMIT:.0f} called star",
                    f"MCC, negatives to r {realsky.SWEEP_COMPLETE_LIMIT:.0f}",
                    f"non-catalog r {realsky.SWEEP_COMPLETE_LIMIT:.0f}-{realsky.SWEEP_LIMIT} called star",
                    f"MCC, negatives to r {realsky.SWEEP_LIMIT}",
                ],  # fmt: skip
                "rows": catalog_rows,
            }
        )
    labelled = [(field_name(f), f["labelled"]) for f in record["fields"] if "labelled" in f]
    if labelled:
        tables += [
            {
                "title": "Labelled check: every object of the star and galaxy sweeps, against its sweep",
                "columns": [
                    "field",
                    "objects",
                    "stars",
                    "accuracy",
                    "MCC",
                    "ROC AUC",
                    "worst quadrant accuracy gap (points)",
                    "chance of such quadrants (p)",
                ],  # fmt: skip
                "rows": [_labelled_row(label, check) for label, check in labelled],
            },
            {
                "title": "Labelled check per r magnitude: the stars and the galaxies of the sweeps called star",
                "columns": ["field", "called star", *(f"r {b}" for b in LABELLED_BIN_HEADINGS), "no r flux"],
                "rows": [row for label, check in labelled for row in _labelled_rows_by_r(label, check)],
            },
        ]
    summary = (
        f"Model {record['model']} (trained on the simulated sky only) applied to "
        f"{fields_phrase(record['fields'], 'real SDSS')}"
        + (
            " (frames flagged SIMULAT = T: stargal's simulated sky, marked '(simulated)' below, whose numbers are not "
            "SDSS results)"
            if any(f.get("simulated") for f in record["fields"])
            else ""
        )
        + ". A source lies on the stellar locus when its g-r, r-i colours are within 0.15 mag of Juric et al. "
        "(2008)'s locus, reddened by the field's E(B-V) fitted to its point-like sources. Two baselines show how "
        "far a field's own stars reach that test with these colours: its bright isolated 'point-like' sources "
        "(picked by size alone) and, where the field has a star catalog, the catalog's stars (a perfect classifier). "
        f"Sources brighter than r = {realsky.SATURATING_LIMIT:.0f} are almost all stars, their cores at or past "
        "saturation: the last column is the fraction of them called star. The chance of such quadrants is how often "
        "quadrants differ as much as the field's do by counting noise alone, were the fraction the same all over "
        "the frame (a Monte Carlo chi-square test): a small value points at a real position-dependent failure. "
        "The sources predict.py --detect refuses are left out of every check, as it serves them no class: "
        "artefacts (seen in r alone, or a noise peak of a noisy r column that the other bands do not show) and "
        "sources centred within 2 pixels of the frame's border, which it cuts."
    )
    if catalog_rows:
        summary += (
            " In the catalog table, the 'stars detected' row keeps the catalog stars the detection finds (what "
            "predict.py --detect classifies: point sources down to a PSF signal-to-noise of 5 in r, SDSS's own "
            "limit); most of the others are too faint in r to be seen there, listed for their light in other bands; "
            "a catalog star found only as a source predict.py refuses counts as missed (real_sky.json: "
            "stars_detected_refused). "
            "Deblended sources are those the detection split from a blend with neighbours (predict.py --detect "
            "marks them): their pixels are shared, and the model's errors gather there. The two-sided MCC counts "
            "only bright non-catalog sources as negatives, so it never charges a model for the faint galaxies it "
            "calls star; the last two columns give the fraction called star of the non-catalog sources with "
            "r = 21-22 (galaxies too: the sweep still lists every star there) and the MCC with them as negatives "
            "as well."
        )
    if labelled:
        summary += (
            " The labelled check classifies every object the field's star and galaxy sweeps list under it, at its "
            "catalog position, and scores it against its sweep: SDSS's photometric type (PSF against model "
            "magnitude), itself unsure beyond r ~ 21, so the faint bins measure agreement with SDSS as much as "
            "correctness."
        )
    figures = [
        {"file": FIGURES[0], "caption": "g-r against r-i of the sources with 16 < r < 20 of each field, "
         "coloured by the model's call; the line is the stellar locus reddened for the field. Stars should hug "
         "the line, galaxies scatter off it."},
        {"file": FIGURES[1], "caption": "Catalog stars recognised per r magnitude bin and per frame quadrant, "
         "with 95 % intervals; the dashed line is the 95 % target. Faint bins hold few stars."},
        {"file": FIGURES[2], "caption": "Predicted star fraction per r magnitude bin in each field: high "
         "everywhere in the Galactic-plane field 5405-6-99, falling with magnitude at high latitude."},
    ]  # fmt: skip
    if labelled:
        figures.append({"file": LABELLED_FIGURE, "caption": "Labelled check: the stars (solid) and the galaxies "
                        "(dashed) of each field's sweeps called star, per r magnitude bin, with 95 % intervals. SDSS's "
                        "own types grow unsure beyond r ~ 21."})  # fmt: skip
    return {"summary": summary, "tables": tables, "figures": figures}


# realsky.RECALL_BINS, as realsky.bin_label names them, and the objects without r flux, or the bins' counts would
# not add up to the field's
LABELLED_BIN_NAMES = ("< 21", "21-22", ">= 22", "no r flux")
LABELLED_BIN_HEADINGS = ("< 21", "21-22", "> 22")  # as the catalog table heads them


def _labelled_row(label: str, check: dict) -> list:
    overall = check["overall"]
    # the quadrants' accuracy against the field's
    gap = realsky.largest_quadrant_gap({"fraction": overall["accuracy"]}, check["accuracy_by_quadrant"])
    return [
        label,
        f"{check['objects_classified']} of {check['objects_listed']}",
        overall.get("stars", 0),
        *("-" if overall.get(key) is None else f"{overall[key]:.3f}" for key in ("accuracy", "mcc", "roc_auc")),
        "-" if gap is None else f"{100 * gap:.1f}",
        _p_cell(check.get("accuracy_quadrant_p")),
    ]


def _labelled_rows_by_r(label: str, check: dict) -> list[list]:
    by_r = {e["bin"]: e for e in check["by_r"]}
    return [
        [label, kind, *(percent_cell(by_r[b][key]) if b in by_r else "-" for b in LABELLED_BIN_NAMES)]
        for kind, key in (("stars", "stars_called_star"), ("galaxies", "galaxies_called_star"))
    ]


def markdown(record: dict) -> str:
    title = f"# Real-sky evaluation of {record['model']}"
    if any(f.get("simulated") for f in record["fields"]):  # never call a simulated field real, not even the title
        title += f" on {fields_phrase(record['fields'], 'real SDSS')}"
    lines = [title, "", record["summary"], ""]
    for t in record["tables"]:
        lines += [f"## {t['title']}", "", markdown_table(t["columns"], t["rows"]), ""]
    for f in record["fields"]:
        lines += [f"## {field_name(f)}: star fraction called per r bin", ""]
        rows = [[e["bin"], percent_cell(e)] for e in f["star_fraction"]["by_r"]]
        lines += [markdown_table(["r", "called star"], rows), ""]
    return "\n".join(lines)
