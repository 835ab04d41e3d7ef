"""The PDF report of a pipeline run, built only from what the stages wrote under the data folder.

It reads like a short paper (``stargal.typeset`` sets it): a first page with the run's headline (what was
run, on which sky, and the test-set table of our model against the reference models and the majority and
random baselines), then one section per step of the pipeline in its order: data, alignment, preparation
and splits, augmentation experiment, model and training, tuning, evaluation, difficulty analysis,
explanations, real-sky evaluation, run time and memory. A step whose outputs are missing gets a one-line
"not run" instead of its section; an output that exists but cannot be read is named as unreadable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import re
import shlex
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path

from .. import __version__, fsio, integrity
from ..config import REFERENCE_RESULT
from ..errors import CorruptFileError, StargalError
from ..fsio import atomic_path, read_json
from ..metrics import defined
from ..paths import DataPaths, ModelFiles
from ..typeset import Bullets, Code, Document, FigureBlock, Para, Section, TableBlock, render

log = logging.getLogger("stargal")

MAX_PAGES = 10
# raised when the report says something differently for the same inputs (a corrected count, a label): a report kept
# as current from the same inputs would keep the earlier, wrong words; 2: distinct catalog objects, sealed figures
REPORT_FORMAT = 2
ARCHITECTURE_NAMES = {
    "stargal": "stargal CNN (ours)",
    "reference_regularised": "reference regularised CNN",
    "reference_base": "reference base CNN",
}
AUGMENT_NAMES = {"none": "none", "d4": "D4 symmetries", None: "none"}
HEADLINE_METRICS = ("accuracy", "mcc", "roc_auc", "star_purity", "star_completeness")
HEADLINE_HEADS = ("accuracy", "MCC", "ROC AUC", "star purity", "star completeness")


class Unreadable(Exception):
    """An output file that exists but cannot be read."""


# ---------------------------------------------------------------- reading what the stages wrote


def _json(path: Path):
    """The JSON in ``path``, None when absent; Unreadable when present but not JSON."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return None
    except CorruptFileError:
        raise Unreadable(f"{path}: unreadable (not valid JSON)") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{path}: unreadable ({exc.__class__.__name__})") from None


def _json_or_none(path: Path):
    """The JSON of a file the report is built from, None when absent; a damaged one stops the report with one
    line naming it (its section must not pretend the stage did not run)."""
    try:
        return _json(path)
    except Unreadable as exc:
        raise CorruptFileError(
            f"{exc}: rerun the stage that wrote it (./run_scripts.sh --verify names it), then make_report.py"
        ) from None


def _pipeline_record(path: Path) -> dict | None:
    """run_scripts.sh's stage table, or None (with a warning) where it is unreadable or not of the runner's shape:
    it only feeds the run-time section, which then says it is missing, so it must not stop the report."""
    try:
        record = _json(path)
    except Unreadable as exc:
        log.warning("report: %s; the run-time section is left out (./run_scripts.sh writes it again)", exc)
        return None
    if record is not None and not _runner_shaped(record):
        log.warning("report: %s: not a stage table of run_scripts.sh; the run-time section is left out", path)
        return None
    return record


def _runner_shaped(record) -> bool:
    """Whether a stage table has the fields and types the report reads (``pipeline._write_record``'s)."""
    if not isinstance(record, dict) or not isinstance(record.get("stages"), list):
        return False
    number = (int, float, type(None))
    options = record.get("options", [])
    return (
        all(
            isinstance(s, dict)
            and all(isinstance(s.get(k), number) for k in ("seconds", "peak_rss_mb", "peak_tree_mb"))
            for s in record["stages"]
        )
        and isinstance(options, list)
        and all(isinstance(o, list) and all(isinstance(v, str) for v in o) for o in options)
    )


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _latest(pointer: Path) -> str | None:
    text = _text(pointer)
    return (text.strip() or None) if text else None


def _png(folder: Path | None, name: str) -> Path | None:
    if folder is None:
        return None
    p = folder / name
    return p if p.is_file() else None


_FENCE = re.compile(r"`{3,}|~{3,}")


def _fenced(lines: Iterable[str]) -> Iterator[str | Code]:
    """The lines of Markdown text, each fenced code block (```json ... ```) as one Code block in their place: its
    lines are shown as they are (indentation kept), not read as Markdown, and the fences are not shown."""
    fence: str | None = None
    code: list[str] = []
    for raw in lines:
        line = raw.strip()
        if fence is None:
            opening = _FENCE.match(line)
            if opening:
                fence, code = opening.group(), []
            else:
                yield raw
        elif set(line) == {fence[0]} and len(line) >= len(fence):  # the closing fence: as long as the opening
            yield _code_block(code)
            fence = None
        else:
            code.append(raw)
    if fence is not None:  # never closed: the block runs to the end of the text, as in CommonMark
        yield _code_block(code)


def _code_block(lines: list[str]) -> Code:
    """The lines of a code fence, their common indentation removed (the fence's own, not the code's)."""
    return Code(textwrap.dedent("\n".join(lines)).strip("\n"))


def markdown_blocks(text: str, caption: str = "") -> list:
    """A stage's Markdown summary as report blocks: paragraphs, bullet lists, tables, code blocks, images (titles
    dropped)."""
    blocks: list = []
    para: list[str] = []
    bullets: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        nonlocal para, bullets, table
        if para:
            blocks.append(Para(" ".join(para)))
        if bullets:
            blocks.append(Bullets(bullets))
        if len(table) >= 1:
            blocks.append(TableBlock(table[0], table[1:], caption))
        para, bullets, table = [], [], []

    for raw in _fenced(text.splitlines()):
        if isinstance(raw, Code):
            flush()
            blocks.append(raw)
            continue
        line = raw.strip()
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]*)\)", line)
        if not line or line.startswith("#"):
            flush()
        elif image:
            flush()
            blocks.append(FigureBlock([Path(image.group(2))], image.group(1)))
        elif line.startswith("|"):
            if para or bullets:
                flush()
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                table.append([re.sub(r"\*\*(.+?)\*\*", r"\1", c) for c in cells])
        elif line.startswith(("- ", "* ")):
            if para or table:
                flush()
            bullets.append(line[2:])
        elif bullets and raw.startswith("  "):
            bullets[-1] += " " + line
        else:
            if bullets or table:
                flush()
            para.append(line)
    flush()
    return blocks


# ---------------------------------------------------------------- the run's identity


def report_dataset(paths: DataPaths) -> str | None:
    """The name of the dataset the report shows (``Run``'s choice, without its checks): the latest model's own when
    it names one that is there, else the latest one; what the field options of make_report.py must confirm."""
    model = _latest(paths.latest_model)
    try:
        trained_on = (_json(paths.model(model).json) or {}).get("dataset") if model else None
    except (Unreadable, AttributeError):
        trained_on = None  # Run refuses it in one line
    if isinstance(trained_on, str) and trained_on:
        return trained_on if paths.dataset_json(trained_on).exists() else None
    return _latest(paths.latest_dataset)


