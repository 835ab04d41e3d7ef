"""Which outputs of a data folder are intact: the check every reader makes before it uses a sealed output
(``require_*``), and the whole-folder check of ``run_scripts.sh --verify`` (``verify_data_folder``).

A sealed output is a set of files with a record written last that lists each file's size and sha256
(``stargal.fsio.OutputSet``). A reader accepts the set only when every listed file is present and matches;
otherwise it stops with one line naming the broken file and the run that redoes it. The stage that writes a
set sees the same breakage when it checks whether its outputs are current, and redoes them without --force.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from . import fsio, sdss
from .config import BANDS, REFERENCE, SAS_BASE_URL
from .errors import StargalError
from .paths import PRETRAINED_MODEL_DIR, PROJECT_ROOT, DataPaths, FieldId, ModelFiles, check_folder_name

log = logging.getLogger("stargal")


def _run_options(rerun: int, run: int, camcol: int) -> str:
    parts = [] if rerun == REFERENCE.rerun else [f"--rerun {rerun}"]
    return " ".join([*parts, f"--run {run}", f"--camcol {camcol}"])


def _data_dir_option(paths: DataPaths | None) -> str:
    """`` --data-dir ROOT`` for a data folder other than the project's own (a command without it would act there)."""
    if paths is None or paths.root.resolve() == DataPaths.at(None).root.resolve():
        return ""
    return f" --data-dir {shlex.quote(str(paths.root))}"  # pasted as printed, a path with a space works


def alignment_command(fid: FieldId, paths: DataPaths | None = None) -> str:
    """The command that redoes a field's stage-01 outputs (in ``paths``' data folder)."""
    return (
        f"01_alignment.py {_run_options(fid.rerun, fid.run, fid.camcol)} --fields {fid.field}{_data_dir_option(paths)}"
    )


def download_command(
    relpath: str,
    paths: DataPaths | None = None,
    force: bool = False,
    fields: Sequence[int] = (),
    catalogs: bool = False,
) -> str:
    """The command that fetches a SAS file again (into ``paths``' data folder; ``force``: even a complete one; a
    catalog with ``fields``: those fields' download, which fetches their run/camcol's catalogs; a frame alone,
    unless ``catalogs``: its field's download with the run/camcol's catalogs). The source is the one the manifest
    records for the file (a simulation, a local folder, an HTTP mirror), and a catalog given no ``fields`` is
    fetched with the fields whose frames the manifest records from that source (without them 00 would fetch, or
    render, the reference fields)."""
    info = sdss.parse_filename(Path(relpath).name)
    script = "00_download.py --force" if force else "00_download.py"
    if info is None:
        return script + _data_dir_option(paths)
    parts = relpath.split("/")
    rerun = int(parts[-2] if info["kind"] == "catalog" else parts[-4])
    files = _manifest_files(paths)
    url = _entry_url(files, relpath)
    if not url and info["kind"] == "frame":  # never fetched: its field's other frames name the source it comes from
        url, relpath = _sibling_frame_entry(files, relpath, info)
    if info["kind"] == "frame":
        fields = [info["field"]]
        text = str(info["field"])
    elif fields:
        text = " ".join(map(str, fields))
    else:
        text = _field_ranges(_recorded_fields(files, rerun, info["run"], info["camcol"], url))
    fields = f" --fields {text}" if text else ""
    if info["kind"] == "frame" and not catalogs:  # fetching the run's sweeps again would make every field stale
        fields += " --frames-only"
    source = _source_options(url, relpath)
    return f"{script} {_run_options(rerun, info['run'], info['camcol'])}{fields}{source}{_data_dir_option(paths)}"


def _manifest_files(paths: DataPaths | None) -> dict:
    """The download manifest's entries (relpath -> entry); empty without a readable manifest."""
    try:
        files = fsio.read_json(paths.manifest)["files"] if paths is not None else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return files if isinstance(files, dict) else {}


def _entry_url(files: dict, relpath: str) -> str:
    entry = files.get(relpath)
    return str(entry.get("url", "")) if isinstance(entry, dict) else ""


