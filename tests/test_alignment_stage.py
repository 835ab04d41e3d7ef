"""Stage 01 runner and script: simulated sky end to end, idempotence, bad inputs, real catalog stars."""

from __future__ import annotations

import bz2
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import TEST_FIELD_DIR, TINY, TINY_SHAPE

from stargal import fsio, sdss
from stargal.config import BANDS, LABEL_STAR, FieldSet
from stargal.cube import read_cube
from stargal.errors import StargalError
from stargal.fsio import load_npy, read_json, write_json
from stargal.paths import DataPaths, FieldId
from stargal.stages.alignment import ALIGN_METHOD, fingerprints, frame_paths, run_alignment
from stargal.tables import OBJECT_DTYPE, read_table

SCRIPT = Path(__file__).resolve().parents[1] / "code" / "01_alignment.py"
ONE = dataclasses.replace(TINY, fields=(81,))


def fid(field: int, fs: FieldSet = TINY) -> FieldId:
    return FieldId(fs.rerun, fs.run, fs.camcol, field)


@pytest.mark.slow
def test_simulated_sky_end_to_end(tiny_data: DataPaths):
    result = run_alignment(tiny_data, TINY, workers=1)
    assert result["aligned"] == list(TINY.fields) and result["objects_written"] == list(TINY.fields)
    truth = read_table(tiny_data.sim_truth(TINY.rerun, TINY.run, TINY.camcol), dtype=_truth_dtype())
    tables = []
    for f in TINY.fields:
        cube = read_cube(tiny_data.cube(fid(f)))
        assert cube.data.shape == (5, *TINY_SHAPE) and cube.bands == "ugriz"
        assert cube.header["REFBAND"] == "r" and cube.header["FIELD"] == f and cube.header["SIMULAT"]
        assert all(f"DX_{b}" in cube.header and f"DRIFT_{b}" in cube.header for b in BANDS)
        table = read_table(tiny_data.objects(fid(f)))
        tables.append(table)
        assert len(table) > 20 and set(np.unique(table["label"])) == {0, 1}
        assert np.any(table["field"] != f)  # objects listed under neighbouring fields are included
        # coordinates of the objects the field owns match the simulator's true positions
        own = np.sort(table[table["field"] == f], order="id")
        t = truth[(truth["field"] == f) & (truth["id"] >= 0)]
        t = t[np.isin(t["id"], own["id"])]
        order = np.argsort(t["id"])
        assert len(t) == len(own)
        np.testing.assert_allclose(own["x"], t["x"][order], atol=0.05)
        np.testing.assert_allclose(own["y"], t["y"][order], atol=0.05)
        assert (own["label"] == t["label"][order]).mean() > 0.8  # catalog class (noisy OBJC_TYPE) vs truth
    # the offsets the simulator injected are recovered (its frames' WCSs carry them)
    r = sdss.read_frame(tiny_data.frame(fid(81), "r"))
    g = sdss.read_frame(tiny_data.frame(fid(81), "g"))
    cube = read_cube(tiny_data.cube(fid(81)))
    cy, cx = (TINY_SHAPE[0] - 1) / 2, (TINY_SHAPE[1] - 1) / 2
    ra, dec = r.wcs.all_pix2world(cx, cy, 0)
    gx, gy = g.wcs.all_world2pix(ra, dec, 0)
    assert cube.header["DX_g"] == pytest.approx(gx - cx, abs=1e-3) and cube.header["DY_g"] == pytest.approx(
        gy - cy, abs=1e-3
    )
    # exercise tensors
    tdir = tiny_data.tensors_dir(TINY.rerun, TINY.run, TINY.camcol)
    images = load_npy(tdir / "images.npy", mmap=True)
    assert isinstance(images, np.memmap) and images.shape == (4, *TINY_SHAPE, 5) and images.dtype == np.float32
    np.testing.assert_array_equal(images[1, :, :, 3], read_cube(tiny_data.cube(fid(81))).data[3])
    meta = read_json(tdir / "tensors.json")
    assert meta["fields"] == list(TINY.fields)
    from stargal.integrity import _sealed_sets  # --verify's redo names the tensors' fields (else the reference's)

    redo = next(r for record, r, _ in _sealed_sets(tiny_data) if record == tdir / "tensors.json")
    fields = " ".join(map(str, TINY.fields))
    assert (
        redo == f"01_alignment.py --run {TINY.run} --camcol {TINY.camcol} --fields {fields} --data-dir {tiny_data.root}"
    )
    star = load_npy(tdir / "star_coords.npy")
    gal = load_npy(tdir / "gal_coords.npy")
    for i, t in enumerate(tables):
        n_star = int(np.sum(t["label"] == LABEL_STAR))
        assert meta["counts"][str(TINY.fields[i])] == {"gal": len(t) - n_star, "star": n_star}
        assert np.isfinite(star[i, :n_star]).all() and np.isnan(star[i, n_star:]).all()
        assert np.isfinite(gal[i, : len(t) - n_star]).all() and np.isnan(gal[i, len(t) - n_star :]).all()
    # report
    report = tiny_data.reports("alignment")
    summary = read_json(report / "summary.json")
    assert summary["totals"]["listed"] == sum(len(t) for t in tables)
    # an object the overlapping neighbours both list counts once (the totals summed the tables)
    distinct = len(np.unique(np.concatenate([t["objid"] for t in tables])))
    assert summary["totals"]["objects"] == distinct < summary["totals"]["listed"]
    assert [f["field"] for f in summary["fields"]] == list(TINY.fields)
    for name in ("band_offsets.png", "object_counts.png", "magnitudes.png", "before_after.png", "summary.md"):
        assert (report / name).stat().st_size > 500, name