class Run:
    """What the report is about: the latest dataset and model, the run record, the sky."""

    def __init__(self, paths: DataPaths):
        self.paths = paths
        self.model_name = _latest(paths.latest_model)
        if paths.latest_model.exists() and not (self.model_name and paths.model(self.model_name).json.exists()):
            # a report without the model's sections would look like a run that never trained
            raise StargalError(
                f"{paths.latest_model}: names no model of {paths.models_root} ({self.model_name or 'empty'}); "
                "run 03_model.py, which rewrites it, or remove it"
            )
        self.model = self.metrics = None
        if self.model_name and paths.model(self.model_name).json.exists():
            # its seal first: the numbers shown are those training wrote, in files of one run
            self.model = integrity.require_model(paths.model_dir(self.model_name))
            self.metrics = _json_or_none(paths.model(self.model_name).metrics)
        self.dataset_name = self._dataset_name(_latest(paths.latest_dataset))
        self.dataset = integrity.require_dataset(paths, self.dataset_name) if self.dataset_name else None
        # content identities: a dataset rebuilt under its name is another dataset, and a model retrained under its
        # name another model, for whatever was made from the earlier one
        self.dataset_id = fsio.seal_digest(self.dataset) if self.dataset else None
        self.model_id = fsio.seal_digest(self.model) if self.model else None
        trained_on = ((self.model or {}).get("inputs") or {}).get("dataset")
        self.model_stale = bool(self.model and self.dataset and trained_on != self.dataset_id)
        if self.model_stale:
            log.warning("report: %s", self.stale_model_text())
        self.record = _pipeline_record(paths.pipeline_record)
        self.manifest = _json_or_none(paths.manifest)
        self.alignment = _json_or_none(paths.reports("alignment", "summary.json"))
        self.alignment_stale = self._alignment_damage() or self._alignment_mismatch()
        if self.alignment_stale:
            log.warning("report: the alignment summary %s", self.alignment_stale)

    def _alignment_damage(self) -> str | None:
        """Why the alignment summary is not stage 01's intact set (summary.json sealing summary.md and its figures:
        a stopped rerun leaves new figures beside the old summary, an edit changes its counts), else None."""
        if not isinstance(self.alignment, dict):
            return None
        check = fsio.check_seal(self.paths.reports("alignment", "summary.json"))
        if check.ok:
            return None
        a = self.alignment
        fields = " ".join(str(f.get("field")) for f in a.get("fields", []) if isinstance(f, dict))
        return (
            f"is damaged or incomplete ({check.describe(1)}); 01_alignment.py --run {a.get('run')} --camcol "
            f"{a.get('camcol')} --fields {fields} writes it again"
        )

    def alignment_figure(self, name: str) -> Path | None:
        """A figure of the alignment summary's sealed set (one outside it is another run's), else None."""
        folder = self.paths.reports("alignment")
        return _png(folder, name) if name in _sealed_names(self.alignment) else None

    def _alignment_mismatch(self) -> str | None:
        """Why the alignment summary does not describe the dataset's fields (stage 01 last run on others, e.g. one
        field realigned), else None: its counts must not stand beside the dataset's fields as theirs."""
        a, d = self.alignment, self.dataset
        if not a or not d:
            return None
        described = {(a.get("rerun"), a.get("run"), a.get("camcol"), f.get("field")) for f in a.get("fields", [])}
        wanted = sorted({f for fields in (d.get("fields") or {}).values() for f in fields})
        missing = [f for f in wanted if (d.get("rerun"), d.get("run"), d.get("camcol"), f) not in described]
        if not missing:
            return None
        return (
            f"describes fields {' '.join(str(f.get('field')) for f in a.get('fields', []))} of run {a.get('run')} "
            f"camcol {a.get('camcol')} (stage 01's last run), not the dataset's {' '.join(map(str, missing))}; "
            f"01_alignment.py --run {d.get('run')} --camcol {d.get('camcol')} --fields {' '.join(map(str, wanted))} "
            "writes it for them"
        )

    def _dataset_name(self, latest: str | None) -> str | None:
        """The dataset the report shows: the latest model's own (a report must not pair one dataset's splits
        with another's model), else the latest one; None when the model's dataset is gone."""
        trained_on = (self.model or {}).get("dataset")
        if not trained_on:
            return latest
        if latest and latest != trained_on:
            log.warning(
                "report: the latest dataset %s is not the one the latest model %s was trained on (%s): the report "
                "shows the model's; train a model on %s (03_model.py) to report that one",
                latest, self.model_name, trained_on, latest,
            )  # fmt: skip
        if not self.paths.dataset_json(trained_on).exists():
            log.warning("report: %s, the latest model's dataset, is no longer there: no dataset shown", trained_on)
            return None
        return trained_on

    def stale_model_text(self) -> str:
        """What the report says in place of the latest model's numbers when it was trained on an earlier build of
        its dataset."""
        return (
            f"the latest model {self.model_name} was trained on an earlier build of dataset {self.dataset_name} (its "
            f"content changed since), so its numbers are left out: retrain it with 03_model.py --dataset "
            f"{self.dataset_name}"
        )

    def current_record(self, record: Path, files: list[Path], command: str) -> tuple[dict | None, str]:
        """(record, "") of an output set made from the latest model (and the current content of the dataset it
        names); (None, why) when it is missing ("not run ..."), broken or made from another model ("stale: ...")."""
        if not record.exists():
            return None, f"not run (no {record.name}: {command})"
        if self.model_stale:  # made from a model whose own numbers the report leaves out
            return None, (
                f"stale: the latest model {self.model_name} was trained on an earlier build of dataset "
                f"{self.dataset_name}; retrain it (03_model.py --dataset {self.dataset_name}), then rerun {command}"
            )
        check = fsio.check_seal(record, files)
        if not check.ok:
            return None, f"stale: {check.describe(1)}; rerun {command}"
        settings = check.record.get("settings") or {}
        if self.model_id is None or settings.get("model_id") != self.model_id:
            return None, f"stale: made from an earlier model named {self.model_name}; rerun {command}"
        dataset = settings.get("dataset")
        if settings.get("dataset_id") != integrity.intact_dataset_id(self.paths, dataset):
            return None, f"stale: made from an earlier build of dataset {dataset}; rerun {command}"
        return check.record, ""

    @functools.cached_property
    def training_figures(self) -> Path | None:
        """The folder of the latest model's figures when they show that model (its figures.json seals them with
        its identity), else None: figures of an earlier model of the name are never shown as this one's."""
        if not self.model_name or self.model_stale:
            return None
        from .training import figures_current

        folder = self.paths.reports("training", self.model_name)
        if figures_current(self.paths, self.model_name, self.model):
            return folder
        if self.figures_left_out:
            log.warning("report: %s", self.figures_left_out)
        return None

    @functools.cached_property
    def figures_left_out(self) -> str | None:
        """Why the latest model's figures are left out when some are there but are not its intact set (the report
        says so in their place, not only on the console), else None."""
        from .training import figures_current

        if not self.model_name or self.model_stale:
            return None
        folder = self.paths.reports("training", self.model_name)
        if not any(folder.glob("*.png")):
            return None  # drawn by no run (03_model.py --no-plots): nothing left out
        if figures_current(self.paths, self.model_name, self.model):
            return None
        redo = integrity.model_command(self.paths, self.model_name)
        return (
            f"the figures in {folder} are not the latest model's (missing, broken or an earlier model's): left out; "
            f"{redo} draws them again"
        )

    @property
    def simulated(self) -> bool | None:
        for source in (self.dataset, self.model):
            if source and source.get("simulated") is not None:
                return bool(source["simulated"])
        fields = (self.alignment or {}).get("fields") or []
        return bool(fields[0].get("simulated")) if fields else None

    def simulator_version(self) -> int | None:
        for entry in ((self.manifest or {}).get("files") or {}).values():
            m = re.match(r"simulated:v(\d+)", str(entry.get("url", "")))
            if m:
                return int(m.group(1))
        return None

    def sky(self) -> str:
        if self.simulated:
            version = self.simulator_version()
            v = f", simulator version {version}" if version else ""
            return f"the built-in simulated SDSS sky{v} (frames flagged SIMULAT = T): metrics are not SDSS results"
        if self.simulated is False:
            return "real SDSS DR17 imaging"
        return "unknown (no prepared dataset)"

    def command(self) -> str:
        rec = self.record or {}
        if not rec:
            return "stages run one by one (no run_scripts.sh record)"
        flags = " ".join(f for f, on in (("--demo", rec.get("demo")), ("--small", rec.get("small"))) if on)
        options = " ".join(" ".join(o) for o in rec.get("options", []))
        finished = str(rec.get("finished") or "")[:16].replace("T", " ")
        text = f"`run_scripts.sh {flags}`".replace(" `", "`") if flags else "`run_scripts.sh`"
        text = f"{text} with stage options `{options}`" + (f", finished {finished} UTC" if finished else "")
        if self._model_after_run(rec):  # its options and times are not the model's: say so, not credit it
            text += f"; the latest model, {self.model_name}, was trained after that run, outside it"
        return text

    def _model_after_run(self, rec: dict) -> bool:
        """Whether the latest model was made after the runner's last run finished (03_model.py run by hand)."""
        try:
            created = dt.datetime.fromisoformat(str((self.model or {}).get("created")))
            finished = dt.datetime.fromisoformat(str(rec.get("finished")))
        except ValueError:
            return False
        return created.tzinfo is not None and finished.tzinfo is not None and created > finished

    def fields(self) -> str:
        """The dataset's fields per split, and the sky regions that moved objects to test or out of train/val."""
        from .. import splits

        d = self.dataset
        if not d:
            return "\u2013"
        f = d.get("fields", {})

        def names(key: str) -> str:
            return " ".join(map(str, f.get(key, []))) or "\u2013"

        test = names("test")
        if d.get("test_regions"):
            region = splits.regions_text(d["test_regions"])
            test = f"{test} and {region}" if f.get("test") else f"from {region}"
        text = (
            f"rerun {d.get('rerun')}, run {d.get('run')}, camcol {d.get('camcol')}: training {names('train')}, "
            f"validation {names('val')}, test {test}"
        )
        if d.get("exclude_regions"):
            text += f"; excluded from training and validation: {splits.regions_text(d['exclude_regions'])}"
        return text

    def models_of_dataset(self) -> list[tuple[str, dict, dict]]:
        """(name, model.json, metrics.json) of every evaluated model trained on the current content of the dataset
        shown (model.json's inputs.dataset, not its dataset name); the latest model first, then ours, then the
        reference models."""
        root = self.paths.models_root
        found = []
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            check = fsio.check_seal(folder / "model.json", [folder / "model.keras"]) if folder.is_dir() else None
            if check is None or not check.ok:
                if check is not None and check.record is not None:
                    log.warning("report: %s left out (%s)", folder.name, check.describe(1))
                continue
            meta = check.record
            metrics = _json_or_none(folder / "metrics.json")
            trained_on = (meta.get("inputs") or {}).get("dataset")  # the content, not the name
            if metrics and "test" in metrics and self.dataset_id and trained_on == self.dataset_id:
                found.append((folder.name, meta, metrics))
        order = {"stargal": 0, "reference_regularised": 1, "reference_base": 2}
        found.sort(key=lambda m: (order.get(m[1].get("architecture"), 3), m[0] != self.model_name, m[0]))
        return found


