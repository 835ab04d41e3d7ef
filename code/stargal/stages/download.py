"""Stage 00 runner: fetch a field set's frames, irg jpegs and sweep catalogs into ``data/sas/``.

Files keep their SAS names and layout (``DataPaths.frame``, ``.irg_jpeg``, ``.catalog``); the manifest
(``DataPaths.manifest``) records source URL, size and sha256 of each. Workers (threads: the work is I/O)
fetch files; only the main thread touches the manifest and the progress display.

With ``scheduler`` (``--scheduler ADDRESS``) the files are fetched on an existing Dask cluster instead, one
task per field (its frames and irg jpeg) and one per catalog, straight into the data folder, which every
worker must share (a local ``--source`` folder too). Tasks return what they fetched; only this process
merges that into the manifest, saved atomically as each task's files arrive. The simulated sky renders
its fields on the cluster likewise.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests

from .. import sdss
from ..config import BANDS, DEFAULT_SEEING, FRAME_SHAPE, SEED, SIMULATION_VERSION, FieldSet
from ..download import (
    DISK_FULL,
    FetchCancelled,
    FetchError,
    FetchResult,
    HttpSettings,
    Manifest,
    copy_local,
    describe_error,
    fetch_http,
    make_session,
    partial_path,
    verify_sdss_file,
)
from ..errors import StargalError, exception_chain
from ..parallel import map_tasks
from ..paths import DataPaths, FieldId
from ..progress import interactive
from ..sources import FileSpec, HttpSource, LocalSource, SimulatedSource, Source, redact_url, resolve_source
from ..verify import VerificationError, sha256_file, verify_file

log = logging.getLogger("stargal")
SHOWN_FAILURES = 10  # failures named one by one (in the log and the summary); the rest are counted


@dataclass(frozen=True)
class DownloadOptions:
    source: str = "sdss"
    bands: tuple[str, ...] = BANDS
    frames_only: bool = False
    pictures: bool = True  # the fields' irg colour jpegs (a picture for people; no stage reads them)
    force: bool = False
    verify_existing: bool = False  # re-hash complete files against the manifest's sha256 (refetch on mismatch)
    workers: int = 4
    http: HttpSettings = HttpSettings()
    seed: int = SEED  # simulated source only
    sim_shape: tuple[int, int] = FRAME_SHAPE  # simulated source only
    sim_seeing: str = DEFAULT_SEEING  # simulated source only: how each field's seeing is drawn
    scheduler: str | None = None  # a Dask scheduler address (or scheduler file): fetch on that cluster


@dataclass
class DownloadSummary:
    source: str
    planned: int = 0
    fetched: int = 0
    skipped: int = 0
    kept: int = 0  # of the skipped: not in the manifest, but verified in the data folder and kept
    resumed: int = 0
    bytes: int = 0  # bytes transferred (network or local copy) in this run
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # file label -> reason

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        rate = self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0
        out = [
            f"source {self.source}: {self.planned} files, {self.fetched} fetched ({self.resumed} resumed), "
            f"{self.skipped} already complete{f' ({self.kept} of them verified and kept)' if self.kept else ''}, "
            f"{len(self.failures)} failed; "
            f"{self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s ({rate:.1f} MB/s)"
        ]
        out += [f"FAILED {label}: {reason}" for label, reason in list(self.failures.items())[:SHOWN_FAILURES]]
        rest = list(self.failures.values())[SHOWN_FAILURES:]
        if rest:
            kinds: dict[str, int] = {}
            for reason in rest:
                key = re.sub(r"\S*[/\\]\S*", "...", reason)  # the same reason for another file or URL
                kinds[key] = kinds.get(key, 0) + 1
            common = sorted(kinds.items(), key=lambda kv: -kv[1])[:3]
            out.append(
                f"... and {len(rest)} more failed files ("
                + "; ".join(f"{n} {reason}" for reason, n in common)
                + ("; ..." if len(kinds) > 3 else "")
                + ")"
            )
        return out


class _FailureLog:
    """Logs the first SHOWN_FAILURES failures as they happen, then says once that the rest are only counted."""

    def __init__(self, rest: str = "further failures are not shown one by one; the summary at the end counts them"):
        self.count = 0
        self.rest = rest

    def log(self, message: str, *args) -> None:
        self(message, *args)

    def __call__(self, message: str, *args) -> None:
        self.count += 1
        if self.count <= SHOWN_FAILURES:
            log.warning(message, *args)
        elif self.count == SHOWN_FAILURES + 1:
            log.warning(self.rest)


def check_bands(bands: str | tuple[str, ...]) -> tuple[str, ...]:
    """Parse ``--bands`` ("ugriz", "g r", "u,g"); raise StargalError naming an unknown band."""
    letters = [b for b in (bands if isinstance(bands, tuple) else tuple(bands)) if b not in " ,"]
    for band in letters:
        if band not in BANDS:
            raise StargalError(f"--bands: unknown band {band!r} (expected letters of {''.join(BANDS)})")
    if not letters:
        raise StargalError("--bands: no band given")
    return tuple(b for b in BANDS if b in letters)  # canonical order, no duplicates


def plan_files(
    fs: FieldSet, bands: tuple[str, ...] = BANDS, frames_only: bool = False, pictures: bool = True
) -> list[FileSpec]:
    """Every file of the field set: catalogs first (largest), then per field its frames and (with ``pictures``)
    irg jpeg."""
    if not fs.fields:
        raise StargalError("--fields: no field given")
    if any(f < 0 for f in fs.fields):
        raise StargalError(f"--fields: field numbers must be non-negative ({fs.fields})")
    rr, run, cc = fs.rerun, fs.run, fs.camcol
    specs = []
    if not frames_only:
        specs += [FileSpec(sdss.catalog_relpath(rr, run, cc, k), "catalog", k, rr, run, cc) for k in sdss.CATALOG_KINDS]
    for f in fs.fields:
        specs += [FileSpec(sdss.frame_relpath(b, rr, run, cc, f), "frame", b, rr, run, cc, f) for b in bands]
        if pictures:
            specs.append(FileSpec(sdss.irg_relpath(rr, run, cc, f), "irg", "irg", rr, run, cc, f))
    return specs


def final_path(paths: DataPaths, spec: FileSpec) -> Path:
    """Where a planned file goes in the data folder."""
    if spec.kind == "catalog":
        return paths.catalog(spec.rerun, spec.run, spec.camcol, spec.band)
    fid = FieldId(spec.rerun, spec.run, spec.camcol, spec.field)
    return paths.irg_jpeg(fid) if spec.kind == "irg" else paths.frame(fid, spec.band)


def checked_request(options: DownloadOptions) -> tuple[tuple[str, ...], Source, bool]:
    """The bands, the source and whether the irg pictures are planned, after every check of ``options`` that needs
    no data folder: 00 makes these before it makes the folder, so that a refused request leaves none behind."""
    bands = check_bands(options.bands)
    source = resolve_source(options.source)
    pictures = options.pictures
    if isinstance(source, SimulatedSource):
        if bands != BANDS:  # the simulator renders (and writes) a field's five bands together
            raise StargalError(
                f"--bands {''.join(bands)}: the simulated sky writes every band of a field (all five are drawn "
                "together); leave --bands out with --source simulated"
            )
        pictures = True  # the simulator writes each field's irg jpeg: recorded like the frames
        if not options.scheduler:  # a cluster's workers have their own memory
            from .simulate import check_shape_fits

            check_shape_fits(tuple(options.sim_shape))
    return bands, source, pictures


def run_download(paths: DataPaths, fs: FieldSet, options: DownloadOptions = DownloadOptions()) -> DownloadSummary:
    """Fetch every planned file that is not already complete; never raises for a single file's failure."""
    bands, source, pictures = checked_request(options)
    specs = plan_files(fs, bands, options.frames_only, pictures)
    start = time.monotonic()
    manifest = Manifest.load(paths.manifest)
    summary = DownloadSummary(source.describe(), planned=len(specs))
    sim_url = simulated_url(options) if isinstance(source, SimulatedSource) else None
    damaged = _FailureLog("further damaged files are fetched again without being named")
    todo, replaced, unrecorded = [], [], []
    for spec in specs:
        final = final_path(paths, spec)
        if options.force:
            partial_path(final).unlink(missing_ok=True)
            manifest.forget(spec.relpath)
        problem = manifest.problem(spec.relpath, final)
        if problem == "not recorded" and not options.force and sim_url is None and final.is_file():
            unrecorded.append(spec)  # a damaged or lost manifest: the file is verified, and kept when it is whole
        if problem not in (None, "not recorded", "missing"):
            damaged.log("%s: %s; fetching it again", final, problem)
        if (
            problem is None
            and _same_origin(manifest.files[spec.relpath].get("url", ""), sim_url)
            and not (options.verify_existing and _hash_differs(manifest, spec, final))
        ):
            # a local folder may hold another sky under the same names: complete only if it is this folder's file
            if isinstance(source, LocalSource) and _not_in_source(source, spec, manifest.files[spec.relpath]):
                todo.append(spec)
                if source.locate(spec) is not None:  # an absent one is named missing (a jpeg: left out) below
                    replaced.append(spec)
            else:
                summary.skipped += 1
        else:
            todo.append(spec)
    kept: set[FileSpec] = set()
    if unrecorded:
        kept = _keep_unrecorded(paths, source, unrecorded, manifest, options)
        todo = [spec for spec in todo if spec not in kept]
        summary.skipped += len(kept)
        summary.kept = len(kept)
    if sim_url is not None:  # the simulation's own files (no record seals them): a damaged one is drawn again
        from .simulate import damaged_simulation

        fields, truth = damaged_simulation(paths, fs, options.frames_only)
        redraw = [s for s in specs if s not in todo and (s.field in fields if s.kind != "catalog" else truth)]
        if redraw:
            log.info(
                "the simulation's own files are damaged (%s): drawing them again",
                ", ".join(map(str, fields)) or "truth",
            )
        todo += redraw
        summary.skipped -= len(redraw)
    if summary.skipped:
        how = "manifest"
        if kept:  # verified just now, not found complete in the manifest
            how = (f"{summary.skipped - len(kept)} recorded in the manifest, {len(kept)} not recorded but verified "
                   "and kept")  # fmt: skip
        log.info("%d of %d files already complete (%s); --force refetches them", summary.skipped, len(specs), how)
    if replaced:
        log.info(
            "%d file(s) of the data folder differ from those in --source %s (%s%s): copying them again",
            len(replaced), source.root, replaced[0].name, ", ..." if len(replaced) > 1 else "",
        )  # fmt: skip
    if todo and not isinstance(source, LocalSource):  # a local folder's sky is read from its files, below
        _refuse_mixed_skies(paths, fs, manifest, sim_url or REAL, options.frames_only)
    if todo:
        if isinstance(source, SimulatedSource):
            _simulate(paths, fs, todo, options, manifest, summary)
        else:
            if isinstance(source, HttpSource):
                _check_reachable(source, options.http)
            elif not any(source.locate(spec) for spec in todo) and not source.holds_sdss_files():
                other = sorted(source.unaccepted_copies().values())
                if other:
                    more = f" and {len(other) - 1} more" if len(other) > 1 else ""
                    raise StargalError(
                        f"--source {source.root}: no SDSS file in it under the SAS's names; it holds {other[0]}"
                        f"{more}, {_ENCODING_HINT}"
                    )
                raise StargalError(
                    f"--source {source.root}: no SDSS file in it (frame-*.fits.bz2, calibObj-*.fits.gz; in SAS, "
                    "bundle or any layout)"
                )
            else:
                todo = _without_absent_pictures(source, todo, summary)
                _refuse_mixed_local_skies(paths, fs, manifest, source, todo, options.workers)
            if options.scheduler:
                _fetch_on_cluster(paths, source, todo, options, manifest, summary)
            else:
                _fetch_all(paths, source, todo, options, manifest, summary)
    summary.seconds = time.monotonic() - start
    return summary


