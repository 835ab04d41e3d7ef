"""Runner of stage 01: align each field's bands into a cube, list its catalog objects in pixel coordinates,
write the exercise tensors, and summarise everything in data/reports/alignment/.

Per field (in parallel with ``workers``/``scheduler``): read the five frames, check that each is what its
file name says (header FILTER, RUN, CAMCOL, FRAME, shape, WCS footprint) and that all five and the catalogs are
of one sky (real or simulated: ``SIMULAT``), mask non-finite pixels, resample onto the reference band's grid
(``stargal.align``), register any band whose WCS leaves its stars off the reference band's
(``align.registration_shifts``), write ``paths.cube(fid)``; then select the calibObj objects
inside the frame (``stargal.catalog``) and write ``paths.objects(fid)``; measure the cube's PSF on its own stars
(``stargal.psf``) into ``paths.psf_map(fid)``. Cube, PSF map and objects table form one
sealed output set (``fsio.OutputSet``) whose record ``paths.field_record(fid)`` lists their checksums and the
inputs they were made from (size, modification time, sha256 and file stamp of each frame and catalog); a field is
current when the record's files are intact and its inputs and alignment method unchanged, and is otherwise redone
(naming what was broken, or which frame or sweep changed). A band whose WCS is rotated or scaled wrong (its stars
drift off the reference band's towards the frame's corners) is refused (``align.fit_offset_field``).
A failed rebuild leaves the previous cube and table in place; a bad input raises StargalError.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import __version__, align, catalog, detection, fsio, integrity, psf, sdss
from ..config import BANDS, LABEL_GALAXY, LABEL_STAR, REFERENCE_BAND, FieldSet
from ..cube import read_cube, write_cube
from ..errors import StargalError
from ..fsio import OutputSet, save_npy, write_json, write_text
from ..geometry import footprint_overlap
from ..parallel import map_tasks
from ..paths import DataPaths, FieldId
from ..tables import OBJECT_DTYPE, markdown_table, read_table, write_table

log = logging.getLogger("stargal")
# 2: bands registered on the field's stars after the WCS mapping; 3: a band 2-3 px off is registered after a
# whole-pixel shift, and a reference frame whose WCS every other band disagrees with is refused. A cube made by an
# older method is made again: it may hold a band the old method left misaligned.
ALIGN_METHOD = 3
CATALOG_KINDS = ("gal", "star")
MIN_BAND_OVERLAP = 0.5  # a band's frame must cover at least this much of the reference frame (same field: ~1)
LOW_COVERAGE = 0.75  # warn when an aligned band has data for less of the frame than this (real frames: > 0.98)


@dataclass(frozen=True)
class FieldTask:
    """Everything a worker needs for one field (picklable)."""

    root: str
    fid: FieldId
    ref_band: str = REFERENCE_BAND
    force: bool = False
    # pre-filtered catalog rows per kind ("gal"/"star"), empty when the run/camcol has no catalogs
    catalogs: dict[str, np.ndarray] = field(default_factory=dict)
    catalog_files: tuple[str, ...] = ()
    catalogs_simulated: bool | None = None  # the catalogs' sky (SIMULAT = T: stargal's simulation); None: unknown


def frame_paths(paths: DataPaths, fid: FieldId) -> list[Path]:
    """The five band frames of a field, in BANDS order."""
    return [paths.frame(fid, b) for b in BANDS]


def check_frames(paths: DataPaths, fids: list[FieldId]) -> None:
    """Fail fast, before any work, if a band's frame is missing."""
    for fid in fids:
        for band, p in zip(BANDS, frame_paths(paths, fid), strict=True):
            if not p.is_file():
                fetch = integrity.download_command(sdss.frame_relpath(band, *fid), paths)
                raise StargalError(f"{p}: file not found (band {band} of field {fid}; {fetch} fetches it)")


def read_field_frames(paths: DataPaths, fid: FieldId, ref_band: str) -> list[sdss.Frame]:
    """The five frames of a field, each checked to be what its file name says: header FILTER, RUN, CAMCOL and
    FRAME, the reference band's sky (real or simulated) and image shape, and a WCS footprint on the reference
    frame's part of the sky."""
    frames = [
        sdss.read_frame(
            p, f"{integrity.download_command(sdss.frame_relpath(b, *fid), paths)} --verify fetches it again"
        )
        for b, p in zip(BANDS, frame_paths(paths, fid), strict=True)
    ]
    fetch = integrity.download_command(sdss.frame_relpath("r", *fid), paths, force=True)
    redo = f"the file is not band {{band}} of field {fid}: {fetch} fetches it again"
    for band, f in zip(BANDS, frames, strict=True):
        problems = sdss.frame_identity_problems(f, band, fid.run, fid.camcol, fid.field)
        if problems:
            raise StargalError(f"{f.path}: header {', '.join(problems)}; {redo.format(band=band)}")
    ref = frames[BANDS.index(ref_band)]
    for f in frames:
        if f.simulated != ref.simulated:  # e.g. a local copy's real frames over a simulated sky, one band missing
            raise StargalError(
                f"{f.path}: a frame of {sky_name(f.simulated)}, but the {ref_band} band's of field {fid} is of "
                f"{sky_name(ref.simulated)}: the field mixes two skies; fetch its five frames from one source "
                f"({fetch} --source ...)"
            )
    ref_shape = ref.image.shape
    for band, f in zip(BANDS, frames, strict=True):
        if f.image.shape != ref_shape:
            raise StargalError(f"{f.path}: frame shape {f.image.shape} differs from the {ref_band} band's {ref_shape}")
        if f is not ref:
            overlap = footprint_overlap(ref.wcs, ref_shape, f.wcs, f.image.shape)
            if overlap < MIN_BAND_OVERLAP:
                raise StargalError(
                    f"{f.path}: its WCS covers {100 * overlap:.0f} % of the {ref_band}-band frame's sky; "
                    + redo.format(band=band)
                )
        if f.nonfinite:
            log.warning("%s: %d non-finite pixel(s) (NaN or inf) masked as no data", f.path, f.nonfinite)
    return frames


