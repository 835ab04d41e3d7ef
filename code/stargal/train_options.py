"""Stage 03's options: what a training run does, from defaults, a --config JSON (e.g. a tuning best.json) and
the command line, in that order of precedence; and the model name they give."""

from __future__ import annotations

import argparse
import difflib
import math
import numbers
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import fsio
from .config import SEED
from .errors import StargalError

# keys of a --config JSON (or its "hyperparameters") that steer training rather than the network
TRAINING_KEYS = ("batch_size", "epochs", "patience", "augment", "schedule", "class_weight")
# what a tuning best.json carries besides the configuration: read by people, ignored by training
INFORMATIONAL_KEYS = ("value", "objective", "trial", "val_mcc", "study", "dataset", "n_trials")
CONFIG_KEYS = ("architecture", "hyperparameters", "hp", *TRAINING_KEYS, *INFORMATIONAL_KEYS)
SCHEDULES = ("none", "cosine", "plateau")
CLASS_WEIGHTS = ("none", "balanced")
# the allowed values of each setting: (kind, low, high) with kind int/float/fraction/choice
_LIMITS = {
    "learning_rate": ("float", 0.0, None),
    "weight_decay": ("float0", 0.0, None),
    "l2": ("float0", 0.0, None),
    "filters": ("int", 1, None),
    "dense_units": ("int", 1, None),
    "dense_dropout": ("fraction", 0.0, 1.0),
    "spatial_dropout": ("fraction", 0.0, 1.0),
    "dropout": ("fraction", 0.0, 1.0),
    "label_smoothing": ("fraction", 0.0, 1.0),
    "batch_size": ("int", 1, None),
    "epochs": ("int", 1, None),
    "patience": ("int", 1, None),
}
# what each architecture trains with unless told otherwise: the reference models as the course project
# did (no augmentation, constant learning rate, early stopping); ours with streamed symmetries and a
# cosine schedule that anneals within ``epochs`` (early stopping then only guards against a bad end)
ARCH_DEFAULTS = {
    "reference_base": {"augment": "none", "schedule": None, "epochs": 60, "patience": 8, "tta": False},
    "reference_regularised": {"augment": "none", "schedule": None, "epochs": 60, "patience": 8, "tta": False},
    "stargal": {"augment": "d4", "schedule": "cosine", "epochs": 30, "patience": 10, "tta": True},
}


@dataclass
class TrainOptions:
    """One training run; None (and schedule "default") mean the architecture's default (ARCH_DEFAULTS)."""

    architecture: str = "stargal"
    hyperparameters: dict = field(default_factory=dict)
    epochs: int | None = None
    patience: int | None = None
    batch_size: int = 256
    augment: str | None = None
    schedule: str | None = "default"
    class_weight: str | None = None  # None or "balanced"
    seed: int = SEED
    tta: bool | None = None  # test-time augmentation
    name: str | None = None
    force: bool = False
    plots: bool = True
    verbose: int | str = "auto"
    tuned_on: str | None = None  # the dataset a --config was tuned on, when it says

    def resolved(self) -> TrainOptions:
        """A copy with every architecture default filled in."""
        defaults = ARCH_DEFAULTS.get(self.architecture, ARCH_DEFAULTS["reference_base"])
        augment = self.augment if self.augment is not None else defaults["augment"]
        schedule = defaults["schedule"] if self.schedule == "default" else self.schedule
        epochs = self.epochs if self.epochs is not None else defaults["epochs"]
        patience = self.patience if self.patience is not None else defaults["patience"]
        tta = self.tta if self.tta is not None else defaults["tta"]
        return replace(self, augment=augment, schedule=schedule, epochs=epochs, patience=patience, tta=tta)


def _unknown(path, key: str, what: str, valid) -> StargalError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return StargalError(f"{path}: unknown {what} {key!r}{hint} (valid: {', '.join(sorted(valid))})")


def check_value(key: str, value, source) -> None:
    """Raise StargalError naming ``source`` and ``key`` when ``value`` is not allowed for the setting."""
    from .augment import POLICIES

    if key == "augment":
        if value not in POLICIES:
            raise StargalError(f"{source}: augment {value!r} is not one of {', '.join(POLICIES)}")
        return
    if key == "schedule":
        if value is not None and value not in SCHEDULES:
            raise StargalError(f"{source}: schedule {value!r} is not one of {', '.join(SCHEDULES)}")
        return
    if key == "class_weight":
        if value is not None and value not in CLASS_WEIGHTS:
            raise StargalError(f"{source}: class_weight {value!r} is not one of {', '.join(CLASS_WEIGHTS)}")
        return
    if key not in _LIMITS:
        return
    kind, low, high = _LIMITS[key]
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind == "int":
        ok = number and float(value).is_integer() and value >= low
        want = f"a whole number >= {low}"
    elif kind == "fraction":
        ok = number and low <= value < high
        want = f"a number in [{low:g}, {high:g})"
    else:
        ok = number and (value >= low if kind == "float0" else value > low) and value == value
        want = "a number >= 0" if kind == "float0" else "a positive number"
    if not ok:
        raise StargalError(f"{source}: {key} must be {want}, got {value!r}")


