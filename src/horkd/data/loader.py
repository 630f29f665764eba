"""Batches of ``(images in [0,1], labels, dataset indices)`` for any dataset.

In-memory tensor datasets (and Subsets of them) are gathered a batch at a time, which is orders
of magnitude faster than per-item ``__getitem__`` on small images; everything else goes through a
standard ``DataLoader``. ``set_epoch`` reshuffles deterministically (seed + epoch).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from horkd.data.memory import TensorImageDataset


def resolve_tensor_dataset(dataset: Dataset) -> tuple[TensorImageDataset, Tensor] | None:
    """The base tensor dataset and the index map of a (possibly nested) Subset, if any."""
    if isinstance(dataset, TensorImageDataset):
        return dataset, torch.arange(len(dataset))
    if isinstance(dataset, Subset):
        inner = resolve_tensor_dataset(dataset.dataset)
        if inner is None:
            return None
        base, index_map = inner
        return base, index_map[torch.as_tensor(dataset.indices, dtype=torch.long)]
    return None


class _IndexedDataset(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        image, label = self.dataset[index]
        return image, label, index


class BatchLoader:
    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.epoch = 0
        self._tensor = resolve_tensor_dataset(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_size(self) -> int:
        """Samples per process: the global order is cut to a multiple of the world size, as
        DistributedSampler(drop_last=True) does, so every rank takes as many steps."""
        n = len(self.dataset)  # type: ignore[arg-type]
        return n // self.world_size

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _epoch_generator(self) -> torch.Generator:
        """Seeded by (seed, epoch) alone: the same on every rank and after a resume."""
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

    def _order(self) -> Tensor:
        n = len(self.dataset)  # type: ignore[arg-type]
        if not self.shuffle:
            order = torch.arange(n)
        else:
            # The same permutation on every rank (seed + epoch), then each rank its stride.
            order = torch.randperm(n, generator=self._epoch_generator())
        if self.world_size > 1:
            order = order[: self._shard_size() * self.world_size][self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        return self.iter_from(0)

    def iter_range(self, batches: range) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """This epoch's batches numbered ``batches`` (contiguous): a process's share of a pass
        split between processes, without reading the batches before it."""
        return itertools.islice(self.iter_from(batches.start), len(batches))

    def iter_from(self, first_batch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """This epoch's batches from ``first_batch`` on, in the same order as a full pass (a
        resumed stage continues mid-epoch without reading the batches it already trained on)."""
        order = self._order()
        if self._tensor is not None:
            base, index_map = self._tensor
            first = first_batch * self.batch_size
            for start in range(first, len(self) * self.batch_size, self.batch_size):
                positions = order[start : start + self.batch_size]
                if positions.numel() == 0:
                    break
                images, labels = base.gather(index_map[positions])
                yield images, labels, positions
            return
        loader = DataLoader(
            _IndexedDataset(self.dataset),
            batch_size=self.batch_size,
            sampler=order[first_batch * self.batch_size :].tolist(),
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            # its own generator: an unseeded DataLoader would draw from the global RNG and
            # shift every later draw, breaking bit-exact resumes
            generator=self._epoch_generator(),
        )
        for images, labels, indices in loader:
            yield images, labels.long(), indices