def _keep_unrecorded(
    paths: DataPaths, source: Source, specs: list[FileSpec], manifest: Manifest, options: DownloadOptions
) -> set[FileSpec]:
    """Record the files of ``specs`` (in the data folder, absent from the manifest: it was damaged or deleted) that
    this run would fetch unchanged, instead of fetching them again: a whole file of its kind whose header is its
    name's (frame or sweep), and
    - from an HTTP source (real SDSS), of the real sky (a frame's or sweep's SIMULAT header; an irg jpeg when its
      field's r frame is real) and of the size the server gives for its URL (a HEAD request: another release's or
      another mirror's file of this name is fetched again), recorded with that URL;
    - from a local folder, the very bytes of the folder's file (size and sha256), recorded with its path.
    A file failing any of this is fetched again, as before. Returns the specs kept."""
    if not isinstance(source, (HttpSource, LocalSource)):
        return set()
    located = {spec: source.locate(spec) for spec in specs} if isinstance(source, LocalSource) else {}
    sessions = _Sessions(options.http)
    timeout = (options.http.connect_timeout, options.http.read_timeout)

    def served_size(url: str) -> int | None:
        try:
            with sessions.get().head(url, timeout=timeout, allow_redirects=True) as resp:
                length = resp.headers.get("Content-Length", "")
                if resp.status_code != 200 or "html" in resp.headers.get("Content-Type", "").lower():
                    return None
                return int(length) if length.isdigit() else None
        except requests.RequestException:
            return None

    def check(spec: FileSpec) -> tuple[FileSpec, str | None, object]:
        final = final_path(paths, spec)
        try:
            if isinstance(source, LocalSource):
                src = located[spec]
                if src is None or src.stat().st_size != final.stat().st_size:
                    return spec, None, None
                verified = verify_sdss_file(final, spec.kind, None, final.name, spec.rerun)
                if sha256_file(src) != verified.sha256:
                    return spec, None, None
                return spec, src.as_uri(), verified
            if spec.kind == "irg":
                r_frame = paths.frame(FieldId(spec.rerun, spec.run, spec.camcol, spec.field), "r")
                if not r_frame.is_file() or _header_sky(r_frame) != REAL:
                    return spec, None, None
            elif _header_sky(final) != REAL:
                return spec, None, None
            url = source.url(spec)
            if served_size(url) != final.stat().st_size:
                return spec, None, None
            return spec, url, verify_sdss_file(final, spec.kind, None, final.name, spec.rerun)
        except VerificationError as exc:
            log.warning("%s: not in the manifest and %s; fetching it again", final, exc)
        except OSError:
            pass  # unreadable: fetched again, whose failure names why
        return spec, None, None

    kept = set()
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(options.workers, 8))) as pool:  # hashing, bz2: no GIL
            for spec, url, verified in pool.map(check, specs):
                if url is not None:
                    final = final_path(paths, spec)
                    manifest.record(spec.relpath, url, verified.size, verified.sha256, final)
                    kept.add(spec)
    finally:
        sessions.close()
    if kept:
        manifest.save()
        log.info(
            "%d file(s) in the data folder but not in its manifest were verified and kept (%s%s)",
            len(kept), next(iter(kept)).name, ", ..." if len(kept) > 1 else "",
        )  # fmt: skip
    return kept


