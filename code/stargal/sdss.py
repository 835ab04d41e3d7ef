"""SDSS DR17 file formats: names, Science Archive Server paths, and reading/writing frames and sweeps."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning

from .config import BANDS, OBJC_TYPE_GALAXY, OBJC_TYPE_STAR, SWEEP_VERSION
from .errors import StargalError

CATALOG_KINDS = ("gal", "star")
# Columns every later stage reads from a calibObj sweep, with the real dtypes and shapes.
CATALOG_COLUMNS: dict[str, tuple[str, str | None]] = {
    "RUN": ("I", None),
    "RERUN": ("3A", None),
    "CAMCOL": ("B", None),
    "FIELD": ("I", None),
    "ID": ("I", None),
    "OBJC_TYPE": ("J", None),
    "RA": ("D", None),
    "DEC": ("D", None),
    "PSF_FWHM": ("5E", None),
    "PSFFLUX": ("5E", None),
    "MODELFLUX": ("5E", None),
}
# Which Python types each catalog column must hold: "int", "float" or "str", with its element count.
_COLUMN_KIND = {"I": "int", "B": "int", "J": "int", "K": "int", "D": "float", "E": "float", "A": "str"}
# The camera's filter rows are staggered along the scan: a field's band-b frame has header FRAME = field + this
# (measured on six real fields of five runs and camcols; the simulator writes the same).
FRAME_STAGGER = {"r": 0, "i": 2, "u": 4, "z": 6, "g": 8}
FRAME_UNITS = ("nanomaggy", "nanomaggies", "nmgy")  # BUNIT of a calibrated frame (SDSS writes 'nanomaggy')
_FRAME_RE = re.compile(r"^frame-([ugriz]|irg)-(\d{6})-(\d)-(\d{4})\.(fits\.bz2|jpg)$")
_CATALOG_RE = re.compile(r"^calibObj-(\d{6})-(\d)-(gal|star)\.fits\.gz$")


def frame_filename(band: str, run: int, camcol: int, field: int) -> str:
    """``frame-BAND-RUN6-CAMCOL-FIELD4.fits.bz2``."""
    if band not in BANDS:
        raise StargalError(f"unknown band {band!r}: expected one of {' '.join(BANDS)}")
    return f"frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2"


def irg_filename(run: int, camcol: int, field: int) -> str:
    """``frame-irg-RUN6-CAMCOL-FIELD4.jpg``."""
    return f"frame-irg-{run:06d}-{camcol}-{field:04d}.jpg"


def catalog_filename(run: int, camcol: int, kind: str) -> str:
    """``calibObj-RUN6-CAMCOL-KIND.fits.gz`` (KIND gal or star)."""
    if kind not in CATALOG_KINDS:
        raise StargalError(f"unknown catalog kind {kind!r}: expected gal or star")
    return f"calibObj-{run:06d}-{camcol}-{kind}.fits.gz"


def frames_dir_relpath(rerun: int, run: int, camcol: int) -> str:
    """Folder of a run/camcol's frames, relative to the SAS base (e.g. .../dr17/eboss/)."""
    return f"photoObj/frames/{rerun}/{run}/{camcol}"


def sweeps_dir_relpath(rerun: int) -> str:
    """Folder of a rerun's sweeps, relative to the SAS base."""
    return f"sweeps/{SWEEP_VERSION}/{rerun}"


def frame_relpath(band: str, rerun: int, run: int, camcol: int, field: int) -> str:
    """A frame's path relative to the SAS base."""
    return f"{frames_dir_relpath(rerun, run, camcol)}/{frame_filename(band, run, camcol, field)}"


def irg_relpath(rerun: int, run: int, camcol: int, field: int) -> str:
    """An irg jpeg's path relative to the SAS base."""
    return f"{frames_dir_relpath(rerun, run, camcol)}/{irg_filename(run, camcol, field)}"


