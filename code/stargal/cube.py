"""The aligned cube of one field: all bands resampled onto the reference band's pixel grid.

On disk a FITS file whose primary HDU is float32 ``[bands, rows, columns]``, NaN where a band does
not cover a pixel, with the reference band's celestial WCS and keywords ``BANDS`` (e.g. ``ugriz``),
``REFBAND``, ``RERUN``, ``RUN``, ``CAMCOL``, ``FIELD``, ``SIMULAT`` and per band ``DX_<b>``/``DY_<b>``,
the measured offset of the band relative to the reference band in pixels.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from .errors import StargalError
from .fsio import atomic_path
from .sdss import quiet_wcs


@dataclass
class Cube:
    data: np.ndarray  # float32 [bands, rows, columns]
    wcs: WCS
    bands: str
    header: fits.Header

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape[1], self.data.shape[2]

    def band_index(self, band: str) -> int:
        return self.bands.index(band)


def write_cube(path: str | os.PathLike, data: np.ndarray, wcs: WCS, bands: str, meta: dict) -> None:
    """Write an aligned cube atomically; ``meta`` holds extra header keywords."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3 or data.shape[0] != len(bands):
        raise ValueError(f"cube must be [{len(bands)}, rows, columns], got {data.shape}")
    header = wcs.celestial.to_header()
    header["BANDS"] = (bands, "band order along the first axis")
    header["BUNIT"] = "nanomaggy"
    for key, value in meta.items():
        header[key] = value
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(data, header=header).writeto(tmp, overwrite=True)


def read_cube(path: str | os.PathLike, mmap: bool = True) -> Cube:
    """Open an aligned cube; memory-mapped by default so patch extraction reads only what it needs."""
    path = Path(path)
    if path.is_dir():  # fits.open's IsADirectoryError would read as a damaged file
        raise StargalError(f"{path}: is a folder, not a cube FITS file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, memmap=mmap) as hdul:
                header = hdul[0].header.copy()
                data = hdul[0].data
                if data is None or data.ndim != 3:
                    raise StargalError(f"{path}: not an aligned cube (expected a 3-D primary image)")
                # Keep the memory map alive after the HDU list closes; convert byte order lazily.
                data = data if mmap else np.array(data, dtype=np.float32)
    except FileNotFoundError:
        raise StargalError(f"{path}: aligned cube not found (run 01_alignment.py first)") from None
    except (OSError, TypeError, ValueError) as exc:  # astropy: TypeError "buffer is too small" when cut short
        raise StargalError(
            f"{path}: not a readable aligned cube ({exc}); the file is cut short or damaged: 01_alignment.py redoes it"
        ) from None
    bands = str(header.get("BANDS", "")).strip()
    if len(bands) != data.shape[0]:
        raise StargalError(f"{path}: BANDS keyword {bands!r} does not match {data.shape[0]} planes")
    return Cube(data, quiet_wcs(header), bands, header)