def sky_name(simulated: bool) -> str:
    """How a file's sky is named to users."""
    return "the simulated sky" if simulated else "the real SDSS sky"


def cube_meta(fid: FieldId, ref_band: str, ref: sdss.Frame, result: align.Alignment) -> dict:
    """Header keywords of the cube: identity, and each band's measured offset relative to the reference."""
    meta: dict = {
        "REFBAND": (ref_band, "bands resampled onto this band's grid"),
        "RERUN": fid.rerun,
        "RUN": fid.run,
        "CAMCOL": fid.camcol,
        "FIELD": fid.field,
        "SIMULAT": (ref.simulated, "simulated sky (stargal.simulate)"),
        "ALIGNMTH": ("bilinear", "area weights exact for a translation"),
    }
    for band, pmap, exact in zip(BANDS, result.maps, result.exact_fallback, strict=True):
        if pmap is None:
            dx = dy = drift = residual = 0.0
            degree = 0
        else:
            dx, dy = pmap.centre_offset
            drift, residual, degree = pmap.drift, pmap.residual, pmap.cx.shape[0] - 1
        meta[f"DX_{band}"] = (round(dx, 5), f"{band} minus {ref_band} x at centre, px")
        meta[f"DY_{band}"] = (round(dy, 5), f"{band} minus {ref_band} y at centre, px")
        meta[f"DRIFT_{band}"] = (round(drift, 5), f"max {band} offset change over frame, px")
        meta[f"MAPDEG_{band}"] = (degree, f"degree of {band} pixel map polynomial")
        meta[f"MAPRES_{band}"] = (float(f"{residual:.3g}"), f"max {band} map residual vs WCS, px")
        meta[f"EXACT_{band}"] = (bool(exact), "pixels mapped through WCS")
    return meta


# A reference band's WCS is off when every other band sits at least this far from it, alike (within the spread):
# the registration shifts of the six real fields reach 1.06 px in one band (i of 5405-6-99), 0.62 px in all others.
REFERENCE_OFF_PX = 1.0
REFERENCE_SPREAD_PX = 0.5
COARSE_SPREAD_PX = 1.5  # the same for whole-pixel shifts (coarse_band_shifts), each rounded
MIN_COARSE_PX = 2.0  # a band whose stars go unmatched this far off (whole pixels) is measured again after the shift


class BandMisalignedError(StargalError):
    """A band the registration cannot lay onto the reference band's stars (``band``: which)."""

    def __init__(self, band: str, message: str):
        super().__init__(message)
        self.band = band


def _misaligned(distance: float, ref_band: str) -> str:
    shown = f"{distance:.1f}".rstrip("0").rstrip(".")  # whole-pixel shifts as such (4, not 4.0)
    return (f"its sources sit {shown} px from the {ref_band} band's where the WCSs put them: its header's WCS "
            "is wrong")  # fmt: skip


def _refuse_misplaced_reference(offsets, ref_index: int, min_px: float, spread_px: float) -> None:
    """Raise BandMisalignedError naming the reference band when every other band sits alike from it: then its own
    WCS is the one that is wrong, and the cube's WCS (the catalog's pixels, predict.py's positions) would be too."""
    common = align.common_offset(offsets, ref_index, min_px, spread_px)
    if common is not None:
        ref_band = BANDS[ref_index]
        dx, dy = (round(v, 1) + 0.0 for v in common)  # + 0.0: no "-0.0"
        raise BandMisalignedError(
            ref_band,
            f"the other bands' sources all sit ({dx:+.1f}, {dy:+.1f}) px from its own where the WCSs put "
            f"them: the {ref_band} band's header WCS is wrong",
        )


# A band's stars may sit this far from the reference band's at the frame's corners once registered (the fitted
# affine offset field, by more than twice its uncertainty). The six real fields reach 0.28 +- 0.10 px (u of
# 1992-1-87; u bands scatter most, g/i/z stay under 0.2 px), simulated full-size fields 0.10 px: 0.75 px leaves a
# factor 2.7 for fields worse than these. A band's WCS rotated by 0.25 degrees or scaled by 0.5 % puts its stars
# 1.1-1.3 px off at the corners of a 300 x 400 frame, 1.3-1.8 px of a 400 x 600 one, 5.7-6.5 px of a full 1489 x
# 2048 one, with nothing off at the centre; the smallest refused there is ~0.035 degrees or ~0.06 %.
MAX_CORNER_PX = 0.75


class BandDistortedError(BandMisalignedError):
    """A band whose stars agree with the reference band's at the centre but drift off towards the corners."""


