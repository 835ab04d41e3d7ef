#!/usr/bin/env python3
"""Build the pretrained model shipped in models/stargal-pretrained: simulate a large, varied sky, run stages
00-02 and train stargal's network on it once per seed, combine the networks into one ensemble model (their mean
p(star), ``03_model.py --ensemble``), evaluate it and each network alone on the simulated reference test field and
(where the real sample is present) on the real sky, then copy the model and its card data into models/.

    bench/train_pretrained.py --data-dir /big/stargal-training [--first-field 300 --train 70] \
        [--seeds 42 43 44 45 46] [--reference-data-dir DIR] [--install] [--no-train]

The defaults rebuild the shipped model (fields 300-379: 70 training, 5 validation, 5 test; 30 epochs; seeds 42
to 46; ``--seeds 42`` builds a single network). Every
step skips work that is current, so an interrupted build resumes; ``--no-train`` only evaluates (and installs)
the model these options built before, e.g. after the evaluation code changed; ``--refresh-real-sky`` evaluates
the shipped model itself on the real sample again (in --data-dir, where its networks alone are evaluated too if
they are there) and writes its card, when the real-sky evaluation changed but the model did not. The training
sky's fields lie far from the reference fields (80-228), so the reference test field is never seen in training.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from stargal import cli, fsio, integrity
from stargal.config import SEED, SEEING_DRAWS, SIMULATION_VERSION
from stargal.errors import StargalError
from stargal.fsio import INTEGRITY_KEY, read_json, write_json, write_text
from stargal.paths import DEFAULT_SAMPLE_DIR, PRETRAINED_MODEL_DIR, PROJECT_ROOT, DataPaths, ModelFiles
from stargal.tables import markdown_table

CODE = PROJECT_ROOT / "code"


def stage(script: str, *args: str) -> None:
    done = subprocess.run([sys.executable, str(CODE / script), *args, "-q"])
    if done.returncode != 0:
        raise StargalError(f"{script} failed (exit {done.returncode})")


def _metrics_row(name: str, m: dict) -> list:
    """A card row; "-" for a metric metrics.json leaves null (undefined: a test set of one class)."""
    keys = ("accuracy", "mcc", "roc_auc", "star_purity", "star_completeness")
    return [name, m["n"], *("-" if m.get(k) is None else f"{m[k]:.3f}" for k in keys)]


def _files_paragraph(meta: dict) -> list[str]:
    if "onnx" not in meta:
        return []
    return [
        "`model.keras` is the Keras model (training, evaluation, explanations); `model.onnx` is the same network",
        "after its input normalisation, which `predict.py` runs in ONNX Runtime on a cube normalised once (three to",
        "four times faster, without TensorFlow). At export its p(star) differed from the Keras model's by at most",
        f"{meta['onnx']['max_abs_diff']:.1e} on {meta['onnx']['check_patches']} check patches; `model.json` seals both.",
        "",
    ]


def _training_sentence(meta: dict) -> list[str]:
    if "ensemble" not in meta:
        return [
            f"Augmentation {meta['augment']}, {meta['epochs_run']} epochs (best {meta['best_epoch']}), seed "
            f"{meta['seed']}; {meta['params']:,} parameters."
        ]
    members = meta["ensemble"]
    seeds = ", ".join(str(m["seed"]) for m in members)
    best = ", ".join(str(m["best_epoch"]) for m in members)
    return [
        f"An ensemble of {len(members)} networks trained alike from seeds {seeds} (augmentation {meta['augment']},",
        f"{meta['epochs']} epochs, best {best}), made by `03_model.py --ensemble`: its p(star) is their mean, so a",
        f"source that one network gets wrong by chance is outvoted; {meta['params']:,} parameters in all.",
    ]


def _members_real_sky(card: dict) -> list[str]:
    """The real catalog check of each ensemble member alone, below the ensemble's."""
    for table in [t for m in card.get("members", []) for t in m.get("real_sky_catalog", [])][:1]:
        rows = [
            [f"seed {member['seed']} alone, {row[0]}", *row[1:]]
            for member in card["members"]
            for t in member.get("real_sky_catalog", [])
            for row in t["rows"]
        ]
        lines = ["**The same, each network alone**", "", markdown_table(table["columns"], rows), ""]
        current = card["real_sky"].get("format")
        older = sorted({m.get("real_sky_format") for m in card["members"]} - {current}, key=str)
        if older:  # the networks alone were not evaluated again when the ensemble was (--refresh-real-sky)
            lines += [
                f"These rows come from an earlier version of the evaluation (format {', '.join(map(str, older))}; "
                f"the ensemble's tables above: {current}); `code/real_sky.py --model` on a network gives its "
                "current figures.",
                "",
            ]
        return lines
    return []