def _sibling_frame_entry(files: dict, relpath: str, info: dict) -> tuple[str, str]:
    """(url, relpath) of the first other band's frame of the same field that the manifest records a source for;
    ("", ``relpath``) when none."""
    folder = relpath.rpartition("/")[0]
    for band in BANDS:
        other = f"{folder}/{sdss.frame_filename(band, info['run'], info['camcol'], info['field'])}".lstrip("/")
        url = _entry_url(files, other)
        if url and other != relpath:
            return url, other
    return "", relpath


def _recorded_fields(files: dict, rerun: int, run: int, camcol: int, url: str) -> list[int]:
    """The fields of ``rerun/run/camcol`` whose frames the manifest records from the source of ``url`` (the same
    simulation; for a real file, any real source)."""
    simulated = url.startswith("simulated:")
    found = set()
    for relpath, entry in files.items():
        info = sdss.parse_filename(Path(relpath).name)
        if info is None or info["kind"] != "frame" or (info["run"], info["camcol"]) != (run, camcol):
            continue
        parts = relpath.split("/")
        if len(parts) < 4 or parts[-4] != str(rerun):
            continue
        other = str(entry.get("url", "")) if isinstance(entry, dict) else ""
        if (other == url) if simulated else (other and not other.startswith("simulated:")):
            found.add(info["field"])
    return sorted(found)


def _field_ranges(fields: Sequence[int]) -> str:
    """``--fields`` text: runs of three or more consecutive fields as ``A-B`` (80 81 82 83 90 -> 80-83 90)."""
    out, i = [], 0
    while i < len(fields):
        j = i
        while j + 1 < len(fields) and fields[j + 1] == fields[j] + 1:
            j += 1
        out += [f"{fields[i]}-{fields[j]}"] if j - i >= 2 else [str(f) for f in fields[i : j + 1]]
        i = j + 1
    return " ".join(out)


def _source_options(url: str, relpath: str) -> str:
    """``--source ...`` (with the simulation's settings) that gives the file the manifest recorded from ``url``
    again: a simulation, a local folder (``file://``), or an HTTP mirror other than SDSS; "" for SDSS itself or
    an unknown source."""
    if url.startswith("simulated:"):
        return _simulation_options(url)
    if url.startswith("file://"):
        root = _local_root(Path(unquote(urlsplit(url).path)), relpath)
        return f" --source {shlex.quote(str(root))}"
    quoted = quote(relpath)
    if url.lower().startswith(("http://", "https://")) and url.endswith(quoted):
        base = url[: -len(quoted)]
        if base.rstrip("/") != SAS_BASE_URL.rstrip("/"):
            return f" --source {shlex.quote(base)}"
    return ""


def _local_root(path: Path, relpath: str) -> Path:
    """The ``--source`` folder a file was copied from: the folder holding its SAS tree (or the data folder whose
    ``sas/`` that is), the folder of a bundle's ``rerun_*/run_*/camcol_*``, or else the file's own folder (a tree of
    SAS file names, searched below it)."""
    rel = Path(relpath).parts
    if len(path.parts) > len(rel) and path.parts[-len(rel) :] == rel:
        root = path.parents[len(rel) - 1]
        return root.parent if root.name == "sas" else root
    up = path.parents
    bundle = ("camcol_", "run_", "rerun_")
    if len(up) > 3 and all(up[i].name.startswith(prefix) for i, prefix in enumerate(bundle)):
        return up[3]
    return path.parent


def _simulation_options(url: str) -> str:
    """`` --source simulated --seed S --sim-shape R C`` (and ``--sim-seeing``) for a file the manifest records as
    simulated: without them 00 would fetch real SDSS, which a folder of the simulated sky refuses."""
    settings = dict(item.split("=", 1) for item in url.split(":", 2)[-1].split(",") if "=" in item)
    out = " --source simulated"
    if "seed" in settings:
        out += f" --seed {settings['seed']}"
    if "x" in settings.get("shape", ""):
        out += f" --sim-shape {settings['shape'].replace('x', ' ')}"
    if "seeing" in settings:
        out += f" --sim-seeing {settings['seeing']}"
    return out


def _broken(check: fsio.SealCheck, what: str, redo: str) -> StargalError:
    return StargalError(f"{what} is incomplete or damaged: {check.describe()}; {redo} redoes it (no --force needed)")