def _refuse_distorted_bands(
    per_star: list[detection.StarOffsets], shifts: list[tuple[float, float]], ref_index: int, shape: tuple[int, int]
) -> None:
    """Raise BandDistortedError naming the band whose registered stars sit farthest from the reference band's at a
    corner of the frame, beyond MAX_CORNER_PX (a rotation or scale error of its WCS, which the median offset, ~0 at
    the centre, does not show); the reference band when every other band fitted is so (its own WCS is wrong).
    A band with too few stars to fit is left to the median checks."""
    over, fitted = {}, 0
    for k, stars in enumerate(per_star):
        fit = None if k == ref_index else align.fit_offset_field(stars, shape)
        if fit is None:
            continue
        fitted += 1
        corner, distance, sigma = align.worst_corner(fit, shape, shifts[k])
        if distance - 2 * sigma > MAX_CORNER_PX:  # beyond the tolerance by more than the fit's own uncertainty
            over[BANDS[k]] = (corner, distance)
    if not over:
        return
    ref_band = BANDS[ref_index]
    band = max(over, key=lambda b: over[b][1])
    (x, y), distance = over[band]
    if fitted >= 3 and len(over) == fitted:
        raise BandDistortedError(
            ref_band,
            f"the other bands' sources all drift from its own towards the frame's corners ({distance:.1f} px at "
            f"x, y = {x:.0f}, {y:.0f}) where the WCSs put them: the {ref_band} band's header WCS is wrong (rotated "
            "or scaled)",
        )
    raise BandDistortedError(
        band,
        f"its sources sit {distance:.1f} px from the {ref_band} band's at the frame's corner x, y = {x:.0f}, {y:.0f} "
        f"where the WCSs put them (over {MAX_CORNER_PX} px): its header's WCS is wrong (rotated or scaled)",
    )


def align_on_stars(
    images: list[np.ndarray], wcss: list, ref_band: str = REFERENCE_BAND, fid: FieldId | str = "?"
) -> tuple[align.Alignment, detection.Sources, list[tuple[float, float]]]:
    """Align the frames (``BANDS`` order) onto ``ref_band``'s grid through their WCSs; where that leaves a band off
    the field's stars, align it again shifted onto them (one resampling, not two). Returns the aligned cube, its
    sources and the shifts applied; ``fid`` names the field in the log."""
    ref_index = BANDS.index(ref_band)
    result = align.align_bands(images, wcss, ref_index)
    subtracted = detection.subtract_backgrounds(result.cube)
    # beyond what registration on the stars corrects, a band's WCS is wrong (an edited or damaged header)
    coarse = detection.coarse_band_shifts(result.cube, ref_index, subtracted)
    off = detection.shifted_beyond("".join(BANDS), coarse, align.MAX_REGISTRATION_PX)
    if off:
        _refuse_misplaced_reference(coarse, ref_index, align.MAX_REGISTRATION_PX, COARSE_SPREAD_PX)
        band = max(off, key=off.get)
        raise BandMisalignedError(band, _misaligned(off[band], ref_band))
    sources = detection.measure_sources(result.cube, "".join(BANDS), subtracted=subtracted)
    per_star, tried = detection.bright_star_offsets(result.cube, "".join(BANDS), ref_band, sources, subtracted)
    offsets = detection.median_offsets(per_star, tried)
    del subtracted
    # a band whose stars sit ~3 px off matches none of them (band_offsets follows a star about 3 px at most):
    # measure it again after the coarse shift, and add the two
    unmatched = [k for k, (o, c) in enumerate(zip(offsets, coarse, strict=True))
                 if not np.isfinite(o[0]) and np.hypot(*c) >= MIN_COARSE_PX]  # fmt: skip
    if unmatched:
        pre = [coarse[k] if k in unmatched else (0, 0) for k in range(len(BANDS))]
        again = align.align_bands(images, wcss, ref_index, shifts=pre)
        subtracted = detection.subtract_backgrounds(again.cube)
        found = detection.measure_sources(again.cube, "".join(BANDS), subtracted=subtracted)
        per_star_again, tried = detection.bright_star_offsets(again.cube, "".join(BANDS), ref_band, found, subtracted)
        measured = detection.median_offsets(per_star_again, tried)
        del again, subtracted
        for k in unmatched:
            dx, dy, n = measured[k]
            offsets[k] = (pre[k][0] + dx, pre[k][1] + dy, n) if np.isfinite(dx) else (*pre[k], 0)
            s = per_star_again[k]
            per_star[k] = detection.StarOffsets(s.x, s.y, s.dx + pre[k][0], s.dy + pre[k][1])
    spread = COARSE_SPREAD_PX if unmatched else REFERENCE_SPREAD_PX  # an offset known to a whole pixel
    _refuse_misplaced_reference(offsets, ref_index, REFERENCE_OFF_PX, spread)
    for k in unmatched:
        if offsets[k][2] == 0:  # still no star matched: its offset is known to a pixel, too coarse to register on
            raise BandMisalignedError(
                BANDS[k],
                f"its sources sit about {np.hypot(*coarse[k]):.0f} px from the {ref_band} band's where the "
                "WCSs put them, and its stars cannot be matched to register it: its header's WCS is wrong",
            )
    far = {b: float(np.hypot(dx, dy)) for b, (dx, dy, _) in zip(BANDS, offsets, strict=True)
           if np.hypot(dx, dy) > align.MAX_REGISTRATION_PX}  # fmt: skip
    if far:  # registration_shifts would leave such a band as it is, misaligned
        band = max(far, key=far.get)
        raise BandMisalignedError(band, _misaligned(far[band], ref_band))
    shifts = align.registration_shifts(offsets)
    _refuse_distorted_bands(per_star, shifts, ref_index, np.shape(images[ref_index]))
    if any(dx or dy for dx, dy in shifts):
        moved = ", ".join(f"{b} ({dx:+.2f}, {dy:+.2f})" for b, (dx, dy) in zip(BANDS, shifts, strict=True) if dx or dy)
        log.info("field %s: bands registered on the field's stars, shifted by %s px", fid, moved)
        result = align.align_bands(images, wcss, ref_index, shifts=shifts)
        sources = detection.measure_sources(result.cube, "".join(BANDS))
    return result, sources, shifts