def _psf_range_bullet(meta: dict) -> list[str]:
    trained = meta.get("psf_range")
    if not trained:
        return []
    spans = ", ".join(
        f"{b} {lo:.2f}-{hi:.2f}" for b, lo, hi in zip(trained["bands"], trained["low"], trained["high"], strict=True)
    )
    return [
        "- It has seen the PSF sizes of its training sky only: stellar half-light radius r50 (pixels, the",
        f"  {trained['percentiles'][0]}-{trained['percentiles'][1]} percentiles over its training patches) {spans}",
        "  (`model.json` psf_range). On a field whose PSF lies outside, in worse seeing or a band blurred more,",
        "  its classes are an extrapolation: predict.py warns and writes `PSFRANGE` (inside / outside, and which",
        "  band) into its output's metadata. Inside it too, faint stars are recognised less often in worse seeing:",
        "  on 4510-4-30 blurred to 1.4 times its seeing, 83 % of the catalog stars beyond r = 22 against 87 %",
        "  (`bench/worse_seeing.py`, the ensemble of five, 2026-12-06; docs/results.md).",
    ]


def faint_recall(record: dict) -> dict | None:
    """Recall beyond r = 22 on the first real field with a star catalog (``run_real_sky``'s record): of all its
    catalog stars and of those the detection finds."""
    for field in record["fields"]:
        if "catalog" in field:
            catalog = field["catalog"]
            beyond = [
                next(b["fraction"] for b in catalog[key]["by_r"] if b["bin"].startswith(">="))
                for key in ("recall", "recall_detected")
            ]
            return {"field": field["label"], "all": beyond[0], "detected": beyond[1]}
    return None


def _faint_stars_bullet(card: dict) -> list[str]:
    faint = card.get("real_sky", {}).get("faint_recall")
    if not faint:
        return ["- Faint stars (r > 22) are recognised less often than brighter ones."]
    return [
        f"- Faint stars (r > 22) are recognised less often than brighter ones: {faint['all'] * 100:.0f} % of "
        f"{faint['field']}'s catalog stars,",
        f"  {faint['detected'] * 100:.0f} % of those the detection finds. Half of them are too faint in r to be found "
        "there.",
    ]


# the training sky's seeing draw (00_download.py --sim-seeing), in the card's words
SEEING_PHRASE = {
    "sample": 'the real sample\'s good seeing: r-band PSF core FWHM 0.81-1.66", most fields near 1.1"',
    "survey": "the survey's: r-band PSF width log-normal about SDSS's median 1.43\", quartiles 1.25 / 1.64\", "
    'from 0.95" to 2.4"',
    "mixed": "half the fields each way: odd fields the survey's seeing (r-band PSF width log-normal about SDSS's "
    'median 1.43"), even ones the real sample\'s good seeing (core FWHM 0.81-1.66")',
}


