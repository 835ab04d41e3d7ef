"""Stage 03's options: what a training run does, from defaults, a --config JSON (e.g. a tuning best.json) and
the command line, in that order of precedence; and the model name they give."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import fsio
from .config import SEED
from .errors import StargalError

# keys of a --config JSON (or its "hyperparameters") that steer training rather than the network
TRAINING_KEYS = ("batch_size", "epochs", "patience", "augment", "schedule", "class_weight")
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

    def resolved(self) -> TrainOptions:
        """A copy with every architecture default filled in."""
        defaults = ARCH_DEFAULTS.get(self.architecture, ARCH_DEFAULTS["reference_base"])
        augment = self.augment if self.augment is not None else defaults["augment"]
        schedule = defaults["schedule"] if self.schedule == "default" else self.schedule
        epochs = self.epochs if self.epochs is not None else defaults["epochs"]
        patience = self.patience if self.patience is not None else defaults["patience"]
        tta = self.tta if self.tta is not None else defaults["tta"]
        return replace(self, augment=augment, schedule=schedule, epochs=epochs, patience=patience, tta=tta)


def load_config(path: str | Path) -> dict:
    """A hyper-parameter JSON: {"architecture": ..., "hyperparameters": {...}, training keys...}."""
    try:
        cfg = fsio.read_json(path)
    except FileNotFoundError:
        raise StargalError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise StargalError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise StargalError(f"{path}: expected a JSON object")
    hp = dict(cfg.get("hyperparameters") or cfg.get("hp") or {})
    out = {k: cfg[k] for k in ("architecture", *TRAINING_KEYS) if k in cfg}
    for key in TRAINING_KEYS:  # tuning results may keep batch size etc. among the hyper-parameters
        if key in hp:
            out.setdefault(key, hp.pop(key))
    out["hyperparameters"] = hp
    return out


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """TrainOptions from 03_model.py's arguments: defaults < --config JSON < explicit flags."""
    cfg = load_config(args.config) if getattr(args, "config", None) else {"hyperparameters": {}}
    hp = dict(cfg.get("hyperparameters", {}))
    if args.learning_rate is not None:
        if not args.learning_rate > 0:
            raise StargalError(f"--learning-rate: must be positive, got {args.learning_rate}")
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
    )


def model_name(options: TrainOptions, dataset: str) -> str:
    """``options.name``, else ARCHITECTURE-DATASET-sSEED."""
    base = options.name or f"{options.architecture}-{dataset}"
    return f"{base}-s{options.seed}" if not options.name else base
