"""BatchNorm running statistics kept through a skipped step.

A training-mode forward updates every BatchNorm layer's running mean and variance before the
loss is known; the trainer skips a step whose loss is not finite, but by then one batch with a
NaN or an infinity has already written NaN into those statistics, and every later validation
reads them (under DDP rank 0's are broadcast to every rank at the epoch's end). The statistics
are copied aside before each forward, one batched copy on the device, and put back when the
step is skipped.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningStats:
    """The running statistics of every BatchNorm layer in ``model``, saved and restored whole."""

    def __init__(self, model: nn.Module) -> None:
        self.live: list[Tensor] = [
            buffer for module in model.modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
            if buffer is not None
        ]
        self.saved = [buffer.clone() for buffer in self.live]

    @torch.no_grad()
    def save(self) -> None:
        if self.live:
            torch._foreach_copy_(self.saved, self.live)

    @torch.no_grad()
    def restore(self) -> None:
        if self.live:
            torch._foreach_copy_(self.live, self.saved)
