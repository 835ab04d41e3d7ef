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
