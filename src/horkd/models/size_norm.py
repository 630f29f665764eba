"""BatchNorm statistics kept per input size, for a native student trained across LR sizes.

A batch at 5 px and one at 21 px give a layer features of different scale and with a different
share of zero padding, so one running average fits neither: on the study's across-sizes
students, recomputing the statistics per size lifted validation accuracy by about 9 points and
the worst size by about 20, while one set recomputed over all sizes changed nothing
(``benchmarks/sizes_batchnorm.py``). Weights stay shared; only the running mean and variance
(what an evaluation uses in place of the batch's) are kept per trained size.

The size is read from the input's side, so training, evaluation, ``horkd predict`` and the
exported model all pick the statistics of the trained size nearest the image: the model's
forward pre-hook selects the slot, with tensor operations only, which tracing and ONNX export
record as part of the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

InputFn = Callable[[Tensor], Tensor]


class SizeSlot:
    """The trained sizes and which one the current input is nearest to (shared by every layer
    of one model; a plain object, so a deep copy of the model gets its own)."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = sorted(int(s) for s in sizes)
        self.current: int | Tensor = 0  # an int in eager mode, a tensor under a trace or export

    def select(self, images: Tensor) -> None:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            # The side as a tensor computed from the input's shape, so a trace or an ONNX graph
            # with a free side keeps the choice instead of freezing the traced one.
            side = torch.ones_like(images[0, 0, 0]).sum()
            distances = torch.stack([(side - size).abs() for size in self.sizes])
            self.current = distances.argmin()  # a tie goes to the smaller size
        else:  # a plain int: no tensor work, no device sync per layer
            gaps = [abs(int(images.shape[-1]) - size) for size in self.sizes]
            self.current = gaps.index(min(gaps))

    # Copies and pickles keep the sizes only: ``current`` is set again by the next forward, and
    # after an export it holds a tracing placeholder that cannot be copied.
    def __getstate__(self) -> dict[str, list[int]]:
        return {"sizes": self.sizes}

    def __setstate__(self, state: dict[str, list[int]]) -> None:
        self.__init__(state["sizes"])


class SizeBatchNorm(nn.Module):
    """A BatchNorm layer (1d or 2d) with one running mean and variance per trained size."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm, slot: SizeSlot) -> None:
        super().__init__()
        if not norm.track_running_stats or norm.running_mean is None:
            raise ValueError("per-size statistics need a BatchNorm that tracks running statistics")
        count = len(slot.sizes)
        self.eps, self.momentum = norm.eps, norm.momentum
        self.weight, self.bias = norm.weight, norm.bias  # shared across sizes
        self.register_buffer("running_mean", norm.running_mean.repeat(count, 1))
        self.register_buffer("running_var", norm.running_var.repeat(count, 1))
        self.register_buffer("num_batches_tracked", torch.zeros(count, dtype=torch.long))
        self.slot = slot

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def _load_from_state_dict(
        self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Weights of a network with one set of statistics (a warm start from the assistant, a
        # single-size student): every size starts from that set.
        count = len(self.slot.sizes)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == getattr(self, name).dim() - 1:
                state_dict[prefix + name] = value.unsqueeze(0).repeat(
                    count, *([1] * value.dim()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        index = self.slot.current
        if isinstance(index, int):  # eager: views of this size's rows, updated in place
            mean, var = self.running_mean[index], self.running_var[index]
        else:  # traced (never training): the choice is part of the graph
            mean = self.running_mean.index_select(0, index.view(1)).squeeze(0)
            var = self.running_var.index_select(0, index.view(1)).squeeze(0)
        if not self.training:
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        self.num_batches_tracked[index] += 1
        momentum = self.momentum
        if momentum is None:  # a cumulative average (as when statistics are recomputed)
            momentum = 1.0 / float(self.num_batches_tracked[index])
        out = F.batch_norm(x, mean, var, self.weight, self.bias, True, momentum, self.eps)
        if not isinstance(index, int):  # compiled: the rows were copies, so write them back
            self.running_mean.index_copy_(0, index.view(1), mean.unsqueeze(0))
            self.running_var.index_copy_(0, index.view(1), var.unsqueeze(0))
        return out


def keep_statistics_per_size(model: nn.Module, sizes: Sequence[int]) -> nn.Module:
    """Give every BatchNorm layer of ``model`` one set of running statistics per size in
    ``sizes``; the model's input side picks the set (nearest size). Returns ``model``."""
    slot = SizeSlot(sizes)
    model.size_slot = slot
    _replace_norms(model, slot)
    model.register_forward_pre_hook(_select_size)
    return model


def _select_size(model: nn.Module, args: tuple[Tensor, ...]) -> None:
    model.size_slot.select(args[0])


# Layers whose forward is plain batch normalisation; a subclass may add more (timm's
# BatchNormAct2d applies its activation inside), which a replacement would silently drop.
PLAIN_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _replace_norms(module: nn.Module, slot: SizeSlot, prefix: str = "") -> None:
    for name, child in module.named_children():
        if type(child) in PLAIN_NORMS:
            setattr(module, name, SizeBatchNorm(child, slot))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"layer '{prefix}{name}' is a {type(child).__name__}, whose forward does more than "
                "BatchNorm, so its statistics cannot be kept per size; set "
                "degrade.size_statistics=shared for this student"
            )
        else:
            _replace_norms(child, slot, f"{prefix}{name}.")


@torch.no_grad()
def recompute_size_statistics(
    model: nn.Module, batches: Callable[[], Iterable[Tensor]], to_inputs: Sequence[InputFn]
) -> None:
    """Every size's statistics as the average over the batches ``batches()`` yields (each read
    once, then given to the model at every size through ``to_inputs``, one per trained size);
    a batch of one image, which BatchNorm cannot take in training mode, is left out. Plain
    BatchNorm layers (one set for all sizes) get the average over every size.

    Only the statistics change: the other layers run in evaluation mode, so dropout and the
    like do not reach them, and the momentum and batch counts are put back, so training goes on
    as it would have (its batches use their own statistics, not these).
    """
    norms = [m for m in model.modules()
             if isinstance(m, (SizeBatchNorm, nn.modules.batchnorm._BatchNorm))]
    if not norms:
        return
    kept = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    was_training = model.training
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    try:
        for images in batches():
            if images.shape[0] < 2:
                continue
            for to_input in to_inputs:
                model(to_input(images))
    finally:
        for norm, (momentum, tracked) in zip(norms, kept, strict=True):
            norm.momentum = momentum
            norm.num_batches_tracked.copy_(tracked)
        model.train(was_training)
