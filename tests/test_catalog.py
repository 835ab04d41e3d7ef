"""Catalog selection and RA/DEC -> pixel conversion (stargal.catalog), synthetic and real sweeps."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from stargal import catalog, sdss
from stargal.config import LABEL_GALAXY, LABEL_STAR, PIXEL_SCALE_ARCSEC
from stargal.tables import OBJECT_DTYPE

SHAPE = (100, 150)


def make_wcs(shape=SHAPE) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [200.3, 36.8]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    d = PIXEL_SCALE_ARCSEC / 3600
    w.wcs.cd = [[-d, 0.0], [0.0, d]]
    return w


def make_catalog(wcs: WCS, x, y, fields, objc_type) -> np.ndarray:
    """A calibObj-like structured array with objects at pixel positions (x, y) of ``wcs``."""
    n = len(x)
    ra, dec = wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
    dtype = [
        ("RUN", "i2"), ("RERUN", "S3"), ("CAMCOL", "u1"), ("FIELD", "i2"), ("ID", "i2"), ("OBJC_TYPE", "i4"),
        ("RA", "f8"), ("DEC", "f8"), ("PSF_FWHM", "f4", (5,)), ("PSFFLUX", "f4", (5,)), ("MODELFLUX", "f4", (5,)),
    ]  # fmt: skip
    cat = np.zeros(n, dtype=dtype)
    cat["RUN"], cat["CAMCOL"], cat["RERUN"] = 4510, 4, b"301"
    cat["FIELD"] = fields
    cat["ID"] = np.arange(1, n + 1)
    cat["OBJC_TYPE"] = objc_type
    cat["RA"], cat["DEC"] = ra, dec
    cat["PSFFLUX"] = 100.0
    cat["MODELFLUX"][:, 2] = 10 ** ((22.5 - 18.0) / 2.5)
    return cat


def test_objects_in_frame_selects_by_footprint_not_field_number():
    w = make_wcs()
    # listed under field 30 but outside; listed under neighbours 29/31 but inside
    x = np.array([10.0, 75.0, 140.0, -20.0, 75.0, 75.0])
    y = np.array([5.0, 50.0, 95.0, 50.0, 130.0, 2.0])
    fields = np.array([29, 30, 31, 30, 30, 29])
    cat = make_catalog(w, x, y, fields, 6)
    table, mismatched = catalog.objects_in_frame(cat, "star", w, SHAPE, rerun=301)
    assert mismatched == 0
    assert table.dtype == OBJECT_DTYPE
    assert table["id"].tolist() == [1, 2, 3, 6]
    assert table["field"].tolist() == [29, 30, 31, 29]
    np.testing.assert_allclose(table["x"], x[[0, 1, 2, 5]], atol=1e-8)
    np.testing.assert_allclose(table["y"], y[[0, 1, 2, 5]], atol=1e-8)
    assert (table["label"] == LABEL_STAR).all()
    assert table["objid"][0] == "301-4510-4-29-1"
    np.testing.assert_allclose(table["r_psfmag"], 22.5 - 5.0, atol=1e-5)
    np.testing.assert_allclose(table["r_modelmag"], 18.0, atol=1e-5)


def test_objc_type_cross_check_and_labels():
    w = make_wcs()
    gal = make_catalog(w, [10.0, 20.0, 30.0], [10.0, 20.0, 30.0], 30, [3, 3, 6])
    star = make_catalog(w, [40.0, 50.0], [40.0, 50.0], 30, [6, 6])
    star["ID"] = [11, 12]  # other objects than the galaxies (an objid in both sweeps is dropped)
    table, mismatched = catalog.field_objects({"gal": gal, "star": star}, w, SHAPE, 301)
    assert mismatched == 1  # a "galaxy" whose OBJC_TYPE says star is dropped
    assert table["label"].tolist() == [LABEL_GALAXY, LABEL_GALAXY, LABEL_STAR, LABEL_STAR]
    only_stars, _ = catalog.field_objects({"star": star}, w, SHAPE, 301)
    assert len(only_stars) == 2
    empty, _ = catalog.field_objects({}, w, SHAPE, 301)
    assert len(empty) == 0 and empty.dtype == OBJECT_DTYPE


def test_prefilter_window():
    w = make_wcs()
    cat = make_catalog(w, np.zeros(7), np.zeros(7), np.arange(27, 34), 6)
    assert catalog.prefilter(cat, 30)["FIELD"].tolist() == [28, 29, 30, 31, 32]
    assert catalog.prefilter(cat, 30, window=1)["FIELD"].tolist() == [29, 30, 31]


def test_padded_coords():
    t1 = np.zeros(3, dtype=OBJECT_DTYPE)
    t1["label"] = [0, 1, 0]
    t1["x"], t1["y"] = [1, 2, 3], [4, 5, 6]
    t2 = np.zeros(1, dtype=OBJECT_DTYPE)
    t2["label"] = [1]
    t2["x"], t2["y"] = [7], [8]
    gal = catalog.padded_coords([t1, t2], LABEL_GALAXY)
    star = catalog.padded_coords([t1, t2], LABEL_STAR)
    assert gal.shape == (2, 2, 2) and gal.dtype == np.float32
    np.testing.assert_array_equal(gal[0], [[1, 4], [3, 6]])
    assert np.isnan(gal[1]).all()
    np.testing.assert_array_equal(star[:, 0], [[2, 5], [7, 8]])


@pytest.mark.real
def test_real_star_catalog_field_30(sample_dir):
    folder = sample_dir / "004510-4-0030"
    cat = sdss.read_catalog(folder / "calibObj-004510-4-star.fits.gz")
    frame = sdss.read_frame(folder / "frame-r-004510-4-0030.fits.bz2")
    pre = catalog.prefilter(cat, 30)
    table, mismatched = catalog.field_objects({"star": pre}, frame.wcs, frame.image.shape, 301)
    full, _ = catalog.field_objects({"star": cat}, frame.wcs, frame.image.shape, 301)
    assert mismatched == 0
    assert len(table) == len(full)  # the pre-filter loses nothing
    assert np.count_nonzero(table["field"] == 30) == 161  # every star listed under field 30 is inside
    assert set(np.unique(table["field"])) == {29, 30, 31}  # plus the overlap with both neighbours


def test_a_sweep_under_another_sweeps_name_is_refused(tmp_path):
    """A galaxy sweep saved under the star sweep's name (or another run's) would label every object wrongly."""
    cat = make_catalog(make_wcs(), [10, 20, 30], [30, 30, 30], [30, 30, 30], catalog.OBJC_TYPE_OF_KIND["gal"])
    columns = {name: cat[name] for name in cat.dtype.names}
    gal, star = tmp_path / "calibObj-004510-4-gal.fits.gz", tmp_path / "calibObj-004510-4-star.fits.gz"
    sdss.write_catalog(gal, columns)
    assert len(sdss.read_catalog(gal)) == 3
    star.write_bytes(gal.read_bytes())
    with pytest.raises(sdss.StargalError, match="3 of 3 rows are not OBJC_TYPE 6 \\(star\\).*delete it, and 00_"):
        sdss.read_catalog(star)
    other_run = tmp_path / "calibObj-008162-4-gal.fits.gz"
    other_run.write_bytes(gal.read_bytes())
    with pytest.raises(sdss.StargalError, match="rows of RUN 4510, but the file name says RUN 8162; wrong file"):
        sdss.read_catalog(other_run)
    # a sweep of real_sky.py's --sample folder: 00_download.py would not put anything back there
    from stargal.stages.realsky import _read_sweep

    with pytest.raises(sdss.StargalError, match=r"\(star\).*put the camcol's own sweep .* --sample folder") as info:
        _read_sweep(star)
    assert "00_download" not in str(info.value)


def test_an_object_in_both_sweeps_is_dropped_not_labelled_by_row_order(tmp_path):
    """One objid in the galaxy sweep (OBJC_TYPE 3) and in the star sweep (6): both rows went into the objects
    table, and stage 02's de-duplication kept the galaxy row (the first), a label chosen by row order, exit 0."""
    w = make_wcs()
    gal = make_catalog(w, [10.0, 20.0], [10.0, 20.0], 30, 3)
    star = make_catalog(w, [20.0, 60.0], [20.0, 60.0], 30, 6)
    star["ID"] = [1, 5]  # star 1 of field 30 is galaxy 1 of field 30 too
    sweeps = {}
    for kind, cat in (("gal", gal), ("star", star)):
        path = tmp_path / f"calibObj-004510-4-{kind}.fits.gz"
        sdss.write_catalog(path, {name: cat[name] for name in cat.dtype.names})
        sweeps[kind] = sdss.read_catalog(path)
    table, dropped = catalog.field_objects(sweeps, w, SHAPE, 301)
    assert dropped == 2  # both rows of the contradicted object
    assert table["objid"].tolist() == ["301-4510-4-30-2", "301-4510-4-30-5"]
    assert table["label"].tolist() == [LABEL_GALAXY, LABEL_STAR]
    alone, dropped = catalog.field_objects({"star": sweeps["star"]}, w, SHAPE, 301)  # one sweep: nothing to clash
    assert dropped == 0 and len(alone) == 2


def test_an_out_of_range_integer_in_an_objects_table_is_one_line_naming_the_file(tmp_path):
    """A label of 257 overflows the int8 column: numpy raised a bare OverflowError that named no file."""
    from stargal.errors import StargalError
    from stargal.tables import read_table, write_table

    path = tmp_path / "objects.csv"
    write_table(path, np.zeros(2, dtype=OBJECT_DTYPE))
    header, first, second = path.read_text().splitlines()
    label = header.split(",").index("label")
    cells = first.split(",")
    cells[label] = "257"
    path.write_text("\n".join([header, ",".join(cells), second]) + "\n")
    with pytest.raises(StargalError, match=r"objects\.csv: bad value in column 'label'"):
        read_table(path)