def model_card(card: dict, meta: dict) -> str:
    """models/README.md: what the pretrained model is, how it was made, how it scores, where it fails."""
    sky = card["training_sky"]
    seeing = sky.get("seeing", "sample")  # cards before the survey draw existed drew the sample's seeing
    counts = card["dataset"]
    rows = [_metrics_row(f"training sky, test fields {sky['test']}", card["test_metrics"])]
    if "reference_test_metrics" in card:
        rows.append(_metrics_row("reference sky, test field 80", card["reference_test_metrics"]))
    for member in card.get("members", []):
        rows.append(_metrics_row(f"seed {member['seed']} alone, training sky", member["test_metrics"]))
        if "reference_test_metrics" in member:
            rows.append(_metrics_row(f"seed {member['seed']} alone, reference sky", member["reference_test_metrics"]))
    lines = [
        "# The pretrained model: `stargal-pretrained`",
        "",
        "stargal's own network (`stargal.model`, architecture `stargal`), trained **only on the simulated sky**",
        f"(simulator version {card['simulation_version']}), shipped so that `predict.py` classifies the sources of any",
        "real SDSS field without training: `predict.py --model pretrained ...`, and the default whenever the data",
        "folder holds no model of its own. It takes a 25 x 25 x 5 (ugriz) patch of an aligned cube in nanomaggies",
        "and the PSF at that place (the field's stellar half-light radius per band, `stargal.psf`, measured by",
        "stage 01 from the field's own stars), and returns p(star); a source is called star when p(star) >=",
        f"{meta['threshold']:.3f} (chosen on the validation fields by maximum MCC).",
        "",
        *_files_paragraph(meta),
        "## Training data",
        "",
        f"Simulated fields {sky['fields']} of run 8162 camcol 6 (seed {sky['seed']}): training {sky['train']},",
        f"validation {sky['val']}, test {sky['test']}; {counts['train']['n']:,} / {counts['val']['n']:,} / "
        f"{counts['test']['n']:,} catalogued objects. Each field draws its own seeing ({SEEING_PHRASE[seeing]}; a",
        "Moffat core of beta 4 as measured on real stars), PSF wings, aureole and variation across the frame, Galactic",
        "latitude (star density, up to Galactic-plane crowding, and dust), sky residuals and band offsets, from",
        "ranges measured on the real sample (README: Real or simulated sky).",
        *_training_sentence(meta),
        "",
        "## Simulated test data",
        "",
        markdown_table(["test set", "objects", "accuracy", "MCC", "ROC AUC", "star purity", "star completeness"], rows),
        "",
    ]
    if "real_sky" in card:
        lines += ["## Real SDSS frames (`code/real_sky.py`)", "", card["real_sky"]["summary"], ""]
        for table in card["real_sky"]["tables"]:
            lines += [f"**{table['title']}**", "", markdown_table(table["columns"], table["rows"]), ""]
        lines += _members_real_sky(card)
    lines += [
        "## Known limits",
        "",
        "- Labels are SDSS's photometric type as the simulator measures it (PSF against model magnitude); faint",
        "  objects (r > 22) carry noisy labels on the real sky too, and the model is least certain there. Where the",
        "  truth is known (the simulated test fields), 34 % of the stars SDSS's rule lists at r 22-22.5 are",
        "  galaxies, 48 % at 22.5-23 (`bench/faint_stars.py`, version 13's fields 375-379).",
        "- Beyond r = 21 the model partly reads, on an object's own pixels, the noise that decided its SDSS label (photo",
        "  measures on those very pixels): simulated objects injected into white noise at the five high-latitude real",
        "  fields' PSFs score MCC 0.84-0.92 against labels measured on those pixels and 0.69-0.86 against labels",
        "  measured on an independent noise draw (`bench/inject_real.py --background white`; docs/results.md). It",
        "  reproduces the catalogue's call, fluctuation included, more closely than a repeat measurement would. The",
        "  real fields' PSFs score there as the simulated test fields' do (0.86-0.91), and their backgrounds cost",
        "  no more than simulated ones (figures of the version-6 model shipped before this one).",
        "- The PSF input comes from the field's own stars: a frame with no measurable star (blank, tiny or",
        "  saturated throughout) cannot be classified, and predict.py says so rather than guess. The verdict on",
        "  faint sources depends on that measurement: told a PSF 5 % wider or narrower, the model recognises a few",
        "  per cent more or fewer faint stars and calls more or fewer galaxies stars (`bench/psf_sensitivity.py`).",
        *_psf_range_bullet(meta),
        *_faint_stars_bullet(card),
        "  Faint galaxies are the other side of that: of simulated galaxies beyond r = 22 injected into five real",
        "  fields the ensemble of five calls 10.5-35.7 % stars where their labels are measured on the field's own",
        "  pixels and 12.6-27.0 % against labels measured on independent noise (the ensemble of three shipped before",
        "  it: 8.6-32.6 % and 10.7-25.4 %; `bench/inject_real.py --evaluate`, 2026-12-06, not rerun by this build).",
        "  Which is nearer SDSS's own labels depends on how photo's local sky treats the frames' pedestals",
        "  (docs/results.md, Photo's local sky).",
        "- The simulated sky it learnt from holds a third more stars than the real sky at the Galactic pole and 20-30 %",
        "  fewer galaxies at r 21-22.5 than 4510-4-30 (`bench/source_counts.py`, version 13, 2026-12-06), so it leans",
        "  to star for faint sources:",
        "  on 4510-4-30 it calls 14.7 % of the non-catalog sources at r 22-22.5 (mostly",
        "  galaxies) stars (the real-sky table above). Simulator version 11, with the real counts, halved that but",
        "  recognised 14 fewer of the 161 catalog stars and missed 8 saturated stars, so it was not shipped",
        "  (docs/results.md, Real source counts).",
        "- In 4510-4-30 the faint catalog stars (r > 21.5 or no r flux) in the frame's first 300 rows, a strip with",
        "  a positive sky pedestal and the field's brightest stars, are recognised 67 % of the time (14 of 21),",
        "  against 97 % (59 of 61) elsewhere (the version-8 model: 43 % and 82 %); of the 7 on a bright neighbour's",
        "  light (above 0.3 noise sigma in i), 4 (`bench/pedestal_recall.py`, 2026-12-06; docs/results.md).",
        "- The real sweeps list about 6 entries per field seen in u alone and 7 in z alone (noise peaks and",
        "  unflagged cosmic rays as much as stars, typed star). The simulator draws such entries, but its catalog",
        "  lists 1.1 and 1.8 per field (`bench/source_counts.py`): photo detects fainter peaks than its PSF S/N > 5",
        "  rule. The model calls the 12 of 4510-4-30 star with p(star) 0.69-0.82 (the version-10 ensemble: 0.52-0.76).",
        "- Saturated stars (r < ~15): SDSS frames interpolate over some of their rows and leave others at the",
        "  saturation level, which the simulator does not copy (trying it did not help: docs/results.md).",
        "  Sources brighter than r = 16 called star (the locus table's last column) show how often it misses them.",
        "  It calls all 348 of the six fields star, 6 of them with p(star) 0.59-0.70 (the version-6 ensemble did",
        "  too, 10 of them only with p(star) 0.50-0.70): `predict.py --threshold` above 0.59 turns some into galaxies.",
        "- Simulated galaxies are smooth bulge + disk profiles; real irregular or strongly lensed galaxies are not",
        "  represented.",
        "- Crowded Galactic-plane fields are in the training sky but rare; blends there are the main error.",
        "- Sources the detection splits from a blend (`deblended` in `predict.py --detect`'s output: 1-3 % of the",
        "  sources at high latitude, 36 % in the Galactic-plane 5405-6-99) are less sure: a real galaxy with",
        "  structure can be split in pieces that are called star. The real-sky tables above count them apart",
        "  (isolated / deblended).",
        "",
        "Rebuild: `.venv/bin/python bench/train_pretrained.py --data-dir DIR --install` (simulates the sky, runs",
        "stages 00-03, evaluates, writes this card).",
        "",
    ]
    return "\n".join(lines)