def catalog_relpath(rerun: int, run: int, camcol: int, kind: str) -> str:
    """A sweep's path relative to the SAS base."""
    return f"{sweeps_dir_relpath(rerun)}/{catalog_filename(run, camcol, kind)}"


# SDSS file names under an encoding SAS does not serve them in (a frame unpacked, gzipped or fpacked; a sweep
# unpacked or bzipped): stages that take SAS's names say so rather than skip them silently
_OTHER_ENCODING = re.compile(
    r"^(?:(frame-[ugriz]-\d{6}-\d-\d{4}\.fits)(?:\.gz|\.fz)?|(calibObj-\d{6}-\d-(?:gal|star)\.fits)(?:\.bz2)?)$"
)


def sas_name_of(name: str) -> str | None:
    """The name SAS serves a frame (.fits.bz2) or sweep (.fits.gz) under, for a file ``name`` holding one under
    another encoding; None for any other name, SAS's own included."""
    match = _OTHER_ENCODING.match(name)
    if match is None:
        return None
    return match.group(1) + ".bz2" if match.group(1) else match.group(2) + ".gz"


def parse_filename(name: str) -> dict | None:
    """Identify an SDSS frame, irg jpeg or sweep file by its name; None if it is none of them."""
    if m := _FRAME_RE.match(name):
        band, run, camcol, field, _ = m.groups()
        return {"kind": "frame", "band": band, "run": int(run), "camcol": int(camcol), "field": int(field)}
    if m := _CATALOG_RE.match(name):
        run, camcol, kind = m.groups()
        return {"kind": "catalog", "catalog": kind, "run": int(run), "camcol": int(camcol)}
    return None


@dataclass
class Frame:
    """One calibrated SDSS frame: image in nanomaggies (float32, rows x columns), header and WCS.

    ``nonfinite`` counts the pixels that were NaN or +-inf in the file; they are NaN in ``image`` (no data)."""

    image: np.ndarray
    header: fits.Header
    wcs: WCS
    path: Path | None = None
    nonfinite: int = 0

    @property
    def band(self) -> str:
        return str(self.header.get("FILTER", "")).strip()

    @property
    def simulated(self) -> bool:
        return bool(self.header.get("SIMULAT", False))


