"""Datasets as ``(image float [C, H, W] in [0, 1], label)``, split train / val / test."""

from __future__ import annotations

import inspect

import torch
from torch.utils.data import Dataset, Subset

from horkd.data.augment import AugmentSpec, augment_batch
from horkd.data.digest import data_digest
from horkd.data.loader import BatchLoader
from horkd.data.memory import TensorImageDataset
from horkd.data.partition import load_partition
from horkd.data.registry import DATASETS, DataNotFoundError, DatasetInfo, DataSplits
from horkd.data.split import (
    labels_of,
    split_indices,
    stratified_split,
    stratified_subset,
    students_validation,
)
from horkd.data.validation_source import holds_validation_apart


def build_splits(
    name: str,
    root: str | None = None,
    hr_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    val_from_subset: int | None = None,
    val_size: int | None = None,
    split_file: str | None = None,
    part: str | None = None,
    test_part: str | None = None,
    **builder_kwargs,
) -> DataSplits:
    """Load a dataset and carve a stratified validation split out of its training set.

    The test split is only ever subset (for quick runs), never used for choices. With
    ``val_from_subset=N`` the validation split is the one a ``train_subset=N`` run carves and every
    other training image trains: how a teacher is kept off its students' validation images. With
    ``split_file`` (a partition manifest) the run trains on its ``part`` and, with ``test_part``,
    is tested on that part of the training images instead of the dataset's test split.
    """
    builder = DATASETS.get(name)
    accepted = inspect.signature(builder).parameters
    offered = {**builder_kwargs, "val_fraction": val_fraction}
    extra = {k: v for k, v in offered.items() if k in accepted}
    train, test, info = builder(root, hr_size, download, **extra)
    if hr_size is not None:
        info.native_size = hr_size
    if getattr(train, "validation_indices", None) is not None:
        if split_file is not None:
            raise ValueError(held_apart_refusal(name))
        if not holds_validation_apart(name):  # a new dataset's author, not a user, reads this
            raise ValueError(f"{name} holds its validation images apart (validation_indices): "
                             "register it in horkd.data.validation_source.HELD_APART, so the "
                             "page and the assistant's guard say what it validates on")
        return _held_validation(name, train, test, info, val_fraction, seed, train_subset,
                                test_subset, val_size)
    labels = labels_of(train)
    chosen = tested = None
    if split_file is not None:
        partition = load_partition(split_file)
        partition.check(name, labels.numel(), data_digest(name, root))
        chosen = partition.indices(part, "data.part") if part is not None else None
        tested = partition.indices(test_part, "data.test_part") if test_part is not None else None
    carved = split_indices(labels, seed, val_fraction, val_size, train_subset, val_from_subset,
                           chosen, tested)
    if carved.test is not None:
        test = Subset(train, carved.test.tolist())
    if test_subset is not None:
        test = Subset(test, stratified_subset(labels_of(test), test_subset, seed).tolist())
    for layer in carved.layers:  # nested as they were carved: caches key on the index chain
        train = Subset(train, layer.tolist())
    val = None
    if carved.held is not None:
        assert carved.keep is not None
        train, val = Subset(train, carved.keep.tolist()), Subset(train, carved.held.tolist())
    _refuse_empty(name, train, val, test, val_fraction)
    return DataSplits(train, val, test, info)


def held_apart_refusal(name: str) -> str:
    """Why a partition manifest cannot carve a dataset that holds its validation and test
    images apart (the glyphs of other font families): one message for the config and the loader."""
    return (f"data.split_file partitions a dataset's training images; {name} holds its validation "
            "and test images apart (other fonts or sources than training): leave it unset")


def _held_validation(name: str, train: Dataset, test: Dataset, info: DatasetInfo,
                     val_fraction: float, seed: int, train_subset: int | None,
                     test_subset: int | None, val_size: int | None = None) -> DataSplits:
    """A dataset that holds its validation images apart (``train.validation_indices``: the
    glyphs of the validation fonts) validates on them, never on images carved from training.

    ``train_subset=N`` takes N training images and, without ``val_size``, a validation share in
    proportion (``val_fraction`` of the two together), both stratified; ``val_from_subset`` has
    nothing to carve: the held-out images are already every run's validation images.
    ``val_size=N`` takes N of every held-out image (stratified), whatever the training subset:
    a validation split as small as a few-label run's labels, or larger than the proportional
    share, up to all of the validation fonts.
    """
    held = torch.as_tensor(train.validation_indices, dtype=torch.long)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held] = False
    kept = torch.nonzero(keep).flatten()
    labels = labels_of(train)
    if train_subset is not None:
        kept = kept[stratified_subset(labels[kept], train_subset, seed)]
        if val_size is None:
            wanted = max(1, round(train_subset * val_fraction / (1 - val_fraction)))
            held = held[stratified_subset(labels[held], wanted, seed)]
    if val_size is not None:
        if val_size > len(held):
            raise ValueError(f"data.val_size={val_size}: {name} holds {len(held)} validation "
                             "images")
        held = held[stratified_subset(labels[held], val_size, seed)]
    if test_subset is not None:
        test = Subset(test, stratified_subset(labels_of(test), test_subset, seed).tolist())
    splits = DataSplits(Subset(train, kept.tolist()), Subset(train, held.tolist()), test, info)
    _refuse_empty(name, splits.train, splits.val, splits.test, val_fraction)
    return splits


def _refuse_empty(name: str, train: Dataset, val: Dataset | None, test: Dataset,
                  val_fraction: float) -> None:
    """A split with no image scores nan and every choice made on it is -inf: say so at once."""
    if len(train) == 0 or len(test) == 0:
        empty = "training" if len(train) == 0 else "test"
        raise ValueError(f"{name}: the {empty} split holds no image; add images")
    if val is not None and len(val) == 0:
        raise ValueError(
            f"{name}: the validation split is empty: data.val_fraction={val_fraction:g} of "
            f"{len(train)} training images rounds to none; add images or raise "
            f"data.val_fraction (below 0.5)")


__all__ = [
    "DATASETS",
    "AugmentSpec",
    "BatchLoader",
    "DataNotFoundError",
    "DataSplits",
    "DatasetInfo",
    "TensorImageDataset",
    "augment_batch",
    "build_splits",
    "labels_of",
    "stratified_split",
    "split_indices",
    "stratified_subset",
    "students_validation",
]