# ---------------------------------------------------------------- the headline


def _model_label(name: str, meta: dict, latest: str | None, several: bool) -> str:
    label = ARCHITECTURE_NAMES.get(meta.get("architecture"), str(meta.get("architecture")))
    if "ensemble" in meta:
        label += f", ensemble of seeds {_seeds(meta)}"
    elif several:
        label += f", seed {meta.get('seed')}"
    return label + (" [latest]" if several and name == latest else "")


def _seeds(meta: dict) -> str:
    return ", ".join(str(m.get("seed")) for m in meta.get("ensemble", []))


def _training_rows(m: dict) -> list[list]:
    """Epochs, time and seed of a trained model; of each member for an ensemble (03_model.py --ensemble)."""
    if "ensemble" not in m:
        return [
            ["epochs run (best)", f"{m.get('epochs_run')} of at most {m.get('epochs')} ({m.get('best_epoch')})"],
            ["training time", f"{m.get('train_seconds', 0):.0f} s ({m.get('seconds_per_epoch', 0):.1f} s per epoch)"],
            ["seed", str(m.get("seed"))],
        ]
    members = m["ensemble"]
    return [
        ["epochs run (best)", ", ".join(f"{e.get('epochs_run')} ({e.get('best_epoch')})" for e in members)],
        ["training time", f"{sum(e.get('train_seconds') or 0 for e in members):.0f} s for {len(members)} networks"],
        ["seed", f"{_seeds(m)} (an ensemble: the mean of their p(star))"],
    ]


def _augmentation(meta: dict) -> str:
    aug = AUGMENT_NAMES.get(meta.get("augment"), str(meta.get("augment")))
    return aug + (" + test-time" if meta.get("tta") else "")


def _baseline_rows(metrics: dict) -> list[list]:
    test = metrics.get("test", {})
    n, stars = test.get("n"), test.get("stars")
    star_frac = stars / n if n and stars is not None else None
    rows = []
    base = (metrics.get("baselines") or {}).get("test") or {}
    if "majority" in base:
        m = base["majority"]
        star = m.get("class") == "star"
        rows.append(["majority class baseline", f"always {m.get('class', '?')}", m.get("accuracy"),
                     defined(m, "mcc", test), defined(m, "roc_auc", test), star_frac if star else None,
                     1.0 if star else 0.0])  # fmt: skip
    if "random" in base:
        m = base["random"]
        rows.append(["random baseline", "p(star) = training star fraction", m.get("accuracy"),
                     defined(m, "mcc", test), defined(m, "roc_auc", test), star_frac, m.get("star_fraction")])  # fmt: skip
    return rows


def _mcc_words(test: dict, bold: bool = False) -> str:
    """The words "MCC 0.812" of a test split's metrics, or what stands in for it when the split holds one class."""
    mcc = defined(test, "mcc")
    if mcc is None:
        return "no MCC (undefined: the test split holds one class)"
    return f"MCC **{mcc:.3f}**" if bold else f"MCC {mcc:.3f}"


def headline(run: Run) -> list:
    """The first page's lead paragraph and Table 1 (test set: our model, reference models, baselines)."""
    models = run.models_of_dataset()
    stale = [Para(f"Stale: {run.stale_model_text()}.", "lead")] if run.model_stale else []
    if not models:
        if stale:
            return stale
        return [Para("No evaluated model yet: the headline table appears once stage 03 has run.", "lead")]
    several = len({m[1].get("architecture") for m in models}) < len(models)
    labels = [_model_label(name, meta, run.model_name, several) for name, meta, _ in models]
    # two models alike in architecture and seed (one trained with a tuned configuration, say): name them apart
    alike = [label.removesuffix(" [latest]") for label in labels]
    labels = [
        label.replace(base, f"{base} ({name})", 1) if alike.count(base) > 1 else label
        for label, base, (name, _, _) in zip(labels, alike, models, strict=True)
    ]
    rows = [
        [label, _augmentation(meta)] + [defined(metrics["test"], k) for k in HEADLINE_METRICS]
        for label, (_, meta, metrics) in zip(labels, models, strict=True)
    ]
    bold = [0]  # ours: the latest stargal model (models are listed ours first)
    metrics = models[0][2]
    rows += _baseline_rows(metrics)
    test = metrics["test"]
    ours = test
    stars = test.get("stars", 0) / test["n"] if test.get("n") else 0
    text = (
        f"On the {_test_set_words(run.dataset or {}, test.get('n'), f'{100 * stars:.0f} % stars')}, "
        f"{'our network' if models[0][1].get('architecture') == 'stargal' else 'the ' + _model_label(*models[0][:2], None, False)} "
        f"reaches accuracy **{ours['accuracy']:.3f}** and {_mcc_words(ours, bold=True)} "
    )
    majority = ((metrics.get("baselines") or {}).get("test") or {}).get("majority")
    if majority:
        text += f"against {majority['accuracy']:.3f} for always answering \u201c{majority.get('class')}\u201d"
    refs = [m for m in models if m[1].get("architecture", "").startswith("reference")]
    if refs:
        r = refs[0][2]["test"]
        text += (
            f", and the course project's {refs[0][1]['architecture'].split('_')[1]} network trained by this code on "
            f"the same patches reaches {r['accuracy']:.3f} and {_mcc_words(r)}"
        )
    else:
        text += " (no reference model was trained in this run: `03_model.py --architecture reference_regularised`)"
    text += "."
    if run.simulated:
        text += " These numbers are measured on the simulated sky, not on SDSS data."
    ref = REFERENCE_RESULT
    note = (
        f"Test split only; threshold chosen on validation data. The course project reported accuracy "
        f"{ref['accuracy']:.3f} and MCC {ref['mcc']:.3f} on the real SDSS test field 301/8162/6/80"
        + (" (real data: not comparable with simulated-sky numbers)." if run.simulated else ".")
    )
    table = TableBlock(
        ["model", "augmentation", *HEADLINE_HEADS],
        rows,
        "Test-set results of every model trained on this run's dataset, and the baselines.",
        bold_rows=bold,
        note=note,
    )
    return [*stale, Para(text, "lead"), table]


