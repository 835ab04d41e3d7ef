"""predict.py's tables: coordinates in (``--ra/--dec`` values; a CSV, ECSV or FITS table of ra, dec and other
columns to carry), predictions out (.csv, .ecsv or .fits, with units and the model's metadata).

Every bad value or file is one StargalError naming it (file and line or row, or the option), raised before any
classification; outputs are written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np

from .errors import StargalError
from .fsio import require_writable_destination
from .predict import Predictions

log = logging.getLogger("stargal")


_SEXAGESIMAL_RA_DEGREES = re.compile(r"[d\u00b0]", re.IGNORECASE)  # "12d34m56s": RA given in degrees


_SEXAGESIMAL_SEPARATORS = re.compile("[\\s:hHdDmMsS'\"\u00b0\u2032\u2033+\u2212-]+")


def _angle(text: str, kind: str) -> float:
    """One RA or Dec in degrees: a number of degrees, or sexagesimal ("12:34:56.7", "12h34m56.7s",
    "+12:34:56", "-5d02m03s", "12 34 56.7"); sexagesimal RA is in hours unless it says "d". ValueError if none."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    if not text or not any(c.isdigit() for c in text):
        raise ValueError(text)
    if kind == "dec" and "h" in text.lower():  # astropy would take "1h" as 15 degrees: no declination is in hours
        raise ValueError(f"{text}: a declination in hours")
    if re.search(r"^[NSEW]|[NSEW]$", text):  # astropy reads 13:21:27.5W as a negative angle
        raise ValueError(f"{text}: compass letters (N, S, E, W) are not read; give Dec its sign and RA 0-24 h")
    fields, carried = [f for f in _SEXAGESIMAL_SEPARATORS.split(text) if f], False
    with contextlib.suppress(ValueError):  # a field that is not a number: astropy's parser says what is wrong
        carried = any(float(f) >= 60 for f in fields[1:3])
    if carried:  # astropy carries 45:60:00 over to 46 degrees, with a warning
        raise ValueError(f"{text}: minutes and seconds must be below 60")
    from astropy import units as u
    from astropy.coordinates import Angle

    unit = u.deg if kind == "dec" or _SEXAGESIMAL_RA_DEGREES.search(text) else u.hourangle
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's out-of-range warnings: refused below, in one line
            angle = Angle(text, unit=unit)
    except (ValueError, TypeError, u.UnitsError) as exc:
        hours = unit is u.hourangle and fields and fields[0].isdigit() and int(fields[0]) >= 24  # astropy refuses
        raise ValueError(f"{text}: RA in hours must be 0-24" if hours else text) from exc
    if unit is u.hourangle and not 0 <= angle.hourangle < 24:
        raise ValueError(f"{text}: RA in hours must be 0-24")
    return float(angle.deg)


def parse_angles(values, kind: str) -> tuple[np.ndarray, int | None]:
    """Degrees of ``values`` (strings or numbers) and the index of the first that is not an angle (None if all are).

    Plain numbers are converted in one vectorised step; only the others go through astropy's sexagesimal parser.
    """
    values = list(values)
    try:
        return np.asarray(values, dtype=np.float64), None
    except (ValueError, TypeError):
        pass
    out = np.empty(len(values))
    for i, value in enumerate(values):
        try:
            fast = _plain_sexagesimal(value, kind) if isinstance(value, str) else None
            out[i] = fast if fast is not None else float(value) if not isinstance(value, str) else _angle(value, kind)
        except (ValueError, TypeError):
            return out, i
    return out, None


# "12:34:56.7", "+12 34 56": the usual sexagesimal, read without astropy's parser, which took 67 s for the 400,000
# values of 200,000 rows (a 24-second run otherwise); anything else, or out of range, goes through _angle
_PLAIN_SEXAGESIMAL = re.compile(r"\s*([+-]?)(\d{1,3})([: ])(\d{1,2})\3(\d{1,2}(?:\.\d+)?)\s*")


def _plain_sexagesimal(text: str, kind: str) -> float | None:
    """Degrees of a plain sexagesimal RA (hours) or Dec, exactly as ``_angle`` reads it; None for any other text
    (and for one ``_angle`` refuses: minutes or seconds of 60 or more, RA negative or of 24 h or more)."""
    match = _PLAIN_SEXAGESIMAL.fullmatch(text)
    if match is None:
        return None
    sign, first, _, minutes, seconds = match.groups()
    if int(minutes) >= 60 or float(seconds) >= 60:
        return None
    value = int(first) + int(minutes) / 60 + float(seconds) / 3600
    if kind == "ra":
        if sign == "-" or int(first) >= 24:
            return None
        return value * _DEGREES_PER_HOUR  # astropy's hourangle in degrees, as _angle's Angle converts it
    return -value if sign == "-" else value


_DEGREES_PER_HOUR = 14.999999999999998  # astropy's u.hourangle.to(u.deg) (through radians), so results stay the same


def angles_or_error(values, kind: str, where) -> np.ndarray:
    """``parse_angles``, raising StargalError ``where(i)``: "... ra '12:xx' is not an angle" for the first bad one."""
    degrees, bad = parse_angles(values, kind)
    if bad is not None:
        value = values[bad]
        if kind == "dec" and "h" in str(value).lower():
            raise StargalError(
                f"{where(bad)}: dec {value!r}: a declination is in degrees (+12:34:56, 12d34m56s), not hours"
            )
        comma = isinstance(value, str) and "," in value and _is_number(value.replace(",", ".", 1))
        why = "; a decimal comma? write the decimal mark as a point" if comma else _why(value, kind)
        raise StargalError(f"{where(bad)}: {kind} {value!r} is not an angle (degrees or sexagesimal{why})")
    return degrees


