"""The PDF report of a pipeline run, built only from what the stages wrote under the data folder.

One page per section (at most 8 pages): overview (data, method, stage timings), alignment, splits,
augmentation, tuning, metrics with baselines, explanations and difficulty. Each section shows the stage's
own summary (its Markdown summary, else its JSON summary) and the PNG figures it wrote under
``paths.reports(<stage>)``. A section whose stage has not run says "not run" instead of failing; a file that
exists but is damaged (invalid JSON) stops the report with one line naming it. The default report is skipped
when everything it is built from is unchanged since it was written (``paths.report_record``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, fsio
from ..config import REFERENCE_RESULT
from ..errors import CorruptFileError
from ..fsio import atomic_path, read_json
from ..paths import DataPaths

log = logging.getLogger("stargal")

PAGE_SIZE = (8.27, 11.69)  # A4 portrait, inches
MAX_PAGES = 8
TEXT_LINES = 40  # lines of summary text per page above the figures
WRAP = 100
FIGURES_PER_PAGE = 4


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    ran: bool = True


# ---------------------------------------------------------------- reading what the stages wrote


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _read_json(path: Path):
    """The JSON in ``path``, None when it does not exist; a damaged file is an error, not a stage "not run"."""
    try:
        return read_json(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except CorruptFileError as exc:
        raise CorruptFileError(
            f"{exc}: rerun the stage that wrote it (./run_scripts.sh --verify names it), then make_report.py"
        ) from None


def _latest(pointer: Path) -> str | None:
    text = _read_text(pointer)
    return text.strip() or None if text else None


def markdown_lines(text: str) -> list[str]:
    """Markdown as plain lines: images and link targets dropped, table rules and emphasis simplified."""
    lines = []
    for raw in text.splitlines():
        line = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", raw)  # images are shown as figures
        line = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line)
        line = re.sub(r"[*_`]{1,2}([^*_`]+)[*_`]{1,2}", r"\1", line)
        if re.fullmatch(r"\s*\|?\s*:?-{3,}.*", line):
            continue
        if line.strip().startswith("|"):  # a table row: cells separated by " | "
            line = " | ".join(cell.strip() for cell in line.strip().strip("|").split("|"))
        line = line.rstrip()
        line = re.sub(r"^#+\s*", "", line)
        if line or (lines and lines[-1]):
            lines.append(line)
    return lines


def json_lines(obj, prefix: str = "", limit: int = 60) -> list[str]:
    """A nested JSON value as 'key: value' lines (lists of numbers inline, long lists shortened)."""
    out: list[str] = []

    def fmt(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, list):
            if len(value) > 12:
                return "[" + ", ".join(fmt(v) for v in value[:10]) + f", ... ({len(value)} items)]"
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return str(value)

    def walk(value, key: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(f"{key}: {len(value)} entries")
        else:
            out.append(f"{key}: {fmt(value)}")

    walk(obj, prefix)
    if len(out) >= limit:
        out.append("...")
    return out


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png")) if folder.is_dir() else []


def _summary_lines(folder: Path) -> list[str]:
    """The stage's Markdown summary if it wrote one, else its JSON summaries."""
    if not folder.is_dir():
        return []
    for md in sorted(folder.rglob("*.md")):
        text = _read_text(md)
        if text:
            return markdown_lines(text)
    lines: list[str] = []
    for js in sorted(folder.rglob("*.json")):
        obj = _read_json(js)
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k != fsio.INTEGRITY_KEY}  # checksums: not for the reader
        if obj is not None:
            lines += [f"{js.relative_to(folder)}:"] + ["  " + s for s in json_lines(obj, limit=40)]
    return lines


def _stage_folder(paths: DataPaths, area: str, name: str | None) -> Path:
    """reports/<area>/<name> when the stage keeps one folder per dataset/model, else reports/<area>."""
    if name and paths.reports(area, name).is_dir():
        return paths.reports(area, name)
    return paths.reports(area)


def _area_section(title: str, paths: DataPaths, area: str, name: str | None, what: str) -> Section:
    folder = _stage_folder(paths, area, name)
    lines, figures = _summary_lines(folder), _pngs(folder)
    if not lines and not figures:
        return Section(title, [f"not run: no {what} outputs under {folder}"], ran=False)
    return Section(title, lines, figures)


# ---------------------------------------------------------------- sections


