"""Several processes through ``torchrun``: process group set-up, rank-0 duties, sharded global relations.

``torchrun --nproc_per_node=N -m horkd run CONFIG`` starts N copies; each reads ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` from its environment. Without those variables everything here
is a no-op, so a single process never touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> None:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); idempotent."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The process that logs, prints progress and writes files."""
    return rank() == 0


def print_main(*args: object, **kwargs: object) -> None:
    """``print`` from the main process only, so torchrun logs each line once."""
    if is_main():
        print(*args, **kwargs)  # type: ignore[call-overload]


def local_device(device: torch.device) -> torch.device:
    """Each process drives its own GPU (``LOCAL_RANK``); CPU processes share the CPU."""
    if device.type == "cuda" and active():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if active():
        dist.barrier()


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average per-rank numbers (training loss sums, images/s) so the log shows the whole job."""
    if not active() or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    tensor = tensor.to(_collective_device(tensor))  # NCCL reduces CUDA tensors only
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank. DDP syncs parameters every step but
    buffers only before a forward, so without this the ranks would validate slightly different
    networks and could keep different best epochs."""
    if not active():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def broadcast_from_main(value: object) -> object:
    """Rank 0's ``value`` on every rank (any picklable object; only between our own processes)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(value: object) -> list[object] | None:
    """Every rank's ``value`` in rank order on rank 0 (None elsewhere); every rank must call it.
    Any picklable object, only between our own processes (per-rank resumable state)."""
    if not active():
        return [value]
    box: list[object] | None = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(value, box, dst=0)
    return box


def any_rank_true(flag: bool) -> bool:
    """True when ``flag`` holds on some rank (a stop request one process received)."""
    return not all_ranks_true(not flag)


def all_ranks_true(flag: bool) -> bool:
    """True when ``flag`` holds on every rank: ranks must take (or skip) a step together."""
    if not active():
        return flag
    tensor = torch.tensor([0 if flag else 1], dtype=torch.int32)
    tensor = tensor.to(_collective_device(tensor))
    dist.all_reduce(tensor)
    return int(tensor.item()) == 0


@dataclass
class GatherRecord:
    """What this rank's gathers took on trust within :func:`equal_rows`, as host ints: the
    fewest and most rows one brought, their total, and the most over the capacity."""

    capacity: int
    fewest: int | None = None
    most: int = 0
    total: int = 0
    over: int = 0

    def add(self, rows: int) -> None:
        self.fewest = rows if self.fewest is None else min(self.fewest, rows)
        self.most, self.total = max(self.most, rows), self.total + rows
        self.over = max(self.over, rows - self.capacity)


def step_agreement(finite: Tensor, stop_asked: bool, rows: int | None = None,
                   gathers: GatherRecord | None = None) -> tuple[bool, bool]:
    """(the loss is finite on every rank, some rank was asked to stop) from ``finite`` (a
    boolean tensor on the training device, ``isfinite(loss)``) and this rank's stop request:
    one collective and one wait for the device, the training step's only one.

    ``rows``: this rank's batch rows; ``gathers``: what the step's gathers took every rank to
    bring (:func:`equal_rows`). Both are checked in the same collective, and a difference
    between the ranks, or a gather over the capacity, raises here on every rank, before the
    step's backward.
    """
    bad = finite.logical_not().to(torch.int32)
    zero = bad * 0  # no host-to-device copy either
    flags = [bad, zero + int(stop_asked)]
    if rows is not None:
        flags += [zero + rows, zero - rows]  # under MAX: the most rows, minus the fewest
    if gathers is not None:
        fewest = gathers.most if gathers.fewest is None else gathers.fewest
        for value in (fewest, gathers.most, gathers.total):
            flags += [zero + value, zero - value]
        flags.append(zero + gathers.over)
    stacked = torch.stack(flags)
    if active():
        stacked = stacked.to(_collective_device(stacked))
        dist.all_reduce(stacked, op=dist.ReduceOp.MAX)
    values = stacked.tolist()
    if rows is not None and values[2] != -values[3]:
        raise RuntimeError(
            f"the processes brought batches of {-values[3]} to {values[2]} rows to one step; "
            "each rank's training batch must be as big as every other's"
        )
    if gathers is not None:
        _check_gathers(values[-7:], gathers.capacity)
    return not values[0], bool(values[1])


def _check_gathers(values: list[int], capacity: int) -> None:
    """Raise where the ranks' gathers of one step (max over ranks of each number, and of its
    negative) were not alike, or one went over the capacity."""
    if values[6] > 0:
        raise RuntimeError(
            f"a gather of {capacity + values[6]} rows in a training step, over the {capacity} "
            "each rank may bring (the step's batch size)"
        )
    unequal = [(-values[i + 1], values[i]) for i in (0, 2, 4) if values[i] != -values[i + 1]]
    if unequal:
        low, high = unequal[0]
        raise RuntimeError(
            f"the ranks' gathers in one training step brought {low} and {high} rows; within a "
            "training step each gather must take as many rows on every rank (a plug-in that "
            "gathers a subset must pick one of the same size everywhere)"
        )


# This training step's gathers with gradient (equal_rows): the rows every rank may bring at
# most, and what the gathers took on trust; None: the counts are exchanged at each gather.
_STEP_GATHERS: ContextVar[GatherRecord | None] = ContextVar("horkd_step_gathers", default=None)


@contextmanager
def equal_rows(capacity: int) -> Iterator[GatherRecord]:
    """Within: every rank brings the same number of rows, at most ``capacity``, to each gather
    of :func:`gather_summing_grad` (a training step: the loader cuts equal shares and a failed
    file keeps its row). The gathers then pad to ``capacity``, a size every rank knows, and
    read no counts from the device: the collective is well formed whatever the ranks bring.
    The record yielded holds the rows they took on trust, for the trainer to check with the
    step's one wait (:func:`step_agreement`). Outside, each gather exchanges the counts."""
    record = GatherRecord(capacity)
    token = _STEP_GATHERS.set(record)
    try:
        yield record
    finally:
        _STEP_GATHERS.reset(token)