def _why(value, kind: str) -> str:
    """What ``_angle`` found wrong with a value ("; minutes and seconds must be below 60"), or ""."""
    try:
        _angle(str(value), kind)
    except ValueError as exc:
        _, _, reason = str(exc).partition(": ")
        return f"; {reason}" if reason else ""
    return ""


def split_sexagesimal(values) -> bool:
    """True when three values read as one sexagesimal angle split at its spaces ("02", "34", "13.1018": whole
    degrees or hours, whole minutes, seconds below 60), as an unquoted "--ra 02 34 13.1018" reaches argparse,
    which would otherwise classify three positions nowhere near the one meant."""
    if len(values) != 3:
        return False
    first, minutes, seconds = (str(v).strip() for v in values)
    if not (re.fullmatch(r"[+-]?\d+", first) and re.fullmatch(r"\d+", minutes)):
        return False
    try:
        return 0 <= int(minutes) < 60 and 0 <= float(seconds) < 60
    except ValueError:
        return False


def validate_coordinates(ra: np.ndarray, dec: np.ndarray, source: str = "coordinates", where=None) -> None:
    """Raise StargalError naming the first bad value (``where(i)``, default "coordinate i+1") when RA/Dec are
    not valid degrees."""
    where = where or (lambda i: f"{source}: coordinate {i + 1}")
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    bad_ra = np.flatnonzero(~(np.isfinite(ra) & (ra >= -360) & (ra <= 360)))
    if bad_ra.size:
        i = int(bad_ra[0])
        raise StargalError(f"{where(i)}: ra {float(ra[i]):.10g} is not an angle in degrees (-360 to 360)")
    bad_dec = np.flatnonzero(~(np.isfinite(dec) & (np.abs(dec) <= 90)))
    if bad_dec.size:
        i = int(bad_dec[0])
        raise StargalError(f"{where(i)}: dec {float(dec[i]):.10g} is outside [-90, 90]")


_UNCLOSED_QUOTE = "a double quote not closed makes a value swallow the lines after it (quote it whole or drop it)"


def _csv_rows(fh, path: Path, delimiter: str = ",", first: int = 1) -> list[list[str]]:
    """Every row of a CSV file (``fh``: its lines from line ``first`` on), each from one line: a value running over a
    line break (a quote never closed, as in '"Star A,10,5') would fold every later line into one value, their
    positions lost without a word, so it is refused naming the line where it starts, as is any csv.Error (such as a
    value over csv's size limit). A blank line (white space only) is [], as csv gives an empty one: a line of
    separators or quotes (",", '""') is not."""
    last = [""]  # the line csv read last: csv gives ["  "] for spaces, [""] for '""'; only the line tells them apart

    def lines():
        for line in fh:
            last[0] = line
            yield line

    reader = csv.reader(lines(), delimiter=delimiter)
    rows: list[list[str]] = []
    start = first
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return rows
        except csv.Error as exc:
            raise StargalError(f"{path}: line {start}: not valid CSV ({exc}); {_UNCLOSED_QUOTE}") from None
        if any("\n" in value or "\r" in value for value in row):
            end = first - 1 + reader.line_num
            raise StargalError(f"{path}: line {start}: a value runs on to line {end}; {_UNCLOSED_QUOTE}")
        rows.append(row if last[0].strip() else [])
        start = first + reader.line_num


# Column pairs read as (ra, dec) degrees or sexagesimal, any case: ra, dec first; else the one pair of the others a
# table holds (VizieR's J2000 and ICRS names, SExtractor's, ...), so a catalog exported as it comes is read as it is
COORDINATE_COLUMNS = (
    ("ra", "dec"),
    ("raj2000", "dej2000"),
    ("_raj2000", "_dej2000"),
    ("ra_icrs", "de_icrs"),
    ("ra_j2000", "dec_j2000"),
    ("ra_deg", "dec_deg"),
    ("alpha_j2000", "delta_j2000"),
)
_ACCEPTED = "; ".join("/".join(pair) for pair in COORDINATE_COLUMNS)


def coordinate_columns(names: list[str], where: str) -> tuple[int, int]:
    """Indices of the (ra, dec) columns among a table's column ``names``: ra and dec (any case) where either is
    there, else the one pair of ``COORDINATE_COLUMNS`` the table holds. StargalError ("``where``: ...") for a column
    missing or there twice, or two such pairs (which of the two positions to classify is the user's choice)."""
    lower = [n.strip().lower() for n in names]
    listed = ",".join(names)
    pairs = [pair for pair in COORDINATE_COLUMNS[1:] if all(c in lower for c in pair)]
    if "ra" in lower or "dec" in lower or not pairs:
        pair = COORDINATE_COLUMNS[0]
        missing = [c for c in pair if c not in lower]
        if missing:
            hint = "" if "ra" in lower or "dec" in lower else f"; position columns read: {_ACCEPTED} (any case)"
            raise StargalError(f"{where}missing column(s) {', '.join(missing)} (columns: {listed}){hint}")
    elif len(pairs) > 1:
        named = " and ".join("/".join(names[lower.index(c)] for c in p) for p in pairs)
        raise StargalError(
            f"{where}columns {named} both give positions; rename the pair to classify to ra, dec (or drop the other)"
        )
    else:
        pair = pairs[0]
    twice = [names[lower.index(c)] for c in pair if lower.count(c) > 1]
    if twice:
        raise StargalError(f"{where}column(s) {', '.join(twice)} appear more than once (columns: {listed})")
    return lower.index(pair[0]), lower.index(pair[1])