def quiet_wcs(header: fits.Header) -> WCS:
    """A celestial WCS from a header, without astropy's warnings about SDSS's deprecated RADECSYS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        warnings.simplefilter("ignore", AstropyWarning)
        return WCS(header, naxis=2)


def read_frame(path: str | os.PathLike, redo: str = "00_download.py fetches it again") -> Frame:
    """Read a ``frame-*.fits.bz2`` (or plain FITS) file; raise StargalError naming the file on any problem
    (``redo``: what fetches a damaged one again, in its error)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".bz2":
            raw = bz2.decompress(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                header = hdul[0].header.copy()
                data = hdul[0].data
    except FileNotFoundError:
        raise StargalError(f"{path}: file not found") from None
    except (OSError, EOFError, ValueError, TypeError) as exc:  # TypeError: astropy's "buffer is too small" (cut short)
        raise StargalError(f"{path}: not a readable SDSS frame ({exc}); the file is damaged: {redo}") from None
    if data is None or data.ndim != 2 or 0 in data.shape:
        raise StargalError(f"{path}: primary HDU holds no 2-D image")
    if "CTYPE1" not in header or "CTYPE2" not in header:
        raise StargalError(f"{path}: frame has no celestial WCS (CTYPE1/CTYPE2 missing)")
    try:
        wcs = quiet_wcs(header)
    except Exception as exc:  # astropy raises many types for malformed WCS keywords
        raise StargalError(f"{path}: invalid WCS ({exc})") from None
    if not wcs.has_celestial:
        raise StargalError(f"{path}: frame has no celestial WCS")
    image = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(image)
    nonfinite = int(np.count_nonzero(bad))
    if nonfinite:
        image = np.array(image)  # writable: the FITS data may be a read-only view
        image[bad] = np.nan  # +-inf would spread through the resampling; NaN is "no data" everywhere downstream
    return Frame(image, header, wcs, path, nonfinite)


def frame_identity_problems(
    frame: Frame, band: str, run: int, camcol: int, field: int, rerun: int | None = None
) -> list[str]:
    """What in a frame's header contradicts the band, run, camcol and field its file name claims, and the rerun it
    is filed under (empty: none). A frame's name carries no rerun, its folder does: ``rerun`` defaults to the rerun
    folder of the SAS layout (``.../frames/RERUN/RUN/CAMCOL/``) the frame was read from, when it was."""
    if rerun is None and frame.path is not None:
        rerun = sas_rerun_of(frame.path, run, camcol)
    return header_identity_problems(frame.header, band, run, camcol, field, rerun)


def sas_rerun_of(path: str | os.PathLike, run: int, camcol: int) -> int | None:
    """The rerun of a frame's path in the SAS layout (``.../frames/RERUN/RUN/CAMCOL/NAME``, as ``frame_relpath``
    gives it), for that run and camcol; None for a path in any other layout."""
    folders = Path(path).parent.parts
    if len(folders) < 4 or folders[-4] != "frames" or folders[-2:] != (str(run), str(camcol)):
        return None
    return int(folders[-3]) if folders[-3].isdigit() else None


def header_identity_problems(
    header, band: str, run: int, camcol: int, field: int, rerun: int | None = None
) -> list[str]:
    """What in a frame's primary header contradicts the band, run, camcol and field its file name claims, and the
    ``rerun`` it was fetched as (or is filed under) when given.

    FILTER must be present; RUN, CAMCOL and FRAME are compared when present, and with ``rerun`` RERUN too (real
    frames write it as text, '301'; compared as an integer, as a sweep's RERUN is). FRAME is the field number plus
    the band's stagger (``FRAME_STAGGER``), not the field number itself (except for r). BUNIT, when present, must
    be nanomaggy: every stage reads the pixels so (a frame in counts would be a sky ~200 times too bright)."""
    problems = []
    found = str(header.get("FILTER", "")).strip()
    if not found:
        problems.append("no FILTER keyword")
    elif found != band:
        problems.append(f"FILTER is {found!r}, not {band!r}")
    unit = header.get("BUNIT")
    if unit is not None and str(unit).strip().lower() not in FRAME_UNITS:
        problems.append(f"BUNIT is {unit!r}, not nanomaggy (a calibrated frame's unit)")
    wanted = [("RUN", run), ("CAMCOL", camcol), ("FRAME", field + FRAME_STAGGER.get(band, 0))]
    if rerun is not None:  # a frame of rerun 301 filed as rerun 40 would carry that rerun into every id made of it
        wanted.append(("RERUN", int(rerun)))
    for key, want in wanted:
        if key in header:
            value = _integer_value(header[key])
            if value is None:  # 4510.7 is no run, not run 4510
                problems.append(f"{key} is {header[key]!r}, not an integer")
                continue
            if value != want:
                problems.append(f"{key} is {value}, expected {want}")
    return problems


def write_frame(path: str | os.PathLike, image: np.ndarray, header: fits.Header, extra_hdus=()) -> None:
    """Write a frame as bz2-compressed FITS, atomically."""
    from .fsio import write_bytes

    hdul = fits.HDUList([fits.PrimaryHDU(np.asarray(image, dtype=np.float32), header=header), *extra_hdus])
    buf = io.BytesIO()
    hdul.writeto(buf, output_verify="silentfix")
    write_bytes(path, bz2.compress(buf.getvalue(), compresslevel=9))


def read_catalog(
    path: str | os.PathLike,
    columns=tuple(CATALOG_COLUMNS),
    redo: str = "the file is damaged: 00_download.py --verify fetches it again",
    wrong_file: str | None = None,
) -> np.ndarray:
    """Read the named columns of a calibObj sweep into a native-endian structured array.

    A gzip file is decompressed to its end first, so its CRC and length are checked (FITS readers stop at the
    last row and never reach them: a damaged stream would lose rows silently). Column types and element counts
    are checked against ``CATALOG_COLUMNS``, and RUN/CAMCOL against the file name. ``redo``: what to do about a
    damaged file, in its error; ``wrong_file``: about another sweep under this name (default: fetch it again)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)  # every member to its end, CRC32 and size checked
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                    raise StargalError(f"{path}: no binary table in HDU 1, not a calibObj catalog")
                table = hdul[1].data
                missing = [c for c in columns if c not in table.columns.names]
                if missing:
                    raise StargalError(f"{path}: catalog lacks column(s) {', '.join(missing)}")
                arrays = {c: np.asarray(table[c]) for c in columns}
    except FileNotFoundError:
        raise StargalError(f"{path}: file not found") from None
    except (OSError, EOFError, ValueError, TypeError, zlib.error) as exc:  # TypeError: a table cut short
        raise StargalError(f"{path}: not a readable calibObj catalog ({exc}); {redo}") from None
    _check_catalog_columns(path, arrays, wrong_file)
    n = len(next(iter(arrays.values()))) if arrays else 0
    dtype = [(c, a.dtype.newbyteorder("=") if a.dtype.kind != "S" else a.dtype, a.shape[1:]) for c, a in arrays.items()]
    out = np.empty(n, dtype=dtype)
    for c, a in arrays.items():
        out[c] = a
    return out


def _check_catalog_columns(path: Path, arrays: dict[str, np.ndarray], wrong_file: str | None = None) -> None:
    """Each known column holds the type and element count ``CATALOG_COLUMNS`` gives; RUN/CAMCOL match the name
    (``wrong_file``: what to do when not)."""
    for name, values in arrays.items():
        if name not in CATALOG_COLUMNS:
            continue
        fmt = CATALOG_COLUMNS[name][0]
        count = int(fmt[:-1] or 1)
        want = _COLUMN_KIND[fmt[-1]]
        kind = {"i": "int", "u": "int", "f": "float", "S": "str", "U": "str"}.get(values.dtype.kind, values.dtype.kind)
        got_count = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
        if kind != want or (want != "str" and got_count != count):
            shape = f"[{got_count}]" if got_count > 1 else ""
            raise StargalError(
                f"{path}: column {name} holds {values.dtype.name}{shape}, expected {count if count > 1 else 'one'} "
                f"{want} value{'s' if count > 1 else ''} per row; not a calibObj sweep catalog"
            )
    info = parse_filename(path.name)
    if info and info["kind"] == "catalog":
        refetch = wrong_file or (
            f"wrong file: delete it, and 00_download.py --run {info['run']} --camcol {info['camcol']} fetches it again"
        )
        for key, want in (("RUN", info["run"]), ("CAMCOL", info["camcol"])):
            if key in arrays and arrays[key].size and not np.all(arrays[key] == want):
                other = int(arrays[key][arrays[key] != want][0])
                raise StargalError(f"{path}: rows of {key} {other}, but the file name says {key} {want}; {refetch}")
        rerun = sas_sweep_rerun_of(path)  # the name carries no rerun; a data folder's sweeps/VERSION/RERUN/ does
        values = arrays.get("RERUN")
        if rerun is not None and values is not None and values.size:
            for value in np.unique(values).tolist():
                number = _integer_value(value)
                if number is not None and number != rerun:
                    raise StargalError(
                        f"{path}: rows of RERUN {number}, but the file is in rerun {rerun}'s folder; {refetch}"
                    )
        want_type = {"star": OBJC_TYPE_STAR, "gal": OBJC_TYPE_GALAXY}.get(info["catalog"])
        types = arrays.get("OBJC_TYPE")
        if want_type is not None and types is not None and types.size:
            others = int(np.count_nonzero(types != want_type))
            if others > types.size // 2:  # a sweep of one kind lists the other kind's type only by exception
                raise StargalError(
                    f"{path}: {others} of {types.size} rows are not OBJC_TYPE {want_type} ({info['catalog']}), as a "
                    f"{info['catalog']} sweep's are: the other kind's file under this name? {refetch}"
                )


def sas_sweep_rerun_of(path: str | os.PathLike) -> int | None:
    """The rerun of a sweep's path in the SAS layout (``.../sweeps/VERSION/RERUN/NAME``, as ``catalog_relpath``
    gives it); None for a path in any other layout."""
    folders = Path(path).parent.parts
    if len(folders) < 3 or folders[-3] != "sweeps" or not folders[-1].isdigit():
        return None
    return int(folders[-1])


def write_catalog(path: str | os.PathLike, columns: dict[str, np.ndarray], header: fits.Header | None = None) -> None:
    """Write a calibObj-like sweep (gzip-compressed FITS binary table), atomically."""
    import gzip

    from .fsio import write_bytes

    cols = []
    for name, values in columns.items():
        fmt = CATALOG_COLUMNS.get(name, (None, None))[0] or _fits_format(values)
        cols.append(fits.Column(name=name, format=fmt, array=values))
    primary = fits.PrimaryHDU(header=header)
    buf = io.BytesIO()
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols)]).writeto(buf)
    write_bytes(path, gzip.compress(buf.getvalue(), compresslevel=6, mtime=0))


def _fits_format(values: np.ndarray) -> str:
    values = np.asarray(values)
    base = {"f4": "E", "f8": "D", "i2": "I", "i4": "J", "i8": "K", "u1": "B", "b1": "L"}[values.dtype.str[1:]]
    width = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
    return f"{width}{base}" if width > 1 else base


def magnitude(flux: np.ndarray) -> np.ndarray:
    """SDSS asinh-free magnitude from nanomaggies; NaN where the flux is not positive."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, 22.5 - 2.5 * np.log10(flux), np.nan)