def align_field(
    paths: DataPaths, fid: FieldId, ref_band: str = REFERENCE_BAND, out: Path | None = None
) -> tuple[dict, detection.Sources]:
    """Read, align and write one field's cube (to ``out``, by default its place in the data folder); return the
    non-finite input pixels and the aligned coverage of each band, and the sources of the cube as written (the
    registration measures them; the PSF map is fitted to them)."""
    frames = read_field_frames(paths, fid, ref_band)
    ref = frames[BANDS.index(ref_band)]
    nonfinite = {b: f.nonfinite for b, f in zip(BANDS, frames, strict=True)}
    try:
        result, sources, shifts = align_on_stars([f.image for f in frames], [f.wcs for f in frames], ref_band, fid)
    except BandMisalignedError as exc:
        rows, cols = ref.image.shape
        small = rows * cols < SMALL_FRAME_PIXELS and not isinstance(exc, BandDistortedError)  # enough stars fitted
        if ref.simulated and small:  # too few stars to match, not a wrong header
            raise StargalError(
                f"{paths.frame(fid, exc.band)}: field {fid}: its {rows} x {cols}-pixel simulated frames hold too few "
                "stars to register the bands on; simulate larger ones (00_download.py --source simulated --sim-shape "
                "400 600 or more, --force)"
            ) from None
        relpath = sdss.frame_relpath(exc.band, fid.rerun, fid.run, fid.camcol, fid.field)
        fetch = integrity.download_command(relpath, paths, force=True)
        raise StargalError(f"{paths.frame(fid, exc.band)}: {exc}; {fetch} fetches it again") from None
    del frames  # the raw images are no longer needed: lower the peak before writing
    coverage = {b: round(float(np.isfinite(result.cube[k]).mean()), 4) for k, b in enumerate(BANDS)}
    low = {b: c for b, c in coverage.items() if c < LOW_COVERAGE}
    if low:
        shown = ", ".join(f"{b} {100 * c:.0f} %" for b, c in low.items())
        log.warning("field %s: band(s) with data for only part of the frame after alignment: %s", fid, shown)
    meta = cube_meta(fid, ref_band, ref, result)
    for b, (dx, dy) in zip(BANDS, shifts, strict=True):
        meta[f"REGDX_{b}"] = (round(dx, 3), f"{b} registration shift on stars, x px")
        meta[f"REGDY_{b}"] = (round(dy, 3), f"{b} registration shift on stars, y px")
    for b in BANDS:
        meta[f"NONFIN_{b}"] = (nonfinite[b], f"non-finite {b} input pixels masked")
    write_cube(out or paths.cube(fid), result.cube, ref.wcs, "".join(BANDS), meta)
    return {"nonfinite": nonfinite, "coverage": coverage}, sources


SMALL_FRAME_PIXELS = 400 * 600  # simulated frames below this may hold no bright isolated star


def measure_field_psf(
    paths: DataPaths, fid: FieldId, cube_file: Path, sources: detection.Sources | None = None
) -> dict:
    """The PSF map (as JSON-ready dict) of field ``fid``'s cube ``cube_file``, fitted to its own stars
    (``sources``: the cube's, when already measured). A band without stars is the fault of its frame: named."""
    try:
        if sources is not None:
            return psf.psf_map_of(sources, cube_wcs_shape(cube_file)[1], "".join(BANDS)).to_dict()
        cube = read_cube(cube_file)
        return psf.measure_psf_map(np.asarray(cube.data, np.float32), cube.bands).to_dict()
    except psf.NoStarError as exc:
        raise StargalError(f"{paths.frame(fid, exc.band)}: {exc}") from None
    except StargalError as exc:
        rows, cols = cube_wcs_shape(cube_file)[1]
        small = f"; its {rows} x {cols}-pixel frames are small: --sim-shape 400 600 or more holds stars" if (
            rows * cols < SMALL_FRAME_PIXELS) else ""  # fmt: skip
        raise StargalError(f"{paths.frame(fid, REFERENCE_BAND)}: field {fid}: {exc}{small}") from None


def cube_wcs_shape(path: Path):
    """The WCS and (rows, columns) of a written cube, from its header only."""
    header = fits.getheader(path)
    return sdss.quiet_wcs(header), (int(header["NAXIS2"]), int(header["NAXIS1"]))


def fingerprints(files) -> dict[str, str]:
    """{file name: "size:mtime_ns"} of a field's inputs: the record says what its outputs were made from."""
    out = {}
    for p in files:
        st = os.stat(p)
        out[Path(p).name] = f"{st.st_size}:{st.st_mtime_ns}"
    return out


def changed_inputs(
    files, stamps: dict[str, str], digests: dict[str, str] | None, file_stamps: dict[str, list[int]] | None = None
) -> list[str]:
    """Names of ``files`` whose content is not what a record says it was made from: the size or time differs from
    ``stamps`` and, where ``digests`` (sha256) are recorded, the content too: a copy made without keeping times
    (``cp -r``) holds the same frames. With ``file_stamps`` (``fsio.file_stamp``: mtime, ctime, inode) recorded, a
    digest is trusted without reading the file only while that stamp is unchanged: a file replaced by another of
    the same size and modification time (``cp -p``, ``touch -r``, an archive's times) has a new ctime. A record
    written before digests were kept is judged by times alone."""
    now, changed = fingerprints(files), []
    for path in map(Path, files):
        name = path.name
        if stamps.get(name) == now[name] and (
            file_stamps is None or not digests or name not in digests or file_stamps.get(name) == fsio.file_stamp(path)
        ):
            continue
        same_size = stamps.get(name, "").split(":")[0] == now[name].split(":")[0]
        if not (digests and same_size and digests.get(name) == file_sha256(path)):
            changed.append(name)
    return changed