def read_coordinates(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec (degrees) from a table with ``ra`` and ``dec`` columns (any case, other columns ignored): a CSV, each
    value in degrees or sexagesimal (RA "12:34:56.7" or "12h34m56.7s", Dec "+12:34:56" or "+12d34m56s"), or an
    ECSV or FITS table (``read_coordinate_table``).

    Any malformed row raises one StargalError naming the file and the line (CSV) or row (ECSV, FITS).
    """
    ra, dec, _ = read_coordinate_table(path)
    return ra, dec


def carried_name(name: str, index: int) -> str:
    """The output column of an input table's other column, so a user's names and magnitudes stay beside their
    positions: its own name, ``column_N`` (1-based) if empty, and ``input_`` + name where the name is one of the
    table's own columns (any case) or such a name already carried, ``input_`` any number of times before it:
    x -> input_x -> input_input_x. So no two names meet, nor one meet the table's own: predict.py's output, read
    back, is written again with every column, the earlier runs' one ``input_`` deeper each time."""
    name = name.strip() or f"column_{index + 1}"
    base = name.lower()
    while base not in _OWN_COLUMNS and base.startswith("input_"):
        base = base.removeprefix("input_")
    return f"input_{name}" if base in _OWN_COLUMNS else name


def read_coordinate_table(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """As ``read_coordinates``, with the file's other columns ({output column name: values}), in the file's order,
    for the output table to carry: as text from a CSV; from an ECSV or FITS table (``TABLE_FORMATS``) as astropy
    Columns of their own type, unit and mask."""
    fmt = table_format(path)
    if fmt in (None, "ascii.ecsv"):  # FITS and XML readers find a cut file; text readers take its last line as it is
        require_line_end(Path(path))
    if fmt is not None:
        return _read_astropy_coordinates(Path(path), fmt)
    return _read_csv_coordinates(Path(path))


def require_line_end(path: Path) -> None:
    """Refuse a text table whose last line has no line end: a file cut short (an interrupted copy or download)
    would give its last row a number cut in part, a place elsewhere on the sky, read as well as any other."""
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return  # empty: the readers name it
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
            fh.seek(0)
            head = fh.read(4096)
    except FileNotFoundError:
        raise StargalError(f"{path}: coordinate file not found") from None
    except OSError as exc:
        raise StargalError(f"{path}: cannot read coordinate file ({exc})") from None
    _require_utf8_text(path, head)
    if last not in (b"\n", b"\r"):
        lines = path.read_bytes().count(b"\n") + 1
        raise StargalError(
            f"{path}: line {lines}, the last, has no line end: the file looks cut short, and its last row could "
            "hold a number cut in part; if the file is complete, end it with a newline"
        )


def _require_utf8_text(path: Path, head: bytes) -> None:
    """Refuse, saying what it is, a text table that is UTF-16 (a spreadsheet's "Unicode text") or no text at all
    (a FITS file named .csv): both were refused as cut short ("the last line has no line end"), which they are not."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise StargalError(f"{path}: UTF-16 text; save it as UTF-8 (or plain ASCII) CSV")
    if head.startswith(b"SIMPLE  ="):
        raise StargalError(f"{path}: a FITS file; name it .fits (or .fit, .fits.gz) to read it as one")
    if b"\x00" in head:
        raise StargalError(f"{path}: not UTF-8 text (it holds NUL bytes: a binary file, or UTF-16 text)")


def _read_csv_coordinates(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``read_coordinate_table`` of a CSV: every value as text, errors naming the line. Lines before the header
    that begin with "#" are comments (SkyServer's CSV export begins "#Table1"), unless they name the ra and dec
    columns ("#name,ra,dec" is a header; so is "#ra,dec" above the first values); values are separated by commas, or
    by tabs or semicolons where the header has no comma."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            content = fh.read()
    except FileNotFoundError:
        raise StargalError(f"{path}: coordinate file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StargalError(f"{path}: cannot read coordinate file ({exc})") from None
    text = list(io.StringIO(content, newline=""))  # lines as a file gives them to csv: ends kept, split as csv does
    skip = 0  # comment and blank lines before the header: a line naming ra and dec is the header, "#" or not
    while skip < len(text) and (not text[skip].strip() or text[skip].lstrip().startswith("#")):
        if _names_coordinates(text[skip]):
            break
        skip += 1
    comments = [line.strip().lstrip("#").strip() for line in text[:skip] if line.strip()]
    if comments and comments[0].startswith("%ECSV"):
        raise StargalError(f"{path}: an ECSV table; name it .ecsv to read it as one (with its units and types)")
    header_line = text[skip] if skip < len(text) else ""
    if comments and not _names_coordinates(header_line) and _names_coordinates(comments[-1]):
        skip -= 1  # "#ra,dec" above the values: the header, commented out as some tools write it
        while not text[skip].strip():
            skip -= 1
        text[skip] = comments[-1] + "\n"
        header_line = text[skip]
    delimiter = _delimiter(header_line)
    rows = _csv_rows(text[skip:], path, delimiter, first=skip + 1)
    if not rows:
        raise StargalError(f"{path}: empty file; expected a header row with ra,dec columns")
    where = f"{path}: line {skip + 1}: "
    if all(_is_number(value) for value in rows[0]):
        raise StargalError(
            f"{where}values ({delimiter.join(rows[0])}), not column names: begin the file with a header line naming "
            "its columns, such as ra,dec"
        )
    if len(rows[0]) == 1 and _names_coordinates(header_line, r"\s+"):
        raise StargalError(
            f"{where}columns separated by spaces ({rows[0][0].strip()}); --csv reads values separated by commas "
            "(or tabs or semicolons): write it so, or as .ecsv or .fits"
        )
    ira, idec = coordinate_columns(rows[0], where)
    header = rows[0]
    others = [i for i in range(len(header)) if i not in (ira, idec)]
    names = [carried_name(header[i], i) for i in others]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise StargalError(f"{where}column(s) {', '.join(repeated)} appear more than once")
    lines, ra_text, dec_text, kept = [], [], [], []
    for line, row in enumerate(rows[1:], start=skip + 2):  # one row per line: _csv_rows refuses values over two
        if not row:
            continue  # a blank line is formatting, no row of the table
        if all(not c.strip() for c in row):  # skipped, it would put every later row beside the wrong input
            raise StargalError(
                f"{path}: line {line}: a row of empty values (no ra, no dec); give its position or delete it"
            )
        if len(row) < len(header) and any(name.strip() for name in header[len(row) :]):
            # a value left out moves every one after it a column to the left: under the header's names the row's
            # positions or carried values (a name under rmag, say) would be another column's, written with exit 0
            raise StargalError(
                f"{path}: line {line}: too few values ({len(row)} for {len(header)} columns: "
                f"{', '.join(n for n in header[len(row) :] if n.strip())} missing); give every column a value, "
                "empty if need be (a,,b)"
            )
        if len(row) > len(header):  # an unquoted comma, say: which value is ra is no longer certain
            raise StargalError(f"{path}: line {line}: more values than columns ({len(row)} for {len(header)})")
        lines.append(line)
        ra_text.append(row[ira])
        dec_text.append(row[idec])
        kept.append([row[i].strip() if i < len(row) else "" for i in others])
    if not lines:
        raise StargalError(f"{path}: no coordinates (only a header row)")
    where = lambda i: f"{path}: line {lines[i]}"  # noqa: E731
    ra = angles_or_error(ra_text, "ra", where)
    dec = angles_or_error(dec_text, "dec", where)
    validate_coordinates(ra, dec, where=where)
    carried = {name: np.array([values[k] for values in kept], dtype=str) for k, name in enumerate(names)}
    return ra, dec, carried


def _delimiter(header: str) -> str:
    """The separator of a CSV's values, by its header line: a comma, or where it has none a tab or a semicolon (a
    table saved from a spreadsheet in a locale whose decimal mark is a comma)."""
    return next((d for d in (",", "\t", ";") if d in header), ",")


def _names_coordinates(line: str, separators: str = r"[,\t;]") -> bool:
    """True when a line, split at ``separators``, names the columns of one pair of ``COORDINATE_COLUMNS``."""
    names = {n.strip().strip('"').lower() for n in re.split(separators, line.strip())}
    return any(all(c in names for c in pair) for pair in COORDINATE_COLUMNS)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- ECSV and FITS coordinate tables (astropy) ---------------------------------------------------------------

# --csv files read through astropy, by (lower-case) name ending; any other file is read as CSV
TABLE_FORMATS = {
    ".ecsv": "ascii.ecsv",
    ".fits": "fits",
    ".fit": "fits",
    ".fits.gz": "fits",
    ".vot": "votable",  # what VizieR, TOPCAT and the Virtual Observatory's services export
    ".votable": "votable",
    ".xml": "votable",
}
_FORMAT_NAMES = {"ascii.ecsv": "an ECSV", "fits": "a FITS", "votable": "a VOTable"}
_ANGLE_UNITS = "deg, arcmin, arcsec, rad, ...; for RA also hourangle or h"


def table_format(path: str | os.PathLike) -> str | None:
    """The astropy format of a coordinate table by its name's ending (``TABLE_FORMATS``); None: read it as CSV."""
    name = Path(path).name.lower()
    return next((fmt for ending, fmt in TABLE_FORMATS.items() if name.endswith(ending)), None)


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _gunzipped(path: Path):
    """A gzip file's content, decompressed to its end so its CRC and length are checked: astropy stops at the last
    row it expects and takes a cut stream for a FITS file without a table, or reads one cut in its trailer."""
    import gzip
    import io
    import zlib

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StargalError(f"{path}: cannot read coordinate file ({exc})") from None
    try:
        return io.BytesIO(gzip.decompress(raw))
    except (OSError, EOFError, zlib.error) as exc:
        raise StargalError(f"{path}: a truncated or corrupt gzip file ({_first_line(exc)})") from None


def _astropy_table(path: Path, fmt: str):
    """The table astropy reads from ``path`` (a FITS file's first table HDU), text as str; StargalError in one line
    for a missing, unreadable, corrupt or truncated file."""
    from astropy.table import Table

    if not path.exists():
        raise StargalError(f"{path}: coordinate file not found")
    source = _gunzipped(path) if path.name.lower().endswith(".gz") else path
    table, error = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # recorded, not printed: units are checked later, truncation refused
        try:
            table = Table.read(source, format=fmt, **({"character_as_bytes": False} if fmt == "fits" else {}))
        except Exception as exc:  # astropy's readers raise OSError, ValueError, EOFError, YAML errors... on bad files
            error = _first_line(exc)
    # a FITS file shorter than its headers say: astropy warns, then fails on a reshape, or reads it whole when only
    # the last block's padding is gone; either way the file is not the one written
    messages = [str(w.message) for w in caught]
    if any("truncated" in m for m in messages):
        raise StargalError(f"{path}: a truncated FITS file (shorter than its headers say)")
    if error is not None:  # a header cut short reads as "No table found", after a warning that says why
        damaged = any("corrupt" in m for m in messages)
        what = "a truncated or corrupt FITS file" if damaged else f"cannot read {_FORMAT_NAMES[fmt]} table"
        raise StargalError(f"{path}: {what} ({error})")
    if fmt == "votable":  # a VOTable's text of varying length comes as objects: as text, like any other table's
        from astropy.table import MaskedColumn

        for name in table.colnames:
            column = table[name]
            values = np.ma.getdata(column)
            if values.dtype.kind == "O" and all(isinstance(v, str) for v in values.tolist()):
                attrs = {"unit": column.unit, "description": column.description}
                table[name] = MaskedColumn(values.astype(str), mask=np.ma.getmaskarray(column), **attrs)
    return table


def _read_astropy_coordinates(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``read_coordinate_table`` of an ECSV or FITS table: errors naming the file and the row (1-based)."""
    table = _astropy_table(path, fmt)
    names = table.colnames
    ira, idec = coordinate_columns(names, f"{path}: ")
    if not len(table):
        raise StargalError(f"{path}: no coordinates (a table without rows)")
    where = lambda i: f"{path}: row {i + 1}"  # noqa: E731
    ra = _column_degrees(table[names[ira]], "ra", path, where)
    dec = _column_degrees(table[names[idec]], "dec", path, where)
    validate_coordinates(ra, dec, where=where)
    carried, left_out = {}, {}
    for index, name in enumerate(names):
        if index not in (ira, idec):
            why = _not_carried(table[name])
            if why:  # the positions are still classified: only this column is left out (named below)
                left_out.setdefault(why, []).append(name)
                continue
            carried.setdefault(carried_name(name, index), []).append(_carried_column(table[name]))
    if left_out:  # a catalog as it comes, such as an SDSS sweep with its five-band columns, is read
        log.warning("%s: columns not carried to the output, which holds one number or text a cell: %s", path,
                    "; ".join(f"{', '.join(names)} ({why})" for why, names in left_out.items()))  # fmt: skip
    repeated = [n for n, columns in carried.items() if len(columns) > 1]
    if repeated:
        raise StargalError(f"{path}: column(s) {', '.join(repeated)} appear more than once")
    return ra, dec, {n: columns[0] for n, columns in carried.items()}


def _column_degrees(column, kind: str, path: Path, where) -> np.ndarray:
    """Degrees of an ra or dec column: numbers in its unit (degrees without one), or text read as a CSV's is."""
    name = _one_value_per_row(column, path)
    masked = np.flatnonzero(np.ma.getmaskarray(column))
    if masked.size:  # an empty cell: a position left out, which no default may replace
        raise StargalError(f"{where(masked[0])}: {kind} is missing (an empty, masked or NaN value)")
    values, unit = np.ma.getdata(column), column.unit
    if values.dtype.kind == "U":
        from astropy import units as u

        said = unit.to_string().strip().strip('"') if unit is not None else None
        if said in _SEXAGESIMAL_UNITS:  # VizieR's sexagesimal text: RA "h:m:s", Dec "d:m:s"
            return _sexagesimal_column(values.tolist(), said, kind, name, path, where)
        if unit is not None and _spelled_unit(unit.to_string()) != u.deg:  # text: degrees, or sexagesimal RA in hours
            raise StargalError(
                f"{path}: column {name}: text with unit {unit.to_string()!r}; text is read as degrees or "
                "sexagesimal, so give numbers in that unit or drop it"
            )
        texts = values.tolist()
        declared = kind == "ra" and unit is not None
        hours = next((i for i, text in enumerate(texts) if _read_in_hours(text)), None) if declared else None
        if hours is not None:  # the column says degrees, its text hours: one reading is 15 times the other
            raise StargalError(
                f"{where(hours)}: ra {texts[hours]!r} in column {name}, whose unit is {unit.to_string()!r}: "
                "sexagesimal RA text is read in hours, not in the column's unit; drop the unit to read it in hours, or "
                "give degrees (numbers, or 200d21m30.6s)"
            )
        return angles_or_error(texts, kind, where)
    if values.dtype.kind not in "iuf":
        raise StargalError(f"{path}: column {name}: {values.dtype} values, not numbers or text")
    degrees = np.asarray(values, dtype=np.float64)
    return degrees if unit is None else _to_degrees(degrees, unit, kind, f"{path}: column {name}")


_SEXAGESIMAL_UNITS = {"h:m:s": "ra", "d:m:s": "dec"}  # VizieR's units of sexagesimal text, and what each is for


def _sexagesimal_column(texts: list[str], said: str, kind: str, name: str, path: Path, where) -> np.ndarray:
    """Degrees of a text column whose unit is VizieR's "h:m:s" (RA, read in hours, as RA text is) or "d:m:s"
    (Dec); StargalError for such a unit on the other coordinate, or RA text that is not sexagesimal hours (a bare
    number or "200d21m30.6s" would be degrees, against the unit)."""
    if _SEXAGESIMAL_UNITS[said] != kind:
        raise StargalError(
            f"{path}: column {name}: unit {said!r} for {kind}; "
            + ("an RA" if kind == "ra" else "a Dec")
            + f" in sexagesimal text has unit {'h:m:s' if kind == 'ra' else 'd:m:s'!r}"
        )
    if kind == "ra":
        bad = next((i for i, text in enumerate(texts) if not _read_in_hours(text)), None)
        if bad is not None:
            raise StargalError(
                f"{where(bad)}: ra {texts[bad]!r} in column {name}, whose unit is 'h:m:s': not sexagesimal hours "
                "(such as 12:34:56.7 or 12 34 56.7)"
            )
    return angles_or_error(texts, kind, where)


def _read_in_hours(text: str) -> bool:
    """True when ``_angle`` reads an RA text in hours (sexagesimal without "d"), or would but for its 0-24 range."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        float(text)
        return False
    if _SEXAGESIMAL_RA_DEGREES.search(text):
        return False
    if _plain_sexagesimal(text, "ra") is not None:  # without astropy's parser, slow on big tables
        return True
    try:
        _angle(text, "ra")
    except ValueError as exc:
        return "RA in hours" in str(exc)
    return True


def _to_degrees(values: np.ndarray, unit, kind: str, where: str) -> np.ndarray:
    """``values`` in ``unit`` as degrees: an angle, or for RA hourangle or a time ("h": FITS has no hourangle unit);
    StargalError for any other unit, and for a declination in hours."""
    from astropy import units as u

    if isinstance(unit, u.UnrecognizedUnit):  # not a FITS unit, such as TUNIT = 'hourangle': astropy's own name?
        unit = _spelled_unit(unit.name)
    text = unit.to_string() or "dimensionless"
    hours = unit in (u.hourangle, u.hour)
    if not hours and unit.is_equivalent(u.hour):  # days ('d') or seconds read as hours would move RA anywhere
        raise StargalError(f"{where}: unit {text!r} is a time, not an angle ({_ANGLE_UNITS})")
    if hours and kind == "dec":
        raise StargalError(f"{where}: unit {text!r}: a declination is in degrees, not hours")
    if hours:  # 15 degrees an hour, exactly (astropy's hourangle goes through radians)
        return values * 15.0
    if not unit.is_equivalent(u.deg):
        raise StargalError(f"{where}: unit {text!r} is not an angle ({_ANGLE_UNITS})")
    return u.Quantity(values, unit).to_value(u.deg)


def _spelled_unit(name: str):
    """The astropy unit a table's unit name means, read generously: astropy's own names ('hourangle'), and the
    upper-case or plural spellings other software writes ('DEG', 'degrees'); the unrecognised unit otherwise."""
    from astropy import units as u

    primes = {"'": u.arcmin, '"': u.arcsec, "''": u.arcsec}  # arcminutes and arcseconds as often written
    if name.strip() in primes:
        return primes[name.strip()]
    for spelling in (name, name.lower(), name.lower().removesuffix("s")):
        unit = u.Unit(spelling, parse_strict="silent")
        if not isinstance(unit, u.UnrecognizedUnit):
            return unit
    return unit


def _one_value_per_row(column, path: Path) -> str:
    """The name of a plain astropy column of one value per row; StargalError for any other, naming it."""
    from astropy.table import Column

    name = column.info.name
    if not isinstance(column, Column):  # a mixin such as Time or SkyCoord
        raise StargalError(
            f"{path}: column {name}: a {type(column).__name__} column, which cannot be read as a position"
        )
    if column.ndim != 1:
        raise StargalError(
            f"{path}: column {name}: {'x'.join(map(str, column.shape[1:]))} values per row; a position is one "
            "value per row"
        )
    return name


def _not_carried(column) -> str | None:
    """Why the output tables cannot hold an input column's cells (several values per row, arrays of varying length,
    objects such as times), in a few words; None for a column they can."""
    from astropy.table import Column

    if not isinstance(column, Column):  # a mixin such as Time or SkyCoord
        return f"a {type(column).__name__} column"
    if column.ndim != 1:
        return f"{'x'.join(map(str, column.shape[1:]))} values per row"
    if column.dtype.kind not in "biufU":
        return f"{column.dtype} values"
    return None


def _carried_column(column):
    """An input column (one ``_not_carried`` accepts) to carry as it is: type, unit, mask, description."""
    from astropy.table import Column, MaskedColumn

    attrs = {"unit": column.unit, "description": column.description}
    if isinstance(column, MaskedColumn):
        return MaskedColumn(np.ma.getdata(column), mask=np.ma.getmaskarray(column), **attrs)
    return Column(np.asarray(column), **attrs)


# Output formats by extension; metadata keys are FITS keywords (8 characters), identical in ECSV.
OUTPUT_FORMATS = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".fits": "fits"}
UNITS = {"ra": "deg", "dec": "deg", "x": "pix", "y": "pix", "r_psfmag": "mag", "r_mag": "mag", "r50_px": "pix"}
DESCRIPTIONS = {
    "objid": "catalog object (rerun-run-camcol-field-id)",
    "ra": "right ascension (ICRS)",
    "dec": "declination (ICRS)",
    "x": "0-based column in the aligned cube",
    "y": "0-based row in the aligned cube",
    "r_psfmag": "catalog r-band PSF magnitude",
    "catalog_type": "the catalog's class (SDSS OBJC_TYPE)",
    "r_mag": "r-band PSF magnitude over the local sky level, scaled to the field's stars' 3.2 arcsec flux; "
    "empty where saturated",
    "saturated": "the r-band core is saturated (a star brighter than r ~ 14): no r_mag, its flux only a lower limit",
    "r50_px": "r-band half-light radius over the local sky level (empty: no positive flux over it within 12 px, or "
    "half of it beyond 8 px: a large galaxy, or neighbours' light in a crowded field)",
    "deblended": "split from a blend with neighbours: shared pixels, a less sure class",
    "p_star": "model probability that the source is a star",
    "label": "star or galaxy (p_star >= threshold); empty unless status is ok",
    "status": "ok, outside, edge (too near the border; a detected source within 2 px of it, cut by it), no_data, "
    "no_source (the frame shows no source there), off_peak (light, but no source centred there: a bright star's "
    "wing, or > ~1 arcsec off a source) or artefact (no star or galaxy: seen in r alone, g and i under 5 % of its "
    "flux or under S/N 1, such as a cosmic ray; or a noise peak on a noisy r column that the other bands do not show)",
}
# every column predict.py writes itself: an input column of one of these names is carried as input_NAME
_OWN_COLUMNS = {*DESCRIPTIONS, "catalog_type"}
# Text formats: plain CSV rounds for reading by eye; ECSV keeps every float round-trippable.
CSV_FORMATS = {"x": "%.3f", "y": "%.3f", "p_star": "%.6f", "r_psfmag": "%.3f"}
ECSV_FORMATS = {"p_star": "%.9g", "r_psfmag": "%.9g"}  # float32; float64 columns are written with repr


def output_format(path: str | os.PathLike) -> str:
    """The astropy format of an output file, from its extension; StargalError for any other extension."""
    if Path(path).is_dir():
        raise StargalError(f"--out {path}: a folder; name a file ending in .csv, .ecsv or .fits")
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise StargalError(f"--out {path}: unknown extension {suffix or '(none)'!r}; use .csv, .ecsv or .fits")
    require_writable_destination(path, "--out")
    return OUTPUT_FORMATS[suffix]


def check_fits_text(out: str | os.PathLike, carried: dict) -> None:
    """Refuse, before any classification, carried columns a FITS output cannot hold: FITS text (names and values)
    is ASCII, and astropy's writer would otherwise fail after the work with an encoding error; its column names
    are case-blind."""
    if output_format(out) != "fits":
        return
    folded: dict[str, str] = {}
    for name in carried:
        twin = folded.setdefault(name.lower(), name)
        if twin != name:  # FITS column names are case-blind: readers would take one for the other
            raise StargalError(
                f"--out {out}: columns {twin!r} and {name!r} differ only in case, which FITS does not tell apart; "
                "rename one, or write .ecsv or .csv"
            )
    for name, values in carried.items():
        if not name.isascii():
            raise StargalError(f"--out {out}: column name {name!r} is not ASCII, which FITS cannot store; write .ecsv")
        if np.asarray(values).dtype.kind == "b" and np.ma.getmaskarray(values).any():
            # astropy writes a FITS logical without its null: an empty (masked) value would come out True or False
            row = int(np.flatnonzero(np.ma.getmaskarray(values))[0]) + 1
            raise StargalError(
                f"--out {out}: column {name!r} is a true/false column with empty values (row {row}), which a FITS "
                "output would write as true or false; write .ecsv or .csv"
            )
        data = np.asarray(values)
        if data.dtype.kind != "U":
            continue
        bad = [k for k, text in enumerate(data.ravel()) if not text.isascii()]
        if bad:
            raise StargalError(
                f"--out {out}: column {name!r} holds text that is not ASCII (row {bad[0] + 1}: {str(data[bad[0]])!r}), "
                "which FITS cannot store; write .ecsv or .csv"
            )


def predictions_table(pred: Predictions, meta: dict, before: dict | None = None, after: dict | None = None):
    """An astropy Table of the predictions, one row per input in input order, with units and ``meta``.

    Columns: ``before`` (e.g. objid), ra, dec, x, y, ``after`` (e.g. r_psfmag, catalog_type), p_star, label, status.
    x, y and p_star are masked where undefined (written as empty cells in CSV and ECSV, NaN in FITS). Astropy columns
    among ``before`` (an ECSV or FITS input's carried columns) keep their mask, unit and description, and their
    NaN and inf values as such.
    """
    from astropy.table import MaskedColumn, Table

    columns = {**(before or {}), "ra": pred.ra, "dec": pred.dec, "x": pred.x, "y": pred.y, **(after or {})}
    columns |= {"p_star": pred.p_star, "label": pred.label, "status": pred.status}
    table = Table(meta=dict(meta))
    for name, values in columns.items():
        data = np.asarray(values)
        # an input table's carried column keeps its mask, unit and description
        mask = np.ma.getmaskarray(values) if np.ma.isMaskedArray(values) else None
        if data.dtype.kind == "f" and name not in ("ra", "dec") and name not in (before or {}):
            # our own undefined values are empty; a carried NaN or inf is the user's value and stays one
            mask = ~np.isfinite(data) if mask is None else mask | ~np.isfinite(data)
        unit = UNITS.get(name) or getattr(values, "unit", None)
        description = DESCRIPTIONS.get(name) or getattr(values, "description", None)
        table[name] = MaskedColumn(data, mask=mask, unit=unit, description=description)
    return table


def _quoted(values: list[str], delimiter: str) -> list[str]:
    """Text values quoted where they hold the delimiter, a quote or a line break (or, space-delimited, any white
    space), or begin with "#", which would make a row's line a comment to astropy's readers (a name "#12" lost its
    row); inner quotes doubled: a carried input column may hold anything, e.g. a name "NGC 1, knot"."""
    special = {'"', "\n", "\r", delimiter} | ({"\t"} if delimiter == " " else set())
    return ['"' + v.replace('"', '""') + '"' if special & set(v) or v.lstrip().startswith("#") else v for v in values]


def _text_columns(table, formats: dict[str, str], quote_empty: bool) -> list[list[str]]:
    """Every column of ``table`` as strings, vectorised per column (astropy's writers format cell by cell, which
    takes tens of seconds for 100,000 masked rows): masked cells and empty strings become "" (quoted in ECSV);
    text is quoted where it needs to be (``_quoted``: space-delimited ECSV when ``quote_empty``, else CSV)."""
    empty = '""' if quote_empty else ""
    delimiter = " " if quote_empty else ","
    out = []
    for name in table.colnames:
        column = table[name]
        values = np.ma.getdata(column)
        mask = np.ma.getmaskarray(column)
        if values.dtype.kind == "f":
            fmt = formats.get(name)
            if fmt:
                text = [fmt % v for v in values.tolist()]
            elif values.dtype.itemsize < 8:  # a carried float32: its own shortest digits, not float64's repr
                text = np.asarray(values).astype(str).tolist()
            else:
                text = [repr(v) for v in values.tolist()]
        else:
            text = _quoted([str(v) for v in values.tolist()], delimiter)
            mask = mask | (np.asarray(values, dtype=str) == "")
        for i in np.flatnonzero(mask):
            text[i] = empty
        out.append(text)
    return out


def _fits_units(table, path):
    """``table`` without the units FITS cannot hold (a carried column's hourangle, whose scale of 15 astropy
    refuses to write, or a function unit such as mag(AB)), with a warning naming the columns, rather than an
    error after the classification: an ECSV output keeps them."""
    lost = {}
    for name in table.colnames:
        unit = table[name].unit
        try:
            if unit is not None:
                unit.to_string(format="fits")
        except ValueError:  # astropy's UnitScaleError is one
            lost[name] = unit.to_string()
    if not lost:
        return table
    log.warning(
        "%s: FITS cannot hold the unit of %s: written without it (an .ecsv output keeps it)",
        path,
        ", ".join(f"{n} ({u})" for n, u in lost.items()),
    )
    table = table.copy(copy_data=False)
    for name in lost:
        table[name].unit = None
    return table


def _fits_int8_widened(table):
    """``table`` with its int8 columns (a carried ECSV column, or a FITS byte column of TZERO -128) as int16:
    astropy writes int8 as a FITS logical, so 1, 2, -128 came out True, True, True with exit 0."""
    names = [name for name in table.colnames if table[name].dtype == np.int8]
    if not names:
        return table
    table = table.copy(copy_data=False)
    for name in names:
        table[name] = table[name].astype(np.int16)  # keeps the mask, unit and description
    return table


def write_predictions(path: str | os.PathLike, table) -> None:
    """Write ``table`` atomically in the format its extension names (``output_format``): FITS through astropy;
    CSV and ECSV with astropy's header (ECSV: units, types, metadata) and rows formatted column by column."""
    import io

    from .fsio import atomic_path, write_text

    fmt = output_format(path)
    if fmt == "fits":
        from astropy.io.fits.verify import VerifyWarning

        table = _fits_int8_widened(_fits_units(table, path))
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # advice on a carried column's name ("#id", "B-V"), which FITS holds and astropy reads back as written
            warnings.simplefilter("ignore", VerifyWarning)
            table.write(tmp, format="fits", overwrite=True)
        return
    if fmt == "ascii.ecsv":
        head = io.StringIO()
        table[:0].write(head, format="ascii.ecsv")
        header, delimiter, columns = head.getvalue(), " ", _text_columns(table, ECSV_FORMATS, quote_empty=True)
    else:
        names = ",".join(_quoted(list(table.colnames), ","))
        header, delimiter, columns = names + "\n", ",", _text_columns(table, CSV_FORMATS, False)
    rows = "\n".join(map(delimiter.join, zip(*columns, strict=True)))
    write_text(path, header + rows + ("\n" if rows else ""))


def read_predictions(path: str | os.PathLike):
    """A predictions file read back as an astropy Table (any of the output formats)."""
    from astropy.table import Table

    return Table.read(path, format=output_format(path))