def add_real_sky(card: dict, paths: DataPaths, sample: Path, model_dir: Path, members: list[str]) -> None:
    """The real-sky evaluation of the model (``run_real_sky``, in ``paths``) into its card data, and of each
    ensemble member alone whose model folder ``paths`` holds; a member not there keeps its earlier figures, marked
    with the evaluation format they came from."""
    from stargal.stages.realsky import FORMAT_VERSION, run_real_sky

    earlier = card.get("real_sky", {}).get("format")
    result = run_real_sky(paths, sample, model=str(model_dir), out=paths.reports("real_sky", model_dir.name))
    card["real_sky"] = {
        "format": FORMAT_VERSION,
        "tables": result["tables"],
        "summary": result["summary"],
        "faint_recall": faint_recall(result),
    }
    for entry, member in zip(card.get("members", []), members, strict=False):
        if paths.model_dir(member).is_dir():  # checked whole by run_real_sky: a damaged one is an error
            alone = run_real_sky(
                paths, sample, model=str(paths.model_dir(member)), out=paths.reports("real_sky", member)
            )
            entry["real_sky_catalog"] = [t for t in alone["tables"] if t["title"].startswith("Catalog")]
            entry["real_sky_format"] = FORMAT_VERSION
        else:
            entry.setdefault("real_sky_format", earlier if earlier is not None else "before 13")


