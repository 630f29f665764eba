"""Batches of ``(images in [0,1], labels, dataset indices)`` for any dataset.

In-memory tensor datasets (and Subsets of them) are gathered a batch at a time, which is orders
of magnitude faster than per-item ``__getitem__`` on small images; everything else goes through a
standard ``DataLoader``. ``set_epoch`` reshuffles deterministically (seed + epoch).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from horkd.data.images import GONE_SINCE, BadImageError
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
    """Items with their index; a file that fails to decode (:class:`BadImageError`) becomes a
    marker carrying the message, so the main process decides (skip or stop) and counts it,
    whichever worker process read it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor | None, int, int, str | None]:
        try:
            image, label = self.dataset[index]
        except BadImageError as exc:  # every file read here passed the check when the run began
            return None, -1, index, str(exc) + (f" ({GONE_SINCE})" if exc.missing else "")
        return image, label, index, None


def _collate(items: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """(images, labels, indices) of the readable items (None where none is), then the failed
    items as (place in the batch, message), and how many items the batch was cut for."""
    good = [item[:3] for item in items if item[3] is None]
    failed = [(place, item[3]) for place, item in enumerate(items) if item[3] is not None]
    if not good:
        return None, None, None, failed, len(items)
    images, labels, indices = default_collate(good)
    return images, labels, indices, failed, len(items)


def _filled(batch: tuple[Tensor, ...] | None, rows: int, failed: list[int],
            stand_in: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``batch`` made ``rows`` long again, the readable rows in their places: a failed file's
    place (``failed``) takes a copy of the batch's readable rows in turn, or, where none was
    readable, of ``stand_in``'s (the last batch yielded, or a readable file further on)."""
    if batch is None:
        pick = torch.arange(rows) % stand_in[0].shape[0]
        return tuple(t[pick] for t in stand_in)
    have = batch[0].shape[0]
    pick = torch.empty(rows, dtype=torch.long)
    bad = torch.zeros(rows, dtype=torch.bool)
    bad[failed] = True
    pick[~bad] = torch.arange(have)
    pick[bad] = torch.arange(len(failed)) % have
    return tuple(t[pick] for t in batch)


def file_roots(dataset: Any) -> list[Any]:
    """The file-backed datasets under Subsets, relabelling wrappers and concatenations."""
    if hasattr(dataset, "datasets"):
        return [r for part in dataset.datasets for r in file_roots(part)]
    for attribute in ("dataset", "subset"):
        inner = getattr(dataset, attribute, None)
        if inner is not None and not hasattr(dataset, "skip_bad"):
            return file_roots(inner)
    return [dataset]


def auto_workers(processes_here: int = 1) -> int:
    """Loader processes for a file dataset: this process's share of the CPUs it may use, less
    one core for training itself, at most 4 (small images decode faster than that)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(4, cpus // max(1, processes_here) - 1))


class _Order(Sampler[int]):
    """The sample order of the next pass, set before each: one persistent DataLoader serves
    every epoch (and a resume's partial one) instead of starting its workers again."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class BatchLoader:
    """Batches of ``(images, labels, indices)``: an in-memory dataset gathered a batch at a time
    (on ``device``: its uint8 images held there once, converted there), a file dataset through
    one persistent DataLoader, pinned when the batches go to a GPU.

    Args:
        num_workers: Loader processes for a file dataset (``None``: :func:`auto_workers` when
            ``device`` is a GPU, else 0).
        device: Where the training step runs; in-memory batches are made there.
        fill_failed_rows: Under torchrun (``world_size`` > 1) a batch keeps its rows, in their
            places, when files fail to read (skipped and counted): theirs are copies of the
            batch's readable ones (or, where none was, of the last batch's or of a readable
            file further on in this rank's share). For training: every rank must take the same
            steps, with batches of the same size. A copy weighs twice in the loss, so on one
            process, and when False (evaluation), the failed rows are left out instead, and a
            batch with no readable file is not yielded.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int | None = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
        fill_failed_rows: bool = False,
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
        # one process needs no equal batches: a copy there would only count twice
        self.fill = fill_failed_rows and world_size > 1
        self._tensor = resolve_tensor_dataset(dataset)
        # workers by default only where the batches feed a GPU: on a CPU they take the cores
        # the step itself uses (measured: no faster at 2 workers on 2 cores), and persistent
        # workers outliving a CPU run are not worth the risk
        on_gpu = device is not None and device.type == "cuda"
        self.num_workers = (
            auto_workers(world_size) if num_workers is None and self._tensor is None and on_gpu
            else num_workers or 0
        )
        self.device = device
        self.epoch = 0
        self._order_holder = _Order()
        self._loader: DataLoader | None = None
        self._last: tuple[Tensor, ...] | None = None  # what stands in for an unreadable batch

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
                images, labels = base.gather(index_map[positions], self.device)
                yield images, labels, positions
            return
        self._order_holder.indices = order[first_batch * self.batch_size :].tolist()
        for images, labels, indices, failed, rows in self._file_loader():
            batch = None if images is None else (images, labels.long(), indices)
            if failed:
                self._lost([message for _, message in failed])
                if self.fill:
                    stand_in = batch or self._last or self._readable_row(order)
                    batch = _filled(batch, rows, [place for place, _ in failed], stand_in)
            if batch is not None:
                self._last = batch if self.fill else None
                yield batch

    def _readable_row(self, order: Tensor) -> tuple[Tensor, ...]:
        """The first readable file of this rank's share, as a batch of one: what fills a batch
        with no readable file when no earlier batch can (the first after a resume), so that
        this rank still takes the step with the others instead of stopping alone."""
        items = _IndexedDataset(self.dataset)
        for index in order.tolist():
            item = items[index]
            if item[3] is None:
                images, labels, indices = default_collate([item[:3]])
                return images, labels.long(), indices
        raise BadImageError("no file of this process's share of the training images could be "
                            "read")

    def _file_loader(self) -> DataLoader:
        """The one DataLoader of a file dataset, made on first use: its workers live as long
        as this loader (each pass reads the order set in ``_order_holder``)."""
        if self._loader is None:
            workers = self.num_workers
            if workers:
                from horkd.losses import cpu_kernels

                cpu_kernels.share_cores(workers)
            self._loader = DataLoader(
                _IndexedDataset(self.dataset),
                collate_fn=_collate,
                batch_size=self.batch_size,
                sampler=self._order_holder,
                drop_last=self.drop_last,
                num_workers=workers,
                # its own generator: an unseeded DataLoader would draw from the global RNG and
                # shift every later draw, breaking bit-exact resumes
                generator=torch.Generator().manual_seed(self.seed * 100_003),
                worker_init_fn=ignore_stop_signals if workers else None,
                persistent_workers=workers > 0,
                pin_memory=self.device is not None and self.device.type == "cuda",
                prefetch_factor=4 if workers else None,
            )
        return self._loader

    def _lost(self, messages: list[str]) -> None:
        """Files that failed while being read: skipped and counted on their dataset when it
        skips bad images, else the end of the run, naming them."""
        roots = file_roots(self.dataset)
        if not all(getattr(root, "skip_bad", False) for root in roots):
            raise BadImageError(
                f"{messages[0]} (pass --skip-bad-images to skip such files and count them)"
            )
        for message in messages:
            if message in roots[0].lost:  # read again in a later epoch: counted once
                continue
            print(f"skipped an unusable image file: {message}", flush=True)
            roots[0].lost.append(message)


def ignore_stop_signals(_worker: int) -> None:
    """A loader worker ignores SIGINT/SIGTERM sent to the whole process group: the run stops at
    its next safe point and ends its workers itself (PyTorch ends them with their parent too),
    instead of seeing a worker killed mid-batch as an error."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