def _truth_dtype():
    from stargal.sim_formats import TRUTH_DTYPE

    return TRUTH_DTYPE


@pytest.mark.slow
def test_idempotent_force_and_parallel(tiny_data: DataPaths):
    two = dataclasses.replace(TINY, fields=(81, 82))
    first = run_alignment(tiny_data, two, workers=2)
    assert first["aligned"] == [81, 82] and first["coordinates"] == "written"
    cube81 = read_cube(tiny_data.cube(fid(81)), mmap=False).data
    stamp = {p: p.stat().st_mtime_ns for f in (81, 82) for p in (tiny_data.cube(fid(f)), tiny_data.objects(fid(f)))}
    again = run_alignment(tiny_data, two, workers=1)
    assert again["aligned"] == [] and again["objects_written"] == [] and again["coordinates"] == "up to date"
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    # a touched frame holds the same content: nothing is aligned again, the record takes the frame's new time;
    # a frame of other content (here the same image compressed otherwise) makes only its field stale
    frame = tiny_data.frame(fid(82), "u")
    later = time.time() + 10
    os.utime(frame, (later, later))
    assert run_alignment(tiny_data, two, workers=1)["aligned"] == []
    assert tiny_data.cube(fid(82)).stat().st_mtime_ns == stamp[tiny_data.cube(fid(82))]
    assert read_json(tiny_data.field_record(fid(82)))["inputs"]["frames"] == fingerprints(
        frame_paths(tiny_data, fid(82))
    )
    frame.write_bytes(bz2.compress(bz2.decompress(frame.read_bytes()), compresslevel=1))
    assert run_alignment(tiny_data, two, workers=1)["aligned"] == [82]
    forced = run_alignment(tiny_data, two, workers=1, force=True, reports=False)
    assert forced["aligned"] == [81, 82]
    # serial and parallel runs give identical cubes
    np.testing.assert_array_equal(read_cube(tiny_data.cube(fid(81)), mmap=False).data, cube81)
    # a cube an older alignment method made (a record without align_method) is made again
    record_path = tiny_data.field_record(fid(81))
    record = read_json(record_path)
    del record["align_method"]
    write_json(record_path, record)
    assert run_alignment(tiny_data, two, workers=1, reports=False)["aligned"] == [81]
    assert read_json(record_path)["align_method"] == ALIGN_METHOD


def test_a_copy_that_did_not_keep_the_files_times_is_not_aligned_again(tiny_data: DataPaths):
    """``cp -r`` gives every file a new time: the frames' content, checked against the sha256 the record keeps,
    says the cubes are current (they used to be aligned again, without a word why)."""
    two = dataclasses.replace(TINY, fields=(81, 82))
    run_alignment(tiny_data, two, workers=1, reports=False)
    copy = DataPaths(tiny_data.root.parent / "copy")
    shutil.copytree(tiny_data.root, copy.root, copy_function=shutil.copy)  # content only, new times
    cube = copy.cube(fid(81)).read_bytes()
    assert run_alignment(copy, two, workers=1, reports=False)["aligned"] == []
    assert copy.cube(fid(81)).read_bytes() == cube
    # a record of before the digests were kept takes the times at their word: aligned again, digests kept now
    path = tiny_data.field_record(fid(81))
    record = read_json(path)
    record["inputs"].pop("frames_sha256")
    sealed = [path.parent / name for name in record.pop(fsio.INTEGRITY_KEY)["files"]]
    fsio.seal(path, sealed, record)
    later = time.time() + 10
    for frame in frame_paths(tiny_data, fid(81)):
        os.utime(frame, (later, later))
    assert run_alignment(tiny_data, two, workers=1, reports=False)["aligned"] == [81]
    assert set(read_json(path)["inputs"]["frames_sha256"]) == {p.name for p in frame_paths(tiny_data, fid(81))}