def field_check(paths: DataPaths, fid: FieldId, objects: bool = False, deep: bool = False) -> fsio.SealCheck:
    """The seal of a field's stage-01 outputs (cube and PSF map, and the objects table with ``objects``)."""
    expected = [paths.cube(fid), paths.psf_map(fid)] + ([paths.objects(fid)] if objects else [])
    return fsio.check_seal(paths.field_record(fid), expected, deep)


def require_field(paths: DataPaths, fid: FieldId, objects: bool = False) -> dict:
    """A field's stage-01 record, after checking that its cube and PSF map (and objects table) are intact."""
    check = field_check(paths, fid, objects)
    if not check.ok:
        if not paths.cube(fid).exists():
            raise StargalError(f"{paths.cube(fid)}: aligned cube not found (run {alignment_command(fid, paths)})")
        raise _broken(check, f"field {fid}'s aligned output", alignment_command(fid, paths))
    return check.record


def require_cube_file(cube: str | os.PathLike) -> None:
    """A cube named on the command line: checked against its field record when one lies beside it (a cube
    copied out of a data folder on its own is checked for its structure only, when read)."""
    record = DataPaths.record_beside_cube(cube)
    if not record.exists():
        return
    check = fsio.check_seal(record, [cube])
    if not check.ok:
        raise _broken(check, f"aligned cube {cube}", "01_alignment.py for its field")


def intact_dataset_id(paths: DataPaths, name: str | None) -> str | None:
    """The content identity of dataset ``name`` (what stages record as their input) when it is there and intact,
    else None: for readers that report a mismatch instead of failing."""
    if not isinstance(name, str) or not name or "/" in name:
        return None
    check = fsio.check_seal(paths.dataset_json(name))
    return fsio.seal_digest(check.record) if check.ok else None


def require_dataset(paths: DataPaths, name: str, splits: Iterable[str] | None = None) -> dict:
    """A dataset's dataset.json, after checking that every file it seals is intact and that it seals the arrays
    of ``splits``."""
    expected = []
    for split in splits or ():
        expected += [paths.split_x(name, split), paths.split_y(name, split), paths.split_psf(name, split)]
    check = fsio.check_seal(paths.dataset_json(name), expected)
    if not check.ok:
        raise _broken(check, f"dataset {name!r}", "02_preparation.py with the options that made it")
    return check.record


def require_model(model_dir: str | os.PathLike) -> dict:
    """A model folder's model.json, after checking that model.keras and every other file it seals are intact."""
    files = ModelFiles(Path(model_dir))
    check = fsio.check_seal(files.json, [files.keras])
    if not check.ok:
        if files.folder.resolve() == PRETRAINED_MODEL_DIR.resolve():  # no options made it here: it ships
            raise StargalError(
                f"model folder {files.folder} is incomplete or damaged: {check.describe()}; it ships with stargal: "
                f"restore it (git checkout -- {PRETRAINED_MODEL_DIR.relative_to(PROJECT_ROOT)}, or a fresh copy)"
            )
        raise _broken(check, f"model folder {files.folder}", _model_redo(files.folder))
    return check.record


def _model_redo(folder: Path) -> str:
    """What trains a damaged model folder again: its full 03 command when it is a model of a data folder (one a
    stage has run on), else a hint (a folder copied elsewhere is not where 03 would write it)."""
    paths = DataPaths.enclosing(folder)
    if paths is not None and paths.model_dir(folder.name).resolve() == folder.resolve():
        return model_command(paths, folder.name)
    return "03_model.py with the options that made it"


# ---------------------------------------------------------------------------------------------------------
# the whole data folder (run_scripts.sh --verify)


# which run writes each folder (or record) under reports/
REPORT_WRITERS = {
    "alignment": "01_alignment.py",
    "splits": "02_preparation.py",
    "augmentation": "04_augmentation.py",
    "augmentation/experiment.json": "04_augmentation.py --experiment",
    "training": "03_model.py",
    "tuning": "tune.py",
    "explain": "explain.py",
    "difficulty": "explain.py --difficulty",
    "pipeline": "run_scripts.sh",
    "report.json": "make_report.py",
    "real_sky": "real_sky.py",
}