def overview_section(paths: DataPaths, dataset: dict | None, dataset_name: str | None, stages: dict | None) -> Section:
    """Page 1: data origin, dataset, method and the stage timings of the last run."""
    s = Section("stargal report")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    simulated = None if dataset is None else bool(dataset.get("simulated"))
    demo = bool(stages and stages.get("demo"))
    if simulated:
        origin = "the simulated demo run" if demo else "a run on the simulated sky"
        s.lines += [
            f"Generated from {origin} (built-in simulated SDSS sky, frames flagged SIMULAT = T).",
            "Metrics on the simulated sky are NOT results on real SDSS data.",
        ]
    elif simulated is False:
        s.lines.append("Generated from a run on real SDSS DR17 imaging.")
    else:
        s.lines.append("Data origin unknown: no prepared dataset (stage 02 not run).")
    s.lines += [f"Data folder: {paths.root}", f"Built: {now}", ""]
    if dataset:
        f = dataset.get("fields", {})
        s.lines += [
            f"Dataset {dataset_name}: rerun {dataset.get('rerun')}, run {dataset.get('run')}, camcol {dataset.get('camcol')}, "
            f"patch {dataset.get('patch_size')} px, bands {dataset.get('bands')}, edge policy {dataset.get('edge')}",
            f"  train fields {f.get('train')}, validation {f.get('val')}, test {f.get('test')}",
        ]
    s.lines += [
        "",
        "Method",
        "  00 download: SDSS frames (u g r i z, nanomaggies), irg previews and calibObj catalogs in the SAS layout,",
        "     verified against a manifest; or the simulated sky written in the same formats.",
        "  01 alignment: each band resampled onto the r-band pixel grid via the frames' WCS -> one [5, rows, cols]",
        "     cube per field; catalog objects (also those listed under neighbouring fields) converted to pixels.",
        "  02 preparation: object-centred patches, field-wise train/val/test splits with a leakage guard,",
        "     asinh normalisation fitted on the training split only.",
        "  04 augmentation: the augmentation experiment (flips/rotations and others, with and without).",
        "  03 model: CNN on raw patches (normalisation inside the model), early stopping on validation,",
        "     evaluation on the test field against baselines; tuning, explanations and difficulty analysis.",
    ]
    if stages and stages.get("stages"):
        s.lines += [
            "",
            "Pipeline stages of the last run (wall time, peak memory of the largest process / process tree):",
        ]
        for r in stages["stages"]:
            wall = f"{r['seconds']:8.1f} s" if r.get("status") in ("ok", "failed") else "        -"
            rss = "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f} MB"
            tree = "-" if r.get("peak_tree_mb") is None else f"{r['peak_tree_mb']:.0f} MB"
            s.lines.append(f"  {r['stage']:13s} {r['status']:8s} {wall}  {rss:>9s} / {tree:>9s}")
        opts = " ".join(" ".join(o) for o in stages.get("options", []))
        s.lines.append(
            f"  options: {'--demo ' if demo else ''}{'--small ' if stages.get('small') else ''}{opts}".rstrip()
        )
    return s


def splits_section(paths: DataPaths, dataset: dict | None, name: str | None) -> Section:
    """The split counts of dataset.json, then stage 02's split report."""
    section = _area_section("Splits", paths, "splits", name, "split")
    if dataset and dataset.get("counts"):
        counts = [
            f"  {split:5s} n={c.get('n')}, stars={c.get('stars')}, galaxies={c.get('galaxies')}"
            for split, c in dataset["counts"].items()
        ]
        norm = dataset.get("normalisation", {})
        extra = ["Dataset counts (dataset.json):", *counts]
        if norm:
            extra.append(f"  normalisation {norm.get('method')}: center {json_lines(norm.get('center'))[0][2:]}")
        if not section.ran:
            section = Section("Splits", [], [])
        section.lines = extra + [""] + section.lines
    return section


METRIC_COLUMNS = ("n", "accuracy", "mcc", "balanced_accuracy", "roc_auc", "star_purity", "star_completeness",
                  "galaxy_purity", "galaxy_completeness")  # fmt: skip
METRIC_HEADS = {"balanced_accuracy": "bal.acc", "roc_auc": "AUC", "star_purity": "star pur", "mcc": "MCC",
                "star_completeness": "star cmp", "galaxy_purity": "gal pur", "galaxy_completeness": "gal cmp"}  # fmt: skip
# Figures a page shows first (the rest are listed by name).
PREFERRED_FIGURES = ("learning_curves", "roc", "confusion_test", "examples", "difficulty", "tuning", "splits",
                     "band_offsets", "before_after")  # fmt: skip