# ---------------------------------------------------------------- sections


def _test_set_words(d: dict, n, stars: str) -> str:
    """``test field (81; 60 catalogued objects, 33 % stars)``, or with a --test-region ``test set (147 catalogued
    objects, 48 % stars: 82 of test field 81 and 65 of training field 83 in the region RA .. to .., Dec .. to ..)``
    (dataset record ``d``, ``n`` objects)."""
    from .. import splits

    composition = splits.composition_of_test_set(d)
    if composition:
        return f"test set ({n} catalogued objects, {stars}: {composition})"
    fields = (d.get("fields") or {}).get("test") or []
    names = " ".join(map(str, fields)) or "?"
    return f"test field{'s' if len(fields) > 1 else ''} ({names}; {n} catalogued objects, {stars})"


def _assignment_words(d: dict) -> str:
    """How stage 02 made the splits of dataset record ``d``, for the splits section: the fields of each split, what a
    --test-region moved to the test set and what an --exclude-region removed."""
    from .. import splits

    f = d.get("fields") or {}
    lists = (
        f"training {' '.join(map(str, f.get('train', [])))}, validation {' '.join(map(str, f.get('val', [])))}, "
        + (f"test {' '.join(map(str, f['test']))}" if f.get("test") else "no test field")
    )
    regions = d.get("test_regions") or []
    composition = splits.composition_of_test_set(d, "it" if len(regions) == 1 else "them")
    excluded = splits.exclusion_text(d)
    if not composition and not excluded:
        return f"assigns whole fields to the splits ({lists})"
    words = f"assigns fields to the splits ({lists})"
    if composition:
        n = ((d.get("counts") or {}).get("test") or {}).get("n")
        words += (
            f", moves every object in {splits.regions_text(regions)} to the test set, whatever its field "
            f"(the {n} test objects: {composition})"
        )
    if excluded:
        words += f", removes the {excluded}"
    return words


def _not_run(title: str, why: str) -> Section:
    return Section(title, ran=False, status=f"not run ({why})")


def data_section(run: Run) -> Section:
    title = "Data"
    files = (run.manifest or {}).get("files") or {}
    if not files and not run.alignment:
        return _not_run(title, "no download manifest: 00_download.py")
    blocks: list = []
    if files:
        size = sum(int(e.get("size", 0)) for e in files.values()) / 1e6
        frames = sum(1 for k in files if "/frame-" in k and k.endswith(".fits.bz2"))
        catalogs = sum(1 for k in files if "calibObj" in k)
        source = "rendered by the simulator" if run.simulated else "fetched from the SDSS Science Archive Server"
        blocks.append(
            Para(
                f"Stage 00 wrote {len(files)} files ({size:.1f} MB), {source}: {frames} frames (u g r i z, in "
                f"nanomaggies), {catalogs} calibObj sweep catalogs and irg previews, each verified and recorded in "
                "`sas/manifest.json`. The sky: " + run.sky() + "."
            )
        )
    if run.alignment and not run.alignment_stale:
        f = run.alignment.get("fields", [])
        n, s = _catalog_totals(run.alignment)
        blocks.append(
            Para(
                f"The catalogs list {n:,} objects in the {len(f)} fields ({s:,} stars, {n - s:,} galaxies; star "
                f"fraction {s / n if n else 0:.3f}). Labels are SDSS's photometric type (OBJC_TYPE): a star when "
                "the PSF and model magnitudes agree within 0.145 mag."
            )
        )
    if run.dataset:
        blocks.append(Para(f"Fields: {run.fields()}."))
    return Section(title, blocks)


def _catalog_totals(summary: dict) -> tuple[int, int]:
    """(objects, stars) of the alignment summary's fields, each object once: stage 01's distinct totals, since a
    field's count includes the objects listed under a neighbour too (their sum counts those twice); the sum only
    for a summary without totals."""
    totals = summary.get("totals") or {}
    if isinstance(totals.get("objects"), int) and isinstance(totals.get("stars"), int):
        return totals["objects"], totals["stars"]
    fields = summary.get("fields", [])
    # None: a field aligned without a catalog
    return sum(x.get("objects") or 0 for x in fields), sum(x.get("stars") or 0 for x in fields)


def alignment_section(run: Run) -> Section:
    title = "Alignment"
    s = run.alignment
    if not s:
        return _not_run(title, "no alignment summary: 01_alignment.py")
    if run.alignment_stale:
        return Section(title, ran=False, status=f"stale: the summary {run.alignment_stale}")
    bands = [b for b in "ugiz" if any(b in f.get("offsets", {}) for f in s.get("fields", []))]
    rows = []
    for f in s.get("fields", []):
        off = f.get("offsets", {})
        rows.append(
            [f.get("field"), f.get("objects"), f.get("stars"), f.get("galaxies"), f.get("listed_under_neighbours")]
            + [f"{off[b]['dx']:+.2f}, {off[b]['dy']:+.2f}" if b in off else None for b in bands]
        )
    blocks: list = [
        Para(
            f"Each band is resampled onto the {s.get('ref_band', 'r')}-band pixel grid through the frames' WCS, "
            "giving one cube [5, rows, columns] per field; catalog positions are converted to pixels of that grid, "
            "including objects listed under a neighbouring field that fall inside it."
        ),
        TableBlock(
            ["field", "objects", "stars", "galaxies", "from neighbours", *[f"{b} offset dx, dy (px)" for b in bands]],
            rows,
            f"Objects and band offsets per field (band pixel minus {s.get('ref_band', 'r')}-band pixel at the frame "
            "centre).",
        ),
    ]
    pair = [p for p in (run.alignment_figure("band_offsets.png"), run.alignment_figure("before_after.png")) if p]
    if pair:
        blocks.append(
            FigureBlock(
                pair,
                "Left: offset of each band from the r-band grid, per field. Right: a bright source before and after "
                "alignment. Look for offsets that repeat from field to field (the camera's fixed layout) and for "
                "colour fringes that vanish after alignment.",
            )
        )
    pair = [p for p in (run.alignment_figure("object_counts.png"), run.alignment_figure("magnitudes.png")) if p]
    if pair:
        blocks.append(
            FigureBlock(
                pair,
                "Left: stars and galaxies per field. Right: r-band magnitudes of both classes. Galaxies dominate "
                "the faint end, where the two classes are hardest to tell apart.",
            )
        )
    return Section(title, blocks)