@dataclass(frozen=True)
class Finding:
    path: Path
    problem: str
    redo: str  # what redoes it


def _tensor_fields(record: Path) -> str:
    """`` --fields ...`` of the fields the tensors were written for (without it 01 would align the reference's)."""
    try:
        fields = fsio.read_json(record).get("fields") or []
    except (OSError, ValueError, AttributeError):
        return ""
    return f" --fields {' '.join(map(str, fields))}" if all(isinstance(f, int) for f in fields) and fields else ""


def preparation_command(paths: DataPaths, name: str) -> str:
    """The 02 command that rebuilds dataset ``name`` as its record describes it (fields, splits, patch, edge,
    regions); where the record is unreadable, 02 with the dataset's name only."""
    try:
        d = fsio.read_json(paths.dataset_json(name))
        splits = d["fields"]
        fields = sorted({f for key in ("train", "val", "test") for f in splits[key]})
        words = [_run_options(d["rerun"], d["run"], d["camcol"]), "--fields", *map(str, fields)]
        for key in ("train", "val", "test"):
            if splits[key]:  # a test set of a region alone has no test fields, which leaving the option out gives
                words += [f"--{key}-fields", *map(str, splits[key])]
        words += ["--patch-size", str(d["patch_size"]), "--edge", str(d["edge"])]
        for option, regions in (("--test-region", d.get("test_regions") or []), ("--exclude-region", d.get("exclude_regions") or [])):  # fmt: skip
            for region in regions:
                words += [option, *(repr(float(v)) for v in region)]  # exact: the name hashes them
        words += ["--dataset", name]  # the name it has, whether derived from these options or given
    except (OSError, ValueError, KeyError, TypeError):
        return f"02_preparation.py (dataset {name}){_data_dir_option(paths)}"
    return f"02_preparation.py {' '.join(words)}{_data_dir_option(paths)}"


# ---------------------------------------------------------------------------------------------------------
# the command that makes a model again (03_model.py), from what its model.json records

# the file a redo command reads hyper-parameters from when the command line has no option for them
HYPERPARAMETER_FILE = "hyperparameters.json"


def model_command(paths: DataPaths, name: str) -> str:
    """The 03 command that makes model ``name`` again as its model.json records it, under the same name (``--name
    NAME`` with one seed names the folder NAME, whatever named it first); where the record cannot say, a hint
    that says why instead of a command that would train another model."""
    try:
        check_folder_name(name, "--name")
    except StargalError:
        return f"03_model.py with the options that made it (its folder name {name!r} is not one 03 gives)"
    record, why = _model_record(paths.model(name).json)
    if record is not None:
        try:
            words, note = _model_words(paths, record["config"])
            return f"03_model.py {' '.join(words)} --name {name}{_data_dir_option(paths)}{note}"
        except (KeyError, TypeError, ValueError, AttributeError, StargalError):
            why = "does not list them (written by an older stargal, or not by 03_model.py)"
    hint = f"with the options that made it (its record model.json {why})"
    return f"03_model.py --name {name}{_data_dir_option(paths)} {hint}"


def _model_record(record_path: Path) -> tuple[dict | None, str]:
    """A model's record, or None and why it cannot tell the options (a record edited after it was sealed could
    name options that never made the model)."""
    try:
        record = fsio.read_json(record_path)
    except FileNotFoundError:
        return None, "is missing"
    except (OSError, ValueError):
        return None, "is unreadable"
    if not isinstance(record, dict):
        return None, "is unreadable"
    if fsio.edited_after_sealing(record):
        return None, "was edited after it was sealed, so its options cannot be trusted"
    return record, ""


def _model_words(paths: DataPaths, config: dict) -> tuple[list[str], str]:
    """03's options (and a note on a file they name) from a model's recorded config: a trained network's or an
    ensemble's."""
    if "ensemble" in config:
        members = [check_folder_name(member["name"], "--ensemble") for member in config["ensemble"]]
        if len(members) < 2:
            raise ValueError("an ensemble of fewer than two models")
        return ["--ensemble", *members, _tta_flag(config["tta"])], ""
    return _training_words(paths, config)


def _tta_flag(tta: object) -> str:
    if not isinstance(tta, bool):
        raise TypeError(f"tta {tta!r}")
    return "--tta" if tta else "--no-tta"


