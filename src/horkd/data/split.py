"""Deterministic stratified splits: validation carved from train, subsets for quick runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset

from horkd.data.memory import TensorImageDataset


def labels_of(dataset: Dataset) -> Tensor:
    """All labels without decoding images (tensor datasets, ImageFolder targets, Subsets)."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, TensorImageDataset):
        return dataset.labels
    if isinstance(dataset, ConcatDataset):
        return torch.cat([labels_of(part) for part in dataset.datasets])
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def _quotas(counts: Tensor, total: int) -> Tensor:
    """Per-class sizes summing to exactly ``total``, proportional to ``counts`` (largest remainder),
    with at least one per class where a class has two or more samples and ``total`` allows."""
    share = counts.double() * total / counts.sum()
    quota = share.floor().long()
    if total >= int((counts > 1).sum()):
        quota = torch.where((counts > 1) & (quota == 0), torch.ones_like(quota), quota)
    quota = torch.minimum(quota, counts)
    order = torch.argsort(share - share.floor(), descending=True)
    position = 0
    while int(quota.sum()) != total and position < 10 * len(counts):
        c = order[position % len(counts)]
        if int(quota.sum()) < total and quota[c] < counts[c]:
            quota[c] += 1
        elif int(quota.sum()) > total and quota[c] > 1:
            quota[c] -= 1
        position += 1
    return quota


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(keep, split) index tensors; ``split`` holds ``round(fraction * N)`` samples with every
    class in proportion (and at least one per class when possible)."""
    return stratified_split_count(labels, round(fraction * labels.numel()), seed)


def stratified_split_count(labels: Tensor, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """As :func:`stratified_split`, with ``split`` holding exactly ``count`` samples (the same
    draw a fraction rounding to ``count`` gives)."""
    generator = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = _quotas(counts, count)
    keep, split = [], []
    for cls, n in zip(classes.tolist(), quota.tolist(), strict=True):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        split.append(idx[:n])
        keep.append(idx[n:])
    return torch.cat(keep).sort().values, torch.cat(split).sort().values


def stratified_subset(labels: Tensor, n: int, seed: int) -> Tensor:
    """Exactly ``n`` indices (or all) with class proportions kept."""
    if n >= labels.numel():
        return torch.arange(labels.numel())
    _, chosen = stratified_split(labels, n / labels.numel(), seed)
    return chosen


def labeled_mask(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """bool per sample: whose label the task loss may see in a few-label run.

    Stratified, so every class keeps labels; the same ``seed`` gives the same labelled images to
    every method, which is what makes their comparison fair.
    """
    mask = torch.zeros(labels.numel(), dtype=torch.bool)
    mask[stratified_subset(labels, max(1, round(fraction * labels.numel())), seed)] = True
    return mask


def students_validation(labels: Tensor, subset: int, val_fraction: float, seed: int) -> Tensor:
    """Indices (into ``labels``) of the validation images of a ``train_subset=subset`` run."""
    chosen = stratified_subset(labels, subset, seed)
    _, held = stratified_split(labels[chosen], val_fraction, seed)
    return chosen[held].sort().values


@dataclass
class SplitIndices:
    """Which training images a run's splits hold: the one account of the carving, read both by
    ``build_splits`` and by whoever must know which images a config's runs saw.

    Attributes:
        images: How many training images the dataset holds.
        layers: Nested selections from the training set (a partition's part, then a
            ``train_subset``), each indexing into the one before.
        keep: What trains, indexing into the last layer; ``None``: all of it.
        held: What validates, indexing into the last layer; ``None``: no validation split.
        test: The test images when a partition's part is the test split (training-set
            indices); ``None``: the dataset's own test split.
    """

    images: int
    layers: list[Tensor]
    keep: Tensor | None
    held: Tensor | None
    test: Tensor | None = None

    def _to_base(self, index: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            index = layer[index]
        return index

    def pool(self) -> Tensor:
        """Training-set indices of every image the run trains or validates on."""
        top = self.layers[-1].numel() if self.layers else self.images
        return self._to_base(torch.arange(top))

    @property
    def train(self) -> Tensor:
        """Training-set indices of what trains."""
        return self.pool() if self.keep is None else self._to_base(self.keep)

    @property
    def val(self) -> Tensor | None:
        """Training-set indices of what validates (``None``: no validation split)."""
        return None if self.held is None else self._to_base(self.held)


def split_indices(
    labels: Tensor,
    seed: int,
    val_fraction: float = 0.1,
    val_size: int | None = None,
    train_subset: int | None = None,
    val_from_subset: int | None = None,
    part: Tensor | None = None,
    test_part: Tensor | None = None,
) -> SplitIndices:
    """The carving of a dataset's training images (``labels``): a partition's ``part`` (training
    indices) if given, then a stratified ``train_subset`` of it, then the validation split: with
    ``val_from_subset=N`` the images a ``train_subset=N`` run validates on (every other image
    trains), else ``val_size`` images, else ``val_fraction`` of them (0: none)."""
    layers = [] if part is None else [part]
    if train_subset is not None:
        inner = labels if part is None else labels[part]
        layers.append(stratified_subset(inner, train_subset, seed))
    inner_labels = labels[SplitIndices(labels.numel(), layers, None, None).pool()]
    keep = held = None
    if val_from_subset is not None:
        held = students_validation(inner_labels, val_from_subset, val_fraction, seed)
        mask = torch.ones(inner_labels.numel(), dtype=torch.bool)
        mask[held] = False
        keep = torch.nonzero(mask).flatten()
    elif val_size is not None:
        if val_size >= inner_labels.numel():
            raise ValueError(f"data.val_size={val_size} leaves no image to train on: the "
                             f"training split holds {inner_labels.numel()}")
        keep, held = stratified_split_count(inner_labels, val_size, seed)
    elif val_fraction > 0:
        keep, held = stratified_split(inner_labels, val_fraction, seed)
    return SplitIndices(labels.numel(), layers, keep, held, test_part)