def refresh_real_sky(data_dir: str, sample: Path, seeds: list[int], epochs: int) -> int:
    """--refresh-real-sky: the shipped model's card and models/README.md with a new real-sky evaluation."""
    if not sample.is_dir():
        raise StargalError(f"--sample {sample}: no such folder (the real SDSS sample is needed to evaluate on it)")
    card_path = PRETRAINED_MODEL_DIR / "card.json"
    card = read_json(card_path)
    members = [f"stargal-pretrained-e{epochs}-s{seed}" for seed in seeds]
    add_real_sky(card, DataPaths.at(data_dir), sample, PRETRAINED_MODEL_DIR, members)
    write_json(card_path, card)
    write_text(
        PRETRAINED_MODEL_DIR.parent / "README.md", model_card(card, read_json(ModelFiles(PRETRAINED_MODEL_DIR).json))
    )
    print(f"card {card_path} and {PRETRAINED_MODEL_DIR.parent / 'README.md'} written")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="data folder for the training sky")
    parser.add_argument("--first-field", type=int, default=300)
    parser.add_argument("--train", type=int, default=70, help="training fields (then 5 validation, 5 test)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[42, 43, 44, 45, 46],
        help="one network per seed; with several, the shipped model is their ensemble (mean p(star))",
    )
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (cosine schedule over all of them)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--seeing",
        choices=SEEING_DRAWS,
        default="sample",
        help="how the training sky draws each field's seeing (00_download.py --sim-seeing; the shipped model: "
        "sample; survey and mixed were tried, docs/results.md: Worse seeing)",
    )
    parser.add_argument("--reference-data-dir", default=None, help="a data folder with the reference sky's dataset")
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE_DIR), help="real SDSS sample (skipped if absent)")
    parser.add_argument("--install", action="store_true", help="copy the model into models/stargal-pretrained")
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="take the model these options built earlier: only evaluate (and install)",
    )
    parser.add_argument(
        "--refresh-real-sky",
        action="store_true",
        help="evaluate the shipped model on the real sample again (working in --data-dir) and rewrite its card; "
        "no training, no install",
    )
    args = parser.parse_args(argv)
    cli.setup_logging(False)
    if args.refresh_real_sky:
        return refresh_real_sky(args.data_dir, Path(args.sample), args.seeds, args.epochs)
    first = args.first_field
    train = f"{first}-{first + args.train - 1}"
    val = f"{first + args.train}-{first + args.train + 4}"
    test = f"{first + args.train + 5}-{first + args.train + 9}"
    fields = f"{first}-{first + args.train + 9}"
    common = ["--data-dir", args.data_dir, "--fields", fields]
    members = [f"stargal-pretrained-e{args.epochs}-s{seed}" for seed in args.seeds]
    name = members[0] if len(members) == 1 else f"stargal-pretrained-e{args.epochs}-ensemble"
    if not args.no_train:
        stage("00_download.py", "--source", "simulated", "--sim-seeing", args.seeing, *common,
              "--workers", str(args.workers))  # fmt: skip
        stage("01_alignment.py", *common, "--workers", str(args.workers), "--no-reports")
        stage("02_preparation.py", *common, "--train-fields", train, "--val-fields", val, "--test-fields", test)
        for seed, member in zip(args.seeds, members, strict=True):
            stage("03_model.py", "--data-dir", args.data_dir, "--seed", str(seed), "--epochs", str(args.epochs),
                  "--name", member, "--no-plots")  # fmt: skip
        if len(members) > 1:
            stage("03_model.py", "--data-dir", args.data_dir, "--ensemble", *members, "--name", name)
    paths = DataPaths.at(args.data_dir)
    model_dir = paths.model_dir(name)
    integrity.require_model(model_dir)  # built and intact (with --no-train: built earlier)
    if args.install:
        model_dir = install(model_dir)
    card = {
        "simulation_version": SIMULATION_VERSION,
        "training_sky": {
            "fields": fields,
            "train": train,
            "val": val,
            "test": test,
            "seed": SEED,
            "seeing": args.seeing,
        },
        "dataset": read_json(paths.dataset_json(read_json(ModelFiles(model_dir).json)["dataset"]))["counts"],
        "test_metrics": read_json(ModelFiles(model_dir).metrics)["test"],
    }
    if len(members) > 1:  # each member alone, beside the ensemble
        card["members"] = [
            {"seed": seed, "test_metrics": read_json(ModelFiles(paths.model_dir(member)).metrics)["test"]}
            for seed, member in zip(args.seeds, members, strict=True)
        ]
    if args.reference_data_dir:
        from stargal.stages.training import evaluate_saved_model

        reference = DataPaths.at(args.reference_data_dir)
        card["reference_test_metrics"] = evaluate_saved_model(model_dir, reference)
        for entry, member in zip(card.get("members", []), members, strict=False):
            entry["reference_test_metrics"] = evaluate_saved_model(paths.model_dir(member), reference)
    if Path(args.sample).is_dir():
        add_real_sky(card, paths, Path(args.sample), model_dir, members)
    write_json(model_dir / "card.json", card)
    if args.install:
        write_text(PRETRAINED_MODEL_DIR.parent / "README.md", model_card(card, read_json(ModelFiles(model_dir).json)))
    print(f"model {model_dir}; card {model_dir / 'card.json'}")
    return 0