def load_config(path: str | Path) -> dict:
    """A hyper-parameter JSON: {"architecture": ..., "hyperparameters": {...}, training keys...}, every key
    checked against the known ones and every value against its allowed range (one-line errors naming both)."""
    try:
        cfg = fsio.read_json(path, advice="correct the file")
    except FileNotFoundError:
        raise StargalError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise StargalError(f"{path}: is a folder, not a config file") from None
    if not isinstance(cfg, dict):
        raise StargalError(f"{path}: expected a JSON object, found {type(cfg).__name__}")
    for key in cfg:
        if key not in CONFIG_KEYS:
            raise _unknown(path, key, "key", CONFIG_KEYS)
    hp = cfg.get("hyperparameters") if "hyperparameters" in cfg else cfg.get("hp")
    if hp is None:
        hp = {}
    if not isinstance(hp, dict):
        raise StargalError(f"{path}: hyperparameters must be a JSON object, found {type(hp).__name__}")
    hp = dict(hp)
    out = {k: cfg[k] for k in ("architecture", *TRAINING_KEYS) if k in cfg}
    for key in TRAINING_KEYS:  # tuning results may keep batch size etc. among the hyper-parameters
        if key in hp:
            out.setdefault(key, hp.pop(key))
    for key, value in out.items():
        if key != "architecture":
            check_value(key, value, path)
    if "architecture" in out:  # null included: it would not fall back to the default
        _check_architecture(out["architecture"], path)
    if cfg.get("dataset") is not None:
        if not isinstance(cfg["dataset"], str):
            raise StargalError(f"{path}: dataset must be a dataset name, found {cfg['dataset']!r}")
        out["tuned_on"] = cfg["dataset"]
    out["hyperparameters"] = hp
    out["source"] = str(path)
    return out


def _check_architecture(architecture, source) -> None:
    from .model import ARCHITECTURES

    if architecture not in ARCHITECTURES:
        raise StargalError(f"{source}: architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}")


def check_hyperparameters(architecture: str, hp: dict, source) -> None:
    """Every hyper-parameter is one the architecture has, with an allowed value."""
    from .model import DEFAULT_HP

    _check_architecture(architecture, source)
    valid = DEFAULT_HP[architecture]
    for key, value in hp.items():
        if key not in valid:
            raise _unknown(source, key, f"hyper-parameter of {architecture}", [*valid, *TRAINING_KEYS])
        check_value(key, value, source)


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """TrainOptions from 03_model.py's arguments: defaults < --config JSON < explicit flags."""
    cfg = load_config(args.config) if getattr(args, "config", None) else {"hyperparameters": {}}
    hp = dict(cfg.get("hyperparameters", {}))
    if cfg.get("source"):
        architecture = getattr(args, "architecture", None) or cfg.get("architecture") or TrainOptions().architecture
        check_hyperparameters(architecture, hp, cfg["source"])
    if args.learning_rate is not None:
        if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):  # inf made every loss NaN
            raise StargalError(f"--learning-rate: must be a positive number, got {args.learning_rate}")
        hp["learning_rate"] = args.learning_rate
    defaults = TrainOptions()

    def pick(flag, key, default):
        value = getattr(args, flag, None)
        return value if value is not None else cfg.get(key, default)

    schedule = pick("schedule", "schedule", "default")
    class_weight = pick("class_weight", "class_weight", None)
    return TrainOptions(
        architecture=pick("architecture", "architecture", defaults.architecture),
        hyperparameters=hp,
        epochs=pick("epochs", "epochs", None),
        patience=pick("patience", "patience", None),
        batch_size=int(pick("batch_size", "batch_size", defaults.batch_size)),
        augment=pick("augment", "augment", None),
        schedule=None if schedule == "none" else schedule,
        class_weight=None if class_weight == "none" else class_weight,
        seed=args.seed,
        tta=args.tta,
        name=args.name,
        force=bool(args.force),
        plots=not args.no_plots,
        tuned_on=cfg.get("tuned_on"),
    )


def model_name(options: TrainOptions, dataset: str) -> str:
    """``options.name``, else ARCHITECTURE-DATASET-sSEED."""
    base = options.name or f"{options.architecture}-{dataset}"
    return f"{base}-s{options.seed}" if not options.name else base