def _gather_pieces(x: Tensor) -> list[Tensor]:
    """Every rank's ``x`` (rank order, no gradient). The ranks' row counts may differ (the last
    batch of an epoch, uneven evaluation shares): they are exchanged first (a wait for the
    device under NCCL) and the slices padded for the collective."""
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    return _padded_gather(x, max(counts), counts)


def _padded_gather(x: Tensor, size: int, counts: list[int]) -> list[Tensor]:
    """Every rank's ``x`` padded to ``size`` rows for one collective, cut back to ``counts``."""
    padded = x.detach()
    if x.shape[0] < size:
        pad = x.new_zeros((size - x.shape[0], *x.shape[1:]))
        padded = torch.cat([padded, pad])
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return [part[:n] for part, n in zip(parts, counts, strict=True)]


def _gather_equal(x: Tensor, record: GatherRecord) -> list[Tensor]:
    """Every rank's ``x`` when each brings as many rows as this one (:func:`equal_rows`): the
    counts are this rank's own, known on the host, so nothing waits for the device. They are
    recorded for :func:`step_agreement` to check; rows over the capacity are cut here (the
    collective stays well formed) and make that check fail on every rank."""
    record.add(x.shape[0])
    x = x[: record.capacity]
    return _padded_gather(x, record.capacity, [x.shape[0]] * dist.get_world_size())


def _collective_device(x: Tensor) -> torch.device:
    """Where a tensor must be for the process group's collectives (NCCL: this rank's GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return x.device


def my_batches(batches: int) -> range:
    """Which of a fixed pass's ``batches`` (evaluation, the reference cache) this process takes:
    under torchrun one contiguous run per rank, in rank order, so :func:`gather_rows` puts the
    results back in order; all of them on one process, or when there are fewer batches than
    processes (every rank then takes all, and nothing is gathered)."""
    if not batches_are_split(batches):
        return range(batches)
    world, me = dist.get_world_size(), dist.get_rank()
    return range(batches * me // world, batches * (me + 1) // world)


def batches_are_split(batches: int) -> bool:
    """Whether :func:`my_batches` splits ``batches`` between the processes."""
    return active() and batches >= dist.get_world_size()


def gather_rows(x: Tensor) -> Tensor:
    """Every rank's rows concatenated in rank order (the results of :func:`my_batches` back in
    dataset order), on ``x``'s device."""
    if not active():
        return x
    pieces = _gather_pieces(x.to(_collective_device(x)))
    return torch.cat(pieces).to(x.device)


def sum_over_ranks(x: Tensor) -> Tensor:
    """The sum of ``x`` over the ranks (counts of correct predictions from each rank's share)."""
    if not active():
        return x
    total = x.to(_collective_device(x)).clone()
    dist.all_reduce(total)
    return total.to(x.device)


class _GatherSummingGrad(torch.autograd.Function):
    """Every rank's rows concatenated; backward sums the ranks' gradients of the whole and hands
    each rank its own rows' share. What sharded relations need: each rank differentiates its
    part of a loss over the global batch, and a sample's gradient is the sum over the parts."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        record = _STEP_GATHERS.get()
        pieces = _gather_pieces(x) if record is None else _gather_equal(x, record)
        me = dist.get_rank()
        ctx.start = sum(p.shape[0] for p in pieces[:me])
        ctx.rows = pieces[me].shape[0]
        return torch.cat(pieces)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total[ctx.start : ctx.start + ctx.rows]


def gather_summing_grad(x: Tensor) -> Tensor:
    """Every rank's ``x`` in rank order; the gradient a rank's rows get is the sum over the
    ranks of the gradients they computed for them (one all-reduce in backward). Within
    :func:`equal_rows` (a training step) it reads nothing from the device."""
    if not active():
        return x
    return _GatherSummingGrad.apply(x)


def my_share(count: int) -> tuple[int, int]:
    """The contiguous run ``[start, stop)`` of ``count`` items (anchor rows of a relational term)
    this rank computes; the runs of all ranks cover ``0..count`` once, in rank order."""
    world, me = world_size(), rank()
    return count * me // world, count * (me + 1) // world


class _SumOverRanks(torch.autograd.Function):
    """The sum over the ranks of each rank's partial losses; backward passes ``world`` times the
    gradient to this rank's part, which DDP's averaging of the ranks' gradients divides again."""

    @staticmethod
    def forward(ctx: Any, partial: Tensor) -> Tensor:
        total = partial.detach().clone()
        dist.all_reduce(total)
        ctx.world = dist.get_world_size()
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad * ctx.world


def sharded_relation_loss(partial: Tensor) -> Tensor:
    """The relational terms' total from each rank's share of the anchors (``partial``, one
    value per term, stacked: one all-reduce for all of them), made right for DDP: the value is
    the global loss, and DDP's averaging of the ranks' gradients yields its gradient."""
    if not active():
        return partial
    return _SumOverRanks.apply(partial)