def install(build_dir: Path) -> Path:
    """Copy the built model into models/stargal-pretrained under that name, its record sealed afresh."""
    files = ModelFiles(PRETRAINED_MODEL_DIR)
    PRETRAINED_MODEL_DIR.mkdir(parents=True, exist_ok=True)
    record = read_json(ModelFiles(build_dir).json)
    # model.keras, metrics.json, model.onnx, and a trained (not ensembled) model's history.csv
    names = list(record[INTEGRITY_KEY]["files"])
    for previous in (files.keras, files.metrics, files.history, files.onnx):
        if previous.name not in names:  # the previous model's (e.g. history.csv, which an ensemble has not)
            previous.unlink(missing_ok=True)
    for name in names:  # each file whole or not at all: an interrupted install leaves no torn model.keras
        with fsio.atomic_path(PRETRAINED_MODEL_DIR / name) as partial:
            shutil.copy2(build_dir / name, partial)
    meta = {k: v for k, v in record.items() if k != INTEGRITY_KEY}
    fsio.seal(files.json, [PRETRAINED_MODEL_DIR / n for n in names], {**meta, "name": PRETRAINED_MODEL_DIR.name})
    print(f"installed {build_dir} -> {PRETRAINED_MODEL_DIR}")
    return PRETRAINED_MODEL_DIR


if __name__ == "__main__":
    cli.run_main(main)