# sha256 of the files read in this process, by (path, size, stamp): a sweep is shared by every field of its
# run/camcol and real ones are hundreds of MB, so each worker reads one once, not once per field. Any write gives
# the file a new ctime (``fsio.file_stamp``), hence a new key: a stale digest is never returned.
_DIGESTS: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """``fsio.sha256_file``, remembered for this process while the file's size and stamp stay the same."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = fsio.sha256_file(path)
    return _DIGESTS[key]


def _digests(files, previous: dict, kind: str) -> dict[str, str]:
    """{name: sha256} of ``files`` for a new record: a digest the previous record (``inputs``) holds is taken as it
    is while the file's size, time and stamp are those recorded with it (``changed_inputs`` trusts it the same)."""
    sizes, digests, stamps = (previous.get(f"{kind}{k}") or {} for k in ("", "_sha256", "_stamp"))
    now = fingerprints(files)
    out = {}
    for p in map(Path, files):
        recorded = digests.get(p.name)
        current = recorded and sizes.get(p.name) == now[p.name] and stamps.get(p.name) == fsio.file_stamp(p)
        out[p.name] = recorded if current else file_sha256(p)
    return out


def input_record(frame_files, catalog_files, previous: dict | None = None) -> dict:
    """What a field record keeps of the inputs its outputs were made from (``changed_inputs`` reads it back): size
    and time, sha256 and file stamp of each frame and sweep. ``previous``: the inputs of the record this one
    replaces, whose digests of unchanged files are kept rather than read again."""
    previous = previous or {}
    return {
        "frames": fingerprints(frame_files),
        "frames_sha256": _digests(frame_files, previous, "frames"),
        "frames_stamp": {Path(p).name: fsio.file_stamp(p) for p in frame_files},
        "catalogs": fingerprints(catalog_files),
        "catalogs_sha256": _digests(catalog_files, previous, "catalogs"),
        "catalogs_stamp": {Path(p).name: fsio.file_stamp(p) for p in catalog_files},
    }


def changed_catalogs(inputs: dict, catalog_files) -> list[str]:
    """The sweeps of ``catalog_files`` whose content differs from those a record's ``inputs`` were made from
    (judged as frames are: ``changed_inputs``; a record of before the sweeps' digests were kept, by size and time)."""
    recorded = inputs.get("catalogs") or {}
    files = [p for p in catalog_files if Path(p).name in recorded]
    return changed_inputs(files, recorded, inputs.get("catalogs_sha256"), inputs.get("catalogs_stamp"))


def stale_cube_reasons(previous: dict | None, frame_files: list[Path], ref_band: str) -> list[str]:
    """Why a field's recorded cube is not current, one reason per item (empty: current; no record: one reason).
    A frame that changed is named by its path, so the user sees which input the new cube differs by."""
    if not previous:
        return ["no intact cube"]
    inputs = previous.get("inputs") or {}
    frames = inputs.get("frames") or {}
    reasons = [f"{p}: not among the frames its cube was made from" for p in frame_files if p.name not in frames]
    known = [p for p in frame_files if p.name in frames]
    changed = set(changed_inputs(known, frames, inputs.get("frames_sha256"), inputs.get("frames_stamp")))
    reasons += [f"{p}: changed since its cube was made" for p in known if p.name in changed]
    if previous.get("ref_band") != ref_band:
        reasons.append(f"cube made on the {previous.get('ref_band')} band's grid, now the {ref_band} band's")
    if previous.get("align_method") != ALIGN_METHOD:
        reasons.append(f"cube made by alignment method {previous.get('align_method')}, now {ALIGN_METHOD}")
    return reasons


