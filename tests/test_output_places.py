"""The output-place checks of stages 02 and 03 (``fsio.require_output_places``): the advice in their one line."""

from __future__ import annotations

import pytest

from stargal.errors import StargalError
from stargal.paths import DataPaths
from stargal.stages import preparation, training


@pytest.mark.parametrize(
    "check, pointer",
    [(preparation._check_output_places, "datasets/LATEST"), (training.check_output_places, "models/LATEST")],
)
def test_a_folder_where_the_latest_pointer_goes_is_refused_without_offering_another_name(tmp_path, check, pointer):
    """A folder where LATEST goes: the line said "or give another --dataset" (--name), but every name writes the
    same LATEST, so another name fails the same way. The line now says to move or delete it, and no more."""
    paths = DataPaths(tmp_path / "data")
    place = paths.root / pointer
    place.mkdir(parents=True)
    with pytest.raises(StargalError) as raised:
        check(paths, "mine")
    assert str(raised.value).endswith(f"{place}: a folder, not a file: stage 0{'2' if 'datasets' in pointer else '3'}"
                                      " writes that file; move or delete it")  # fmt: skip


def test_a_folder_where_a_named_output_file_goes_still_offers_another_name(tmp_path):
    paths = DataPaths(tmp_path / "data")
    place = paths.dataset_json("mine")
    place.mkdir(parents=True)
    with pytest.raises(StargalError, match=r"move or delete it, or give another --dataset$"):
        preparation._check_output_places(paths, "mine")
