"""The PDF report: a typeset short paper built from whatever a run wrote; the headline table on page 1, sections
in the pipeline's order, a one-line "not run" for a missing stage, at most 10 pages."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pdf_text import page_texts

from stargal import fsio
from stargal.paths import DataPaths
from stargal.stages.report import MAX_PAGES, build_report, collect, markdown_blocks
from stargal.typeset import Bullets, Code, FigureBlock, Para, TableBlock, cell_text, is_numeric_column

CODE = Path(__file__).resolve().parents[1] / "code"
DATASET, MODEL = "301-8162-6_p25_pad_abc123", "stargal-301-8162-6_p25_pad_abc123-s42"
SECTIONS = ["Data", "Alignment", "Preparation and splits", "Augmentation experiment", "Model and training",
            "Hyper-parameter tuning", "Evaluation", "Difficulty analysis", "Explanations", "Real-sky evaluation",
            "Run time and memory"]  # fmt: skip


def _images(pdf: Path) -> int:
    return len(re.findall(rb"/Subtype\s*/Image", pdf.read_bytes()))


def _png(path: Path, seed: int, size=(3, 2)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    ax.plot(np.random.default_rng(seed).normal(size=20))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=60)
    plt.close(fig)


def _metrics(acc: float, mcc: float) -> dict:
    return {"n": 60, "stars": 20, "galaxies": 40, "accuracy": acc, "mcc": mcc, "roc_auc": 0.95, "log_loss": 0.3,
            "star_purity": 0.9, "star_completeness": 0.8, "galaxy_purity": 0.92, "galaxy_completeness": 0.95}  # fmt: skip


def _model(paths: DataPaths, name: str, architecture: str, acc: float, mcc: float, augment: str, tta: bool) -> None:
    bins = [{"bin": "-20", "n": 30, "stars": 12, "accuracy": 0.97, "mcc": 0.9}, {"bin": "20-", "n": 30, "stars": 8}]
    fsio.write_json(paths.model(name).metrics, {
        "train": _metrics(0.95, 0.9), "val": _metrics(0.9, 0.8), "test": _metrics(acc, mcc), "threshold": 0.47,
        "tta": tta, "by_magnitude": {"test": bins},
        "baselines": {"test": {"majority": {"accuracy": 0.667, "mcc": 0.0, "roc_auc": 0.5, "class": "galaxy"},
                               "random": {"accuracy": 0.556, "mcc": 0.0, "roc_auc": 0.5, "star_fraction": 0.33}}},
    })  # fmt: skip
    fsio.write_bytes(paths.model(name).keras, b"a model")  # sealed with its metrics, as stage 03 writes them
    fsio.seal(paths.model(name).json, [paths.model(name).keras, paths.model(name).metrics], {
        "name": name, "architecture": architecture, "dataset": DATASET, "params": 42257, "flops_per_patch": 1.07e7,
        "augment": augment, "tta": tta, "threshold": 0.47, "seed": 42, "epochs": 30, "epochs_run": 30, "best_epoch": 27,
        "batch_size": 256, "train_seconds": 270.0, "seconds_per_epoch": 9.0, "hyperparameters": {"learning_rate": 0.002},
        "simulated": True, "inputs": {"dataset": _dataset_id(paths)},
    })  # fmt: skip


def _dataset_id(paths: DataPaths, name: str = DATASET) -> str:
    return fsio.seal_digest(fsio.read_json(paths.dataset_json(name)))


def _model_id(paths: DataPaths, name: str = MODEL) -> str:
    return fsio.seal_digest(fsio.read_json(paths.model(name).json))


def _seal_made_from_model(record: Path, files: list[Path], paths: DataPaths, **settings) -> None:
    """A report set made from the latest model (explain.py, explain.py --difficulty)."""
    ids = {"model": MODEL, "dataset": DATASET, "model_id": _model_id(paths), "dataset_id": _dataset_id(paths)}
    fsio.seal(record, files, {"settings": {**ids, **settings}, "result": {}})


def _build_dataset(paths: DataPaths, labels: bytes) -> None:
    """The dataset, sealing a labels file: another ``labels`` is another build (content) under the same name."""
    meta = fsio.read_json(paths.dataset_json(DATASET))
    fsio.write_bytes(paths.split_y(DATASET, "test"), labels)
    content = {k: v for k, v in meta.items() if k != fsio.INTEGRITY_KEY}
    fsio.seal(paths.dataset_json(DATASET), [paths.split_y(DATASET, "test")], content)


def _retrain(paths: DataPaths, name: str = MODEL) -> None:
    """The model trained again under its name: other weights, so another model identity."""
    meta = fsio.read_json(paths.model(name).json)
    fsio.write_bytes(paths.model(name).keras, b"another model")
    files = [paths.model(name).keras, paths.model(name).metrics]
    fsio.seal(paths.model(name).json, files, {k: v for k, v in meta.items() if k != fsio.INTEGRITY_KEY})


def _seal_alignment(paths: DataPaths, summary: dict) -> None:
    """Stage 01's summary, sealed with its figure as stage 01 writes it."""
    content = {k: v for k, v in summary.items() if k != fsio.INTEGRITY_KEY}
    fsio.seal(paths.reports("alignment", "summary.json"), [paths.reports("alignment", "band_offsets.png")], content)


def _fake_run(paths: DataPaths, *, reference: bool = False) -> None:
    """A small stand-in for a pipeline run's outputs, in the layout the stages use."""
    fsio.write_text(paths.latest_dataset, DATASET + "\n")
    fsio.write_text(paths.latest_model, MODEL + "\n")
    fsio.seal(paths.dataset_json(DATASET), [], {
        "name": DATASET, "bands": "ugriz", "patch_size": 25, "edge": "pad", "rerun": 301, "run": 8162, "camcol": 6,
        "fields": {"train": [80, 83], "val": [82], "test": [81]},
        "counts": {"train": {"n": 120, "stars": 40, "galaxies": 80, "star_fraction": 0.333},
                   "val": {"n": 50, "stars": 15, "galaxies": 35, "star_fraction": 0.3},
                   "test": {"n": 60, "stars": 20, "galaxies": 40, "star_fraction": 0.333}},
        "normalisation": {"method": "asinh", "center": [0.0] * 5, "scale": [1.0] * 5}, "simulated": True,
    })  # fmt: skip
    _build_dataset(paths, b"labels of the first build")
    fsio.write_json(paths.manifest, {"version": 1, "files": {
        "photoObj/frames/301/8162/6/frame-r-008162-6-0080.fits.bz2": {"url": "simulated:v4:seed=42", "size": 2_000_000},
        "sweeps/dr13_final/301/calibObj-008162-6-star.fits.gz": {"url": "simulated:v4:seed=42", "size": 100_000}}})  # fmt: skip
    offsets = {b: {"dx": 1.5, "dy": -2.25} for b in "ugriz"}
    _png(paths.reports("alignment", "band_offsets.png"), 1)
    _seal_alignment(paths, {"ref_band": "r", "rerun": 301, "run": 8162, "camcol": 6, "fields": [
        {"field": f, "objects": 100, "stars": 30, "galaxies": 70, "listed_under_neighbours": 5, "offsets": offsets,
         "simulated": True} for f in (80, 81, 82, 83)]})  # fmt: skip
    splits = paths.reports("splits", DATASET)
    _png(splits / "splits.png", 2)
    fsio.write_text(splits / "splits.md", "# splits\n")
    fsio.seal(splits / "splits.json", [splits / "splits.md", splits / "splits.png"],
              {"name": DATASET, "dataset_id": _dataset_id(paths), "r_psfmag": {}, "removed": {}})  # fmt: skip
    _model(paths, MODEL, "stargal", 0.91, 0.77, "d4", True)
    if reference:
        _model(paths, "reference_regularised-" + DATASET + "-s42", "reference_regularised", 0.88, 0.71, "none", False)
    figures = paths.reports("training", MODEL)
    _png(figures / "learning_curves.png", 3)
    _png(figures / "roc.png", 4)
    _png(figures / "confusion_test.png", 5)
    fsio.seal(figures / "figures.json", [figures / f for f in ("learning_curves.png", "roc.png", "confusion_test.png")],
              {"model": MODEL, "settings": {"model_id": _model_id(paths)}})  # fmt: skip
    fsio.write_text(
        paths.reports("difficulty", MODEL, "difficulty.md"),
        "## Where\n\nMeasured on **test**.\n\n| r | n |\n|---|---|\n| 20 | 3 |\n\n- faint: hard\n- blends\n"
        "\n![Example patches](examples.png)\n",
    )
    _png(paths.reports("difficulty", MODEL, "examples.png"), 6)
    difficulty = paths.reports("difficulty", MODEL)
    _seal_made_from_model(difficulty / "difficulty.json", [difficulty / "difficulty.md", difficulty / "examples.png"],
                          paths, seed=42)  # fmt: skip
    fsio.write_json(paths.reports("pipeline", "stages.json"), {
        "demo": True, "small": True, "options": [["--workers", "2"]], "status": 0,
        "stages": [{"stage": "download", "script": "00_download.py", "status": "ok", "seconds": 1.5,
                    "peak_rss_mb": 120.0, "peak_tree_mb": 150.0}],
    })  # fmt: skip


