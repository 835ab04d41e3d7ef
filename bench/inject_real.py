#!/usr/bin/env python3
"""Simulated sources injected into real SDSS frames, as survey teams calibrate their pipelines: the objects,
their labels (photo's type rule; see Labels below) and their PSF are the simulator's; the background, its noise,
its residuals and the real neighbours are the real sky's. Training data, and a check of models on real
backgrounds with labels of known making.

    bench/inject_real.py --data-dir DATA --base-data-dir /big/stargal-training --out /big/injected \
        [--fields 1035-6-17 1992-1-87 7264-3-111] [--draws 12] [--val-draws 2] [--seed 42]
    bench/inject_real.py --data-dir DATA --evaluate pretrained MODEL_DIR ... [--val-draws 3] [--labels noise] \
        [--background white] [--fields 8162-6-375 ...] [--ebv 8162-6-375=0.15 ...]
    bench/inject_real.py --data-dir DATA --label-shift [--val-draws 3] [--background white] [--fields ...]
    (any of them: [--max-objects N], a quick run on a random N of each draw's objects)

Reads the aligned cubes and PSF maps of the real fields that ``code/real_sky.py --data-dir DATA`` prepared and
injects independent skies of simulated objects into each (at the field's own PSF, measured on its stars and
converted to the simulator's PSF model; at the density of a simulated field at the field's latitude; away from
the real sources, which carry no label); the patches are those of the objects photo would catalogue.

Building writes a dataset under ``--out``: the base dataset's training split plus ``--draws`` injections per
field, its validation split plus ``--val-draws`` further ones (so the best epoch and the threshold are chosen on
both skies), its test split (the simulated test fields) as it is. Train on it with
``code/03_model.py --data-dir OUT``. The fields with labels or the reference role (4510-4-30, 8162-6-80) are not
injected into by default, so their real-sky checks stay independent.

``--evaluate`` scores models on ``--val-draws`` fresh injections (never a training draw) into the training fields
and those two held-out ones. ``--label-shift`` measures, on such injections, how much a field's own pixels (its
faint sources, neighbours and residuals) move faint objects' types and model fluxes against independent noise:
a fidelity check of a simulated sky's backgrounds against the real ones, with no model.

Labels: photo's type rule on fluxes measured on the injected pixels (``--labels sky``, the default: on the very
noise the patches show, as photo measures the sweeps and the simulator its catalogue; here with the field's
neighbours, faint sources and sky residuals in them, which photo deblends only where it detects a source), or on
an independent draw of white noise at the frames' level (``--labels noise``: a label the patch's own noise did not
decide, so a faint object's is harder to predict). ``--background white`` injects into white noise of the field's
pixel scatter instead of the field: with sky labels, injections then score as a simulated field's own catalogue
does (``--background field white``: both, one table with a background column, each model loaded once). Compare
a real field only with simulated fields injected the same way. The control: run ``code/real_sky.py --sample SIM
--data-dir SIMDATA`` on a folder SIM of simulated frames with their sweeps (linked from a simulated data
folder's ``sas/``), then ``--evaluate`` with ``--data-dir SIMDATA --fields 8162-6-375 ... --ebv 8162-6-375=0.15
...`` (E(B-V) as real_sky.py's table gives it).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import NamedTuple

import numpy as np
from astropy.coordinates import SkyCoord
from scipy import ndimage

from stargal import fsio, integrity, sky_models
from stargal.config import BANDS, FIELD_OVERLAP_ROWS, FRAME_SHAPE, OBJC_TYPE_STAR
from stargal.cube import read_cube
from stargal.dataset import resolve_dataset
from stargal.errors import StargalError
from stargal.patches import extract_patches, pixel_centres
from stargal.paths import DataPaths, FieldId
from stargal.psf import PSFMap, pixel_noise
from stargal.sdss import read_frame
from stargal.simulate import NMGY, detected, expected_object_counts, star_galaxy_type
from stargal.stages.preparation import class_counts
from stargal.tables import OBJECT_DTYPE, markdown_table, read_table, write_table

# measured on the 80 fields of the version-6 training sky: the PSF maps' r50 (g, r, i, z; stage 01's
# measurement on the simulated stars) against the PSF drawn: r50 = fwhm x (0.530 + 0.408 wing) + 0.286 pixels,
# 1.8 % median error; inverted here so injected stars measure as the field's real stars do
R50_PER_FWHM = 0.530
R50_PER_FWHM_WING = 0.408
R50_OFFSET = 0.286
# measured: 600 bright stars injected so into 1035-6-17, 1992-1-87 and 7264-3-111 came out 2-5 % smaller in r50
# than those fields' real stars (u 3-5 %, g-z 2-3 %); with the core widened by this much per band they measure
# within 1 % of them (2 % in u)
FWHM_CORRECTION = {"u": 1.04, "g": 1.02, "r": 1.025, "i": 1.025, "z": 1.025}
# the real-sky table's E(B-V) (SFD) of the fields injected into for training, and of the two kept for evaluation
EBV = {"1035-6-17": 0.06, "1992-1-87": 0.04, "7264-3-111": 0.05}
HELD_OUT_EBV = {"4510-4-30": 0.00, "8162-6-80": 0.03}
R_BINS = ((0.0, 21.0), (21.0, 22.0), (22.0, 99.0))
FAINT_R = 21.0  # the label shift is measured beyond this r: brighter objects' types do not move
PATCH_MARGIN = 25  # without a model's patch size, injected centres keep this patch's half-width from the edges
BRIGHTEST_R = 15.0  # brighter injected objects would saturate; real frames have interpolated cores there
SOURCE_MASK_SIGMA = 3.0  # a 3x3 box mean this significant in r marks a real source ...
SOURCE_MASK_GROW = 4  # ... and this many pixels around it take no injected centre
VAL_DRAW_START = 1000  # validation draws are numbered from here: never the same objects as a training draw
BACKGROUNDS = ("field", "white")  # --background's choices; index: injected into white noise (the control)


def fwhm_from_r50(r50: np.ndarray, wing: float, band: str) -> np.ndarray:
    """The simulator's PSF core FWHM (pixels) whose stars stage 01 measures at half-light radius ``r50``."""
    fwhm = (r50 - R50_OFFSET) / (R50_PER_FWHM + R50_PER_FWHM_WING * wing) * FWHM_CORRECTION[band]
    return np.clip(fwhm, 1.0, None)


