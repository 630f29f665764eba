"""What a model costs to run: parameters, FLOPs at its input size, CPU latency."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass for one image of ``input_shape`` (C, H, W).

    PyTorch's counter reports 2 FLOPs per multiply-accumulate; we keep that convention.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = torch.zeros(1, *input_shape, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def measure_latency(
    model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1, repeats: int = 20
) -> float:
    """Median wall time in milliseconds of one forward pass of a batch, after a warm-up."""
    was_training = model.training
    model.eval()
    x = torch.rand(batch_size, *input_shape)
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1000.0)
    model.train(was_training)
    return statistics.median(times)