def _sections(paths: DataPaths) -> dict:
    return {s.title: s for s in collect(paths).sections}


def test_empty_data_folder_gives_a_report_saying_what_did_not_run(tmp_path):
    paths = DataPaths(tmp_path / "data")
    result = build_report(paths)
    assert result["path"] == paths.reports("report.pdf")
    assert result["path"].read_bytes().startswith(b"%PDF")
    pages = page_texts(result["path"])
    assert len(pages) == result["pages"] <= 2
    assert list(result["sections"]) == SECTIONS and not any(result["sections"].values())
    text = "\n".join(pages)
    assert "No evaluated model yet" in pages[0]
    for number, title in enumerate(SECTIONS, start=1):  # one line each, in the pipeline's order
        assert re.search(rf"{number}\. {re.escape(title)}:\s*\n?\s*not run \(", text), title


def test_the_first_page_holds_the_headline_table(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths, reference=True)
    result = build_report(paths, tmp_path / "out.pdf")
    pages = page_texts(tmp_path / "out.pdf")
    assert len(pages) == result["pages"] <= MAX_PAGES
    first = pages[0]
    assert "Table 1." in first and "Test-set results" in first
    rows = ["stargal CNN (ours)", "reference regularised CNN", "majority class baseline", "random baseline"]
    assert [first.index(r) for r in rows] == sorted(first.index(r) for r in rows)
    for value in ("0.910", "0.770", "0.880", "0.710", "0.667", "0.556", "D4 symmetries + test-time", "always galaxy"):
        assert value in first, value
    for head in ("accuracy", "MCC", "ROC AUC", "star purity", "star completeness"):
        assert head in first
    assert "simulated" in first and "simulator version 4" in first and "0.905" in first
    assert "--demo --small" in first
    # page numbers, numbered figures with captions, ruled tables with aligned numbers
    assert f"page 1 of {len(pages)}" in first
    text = "\n".join(pages)
    assert "Figure 1." in text and "Look for" in text
    assert _images(tmp_path / "out.pdf") >= 6  # offsets, splits, curves, confusion, ROC, difficulty examples