def _without_absent_pictures(source: LocalSource, todo: list[FileSpec], summary: DownloadSummary) -> list[FileSpec]:
    """``todo`` less the irg jpegs a local copy does not hold: pictures for people that no stage reads, so a copy of
    the FITS files alone is complete (one warning, no failure); a damaged jpeg it holds still fails."""
    absent = [spec for spec in todo if spec.kind == "irg" and source.locate(spec) is None]
    if absent:
        log.warning(
            "%d irg picture(s) not in %s (%s%s): not fetched; no stage reads them",
            len(absent), source.root, absent[0].name, ", ..." if len(absent) > 1 else "",
        )  # fmt: skip
        summary.planned -= len(absent)
    return [spec for spec in todo if spec not in absent]


REAL = "real SDSS"
SIMULATED = "a simulated sky"  # stargal's simulation (SIMULAT = T), which one unknown: a local copy's


def _sky_of(url: str) -> str | None:
    """The sky a recorded file holds: its simulation, "real SDSS" (fetched over HTTP), or None for a local copy,
    which could hold either (``_folder_sky`` reads it from the file)."""
    if url.startswith("simulated:"):
        return url
    return REAL if url.lower().startswith(("http://", "https://")) else None


def _header_sky(path: Path) -> str | None:
    """The sky of a frame or catalog file from its primary header (SIMULAT = T: stargal's simulation), reading
    only the start of the compressed stream; None when it cannot be read (its copy or check names why)."""
    import bz2
    import gzip

    from astropy.io import fits

    opener = bz2.open if path.name.endswith(".bz2") else gzip.open
    data = b""
    try:
        with opener(path, "rb") as fh:
            while len(data) < 64 * 2880:
                block = fh.read(2880)
                if len(block) < 2880:
                    return None
                data += block
                if any(block[i : i + 80].rstrip() == b"END" for i in range(0, 2880, 80)):
                    header = fits.Header.fromstring(data.decode("ascii", "replace"))
                    return SIMULATED if header.get("SIMULAT", False) else REAL
    except (OSError, EOFError, ValueError):
        return None
    return None


