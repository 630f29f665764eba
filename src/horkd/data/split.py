"""Deterministic stratified splits: validation carved from train, subsets for quick runs."""

from __future__ import annotations

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
    generator = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = _quotas(counts, round(fraction * labels.numel()))
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