def process_field(task: FieldTask) -> dict:
    """Stage 01 for one field (module-level for map_tasks): the sealed set of cube and objects table; returns
    what was done. A current, intact set is kept; the cube alone is kept when only the catalogs changed."""
    paths = DataPaths(Path(task.root))
    fid = task.fid
    cube_path, objects_path, record_path = paths.cube(fid), paths.objects(fid), paths.field_record(fid)
    psf_path = paths.psf_map(fid)
    done = {"field": fid.field, "aligned": False, "objects": False, "align_seconds": None, "cpu_seconds": None}
    frame_files = frame_paths(paths, fid)
    frames_in = fingerprints(frame_files)
    catalogs_in = fingerprints(task.catalog_files)
    previous, listed, intact, broken = None, [], False, set()
    if not task.force:
        check = integrity.field_check(paths, fid)
        previous, listed, intact = check.record, check.files(), check.ok
        if not intact and (cube_path.exists() or record_path.exists()):
            done["repaired"] = check.describe()
            log.warning("field %s: %s; redoing it", fid, check.describe())
        broken = {os.path.normpath(p) for p, _ in check.problems}
        if os.path.normpath(cube_path) in broken:
            previous = None  # the cube itself is broken: align again
    inputs = (previous or {}).get("inputs", {})
    stale = stale_cube_reasons(previous, frame_files, task.ref_band)
    cube_current = not stale
    if previous and stale:  # say which input made the cube stale: the user may not know a frame was replaced
        log.warning("field %s: %s; aligning it again", fid, "; ".join(stale))
    # a sweep replaced by another of its size and time (``cp -p``) is read, not trusted on its times
    sweeps_changed = changed_catalogs(inputs, task.catalog_files) if previous else []
    if sweeps_changed:
        changed = ", ".join(p for p in task.catalog_files if Path(p).name in sweeps_changed)
        log.warning("field %s: %s: changed since its objects table was made; listing its objects again", fid, changed)
    objects_current = (
        intact
        and cube_current
        and inputs.get("frames") == frames_in  # else the record is written again, with the frames' new times
        and inputs.get("catalogs") == catalogs_in
        and not sweeps_changed
        and (objects_path in listed) == bool(task.catalog_files)
    )
    psf_current = cube_current and psf_path in listed and os.path.normpath(psf_path) not in broken
    if cube_current and objects_current and psf_current:
        if task.catalog_files:  # a table made before this check existed, of another sky's catalogs
            check_catalog_sky(paths, fid, cube_path, task.catalog_files, task.catalogs_simulated)
        return done
    fsio.require_writable_output(record_path)
    with OutputSet(record_path) as out:
        sources = None  # the cube's, when aligned here
        if cube_current:
            out.keep(cube_path, previous["integrity"]["files"][cube_path.name])
            cube_file, quality = cube_path, {k: previous.get(k) for k in ("nonfinite", "coverage")}
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            cube_file = out.path(cube_path)
            quality, sources = align_field(paths, fid, task.ref_band, out=cube_file)
            done.update(aligned=True, align_seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
        if psf_current:
            out.keep(psf_path, previous["integrity"]["files"][psf_path.name])
        else:
            t0 = time.perf_counter()
            write_json(out.path(psf_path), measure_field_psf(paths, fid, cube_file, sources))
            done.update(psf=True, psf_seconds=time.perf_counter() - t0)
        record = {
            "field": str(fid),
            "ref_band": task.ref_band,
            "align_method": ALIGN_METHOD,
            "inputs": input_record(frame_files, task.catalog_files, inputs),
            **quality,
            "objects": None,
            "stargal_version": __version__,
        }
        if task.catalog_files:
            check_catalog_sky(paths, fid, cube_file, task.catalog_files, task.catalogs_simulated)
            wcs, shape = cube_wcs_shape(cube_file)
            table, mismatched = catalog.field_objects(task.catalogs, wcs, shape, fid.rerun)
            if mismatched:
                log.warning(
                    "field %s: dropped %d objects whose OBJC_TYPE contradicts their catalog or that both sweeps list",
                    fid,
                    mismatched,
                )
            if len(table) == 0:
                raise StargalError(
                    f"{', '.join(task.catalog_files)}: no catalog object falls inside the frame of field {fid}"
                )
            write_table(out.path(objects_path), table)
            record["objects"] = int(len(table))
            done.update(objects=True, mismatched=mismatched)
        elif objects_path.exists():
            out.remove(objects_path)  # made from catalogs that are gone
            done["objects_removed"] = True  # the report's counts change too
        out.commit(record)
    return done


def check_catalog_sky(
    paths: DataPaths, fid: FieldId, cube_file: Path, catalog_files: tuple[str, ...], simulated: bool | None
) -> None:
    """Refuse catalogs of another sky than the field's frames (the cube's SIMULAT): a simulated sweep left in the
    folder would place its objects on real frames fetched later (or the reverse) and label them, wrongly."""
    if simulated is None:
        return
    frames_simulated = bool(fits.getheader(cube_file).get("SIMULAT", False))
    if frames_simulated != simulated:
        fetch = integrity.download_command(sdss.frame_relpath("r", *fid), paths, force=True, catalogs=True)
        fetch += "" if "--source" in fetch else " [--source ...]"  # the manifest's source, else the user's to name
        raise StargalError(
            f"{', '.join(catalog_files)}: catalog(s) of {sky_name(simulated)}, but the frames of field {fid} are of "
            f"{sky_name(frames_simulated)}: their objects would be labelled by another sky; fetch the catalogs from "
            f"the frames' source ({fetch}), delete them (cubes only, no objects), or use another "
            "--data-dir"
        )


def load_catalogs(paths: DataPaths, fs: FieldSet) -> tuple[dict[str, np.ndarray], tuple[str, ...], bool | None]:
    """The run/camcol's calibObj catalogs that exist (kind -> rows), their files, and their sky (True: stargal's
    simulation; None without catalogs)."""
    found = {k: paths.catalog(fs.rerun, fs.run, fs.camcol, k) for k in CATALOG_KINDS}
    present = {k: p for k, p in found.items() if p.is_file()}
    if not present:
        log.info("no calibObj catalogs for %s: writing cubes only, object coordinates skipped", fs.label)
        return {}, (), None
    for k, p in found.items():
        if k not in present:
            kinds = " and ".join({"gal": "galaxies", "star": "stars"}[k] for k in present)
            log.warning("%s: not found; the objects tables of %s will list %s only", p, fs.label, kinds)
    fetch = {
        k: integrity.download_command(sdss.catalog_relpath(fs.rerun, fs.run, fs.camcol, k), paths) for k in present
    }
    catalogs = {
        k: sdss.read_catalog(
            p,
            redo=f"the file is damaged: {fetch[k]} --verify fetches it again",
            wrong_file=f"wrong file: delete it, and {fetch[k]} fetches it again",
        )
        for k, p in present.items()
    }
    skies = {k: catalog_simulated(p) for k, p in present.items()}
    if len(set(skies.values())) > 1:
        odd = next(k for k, v in skies.items() if v != skies["star"])
        raise StargalError(
            f"{present[odd]}: a catalog of {sky_name(skies[odd])}, but {present['star'].name} is of "
            f"{sky_name(skies['star'])}: fetch both from one source (00_download.py --force ...), or use another "
            "--data-dir"
        )
    return catalogs, tuple(str(p) for p in present.values()), next(iter(skies.values()))


def catalog_simulated(path: Path) -> bool:
    """Whether a calibObj sweep (already read whole by ``sdss.read_catalog``) was written by stargal's simulator:
    SIMULAT = T in its primary header."""
    return bool(fits.getheader(path, 0).get("SIMULAT", False))


def write_tensors(paths: DataPaths, fs: FieldSet, fids: list[FieldId], force: bool = False) -> dict | None:
    """The exercise's tensors of the fields that have object tables; None when there are none.

    images.npy [N, H, W, C] float32 (channels = BANDS, NaN where a band has no cover), written field by
    field into a memory map so all fields are never in RAM at once; gal_coords.npy / star_coords.npy
    [N, K, 2] float32 (x, y) NaN-padded; tensors.json with the field order and per-field counts.
    """
    fids = [f for f in fids if paths.objects(f).is_file()]
    if not fids:
        return None
    files = {n: paths.tensor(fs.rerun, fs.run, fs.camcol, n) for n in ("images", "gal_coords", "star_coords")}
    meta_path = paths.tensors_json(fs.rerun, fs.run, fs.camcol)
    # what the tensors are made from: each field's sealed cube and objects table
    inputs = {str(f.field): fsio.seal_digest(integrity.require_field(paths, f, objects=True)) for f in fids}
    if not force:
        check = fsio.check_seal(meta_path, files.values())
        if check.ok and check.record.get("fields") == [f.field for f in fids] and check.record.get("inputs") == inputs:
            return check.record
        if meta_path.exists() and not check.ok:
            log.warning("%s: %s; writing the tensors again", meta_path, check.describe())
    tables = [read_table(paths.objects(f)) for f in fids]
    first = read_cube(paths.cube(fids[0]))
    shape = (len(fids), *first.shape, first.data.shape[0])
    with OutputSet(meta_path) as out:
        images = fsio.new_npy_memmap(out.path(files["images"]), np.float32, shape)
        for i, f in enumerate(fids):
            cube = read_cube(paths.cube(f))
            if cube.data.shape != first.data.shape:
                raise StargalError(f"{paths.cube(f)}: cube shape {cube.data.shape} differs from {first.data.shape}")
            images[i] = np.moveaxis(cube.data, 0, -1)
        images.flush()
        del images
        gal = catalog.padded_coords(tables, LABEL_GALAXY)
        star = catalog.padded_coords(tables, LABEL_STAR)
        save_npy(out.path(files["gal_coords"]), gal)
        save_npy(out.path(files["star_coords"]), star)
        meta = _tensors_meta(fs, fids, tables, shape, gal, star)
        meta["inputs"] = inputs
        return out.commit(meta)


def _tensors_meta(fs: FieldSet, fids: list[FieldId], tables, shape, gal, star) -> dict:
    meta = {
        "fields": [f.field for f in fids],
        "rerun": fs.rerun,
        "run": fs.run,
        "camcol": fs.camcol,
        "images_shape": list(shape),
        "channels": "".join(BANDS),
        "coords": "x (column), y (row), 0-based pixels of the aligned cube; NaN padding",
        "gal_coords_shape": list(gal.shape),
        "star_coords_shape": list(star.shape),
        "counts": {
            str(f.field): {
                "gal": int(np.sum(t["label"] == LABEL_GALAXY)),
                "star": int(np.sum(t["label"] == LABEL_STAR)),
            }
            for f, t in zip(fids, tables, strict=True)
        },
    }
    return meta


def field_statistics(paths: DataPaths, fid: FieldId) -> dict:
    """Counts, star fraction and band offsets of one processed field, read back from its outputs."""
    header = fits.getheader(paths.cube(fid))
    bands = str(header["BANDS"])
    offsets = {
        b: {k.lower(): float(header.get(f"{k}_{b}", 0.0)) for k in ("DX", "DY", "DRIFT")}
        | {"degree": int(header.get(f"MAPDEG_{b}", 0)), "residual": float(header.get(f"MAPRES_{b}", 0.0))}
        for b in bands
    }
    stats: dict = {
        "field": fid.field,
        "simulated": bool(header.get("SIMULAT", False)),
        "ref_band": str(header.get("REFBAND", "")),
        "offsets": offsets,
    }
    if paths.objects(fid).is_file():
        t = read_table(paths.objects(fid))
        n_star = int(np.sum(t["label"] == LABEL_STAR))
        stats.update(
            objects=int(len(t)),
            galaxies=int(len(t) - n_star),
            stars=n_star,
            star_fraction=round(n_star / len(t), 4) if len(t) else None,
            listed_under_neighbours=int(np.sum(t["field"] != fid.field)),
        )
    else:
        stats.update(objects=None, coordinates="skipped (no catalogs)")
    return stats


def write_reports(paths: DataPaths, fs: FieldSet, fids: list[FieldId], ref_band: str, timings: list[dict]) -> dict:
    """JSON and Markdown summary plus the plots in ``paths.reports("alignment")``."""
    from ..plots import alignment as plots

    out = paths.reports("alignment")
    per_field = [field_statistics(paths, f) for f in fids]
    tables = [read_table(paths.objects(f)) for f in fids if paths.objects(f).is_file()]
    listed = np.concatenate(tables) if tables else np.empty(0, dtype=OBJECT_DTYPE)
    # an object near a field's edge is listed in both overlapping neighbours' tables: counted (and drawn) once
    allobj = listed[np.sort(np.unique(listed["objid"], return_index=True)[1])]
    n_star = int(np.sum(allobj["label"] == LABEL_STAR))
    aligned = [t for t in timings if t.get("aligned")]
    summary = {
        "rerun": fs.rerun,
        "run": fs.run,
        "camcol": fs.camcol,
        "ref_band": ref_band,
        "fields": per_field,
        "totals": {
            "objects": int(len(allobj)),  # distinct
            "listed": int(len(listed)),  # the fields' tables together
            "galaxies": int(len(allobj) - n_star),
            "stars": n_star,
            "star_fraction": round(n_star / len(allobj), 4) if len(allobj) else None,
        },
        "timing": {
            "fields_aligned_this_run": len(aligned),
            "mean_seconds_per_field": round(float(np.mean([t["align_seconds"] for t in aligned])), 3)
            if aligned
            else None,
            "mean_cpu_seconds_per_field": round(float(np.mean([t["cpu_seconds"] for t in aligned])), 3)
            if aligned
            else None,
        },
        "plots": {},
    }
    summary["plots"]["offsets"] = plots.plot_offsets(per_field, out / "band_offsets.png")
    if len(allobj):
        summary["plots"]["counts"] = plots.plot_counts(per_field, out / "object_counts.png")
        summary["plots"]["magnitudes"] = plots.plot_magnitudes(allobj, out / "magnitudes.png")
    frames = {b: sdss.read_frame(paths.frame(fids[0], b)) for b in ("g", "r", "i")}
    cube = read_cube(paths.cube(fids[0]))
    summary["plots"]["before_after"] = plots.plot_before_after(
        {b: f.image for b, f in frames.items()}, cube, out / "before_after.png", title=f"field {fids[0]}"
    )
    figures = list(summary["plots"].values())
    summary["plots"] = {k: os.path.relpath(v, out) for k, v in summary["plots"].items()}
    write_text(out / "summary.md", summary_markdown(summary))
    return fsio.seal(out / "summary.json", [out / "summary.md", *figures], summary)  # last: with the checksums


def summary_markdown(summary: dict) -> str:
    """summary.md of stage 01: per-field counts and band offsets, totals, timing and the plots."""
    header = ["field", "objects", "galaxies", "stars", "star fraction", "from neighbours"]
    header += [f"{b} dx, dy (drift)" for b in BANDS]
    rows = []
    for f in summary["fields"]:
        offs = [f"{o['dx']:+.2f}, {o['dy']:+.2f} ({o['drift']:.2f})" for o in f["offsets"].values()]
        if f.get("objects") is None:
            counts = ["skipped", "", "", "", ""]
        else:
            counts = [
                f["objects"],
                f["galaxies"],
                f["stars"],
                f"{f['star_fraction']:.3f}",
                f["listed_under_neighbours"],
            ]
        rows.append([f["field"], *counts, *offs])
    lines = [
        f"# Stage 01: alignment of {summary['rerun']}/{summary['run']}/{summary['camcol']}",
        "",
        f"Bands resampled onto the {summary['ref_band']}-band pixel grid. Offsets: band pixel minus reference pixel at the"
        " frame centre; drift: largest change of the offset across the frame.",
        "",
        markdown_table(header, rows, fmt=str).rstrip("\n"),
    ]
    t = summary["totals"]
    lines += ["", f"Total: {t['objects']} distinct objects, {t['galaxies']} galaxies, {t['stars']} stars"]
    if t["star_fraction"] is not None:
        lines[-1] += f" (star fraction {t['star_fraction']:.3f})"
    timing = summary["timing"]
    if timing["fields_aligned_this_run"]:
        lines += [
            "",
            f"Aligned {timing['fields_aligned_this_run']} field(s) this run, {timing['mean_seconds_per_field']} s wall, {timing['mean_cpu_seconds_per_field']} s CPU per field.",
        ]
    lines += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in summary["plots"].items()]
    return "\n".join(lines) + "\n"