def _folder_sky(path: Path, entry: object) -> str | None:
    """The sky of a file in the data folder: its manifest entry's source when that tells (a simulation, an HTTP
    download), else (a local copy, an unrecorded file) its header's; None for an absent or unreadable file."""
    sky = _sky_of(str(entry.get("url", ""))) if isinstance(entry, dict) else None
    if sky is None and path.is_file():
        sky = _header_sky(path)
    return sky


def _other_sky(a: str | None, b: str | None) -> bool:
    """Whether two skies differ: real against simulated, or two known simulations (a local copy's simulated file
    may be of any simulation)."""
    if a is None or b is None or a == b:
        return False
    return REAL in (a, b) or SIMULATED not in (a, b)


def _refuse_mixed_local_skies(
    paths: DataPaths, fs: FieldSet, manifest: Manifest, source: LocalSource, todo: list[FileSpec], workers: int
) -> None:
    """The mixed-sky check of ``_refuse_mixed_skies`` for a local folder, which may hold either sky: the sky of each
    file it is to give is read from that file's header (SIMULAT), before anything is copied. The run/camcol's
    catalogs after this run (copied, or kept from the data folder) must be of one sky, the frames copied of theirs,
    and, where the catalogs are replaced, the frames of other fields already in the folder too."""
    rr, run, cc = fs.rerun, fs.run, fs.camcol
    catalogs: dict[str, tuple[Path, str]] = {}  # kind -> (file, sky) after this run
    copied = {spec.band: src for spec in todo if spec.kind == "catalog" and (src := source.locate(spec)) is not None}
    for kind in sdss.CATALOG_KINDS:
        if kind in copied:
            sky = _header_sky(copied[kind])
            where = copied[kind]
        else:
            where = paths.catalog(rr, run, cc, kind)
            sky = _folder_sky(where, manifest.files.get(sdss.catalog_relpath(rr, run, cc, kind)))
        if sky is not None:
            catalogs[kind] = (where, sky)
    if not catalogs:
        return  # no catalog to label the frames: any sky will do
    (first, sky), *rest = catalogs.values()
    for other, other_sky in rest:
        if _other_sky(sky, other_sky):
            raise StargalError(
                f"{other}: a catalog of {other_sky}, but {first} is of {sky}: a run/camcol's catalogs hold one sky; "
                "copy both from one --source (no --frames-only), or use another --data-dir"
            )
    frames = [src for spec in todo if spec.kind == "frame" and (src := source.locate(spec)) is not None]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, 8))) as pool:  # bz2 releases the GIL
        for src, frame_sky in zip(frames, pool.map(_header_sky, frames), strict=True):
            if _other_sky(frame_sky, sky):
                raise StargalError(
                    f"{src}: a frame of {frame_sky}, but {first} is a catalog of {sky}, which would label it with "
                    "objects it does not show: copy the catalogs from the frames' folder too (no --frames-only), "
                    "delete them, or use another --data-dir"
                )
    if copied:
        _refuse_other_fields(paths, fs, manifest, sky)