def splits_section(run: Run) -> Section:
    title = "Preparation and splits"
    d = run.dataset
    if not d:
        return _not_run(title, "no prepared dataset: 02_preparation.py")
    folder = run.paths.reports("splits", run.dataset_name or "")
    report, left_out = _split_report(run, folder)
    if left_out:
        redo = integrity.preparation_command(run.paths, run.dataset_name or "")
        log.warning("report: %s; left out (%s writes it again)", left_out, redo)
    mags = report.get("r_psfmag", {})
    ks = report.get("ks_vs_train", {})
    rows = []
    for split, c in (d.get("counts") or {}).items():
        m = mags.get(split, {})
        k = ks.get(split)
        rows.append(
            [split, c.get("n"), c.get("stars"), c.get("galaxies"), c.get("star_fraction"), m.get("median"),
             m.get("p95"), f"{k['statistic']:.3f} ({k['pvalue']:.2f})" if k else None]
        )  # fmt: skip
    norm = d.get("normalisation", {})
    blocks: list = [
        Para(
            f"Stage 02 cuts a {d.get('patch_size')} x {d.get('patch_size')} pixel patch of the {d.get('bands')} bands "
            f"around every object (edge policy `{d.get('edge')}`), {_assignment_words(d)} and removes objects that "
            f"would leak across them. Normalisation ({norm.get('method', '?')}) is fitted on training patches only."
        ),
        TableBlock(
            ["split", "patches", "stars", "galaxies", "star fraction", "median r", "r 95th pct", "KS vs train (p)"],
            rows,
            f"The splits of dataset `{run.dataset_name}`: sizes, class balance and r-band PSF magnitudes.",
            digits={"star fraction": 3, "median r": 2, "r 95th pct": 2},
        ),
    ]
    if left_out:
        blocks.append(Para(f"(Magnitudes, KS tests and figure left out: {left_out}; {redo} writes it again.)", "note"))
    removed = {k: v for k, v in (report.get("removed") or {}).items() if v}
    if removed:
        blocks.append(Para("Removed: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in removed.items()) + "."))
    png = None if left_out else _png(folder, "splits.png")
    if png:
        blocks.append(
            FigureBlock(
                [png],
                "r-band magnitude distributions of the splits. They should overlap: a test set brighter or "
                "fainter than the training fields would make its accuracy unrepresentative.",
            )
        )
    return Section(title, blocks)


def _split_report(run: Run, folder: Path) -> tuple[dict, str | None]:
    """(splits.json, None) when the split report of the report's dataset (02's sealed set: splits.json, splits.md,
    splits.png) is intact and of this build of the dataset (one written before it named the build is taken); else
    ({}, why it must not be shown)."""
    record = folder / "splits.json"
    check = fsio.check_seal(record, [folder / "splits.png"])
    if not record.exists():
        return {}, f"no split report ({record} missing)"
    if not check.ok:
        return {}, f"the split report is damaged ({check.describe(1)})"
    if check.record.get("dataset_id") not in (None, run.dataset_id):
        return {}, f"{record} is of another build of dataset {run.dataset_name}"
    return check.record, None


def augmentation_section(run: Run) -> Section:
    title = "Augmentation experiment"
    folder = run.paths.reports("augmentation")
    try:
        exp = _json(folder / "experiment.json")
    except Unreadable as exc:
        return Section(title, ran=False, status=str(exc))
    if not exp:
        return _not_run(title, "no experiment.json: 04_augmentation.py --experiment")
    s = exp.get("settings", {})
    redo = f"04_augmentation.py --experiment --dataset {run.dataset_name}"
    check = fsio.check_seal(folder / "experiment.json")
    if not check.ok:
        return Section(title, ran=False, status=f"stale: {check.describe(1)}; rerun {redo}")
    if run.dataset_name and (s.get("dataset") != run.dataset_name or s.get("dataset_id") != run.dataset_id):
        other = "an earlier build of it" if s.get("dataset") == run.dataset_name else f"dataset {s.get('dataset')}"
        return Section(title, ran=False, status=f"not shown: run on {other}, not on this report's dataset "
                                                f"{run.dataset_name}; {redo}")  # fmt: skip
    cols = ("policy", "train_accuracy", "train_accuracy_clean", "val_loss", "val_accuracy", "val_mcc", "best_epoch")
    heads = ["policy", "train acc. (augmented)", "train acc. (clean)", "val loss", "val accuracy", "val MCC",
             "best epoch"]  # fmt: skip
    rows = [[r.get(c) for c in cols] for r in exp.get("rows", [])]
    best = min(range(len(rows)), key=lambda i: rows[i][3] if rows[i][3] is not None else 1e9) if rows else None
    blocks: list = [
        Para(
            f"The same proxy network is trained once per augmentation policy with the same budget ({s.get('epochs')} "
            f"epochs, at most {s.get('max_train')} training patches, seed {s.get('seed')}) and scored on the "
            "validation split; augmentations are drawn per batch in a streaming pipeline, so the training set is "
            "never copied."
        ),
        TableBlock(
            heads,
            rows,
            "Augmentation policies compared on validation data (lowest validation loss in bold).",
            bold_rows=[best] if best is not None else [],
        ),
    ]
    png = _png(folder, "experiment.png") if "experiment.png" in _sealed_names(check.record) else None
    if png:
        blocks.append(
            FigureBlock(
                [png],
                "Validation scores per policy. Look for the policies that beat `none`: transformations that keep "
                "the class (rotations, reflections) should help, those that change the profile (blur) may not.",
            )
        )
    pair = _augmentation_examples(folder, s.get("dataset_id"))
    if pair:
        blocks.append(
            FigureBlock(
                pair,
                "One training patch under each augmentation: left the eight square symmetries, right brightness "
                "offsets and blur. A transformed star must still look like a star.",
            )
        )
    return Section(title, blocks)


def _sealed_names(record: dict | None) -> set[str]:
    """The names of the files a sealed record lists (relative to its folder)."""
    return set(((record or {}).get(fsio.INTEGRITY_KEY) or {}).get("files") or {})


EXAMPLE_FIGURES = ("examples_symmetries.png", "examples_photometric.png")


def _augmentation_examples(folder: Path, dataset_id: str | None) -> list[Path]:
    """Stage 04's example figures when their own set (augmentation.json seals them) is intact and was drawn from the
    dataset build the experiment shown ran on; else none: patches of another dataset are not this one's."""
    check = fsio.check_seal(folder / "augmentation.json")
    made_from = ((check.record or {}).get("settings") or {}).get("dataset_id")
    if not check.ok or dataset_id is None or made_from != dataset_id:
        if any(_png(folder, name) for name in EXAMPLE_FIGURES):
            why = check.describe(1) if not check.ok else "drawn from another dataset or an earlier build of it"
            log.warning("report: the augmentation examples in %s are left out (%s); 04_augmentation.py draws them "
                        "again", folder, why)  # fmt: skip
        return []
    sealed = _sealed_names(check.record)
    return [p for name in EXAMPLE_FIGURES if name in sealed and (p := _png(folder, name))]


def model_section(run: Run) -> Section:
    title = "Model and training"
    m = run.model
    if not m:
        return _not_run(title, "no trained model: 03_model.py")
    if run.model_stale:
        return Section(title, ran=False, status="stale: " + run.stale_model_text())
    hp = m.get("hyperparameters", {})
    rows = [
        ["architecture", ARCHITECTURE_NAMES.get(m.get("architecture"), m.get("architecture"))],
        ["parameters", f"{m.get('params', 0):,}"],
        ["cost per patch", f"{(m.get('flops_per_patch') or 0) / 1e6:.1f} MFLOP"],
        ["augmentation", _augmentation(m)],
        ["learning rate, schedule", f"{hp.get('learning_rate')}, {m.get('schedule') or 'constant'}"],
        ["batch size", str(m.get("batch_size"))],
        *_training_rows(m),
        ["decision threshold", f"{m.get('threshold', 0.5):.3f} ({m.get('threshold_source', 'chosen on validation')})"],
    ]
    blocks: list = [
        Para(
            "The network takes raw nanomaggie patches and normalises them itself, so a saved model needs no "
            "separate preprocessing; training stops early on validation loss and keeps the best weights."
        ),
        TableBlock(["setting", "value"], rows, f"The latest model, `{run.model_name}`."),
    ]
    if run.figures_left_out:
        blocks.append(Para(f"(Figures left out: {run.figures_left_out}.)", "note"))
    png = _png(run.training_figures, "learning_curves.png")
    if png:
        blocks.append(
            FigureBlock(
                [png],
                "Loss and accuracy per epoch on training and validation data. Look at the gap between the curves "
                "(over-fitting) and at the epoch the kept weights come from.",
                width=0.8,
            )
        )
    return Section(title, blocks)


def _intact_study(paths: DataPaths, name: str) -> bool:
    check = fsio.check_seal(paths.tuning_record(name), [paths.best_config(name), paths.trials_md(name)])
    if not check.ok:
        log.warning("tuning study %s left out of the report: %s (tune.py --name %s redoes it)", name,
                    check.describe(), name)  # fmt: skip
    return check.ok


def _study_dataset_id(paths: DataPaths, name: str) -> str | None:
    """The content identity of the dataset a study was run on (tune.py records it; None for older studies)."""
    record = fsio.check_seal(paths.tuning_record(name)).record or {}
    return record.get("dataset_id")


TRIALS_SHOWN = 12
TRIAL_OBJECTIVE = "val_loss"  # tune.py's objective: lower is better


def _best_trials_first(block: TableBlock, shown: int) -> None:
    """The trials table sorted by the objective (trials.md lists them in trial order; a failed or pruned trial,
    without a value, last), cut to ``shown`` rows with a note saying so: the best trial must be among them."""
    if TRIAL_OBJECTIVE not in block.columns:
        return
    k = block.columns.index(TRIAL_OBJECTIVE)

    def value(row: list) -> float:
        try:
            return float(row[k])
        except (TypeError, ValueError, IndexError):
            return float("inf")

    block.rows = sorted(block.rows, key=value)
    if len(block.rows) > shown:
        block.note = f"The best {shown} of {len(block.rows)} trials by {TRIAL_OBJECTIVE}; trials.md lists them all."
        block.rows = block.rows[:shown]


def _spaced(names: list[str]) -> list[str]:
    """trials.md's column names (identifiers such as spatial_dropout) with spaces for underscores: a header wraps
    only between words, and the study's many columns fit the page side by side only with their names wrapped."""
    return [name.replace("_", " ") for name in names]


def _study_figure(paths: DataPaths, study: str, trials: str) -> Path | None:
    """The study's tuning.png when its set (reports/tuning/NAME/tuning.json, written after the study's results) is
    intact and drawn from the trials shown (its copy of trials.md is theirs); else None: a study resumed and stopped
    before its figure was drawn again keeps the figure of fewer trials."""
    folder = paths.reports("tuning", study)
    png = _png(folder, "tuning.png")
    if png is None:
        return None
    check = fsio.check_seal(folder / "tuning.json", [png, folder / "trials.md"])
    if check.ok and _text(folder / "trials.md") == trials:
        return png
    log.warning("report: %s is not of study %s's current trials (%s); left out (tune.py --name %s draws it again)",
                png, study, check.describe(1) or "drawn from other trials", study)  # fmt: skip
    return None


def tuning_section(run: Run) -> Section:
    title = "Hyper-parameter tuning"
    root = run.paths.tuning_root
    studies = (
        [d.name for d in sorted(root.iterdir()) if run.paths.best_config(d.name).is_file()] if root.is_dir() else []
    )
    studies = [name for name in studies if _intact_study(run.paths, name)]
    if not studies:
        return _not_run(title, "no study: tune.py")
    # a study of this dataset as it is now (tune.py records its content identity), never another dataset's
    mine = [n for n in studies if _study_dataset_id(run.paths, n) == run.dataset_id and run.dataset_id]
    if not mine:
        return Section(title, ran=False, status=(
            f"not shown: no study of dataset {run.dataset_name} as it is now (the studies there, {', '.join(studies)}, "
            f"were run on other datasets or earlier builds); tune.py --dataset {run.dataset_name}"))  # fmt: skip
    study = max(mine, key=lambda n: run.paths.best_config(n).stat().st_mtime)
    text = _text(run.paths.trials_md(study)) or ""
    others = [n for n in mine if n != study]  # the newest study is shown; the others are named, not dropped
    also = (
        f" The dataset's other studies: {', '.join(f'`{n}`' for n in others)} (tuning/NAME/trials.md)."
        if others
        else ""
    )
    blocks: list = [Para(f"Study `{study}` (Optuna, resumable): its trials, best first.{also}")]
    for block in markdown_blocks(text, f"Trials of study {study}."):
        if isinstance(block, TableBlock):
            _best_trials_first(block, TRIALS_SHOWN)
            block.columns = _spaced(block.columns)
        if not isinstance(block, FigureBlock):
            blocks.append(block)
    png = _study_figure(run.paths, study, text)
    if png:
        blocks.append(FigureBlock([png], "Validation loss of every trial. Look at how fast the best value levels off."))
    return Section(title, blocks)


METRIC_COLUMNS = ("n", "accuracy", "mcc", "balanced_accuracy", "roc_auc", "log_loss", "star_purity",
                  "star_completeness", "galaxy_purity", "galaxy_completeness")  # fmt: skip
METRIC_HEADS = ("n", "accuracy", "MCC", "balanced accuracy", "ROC AUC", "log loss", "star purity", "star compl.",
                "galaxy purity", "galaxy compl.")  # fmt: skip


def evaluation_section(run: Run) -> Section:
    title = "Evaluation"
    m = run.metrics
    if not m:
        return _not_run(title, "no metrics.json: 03_model.py")
    if run.model_stale:
        return Section(title, ran=False, status="stale: " + run.stale_model_text())
    # a metric undefined for a split of one class is None (an en dash), also from a metrics.json that held 0.0
    rows = [
        [split, *[defined(m[split], c) for c in METRIC_COLUMNS]] for split in ("train", "val", "test") if split in m
    ]
    if (m.get("no_tta") or {}).get("test"):
        rows.append(["test, one pass (no TTA)", *[defined(m["no_tta"]["test"], c) for c in METRIC_COLUMNS]])
    for name, b in ((m.get("baselines") or {}).get("test") or {}).items():
        rows.append([f"test, {name} baseline", *[defined(b, c, m.get("test") or {}) for c in METRIC_COLUMNS]])
    tta = " with test-time augmentation (mean over the 8 symmetries)" if m.get("tta") else ""
    blocks: list = [
        Para(
            f"Every split is scored{tta} at the threshold {m.get('threshold', 0.5):.3f}, chosen on validation data "
            "only (maximum MCC). Purity is the fraction of objects called stars (galaxies) that are; completeness "
            "the fraction of true stars (galaxies) called so."
        ),
        TableBlock(["split", *METRIC_HEADS], rows, "Metrics of the latest model on every split.", digits=3),
    ]
    folder = run.training_figures
    if run.figures_left_out:
        blocks.append(Para("(Figures left out: the latest model's figures are not its own; see section "
                           "Model and training.)", "note"))  # fmt: skip
    pair = [p for p in (_png(folder, "confusion_test.png"), _png(folder, "roc.png")) if p]
    if pair:
        blocks.append(
            FigureBlock(
                pair,
                "Left: confusion matrix of the test split (rows true class, columns predicted); the off-diagonal "
                "cells are the errors. Right: ROC curves; the area under a curve does not depend on the threshold.",
                width=0.8,
            )
        )
    bins = (m.get("by_magnitude") or {}).get("test") or []
    if bins:
        from ..metrics import magnitude_bin_label

        blocks.append(
            TableBlock(
                [
                    "r PSF mag",
                    "objects",
                    "stars",
                    "accuracy",
                    "MCC",
                    "star completeness",
                    "star purity",
                    "galaxy completeness",
                ],  # fmt: skip
                [
                    [
                        magnitude_bin_label(b),
                        b.get("n"),
                        b.get("stars"),
                        b.get("accuracy"),
                        defined(b, "mcc"),
                        b.get("star_completeness"),
                        b.get("star_purity"),
                        b.get("galaxy_completeness"),
                    ]
                    for b in bins
                ],  # fmt: skip
                "Test-split metrics per r-band magnitude bin.",
            )
        )
    png = _png(folder, "by_magnitude_test.png")
    if png:
        blocks.append(
            FigureBlock(
                [png],
                "Accuracy and star completeness and purity per r-magnitude bin of the test split. Look at the faint "
                "end: past r = 21 the noise is comparable to the source and the scores fall.",
                width=0.85,
            )
        )
    return Section(title, blocks)


def difficulty_section(run: Run) -> Section:
    title = "Difficulty analysis"
    if not run.model_name:
        return _not_run(title, "no model: 03_model.py, then explain.py --difficulty")
    folder = run.paths.reports("difficulty", run.model_name)
    outputs = [folder / "difficulty.md", folder / "examples.png"]
    record, why = run.current_record(
        folder / "difficulty.json", outputs, f"explain.py --difficulty --model {run.model_name}"
    )
    text = _text(outputs[0]) if record else None
    if not text:
        return Section(title, ran=False, status=why or "not run (difficulty.md unreadable: explain.py --difficulty)")
    blocks: list = []
    for block in markdown_blocks(text):
        if isinstance(block, TableBlock):
            continue  # the per-magnitude table is in the evaluation section
        if isinstance(block, FigureBlock):
            block.images = [folder / p for p in block.images]
            if not block.images[0].is_file():
                continue
            block.caption = (
                (block.caption.rstrip(".") + ". " if block.caption else "")
                + "Rows: bright stars, faint stars, faint galaxies, blends and the most confident errors, with p(star) "
                "and r magnitude above each patch (irg colours)."
            )
            block.width = 0.72
        blocks.append(block)
    dataset = (record.get("settings") or {}).get("dataset")
    if dataset != run.dataset_name:
        blocks.insert(0, Para(f"Measured on the test split of dataset `{dataset}`, not the model's own."))
    else:
        blocks.insert(0, Para("Per-magnitude metrics of the test split are in the evaluation section."))
    return Section(title, blocks)


SPLIT_NAMES = {"test": "test", "val": "validation", "train": "training"}
EXPLAIN_GROUPS = (
    ("star_correct", "stars classified as stars"),
    ("galaxy_correct", "galaxies classified as galaxies"),
    ("star_as_galaxy", "stars classified as galaxies"),
    ("galaxy_as_star", "galaxies classified as stars"),
)


def explanations_section(run: Run) -> Section:
    title = "Explanations"
    if not run.model_name:
        return _not_run(title, "no model: 03_model.py, then explain.py")
    folder = run.paths.reports("explain", run.model_name)
    record, why = run.current_record(folder / "explain.json", [folder / "examples.csv"],
                                     f"explain.py --model {run.model_name}")  # fmt: skip
    if not record:
        return Section(title, ran=False, status=why)
    counts = (record.get("result") or {}).get("counts", {})
    settings = record.get("settings", {})
    split = SPLIT_NAMES.get(settings.get("split"), str(settings.get("split")))
    dataset = settings.get("dataset")
    of = "" if dataset == run.dataset_name else f" of dataset `{dataset}`"
    blocks: list = [
        Para(
            f"Integrated Gradients (per band, and summed) and Grad-CAM maps of {split} patches{of} in four groups "
            f"({', '.join(f'{counts.get(k, 0)} {text}' for k, text in EXPLAIN_GROUPS)}; {settings.get('steps')} "
            "integration steps). Red pixels push towards star, blue towards galaxy: a network that looks at the "
            "object's profile puts its attribution on the central pixels, not on neighbours or the background."
        )
    ]
    sealed = _sealed_names(record)
    for key, text in EXPLAIN_GROUPS:
        png = _png(folder, f"{key}.png")
        if not png or png.name not in sealed:  # a group without examples this time: an older run's figure
            continue
        where = f"{split} patches of dataset `{dataset}`"  # every figure says what it was measured on
        if key.endswith("correct"):
            caption = f"Correct: {text} ({where}), one patch per row, with p(star) and r magnitude."
        else:
            caption = (
                f"Errors: {text} ({where}). Compare with the correct cases: attribution spread over a neighbour or "
                "the background marks a blend or a noise-dominated patch."
            )
        blocks.append(FigureBlock([png], caption, width=0.75))
    return Section(title, blocks)


def real_sky_section(run: Run) -> Section:
    """The real-sky evaluation issue 12's tools write: reports/real_sky/real_sky.json (model, summary, tables,
    figures relative to that folder)."""
    title = "Real-sky evaluation"
    folder = run.paths.reports("real_sky")
    path = folder / "real_sky.json"
    try:
        rec = _json(path)
        if rec is None:
            return _not_run(title, "no real_sky.json")
        if not isinstance(rec, dict):
            raise Unreadable(f"{path}: unreadable (not a JSON object)")
        check = fsio.check_seal(path)  # real_sky.py seals its set: an edited figure or table must not be shown
        if not check.ok:
            return Section(title, ran=False, status=f"not shown: {check.describe(1)}; rerun code/real_sky.py")
        settings = rec.get("settings") or {}
        problem = _evaluated_model_problem(run, settings)
        if problem:
            return Section(title, ran=False, status=problem)
        blocks: list = [Para(str(rec.get("summary", "")))] if rec.get("summary") else []
        if rec.get("model"):
            text = f"Model `{rec['model']}`."
            if run.model_id is not None and settings.get("model_id") != run.model_id:
                text += (
                    f" Not this report's model `{run.model_name}`: code/real_sky.py without --model evaluates that one."
                )
            blocks.insert(0, Para(text))
        for t in rec.get("tables") or []:
            blocks.append(TableBlock([str(c) for c in t["columns"]], [list(r) for r in t["rows"]], str(t["title"])))
        for f in rec.get("figures") or []:
            png = folder / str(f["file"])
            if png.is_file():
                blocks.append(FigureBlock([png], str(f.get("caption", "")), width=0.8))
            else:
                blocks.append(Para(f"(figure {f['file']} missing)", "note"))
    except Unreadable as exc:
        return Section(title, ran=False, status=str(exc))
    except (KeyError, TypeError, AttributeError) as exc:
        return Section(title, ran=False, status=f"{path}: unreadable (missing or malformed {exc})")
    return Section(title, blocks)


def _evaluated_model_problem(run: Run, settings: dict) -> str | None:
    """Why a real-sky evaluation must not be shown: the model it names is no longer the one it evaluated (retrained
    under its name, changed or removed since), or it does not say which; None when it may be."""
    recorded, folder = settings.get("model_id"), settings.get("model")
    if not recorded or not folder:
        return "not shown: it does not record the model it evaluated (an earlier real_sky.py); rerun code/real_sky.py"
    if recorded == run.model_id:
        return None
    try:
        current = fsio.seal_digest(integrity.require_model(folder))
    except StargalError:
        current = None
    if current != recorded:
        return (
            f"stale: made from an earlier model named {Path(folder).name} (retrained, changed or removed since); "
            "rerun code/real_sky.py"
        )
    return None


def runtime_section(run: Run) -> Section:
    title = "Run time and memory"
    rec = run.record
    if not rec or not rec.get("stages"):
        return _not_run(title, "no run_scripts.sh record: reports/pipeline/stages.json")
    rows = []
    for r in rec["stages"]:
        ran = r.get("status") in ("ok", "failed", "interrupted")
        rows.append([r.get("stage"), r.get("script"), r.get("status"), r.get("seconds") if ran else None,
                     r.get("peak_rss_mb"), r.get("peak_tree_mb")])  # fmt: skip
    total = sum(r.get("seconds") or 0 for r in rec["stages"] if r.get("status") in ("ok", "failed", "interrupted"))
    peaks = [r.get("peak_rss_mb") for r in rec["stages"] if r.get("peak_rss_mb") is not None]
    trees = [r.get("peak_tree_mb") for r in rec["stages"] if r.get("peak_tree_mb") is not None]
    rows.append(["total", "", "", total, max(peaks) if peaks else None, max(trees) if trees else None])
    return Section(
        title,
        [
            Para(
                "Wall time and peak resident memory of each stage of the run: the largest single process (from the "
                "kernel's accounting) and the whole process tree (sampled every 0.2 s)."
            ),
            TableBlock(
                ["stage", "script", "status", "wall time (s)", "peak RSS (MB)", "tree peak (MB)"],
                rows,
                "Time and memory per stage (the total row: sum of times, largest peaks).",
                digits={"wall time (s)": 1, "peak RSS (MB)": 0, "tree peak (MB)": 0},
                bold_rows=[len(rows) - 1],
            ),
        ],
    )


# ---------------------------------------------------------------- the document


def collect(paths: DataPaths) -> Document:
    """The report's content, from what the stages wrote."""
    run = Run(paths)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = [
        ("Run", run.command()),
        ("Sky", run.sky()),
        ("Fields", run.fields()),
        ("Dataset", f"`{run.dataset_name}`" if run.dataset_name else "\u2013"),
        ("Model", f"`{run.model_name}`" if run.model_name else "\u2013"),
        ("Built", f"{now} from {paths.root}"),
    ]
    sections = [
        data_section(run),
        alignment_section(run),
        splits_section(run),
        augmentation_section(run),
        model_section(run),
        tuning_section(run),
        evaluation_section(run),
        difficulty_section(run),
        explanations_section(run),
        real_sky_section(run),
        runtime_section(run),
    ]
    subtitle = "Star/galaxy classification of SDSS imaging with a small CNN: run report"
    return Document("stargal run report", subtitle, facts, headline(run), sections)


def build_report(paths: DataPaths, output: Path | None = None, force: bool = False) -> dict:
    """Write the PDF report; return {"path", "pages", "sections": {title: ran}, "skipped"}. The default report
    is kept when nothing it is built from changed since it was written (so a current run needs no write)."""
    if output is not None and Path(output).expanduser().resolve() == paths.report_pdf.expanduser().resolve():
        output = None  # the default report named in full: kept, sealed and checked as the default
    default = output is None
    if not default:
        check_output_path(Path(output), paths)
    output = Path(output) if output else paths.report_pdf
    settings = {"inputs": report_inputs(paths), "stargal_version": __version__, "report_format": REPORT_FORMAT}
    previous = fsio.previous_record(paths.report_record, [output], settings, force) if default else None
    if previous is not None:
        Run(paths)  # its latest model and dataset still intact (their seals): a damaged one is refused, not kept
        log.info("report is current: nothing it is built from changed since %s was written", output)
        return {**previous["result"], "path": output, "skipped": True}
    doc = collect(paths)
    with atomic_path(output) as tmp:
        pages = render(doc, tmp)
    if pages > MAX_PAGES:
        log.warning("report: %d pages, more than the %d aimed at", pages, MAX_PAGES)
    result = {
        "pages": pages,
        "sections": {s.title: s.ran for s in doc.sections},
        "stale": [s.title for s in doc.sections if s.status.startswith("stale")],
        "not_shown": [s.title for s in doc.sections if s.status.startswith("not shown")],
    }
    if default:
        fsio.seal(paths.report_record, [output], {"settings": settings, "result": result})
    return {**result, "path": output, "skipped": False}


def check_output_path(output: Path, paths: DataPaths) -> None:
    """Refuse an --output inside a data folder (this run's or another's, ``DataPaths.at_stake``) other than a PDF
    directly in its reports/ folder, or another data folder's own sealed report: the report is written over it
    atomically, so a model, a dataset or a record there would be gone without a word."""
    out = output.expanduser().resolve()
    stake = paths.at_stake(out)
    if stake is not None and stake != paths and out == stake.report_pdf.expanduser().resolve():
        raise StargalError(
            f"--output {output}: is the report of the data folder {stake.root}, which its own make_report.py run "
            f"writes and seals; name another .pdf, or run make_report.py --data-dir {shlex.quote(str(stake.root))}"
        )
    root = stake.root.expanduser().resolve() if stake else None
    reports = stake.reports().expanduser().resolve() if stake else None
    if stake is not None and not (out.parent == reports and out.suffix.lower() == ".pdf"):
        raise StargalError(
            f"--output {output}: lies in the data folder {root}, whose files the stages write and seal; name a .pdf "
            f"in {reports} or a file outside the data folder"
        )
    if out.suffix.lower() != ".pdf":  # a PDF under another name opens in nothing that trusts the name
        raise StargalError(f"--output {output}: the report is a PDF; name a file ending in .pdf")
    fsio.require_writable_destination(out, "--output")  # before the work: a path under a file, a read-only folder


def report_inputs(paths: DataPaths) -> list[list]:
    """(path, size, modification time) of every file the report can be built from: what decides a rerun. Not the
    runner's stage table: run_scripts.sh rewrites it after the report on every run, so a run that redid nothing
    would rebuild the report the next time (and fail on a read-only data folder); the report shows the table of
    the run that last changed what it reports."""
    skip = {paths.report_pdf, paths.report_record, paths.pipeline_record}
    found: list[Path] = [paths.latest_dataset, paths.latest_model, paths.manifest]  # the manifest: the data section
    # every model and dataset: Table 1 lists every model of the dataset, matched by the datasets' content
    for root in (paths.datasets_root, paths.models_root):
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            found += [folder / f for f in ("dataset.json", "model.json", "metrics.json")]
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
    evaluated = _real_sky_model_json(paths)  # a model outside the folder (the shipped one) changes its section too
    if evaluated is not None and not evaluated.resolve().is_relative_to(paths.root.resolve()):
        with contextlib.suppress(OSError):
            st = evaluated.stat()
            out.append([str(evaluated), st.st_size, st.st_mtime_ns])
    return out


def _real_sky_model_json(paths: DataPaths) -> Path | None:
    """The model.json of the model the real-sky evaluation names, if it names one."""
    try:
        folder = (fsio.read_json(paths.reports("real_sky", "real_sky.json")).get("settings") or {}).get("model")
    except (OSError, ValueError, AttributeError, StargalError):
        return None
    return ModelFiles(Path(folder)).json if isinstance(folder, str) and folder else None