def _training_words(paths: DataPaths, config: dict) -> tuple[list[str], str]:
    """Every option of a trained network, explicit (a default of a later stargal would train another model)."""
    from .model import ARCHITECTURES
    from .train_options import check_value

    architecture, seed = config["architecture"], config["seed"]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed {seed!r}")
    for key in ("epochs", "patience", "batch_size", "augment", "schedule", "class_weight"):
        check_value(key, config[key], "model.json")
    hyper, note = _hyperparameter_words(paths, architecture, config["hyperparameters"])
    words = ["--dataset", check_folder_name(config["dataset"], "--dataset"), "--architecture", architecture, *hyper]
    words += ["--epochs", str(int(config["epochs"])), "--patience", str(int(config["patience"]))]
    words += ["--batch-size", str(int(config["batch_size"])), "--augment", config["augment"]]
    words += ["--schedule", config["schedule"] or "none", "--class-weight", config["class_weight"] or "none"]
    return [*words, "--seed", str(seed), _tta_flag(config["tta"])], note


def _hyperparameter_words(paths: DataPaths, architecture: str, hp: dict) -> tuple[list[str], str]:
    """``--config`` and ``--learning-rate`` that give the network the recorded (merged) hyper-parameters ``hp``:
    no --config when the others are the architecture's defaults, else a tuning study's best.json of the data folder
    that holds them, else a file the note spells out (03 takes them from a --config JSON only)."""
    from .model import DEFAULT_HP, merged_hp

    if not isinstance(hp, dict):
        raise TypeError(f"hyperparameters {hp!r}")
    config, base, note = [], DEFAULT_HP[architecture], ""
    if _differences(hp, base):
        found = _study_config(paths, architecture, hp)
        if found is not None:
            config, base = ["--config", str(found[0])], found[1]
        else:
            extra = _differences(hp, base)
            config, base = ["--config", HYPERPARAMETER_FILE], merged_hp(architecture, extra)
            note = f", with {HYPERPARAMETER_FILE} holding {json.dumps({'hyperparameters': extra})}"
    rate = hp.get("learning_rate")
    if rate is not None and rate != base.get("learning_rate"):
        config += ["--learning-rate", repr(float(rate))]  # repr: the exact float recorded
    return config, note


def _differences(hp: dict, base: dict) -> dict:
    """The hyper-parameters of ``hp`` other than ``base``'s, the learning rate aside (it has an option)."""
    return {key: value for key, value in hp.items() if key != "learning_rate" and base.get(key) != value}


def _study_config(paths: DataPaths, architecture: str, hp: dict) -> tuple[Path, dict] | None:
    """A tuning study's best.json of the data folder that gives ``architecture`` the hyper-parameters ``hp`` (the
    learning rate aside), and the hyper-parameters it gives; None when no study's does."""
    from .model import merged_hp
    from .train_options import check_hyperparameters, load_config

    for best in sorted(paths.tuning_root.glob("*/best.json")) if paths.tuning_root.is_dir() else []:
        try:
            given = load_config(best)["hyperparameters"]
            check_hyperparameters(architecture, given, best)  # as 03 checks it with --architecture
        except StargalError:
            continue
        base = merged_hp(architecture, given)
        if not _differences(hp, base):
            return best, base
    return None


def _stray_cube_redo(paths: DataPaths, cube: Path) -> str:
    """What redoes a cube no record seals: its field's alignment (which needs its frames), or deleting it (a run's
    stage 01 aligns the fields it is given, so a stray field's cube stays unsealed until one of these)."""
    try:
        rerun, run, camcol = (int(p) for p in cube.parent.relative_to(paths.aligned_root).parts)
        field = int(cube.stem.rsplit("-", 1)[1])
    except ValueError:
        return "delete it (not a cube stage 01 names)"
    return f"{alignment_command(FieldId(rerun, run, camcol, field), paths)} (with its frames), or delete it"