def _refuse_mixed_skies(paths: DataPaths, fs: FieldSet, manifest: Manifest, wanted: str, frames_only: bool) -> None:
    """A run/camcol's catalogs list the objects of all its fields: written for one sky (real, or one simulation)
    they would point the frames of another sky's fields, already in the folder, at objects that are not there;
    and frames of one sky fetched alone beside another sky's catalogs would be labelled by them. ``wanted``: the
    sky this run writes (``_sky_of``)."""
    if frames_only:
        for kind in sdss.CATALOG_KINDS:
            catalog = paths.catalog(fs.rerun, fs.run, fs.camcol, kind)
            sky = _folder_sky(catalog, manifest.files.get(sdss.catalog_relpath(fs.rerun, fs.run, fs.camcol, kind)))
            if _other_sky(sky, wanted) and catalog.exists():
                raise StargalError(
                    f"{catalog}: a catalog of the sky {sky}, which would "
                    f"label frames of {wanted}: fetch the catalogs too (no --frames-only), or use another --data-dir"
                )
        return
    _refuse_other_fields(paths, fs, manifest, wanted)


def _refuse_other_fields(paths: DataPaths, fs: FieldSet, manifest: Manifest, wanted: str) -> None:
    """Refuse to write the run/camcol's catalogs for the sky ``wanted`` under other fields' frames of another sky."""
    folder = paths.frames_dir(fs.rerun, fs.run, fs.camcol)
    others: dict[int, str] = {}
    for frame in sorted(folder.glob("frame-r-*.fits.bz2")) if folder.is_dir() else []:
        info = sdss.parse_filename(frame.name)
        if info is None or info["field"] in fs.fields:
            continue
        entry = manifest.files.get(sdss.frame_relpath("r", fs.rerun, fs.run, fs.camcol, info["field"]))
        sky = _folder_sky(frame, entry)  # a local copy or an unrecorded frame: its header tells
        if _other_sky(sky, wanted):
            others[info["field"]] = sky
    if others:
        fields = " ".join(map(str, sorted(others)))
        raise StargalError(
            f"{folder}: field(s) {fields} hold the sky {next(iter(others.values()))}, not {wanted}, and the catalogs "
            "this run writes cover every field of the run/camcol: download with the same source and settings "
            "(--seed, --sim-shape, --sim-seeing), add those fields to --fields to replace them too, or use another "
            "--data-dir"
        )


def simulated_url(options: DownloadOptions) -> str:
    """The manifest's source of a simulated file: simulator version, seed, frame shape and (when not the
    default) the seeing draw."""
    rows, cols = options.sim_shape
    seeing = "" if options.sim_seeing == DEFAULT_SEEING else f",seeing={options.sim_seeing}"
    return f"simulated:v{SIMULATION_VERSION}:seed={options.seed},shape={rows}x{cols}{seeing}"


def _same_origin(recorded_url: str, sim_url: str | None) -> bool:
    """A complete file counts only if it came from this source: the same simulation, or real data for real."""
    if sim_url is not None:
        return recorded_url == sim_url
    return not recorded_url.startswith("simulated:")


def _not_in_source(source: LocalSource, spec: FileSpec, entry: dict) -> bool:
    """Whether a complete, recorded file differs from the local source's file of that name (or the source lacks
    one): size first, then the source file's sha256 against the one the manifest recorded."""
    src = source.locate(spec)
    if src is None:
        return True
    try:
        return src.stat().st_size != entry.get("size") or sha256_file(src) != entry.get("sha256")
    except OSError:
        return True  # unreadable: the copy names why


