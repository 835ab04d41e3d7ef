"""SDSS file formats of the simulated sky: what makes a rendered field look like a real frame on disk (the
HDU0 header, the calibration and sky HDUs, the irg colour jpeg), the columns of a calibObj sweep, and the
simulation's own side files (truth table, measured fluxes). Values in, header cards / arrays / bytes out;
the writing itself is ``stargal.stages.simulate``'s.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.wcs import WCS

from .config import BANDS, EXPTIME_S
from .paths import FieldId

# the camera's filter rows: header FRAME = field + FRAME_STAGGER, CCDLOC = 10 * CAMROW + camcol
FRAME_STAGGER = {"r": 0, "i": 2, "u": 4, "z": 6, "g": 8}
CAMROW = {"r": 1, "i": 2, "u": 3, "z": 4, "g": 5}
# measured: inverse variance of the template frames' calibration (header NMGYIVAR)
NMGYIVAR = {"u": 0.332729, "g": 0.0737074, "r": 0.187593, "i": 0.338535, "z": 8.45661}
SOFTBIAS = 1000  # software "bias" added to all DN, as in real frames
SIMULAT_COMMENT = "simulated by stargal, not SDSS data"

TRUTH_DTYPE = np.dtype(
    [
        ("field", "i4"),  # field that owns the object (the catalog lists it there if catalogued)
        ("id", "i4"),  # catalog ID within that field; -1 when not catalogued (below the detection limit)
        ("ra", "f8"),
        ("dec", "f8"),
        ("x", "f8"),  # 0-based column in the owning field's r frame
        ("y", "f8"),  # 0-based row
        ("cls", "U6"),  # true class: star or galaxy
        ("label", "i1"),  # true class as label: 0 galaxy, 1 star
        ("objc_type", "i4"),  # catalog OBJC_TYPE (photo's psf-model rule on measured fluxes); 0 if not catalogued
        ("u", "f4"),  # true magnitudes
        ("g", "f4"),
        ("r", "f4"),
        ("i", "f4"),
        ("z", "f4"),
        ("re_arcsec", "f4"),
        ("q", "f4"),
        ("pa_deg", "f4"),
        ("bulge_frac", "f4"),
        ("redshift", "f4"),
    ]
)

# the catalog fluxes the simulator measured on one rendered frame (simulation/.../measured-FIELD.npy)
MEASURED_DTYPE = np.dtype([("cell", "i4"), ("index", "i4"), ("psfflux", "f8", (5,)), ("modelflux", "f8", (5,))])


def frame_header(fid: FieldId, band: str, wcs: WCS, nmgy: float, tai: float) -> fits.Header:
    """A header with the keys, order and style of a real frame's HDU0: the frame's WCS, its calibration
    ``nmgy`` (nanomaggies per count) and ``tai``, the time its first row was read (seconds since 1858-11-17)."""
    day_s = tai % 86400
    hh, mm, ss = int(day_s // 3600), int(day_s % 3600 // 60), day_s % 60
    ra0, dec0 = wcs.wcs_pix2world([[0.5, 0.5]], 1)[0]
    cards = [
        ("EXTEND", True, "Extensions may be present"),
        ("BZERO", 0.0, "Set by MRD_SCALE"),
        ("BSCALE", 1.0, "Set by MRD_SCALE"),
        ("TAI", round(tai, 2), "1st row Number of seconds since Nov 17 1858"),
        ("RA", round(float(ra0), 5), "1st row RA of telescope boresight (deg)"),
        ("DEC", round(float(dec0), 6), "1st row Dec of telescope boresight (degrees)"),
        ("SPA", 73.962, "1st row Cam col position angle wrt N (deg)"),
        ("IPA", 16.053, "1st row Inst rotator position angle (deg)"),
        ("IPARATE", -0.0015, "1st row Inst rotator anglr velocity (deg/sec)"),
        ("AZ", 294.96709, "1st row Azimuth (encoder) of tele (0=N?) (deg)"),
        ("ALT", 75.604253, "1st row Altitude (encoder) of tele (degrees)"),
        ("FOCUS", 85.7, "1st row - Focus piston (microns?)"),
        ("DATE-OBS", "2009-11-18", "1st row - TAI date"),
        ("TAIHMS", f"{hh:02d}:{mm:02d}:{ss:05.2f}", "1st row TAI time HH:MM:SS.SS"),
        ("COMMENT", "TAI,RA,DEC,SPA,IPA,IPARATE,AZ,ALT,FOCUS at reading of col 0, row 0", None),
        ("ORIGIN", "SDSS", None),
        ("TELESCOP", "2.5m", None),
        ("TIMESYS", "TAI", None),
        ("RUN", fid.run, "Run number"),
        ("FRAME", fid.field + FRAME_STAGGER[band], "Frame sequence number within the run"),
        ("CCDLOC", 10 * CAMROW[band] + fid.camcol, "Survey location of CCD (e.g., rowCol)"),
        ("STRIPE", 70, "Stripe index number (23 <--> eta=0)"),
        ("STRIP", "N", "Strip in the stripe being tracked."),
        ("FLAVOR", "science", "Flavor of this run"),
        ("OBSERVER", "simulate", "Observer"),
        ("SYS_SCN", "mean", "System of the scan great circle (e.g., mean)"),
        ("EQNX_SCN", 2000.0, "Equinox of the scan great circle. (years)"),
        ("NODE", 95.0, "RA of the great circle's ascending node (deg)"),
        ("INCL", -30.0, "Great circle's inclination wrt cel. eq. (deg)"),
        ("XBORE", -22.74, "Boresight x offset from the array center (mm)"),
        ("YBORE", 0.0, "Boresight x offset from the array center (mm)"),
        ("OBJECT", "70 N", "e.g., 'stripe 50.6 degrees, north strip'"),
        ("EXPTIME", f"{EXPTIME_S}", "Exposure time (seconds)"),
        ("SYSTEM", "FK5", "System of the TCC coordinates (e.g., mean)"),
        ("CCDMODE", "DRIFT", "'STARING' or 'DRIFT'"),
        ("C_OBS", 26322, "CCD row clock rate (usec/row)"),
        ("COLBIN", 1, "Binning factor perpendicular to the columns"),
        ("ROWBIN", 1, "Binning factor perpendicular to the rows"),
        ("DAVERS", "v15_13_1", "Version of DA software"),
        ("SCDMETHD", "sqrtDynamic", "scdMethod"),
        ("SCDWIDTH", 1280, "scdDisplayWidth"),
        ("SCDDECMF", 1, "scdDecimateFactor"),
        ("SCDOFSET", 410, "scdDisplayOffset"),
        ("SCDDYNTH", -19, "scdDynamicThresh"),
        ("SCDSTTHL", 30, "scdStaticThreshL"),
        ("SCDSTTHR", 30, "scdStaticThreshR"),
        ("SCDREDSZ", 480, "scdReduceSize"),
        ("SCDSKYL", 1333, "scdSkyLeft"),
        ("SCDSKYR", 1328, "scdSkyRight"),
        ("COMMENT", "CCD-specific parameters", None),
        ("CAMROW", CAMROW[band], "Row in the imaging camera"),
        ("BADLINES", 0, "Number of bad lines in frame"),
        ("EQUINOX", 2000.0, ""),
        ("SOFTBIAS", SOFTBIAS, 'software "bias" added to all DN'),
        ("BUNIT", "nanomaggy", "1 nanomaggy = 3.631e-6 Jy"),
        ("FILTER", band, "filter used"),
        ("CAMCOL", fid.camcol, "column in the imaging camera"),
        ("VERSION", "v5_6_3", None),
        ("DERV_VER", "NOCVS:v8_23", None),
        ("ASTR_VER", "NOCVS:v5_24", None),
        ("ASTRO_ID", "2009-11-21T14:58:39 12217", None),
        ("BIAS_ID", "PS", None),
        ("FRAME_ID", "2010-08-11T10:31:59 16347", None),
        ("KO_VER", "devel", None),
        ("PS_ID", f"2009-11-21T11:35:46 28205 camCol {fid.camcol}", None),
        ("ATVSN", "NOCVS:v5_24", "ASTROTOOLS version tag"),
        ("RADECSYS", "ICRS", "International Celestial Ref. System"),
        ("CTYPE1", "RA---TAN", "Coordinate type"),
        ("CTYPE2", "DEC--TAN", "Coordinate type"),
        ("CUNIT1", "deg", "Units"),
        ("CUNIT2", "deg", "Units"),
        ("CRPIX1", float(wcs.wcs.crpix[0]), "X of reference pixel"),
        ("CRPIX2", float(wcs.wcs.crpix[1]), "Y of reference pixel"),
        ("CRVAL1", float(wcs.wcs.crval[0]), "RA of reference pixel (deg)"),
        ("CRVAL2", float(wcs.wcs.crval[1]), "Dec of reference pixel (deg)"),
        ("CD1_1", float(wcs.wcs.cd[0, 0]), "RA deg per column pixel"),
        ("CD1_2", float(wcs.wcs.cd[0, 1]), "RA deg per row pixel"),
        ("CD2_1", float(wcs.wcs.cd[1, 0]), "Dec deg per column pixel"),
        ("CD2_2", float(wcs.wcs.cd[1, 1]), "Dec deg per row pixel"),
        ("HISTORY", "GSSSPUTAST: simulated astrometry", None),
        ("COMMENT", "Calibration parameters", None),
        ("COMMENT", "Floats truncated at 10 binary digits with FLOATCOMPRESS", None),
        ("NMGY", round(nmgy, 8), "Calibration factor [nMgy per count]"),
        ("NMGYIVAR", NMGYIVAR[band], "Calibration factor inverse variance"),
        ("VERSIDL", "7.0", "Version of IDL"),
        ("VERSUTIL", "v5_5_5", "Version of idlutils"),
        ("VERSPOP", "v1_11_1", "Version of photoop product"),
        ("PCALIB", "/clusterfs/riemann/raid006/dr8/groups/boss/calib/dr8_final", "Value o"),
        ("PSKY", "/clusterfs/riemann/raid006/dr8/groups/boss/photo/sky", "Value of PHOT"),
        ("RERUN", str(fid.rerun), "rerun"),
        ("SIMULAT", True, SIMULAT_COMMENT),
    ]
    h = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # long comments are cut to the card, as in real headers
        for key, value, comment in cards:
            if key == "COMMENT":
                h.add_comment(value)
            elif key == "HISTORY":
                h.add_history(value)
            else:
                h[key] = (value, comment) if comment is not None else value
        h = fits.Header.fromstring(h.tostring())
    return h


def calibration_hdus(calib: np.ndarray, sky_dn: np.ndarray, shape: tuple[int, int]) -> list:
    """HDU1 (calibration vector) and HDU2 (sky grid, decimated 8x, with interpolation coordinates) as in frames."""
    hdu1 = fits.ImageHDU(calib.astype(np.float32))
    grid = sky_dn[::8, ::8].astype(np.float32)
    xinterp = ((np.arange(shape[1]) - 3.5) / 8).astype(np.float32)
    yinterp = ((np.arange(shape[0]) - 3.5) / 8).astype(np.float32)
    cols = [
        fits.Column(name="ALLSKY", format=f"{grid.size}E", dim=f"({grid.shape[1]},{grid.shape[0]})", array=grid[None]),
        fits.Column(name="XINTERP", format=f"{shape[1]}E", array=xinterp[None]),
        fits.Column(name="YINTERP", format=f"{shape[0]}E", array=yinterp[None]),
    ]
    return [hdu1, fits.BinTableHDU.from_columns(cols)]


def irg_jpeg_bytes(images: dict, offsets: dict) -> bytes:
    """An SDSS-style colour jpeg: i, r, g as red, green, blue with an asinh (Lupton) stretch, north-up flipped.

    ``images``: band -> float image (nanomaggies); ``offsets``: band -> (dx, dy) pixels relative to r."""
    from PIL import Image

    def on_r_grid(b: str) -> np.ndarray:
        dx, dy = (round(v) for v in offsets[b])
        return np.roll(images[b], (-dy, -dx), axis=(0, 1))

    rgb = np.stack([on_r_grid("i") * 1.0, on_r_grid("r") * 1.25, on_r_grid("g") * 2.0], -1).astype(np.float32)
    total = np.clip(rgb.mean(-1, keepdims=True), 1e-6, None)
    q, alpha = 8.0, 3.0
    scaled = rgb * (np.arcsinh(alpha * q * total) / (q * total))
    byte = np.clip(scaled * 255 / 1.2, 0, 255).astype(np.uint8)[::-1]
    buf = io.BytesIO()
    Image.fromarray(byte, "RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def calibobj_columns(cat: dict[str, np.ndarray], rerun: int, run: int, camcol: int) -> dict[str, np.ndarray]:
    """The columns of a calibObj sweep, with the real dtypes and shapes, from the catalog's measured values
    (``cat``: FIELD, ID, OBJC_TYPE, RA, DEC, ROWC, COLC [n, 5] and the flux, FWHM, calibration and sky arrays)."""
    n = len(cat["ID"])
    return {
        "RUN": np.full(n, run, np.int16),
        "RERUN": np.full(n, str(rerun), dtype="S3"),
        "CAMCOL": np.full(n, camcol, np.uint8),
        "FIELD": cat["FIELD"].astype(np.int16),
        "ID": cat["ID"].astype(np.int16),
        "OBJC_TYPE": cat["OBJC_TYPE"].astype(np.int32),
        "OBJC_FLAGS": np.zeros(n, np.int32),
        "ROWC": cat["ROWC"].astype(np.float32),
        "COLC": cat["COLC"].astype(np.float32),
        "RA": cat["RA"].astype(np.float64),
        "DEC": cat["DEC"].astype(np.float64),
        "PSF_FWHM": cat["PSF_FWHM"].astype(np.float32),
        "EXTINCTION": np.zeros((n, 5), np.float32),
        "SKYFLUX": cat["SKYFLUX"].astype(np.float32),
        "PSFFLUX": cat["PSFFLUX"].astype(np.float32),
        "PSFFLUX_IVAR": cat["PSFFLUX_IVAR"].astype(np.float32),
        "MODELFLUX": cat["MODELFLUX"].astype(np.float32),
        "MODELFLUX_IVAR": cat["MODELFLUX_IVAR"].astype(np.float32),
        "CALIB_STATUS": np.ones((n, 5), np.int32),
        "NMGYPERCOUNT": cat["NMGYPERCOUNT"].astype(np.float32),
        "RESOLVE_STATUS": np.full(n, 257, np.int32),
    }


def truth_table(cells: list) -> np.ndarray:
    """The truth of every object of ``cells`` (``stargal.simulate.Cell``), catalogued or not, as TRUTH_DTYPE rows."""
    parts = []
    for c in cells:
        t = np.zeros(len(c.pop), TRUTH_DTYPE)
        t["field"] = c.field
        t["id"] = c.ids
        t["ra"], t["dec"] = c.ra, c.dec
        t["x"], t["y"] = c.pop["x"], c.pop["y"]
        t["cls"] = np.where(c.pop["star"], "star", "galaxy")
        t["label"] = c.pop["star"].astype(np.int8)
        t["objc_type"] = c.objc_type
        for bi, b in enumerate(BANDS):
            t[b] = c.pop["mag"][:, bi]
        t["re_arcsec"], t["q"], t["pa_deg"] = c.pop["re"], c.pop["q"], c.pop["pa"]
        t["bulge_frac"], t["redshift"] = c.pop["bulge_frac"], c.pop["redshift"]
        parts.append(t)
    return np.concatenate(parts) if parts else np.zeros(0, TRUTH_DTYPE)
