"""Where a run's validation images come from: carved from its training images by a seeded draw,
or a set the dataset itself holds apart (the glyphs of the validation fonts). Torch-free, so the
study page and ``horkd study --status`` can say it without loading any data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from horkd.registry import Registry

#: Datasets whose validation images are held apart by the data itself, never carved from
#: training: name -> what those images are (a dataset of a plugin registers its own:
#: ``HELD_APART.register("mine")("its validation folder")``). ``horkd.data.build_splits``
#: validates them on ``train.validation_indices``; which images they are depends on the
#: :data:`HELD_APART_KEYS` alone, not on a seed, a subset or which training fonts a run takes.
HELD_APART: Registry[str] = Registry("dataset that holds its validation images apart")
HELD_APART.register("glyphs")("the validation fonts (whole design groups no network trains on)")

#: The settings that decide which images a held-apart validation set is drawn from.
HELD_APART_KEYS = ("dataset", "root", "val_fraction", "test_fraction")


def holds_validation_apart(dataset: str) -> bool:
    return dataset in HELD_APART


def describe_validation(data: Mapping[str, Any]) -> str:
    """What a run with these ``data`` settings validated on, as the page says it."""
    if holds_validation_apart(data["dataset"]):
        return HELD_APART.get(data["dataset"])
    if data.get("val_size"):
        return f"{data['val_size']} images carved from its own training images"
    if data.get("val_from_subset"):
        return (f"the validation images of a {data['val_from_subset']}-image subset run, never "
                "trained on")
    return f"{data.get('val_fraction', 0.1):.0%} of its own training images"


def same_held_apart_set(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> bool | None:
    """Whether two runs of a dataset that holds its validation images apart drew them from the
    same set (so neither trained on the other's validation images); None where ``ours`` is not
    such a dataset, and the carving rules decide."""
    if not holds_validation_apart(ours["dataset"]):
        return None
    return not held_apart_differences(ours, theirs)


def held_apart_differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """The :data:`HELD_APART_KEYS` two runs' data settings differ on (none: the same set)."""
    return [k for k in HELD_APART_KEYS if ours.get(k) != theirs.get(k)]