def _hash_differs(manifest: Manifest, spec: FileSpec, final: Path) -> bool:
    """--verify: whether a recorded file's content differs from its record, or (a sweep) is not its name's sweep
    (recorded before 00 checked that): then it is forgotten, so that only a good copy is recorded again."""
    if sha256_file(final) != manifest.files[spec.relpath].get("sha256"):
        log.warning("%s: content differs from the manifest's sha256; fetching it again", spec.name)
        return True
    if spec.kind != "catalog":
        return False
    try:
        problems = sdss.catalog_head_problems(final, rerun=spec.rerun)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zlib.error) as exc:
        problems = [f"sweep table unreadable ({exc})"]
    if not problems:
        return False
    log.warning("%s: not this file name's sweep: %s; fetching it again", final, "; ".join(problems))
    manifest.forget(spec.relpath)
    manifest.save()
    return True


def _check_reachable(source: HttpSource, settings: HttpSettings) -> None:
    """Fail fast with one line when the source's host cannot be reached at all (any HTTP answer is fine)."""
    session = make_session(settings)
    timeout = (settings.connect_timeout, settings.read_timeout)
    reason = ""
    try:
        for attempt in range(min(settings.retries, 2) + 1):
            try:
                session.head(source.base_url, timeout=timeout, allow_redirects=True).close()
                return
            except requests.RequestException as exc:
                reason = describe_error(exc)
                if attempt < min(settings.retries, 2):
                    time.sleep(settings.backoff)
    finally:
        session.close()
    raise StargalError(f"--source {source.describe()}: cannot reach the server ({reason})")


class _Display:
    """Files and bytes progress: two tqdm bars on a terminal, a log line per finished file otherwise."""

    def __init__(self, total_files: int):
        self.total = total_files
        self.done = 0
        self.bytes = 0
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._bars = None
        self._failed = _FailureLog()
        if interactive():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # log lines (retries, failures) go above the bars instead of through them
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
            files = tqdm(total=total_files, desc="files", unit="file", file=sys.stderr, leave=False, position=0)
            data = tqdm(
                desc="bytes", unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False, position=1
            )
            self._bars = (files, data)

    def add_bytes(self, n: int) -> None:  # called from worker threads
        with self._lock:
            self.bytes += n
            if self._bars:
                self._bars[1].update(n)

    def file_done(self, spec: FileSpec, result: FetchResult | None, error: str | None) -> None:
        with self._lock:
            self.done += 1
            if self._bars:
                self._bars[0].update(1)
        elapsed = time.monotonic() - self.start
        if error is not None:
            self._failed("[%d/%d] FAILED %s: %s", self.done, self.total, spec.label, error)
        elif not self._bars:
            rate = self.bytes / elapsed / 1e6 if elapsed > 0 else 0.0
            eta = elapsed / self.done * (self.total - self.done)
            note = ", resumed" if result.resumed else ""
            log.info(
                "[%d/%d] %s (%.2f MB%s); %.1f MB at %.1f MB/s, ETA %.0f s",
                self.done, self.total, spec.name, result.size / 1e6, note, self.bytes / 1e6, rate, eta,
            )  # fmt: skip

    def close(self) -> None:
        if self._bars:
            for bar in reversed(self._bars):  # bottom bar first, so the cursor ends where the bars began
                bar.close()
            self._redirect.__exit__(None, None, None)
            self._bars = None


class _Sessions:
    """One requests.Session per worker thread (connection reuse), all closed at the end."""

    def __init__(self, settings: HttpSettings):
        self.settings = settings
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = make_session(self.settings)
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        for session in self._all:
            session.close()


def _fetch_one(
    spec: FileSpec, final: Path, source: Source, settings: HttpSettings, display, cancel, sessions
) -> FetchResult:
    """Worker: fetch one file (HTTP or local copy); FetchError carries the reason."""
    return _fetch_file(spec, final, source, settings, sessions.get, progress=display.add_bytes, cancel=cancel)


def _fetch_file(
    spec: FileSpec, final: Path, source: Source, settings: HttpSettings, session, *, progress=None, cancel=None
) -> FetchResult:
    """Fetch one file (HTTP or local copy); ``session()`` gives the requests session; FetchError carries why."""
    if isinstance(source, LocalSource):
        src = source.locate(spec)
        if src is None:
            raise FetchError(_not_found(source, spec))
        return copy_local(src, final, spec.kind, progress=progress, rerun=spec.rerun)
    return fetch_http(
        session(), source.url(spec), final, spec.kind, settings, progress=progress, cancel=cancel, rerun=spec.rerun
    )


def _failure_reason(exc: FetchError | OSError) -> str:
    import requests

    if isinstance(exc, FetchError):
        return str(exc)
    if isinstance(exc, requests.RequestException):  # an OSError too, but the network's, not the disk's
        return f"download failed ({redact_url(str(exc))})"
    where = f" {exc.filename}" if exc.filename else ""  # the file or folder the data folder's disk refused
    return f"cannot write{where} ({exc.strerror or exc})"  # local disk trouble (full, read-only, permissions)