def test_frames_only_field_writes_cube_and_skips_coordinates(tiny_data: DataPaths):
    for kind in ("gal", "star"):
        tiny_data.catalog(TINY.rerun, TINY.run, TINY.camcol, kind).unlink()
    result = run_alignment(tiny_data, ONE, workers=1)
    assert result["aligned"] == [81] and result["coordinates"].startswith("skipped")
    assert tiny_data.cube(fid(81)).is_file() and not tiny_data.objects(fid(81)).exists()
    assert not tiny_data.tensors_dir(TINY.rerun, TINY.run, TINY.camcol).exists()
    assert read_json(tiny_data.reports("alignment", "summary.json"))["fields"][0]["objects"] is None


def test_catalogs_deleted_after_a_run_update_the_report(tiny_data: DataPaths):
    """Catalogs deleted after stage 01 ran: the objects table went, but the alignment report kept its counts (nothing
    was 'aligned' or 'written'), so the summary and the PDF report named objects no table holds."""
    run_alignment(tiny_data, ONE, workers=1)
    assert read_json(tiny_data.reports("alignment", "summary.json"))["totals"]["objects"] > 0
    for kind in ("gal", "star"):
        tiny_data.catalog(TINY.rerun, TINY.run, TINY.camcol, kind).unlink()
    result = run_alignment(tiny_data, ONE, workers=1)
    assert result["aligned"] == [] and not tiny_data.objects(fid(81)).exists()
    summary = read_json(tiny_data.reports("alignment", "summary.json"))
    assert summary["totals"]["objects"] == 0 and summary["fields"][0]["objects"] is None


def _nothing_written(paths: DataPaths, field: int = 81) -> bool:
    return not paths.cube(fid(field)).exists() and not paths.objects(fid(field)).exists()


def _rewrite_frame(path: Path, image=None, drop_wcs: bool = False) -> None:
    frame = sdss.read_frame(path)
    header = frame.header
    if drop_wcs:
        for key in list(header):
            if key.startswith(("CTYPE", "CRVAL", "CRPIX", "CD1_", "CD2_", "CUNIT", "RADE", "EQUINOX")):
                del header[key]
    sdss.write_frame(path, frame.image if image is None else image, header)