def _sealed_sets(paths: DataPaths) -> Iterable[tuple[Path, str, list[Path]]]:
    """(record, what redoes it, files that must be in it) of every sealed output set in the folder."""
    for record in sorted(paths.aligned_root.glob("*/*/*/field-*.json")) if paths.aligned_root.is_dir() else []:
        rerun, run, camcol = (int(p) for p in record.parent.relative_to(paths.aligned_root).parts)
        field = int(record.stem.rsplit("-", 1)[1])
        yield record, alignment_command(FieldId(rerun, run, camcol, field), paths), []
    for tensors in sorted(paths.tensors_root.glob("*/tensors.json")) if paths.tensors_root.is_dir() else []:
        rerun, run, camcol = tensors.parent.name.split("-")
        redo = f"01_alignment.py {_run_options(int(rerun), int(run), int(camcol))}{_tensor_fields(tensors)}"
        yield tensors, redo + _data_dir_option(paths), []
    for folder in _subfolders(paths.datasets_root):
        yield paths.dataset_json(folder.name), preparation_command(paths, folder.name), []
    for folder in _subfolders(paths.augmented_root):
        yield paths.augmented_json(folder.name), f"04_augmentation.py --materialize --dataset {folder.name}", []
    for folder in _subfolders(paths.models_root):
        files = paths.model(folder.name)
        yield files.json, model_command(paths, folder.name), [files.keras]
    for folder in _subfolders(paths.tuning_root):
        if paths.study_db(folder.name).exists() or paths.best_config(folder.name).exists():
            # with the study's own settings (tune.py names any that differ); --trials beyond those run adds trials
            redo = f"tune.py --name {folder.name}{_data_dir_option(paths)} with the study's settings"
            yield paths.tuning_record(folder.name), redo, [paths.best_config(folder.name)]


def _subfolders(root: Path) -> list[Path]:
    """The folders under ``root`` that hold anything: an empty one (a run stopped before it wrote a file) holds no
    output that could be broken."""
    return sorted(p for p in root.iterdir() if p.is_dir() and any(p.iterdir())) if root.is_dir() else []


def _stale_models(paths: DataPaths) -> list[Finding]:
    """Intact models trained on an earlier build of a dataset still there under the same name: not damaged, but
    out of date (their numbers are not the dataset's any more)."""
    findings = []
    for folder in _subfolders(paths.models_root):
        check = fsio.check_seal(paths.model(folder.name).json)
        if not check.ok:  # a broken model is reported as such
            continue
        name = check.record.get("dataset")
        trained_on = (check.record.get("inputs") or {}).get("dataset")
        current = intact_dataset_id(paths, name)
        if trained_on and current and current != trained_on:
            problem = f"stale (intact, not damaged): trained on an earlier build of dataset {name}"
            findings.append(Finding(paths.model(folder.name).json, problem, model_command(paths, folder.name)))
    return findings