def _fetch_all(paths, source, todo, options, manifest, summary) -> None:
    display = _Display(len(todo))
    cancel = threading.Event()
    sessions = _Sessions(options.http)
    window = max(1, options.workers) * 16  # files in flight: memory and each wait() stay small for any --fields
    queue = iter(todo)
    pending: dict[Future, FileSpec] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="download") as pool:
            try:
                while True:
                    for spec in queue:
                        if isinstance(source, LocalSource) and source.locate(spec) is None:
                            _missing(spec, source, summary, display)  # known at once: no thread needed
                            continue
                        final = final_path(paths, spec)
                        args = (spec, final, source, options.http, display, cancel, sessions)
                        pending[pool.submit(_fetch_one, *args)] = spec
                        if len(pending) >= window:
                            break
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        spec = pending.pop(future)
                        _stop_on_full_disk(future, final_path(paths, spec))
                        _collect(spec, future, manifest, summary, display)
            except BaseException:
                cancel.set()  # workers stop at the next chunk; partial files stay for the next run
                for future in pending:
                    future.cancel()
                raise
    except BaseException:
        # files whose fetch ended (whole and verified, at their final names) before the stop was seen: recorded,
        # so that the next run does not fetch them again; only the files still in flight are lost
        for future, spec in pending.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                _collect(spec, future, manifest, summary, display)
        raise
    finally:
        display.close()
        sessions.close()


def _stop_on_full_disk(future: Future, final: Path) -> None:
    """A file that failed because the data folder's disk is full (or the quota spent) ends the run with the full
    disk's one line naming the file (OSError ENOSPC), not one "FAILED ... cannot copy SOURCE" per remaining file,
    each fetched or copied for nothing, naming the source as if it were at fault. The files fetched so far are
    recorded in the manifest as on any stop, and the rerun after freeing space goes on from them."""
    if future.cancelled():
        return
    full = _disk_full_errno(future.exception())  # a FetchError hides the disk's OSError as its context
    if full is not None:
        raise OSError(full, os.strerror(full), str(final))


def _not_found(source: LocalSource, spec: FileSpec) -> str:
    text = f"not found in {source.root} (in SAS, bundle or any-tree layout)"
    other = source.unaccepted_copies().get(spec.name)
    if other is not None:
        text += f"; it holds {other} instead, {_ENCODING_HINT}"
    return text


_ENCODING_HINT = (
    "which stage 00 does not take: frames only bzip2-compressed as the SAS serves them (.fits.bz2: bzip2 the .fits "
    "file), sweeps only gzip-compressed (.fits.gz)"
)


def _missing(spec: FileSpec, source: LocalSource, summary: DownloadSummary, display: _Display) -> None:
    summary.failures[spec.label] = _not_found(source, spec)
    display.file_done(spec, None, summary.failures[spec.label])


def _collect(spec: FileSpec, future: Future, manifest: Manifest, summary: DownloadSummary, display: _Display) -> None:
    try:
        result = future.result()
    except FetchCancelled:
        return
    except (FetchError, OSError) as exc:
        summary.failures[spec.label] = _failure_reason(exc)
        display.file_done(spec, None, summary.failures[spec.label])
        return
    manifest.record(spec.relpath, result.url, result.size, result.sha256, result.path)
    manifest.save()  # after every file, so a killed run loses at most the files in flight
    summary.fetched += 1
    summary.resumed += int(result.resumed)
    summary.bytes += result.transferred
    display.file_done(spec, result, None)


# ---------------------------------------------------------------------------------------------------------
# on a Dask cluster


@dataclass(frozen=True)
class FetchTask:
    """One cluster task: the files of one field (or one catalog) and where they go in the shared data folder."""

    files: tuple[tuple[FileSpec, str], ...]  # (spec, final path)
    source: HttpSource | LocalSource
    http: HttpSettings


@dataclass(frozen=True)
class FetchOutcome:
    spec: FileSpec
    result: FetchResult | None  # None when the file failed
    error: str | None = None
    disk_full: int | None = None  # the errno (ENOSPC, EDQUOT) when the data folder's disk refused the file
    final: str | None = None  # where the file was to go


def _disk_full_errno(exc: BaseException | None) -> int | None:
    """ENOSPC or EDQUOT when the disk's OSError is in ``exc``'s chain (a FetchError hides it as its cause)."""
    for link in exception_chain(exc):
        if isinstance(link, OSError) and link.errno in DISK_FULL:
            return link.errno
    return None


