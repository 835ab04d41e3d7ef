"""The reference configuration of the course project, and survey constants, in one place."""

from __future__ import annotations

from dataclasses import dataclass

BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z")
REFERENCE_BAND = "r"
FRAME_SHAPE: tuple[int, int] = (1489, 2048)  # rows, columns of an SDSS frame
PIXEL_SCALE_ARCSEC = 0.396
FIELD_OVERLAP_ROWS = 128  # consecutive fields of a camcol overlap by about this many rows
EXPTIME_S = 53.907456
SAS_BASE_URL = "https://data.sdss.org/sas/dr17/eboss/"
SWEEP_VERSION = "dr13_final"
SPLITS: tuple[str, ...] = ("train", "val", "test")  # dataset splits, in this order everywhere
LABEL_GALAXY = 0
LABEL_STAR = 1
OBJC_TYPE_GALAXY = 3
OBJC_TYPE_STAR = 6
SEED = 42
# bump when the simulated sky's pixels or catalogs change: stage 00 then renders existing simulated data again
SIMULATION_VERSION = 13
# how the simulated sky draws each field's seeing: "sample", the real sample fields' (good) seeing, the default
# sky's; "survey", the survey's seeing distribution (stargal.simulate.draw_seeing_r); "mixed", odd fields as
# "survey" and even ones as "sample" (stargal.simulate.field_conditions)
SEEING_DRAWS = ("sample", "survey", "mixed")
DEFAULT_SEEING = SEEING_DRAWS[0]
PATCH_SIZE = 25
# the smallest patch each network's layers can take (its pooling and cropping leave nothing below it); a test builds
# each at its minimum and two pixels under it
MIN_PATCH_SIZE = {"reference_base": 11, "reference_regularised": 11, "stargal": 7}


@dataclass(frozen=True)
class FieldSet:
    """Which SDSS fields are used and how they are split."""

    rerun: int = 301
    run: int = 8162
    camcol: int = 6
    fields: tuple[int, ...] = (80, 103, 111, 120, 147, 174, 177, 214, 222, 228)
    train_fields: tuple[int, ...] = (103, 111, 147, 174, 177, 214, 222)
    val_fields: tuple[int, ...] = (120, 228)
    test_fields: tuple[int, ...] = (80,)

    @property
    def label(self) -> str:
        return f"{self.rerun}/{self.run}/{self.camcol}"


REFERENCE = FieldSet()

# The course project's published result on the test field, quoted for comparison only.
REFERENCE_RESULT = {"accuracy": 0.905, "mcc": 0.746, "majority_class_accuracy": 0.746}


def config_changes(old: dict, new: dict) -> list[str]:
    """What differs between two training configs, as 'augment combination -> d4' (or the key alone)."""
    out = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before != after:
            scalar = not isinstance(before, dict | list) and not isinstance(after, dict | list)
            out.append(f"{key} {before} -> {after}" if scalar else key)
    return out