CATALOG_HEAD_ROWS = 2000  # rows of a sweep read by ``catalog_head_problems`` (its identity, not its content)


def catalog_head_problems(
    path: str | os.PathLike, name: str | None = None, rows: int = CATALOG_HEAD_ROWS, rerun: int | None = None
) -> list[str]:
    """What in a calibObj sweep's headers and first ``rows`` rows contradicts the run, camcol and kind (gal/star) its
    file name (``name``, default the path's) claims, and the ``rerun`` it was fetched as when given (a sweep's name
    does not carry its rerun; its folder does) (empty: none, or a name that is no sweep's); raises OSError,
    EOFError, ValueError, KeyError or zlib.error when it cannot be read. A RUN, CAMCOL or RERUN that is not an
    integer (4510.7, a string that is no number) is a problem too; integer strings ('301', as real sweeps' RERUN
    column holds) are compared as integers.

    Only the start of the gzip stream is decompressed (the headers and the first rows), never the whole sweep, so
    a large real sweep is checked in milliseconds: RUN and CAMCOL (and with ``rerun`` RERUN) keywords of either
    header when present, the same columns of the rows read, and their OBJC_TYPE (a gal sweep's rows are galaxies, a
    star sweep's stars: a majority of the other type means the other kind's file). ``read_catalog`` checks every
    row later."""
    path = Path(path)
    info = parse_filename(name or path.name)
    if info is None or info["kind"] != "catalog":
        return []
    block = 2880
    data = bytearray()
    with gzip.open(path, "rb") as fh:

        def more() -> bytes:
            try:
                return fh.read(1 << 16)
            except EOFError:  # a stream cut short: what came before it is still read (its verification names it)
                return b""

        def header_at(pos: int) -> tuple[fits.Header, int]:
            end = pos
            while True:
                while len(data) < end + block:
                    chunk = more()
                    if not chunk:
                        raise EOFError("FITS header cut short")
                    data.extend(chunk)
                cards = data[end : end + block]
                end += block
                if any(cards[k : k + 80].rstrip() == b"END" for k in range(0, block, 80)):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        return fits.Header.fromstring(bytes(data[pos:end]).decode("ascii", "replace")), end
                if end - pos > 100 * block:
                    raise ValueError("FITS header without END")

        primary, pos = header_at(0)
        size = 1
        for k in range(1, int(primary.get("NAXIS", 0)) + 1):
            size *= int(primary[f"NAXIS{k}"])
        pos += -(-(size * abs(int(primary.get("BITPIX", 8))) // 8 if primary.get("NAXIS", 0) else 0) // block) * block
        table, start = header_at(pos)
        width, total = int(table["NAXIS1"]), int(table["NAXIS2"])
        n = min(rows, total, (64 << 20) // max(width, 1))  # at most 64 MB of rows, whatever the header claims
        while len(data) < start + n * width:
            chunk = more()
            if not chunk:
                n = (len(data) - start) // width  # a short file: its verification names that; check what is here
                break
            data.extend(chunk)
    # key -> (the value wanted, what wants it: after a header's value, after a row's)
    wanted = {key: (want, f"the file name says {want}", f"the file name says {key} {want}")
              for key, want in (("RUN", info["run"]), ("CAMCOL", info["camcol"]))}  # fmt: skip
    if rerun is not None:  # the name carries no rerun: the one asked for (the sweep's folder)
        wanted["RERUN"] = (int(rerun), f"rerun {rerun} was asked for", f"rerun {rerun} was asked for")
    problems = []
    for header in (primary, table):
        for key, (want, says, _) in wanted.items():
            if key in header:
                value = _integer_value(header[key])
                if value is None:
                    problems.append(f"header {key} is {header[key]!r}, not an integer")
                elif value != want:
                    problems.append(f"header {key} is {value}, but {says}")
    if n <= 0 or problems:
        return problems
    head = table.copy()
    head["NAXIS2"], head["PCOUNT"] = n, 0
    body = bytes(data[start : start + n * width])
    body += b"\0" * (-len(body) % block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdu = fits.BinTableHDU.fromstring(head.tostring().encode("ascii") + body)
        names = set(hdu.columns.names)
        columns = {c: np.asarray(hdu.data[c]) for c in ("RUN", "CAMCOL", "RERUN", "OBJC_TYPE") if c in names}
    for key, (want, _, says) in wanted.items():
        values = columns.get(key)
        if values is not None and values.size:
            problems += _integer_column_problems(key, values.ravel(), want, says)
    want_type = {"star": OBJC_TYPE_STAR, "gal": OBJC_TYPE_GALAXY}[info["catalog"]]
    types = columns.get("OBJC_TYPE")
    if types is not None and types.size and np.issubdtype(types.dtype, np.number):
        others = int(np.count_nonzero(types != want_type))
        if others > types.size // 2:
            problems.append(
                f"{others} of its first {types.size} rows are not OBJC_TYPE {want_type}, as a {info['catalog']} "
                "sweep's are (the other kind's file under this name?)"
            )
    return problems


_INTEGER_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")


def _integer_value(value) -> int | None:
    """``value`` (a header keyword's or a table cell's) as an integer; None when it is not one (4510.7, 'abc', a
    boolean), so that it is named as such instead of being truncated or compared as text."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if np.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and _INTEGER_TEXT.match(value):
        return int(value)
    return None


def _integer_column_problems(key: str, values: np.ndarray, want: int, expected: str) -> list[str]:
    """A sweep column's (RUN, CAMCOL, RERUN) first value that is not an integer or not ``want``, named."""
    if values.dtype.kind in "iu":
        wrong = values[values != want]
        return [f"rows of {key} {int(wrong[0])}, but {expected}"] if wrong.size else []
    for value in dict.fromkeys(values.tolist()):  # distinct values, in order (text and floats: few of them)
        number = _integer_value(value)
        if number is None:
            shown = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            return [f"rows of {key} {shown!r}, not an integer"]
        if number != want:
            return [f"rows of {key} {number}, but {expected}"]
    return []