def fetch_task(task: FetchTask) -> list[FetchOutcome]:
    """Runs on a worker: fetch the task's files one after the other; a file's failure is returned, not raised."""
    session = None

    def get_session():
        nonlocal session
        if session is None:
            session = make_session(task.http)
        return session

    outcomes = []
    try:
        for spec, final in task.files:
            try:
                result = _fetch_file(spec, Path(final), task.source, task.http, get_session)
            except (FetchError, OSError) as exc:
                full = _disk_full_errno(exc)
                outcomes.append(FetchOutcome(spec, None, _failure_reason(exc), full, final))
                if full is not None:
                    break  # the task's other files would be fetched for nothing: the run stops at this one
            else:
                outcomes.append(FetchOutcome(spec, result))
    finally:
        if session is not None:
            session.close()
    return outcomes


def fetch_tasks(paths: DataPaths, source: Source, todo: list[FileSpec], http: HttpSettings) -> list[FetchTask]:
    """One task per catalog and one per field (its frames and irg jpeg), in plan order."""
    groups: dict[tuple, list[FileSpec]] = {}
    for spec in todo:
        key = ("catalog", spec.band) if spec.field is None else ("field", spec.field)
        groups.setdefault(key, []).append(spec)
    return [FetchTask(tuple((s, str(final_path(paths, s))) for s in specs), source, http) for specs in groups.values()]


def _fetch_on_cluster(paths, source, todo, options, manifest, summary) -> None:
    """Fetch on the Dask cluster at ``options.scheduler``; record each task's files here as they arrive."""
    tasks = fetch_tasks(paths, source, todo, options.http)
    failed = _FailureLog()

    def merge(index: int, outcomes: list[FetchOutcome]) -> None:
        full = next((out for out in outcomes if out.disk_full is not None), None)
        for out in outcomes:
            if out.result is None and full is not None:
                continue  # the run stops on the full disk below, in its one line, not one FAILED line per file
            if out.result is None:
                summary.failures[out.spec.label] = out.error
                failed("FAILED %s: %s", out.spec.label, out.error)
                continue
            manifest.record(out.spec.relpath, out.result.url, out.result.size, out.result.sha256, out.result.path)
            summary.fetched += 1
            summary.resumed += int(out.result.resumed)
            summary.bytes += out.result.transferred
        manifest.save()  # after every task, so a stopped run loses at most the tasks in flight
        if full is not None:  # as _stop_on_full_disk: stop at the first file the disk refuses, naming it
            raise OSError(full.disk_full, os.strerror(full.disk_full), full.final)

    # keep_finished: the tasks done on the cluster when the disk filled are recorded too (their files were written)
    map_tasks(
        fetch_task, tasks, scheduler=options.scheduler, description="downloading fields", on_result=merge,
        keep_finished=True,
    )  # fmt: skip


def _simulate(paths, fs, todo, options, manifest, summary) -> None:
    """Write the simulated sky, then verify and record the planned files like downloaded ones: each field's as it
    is written (so an interrupted run keeps them), the catalogs at the end."""
    from .simulate import simulate_sky  # here, not at the top: real downloads need none of the simulator

    # fields whose files are missing, damaged or from another simulation are rendered again, even where frames
    # exist; damaged or missing catalogs are written again, even where none of the fields needs rendering
    stale = sorted({spec.field for spec in todo if spec.kind != "catalog"})
    url = simulated_url(options)
    recorded: set[FileSpec] = set()

    def record(spec: FileSpec) -> None:
        final = final_path(paths, spec)
        recorded.add(spec)
        try:
            verified = verify_file(final, spec.kind, name=final.name)
        except FileNotFoundError:
            summary.failures[spec.label] = "the simulation did not write it"
            return
        except VerificationError as exc:
            summary.failures[spec.label] = f"simulated file invalid: {exc}"
            return
        manifest.record(spec.relpath, url, verified.size, verified.sha256, final)
        summary.fetched += 1
        summary.bytes += verified.size

    def field_written(result: dict) -> None:
        for spec in todo:
            if spec.field == result["field"] and spec.kind != "catalog":
                record(spec)
        manifest.save()  # after every field, so a stopped run loses at most the fields in flight

    result = simulate_sky(
        paths, replace(fs, fields=tuple(stale)) if stale else fs, seed=options.seed,
        shape=tuple(options.sim_shape), seeing=options.sim_seeing, frames_only=options.frames_only,
        force=options.force or bool(stale), catalogs=any(spec.kind == "catalog" for spec in todo),
        workers=options.workers, scheduler=options.scheduler, on_field=field_written,
    )  # fmt: skip
    if "catalog_rows" in result:  # the catalogs were written again (a field added): record their new content
        rewritten = [spec for spec in plan_files(fs, frames_only=False) if spec.kind == "catalog" and spec not in todo]
        summary.skipped -= len(rewritten)  # counted as complete before the simulation rewrote them
        todo = todo + rewritten
    for spec in todo:
        if spec not in recorded:
            record(spec)
    manifest.save()