def _summary_covers(summary_path: Path, fids: list[FieldId]) -> bool:
    """Whether the alignment summary is intact and describes exactly these fields (another run's stage 01 on
    other fields, e.g. one real field aligned for predict.py, replaces it; this run's fields bring it back)."""
    check = fsio.check_seal(summary_path)
    if not check.ok:
        return False
    r = check.record
    described = (r.get("rerun"), r.get("run"), r.get("camcol"), [f.get("field") for f in r.get("fields", [])])
    return described == (fids[0].rerun, fids[0].run, fids[0].camcol, [f.field for f in fids])


def run_alignment(
    paths: DataPaths,
    fs: FieldSet,
    *,
    ref_band: str = REFERENCE_BAND,
    workers: int = 1,
    scheduler: str | None = None,
    force: bool = False,
    reports: bool = True,
) -> dict:
    """Stage 01 over the fields of ``fs``; returns a summary dict (what was done, counts, where things went)."""
    if ref_band not in BANDS:
        raise StargalError(f"--ref-band {ref_band!r}: expected one of {' '.join(BANDS)}")
    fids = [FieldId(fs.rerun, fs.run, fs.camcol, f) for f in fs.fields]
    if not fids:
        raise StargalError("--fields: no fields to align")
    check_frames(paths, fids)
    catalogs, catalog_files, catalogs_simulated = load_catalogs(paths, fs)
    tasks = [
        FieldTask(
            str(paths.root),
            fid,
            ref_band,
            force,
            {k: catalog.prefilter(c, fid.field) for k, c in catalogs.items()},
            catalog_files,
            catalogs_simulated,
        )
        for fid in fids
    ]
    done = map_tasks(process_field, tasks, workers=workers, scheduler=scheduler, description="aligning fields")
    changed = any(d["aligned"] or d["objects"] or d.get("objects_removed") for d in done)
    tensors = write_tensors(paths, fs, fids, force=force or changed) if catalog_files else None
    result = {
        "fields": [f.field for f in fids],
        "aligned": [d["field"] for d in done if d["aligned"]],
        "objects_written": [d["field"] for d in done if d["objects"]],
        "coordinates": ("written" if any(d["objects"] for d in done) else "up to date")
        if catalog_files
        else "skipped (no calibObj catalogs)",
        "tensors": str(paths.tensors_dir(fs.rerun, fs.run, fs.camcol)) if tensors else None,
        "timings": done,
    }
    summary_path = paths.reports("alignment", "summary.json")
    if reports and (changed or force or not _summary_covers(summary_path, fids)):
        summary = write_reports(paths, fs, fids, ref_band, done)
        result["totals"] = summary["totals"]
        result["reports"] = str(paths.reports("alignment"))
    return result