def metrics_table(metrics: dict) -> list[str]:
    """Every block of metrics (a dict with an accuracy) as one row of a fixed-width table."""
    rows: list[tuple[str, dict]] = []

    def walk(value, key: str) -> None:
        if isinstance(value, dict):
            if "accuracy" in value and not isinstance(value["accuracy"], dict):
                rows.append((key, value))
                return
            for k, v in value.items():
                if k != "by_magnitude":  # per-magnitude rows are in the figures
                    walk(v, f"{key} {k}".strip())

    walk(metrics, "")
    if not rows:
        return []
    rows = [(k.removeprefix("baselines "), r) for k, r in rows]
    cols = [c for c in METRIC_COLUMNS if any(c in r for _, r in rows)]
    width = max(len(k) for k, _ in rows)

    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))

    head = f"{'':{width}s} " + " ".join(f"{METRIC_HEADS.get(c, c)[:8]:>8s}" for c in cols)
    return [head] + [f"{k:{width}s} " + " ".join(f"{cell(r.get(c)):>8s}" for c in cols) for k, r in rows]


def _order_figures(figures: list[Path]) -> list[Path]:
    def rank(p: Path) -> tuple[int, str]:
        stem = p.stem
        hits = [i for i, name in enumerate(PREFERRED_FIGURES) if stem == name or stem.startswith(name)]
        return (hits[0] if hits else len(PREFERRED_FIGURES), str(p))

    return sorted(figures, key=rank)


def metrics_section(paths: DataPaths, model_name: str | None) -> Section:
    """The latest model's settings and metrics table, with the reference project's result."""
    title = "Metrics and baselines"
    if not model_name:
        return Section(title, ["not run: no trained model (models/LATEST missing)"], ran=False)
    files = paths.model(model_name)
    metrics = _read_json(files.metrics)
    info = _read_json(files.json)
    lines = [f"Model {model_name}"]
    if info:
        lines += [
            "  " + s
            for s in json_lines(
                {k: info[k] for k in ("architecture", "hyperparameters", "threshold", "seed") if k in info}, limit=20
            )
        ]
    if metrics:
        table = metrics_table(metrics)
        rest = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        lines += ["", "Metrics (metrics.json; baselines: random guess and majority class):", *table, ""]
        lines += ["  " + s for s in json_lines(rest, limit=10)] if table else json_lines(metrics, limit=45)
    else:
        lines.append("not run: no metrics.json (the model was not evaluated)")
    ref = ", ".join(f"{k} {v}" for k, v in REFERENCE_RESULT.items())
    lines += ["", f"Reference project (real SDSS test field 301/8162/6/80): {ref}."]
    figures = _pngs(_stage_folder(paths, "training", model_name))
    return Section(title, lines, figures, ran=metrics is not None)


def tuning_section(paths: DataPaths, dataset_name: str | None) -> Section:
    """The study tuned on the current dataset (else the most recent one): its trials table and plot."""
    root = paths.tuning_root
    names = sorted(d.name for d in root.iterdir()) if root.is_dir() else []
    studies = [n for n in names if paths.best_config(n).is_file()]
    if not studies:
        return Section("Tuning", [f"not run: no tuning study under {root}"], ran=False)
    for_dataset = [n for n in studies if (_read_json(paths.best_config(n)) or {}).get("dataset") == dataset_name]
    study = max(for_dataset or studies, key=lambda n: paths.best_config(n).stat().st_mtime)
    text = _read_text(paths.trials_md(study))
    lines = markdown_lines(text) if text else json_lines(_read_json(paths.best_config(study)) or {})
    return Section("Tuning", [f"Study {study}:", *lines], _pngs(paths.reports("tuning", study)))


def collect_sections(paths: DataPaths) -> list[Section]:
    """Every page of the report, from what the stages wrote."""
    dataset_name = _latest(paths.latest_dataset)
    model_name = _latest(paths.latest_model)
    dataset = _read_json(paths.dataset_json(dataset_name)) if dataset_name else None
    stages = _read_json(paths.pipeline_record)
    explain = _area_section("Explanations and difficulty", paths, "explain", model_name, "explanation")
    difficulty = _area_section("Difficulty", paths, "difficulty", model_name, "difficulty")
    if difficulty.ran:  # the discussion first; attribution maps (Integrated Gradients, Grad-CAM) after it
        explain.lines = difficulty.lines + ([] if not explain.ran else ["", "Explanations:", *explain.lines])
        explain.figures = difficulty.figures + ([] if not explain.ran else explain.figures)
        explain.ran = True
    sections = [
        overview_section(paths, dataset, dataset_name, stages),
        _area_section("Alignment", paths, "alignment", None, "alignment"),
        splits_section(paths, dataset, dataset_name),
        _area_section("Augmentation experiment", paths, "augmentation", dataset_name, "augmentation"),
        tuning_section(paths, dataset_name),
        metrics_section(paths, model_name),
        explain,
    ]
    assert len(sections) <= MAX_PAGES
    return sections


