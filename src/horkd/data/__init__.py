"""Datasets as ``(image float [C, H, W] in [0, 1], label)``, split train / val / test."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from horkd.data import fine_grained, folder, glyphs, vision  # noqa: F401  (register builders)
from horkd.data.augment import AugmentSpec, augment_batch
from horkd.data.loader import BatchLoader
from horkd.data.memory import TensorImageDataset
from horkd.data.registry import DATASETS, DataNotFoundError, DatasetInfo, DataSplits
from horkd.data.split import labels_of, stratified_split, stratified_subset


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
    **builder_kwargs,
) -> DataSplits:
    """Load a dataset and carve a stratified validation split out of its training set.

    The test split is only ever subset (for quick runs), never used for choices. With
    ``val_from_subset=N`` the validation split is the one a ``train_subset=N`` run carves and every
    other training image trains: how a teacher is kept off its students' validation images.
    """
    builder = DATASETS.get(name)
    accepted = inspect.signature(builder).parameters
    offered = {**builder_kwargs, "val_fraction": val_fraction}
    extra = {k: v for k, v in offered.items() if k in accepted}
    train, test, info = builder(root, hr_size, download, **extra)
    if hr_size is not None:
        info.native_size = hr_size
    if getattr(train, "validation_indices", None) is not None:
        return _held_validation(name, train, test, info, val_fraction, seed, train_subset,
                                test_subset)
    labels = labels_of(train)
    if train_subset is not None:
        chosen = stratified_subset(labels, train_subset, seed)
        train, labels = Subset(train, chosen.tolist()), labels[chosen]
    if test_subset is not None:
        test = Subset(test, stratified_subset(labels_of(test), test_subset, seed).tolist())
    val = None
    if val_from_subset is not None:
        keep = torch.ones(labels.numel(), dtype=torch.bool)
        keep[students_validation(labels, val_from_subset, val_fraction, seed)] = False
        held = torch.nonzero(~keep).flatten()
        train, val = Subset(train, torch.nonzero(keep).flatten().tolist()), Subset(train, held.tolist())
    elif val_fraction > 0:
        keep, held = stratified_split(labels, val_fraction, seed)
        train, val = Subset(train, keep.tolist()), Subset(train, held.tolist())
    _refuse_empty(name, train, val, test, val_fraction)
    return DataSplits(train, val, test, info)


def _held_validation(name: str, train: Dataset, test: Dataset, info: DatasetInfo,
                     val_fraction: float, seed: int, train_subset: int | None,
                     test_subset: int | None) -> DataSplits:
    """A dataset that holds its validation images apart (``train.validation_indices``: the
    glyphs of the validation fonts) validates on them, never on images carved from training.

    ``train_subset=N`` takes N training images and a validation share in proportion
    (``val_fraction`` of the two together), both stratified; ``val_from_subset`` has nothing to
    carve: the held-out images are already every run's validation images.
    """
    held = torch.as_tensor(train.validation_indices, dtype=torch.long)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held] = False
    kept = torch.nonzero(keep).flatten()
    labels = labels_of(train)
    if train_subset is not None:
        kept = kept[stratified_subset(labels[kept], train_subset, seed)]
        wanted = max(1, round(train_subset * val_fraction / (1 - val_fraction)))
        held = held[stratified_subset(labels[held], wanted, seed)]
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


def students_validation(labels: Tensor, subset: int, val_fraction: float, seed: int) -> Tensor:
    """Indices (into ``labels``) of the validation images of a ``train_subset=subset`` run."""
    chosen = stratified_subset(labels, subset, seed)
    _, held = stratified_split(labels[chosen], val_fraction, seed)
    return chosen[held].sort().values


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
    "stratified_subset",
]
