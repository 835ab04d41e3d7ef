"""predict_io's tables without a model: --csv inputs (CSV, ECSV, FITS) read, predictions written and read back."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from stargal.errors import StargalError
from stargal.predict import Predictions
from stargal.predict_io import carried_name, predictions_table, read_coordinate_table, write_predictions

OWN = ["ra", "dec", "x", "y", "p_star", "label", "status"]  # predict.py's columns for --ra/--dec and --csv


def write_table(path: Path, columns: dict) -> Path:
    """``columns`` written by astropy as ECSV or FITS, by ``path``'s extension."""
    from astropy.table import Table

    Table(columns).write(path, format="ascii.ecsv" if path.suffix == ".ecsv" else "fits")
    return path


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def classify_without_a_model(path: Path, out: Path, run: int) -> None:
    """What predict.py --csv PATH --out OUT writes, with made-up results that differ from run to run."""
    ra, dec, carried = read_coordinate_table(path)
    n = len(ra)
    status = np.roll(np.array(["ok", "outside", "edge"] * n)[:n], run)
    ok = status == "ok"
    x = np.where(status == "outside", np.nan, 10.0 * run + np.arange(n))
    p_star = np.where(ok, 0.1 * run, np.nan).astype(np.float32)
    pred = Predictions(ra, dec, x, x + 1.0, p_star, np.where(ok, "star", ""), status)
    write_predictions(out, predictions_table(pred, {"MODEL": "m"}, carried))


@pytest.mark.parametrize("suffix", [".ecsv", ".fits"])
def test_sexagesimal_ra_text_under_a_unit_of_degrees_is_refused_naming_the_unit(tmp_path, suffix):
    """Text RA 13:21:26.0404 in a column of unit deg was read in hours (RA 200.36) with exit 0, the declared
    unit ignored; 200:21:30.6 there was refused as "RA in hours must be 0-24", without a word of the unit."""
    from astropy.table import Column

    for i, value in enumerate(["13:21:26.0404", "200:21:30.6", "13h21m26.04s"]):
        ra = Column(["10.5", value], unit="deg")
        path = write_table(tmp_path / f"in{i}{suffix}", {"ra": ra, "dec": Column(["1", "2"], unit="deg")})
        with pytest.raises(StargalError) as info:
            read_coordinate_table(path)
        message = str(info.value)
        assert message.startswith(f"{path}: row 2: ra {value!r} in column ra, whose unit is 'deg': sexagesimal RA text")
        assert "is read in hours" in message and "\n" not in message
    # degrees said in the text agree with the unit; Dec text is degrees, never hours; without a unit RA is hours
    text = write_table(tmp_path / f"deg{suffix}", {
        "ra": Column(["200d21m30.6s", "200.5"], unit="deg"), "dec": Column(["+10:30:00", "-1d30m"], unit="deg"),
    })  # fmt: skip
    ra, dec, _ = read_coordinate_table(text)
    np.testing.assert_allclose(ra, [200.3585, 200.5])
    np.testing.assert_allclose(dec, [10.5, -1.5])
    hours_dec = write_table(tmp_path / f"hdec{suffix}", {"ra": ["1"], "dec": Column(["1h"], unit="deg")})
    with pytest.raises(StargalError, match=r": row 1: dec '1h': a declination is in degrees .*, not hours$"):
        read_coordinate_table(hours_dec)
    plain = write_table(tmp_path / f"plain{suffix}", {"ra": ["13:21:26.0404"], "dec": ["+10:30:00"]})
    np.testing.assert_allclose(read_coordinate_table(plain)[0], [200.358501667])