# ---------------------------------------------------------------- drawing


def _wrapped(lines: list[str], limit: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        indent = len(line) - len(line.lstrip())
        out += textwrap.wrap(line, WRAP, subsequent_indent=" " * (indent + 2)) or [""]
    while out and not out[-1]:
        out.pop()
    if len(out) > limit:
        out = out[: limit - 1] + [f"... ({len(out) - limit + 1} more lines in the stage's own summary)"]
    return out


def _draw_page(pdf, section: Section, page: int) -> None:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=PAGE_SIZE)
    fig.text(0.06, 0.965, section.title, fontsize=16, weight="bold", va="top")
    fig.text(0.94, 0.965, f"page {page}", fontsize=8, ha="right", va="top", color="0.4")
    ordered = _order_figures(section.figures) if section.title != "Explanations and difficulty" else section.figures
    figures = ordered[:FIGURES_PER_PAGE]
    text_limit = TEXT_LINES if figures else TEXT_LINES * 2
    lines = _wrapped(section.lines, text_limit)
    if len(ordered) > FIGURES_PER_PAGE:
        rest = ", ".join(p.name for p in ordered[FIGURES_PER_PAGE:])
        lines += _wrapped([f"Further figures in the data folder: {rest}"], 3)
    fig.text(0.06, 0.93, "\n".join(lines), fontsize=7.5, family="monospace", va="top", linespacing=1.25)
    if figures:
        top = 0.93 - 0.0132 * (len(lines) + 1)
        columns = 1 if len(figures) <= 2 else 2
        rows = -(-len(figures) // columns)
        height, width = (top - 0.03) / rows, 0.9 / columns
        for k, png in enumerate(figures):
            try:
                image = plt.imread(png)
            except (OSError, ValueError, SyntaxError) as exc:
                log.warning("report: cannot read %s (%s)", png, exc)
                continue
            row, col = divmod(k, columns)
            ax = fig.add_axes((0.05 + col * width, top - (row + 1) * height + 0.01, width - 0.01, height - 0.03))
            ax.imshow(image)
            ax.set_axis_off()
            ax.set_title(png.name, fontsize=7, color="0.3")
    pdf.savefig(fig)
    plt.close(fig)


def build_report(paths: DataPaths, output: Path | None = None) -> dict:
    """Write the PDF report; return {"path", "pages", "sections": {title: ran}}."""
    from matplotlib.backends.backend_pdf import PdfPages

    from ..plots import use_agg

    use_agg()

    default = output is None
    output = Path(output) if output else paths.report_pdf
    settings = {"inputs": report_inputs(paths), "stargal_version": __version__}
    previous = fsio.previous_record(paths.report_record, [output], settings) if default else None
    if previous is not None:
        log.info("report is current: nothing it is built from changed since %s was written", output)
        return {**previous["result"], "path": output, "skipped": True}
    sections = collect_sections(paths)
    with atomic_path(output) as tmp, PdfPages(tmp) as pdf:
        for page, section in enumerate(sections, start=1):
            _draw_page(pdf, section, page)
        info = pdf.infodict()
        info["Title"] = "stargal report"
        info["Subject"] = json.dumps({s.title: s.ran for s in sections})
    result = {"pages": len(sections), "sections": {s.title: s.ran for s in sections}}
    if default:
        fsio.seal(paths.report_record, [output], {"settings": settings, "result": result})
    return {**result, "path": output, "skipped": False}


def report_inputs(paths: DataPaths) -> list[list]:
    """(path, size, modification time) of every file the report can be built from: what decides a rerun."""
    skip = {paths.report_pdf, paths.report_record}
    found: list[Path] = [paths.latest_dataset, paths.latest_model]
    for name, root in (
        (_latest(paths.latest_dataset), paths.datasets_root),
        (_latest(paths.latest_model), paths.models_root),
    ):
        if name:
            found += [root / name / f for f in ("dataset.json", "model.json", "metrics.json")]
    for folder in (paths.reports(), paths.tuning_root):
        if folder.is_dir():
            found += [p for p in folder.rglob("*") if p.suffix in (".json", ".md", ".png", ".csv")]
    out = []
    for p in sorted(set(found) - skip):
        if fsio.TEMPORARY_RE.match(p.name):
            continue
        try:
            st = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        out.append([str(p.relative_to(paths.root)), st.st_size, st.st_mtime_ns])
    return out