def test_missing_band(tiny_data: DataPaths):
    missing = tiny_data.frame(fid(81), "u")
    missing.unlink()
    with pytest.raises(StargalError, match=f"{missing.name}: file not found"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


def test_a_missing_band_names_the_download_of_its_field_and_folder(tiny_data: DataPaths):
    """The error said 'run 00_download.py': bare, that fetches the reference fields into the default data folder."""
    from stargal.stages.alignment import check_frames

    missing = tiny_data.frame(fid(81), "u")
    missing.unlink()
    with pytest.raises(StargalError, match=rf"^{missing}: file not found \(band u of field 301/8162/6/81; "
                       rf"00_download.py .*--fields 81 .*--data-dir {tiny_data.root} fetches it\)$"):  # fmt: skip
        check_frames(tiny_data, [fid(80), fid(81)])


def test_corrupt_bz2(tiny_data: DataPaths):
    bad = tiny_data.frame(fid(81), "g")
    bad.write_bytes(bad.read_bytes()[:5000])
    # the command that fetches it again names its field (a bare 00_download.py fetches the reference fields)
    refetch = (
        rf"damaged: 00_download.py --run 8162 --camcol 6 --fields 81 --frames-only --data-dir {tiny_data.root} --verify"
    )
    with pytest.raises(StargalError, match=f"{bad.name}: not a readable SDSS frame .*{refetch} fetches it again"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)
    star = tiny_data.catalog(TINY.rerun, TINY.run, TINY.camcol, "star")
    star.write_bytes(star.read_bytes()[:5000])
    refetch = rf"damaged: 00_download.py --run 8162 --camcol 6 --data-dir {tiny_data.root} --verify"
    with pytest.raises(StargalError, match=f"{star.name}: not a readable calibObj catalog .*{refetch} fetches it"):
        run_alignment(tiny_data, ONE, workers=1)


def test_a_whole_bz2_or_gzip_stream_of_a_cut_short_fits_file_is_named(tiny_data: DataPaths):
    """A frame (or sweep) whose compressed stream is whole but holds a FITS file cut short (recompressed after a
    truncation) stopped stage 01 with 'unexpected TypeError: buffer is too small for requested array', no file
    named."""
    import gzip

    bad = tiny_data.frame(fid(81), "z")
    raw = bz2.decompress(bad.read_bytes())
    bad.write_bytes(bz2.compress(raw[: len(raw) // 2]))
    with pytest.raises(StargalError, match=f"^{bad}: not a readable SDSS frame .*buffer is too small"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)
    star = tiny_data.catalog(TINY.rerun, TINY.run, TINY.camcol, "star")
    raw = gzip.decompress(star.read_bytes())
    star.write_bytes(gzip.compress(raw[: len(raw) - 2880]))
    with pytest.raises(StargalError, match=f"^{star}: not a readable calibObj catalog .*buffer is too small"):
        sdss.read_catalog(star)


def test_frame_without_wcs(tiny_data: DataPaths):
    bad = tiny_data.frame(fid(81), "i")
    _rewrite_frame(bad, drop_wcs=True)
    with pytest.raises(StargalError, match=f"{bad.name}: frame has no celestial WCS"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


@pytest.mark.parametrize("shift", [4, 40])
def test_a_frame_whose_wcs_is_pixels_off_is_refused(tiny_data: DataPaths, shift: int):
    """A band's header WCS shifted by more than registration on the stars corrects would be written misaligned
    (every source smeared across bands) and then classified: it is refused, naming the frame."""
    bad = tiny_data.frame(fid(81), "g")
    frame = sdss.read_frame(bad)
    frame.header["CRPIX1"] += shift
    sdss.write_frame(bad, frame.image, frame.header)
    with pytest.raises(StargalError, match=rf"^{bad}: its sources sit {shift} px from the r band's .*--force"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


@pytest.mark.parametrize("shift", [(3.4, 0.0), (2.5, 2.5)])
def test_a_frame_whose_wcs_is_just_beyond_registration_is_refused(tiny_data: DataPaths, shift):
    """A band 3.4 px off (3 whole pixels: not over the coarse limit) or 2.5 px on each axis (3.5 px) was neither
    refused nor registered (registration_shifts leaves offsets over 3 px alone): its stars matched none in r, and
    the cube was written with the band misaligned, exit 0."""
    bad = tiny_data.frame(fid(81), "g")
    frame = sdss.read_frame(bad)
    frame.header["CRPIX1"] += shift[0]
    frame.header["CRPIX2"] += shift[1]
    sdss.write_frame(bad, frame.image, frame.header)
    # the tiny sky's few stars measure no band to a fraction of a pixel: the distance is known to a whole pixel
    with pytest.raises(
        StargalError, match=rf"^{bad}: its sources sit (about )?[34](\.\d)? px from the r band's .*--force"
    ):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


@pytest.mark.parametrize(("ref_band", "shift"), [("r", 2), ("r", 10), ("g", 10)])
def test_a_reference_frame_whose_wcs_is_off_is_refused_by_its_name(tiny_data: DataPaths, ref_band: str, shift: int):
    """The r frame's WCS off by 2 px registered the other four bands onto its stars, and the catalog's objects were
    placed 2 px off their sources (the cube's WCS is r's), exit 0; 10 px off, the error named the u or z frame;
    with --ref-band g, an r frame 10 px off was measured against r itself and another frame was named."""
    bad = tiny_data.frame(fid(81), "r")
    frame = sdss.read_frame(bad)
    frame.header["CRPIX1"] += shift
    sdss.write_frame(bad, frame.image, frame.header)
    if ref_band == "r":
        message = (
            rf"the other bands' sources all sit \([+-]{shift}\.0, [+-]0\.0\) px .*the r band's header WCS is wrong"
        )
    else:
        message = rf"its sources sit {shift} px from the g band's"
    with pytest.raises(StargalError, match=rf"^{bad}: {message}.*--force"):
        run_alignment(tiny_data, ONE, ref_band=ref_band, workers=1)
    assert _nothing_written(tiny_data)


def test_a_frame_in_counts_is_refused(tiny_data: DataPaths):
    """A frame whose BUNIT is not nanomaggy (its pixels in counts) was aligned into a cube that says nanomaggy."""
    bad = tiny_data.frame(fid(81), "z")
    frame = sdss.read_frame(bad)
    frame.header["BUNIT"] = "counts"
    sdss.write_frame(bad, frame.image / frame.header["NMGY"], frame.header)
    with pytest.raises(StargalError, match=rf"^{bad}: header BUNIT is 'counts', not nanomaggy .*fetches it again"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


def test_a_blank_band_is_named_by_its_frame(tiny_data: DataPaths):
    """A frame with no star (all zeros) leaves its band's PSF unmeasurable: the error names that frame, not
    the cube being written."""
    bad = tiny_data.frame(fid(81), "u")
    _rewrite_frame(bad, image=np.zeros_like(sdss.read_frame(bad).image))
    with pytest.raises(StargalError, match=rf"^{bad}: band u: no star to measure the PSF on"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


def test_a_field_without_any_star_is_named_by_its_r_frame(tiny_data: DataPaths):
    for band in BANDS:
        frame = tiny_data.frame(fid(81), band)
        _rewrite_frame(frame, image=np.zeros_like(sdss.read_frame(frame).image))
    with pytest.raises(StargalError, match=rf"^{tiny_data.frame(fid(81), 'r')}: field 301/8162/6/81: no star found"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


def test_simulated_frames_too_small_to_register_say_so(tmp_path):
    """64 x 64-pixel simulated frames hold too few stars to match between bands: stage 01 blamed the simulator's
    own WCS and advised fetching the frame again, which renders the same frame."""
    from stargal.stages.simulate import simulate_sky

    paths = DataPaths(tmp_path / "data")
    simulate_sky(paths, TINY, seed=7, shape=(64, 64))
    with pytest.raises(StargalError, match=r"its 64 x 64-pixel simulated frames hold too few stars to register the "
                       r"bands on; simulate larger ones \(00_download.py --source simulated --sim-shape 400 600"):  # fmt: skip
        run_alignment(paths, TINY, workers=1)


def test_mismatched_frame_shapes(tiny_data: DataPaths):
    bad = tiny_data.frame(fid(81), "z")
    _rewrite_frame(bad, image=sdss.read_frame(bad).image[:-10])
    with pytest.raises(StargalError, match=f"{bad.name}: frame shape"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


def test_catalog_without_radec(tiny_data: DataPaths):
    path = tiny_data.catalog(TINY.rerun, TINY.run, TINY.camcol, "star")
    with fits.open(path) as hdul:
        data = hdul[1].data
        columns = {c: np.asarray(data[c]) for c in data.columns.names if c not in ("RA", "DEC")}
    sdss.write_catalog(path, columns)
    with pytest.raises(StargalError, match=f"{path.name}: catalog lacks column.*RA, DEC"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


def test_field_with_no_objects(tiny_data: DataPaths):
    for kind in ("gal", "star"):
        path = tiny_data.catalog(TINY.rerun, TINY.run, TINY.camcol, kind)
        cat = sdss.read_catalog(path)
        cat = cat[cat["FIELD"] == 83]  # objects far from field 81's frame only
        sdss.write_catalog(path, {c: cat[c] for c in cat.dtype.names}, header=fits.getheader(path))
    with pytest.raises(StargalError, match="no catalog object falls inside the frame of field 301/8162/6/81"):
        run_alignment(tiny_data, ONE, workers=1)
    assert not tiny_data.objects(fid(81)).exists()
    assert not tiny_data.tensors_dir(TINY.rerun, TINY.run, TINY.camcol).exists()


def _drop_simulat(path: Path) -> None:
    """Rewrite a simulated frame or catalog as a real SDSS one would be: without SIMULAT = T in its header."""
    if path.name.startswith("frame-"):
        frame = sdss.read_frame(path)
        del frame.header["SIMULAT"]
        sdss.write_frame(path, frame.image, frame.header)
        return
    cat = sdss.read_catalog(path)
    sdss.write_catalog(path, {c: cat[c] for c in cat.dtype.names})


def test_catalogs_of_another_sky_than_the_frames_are_refused(tiny_data: DataPaths, monkeypatch):
    """Real frames fetched into a folder that holds a simulated sky's sweeps (a local copy without catalogs, after
    the demo) were listed with the simulated objects as labels, exit 0: the catalogs and frames must share a sky."""
    from stargal.stages import alignment

    for kind in ("gal", "star"):
        _drop_simulat(tiny_data.catalog(TINY.rerun, TINY.run, TINY.camcol, kind))
    refused = r"catalog\(s\) of the real SDSS sky, but the frames of field 301/8162/6/81 are of the simulated sky"
    with pytest.raises(StargalError, match=refused):
        run_alignment(tiny_data, ONE, workers=1)
    assert not tiny_data.objects(fid(81)).exists()
    # a table made before the check existed, from another sky's catalogs, is refused on a rerun too
    with monkeypatch.context() as m:
        m.setattr(alignment, "check_catalog_sky", lambda *args: None)
        assert run_alignment(tiny_data, ONE, workers=1, reports=False)["objects_written"] == [81]
    with pytest.raises(StargalError, match=refused):
        run_alignment(tiny_data, ONE, workers=1, reports=False)


def test_a_sweep_of_another_run_names_the_command_for_this_data_folder(tiny_data: DataPaths):
    """A sweep of another run under this run's name: the error's command lacked --data-dir (and the fields and
    source), so following it fetched the reference fields from SDSS into the default data folder."""
    star = tiny_data.catalog(TINY.rerun, TINY.run, TINY.camcol, "star")
    rows = sdss.read_catalog(star)
    rows["RUN"] = 4510
    sdss.write_catalog(star, {name: rows[name] for name in rows.dtype.names})
    with pytest.raises(StargalError, match=rf"^{star}: rows of RUN 4510, but the file name says RUN 8162; wrong file: "
                       rf"delete it, and 00_download.py --run 8162 --camcol 6 .*--data-dir {tiny_data.root} "
                       "fetches it again$"):  # fmt: skip
        run_alignment(tiny_data, ONE, workers=1)


def test_sweeps_of_two_skies_are_refused(tiny_data: DataPaths):
    gal = tiny_data.catalog(TINY.rerun, TINY.run, TINY.camcol, "gal")
    _drop_simulat(gal)
    with pytest.raises(StargalError, match=rf"^{gal}: a catalog of the real SDSS sky, but calibObj-008162-6-star"):
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


def test_a_field_whose_bands_mix_two_skies_is_refused(tiny_data: DataPaths):
    """One band left from the simulated sky beside a local copy's real frames (the copy lacked that band)."""
    odd = tiny_data.frame(fid(81), "g")
    _drop_simulat(odd)
    with pytest.raises(StargalError, match=rf"^{odd}: a frame of the real SDSS sky, but the r band's of field "
                       r"301/8162/6/81 is of the simulated sky: the field mixes two skies"):  # fmt: skip
        run_alignment(tiny_data, ONE, workers=1)
    assert _nothing_written(tiny_data)


@pytest.mark.real
def test_real_frames_beside_simulated_sweeps_get_no_objects(sample_dir, tiny_data: DataPaths):
    """The user's path: the demo's simulated sky in the data folder, then the real field 8162-6-80 from a local copy
    (which has no sweeps): its objects would be the simulated sky's, labelled, on real pixels."""
    real = fid(80)
    for band in BANDS:
        tiny_data.frame(real, band).unlink()
        tiny_data.frame(real, band).symlink_to(TEST_FIELD_DIR / tiny_data.frame(real, band).name)
    with pytest.raises(StargalError, match=r"catalog\(s\) of the simulated sky, but the frames of field "
                       r"301/8162/6/80 are of the real SDSS sky") as refusal:  # fmt: skip
        run_alignment(tiny_data, dataclasses.replace(TINY, fields=(80,)), workers=1, reports=False)
    assert not tiny_data.objects(real).exists()
    assert (
        f"(00_download.py --force --run 8162 --camcol 6 --fields 80 --data-dir {tiny_data.root} [--source ...])"
        in str(refusal.value)
    )  # no source on record: the user names it
    # with the frames' source on record, the command names it, once (it was followed by "--source ..." too)
    relpath = sdss.frame_relpath("r", 301, 8162, 6, 80)
    fsio.write_json(tiny_data.manifest, {"files": {relpath: {"url": f"file://{TEST_FIELD_DIR}/{Path(relpath).name}"}}})
    with pytest.raises(StargalError, match=r"catalog\(s\) of the simulated sky") as refusal:
        run_alignment(tiny_data, dataclasses.replace(TINY, fields=(80,)), workers=1, reports=False)
    assert str(refusal.value).count("--source") == 1 and f"--source {TEST_FIELD_DIR} " in str(refusal.value)


@pytest.mark.slow
def test_script_one_line_error_and_success(tiny_data: DataPaths):
    args = [sys.executable, str(SCRIPT), "--data-dir", str(tiny_data.root), "--fields", "81", "--workers", "1", "-q"]
    missing = tiny_data.frame(fid(81), "r")
    saved = missing.read_bytes()
    missing.unlink()
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "error:" in run.stderr and missing.name in run.stderr
    missing.write_bytes(saved)
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "aligned 1" in run.stdout and "objects:" in run.stdout
    assert read_table(tiny_data.objects(fid(81))).dtype == OBJECT_DTYPE


# ---------------------------------------------------------------------------------------------------------
# real SDSS data: the 161 catalog stars of field 4510-4-30


@pytest.fixture(scope="module")
def real_star_field(real_star_data):
    field_id = FieldId(301, 4510, 4, 30)
    return read_cube(real_star_data.cube(field_id), mmap=False), read_table(real_star_data.objects(field_id))


@pytest.mark.real
def test_real_catalog_stars_land_on_stellar_peaks(real_star_field):
    from test_align import _moments

    cube, table = real_star_field
    assert np.count_nonzero(table["field"] == 30) == 161 and (table["label"] == LABEL_STAR).all()
    rows, cols = cube.shape
    r = cube.data[BANDS.index("r")]
    # detectable, unsaturated stars (r < 15 saturates: flat cores) away from the edges
    ok = (table["r_psfmag"] >= 15) & (table["r_psfmag"] < 22)
    ok &= (table["x"] > 25) & (table["x"] < cols - 26) & (table["y"] > 25) & (table["y"] < rows - 26)
    stars = table[ok]
    assert len(stars) > 80
    xi, yi = np.rint(stars["x"]).astype(int), np.rint(stars["y"]).astype(int)
    peak_dist = []
    for x, y, sx, sy in zip(xi, yi, stars["x"], stars["y"], strict=True):
        box = r[y - 3 : y + 4, x - 3 : x + 4]
        py, px = np.unravel_index(np.argmax(box), box.shape)
        peak_dist.append(np.hypot(x - 3 + px - sx, y - 3 + py - sy))
    assert np.mean(np.array(peak_dist) <= 1.0) > 0.9  # the brightest nearby pixel is the star's own
    bright = stars[stars["r_psfmag"] < 20]
    for b in ("g", "r", "i", "z"):
        img = cube.data[BANDS.index(b)]
        d = np.array(
            [np.subtract(_moments(img, int(round(s["y"])), int(round(s["x"])))[:2], (s["x"], s["y"])) for s in bright]
        )
        dist = np.hypot(*d.T)
        assert np.median(dist) < (0.1 if b == "r" else 0.2), (b, np.median(dist))


def test_reference_band_other_than_r(tiny_data: DataPaths):
    """--ref-band g: the cube lies on the g frame's grid (g copied unchanged, r resampled onto it) and the
    objects' pixel coordinates are g-frame pixels."""
    result = run_alignment(tiny_data, ONE, ref_band="g", workers=1, reports=False)
    assert result["aligned"] == [81]
    cube = read_cube(tiny_data.cube(fid(81)))
    g = sdss.read_frame(tiny_data.frame(fid(81), "g"))
    r = sdss.read_frame(tiny_data.frame(fid(81), "r"))
    assert cube.header["REFBAND"] == "g"
    assert cube.header["DX_g"] == 0 and cube.header["DY_g"] == 0 and cube.header["DY_r"] != 0
    np.testing.assert_array_equal(cube.data[BANDS.index("g")], g.image)
    assert not np.array_equal(cube.data[BANDS.index("r")], r.image)
    np.testing.assert_allclose(cube.wcs.wcs.crval, g.wcs.wcs.crval)
    table = read_table(tiny_data.objects(fid(81)))
    gx, gy = g.wcs.all_world2pix(table["ra"], table["dec"], 0)
    np.testing.assert_allclose(table["x"], gx, atol=1e-6)
    np.testing.assert_allclose(table["y"], gy, atol=1e-6)
    rx, _ = r.wcs.all_world2pix(table["ra"], table["dec"], 0)
    assert np.abs(table["x"] - rx).mean() > 1  # not the r grid: the bands are offset by pixels


def test_verify_names_how_to_seal_or_drop_a_stray_cube(tmp_path):
    """A cube no record seals was listed as "redone by 01_alignment.py", which a run of other fields never does."""
    from stargal.integrity import verify_data_folder

    paths = DataPaths(tmp_path / "data")
    stray = paths.cube(fid(99))
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"SIMPLE")
    redo = {f.path: f.redo for f in verify_data_folder(paths)[0]}[stray]
    assert (
        redo
        == f"01_alignment.py --run 8162 --camcol 6 --fields 99 --data-dir {paths.root} (with its frames), or delete it"
    )


# ---------------------------------------------------------------------------------------------------------
# a field aligned once, then an input replaced


@pytest.fixture(scope="module")
def aligned_81(tiny_sky, tmp_path_factory) -> DataPaths:
    """The tiny sky with field 81 aligned (read-only for tests: ``_copy_of`` it)."""
    paths = DataPaths(tmp_path_factory.mktemp("aligned_81") / "data")
    shutil.copytree(tiny_sky.root, paths.root)
    run_alignment(paths, ONE, workers=1, reports=False)
    return paths


def _copy_of(aligned: DataPaths, tmp_path: Path) -> DataPaths:
    paths = DataPaths(tmp_path / "data")
    shutil.copytree(aligned.root, paths.root)  # copy2: the frames keep their times, as in the aligned folder
    return paths


def _same_size_and_time(path: Path, image: np.ndarray) -> None:
    """Rewrite frame ``path`` with ``image`` as a file of its size and modification time (``cp -p`` or ``touch -r``
    of another version): the bz2 stream is followed by padding streams (bytes after the FITS file)."""
    import io

    st = path.stat()
    buf = io.BytesIO()
    fits.PrimaryHDU(image.astype(np.float32), header=sdss.read_frame(path).header).writeto(buf)
    body = bz2.compress(buf.getvalue())
    gap = st.st_size - len(body)
    zeros = {len(bz2.compress(bytes(m))): m for m in range(0, 5000, 7)}  # sizes 37-46: the last few bytes
    noise = np.random.default_rng(0).bytes(gap)
    k = int((gap - 45) ** 2 / len(bz2.compress(noise)))
    for _ in range(50):
        tail = bz2.compress(noise[:k])
        if gap - len(tail) in zeros:
            break
        k += gap - len(tail) - 42
    path.write_bytes(body + tail + bz2.compress(bytes(zeros[gap - len(tail)])))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def test_a_frame_changed_since_alignment_is_named_and_aligned_again(aligned_81: DataPaths, tmp_path, caplog):
    """A frame of other content made the field's cube stale and it was aligned again, without a word of which frame
    had changed: the user could not tell a replaced frame from a damaged cube."""
    paths = _copy_of(aligned_81, tmp_path)
    frame = paths.frame(fid(81), "u")
    frame.write_bytes(bz2.compress(bz2.decompress(frame.read_bytes()), compresslevel=1))
    with caplog.at_level("WARNING", logger="stargal"):
        assert run_alignment(paths, ONE, workers=1, reports=False)["aligned"] == [81]
    said = [r.getMessage() for r in caplog.records if "aligning it again" in r.getMessage()]
    assert said == [f"field {fid(81)}: {frame}: changed since its cube was made; aligning it again"]


def test_a_frame_replaced_by_one_of_its_size_and_time_is_aligned_again(aligned_81: DataPaths, tmp_path):
    """A frame replaced by another version of the same size and modification time (``cp -p`` from a backup, an
    archive's times) was taken for the one the cube was made from: the record compared size and time only, and the
    cube of the old pixels was served as current, exit 0. Its ctime tells it was written: its content is checked."""
    paths = _copy_of(aligned_81, tmp_path)
    frame = paths.frame(fid(81), "g")
    image = sdss.read_frame(frame).image.copy()
    image[:20] = 0.0  # a band that lost rows: the cube's g plane must show it
    _same_size_and_time(frame, image)
    assert run_alignment(paths, ONE, workers=1, reports=False)["aligned"] == [81]
    k = BANDS.index("g")
    before, after = (read_cube(p.cube(fid(81)), mmap=False).data[k] for p in (aligned_81, paths))
    assert np.nanmax(np.abs(before[:5])) > 0 and np.nanmax(np.abs(after[:5])) == 0.0


def _half_sweep_of_same_size_and_time(path: Path) -> None:
    """Replace sweep ``path`` by one listing every other object of it, as a file of its size and modification time
    (``cp -p`` or ``touch -r`` of another version): the gzip stream is followed by zero padding, which gzip skips."""
    import gzip
    import io

    st = path.stat()
    with fits.open(path) as hdus:
        table = fits.BinTableHDU(np.ascontiguousarray(hdus[1].data[::2]), header=hdus[1].header)
        buf = io.BytesIO()
        fits.HDUList([hdus[0].copy(), table]).writeto(buf)
    body = gzip.compress(buf.getvalue(), compresslevel=9, mtime=0)
    path.write_bytes(body + bytes(st.st_size - len(body)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_a_sweep_replaced_by_one_of_its_size_and_time_lists_the_objects_again(
    aligned_81, tmp_path, caplog, monkeypatch
):
    """A sweep replaced by another of the same size and modification time (``cp -p``, ``touch -r``) was judged by
    size and time alone: the objects table of the old sweep (its labels) was kept as current, exit 0. Its ctime tells
    it was written: its content is read, found changed, named, and the table made again; each sweep is read once."""
    paths = _copy_of(aligned_81, tmp_path)
    star = paths.catalog(TINY.rerun, TINY.run, TINY.camcol, "star")
    before = read_table(paths.objects(fid(81)))
    _half_sweep_of_same_size_and_time(star)
    reads = []
    monkeypatch.setattr(fsio, "sha256_file", lambda p, real=fsio.sha256_file: reads.append(Path(p).name) or real(p))
    with caplog.at_level("WARNING", logger="stargal"):
        result = run_alignment(paths, ONE, workers=1, reports=False)
    assert result["aligned"] == [] and result["objects_written"] == [81]
    after = read_table(paths.objects(fid(81)))
    assert 0 < np.sum(after["label"] == LABEL_STAR) < np.sum(before["label"] == LABEL_STAR)
    said = [r.getMessage() for r in caplog.records if "objects table" in r.getMessage()]
    assert said == [f"field {fid(81)}: {star}: changed since its objects table was made; listing its objects again"]
    # judged and recorded from one reading each (the copy gave every file a new stamp: the galaxy sweep is read too)
    gal = paths.catalog(TINY.rerun, TINY.run, TINY.camcol, "gal")
    assert reads.count(star.name) == 1 and reads.count(gal.name) == 1
    record = read_json(paths.field_record(fid(81)))["inputs"]
    assert record["catalogs_sha256"][star.name] == fsio.sha256_file(star)
    assert run_alignment(paths, ONE, workers=1, reports=False)["objects_written"] == []  # now current


def test_a_record_of_before_the_sweeps_digests_is_trusted_on_times(aligned_81, tmp_path):
    """A field record written before sweeps had digests (no catalogs_sha256) is judged by size and time, as it was:
    an existing data folder is not redone because stage 01 now keeps them."""
    paths = _copy_of(aligned_81, tmp_path)
    path = paths.field_record(fid(81))
    record = read_json(path)
    for key in ("catalogs_sha256", "catalogs_stamp"):
        record["inputs"].pop(key)
    sealed = [path.parent / name for name in record.pop(fsio.INTEGRITY_KEY)["files"]]
    fsio.seal(path, sealed, record)
    star = paths.catalog(TINY.rerun, TINY.run, TINY.camcol, "star")
    os.utime(star, ns=(star.stat().st_atime_ns, star.stat().st_mtime_ns))  # a new ctime, the same size and time
    result = run_alignment(paths, ONE, workers=1, reports=False)
    assert result["aligned"] == [] and result["objects_written"] == []