def test_sections_that_ran_and_those_that_did_not(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    sections = _sections(paths)
    assert list(sections) == SECTIONS
    ran = {t for t, s in sections.items() if s.ran}
    assert ran == {"Data", "Alignment", "Preparation and splits", "Model and training", "Evaluation",
                   "Difficulty analysis", "Run time and memory"}  # fmt: skip
    assert sections["Augmentation experiment"].status.startswith("not run (")
    assert "04_augmentation.py --experiment" in sections["Augmentation experiment"].status
    headline = collect(paths).front
    assert "no reference model was trained" in headline[0].text
    difficulty = sections["Difficulty analysis"].blocks
    assert not any(isinstance(b, TableBlock) for b in difficulty)  # the per-magnitude table is in Evaluation
    assert any(isinstance(b, Bullets) and b.items == ["faint: hard", "blends"] for b in difficulty)
    figure = next(b for b in difficulty if isinstance(b, FigureBlock))
    assert figure.images == [paths.reports("difficulty", MODEL, "examples.png")]
    alignment = next(b for b in sections["Alignment"].blocks if isinstance(b, TableBlock))
    assert alignment.rows[0][:5] == [80, 100, 30, 70, 5] and alignment.rows[0][5] == "+1.50, -2.25"


def test_real_sky_section_renders_the_contract_and_names_an_unreadable_file(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    folder = paths.reports("real_sky")
    _png(folder / "recognised.png", 7)
    evaluated = {"model": str(paths.model_dir(MODEL)), "model_id": _model_id(paths)}
    fsio.seal(folder / "real_sky.json", [folder / "recognised.png"], {
        "settings": evaluated, "model": MODEL, "summary": "The model recognises most real stars.",
        "tables": [{"title": "Real catalog stars recognised", "columns": ["field", "stars", "recognised"],
                    "rows": [["4510-4-30", 161, 0.894]]}],
        "figures": [{"file": "recognised.png", "caption": "Recognised fraction against r magnitude."}],
    })  # fmt: skip
    result = build_report(paths, tmp_path / "real.pdf")
    assert result["sections"]["Real-sky evaluation"]
    text = "\n".join(page_texts(tmp_path / "real.pdf"))
    assert "The model recognises most real stars." in text and "Real catalog stars recognised" in text
    assert "4510-4-30" in text and "0.894" in text and "Recognised fraction against r magnitude." in text
    assert "Not this report's model" not in text

    # a figure in the report was shown as edited by hand or damaged, exit 0: the seal is checked first
    sealed = (folder / "real_sky.json").read_text()
    (folder / "real_sky.json").write_text(sealed.replace("0.894", "0.999"))
    section = _sections(paths)["Real-sky evaluation"]
    assert not section.ran and "edited after it was sealed" in section.status and "real_sky.py" in section.status
    (folder / "real_sky.json").write_text(sealed)
    _png(folder / "recognised.png", 8)  # another figure under the sealed one's name
    section = _sections(paths)["Real-sky evaluation"]
    assert not section.ran and str(folder / "recognised.png") in section.status

    (folder / "real_sky.json").write_text('{"model": "x", "tables": [')
    section = _sections(paths)["Real-sky evaluation"]
    assert not section.ran and "unreadable" in section.status and str(folder / "real_sky.json") in section.status
    text = "\n".join(page_texts(build_report(paths, tmp_path / "bad.pdf")["path"]))
    # the long path wraps where the temporary folder's length puts it, also at the space before "unreadable"
    assert "real_sky.json:unreadable" in re.sub(r"\s+", "", text)


def test_an_ensemble_as_the_latest_model_is_described_by_its_members(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    meta = fsio.read_json(paths.model(MODEL).json)
    members = [{"name": f"m{s}", "seed": s, "best_epoch": 20 + s, "epochs_run": 30, "train_seconds": 100.0}
               for s in (42, 43)]  # fmt: skip
    for key in ("seed", "best_epoch", "epochs_run", "train_seconds", "seconds_per_epoch"):
        del meta[key]
    files = [paths.model(MODEL).keras, paths.model(MODEL).metrics]
    fsio.seal(paths.model(MODEL).json, files, {k: v for k, v in meta.items() if k != fsio.INTEGRITY_KEY}
              | {"ensemble": members, "seeds": [42, 43]})  # fmt: skip
    table = next(b for b in _sections(paths)["Model and training"].blocks if isinstance(b, TableBlock))
    rows = dict(table.rows)
    assert rows["seed"].startswith("42, 43 (an ensemble")
    assert rows["epochs run (best)"] == "30 (62), 30 (63)" and rows["training time"] == "200 s for 2 networks"
    headline = next(b for b in collect(paths).front if isinstance(b, TableBlock))
    assert headline.rows[0][0].endswith("ensemble of seeds 42, 43")


def test_markdown_blocks():
    blocks = markdown_blocks("# T\n\nSome **bold**\ntext.\n\n| a | b |\n|---|---:|\n| **1** | 2 |\n- x\n  more\n- y\n"
                             "![Caption](p.png)\n")  # fmt: skip
    assert blocks[0] == Para("Some **bold** text.")
    assert blocks[1].columns == ["a", "b"] and blocks[1].rows == [["1", "2"]]
    assert blocks[2] == Bullets(["x more", "y"])
    assert blocks[3].images == [Path("p.png")] and blocks[3].caption == "Caption"


def test_markdown_code_fences_are_one_code_block_shown_as_written():
    """best.json in trials.md came out as a paragraph: its ``` fences printed and its lines run together."""
    text = 'Best:\n```json\n{\n  "a": [1],\n\n  "# b": "| c |"\n}\n```\nAfter.\n- x\n~~~\n    y\n'
    assert markdown_blocks(text) == [
        Para("Best:"),
        Code('{\n  "a": [1],\n\n  "# b": "| c |"\n}'),  # indentation and blank lines kept, nothing read as Markdown
        Para("After."),
        Bullets(["x"]),
        Code("y"),  # a fence never closed runs to the end, dedented
    ]


def _study(paths: DataPaths, study: str, trials_md: str) -> None:
    """A tuning study of the fake run's dataset, sealed as tune.py seals it."""
    fsio.write_json(paths.best_config(study), {"architecture": "stargal", "dataset": DATASET})
    fsio.write_text(paths.trials_md(study), trials_md)
    fsio.seal(paths.tuning_record(study), [paths.best_config(study), paths.trials_md(study)],
              {"study": study, "dataset": DATASET, "dataset_id": _dataset_id(paths)})  # fmt: skip


def _has_run(tokens: list[str], words: list[str]) -> bool:
    """Whether ``words`` occur one after another in ``tokens``."""
    return any(tokens[i : i + len(words)] == words for i in range(len(tokens) - len(words) + 1))


def test_a_tuning_study_shows_best_json_without_fences_and_every_header_word_whole(tmp_path):
    """The study's best.json was printed with its ``` fences; the trials table's 15 columns, too wide at 6 pt, were
    squeezed until reportlab cut header words at an arbitrary letter ("val_accura" / "cy"). Every header of every
    table of the report is set word by word, each word whole."""
    from stargal.stages.tuning import _markdown
    from stargal.tune import SEARCH_SPACES

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths, reference=True)
    study = f"{DATASET}_stargal"
    params = {name: 0.000123 for name in sorted(SEARCH_SPACES["stargal"])}
    rows = [{"trial": t, "state": "COMPLETE", "val_loss": 0.69 + t / 100, "val_mcc": 0.1, "val_accuracy": 0.5,
             "epochs": 3, "seconds": 4.2, **params} for t in range(3)]  # fmt: skip
    best = {"trial": 0, "value": 0.69, "val_mcc": 0.1, "architecture": "stargal", "hyperparameters": params}
    _study(paths, study, _markdown(study, rows, best, {"l2": 0.3}))  # trials.md as tune.py writes it
    doc = collect(paths)
    text = "\n".join(page_texts(build_report(paths)["path"]))
    assert "``" not in text and not re.search(r"^\s*json\b", text, re.M)
    assert '  "hyperparameters": {' in text.splitlines()  # one line of best.json per line, indentation kept
    tables = [b for b in [*doc.front, *(b for s in doc.sections for b in s.blocks)] if isinstance(b, TableBlock)]
    assert len(tables) >= 6 and any("spatial dropout" in t.columns for t in tables)
    tokens = text.split()
    for table in tables:
        words = [w for c in table.columns for w in c.split()]
        assert _has_run(tokens, words), table.caption


def test_a_table_too_wide_for_the_page_is_set_in_parts_with_every_header_word_whole(tmp_path):
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm

    from stargal.typeset import CELL_PAD, PAGE_MARGIN_MM, Document, Section, header_words, layout_table, render

    columns = ["name", *(f"long_identifier_number_{i}" for i in range(11))]  # words no column width can wrap
    rows = [[f"row {r}", *(0.125 * r for _ in range(11))] for r in range(3)]
    width = A4[0] - 2 * PAGE_MARGIN_MM * mm  # the text width render() sets tables in
    layout = layout_table(columns, [[cell_text(v) for v in row] for row in rows], set(), width)
    assert len(layout.parts) > 1 and all(part.columns[0] == 0 for part in layout.parts)
    assert [j for part in layout.parts for j in part.columns[1:]] == list(range(1, 12))
    for part in layout.parts:
        assert sum(part.widths) <= width
        for j, w in zip(part.columns, part.widths, strict=True):
            assert w - 2 * CELL_PAD >= max(header_words(columns[j], layout.size)), columns[j]
    doc = Document("t", "s", [], [TableBlock(columns, rows, "wide")], [Section("S", [Para("x")])])
    render(doc, tmp_path / "w.pdf")
    text = page_texts(tmp_path / "w.pdf")[0]
    tokens = text.split()
    assert all(c in tokens for c in columns) and f"Set in {len(layout.parts)} parts" in text
    assert text.count("row 2") == len(layout.parts) and text.count("0.250") == 11  # every cell drawn, rows whole


def test_header_words_are_measured_as_set():
    """A header wraps only between its words: their widths in the fonts they are set in (`code` in Courier)."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    from stargal.typeset import header_words

    assert header_words("peak `RSS_bytes` (MB)", 8.0) == [stringWidth("peak", "Helvetica-Bold", 8.0), stringWidth("RSS_bytes", "Courier", 7.0),
                      stringWidth("(MB)", "Helvetica-Bold", 8.0)]  # fmt: skip


def test_cells_and_numeric_columns():
    assert [cell_text(v) for v in (None, float("nan"), 0.12345, 12345, 7, "x")] == ["\u2013", "\u2013", "0.123",
                                                                                      "12,345", "7", "x"]  # fmt: skip
    assert is_numeric_column(["0.5", "100.0 %", "\u2013", "0.064 (0.86)", "12,345"])
    assert not is_numeric_column(["+2.97, +6.02", "1"]) and not is_numeric_column(["-16", "22-"])
    assert is_numeric_column(["3.153e-06", "0.0003828", "2.013E+05"])  # tune.py's trials.md writes 4 digits, %.4g


def test_a_wide_table_fits_the_page_without_wrapping_rows(tmp_path):
    from stargal.typeset import Document, Section, render

    columns = [f"column number {i}" for i in range(12)]
    rows = [[1234.5678 * (i + 1) for i in range(12)] for _ in range(3)]
    doc = Document("t", "s", [], [TableBlock(columns, rows, "wide")], [Section("S", [Para("x")])])
    pages = render(doc, tmp_path / "w.pdf")
    assert pages == 1
    text = page_texts(tmp_path / "w.pdf")[0]
    assert text.count("1234.568") == 3  # each row on one line: every cell drawn whole


def _make_report_script(paths: DataPaths, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CODE / "make_report.py"), "--data-dir", str(paths.root), "-q"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.slow
def test_make_report_script_runs_from_any_directory(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    proc = _make_report_script(paths, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"report: {re.escape(str(paths.reports('report.pdf')))} \(\d+ pages\)", proc.stdout)
    assert "not run: Augmentation experiment, Hyper-parameter tuning, Explanations, Real-sky evaluation" in proc.stdout
    assert paths.reports("report.pdf").stat().st_size > 10_000
    summary = fsio.read_json(paths.reports("alignment", "summary.json"))
    _seal_alignment(paths, {**summary, "fields": summary["fields"][:1]})
    proc = _make_report_script(paths, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "stale (left out; the report says what redoes them): Alignment" in proc.stdout
    assert "not run: Augmentation" in proc.stdout and "Alignment" not in proc.stdout.split("not run:")[1].split("\n")[0]
    # a section refused (its files edited) is not shown, and said so: it was listed as "not run"
    folder = paths.reports("real_sky")
    fsio.seal(
        folder / "real_sky.json",
        [],
        {"settings": {"model": str(paths.model_dir(MODEL)), "model_id": _model_id(paths)}, "summary": "Evaluated."},
    )
    (folder / "real_sky.json").write_text((folder / "real_sky.json").read_text().replace("Evaluated.", "Edited."))
    proc = _make_report_script(paths, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "not shown (the report says why): Real-sky evaluation" in proc.stdout
    assert "Real-sky" not in proc.stdout.split("not run:")[1].split("\n")[0]
    missing = tmp_path / "mistyped"  # an empty report of a folder no stage has run on, exit 0, was the answer
    proc = subprocess.run([sys.executable, str(CODE / "make_report.py"), "--data-dir", str(missing)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and f"--data-dir {missing}: no such folder" in proc.stderr and not missing.exists()


def test_data_section_counts_a_field_aligned_without_a_catalog():
    from types import SimpleNamespace

    from stargal.stages.report import data_section

    fields = [{"field": 80, "objects": 120, "stars": 50}, {"field": 30, "objects": None, "coordinates": "skipped"}]
    section = data_section(
        SimpleNamespace(manifest=None, alignment={"fields": fields}, alignment_stale=None, dataset=None)
    )
    assert section.ran is not False
    text = " ".join(str(getattr(b, "text", "")) for b in section.blocks)
    assert "120 objects in the 2 fields (50 stars, 70 galaxies" in text


def test_data_section_counts_an_object_listed_in_two_fields_once():
    """A field's count includes the objects listed under its neighbour: their sum said 393 objects where stage 01's
    summary counts 369 distinct ones."""
    from types import SimpleNamespace

    from stargal.stages.report import data_section

    fields = [{"field": 80, "objects": 96, "stars": 60, "listed_under_neighbours": 5},
              {"field": 81, "objects": 82, "stars": 40, "listed_under_neighbours": 8}]  # fmt: skip
    totals = {"objects": 170, "listed": 178, "stars": 97, "galaxies": 73, "star_fraction": 0.5706}
    summary = {"fields": fields, "totals": totals}
    section = data_section(SimpleNamespace(manifest=None, alignment=summary, alignment_stale=None, dataset=None))
    text = " ".join(str(getattr(b, "text", "")) for b in section.blocks)
    assert "170 objects in the 2 fields (97 stars, 73 galaxies; star fraction 0.571)" in text


def test_a_damaged_alignment_set_is_stale_and_a_figure_outside_it_is_not_shown(tmp_path):
    """summary.json seals stage 01's figures: a figure redrawn by a stopped rerun beside the old summary, or a
    summary edited after sealing, must not be shown as that summary's."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    _png(paths.reports("alignment", "object_counts.png"), 9)  # another run's figure: not in the sealed set
    figures = [b for b in _sections(paths)["Alignment"].blocks if isinstance(b, FigureBlock)]
    assert [p.name for f in figures for p in f.images] == ["band_offsets.png"]
    _png(paths.reports("alignment", "band_offsets.png"), 10)  # redrawn, the summary not rewritten
    sections = _sections(paths)
    assert sections["Alignment"].status.startswith("stale: the summary is damaged or incomplete (")
    assert "01_alignment.py --run 8162 --camcol 6 --fields 80 81 82 83 writes it again" in sections["Alignment"].status
    assert "objects in the" not in " ".join(str(getattr(b, "text", "")) for b in sections["Data"].blocks)


def test_the_report_pairs_the_latest_model_with_its_own_dataset(tmp_path, caplog):
    """A dataset prepared after the latest model was trained (datasets/LATEST moved on) must not lend its splits
    to that model's figures: the report shows the model's own dataset and says so."""
    import logging

    from stargal.stages.report import Run

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    newer = "301-8162-6_p25_pad_def456"
    fsio.seal(paths.dataset_json(newer), [], {"name": newer, "fields": {"train": [80], "val": [82], "test": [81]}})
    fsio.write_text(paths.latest_dataset, newer + "\n")
    with caplog.at_level(logging.WARNING, logger="stargal"):
        run = Run(paths)
    assert run.dataset_name == DATASET and run.dataset["fields"]["train"] == [80, 83]
    assert f"the latest dataset {newer} is not the one the latest model {MODEL} was trained on" in caplog.text


def _make_report_main(argv: list[str]) -> int:
    """make_report.py's main, in this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_report_under_test", CODE / "make_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_field_options_confirm_the_dataset_the_report_shows_not_the_latest_one(tmp_path):
    """make_report.py checked --run/--fields against the latest dataset, then reported the latest model's own
    dataset: options naming run 9999 gave, with exit 0, a report of run 8162."""
    from stargal.errors import StargalError

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    newer = "301-9999-6_p25_pad_def456"
    fsio.seal(paths.dataset_json(newer), [], {"name": newer, "rerun": 301, "run": 9999, "camcol": 6,
                                               "fields": {"train": [10], "val": [11], "test": [12]}})  # fmt: skip
    fsio.write_text(paths.latest_dataset, newer + "\n")
    options = ["--data-dir", str(paths.root), "-q", "--run", "9999", "--fields", "10", "11", "12"]
    with pytest.raises(StargalError, match=rf"--run 9999: dataset {DATASET} holds rerun 301 run 8162 camcol 6"):
        _make_report_main(options)
    assert not paths.report_pdf.exists()
    assert _make_report_main(["--data-dir", str(paths.root), "-q", "--run", "8162", "--fields", "80", "81", "82",
                              "83"]) == 0  # fmt: skip


def test_a_model_whose_metrics_were_edited_is_refused_not_reported(tmp_path):
    from stargal.errors import StargalError

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    metrics = paths.model(MODEL).metrics
    metrics.write_text(metrics.read_text().replace('"accuracy": 0.91', '"accuracy": 0.99'))
    with pytest.raises(StargalError, match=r"metrics\.json"):
        build_report(paths)


def test_a_model_trained_on_an_earlier_build_of_its_dataset_is_stale_in_the_report_and_in_verify(tmp_path):
    """The dataset rebuilt under its name (other content): the model's numbers are not this dataset's. The report
    says so instead of showing them, Table 1 matches models by content, and --verify names the model stale."""
    from stargal.integrity import verify_data_folder

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths, reference=True)

    def model_findings():  # (the fake run's manifest lists files it never wrote)
        return [f for f in verify_data_folder(paths)[0] if f.path.is_relative_to(paths.models_root)]

    assert not model_findings()
    _build_dataset(paths, b"labels of a second build")
    sections = _sections(paths)
    for title in ("Model and training", "Evaluation", "Difficulty analysis"):
        assert not sections[title].ran and sections[title].status.startswith("stale: "), title
        assert "earlier build of dataset" in sections[title].status
    assert "03_model.py --dataset" in sections["Evaluation"].status
    front = collect(paths).front
    assert front[0].text.startswith(f"Stale: the latest model {MODEL} was trained on an earlier build")
    assert not any(isinstance(b, TableBlock) for b in front)  # neither model's numbers: both are of the old build
    findings = model_findings()
    reference = paths.model(f"reference_regularised-{DATASET}-s42").json
    assert {f.path for f in findings} == {paths.model(MODEL).json, reference}
    assert all(f.problem.startswith("stale (intact, not damaged)") for f in findings)
    # explanations made after the rebuild (of the new build, by the old model) are stale with the model
    explain = paths.reports("explain", MODEL)
    fsio.write_text(explain / "examples.csv", "group,index\n")
    _seal_made_from_model(explain / "explain.json", [explain / "examples.csv"], paths, split="test", steps=32)
    status = _sections(paths)["Explanations"].status
    assert status.startswith(f"stale: the latest model {MODEL} was trained on an earlier build of dataset")


def test_analyses_and_figures_of_an_earlier_model_of_the_name_are_stale_not_shown(tmp_path):
    """Retrained under its name: the difficulty analysis, explanations and training figures of the earlier model
    are named stale (with the command that redoes them), never shown as the new model's; so is a broken seal."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    explain = paths.reports("explain", MODEL)
    fsio.write_text(explain / "examples.csv", "group,index\n")
    _png(explain / "star_correct.png", 8)
    _seal_made_from_model(explain / "explain.json", [explain / "examples.csv", explain / "star_correct.png"], paths,
                          split="val", steps=32)  # fmt: skip
    sections = _sections(paths)
    assert sections["Explanations"].ran and "validation patches" in sections["Explanations"].blocks[0].text
    figure = next(b for b in sections["Explanations"].blocks if isinstance(b, FigureBlock))
    assert f"(validation patches of dataset `{DATASET}`)" in figure.caption
    assert any(isinstance(b, FigureBlock) for b in sections["Model and training"].blocks)

    _png(explain / "star_correct.png", 9)  # explain.py killed while it replaced its figures
    status = _sections(paths)["Explanations"].status
    assert status.startswith("stale: ") and "star_correct.png" in status and f"explain.py --model {MODEL}" in status

    _retrain(paths)
    sections = _sections(paths)
    assert sections["Model and training"].ran
    assert not any(isinstance(b, FigureBlock) for b in sections["Model and training"].blocks)
    assert not any(isinstance(b, FigureBlock) for b in sections["Evaluation"].blocks)
    status = sections["Difficulty analysis"].status
    assert status == f"stale: made from an earlier model named {MODEL}; rerun explain.py --difficulty --model {MODEL}"


def test_training_figures_left_out_are_said_to_be_in_the_report_not_only_on_the_console(tmp_path):
    """Figures of an earlier model of the name were left out with a console warning only: the PDF's model and
    evaluation sections read as if stage 03 had drawn none."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)

    def notes(title: str) -> str:
        return " ".join(b.text for b in _sections(paths)[title].blocks if isinstance(b, Para) and b.style == "note")

    assert "left out" not in notes("Model and training") + notes("Evaluation")
    _retrain(paths)
    text = notes("Model and training")
    assert "(Figures left out: the figures in " in text and "are not the latest model's" in text
    assert "03_model.py" in text and "draws them again" in text
    assert "Figures left out" in notes("Evaluation")


def test_open_magnitude_bins_are_not_printed_as_negative_magnitudes(tmp_path):
    """metrics.json labels the open bins "-16" and "22-": the per-magnitude table printed r PSF mag "-16"."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    metrics = fsio.read_json(paths.model(MODEL).metrics)
    metrics["by_magnitude"]["test"] = [
        {"bin": "-16", "lo": None, "hi": 16.0, "n": 5, "stars": 5, "accuracy": 1.0},
        {"bin": "16-18", "lo": 16.0, "hi": 18.0, "n": 4, "stars": 3, "accuracy": 0.75},
        {"bin": "22-", "lo": 22.0, "hi": None, "n": 31, "stars": 12, "accuracy": 0.613},
        {"bin": "unknown", "lo": None, "hi": None, "n": 2, "stars": 2, "accuracy": 0.0},
    ]
    fsio.write_json(paths.model(MODEL).metrics, metrics)
    _retrain(paths)  # sealed again with these metrics
    table = [b for b in _sections(paths)["Evaluation"].blocks if isinstance(b, TableBlock)][-1]
    assert [row[0] for row in table.rows] == ["< 16", "16-18", ">= 22", "unknown"]


def test_experiment_and_study_of_another_dataset_are_not_shown_as_this_ones(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    folder = paths.reports("augmentation")
    settings = {"dataset": "other", "dataset_id": "0" * 64, "seed": 42, "epochs": 3, "max_train": 100}
    fsio.write_text(folder / "experiment.md", "x\n")
    fsio.seal(folder / "experiment.json", [folder / "experiment.md"], {"settings": settings, "rows": []})
    study = "other_stargal"
    fsio.write_json(paths.best_config(study), {"architecture": "stargal", "dataset": "other"})
    fsio.write_text(paths.trials_md(study), "| trial | value |\n|---|---|\n| 0 | 0.3 |\n")
    fsio.seal(paths.tuning_record(study), [paths.best_config(study), paths.trials_md(study)],
              {"study": study, "dataset": "other", "dataset_id": "0" * 64})  # fmt: skip
    sections = _sections(paths)
    status = sections["Augmentation experiment"].status
    assert status.startswith("not shown: run on dataset other, not on this report's dataset " + DATASET)
    status = sections["Hyper-parameter tuning"].status
    assert status.startswith(f"not shown: no study of dataset {DATASET} as it is now") and study in status

    fsio.seal(folder / "experiment.json", [folder / "experiment.md"],
              {"settings": {**settings, "dataset": DATASET, "dataset_id": _dataset_id(paths)}, "rows": []})  # fmt: skip
    assert _sections(paths)["Augmentation experiment"].ran


def test_augmentation_examples_of_another_build_of_the_dataset_are_not_shown_beside_its_experiment(tmp_path):
    """The examples (augmentation.json's set) and the experiment (experiment.json's) are two outputs of stage 04:
    examples drawn from an earlier build of the dataset were shown beside an experiment of this one."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    folder = paths.reports("augmentation")
    _png(folder / "experiment.png", 11)
    settings = {"dataset": DATASET, "dataset_id": _dataset_id(paths), "seed": 42, "epochs": 3, "max_train": 100}
    fsio.seal(folder / "experiment.json", [folder / "experiment.png"], {"settings": settings, "rows": []})
    examples = [folder / "examples_symmetries.png", folder / "examples_photometric.png"]
    for k, png in enumerate(examples):
        _png(png, 12 + k)
    fsio.seal(folder / "augmentation.json", examples,
              {"dataset": DATASET, "settings": {"dataset": DATASET, "dataset_id": "0" * 64, "seed": 42}})  # fmt: skip

    def shown() -> list[str]:
        blocks = _sections(paths)["Augmentation experiment"].blocks
        return [p.name for b in blocks if isinstance(b, FigureBlock) for p in b.images]

    assert shown() == ["experiment.png"]
    fsio.seal(folder / "augmentation.json", examples, {"dataset": DATASET, "settings": settings})
    assert shown() == ["experiment.png", *(p.name for p in examples)]
    _png(examples[0], 20)  # redrawn outside its set
    assert shown() == ["experiment.png"]


def test_a_tuning_figure_of_fewer_trials_than_the_study_shown_is_left_out(tmp_path):
    """tune.py seals the study's results, then draws its figure in a second set: a resumed study stopped in between
    showed the table of every trial beside the figure of the earlier, fewer ones."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    study, folder = "s", paths.reports("tuning", "s")
    before = "| trial | val_loss |\n|---|---|\n| 0 | 0.3 |\n"
    _study(paths, study, before)
    _png(folder / "tuning.png", 14)
    fsio.write_text(folder / "trials.md", before)
    fsio.seal(folder / "tuning.json", [folder / "trials.md", folder / "tuning.png"], {"study": study})

    def shown() -> bool:
        return any(isinstance(b, FigureBlock) for b in _sections(paths)["Hyper-parameter tuning"].blocks)

    assert shown()
    _study(paths, study, before + "| 1 | 0.2 |\n")  # resumed: more trials, the figure not drawn again
    assert not shown()


def test_a_kept_report_is_rebuilt_when_the_download_manifest_changes(tmp_path):
    """The data section counts the files of sas/manifest.json: stage 00 run again for more files kept the report
    with the earlier count."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    assert build_report(paths)["skipped"] is False
    assert build_report(paths)["skipped"] is True
    manifest = fsio.read_json(paths.manifest)
    manifest["files"]["photoObj/frames/301/8162/6/frame-g-008162-6-0080.fits.bz2"] = {"url": "simulated:v4:seed=42",
                                                                                      "size": 2_000_000}  # fmt: skip
    fsio.write_json(paths.manifest, manifest)
    assert build_report(paths)["skipped"] is False
    assert "Stage 00 wrote 3 files" in " ".join(page_texts(paths.report_pdf)).replace("\n", " ")


def test_a_report_made_by_an_earlier_report_format_is_rebuilt_not_kept(tmp_path, monkeypatch):
    """A report kept as current from the same inputs kept the words of the code that wrote it (the doubled catalog
    count): a corrected report format rebuilds it once."""
    from stargal.stages import report

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    monkeypatch.setattr(report, "REPORT_FORMAT", report.REPORT_FORMAT - 1)
    assert build_report(paths)["skipped"] is False
    monkeypatch.undo()
    assert build_report(paths)["skipped"] is False
    assert build_report(paths)["skipped"] is True


def test_the_report_is_rebuilt_when_a_model_it_lists_is_removed(tmp_path):
    import shutil

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths, reference=True)
    assert not build_report(paths)["skipped"] and build_report(paths)["skipped"]
    shutil.rmtree(paths.model_dir(f"reference_regularised-{DATASET}-s42"))
    assert not build_report(paths)["skipped"]
    assert "reference regularised CNN" not in page_texts(paths.report_pdf)[0]


def test_verify_takes_an_empty_output_folder_for_no_output(tmp_path):
    """04_augmentation.py --materialize (or 03) stopped before its first file: an empty folder, not a broken set."""
    from stargal.integrity import verify_data_folder

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    paths.augmented_dir(DATASET).mkdir(parents=True)
    paths.model_dir("interrupted").mkdir(parents=True)

    def findings():  # (the fake run's manifest lists files it never wrote)
        return [f.path.name for f in verify_data_folder(paths)[0] if not f.path.is_relative_to(paths.root / "sas")]

    assert findings() == []
    fsio.write_text(paths.augmented_dir(DATASET) / "x.npy", "")
    assert findings() == ["augmented.json"]


def test_an_output_in_the_data_folder_other_than_a_report_pdf_is_refused(tmp_path):
    """`--output` over a model's file wrote the PDF over it, exit 0: the data folder's sealed files are not outputs."""
    from stargal.errors import StargalError

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    keras = paths.model(MODEL).keras
    before = keras.read_bytes()
    with pytest.raises(StargalError, match=r"^--output .*out\.txt: the report is a PDF; name a file ending in \.pdf"):
        build_report(paths, tmp_path / "out.txt")
    (tmp_path / "a-file").write_text("x")  # said "File exists", exit 1, after the work
    with pytest.raises(StargalError, match=r"^--output .*a-file/r\.pdf: .*a-file is a file, not a folder"):
        build_report(paths, tmp_path / "a-file" / "r.pdf")
    for target in (keras, paths.root / "notes.pdf", paths.reports("training") / "x.pdf"):
        with pytest.raises(StargalError, match=rf"^--output {re.escape(str(target))}: lies in the data folder"):
            build_report(paths, target)
    assert keras.read_bytes() == before and not (paths.root / "notes.pdf").exists()
    assert build_report(paths, paths.reports("draft.pdf"))["path"].read_bytes().startswith(b"%PDF")
    named = build_report(paths, paths.report_pdf)  # the default named in full is the default: sealed, then kept
    assert named["path"] == paths.report_pdf and build_report(paths)["skipped"]
    other = DataPaths(tmp_path / "other-data")  # another data folder a stage has run on (its lock file)
    other.model(MODEL).keras.parent.mkdir(parents=True)
    other.lock_file.touch()
    other.model(MODEL).keras.write_bytes(b"weights")
    for target in (other.model(MODEL).keras, other.root / "notes.pdf"):
        with pytest.raises(StargalError, match=rf"^--output {re.escape(str(target))}: lies in the data folder "):
            build_report(paths, target)
    assert other.model(MODEL).keras.read_bytes() == b"weights" and not (other.root / "notes.pdf").exists()
    assert build_report(paths, other.reports("draft.pdf"))["path"].read_bytes().startswith(b"%PDF")
    other.report_pdf.write_bytes(b"its own sealed report")  # another folder's report: its make_report.py writes it
    with pytest.raises(StargalError, match=rf"^--output {re.escape(str(other.report_pdf))}: is the report of the data"):
        build_report(paths, other.report_pdf)
    assert other.report_pdf.read_bytes() == b"its own sealed report"


@pytest.mark.parametrize("pointer", ["nonexistent-model\n", "", "\n"])
def test_a_latest_pointer_to_no_model_is_an_error_not_a_report_without_the_model(tmp_path, pointer):
    """models/LATEST naming a model that is gone gave a report whose model sections all said "not run", exit 0;
    predict.py and explain.py said "--model nonexistent-model", an option never given."""
    from stargal.errors import StargalError
    from stargal.stages.predict import resolve_model_dir

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    paths.latest_model.write_text(pointer)
    with pytest.raises(StargalError, match=rf"^{re.escape(str(paths.latest_model))}: "):
        build_report(paths)
    with pytest.raises(StargalError, match=rf"^{re.escape(str(paths.latest_model))}: "):
        resolve_model_dir(paths, None)
    assert not paths.report_pdf.exists()
    paths.latest_model.unlink()  # no pointer at all: a folder where no model was trained; the report says so
    assert not build_report(paths)["sections"]["Evaluation"]


def test_an_alignment_summary_of_other_fields_is_stale_not_counted_as_the_datasets(tmp_path):
    """Stage 01 run again on one field (the repair our own messages suggest) rewrote the summary for that field:
    the report said "96 objects in the 1 fields" beside a dataset of four."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    summary = fsio.read_json(paths.reports("alignment", "summary.json"))
    assert _sections(paths)["Alignment"].ran
    _seal_alignment(paths, {**summary, "fields": summary["fields"][:1]})
    sections = _sections(paths)
    status = sections["Alignment"].status
    assert status.startswith(
        "stale: the summary describes fields 80 of run 8162 camcol 6 (stage 01's last run), "
        "not the dataset's 81 82 83; 01_alignment.py --run 8162 --camcol 6 --fields 80 81 82 83"
    )
    data_text = " ".join(str(getattr(b, "text", "")) for b in sections["Data"].blocks)
    assert "objects in the" not in data_text and "Fields: rerun 301" in data_text


def test_the_tuning_table_shows_the_best_trials_whatever_their_number(tmp_path):
    """trials.md lists trials in order: cut at 12 rows, the table left out the best trial (15 of 24)."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    study = f"{DATASET}_stargal"
    losses = [0.7 + 0.01 * t for t in range(24)]
    losses[15] = 0.6762
    rows = "".join(f"| {t} | COMPLETE | {v:.4f} |\n" for t, v in enumerate(losses)) + "| 24 | FAIL |  |\n"
    fsio.write_json(paths.best_config(study), {"architecture": "stargal", "dataset": DATASET})
    fsio.write_text(paths.trials_md(study), "| trial | state | val_loss |\n|---|---|---|\n" + rows)
    fsio.seal(paths.tuning_record(study), [paths.best_config(study), paths.trials_md(study)],
              {"study": study, "dataset": DATASET, "dataset_id": _dataset_id(paths)})  # fmt: skip
    table = next(b for b in _sections(paths)["Hyper-parameter tuning"].blocks if isinstance(b, TableBlock))
    assert [int(r[0]) for r in table.rows] == [15, *range(12)][:12] and len(table.rows) == 12
    assert table.note == "The best 12 of 25 trials by val_loss; trials.md lists them all."
    older = f"{DATASET}_reference_base"  # another study of the dataset, written before: named, not dropped
    fsio.write_json(paths.best_config(older), {"architecture": "reference_base", "dataset": DATASET})
    fsio.write_text(paths.trials_md(older), "| trial | state | val_loss |\n|---|---|---|\n| 0 | COMPLETE | 0.5 |\n")
    fsio.seal(paths.tuning_record(older), [paths.best_config(older), paths.trials_md(older)],
              {"study": older, "dataset": DATASET, "dataset_id": _dataset_id(paths)})  # fmt: skip
    os.utime(paths.best_config(older), (1, 1))
    lead = _sections(paths)["Hyper-parameter tuning"].blocks[0].text
    assert f"Study `{study}`" in lead and f"The dataset's other studies: `{older}`" in lead


def test_a_current_report_is_not_kept_over_a_damaged_model_and_force_rebuilds_it(tmp_path):
    """model.keras truncated after the report: "current, kept", exit 0 (the report's inputs are the records, not
    the networks); --force was never read."""
    from stargal.errors import StargalError

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    assert not build_report(paths)["skipped"] and build_report(paths)["skipped"]
    stamp = paths.report_pdf.stat().st_mtime_ns
    assert not build_report(paths, force=True)["skipped"] and paths.report_pdf.stat().st_mtime_ns != stamp
    with open(paths.model(MODEL).keras, "ab") as fh:
        fh.write(b" damaged")
    with pytest.raises(StargalError, match=r"model\.keras"):
        build_report(paths)


@pytest.mark.parametrize("content", ['{"stages": 5}', '{"stages": [{"seconds": "ten"}]}', '{"options": [[1]], "stages": []}',
                                     "not json"])  # fmt: skip
def test_a_stage_table_of_another_shape_leaves_out_the_run_time_section_only(tmp_path, content):
    """A stages.json of another shape stopped the report with "unexpected TypeError ... please report it"."""
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    paths.pipeline_record.write_text(content)
    result = build_report(paths)
    assert not result["sections"]["Run time and memory"] and result["sections"]["Evaluation"]


def test_two_models_alike_in_architecture_and_seed_are_named_apart_in_table_1(tmp_path):
    """A model trained again by hand with a tuned configuration gave two rows "stargal CNN (ours), seed 42"."""
    from stargal.stages.report import Run, headline

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    _model(paths, "tuned", "stargal", 0.92, 0.79, "d4", True)
    table = next(b for b in headline(Run(paths)) if isinstance(b, TableBlock))
    labels = [row[0] for row in table.rows[:2]]
    assert sorted(labels) == [f"stargal CNN (ours), seed 42 ({MODEL}) [latest]", "stargal CNN (ours), seed 42 (tuned)"]


def test_a_model_trained_after_the_runners_last_run_is_not_credited_to_it(tmp_path):
    """The Run line showed the runner's options (--epochs 1) for a model 03_model.py trained later by hand."""
    from stargal.stages.report import Run

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    record = fsio.read_json(paths.pipeline_record)
    meta = {k: v for k, v in fsio.read_json(paths.model(MODEL).json).items() if k != fsio.INTEGRITY_KEY}
    files = [paths.model(MODEL).keras, paths.model(MODEL).metrics]
    for finished, created, after in (("2026-12-06T10:00:00+00:00", "2026-12-06T09:00:00+00:00", False),
                                     ("2026-12-06T10:00:00+00:00", "2026-12-06T11:00:00+00:00", True)):  # fmt: skip
        fsio.write_json(paths.pipeline_record, {**record, "finished": finished})
        fsio.seal(paths.model(MODEL).json, files, {**meta, "created": created})
        line = Run(paths).command()
        assert ("was trained after that run, outside it" in line) == after and "finished 2026-12-06 10:00" in line


REGION = [331.9, 331.95, 26.95, 27.06]
REGION_WORDS = "the region RA 331.9 to 331.95, Dec 26.95 to 27.06"


def _regions_run(paths: DataPaths, **record) -> None:
    """The fake run's dataset as 02 records one shaped by sky regions, and its model trained on that build."""
    _fake_run(paths)
    meta = fsio.read_json(paths.dataset_json(DATASET))
    content = {k: v for k, v in meta.items() if k != fsio.INTEGRITY_KEY} | record
    fsio.seal(paths.dataset_json(DATASET), [paths.split_y(DATASET, "test")], content)
    model = fsio.read_json(paths.model(MODEL).json)
    model["inputs"]["dataset"] = _dataset_id(paths)
    files = [paths.model(MODEL).keras, paths.model(MODEL).metrics]
    fsio.seal(paths.model(MODEL).json, files, {k: v for k, v in model.items() if k != fsio.INTEGRITY_KEY})


def _splits_para(paths: DataPaths) -> str:
    return next(b.text for b in _sections(paths)["Preparation and splits"].blocks if isinstance(b, Para))


def test_a_test_set_of_whole_fields_is_described_as_before(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    assert collect(paths).front[0].text.startswith("On the test field (81; 60 catalogued objects, 33 % stars), ")
    assert "assigns whole fields to the splits (training 80 83, validation 82, test 81) and removes" in (
        _splits_para(paths)
    )
    assert (
        dict(collect(paths).facts)["Fields"] == "rerun 301, run 8162, camcol 6: training 80 83, validation 82, test 81"
    )


def test_the_test_set_a_test_region_shaped_is_described_with_the_region_and_what_it_moved(tmp_path):
    """`--test-region` moved 65 objects of training field 83 into the test set; the report still said "On the test
    field (81; 147 catalogued objects ...)" and "assigns whole fields to the splits (... test 81)"."""
    paths = DataPaths(tmp_path / "data")
    _regions_run(
        paths,
        test_regions=[REGION], exclude_regions=[[331.6, 331.7, 26.9, 27.1]], removed={"exclude_region": 7},
        moved_to_test_by_region=26, test_origin={"fields": 35, "regions": 25, "regions_by_field": {"83": 25}},
    )  # fmt: skip
    lead = collect(paths).front[0].text
    assert lead.startswith(
        f"On the test set (60 catalogued objects, 33 % stars: 35 of test field 81 and 25 of training field 83 in "
        f"{REGION_WORDS}), "
    )
    assert (
        f"assigns fields to the splits (training 80 83, validation 82, test 81), moves every object in {REGION_WORDS} "
        "to the test set, whatever its field (the 60 test objects: 35 of test field 81 and 25 of training field 83 "
        "in it), removes the 7 training and validation objects in the region RA 331.6 to 331.7, Dec 26.9 to 27.1 and "
        "removes objects that would leak" in _splits_para(paths)
    )
    fields = (
        f"rerun 301, run 8162, camcol 6: training 80 83, validation 82, test 81 and {REGION_WORDS}; excluded from "
        "training and validation: the region RA 331.6 to 331.7, Dec 26.9 to 27.1"
    )
    assert dict(collect(paths).facts)["Fields"] == fields
    text = re.sub(r"\s+", " ", "\n".join(page_texts(build_report(paths, tmp_path / "regions.pdf")["path"])))
    assert "On the test set (60 catalogued objects, 33 % stars: 35 of test field 81 and 25 of training" in text
    assert "On the test field" not in text and "whole fields" not in text


def test_a_test_set_of_a_region_alone_is_described_as_the_region(tmp_path):
    paths = DataPaths(tmp_path / "data")
    _regions_run(
        paths, fields={"train": [80, 81, 83], "val": [82], "test": []}, test_regions=[REGION],
        test_origin={"fields": 0, "regions": 60, "regions_by_field": {"81": 10, "82": 5, "83": 45}},
    )  # fmt: skip
    assert (
        collect(paths)
        .front[0]
        .text.startswith(
            f"On the test set (60 catalogued objects, 33 % stars: 55 of training fields 81 83 and 5 of validation field "
            f"82 in {REGION_WORDS}), "
        )
    )
    assert "(training 80 81 83, validation 82, no test field), moves every object in" in _splits_para(paths)
    assert dict(collect(paths).facts)["Fields"].endswith(f"validation 82, test from {REGION_WORDS}")


def test_a_real_sky_evaluation_of_an_earlier_model_of_the_name_is_stale_and_another_models_is_named(tmp_path):
    """The model retrained under its name after real_sky.py: the report showed the earlier model's real-sky
    numbers as the current one's, exit 0. An evaluation of another model (the shipped one) says so."""
    from stargal.paths import PRETRAINED_MODEL_DIR

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    folder = paths.reports("real_sky")

    def evaluated(model_dir: Path, name: str) -> None:
        model_id = fsio.seal_digest(fsio.read_json(model_dir / "model.json"))
        fsio.seal(folder / "real_sky.json", [], {"settings": {"model": str(model_dir), "model_id": model_id},
                                                 "model": name, "summary": "Evaluated."})  # fmt: skip

    evaluated(paths.model_dir(MODEL), MODEL)
    assert _sections(paths)["Real-sky evaluation"].ran
    _retrain(paths)
    section = _sections(paths)["Real-sky evaluation"]
    assert not section.ran
    assert section.status == f"stale: made from an earlier model named {MODEL} (retrained, changed or removed since); " \
        "rerun code/real_sky.py"  # fmt: skip
    evaluated(PRETRAINED_MODEL_DIR, "stargal-pretrained")
    section = _sections(paths)["Real-sky evaluation"]
    assert section.ran and f"Not this report's model `{MODEL}`" in section.blocks[0].text
    fsio.seal(folder / "real_sky.json", [], {"model": MODEL, "summary": "Which model?"})  # no settings: unknown
    assert _sections(paths)["Real-sky evaluation"].status.startswith("not shown: it does not record the model")


def test_a_kept_report_is_rebuilt_when_the_outside_model_its_real_sky_section_shows_changes(tmp_path):
    """A model outside the data folder (the shipped one, a copy elsewhere) is no file of the folder: the report
    was kept, its real-sky section showing that model's earlier numbers, when only that model changed."""
    import shutil

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    outside = Path(shutil.copytree(paths.model_dir(MODEL), tmp_path / "elsewhere" / "theirs"))
    content = {k: v for k, v in fsio.read_json(outside / "model.json").items() if k != fsio.INTEGRITY_KEY}

    def train(weights: bytes) -> str:
        fsio.write_bytes(outside / "model.keras", weights)
        return fsio.seal_digest(fsio.seal(outside / "model.json", [outside / "model.keras", outside / "metrics.json"],
                                          content))  # fmt: skip

    model_id = train(b"their weights")  # another model than the report's
    folder = paths.reports("real_sky")
    fsio.seal(folder / "real_sky.json", [], {"settings": {"model": str(outside), "model_id": model_id},
                                             "model": "theirs", "summary": "Evaluated."})  # fmt: skip
    first = build_report(paths)
    assert not first["skipped"] and first["sections"]["Real-sky evaluation"]
    assert build_report(paths)["skipped"]  # nothing changed: kept
    train(b"their weights, trained again")
    again = build_report(paths)
    assert not again["skipped"] and not again["sections"]["Real-sky evaluation"]
    assert again["stale"] == ["Real-sky evaluation"]


def test_a_damaged_split_report_is_left_out_with_a_note(tmp_path, caplog):
    """make_report.py read splits.json without checking its seal: a split report whose splits.png was replaced, or
    whose numbers were edited after 02 sealed them, lent its magnitudes and figure to the report. Now it is left
    out, with a note in the section and a warning naming the file."""
    from stargal.stages.report import Run, splits_section

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    folder = paths.reports("splits", DATASET)
    mags = {s: {"median": 20.5, "p95": 22.5} for s in ("train", "val", "test")}
    files = [folder / "splits.md", folder / "splits.png"]
    fsio.seal(folder / "splits.json", files, {"r_psfmag": mags, "dataset_id": _dataset_id(paths)})

    def shown() -> tuple[list, bool, str]:
        section = splits_section(Run(paths))
        table = next(b for b in section.blocks if isinstance(b, TableBlock))
        notes = " ".join(b.text for b in section.blocks if isinstance(b, Para) and "left out" in b.text)
        return [row[5] for row in table.rows], any(isinstance(b, FigureBlock) for b in section.blocks), notes

    assert shown() == ([20.5] * 3, True, "")
    _png(folder / "splits.png", 9)  # another figure where the sealed one was
    with caplog.at_level(logging.WARNING):
        medians, figure, note = shown()
    assert (medians, figure) == ([None] * 3, False)
    assert "split report is damaged" in note and str(folder / "splits.png") in note and "02_preparation.py" in note
    assert f"split report is damaged ({folder / 'splits.png'}" in caplog.text
    fsio.seal(folder / "splits.json", files, {"r_psfmag": mags, "dataset_id": _dataset_id(paths)})
    record = fsio.read_json(folder / "splits.json")
    record["r_psfmag"]["test"]["median"] = 18.0  # edited after sealing
    fsio.write_json(folder / "splits.json", record)
    assert shown()[:2] == ([None] * 3, False)
    (folder / "splits.json").unlink()  # the figure alone, without the record that seals it
    medians, figure, note = shown()
    assert (medians, figure) == ([None] * 3, False) and "no split report" in note


def test_a_split_report_of_another_build_of_the_dataset_is_left_out(tmp_path):
    """splits.json names the build of the dataset it describes (02 commits it after the dataset): one left from
    another build of the name must not lend its magnitudes, KS tests and figure to this one."""
    from stargal.stages.report import Run, splits_section

    paths = DataPaths(tmp_path / "data")
    _fake_run(paths)
    folder = paths.reports("splits", DATASET)
    mags = {s: {"median": 20.5, "p95": 22.5} for s in ("train", "val", "test")}
    for dataset_id, shown in (("another build", False), (_dataset_id(paths), True)):
        fsio.seal(folder / "splits.json", [folder / "splits.png"], {"r_psfmag": mags, "dataset_id": dataset_id})
        section = splits_section(Run(paths))
        table = next(b for b in section.blocks if isinstance(b, TableBlock))
        assert [row[5] for row in table.rows] == ([20.5] * 3 if shown else [None] * 3)
        assert any(isinstance(b, FigureBlock) for b in section.blocks) is shown