def test_a_csv_row_of_empty_values_is_refused_naming_its_line(tmp_path):
    """A line "," or '"",""' between two rows was dropped: three data rows in, two out, every later result beside
    the wrong input line, exit 0. Blank lines (nothing, or spaces only) are still skipped as formatting."""
    for i, empty in enumerate([",", '"",""', " , ", '""', ",,"]):
        path = tmp_path / f"in{i}.csv"
        path.write_text(f"ra,dec,name\n10,1,a\n{empty}\n11,2,b\n")
        with pytest.raises(StargalError) as info:
            read_coordinate_table(path)
        assert (
            str(info.value) == f"{path}: line 3: a row of empty values (no ra, no dec); give its position or delete it"
        )
    blank = tmp_path / "blank.csv"
    blank.write_text("ra,dec,name\n10,1,a\n\n   \n11,2,b\n\n")
    ra, dec, carried = read_coordinate_table(blank)
    assert ra.tolist() == [10.0, 11.0] and carried["name"].tolist() == ["a", "b"]


def test_carried_names_never_meet_each_other_or_the_tables_own():
    """x became input_x, which an earlier run's carried input_x already was: the output of predict.py --csv could
    not be read with --csv again ("input_x appear more than once"), nor a table with both status and input_status."""
    assert [carried_name(n, i) for i, n in enumerate(["name", "x", "input_x", "Input_Input_Status", "input_name"])] == [
        "name", "input_x", "input_input_x", "input_Input_Input_Status", "input_name"]  # fmt: skip
    assert carried_name("  ", 4) == "column_5"


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".fits"])
def test_an_output_read_back_with_csv_is_written_again_with_every_column(tmp_path, suffix):
    """predict.py's own output (carrying input_x, input_status, ...) was refused by --csv as "column(s) input_x,
    ... appear more than once", though the README says --csv reads predict.py's outputs; so was a table with both
    status and input_status."""
    path = write_table(tmp_path / "in.ecsv", {
        "name": ["a", "b", "c"], "ra": [10.0, 11.0, 12.0], "dec": [1.0, 2.0, 3.0],
        "status": ["new", "old", "new"], "input_status": ["s1", "s2", "s3"],
    })  # fmt: skip
    for run in (1, 2, 3):
        out = tmp_path / f"run{run}{suffix}"
        classify_without_a_model(path, out, run)
        path = out
    runs = [f"input_input_{n}" for n in OWN[2:]] + [f"input_{n}" for n in OWN[2:]]  # runs 1 and 2, this one's last
    want = ["name", "input_input_input_status", "input_input_input_input_status", *runs, *OWN]  # the user's first
    if suffix == ".csv":
        rows = csv_rows(out)
        assert list(rows[0]) == want
        values = {name: [r[name] for r in rows] for name in want}
    else:
        from astropy.table import Table

        table = Table.read(out)
        assert table.colnames == want
        values = {name: [str(v) for v in table[name]] for name in want}
    assert values["name"] == ["a", "b", "c"] and values["input_input_input_status"] == ["new", "old", "new"]
    assert values["input_input_input_input_status"] == ["s1", "s2", "s3"]
    assert values["input_input_status"] == ["edge", "ok", "outside"]  # run 1's
    assert values["input_status"] == ["outside", "edge", "ok"]  # run 2's
    assert values["input_input_x"][0].startswith("10") and values["input_x"][1].startswith("21")
    ra, dec, last = read_coordinate_table(out)  # and once more
    assert ra.tolist() == [10.0, 11.0, 12.0] and len(last) == len(want) - 2


def test_a_true_false_column_with_empty_values_is_refused_for_a_fits_output(tmp_path):
    """A carried true/false column with an empty value was written to FITS as True (astropy writes logicals
    without their null): a wrong value with exit 0. Refused before any work; .ecsv keeps it empty."""
    from astropy.table import MaskedColumn, Table

    from stargal.predict_io import check_fits_text

    flags = MaskedColumn([True, False, True], mask=[False, False, True])
    path = write_table(tmp_path / "in.ecsv", {"ra": [1.0, 2.0, 3.0], "dec": [0.0, 0.0, 0.0], "seen": flags})
    ra, dec, carried = read_coordinate_table(path)
    assert list(np.ma.getmaskarray(carried["seen"])) == [False, False, True]
    with pytest.raises(StargalError, match=r"column 'seen' is a true/false column with empty values \(row 3\)"):
        check_fits_text(tmp_path / "out.fits", carried)
    check_fits_text(tmp_path / "out.ecsv", carried)  # text formats keep the empty value
    whole = {"seen": np.array([True, False, True])}
    check_fits_text(tmp_path / "out.fits", whole)  # nothing empty: written as it is
    pred = Predictions(ra, dec, np.zeros(3), np.zeros(3), np.full(3, 0.5, np.float32), np.full(3, "star"),
                       np.full(3, "ok"))  # fmt: skip
    write_predictions(tmp_path / "out.ecsv", predictions_table(pred, {"MODEL": "m"}, carried))
    assert list(np.ma.getmaskarray(Table.read(tmp_path / "out.ecsv")["seen"])) == [False, False, True]


