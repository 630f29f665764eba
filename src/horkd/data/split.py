"""Deterministic stratified splits: validation carved from train, subsets for quick runs."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from horkd.data.memory import TensorImageDataset


def labels_of(dataset: Dataset) -> Tensor:
    """All labels without decoding images (tensor datasets, ImageFolder targets, Subsets)."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, TensorImageDataset):
        return dataset.labels
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(keep, split) index tensors; ``split`` holds ``fraction`` of every class (at least one)."""
    generator = torch.Generator().manual_seed(seed)
    keep, split = [], []
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n = max(1, round(fraction * idx.numel())) if idx.numel() > 1 else 0
        split.append(idx[:n])
        keep.append(idx[n:])
    return torch.cat(keep).sort().values, torch.cat(split).sort().values


def stratified_subset(labels: Tensor, n: int, seed: int) -> Tensor:
    """About ``n`` indices with class proportions kept."""
    if n >= labels.numel():
        return torch.arange(labels.numel())
    _, chosen = stratified_split(labels, n / labels.numel(), seed)
    return chosen
