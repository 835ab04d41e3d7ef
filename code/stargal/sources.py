"""Where stage 00 gets SDSS files from: the SAS, an HTTP mirror, a local folder, or the simulated sky.

``--source`` accepts:

- ``sdss``: the SDSS Science Archive Server, ``config.SAS_BASE_URL`` (DR17 eboss);
- an ``http(s)://`` base URL of a mirror with the SAS layout below it;
- a local folder in any of three layouts, looked up in this order for each file:
  1. the SAS layout (``photoObj/frames/RERUN/RUN/CAMCOL/...``, ``sweeps/dr13_final/RERUN/...``) below the
     folder or below its ``sas/`` sub-folder (another stargal data folder);
  2. the reference project's bundle layout ``rerun_301/run_8162/camcol_6/field_80_r.fits.bz2``,
     ``field_80_irg.jpg``, ``gal.fits.gz``, ``star.fits.gz`` (the folder itself, or its ``data/``);
  3. any tree holding files under their SAS file names (e.g. ``shared/sdss-sample/``);
- ``simulated``: the built-in simulated sky (``stargal.simulate``).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from . import sdss
from .config import SAS_BASE_URL
from .errors import StargalError


@dataclass(frozen=True)
class FileSpec:
    """One file to fetch: its SAS path relative to the base, and its verification kind."""

    relpath: str
    kind: str  # frame, irg or catalog (see stargal.verify)
    band: str  # u g r i z or irg for frames, gal or star for catalogs
    rerun: int
    run: int
    camcol: int
    field: int | None = None  # None for a run/camcol's catalogs

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        """How the file is named to users: the band or catalog kind and the file name."""
        what = f"catalog {self.band}" if self.kind == "catalog" else f"band {self.band}"
        return f"{self.name} ({what})"


def redact_url(text: str) -> str:
    """``text`` (a URL, or a message naming URLs) with the user name and password of each URL replaced by ``***``
    (for messages and the manifest)."""
    return _USERINFO.sub("//***@", text)


_USERINFO = re.compile(r"//[^/@\s]+@")
# folders a local copy's name search looks into at most: `--source /` must not walk the whole disk
MAX_SEARCHED_FOLDERS = 20_000

log = logging.getLogger("stargal")


@dataclass(frozen=True)
class HttpSource:
    base_url: str

    def url(self, spec: FileSpec) -> str:
        return self.base_url + quote(spec.relpath)

    def describe(self) -> str:
        return redact_url(self.base_url)


@dataclass
class LocalSource:
    root: Path
    _index: dict[str, Path] | None = field(default=None, repr=False)
    _bundle: bool = field(default=False, repr=False)  # a file under a bundle name lies below the root
    _unaccepted: dict[str, Path] = field(default_factory=dict, repr=False)  # filled with the name index

    def describe(self) -> str:
        return str(self.root)

    def locate(self, spec: FileSpec) -> Path | None:
        """The file for ``spec`` in this folder, in whichever layout it is; None if absent."""
        for candidate in self._candidates(spec):
            if candidate.is_file():
                return candidate
        return self._name_index().get(spec.name)

    def _candidates(self, spec: FileSpec) -> list[Path]:
        out = [self.root / spec.relpath, self.root / "sas" / spec.relpath]
        camcol_dir = Path(f"rerun_{spec.rerun}") / f"run_{spec.run}" / f"camcol_{spec.camcol}"
        if spec.kind == "catalog":
            bundle_name = f"{spec.band}.fits.gz"
        else:
            bundle_name = f"field_{spec.field}_{spec.band}." + ("jpg" if spec.kind == "irg" else "fits.bz2")
        return [*out, self.root / camcol_dir / bundle_name, self.root / "data" / camcol_dir / bundle_name]

    def holds_sdss_files(self) -> bool:
        """Whether any SDSS file, under its SAS or its bundle name, lies anywhere below the root (a mistyped or
        empty folder holds none)."""
        return bool(self._name_index()) or self._bundle

    def unaccepted_copies(self) -> dict[str, Path]:
        """SAS file name -> a file below the root that holds it under an encoding stage 00 does not take (a frame
        unpacked or gzipped, a sweep unpacked or bzipped: ``sdss.sas_name_of``), found with the name index."""
        self._name_index()
        return self._unaccepted

    def _name_index(self) -> dict[str, Path]:
        """SAS file name -> path for every SDSS file anywhere below the root (built once)."""
        if self._index is None:
            index: dict[str, Path] = {}
            for searched, (dirpath, dirnames, filenames) in enumerate(os.walk(self.root, followlinks=False)):
                if searched == MAX_SEARCHED_FOLDERS:
                    log.warning(
                        "--source %s: searched %d folders below it for SDSS file names and stopped; "
                        "name the folder that holds the files", self.root, MAX_SEARCHED_FOLDERS,
                    )  # fmt: skip
                    break
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if sdss.parse_filename(name) is not None:
                        index.setdefault(name, Path(dirpath) / name)
                    elif sas_name := sdss.sas_name_of(name):
                        self._unaccepted.setdefault(sas_name, Path(dirpath) / name)
                    elif _BUNDLE_NAME.match(name) and Path(dirpath).name.startswith("camcol_"):
                        self._bundle = True
            self._index = index
        return self._index


_BUNDLE_NAME = re.compile(r"^(field_\d+_([ugriz]\.fits\.bz2|irg\.jpg)|(gal|star)\.fits\.gz)$")


@dataclass(frozen=True)
class SimulatedSource:
    def describe(self) -> str:
        return "simulated"


Source = HttpSource | LocalSource | SimulatedSource


def resolve_source(text: str) -> Source:
    """Parse ``--source``; raise StargalError with a one-line reason for anything unusable."""
    text = text.strip()
    if not text:
        raise StargalError("--source: empty")
    if text == "sdss":
        return HttpSource(SAS_BASE_URL)
    if text == "simulated":
        return SimulatedSource()
    if "://" in text:
        return HttpSource(_check_url(text))
    path = Path(text).expanduser()
    if not path.exists():
        raise StargalError(
            f"--source {text}: no such folder (expected sdss, simulated, an http(s):// URL or a local folder)"
        )
    if not path.is_dir():
        raise StargalError(f"--source {text}: not a folder")
    return LocalSource(path.resolve())


def _check_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise StargalError(
            f"--source {redact_url(text)}: unsupported URL scheme {parts.scheme!r} (use http:// or https://)"
        )
    try:
        port = parts.port
    except ValueError:
        raise StargalError(f"--source {redact_url(text)}: malformed URL (bad port)") from None
    if not parts.hostname or " " in text or (port is not None and not 0 < port < 65536):
        raise StargalError(f"--source {redact_url(text)}: malformed URL (no host)")
    if parts.query or parts.fragment:
        raise StargalError(f"--source {redact_url(text)}: a base URL takes no query or fragment")
    return text if text.endswith("/") else text + "/"