def test_a_skyserver_csv_export_is_read_with_its_table_line_crlf_and_bom(tmp_path):
    """SkyServer's CSV export begins with a line "#Table1" above its header: --csv refused it ("missing column(s)
    ra, dec (header: #Table1)"), as it did any comment line before the header. Comment lines before the header are
    skipped now; a header written "#ra,dec" is read as one; errors still name the file's own line numbers."""
    rows = "objid,ra,dec,type\r\n1237,200.5,36.8,6\r\n1238,200.6,36.9,3\r\n"
    path = tmp_path / "skyserver.csv"
    path.write_bytes(("\ufeff#Table1\r\n" + rows).encode())
    ra, dec, carried = read_coordinate_table(path)
    assert ra.tolist() == [200.5, 200.6] and dec.tolist() == [36.8, 36.9]
    assert {name: values.tolist() for name, values in carried.items()} == {
        "input_objid": ["1237", "1238"], "type": ["6", "3"]}  # fmt: skip
    bad = tmp_path / "bad.csv"
    bad.write_text("#Table1\n# a note\n\nobjid,ra,dec\n1,10,1\n2,10,abc\n")
    with pytest.raises(StargalError, match=rf"^{bad}: line 6: dec 'abc' is not an angle"):
        read_coordinate_table(bad)
    commented = tmp_path / "das.csv"  # SDSS's DAS coordinate lists: the header commented out
    commented.write_text("#RA,Dec\n205.547,28.375\n205.6,28.4\n")
    assert read_coordinate_table(commented)[0].tolist() == [205.547, 205.6]
    hashed = tmp_path / "hashed.csv"  # a header whose first name begins with "#" is still the header
    hashed.write_text("#name,ra,dec\n#1,10,1\n")
    assert read_coordinate_table(hashed)[2]["#name"].tolist() == ["#1"]


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".ecsv"])
def test_vizier_and_other_usual_position_columns_are_read(tmp_path, suffix):
    """A VizieR table's RAJ2000/DEJ2000 (or RA_ICRS/DE_ICRS, ra_deg/dec_deg...) was refused: only ra, dec were
    read. The one such pair a table holds is read now; ra, dec come first; two pairs are refused, naming both."""

    def table(path, columns):
        if suffix == ".csv":
            names = list(columns)
            lines = [",".join(names)] + [",".join(str(v) for v in row) for row in zip(*columns.values(), strict=True)]
            path.write_text("\n".join(lines) + "\n")
            return path
        return write_table(path, columns)

    vizier = table(tmp_path / f"v{suffix}", {"Name": ["a", "b"], "RAJ2000": [200.5, 200.6], "DEJ2000": [36.8, 36.9]})
    ra, dec, carried = read_coordinate_table(vizier)
    assert ra.tolist() == [200.5, 200.6] and dec.tolist() == [36.8, 36.9] and list(carried) == ["Name"]
    both = table(tmp_path / f"b{suffix}", {"ra": [1.0], "dec": [2.0], "raj2000": [3.0], "dej2000": [4.0]})
    ra, dec, carried = read_coordinate_table(both)
    assert (ra.tolist(), dec.tolist(), list(carried)) == ([1.0], [2.0], ["raj2000", "dej2000"])
    gaia = table(tmp_path / f"g{suffix}", {"RA_ICRS": [1.0], "DE_ICRS": [2.0], "RAJ2000": [1.0], "DEJ2000": [2.0]})
    with pytest.raises(StargalError, match=r"columns RAJ2000/DEJ2000 and RA_ICRS/DE_ICRS both give positions"):
        read_coordinate_table(gaia)
    none = table(tmp_path / f"n{suffix}", {"alpha": [1.0], "delta": [2.0]})
    with pytest.raises(StargalError) as info:
        read_coordinate_table(none)
    assert "missing column(s) ra, dec (columns: alpha,delta); position columns read: ra/dec; raj2000/dej2000" in str(
        info.value
    )