def verify_data_folder(paths: DataPaths, deep: bool = True) -> tuple[list[Finding], int]:
    """Every broken or unsealed file of the data folder and what redoes it, and how many files were checked.

    Checks the download manifest's files (size and sha256), every sealed output set, the cubes that no record
    seals, the simulation's own files, the LATEST pointers, the JSON under reports/, and temporary files
    interrupted runs left."""
    findings: list[Finding] = []
    checked = 0
    manifest = paths.manifest
    if manifest.exists():
        try:
            entries = fsio.read_json(manifest).get("files", {})
        except (ValueError, AttributeError):
            findings.append(Finding(manifest, "not valid JSON (damaged)", "00_download.py (verifies every file again)"))
            entries = {}
        for relpath, entry in sorted(entries.items()):
            checked += 1
            problem = fsio.check_entry(paths.sas_file(relpath), entry if isinstance(entry, dict) else {}, deep)
            if problem:
                findings.append(Finding(paths.sas_file(relpath), problem, download_command(relpath, paths)))
    sealed_cubes = set()
    for record, redo, expected in _sealed_sets(paths):
        check = fsio.check_seal(record, expected, deep)
        checked += 1 + len(check.files())
        sealed_cubes.update(str(p) for p in check.files())
        findings += [Finding(p, why, redo) for p, why in check.problems]
    findings += _stale_models(paths)
    simulated, n = _damaged_simulation(paths)
    findings += simulated
    checked += n
    for cube in sorted(paths.aligned_root.glob("*/*/*/cube-*.fits")) if paths.aligned_root.is_dir() else []:
        if str(cube) not in sealed_cubes and not DataPaths.record_beside_cube(cube).exists():
            findings.append(
                Finding(cube, "no record seals it (an interrupted or older run)", _stray_cube_redo(paths, cube))
            )
    for pointer, root, redo in (
        (paths.latest_dataset, paths.datasets_root, "02_preparation.py"),
        (paths.latest_model, paths.models_root, "03_model.py"),
    ):
        if pointer.exists():
            name = pointer.read_text(encoding="utf-8", errors="replace").strip()
            if not name or not (root / name).is_dir():
                findings.append(Finding(pointer, f"names {name!r}, which does not exist", redo))
    reports = paths.reports()
    for js in sorted(reports.rglob("*.json")) if reports.is_dir() else []:
        checked += 1
        area = js.relative_to(reports).parts[0]
        writer = REPORT_WRITERS.get(f"{area}/{js.name}") or REPORT_WRITERS.get(area)
        # run where the folder is: without --data-dir the command would act on the project's data/
        redo = f"{writer}{_data_dir_option(paths)}" if writer else f"the run that writes reports/{area}"
        try:
            content = fsio.read_json(js)
        except ValueError:
            findings.append(Finding(js, "not valid JSON (damaged)", redo))
            continue
        if isinstance(content, dict) and fsio.INTEGRITY_KEY in content:  # a report set's record
            check = fsio.check_seal(js, deep=deep)
            checked += len(check.files())
            findings += [Finding(p, why, redo) for p, why in check.problems]
    for folder, dirs, names in os.walk(paths.root):
        # a data folder inside this one that another run holds: its temporary files are being written
        dirs[:] = [d for d in dirs if not fsio.in_use_by_another_run(os.path.join(folder, d))]
        for name in names:
            if fsio.TEMPORARY_RE.match(name):
                findings.append(
                    Finding(Path(folder, name), "left by an interrupted run", "removed by the next stage run")
                )
            elif name.endswith(".part") and sdss.parse_filename(name.removesuffix(".part")) is not None:
                findings.append(  # download.partial_path: the rest of the file was never fetched
                    Finding(
                        Path(folder, name),
                        "a download an interrupted 00_download.py left unfinished",
                        "00_download.py, which resumes it",
                    )  # fmt: skip
                )
    real = paths.real_fields
    if real.root.is_dir():  # the real fields real_sky.py prepares: a data folder of their own
        inside, n = verify_data_folder(real, deep)
        checked += n
        redo = "real_sky.py (prepares the real fields again)"
        findings += [
            f if f.redo.startswith("removed") else Finding(f.path, f.problem, redo) for f in inside if f not in findings
        ]
    return findings, checked


def _damaged_simulation(paths: DataPaths) -> tuple[list[Finding], int]:
    """The simulation's own files that do not read (no record seals them; a later field's catalogs are drawn from
    them), each with the download that draws it again, and how many were checked."""
    from .config import FieldSet
    from .stages.simulate import damaged_simulation

    findings, checked = [], 0
    for (rerun, run, camcol), fields in paths.simulated_fields().items():
        measured, truth = damaged_simulation(paths, FieldSet(rerun, run, camcol, tuple(fields)), frames_only=False)
        checked += len(fields) + paths.sim_truth(rerun, run, camcol).exists()
        for f in sorted(measured):
            redo = download_command(sdss.frame_relpath("r", rerun, run, camcol, f), paths)
            findings.append(
                Finding(paths.sim_measurements(FieldId(rerun, run, camcol, f)), "unreadable (damaged)", redo)
            )
        if truth:
            redo = download_command(sdss.catalog_relpath(rerun, run, camcol, "star"), paths)
            findings.append(Finding(paths.sim_truth(rerun, run, camcol), "unreadable (damaged)", redo))
    return findings, checked


def _redo_text(redo: str) -> str:
    return redo if redo.startswith("removed") else f"redone by {redo}"


def findings_lines(findings: list[Finding], limit: int = 20) -> list[str]:
    """The findings as lines (the first ``limit``, then a count)."""
    lines = [f"{f.path}: {f.problem} -> {_redo_text(f.redo)}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"... and {len(findings) - limit} more")
    return lines