def source_mask(r_band: np.ndarray, sigma: float) -> np.ndarray:
    """Pixels on or next to a real source (no injected centre goes there: real sources have no label)."""
    box = ndimage.uniform_filter(np.nan_to_num(r_band), 3)
    hot = box > SOURCE_MASK_SIGMA * sigma / 3.0  # the mean of 9 pixels has a third of one pixel's noise
    return ndimage.binary_dilation(hot, iterations=SOURCE_MASK_GROW)


def draw_objects(rng: np.random.Generator, n_star: int, n_gal: int, ebv: float) -> np.ndarray:
    """Simulated stars and galaxies (their populations as the simulator draws them), reddened by ``ebv``."""
    pop = np.concatenate([sky_models.draw_stars(rng, n_star), sky_models.draw_galaxies(rng, n_gal)])
    pop["mag"] += ebv * np.array([sky_models.EXTINCTION_R[b] for b in BANDS])
    return pop[pop["mag"][:, 2] > BRIGHTEST_R]


def inject(
    cube: np.ndarray,
    pmap: PSFMap,
    sky_to_pix: np.ndarray,
    pop: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    sigma: np.ndarray,
    rng: np.random.Generator,
    labels_on_sky: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The cube [5, H, W] (its frames' pixel noise ``sigma`` per band) with ``pop`` rendered at (x, y) and its
    photon noise; each object's measured PSF and model fluxes [n, 5] (photo-like: on the injected pixels, or with
    ``labels_on_sky`` False on an independent draw of white noise at the frames' level plus the objects' photon
    noise); and its PSF-flux error [n, 5]."""
    out = cube.copy()
    n = len(pop)
    psf_meas, model_meas, psf_err = np.zeros((n, 5)), np.zeros((n, 5)), np.zeros((n, 5))
    r50 = pmap.at(x, y)
    for bi, b in enumerate(BANDS):
        wing = float(rng.uniform(*sky_models.PSF_WING_FRACTION))
        psf = sky_models.PSF(fwhm_from_r50(r50[:, bi].astype(np.float64), wing, b), wing)
        amp, cov, flux = sky_models.object_gaussians(pop, b, psf, sky_to_pix)
        added = np.zeros(cube.shape[1:], np.float32)
        sky_models.render(added, x, y, amp, cov, sky_models.stamp_radius(amp, cov, 0.15 * sigma[bi]))
        shot = rng.standard_normal(added.shape, dtype=np.float32) * np.sqrt(
            np.clip(added, 0, None) * (NMGY[b] / sky_models.GAIN[b]), dtype=np.float32
        )
        out[bi] += added + shot
        # photo measures each object on the pixels it classifies (neighbours included: it deblends only what it
        # detects); an independent noise draw gives a label the patch's own noise did not decide
        family = sky_models.measurement_family(pop, b, psf, sky_to_pix)
        if labels_on_sky:
            noise = np.nan_to_num(cube[bi]) + shot
        else:
            noise = rng.standard_normal(added.shape, dtype=np.float32) * np.float32(sigma[bi]) + shot
        psf_meas[:, bi], model_meas[:, bi] = sky_models.measure_fluxes(noise, x, y, flux, family)
        _, area_psf, _ = sky_models.psf_flux_ratio(pop, b, psf, sky_to_pix)
        psf_err[:, bi] = np.sqrt(sigma[bi] ** 2 * area_psf + np.clip(flux, 0, None) * NMGY[b] / sky_models.GAIN[b])
    return out, psf_meas, model_meas, psf_err


class RealField(NamedTuple):
    """A real field as the injections need it, read once: its cube, PSF map and pixel noise per band, where
    injected centres may go, and how many objects a simulated field at its latitude holds."""

    name: str
    fid: FieldId
    data: np.ndarray  # float32 [5, H, W]
    pmap: PSFMap
    sky_to_pix: np.ndarray
    sigma: np.ndarray  # [5] the frames' pixel noise
    free: np.ndarray  # bool [H, W]
    expected: tuple[float, float]  # stars, galaxies
    ebv: float | None


def frame_noise(path: os.PathLike) -> float:
    """The per-pixel noise of a frame (``psf.pixel_noise``); each file read once per process, however many runs
    of ``main`` ask (it is identified by its size and times: a rewritten frame is read again)."""
    stat = os.stat(path)
    return _frame_noise(os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@functools.lru_cache(maxsize=32)
def _frame_noise(path: str, size: int, mtime_ns: int, ctime_ns: int) -> float:
    image = read_frame(path).image
    return float(pixel_noise(image[np.isfinite(image)]))


def load_field(paths: DataPaths, name: str, patch_size: int, ebv: float | None) -> RealField:
    """A real field real_sky.py prepared, by name RUN-CAMCOL-FIELD; its objects reddened by ``ebv``."""
    try:
        run, camcol, field = (int(v) for v in name.split("-"))
    except ValueError:
        raise StargalError(f"--fields {name!r}: expected RUN-CAMCOL-FIELD, e.g. 1035-6-17") from None
    fid = FieldId(301, run, camcol, field)
    integrity.require_field(paths, fid)
    cube = read_cube(paths.cube(fid))
    data = np.ascontiguousarray(np.asarray(cube.data, np.float32))
    pmap = PSFMap.from_dict(fsio.read_json(paths.psf_map(fid)), str(paths.psf_map(fid)))
    # photo measures on the frames; resampling onto r's grid smooths the cube's noise (u g i z: 0.6-0.75 of the
    # frames'), so the cube's own scatter would make injected objects too significant and the catalogue too deep
    sigma = np.array([frame_noise(paths.frame(fid, band)) for band in BANDS])
    free = ~source_mask(data[2], sigma[2])
    half = patch_size // 2 + 1
    free[:half], free[-half:], free[:, :half], free[:, -half:] = False, False, False, False
    centre = cube.wcs.celestial.pixel_to_world(cube.shape[1] / 2, cube.shape[0] / 2)
    latitude = max(abs(float(SkyCoord(centre).galactic.b.deg)), 1.0)
    area = cube.shape[0] * cube.shape[1] / ((FRAME_SHAPE[0] - FIELD_OVERLAP_ROWS) * FRAME_SHAPE[1])
    if ebv is None:
        print(f"  {name}: no E(B-V) known (--ebv); objects injected unreddened", file=sys.stderr)
    sky_to_pix = np.linalg.inv(cube.wcs.celestial.pixel_scale_matrix * 3600.0)
    return RealField(name, fid, data, pmap, sky_to_pix, sigma, free, expected_object_counts(latitude, area), ebv)


def white_background(field: RealField, patch_size: int, seed: int) -> RealField:
    """The control: the field with its pixels replaced by white noise of the cube's per-pixel scatter (no sky, no
    neighbours; its PSF map, frame noise and object counts kept), injected centres anywhere inside."""
    rng = np.random.default_rng([seed, *field.fid])
    scatter = np.array([pixel_noise(band[np.isfinite(band)]) for band in field.data], np.float32)
    data = rng.standard_normal(field.data.shape, dtype=np.float32) * scatter[:, None, None]
    half = patch_size // 2 + 1
    free = np.zeros_like(field.free)
    free[half:-half, half:-half] = True
    return field._replace(data=data, free=free)


def place_objects(field: RealField, rng: np.random.Generator, max_objects: int | None = None) -> tuple:
    """(pop, x, y, rows, cols): one draw of simulated objects at random places of the field's free area; with
    ``max_objects``, a random subset of at most that many of them (in their order; the draw is the same, and
    without the cap the generator draws nothing more)."""
    shape = field.data.shape[1:]
    pop = draw_objects(rng, rng.poisson(field.expected[0]), rng.poisson(field.expected[1]), field.ebv or 0.0)
    x = rng.uniform(0, shape[1] - 1, len(pop))
    y = rng.uniform(0, shape[0] - 1, len(pop))
    rows, cols = pixel_centres(x, y)
    keep = field.free[np.clip(rows, 0, shape[0] - 1), np.clip(cols, 0, shape[1] - 1)]
    if max_objects is not None and keep.sum() > max_objects:
        keep[np.flatnonzero(keep)[rng.permutation(int(keep.sum()))[max_objects:]]] = False
    return pop[keep], x[keep], y[keep], rows[keep], cols[keep]


def field_patches(
    field: RealField,
    draws: range,
    seed: int,
    patch_size: int,
    labels_on_sky: bool = True,
    max_objects: int | None = None,
) -> tuple:
    """(x [n, P, P, 5], y [n], psf [n, 5], objects) of the injections ``draws`` (their numbers seed them) into
    one real field (``labels_on_sky``: see inject; ``max_objects``: see place_objects)."""
    name, (_, run, camcol, number), data, pmap = field.name, field.fid, field.data, field.pmap
    parts = []
    for draw in draws:
        rng = np.random.default_rng([seed, run, camcol, number, draw])
        pop, x, y, rows, cols = place_objects(field, rng, max_objects)
        injected, psf_meas, model_meas, psf_err = inject(
            data, pmap, field.sky_to_pix, pop, x, y, field.sigma, rng, labels_on_sky
        )
        listed = detected(psf_meas, psf_err)
        label = star_galaxy_type(psf_meas[listed], model_meas[listed], psf_err[listed]) == OBJC_TYPE_STAR
        label = label.astype(np.uint8)
        patches = extract_patches(injected, rows[listed], cols[listed], patch_size).data
        objects = np.zeros(int(listed.sum()), OBJECT_DTYPE)
        objects["objid"] = [f"inj-{name}-{draw}-{i}" for i in range(len(objects))]
        objects["run"], objects["camcol"], objects["field"] = run, camcol, number
        objects["id"] = np.arange(len(objects))
        objects["x"], objects["y"], objects["label"] = x[listed], y[listed], label
        with np.errstate(divide="ignore", invalid="ignore"):
            objects["r_psfmag"] = 22.5 - 2.5 * np.log10(psf_meas[listed, 2])
            objects["r_modelmag"] = 22.5 - 2.5 * np.log10(model_meas[listed, 2])
        psf_feature = pmap.at(cols[listed], rows[listed])
        parts.append((patches, label, psf_feature, objects))
        truth_star = pop["star"][listed]
        print(
            f"  {name} draw {draw}: {len(pop)} injected, {listed.sum()} catalogued, {label.mean():.1%} labelled star "
            f"(true stars {truth_star.mean():.1%}, label = truth {np.mean(label == truth_star):.1%})",
            file=sys.stderr,
            flush=True,
        )
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(4))


def write_dataset(base: DataPaths, base_name: str, out: DataPaths, extra: dict[str, tuple], record: dict) -> str:
    """A dataset under ``out``: the base's splits, each extended by ``extra[split]`` (x, y, psf, objects) where
    given; sealed."""
    meta = integrity.require_dataset(base, base_name)
    name = f"{base_name}_inj"
    counts = dict(meta["counts"])
    with fsio.OutputSet(out.dataset_json(name)) as output:
        for split in ("train", "val", "test"):
            x = fsio.load_npy(base.split_x(base_name, split))
            y = fsio.load_npy(base.split_y(base_name, split))
            psf = fsio.load_npy(base.split_psf(base_name, split))
            objects = read_table(base.split_objects(base_name, split), OBJECT_DTYPE)
            if split in extra:
                x_extra, y_extra, psf_extra, objects_extra = extra[split]
                x = np.concatenate([x, x_extra.astype(x.dtype)])
                y = np.concatenate([y, y_extra.astype(y.dtype)])
                psf = np.concatenate([psf, psf_extra.astype(psf.dtype)])
                objects = np.concatenate([objects, objects_extra])
                counts[split] = class_counts(y)
            fsio.save_npy(output.path(out.split_x(name, split)), x)
            fsio.save_npy(output.path(out.split_y(name, split)), y)
            fsio.save_npy(output.path(out.split_psf(name, split)), psf)
            write_table(output.path(out.split_objects(name, split)), objects)
        content = {k: v for k, v in meta.items() if k != fsio.INTEGRITY_KEY}
        content.update(name=name, counts=counts, injection=record)
        output.commit(content)
    fsio.write_text(out.latest_dataset, name + "\n")
    return name


LABEL_SHIFT_COLUMNS = [
    f"objects r > {FAINT_R:g}",
    "type differs, field against noise",
    "noise against noise",
    "typed galaxy on the field",
    "on noise",
    "model-flux excess on the field (g+r+i, median)",
]  # label_shift's cells


def label_shift(field: RealField, draws: range, seed: int, max_objects: int | None = None) -> list[str]:
    """Table cells: how the field's own pixels move the labels of faint injected objects (true r > FAINT_R,
    catalogued however measured). The share whose type differs between fluxes measured on the field and on
    independent noise; the same between two independent noise draws (the noise's own share); the share typed
    galaxy each way; the median excess of the g+r+i model flux measured on the field over that on noise.
    ``max_objects``: see place_objects."""
    flips, baseline, galaxy_field, galaxy_noise, excess = [], [], [], [], []
    for draw in draws:
        rng = np.random.default_rng([seed, *field.fid, draw])
        pop, x, y, _, _ = place_objects(field, rng, max_objects)
        measured = [
            inject(field.data, field.pmap, field.sky_to_pix, pop, x, y, field.sigma, rng, on_sky)[1:]
            for on_sky in (True, False, False)
        ]
        listed = np.logical_and.reduce([detected(psf, err) for psf, _, err in measured])
        faint = listed & (pop["mag"][:, 2] > FAINT_R)
        galaxy = [
            star_galaxy_type(psf[faint], model[faint], err[faint]) != OBJC_TYPE_STAR for psf, model, err in measured
        ]
        flips.append(galaxy[0] != galaxy[1])
        baseline.append(galaxy[1] != galaxy[2])
        galaxy_field.append(galaxy[0])
        galaxy_noise.append(galaxy[1])
        excess.append(measured[0][1][faint, 1:4].sum(1) / measured[1][1][faint, 1:4].sum(1) - 1)
    shares = [np.concatenate(v).mean() for v in (flips, baseline, galaxy_field, galaxy_noise)]
    return [str(len(np.concatenate(flips))), *(f"{v:.1%}" for v in shares), f"{np.median(np.concatenate(excess)):+.3f}"]


def injected_scores(star: np.ndarray, called: np.ndarray, r: np.ndarray) -> list[str]:
    """Table cells: MCC, then per r bin (R_BINS) the stars called star and the galaxies called star."""
    from stargal.metrics import mcc_from_counts

    tp, fp = (called & star).sum(), (called & ~star).sum()
    fn, tn = (~called & star).sum(), (~called & ~star).sum()
    cells = [f"{float(mcc_from_counts(tn, fp, fn, tp)):.3f}"]
    for kind in (star, ~star):
        for lo, hi in R_BINS:
            sel = kind & (r >= lo) & (r < hi)
            cells.append(f"{called[sel].mean():.1%} ({called[sel].sum()}/{sel.sum()})" if sel.any() else "-")
    return cells


def evaluate(
    real: DataPaths,
    models: list[str],
    fields: list[str],
    draws: range,
    seed: int,
    ebv: dict[str, float],
    labels_on_sky: bool = True,
    white: bool | tuple[bool, ...] = False,
    max_objects: int | None = None,
) -> str:
    """A Markdown table: each model on fresh injections into each field (never a training draw); ``white``: on
    white_background, the control, or a tuple of such choices (then a row for each, in a background column);
    ``max_objects``: see place_objects."""
    from stargal.model import predict
    from stargal.stages.predict import load_bundle, resolve_model_dir

    bundles = [load_bundle(resolve_model_dir(real, m)) for m in models]
    size = {b.patch_size for b in bundles}
    if len(size) != 1:
        raise StargalError(f"the models take different patch sizes ({sorted(size)})")
    whites = white if isinstance(white, tuple) else (white,)
    column = len(whites) > 1  # a background column only where there is more than one
    header = ["model", "field", *(["background"] if column else []), "objects", "MCC"]
    header += [f"stars called star, r {lo:g}-{hi:g}" for lo, hi in R_BINS]
    header += [f"galaxies called star, r {lo:g}-{hi:g}" for lo, hi in R_BINS]
    header = [h.replace("-99", "+").replace("r 0-", "r < ") for h in header]
    rows = []
    for name in fields:
        loaded = load_field(real, name, bundles[0].patch_size, ebv.get(name))
        for on_white in whites:
            field = white_background(loaded, bundles[0].patch_size, seed) if on_white else loaded
            x, y, psf, objects = field_patches(field, draws, seed, bundles[0].patch_size, labels_on_sky, max_objects)
            for bundle in bundles:
                called = predict(bundle.model, x, psf, tta=bool(bundle.meta.get("tta", False))) >= bundle.threshold
                where = [BACKGROUNDS[on_white]] if column else []
                scores = injected_scores(y.astype(bool), called, objects["r_psfmag"])
                rows.append([bundle.name, name, *where, len(y), *scores])
    return markdown_table(header, rows)


def label_shifts(
    real: DataPaths,
    fields: list[str],
    draws: range,
    seed: int,
    ebv: dict,
    white: bool | tuple[bool, ...],
    max_objects: int | None = None,
) -> str:
    """A Markdown table: label_shift for each field (``white``: on white_background, the control, or a tuple of
    such choices, then a row for each in a background column; ``max_objects``: see place_objects)."""
    whites = white if isinstance(white, tuple) else (white,)
    column = len(whites) > 1
    header = ["field", *(["background"] if column else []), *LABEL_SHIFT_COLUMNS]
    rows = []
    for name in fields:
        loaded = load_field(real, name, PATCH_MARGIN, ebv.get(name))
        for on_white in whites:
            field = white_background(loaded, PATCH_MARGIN, seed) if on_white else loaded
            where = [BACKGROUNDS[on_white]] if column else []
            rows.append([name, *where, *label_shift(field, draws, seed, max_objects)])
    return markdown_table(header, rows)


def parse_ebv(value: str) -> tuple[str, float]:
    """``FIELD=E(B-V)`` as (field, E(B-V))."""
    name, _, number = value.partition("=")
    try:
        if name:
            return name, float(number)
    except ValueError:
        pass
    raise StargalError(f"--ebv {value!r}: expected FIELD=E(B-V), e.g. 8162-6-375=0.15")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="the data folder real_sky.py evaluated the real fields in")
    parser.add_argument("--base-data-dir", help="data folder with the simulated base dataset (building)")
    parser.add_argument("--dataset", default=None, help="base dataset (default: the latest there)")
    parser.add_argument("--out", help="data folder for the combined dataset (building)")
    parser.add_argument("--fields", nargs="+", default=None, help="real fields RUN-CAMCOL-FIELD")
    parser.add_argument("--draws", type=int, default=12, help="independent injections per field for training")
    parser.add_argument("--val-draws", type=int, default=2, help="further injections per field for validation")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--labels",
        choices=("sky", "noise"),
        default="sky",
        help="measure the fluxes that decide an object's label on the injected pixels, the field's neighbours and "
        "sky included (sky), or on an independent draw of white noise at the frames' level (noise)",
    )
    parser.add_argument(
        "--background",
        nargs="+",
        choices=BACKGROUNDS,
        default=["field"],
        help="with --evaluate or --label-shift: inject into the field (field) or, as a control, into white noise "
        "of its pixels' scatter (white); both (field white): a row for each, in a background column",
    )
    parser.add_argument(
        "--ebv",
        nargs="+",
        default=[],
        metavar="FIELD=E(B-V)",
        help="the E(B-V) of fields this bench's table lacks, e.g. 8162-6-375=0.15 (real_sky.py's table gives it)",
    )
    parser.add_argument(
        "--max-objects",
        type=int,
        default=None,
        metavar="N",
        help="inject at most N objects per draw, a random subset of the draw (a quick run, e.g. the tests'; "
        "default: all, as many as a simulated field at the field's latitude holds)",
    )
    parser.add_argument(
        "--label-shift",
        action="store_true",
        help="instead of building: how each field's own pixels move faint injected objects' labels (--val-draws "
        "injections per field)",
    )
    parser.add_argument(
        "--evaluate",
        nargs="+",
        metavar="MODEL",
        help="instead of building: score these models (pretrained, a folder or a model of the real fields' data folder) on "
        "--val-draws fresh injections per field (default fields: "
        "the training fields and the held-out 4510-4-30 and 8162-6-80)",
    )
    args = parser.parse_args(argv)
    if args.draws < 1 or args.val_draws < 1:
        parser.error("--draws and --val-draws must be at least 1")
    if args.max_objects is not None and args.max_objects < 1:
        parser.error("--max-objects must be at least 1")
    whites = tuple(dict.fromkeys(b == "white" for b in args.background))  # in the order given, each once
    if any(whites) and not (args.evaluate or args.label_shift):
        parser.error("--background white is a control for --evaluate and --label-shift, not training data")
    if not (args.evaluate or args.label_shift) and not (args.base_data_dir and args.out):
        parser.error("building needs --base-data-dir and --out (or pass --evaluate MODEL ... or --label-shift)")
    try:
        ebv = {**EBV, **HELD_OUT_EBV, **dict(parse_ebv(v) for v in args.ebv)}
        real = DataPaths.at(args.data_dir).real_fields
        start = time.monotonic()
        if args.evaluate or args.label_shift:
            fields = args.fields or [*EBV, *HELD_OUT_EBV]
            draws = range(VAL_DRAW_START, VAL_DRAW_START + args.val_draws)
            white = whites if len(whites) > 1 else whites[0]
            if args.label_shift:
                print(label_shifts(real, fields, draws, args.seed, ebv, white, args.max_objects))
            else:
                on_sky = args.labels == "sky"
                print(evaluate(real, args.evaluate, fields, draws, args.seed, ebv, on_sky, white, args.max_objects))
            return 0
        base, out = DataPaths.at(args.base_data_dir), DataPaths.at(args.out)
        base_name = resolve_dataset(base, args.dataset)
        patch_size = int(fsio.read_json(base.dataset_json(base_name))["patch_size"])
        fields = args.fields or list(EBV)
        draws = {"train": range(args.draws), "val": range(VAL_DRAW_START, VAL_DRAW_START + args.val_draws)}
        parts = {split: [] for split in draws}
        for name in fields:
            field = load_field(real, name, patch_size, ebv.get(name))  # once for both splits
            for split, numbers in draws.items():
                parts[split].append(
                    field_patches(field, numbers, args.seed, patch_size, args.labels == "sky", args.max_objects)
                )
        extra = {split: tuple(np.concatenate([p[k] for p in got]) for k in range(4)) for split, got in parts.items()}
        record = {"fields": fields, "draws": args.draws, "val_draws": args.val_draws, "seed": args.seed,
                  "labels": args.labels,
                  "patches": {s: len(e[1]) for s, e in extra.items()},
                  "star_fraction": {s: round(float(e[1].mean()), 4) for s, e in extra.items()}}  # fmt: skip
        if args.max_objects is not None:  # a capped build says so (an uncapped one's record is as it was)
            record["max_objects"] = args.max_objects
        name = write_dataset(base, base_name, out, extra, record)
    except StargalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    added = ", ".join(f"{len(e[1])} to {s}" for s, e in extra.items())
    print(f"{name}: injected patches added: {added} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