def test_tab_and_semicolon_separated_files_are_read_and_other_layouts_named(tmp_path):
    """A tab- or semicolon-separated table was refused as "missing column(s) ra, dec (header: objid<TAB>ra<TAB>dec)",
    a header that plainly names both; a file without a header, separated by spaces, or an ECSV table named .csv was
    refused the same way, which did not say what was wrong."""
    for name, sep in (("t.tsv", "\t"), ("s.csv", ";")):
        path = tmp_path / name
        path.write_text(f"objid{sep}ra{sep}dec\n1{sep}10.5{sep}1\n2{sep}11{sep}-2\n")
        ra, dec, carried = read_coordinate_table(path)
        assert ra.tolist() == [10.5, 11.0] and dec.tolist() == [1.0, -2.0]
        assert carried["input_objid"].tolist() == ["1", "2"]
    cases = {
        "10.5,1\n11,2\n": r"line 1: values \(10.5,1\), not column names: begin the file with a header line",
        "objid ra dec\n1 10.5 1\n": r"line 1: columns separated by spaces \(objid ra dec\); --csv reads values",
        "# %ECSV 1.0\n# ---\nra dec\n1.0 2.0\n": r": an ECSV table; name it .ecsv",
        "objid;ra;dec\n1;10,5;1\n": r"line 2: ra '10,5' is not an angle \(degrees or sexagesimal; a decimal comma\?",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.csv"
        path.write_text(text)
        with pytest.raises(StargalError, match=message) as info:
            read_coordinate_table(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_a_votable_is_read_with_its_text_columns(tmp_path):
    """A VOTable (VizieR's, TOPCAT's export) was read as a CSV: "missing column(s) ra, dec (header: <?xml ...)".
    It is read as a table now, its text of varying length carried as text (astropy gives it as objects)."""
    from astropy.io.votable.tree import Field, Resource, TableElement, VOTableFile

    votable = VOTableFile()
    resource = Resource()
    votable.resources.append(resource)
    table = TableElement(votable)
    resource.tables.append(table)
    table.fields.extend([
        Field(votable, name="Name", datatype="char", arraysize="*"),
        Field(votable, name="RAJ2000", datatype="double", unit="deg"),
        Field(votable, name="DEJ2000", datatype="double", unit="deg"),
    ])  # fmt: skip
    table.create_arrays(2)
    table.array[0] = ("star A", 200.5, 36.8)
    table.array[1] = ("star B", 13.0, -1.5)
    path = tmp_path / "vizier.vot"
    votable.to_xml(str(path))
    ra, dec, carried = read_coordinate_table(path)
    assert ra.tolist() == [200.5, 13.0] and dec.tolist() == [36.8, -1.5]
    assert carried["Name"].dtype.kind == "U" and carried["Name"].tolist() == ["star A", "star B"]
    pred = Predictions(ra, dec, np.zeros(2), np.zeros(2), np.full(2, 0.5, np.float32), np.full(2, "star"),
                       np.full(2, "ok"))  # fmt: skip
    write_predictions(tmp_path / "out.fits", predictions_table(pred, {"MODEL": "m"}, carried))
    cut = tmp_path / "cut.vot"
    cut.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(StargalError, match=rf"^{cut}: cannot read a VOTable table \("):
        read_coordinate_table(cut)


def test_a_csv_row_with_a_value_left_out_is_refused_naming_its_line(tmp_path):
    """A row one value short of the header was read with its values under the wrong names, exit 0: under
    "ra,dec,name,rmag", "200.4,36.8,18.5" carried name 18.5 and an empty rmag; under "id,ra,dec,rmag", "200.4,36.8,18.5"
    was classified at ra 36.8, dec 18.5. A header's trailing empty column (a trailing comma) may still be left out."""
    for i, (header, row, missing) in enumerate(
        [("ra,dec,name,rmag", "200.4,36.8,18.5", "rmag"), ("id,ra,dec,rmag", "200.4,36.8,18.5", "rmag")]
    ):
        path = tmp_path / f"in{i}.csv"
        path.write_text(f"{header}\n200.5,36.9,a,17.0\n{row}\n" if i == 0 else f"{header}\n1,200.5,36.9,17.0\n{row}\n")
        with pytest.raises(StargalError) as info:
            read_coordinate_table(path)
        message = str(info.value)
        assert message.startswith(f"{path}: line 3: too few values (3 for 4 columns: {missing} missing)")
        assert "\n" not in message
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("ra,dec,name,\n10,1,a,\n11,2,b\n")
    ra, dec, carried = read_coordinate_table(trailing)
    assert ra.tolist() == [10.0, 11.0] and carried["name"].tolist() == ["a", "b"]
    assert carried["column_4"].tolist() == ["", ""]


VIZIER_SEXAGESIMAL = """<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE name="t">
<FIELD name="RAJ2000" datatype="char" arraysize="12" unit="&quot;{ra_unit}&quot;"/>
<FIELD name="DEJ2000" datatype="char" arraysize="12" unit="&quot;{dec_unit}&quot;"/>
<FIELD name="rmag" datatype="float" unit="mag"/>
<DATA><TABLEDATA>
<TR><TD>02 34 13.102</TD><TD>-07 07 22.46</TD><TD>15.1</TD></TR>
<TR><TD>{ra2}</TD><TD>-00 30 00.0</TD><TD></TD></TR>
</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>
"""


def test_vizier_sexagesimal_text_columns_are_read(tmp_path):
    """VizieR's sexagesimal positions (text of unit "h:m:s" and "d:m:s", its default for many catalogs) were
    refused ("text with unit '"h:m:s"'"); RA is read in hours and Dec in degrees, as the units say. A bare number
    under "h:m:s", or the units swapped, is refused naming the row or column."""
    path = tmp_path / "vizier.vot"
    path.write_text(VIZIER_SEXAGESIMAL.format(ra_unit="h:m:s", dec_unit="d:m:s", ra2="13:21:26.04"))
    ra, dec, carried = read_coordinate_table(path)
    np.testing.assert_allclose(ra, [38.5545916667, 200.3585], rtol=0, atol=1e-9)
    np.testing.assert_allclose(dec, [-7.1229055556, -0.5], rtol=0, atol=1e-9)
    assert carried["rmag"].tolist() == [pytest.approx(15.1), None]
    bare = tmp_path / "bare.vot"
    bare.write_text(VIZIER_SEXAGESIMAL.format(ra_unit="h:m:s", dec_unit="d:m:s", ra2="200.5"))
    with pytest.raises(
        StargalError, match=rf"^{bare}: row 2: ra '200.5' in column RAJ2000, whose unit is 'h:m:s': not"
    ):
        read_coordinate_table(bare)
    swapped = tmp_path / "swapped.vot"
    swapped.write_text(VIZIER_SEXAGESIMAL.format(ra_unit="d:m:s", dec_unit="h:m:s", ra2="13:21:26.04"))
    with pytest.raises(StargalError, match=rf"^{swapped}: column RAJ2000: unit 'd:m:s' for ra; an RA in sexagesimal"):
        read_coordinate_table(swapped)


def test_plain_sexagesimal_is_read_without_astropys_parser_and_as_it_reads_it(tmp_path, monkeypatch):
    """Each sexagesimal value went through astropy's Angle parser: 200,000 rows of "13:07:21.1380,+37:13:11.934"
    took 67 s to read (the whole run on the degrees took 24 s). The usual forms are read directly now, to the same
    float as astropy's; other forms, and values out of range, still go through it (and its refusals)."""
    import astropy.coordinates
    from astropy import units as u
    from astropy.coordinates import Angle

    rng = np.random.default_rng(3)
    ra_deg, dec_deg = rng.uniform(0, 360, 3000), rng.uniform(-90, 90, 3000)
    ra_text = Angle(ra_deg * u.deg).to_string(unit=u.hourangle, sep=":", precision=4, pad=True).tolist()
    dec_text = Angle(dec_deg * u.deg).to_string(unit=u.deg, sep=":", precision=3, alwayssign=True, pad=True).tolist()
    ra_text[:3], dec_text[:3] = ["00:00:00", "0 30 00", "+01:02:03.5"], ["-00:30:00", "+89:59:59.9", "-0 0 1"]
    expected_ra = [Angle(t, unit=u.hourangle).deg for t in ra_text]
    expected_dec = [Angle(t, unit=u.deg).deg for t in dec_text]
    path = tmp_path / "sexagesimal.csv"
    path.write_text("ra,dec\n" + "".join(f"{r},{d}\n" for r, d in zip(ra_text, dec_text, strict=True)))

    def refused(*args, **kwargs):
        raise AssertionError("astropy's sexagesimal parser called for a plain sexagesimal value")

    monkeypatch.setattr(astropy.coordinates, "Angle", refused)
    ra, dec, _ = read_coordinate_table(path)
    assert ra.tolist() == expected_ra and dec.tolist() == expected_dec  # the same floats, not merely close
    monkeypatch.undo()
    for value, reason in [("12:60:00", "minutes and seconds must be below 60"), ("24:00:00", "RA in hours must be 0-24"),
                          ("-01:00:00", "RA in hours must be 0-24")]:  # fmt: skip
        bad = tmp_path / "bad.csv"
        bad.write_text(f"ra,dec\n10,1\n{value},1\n")
        with pytest.raises(StargalError, match=rf"^{bad}: line 3: ra '{value}' is not an angle .*{reason}"):
            read_coordinate_table(bad)


def test_a_carried_int8_column_keeps_its_numbers_in_a_fits_output(tmp_path):
    """astropy writes an int8 column as a FITS logical: an ECSV table's int8 flag column 1, 2, -128, 0 came out of
    a .fits output as True, True, True, False, exit 0. It is written as int16 now, its mask and unit kept."""
    from astropy.table import MaskedColumn, Table

    flag = MaskedColumn(np.array([1, 2, -128, 0], np.int8), mask=[False, True, False, False], unit="mag")
    source = write_table(tmp_path / "in.ecsv", {"ra": [10.0, 11, 12, 13], "dec": [1.0, 2, 3, 4], "flag": flag,
                                                "n": np.array([-1, 0, 1, 127], np.int8)})  # fmt: skip
    out = tmp_path / "out.fits"
    classify_without_a_model(source, out, run=1)
    table = Table.read(out)
    assert table["flag"].dtype.kind == "i" and table["n"].dtype.kind == "i"
    assert table["flag"].tolist() == [1, None, -128, 0] and str(table["flag"].unit) == "mag"
    assert table["n"].tolist() == [-1, 0, 1, 127]


def test_a_utf16_or_binary_csv_is_refused_saying_what_it_is(tmp_path):
    """A UTF-16 CSV (a spreadsheet's "Unicode text") or a FITS file named .csv was refused as "line N, the last,
    has no line end: the file looks cut short", sending the user after a truncation that never happened."""
    utf16 = tmp_path / "unicode.csv"
    utf16.write_text("ra,dec\n10,1\n", encoding="utf-16")
    with pytest.raises(StargalError, match=rf"^{utf16}: UTF-16 text; save it as UTF-8"):
        read_coordinate_table(utf16)
    bare = tmp_path / "bare.csv"
    bare.write_text("ra,dec\n10,1\n", encoding="utf-16-be")  # no byte-order mark
    with pytest.raises(StargalError, match=rf"^{bare}: not UTF-8 text \(it holds NUL bytes"):
        read_coordinate_table(bare)
    fits = write_table(tmp_path / "table.fits", {"ra": [10.0], "dec": [1.0]})
    named = tmp_path / "table.csv"
    named.write_bytes(fits.read_bytes())
    with pytest.raises(StargalError, match=rf"^{named}: a FITS file; name it .fits"):
        read_coordinate_table(named)
