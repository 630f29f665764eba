"""Shared numerics of the relational losses: float32 islands inside autocast, safe roots."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

EPS = 1e-12


def full_precision(x: Tensor) -> Tensor:
    """Half types go up to float32; float32/float64 stay as they are (tests run in float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@contextmanager
def no_autocast(device_type: str) -> Iterator[None]:
    """fp16/bf16 eps underflow turns distances and angles into NaN; compute them in fp32."""
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def zero_with_graph(*tensors: Tensor) -> Tensor:
    """A zero that still connects to the inputs, so backward() works when there is nothing to
    compare (N too small) and gradients come out as finite zeros."""
    total = None
    for t in tensors:
        if t.requires_grad:
            term = t.sum() * 0.0
            total = term if total is None else total + term
    if total is None:
        return tensors[0].new_zeros(()).float()
    return total.float() if total.dtype in (torch.float16, torch.bfloat16) else total


def centered_gram(e: Tensor) -> Tensor:
    """Gram matrix of the centred, unit-scale embeddings.

    Angles and normalised distances ignore translation and scale, so removing both changes no
    loss value; it keeps the entries of G near 1 whatever the network's embedding scale, which
    bounds the cancellation error of G_jk - G_ij - G_ik + G_ii and G_ii + G_jj - 2 G_ij.
    """
    e = e - e.mean(dim=0, keepdim=True)
    scale = e.norm(dim=1).mean().clamp_min(torch.finfo(e.dtype).tiny ** 0.5)
    e = e / scale
    return e @ e.t()


def relation_grams(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Both sides' :func:`centered_gram` in full precision: what the relational terms start from
    (the hybrid loss makes them once for the distance and the angle term)."""
    with no_autocast(student.device.type):
        s = full_precision(student)
        return centered_gram(s), centered_gram(full_precision(teacher).to(s.dtype))


def huber_sum(gap: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """(sum of huber(gap), huber'(gap)): huber = clipped * (gap - clipped / 2), summed as two
    dot products, so no elementwise loss tensor is made beside the clipped gap."""
    clipped = gap.clamp(-delta, delta)
    flat = clipped.view(-1)
    return torch.dot(flat, gap.view(-1)) - 0.5 * torch.dot(flat, flat), clipped


class GradientInForward(torch.autograd.Function):
    """A scalar loss whose gradients with respect to its first two inputs are made in forward
    (closed form, in the same pass as the loss) and saved: backward only scales them."""

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grads = tuple(g * grad_out if g is not None else None for g in ctx.saved_tensors)
        return grads + (None,) * (len(ctx.needs_input_grad) - len(grads))


def coincidence_eps(dtype: torch.dtype) -> float:
    """Squared distances below this (at unit scale) are rounding noise: the points coincide."""
    return 16.0 * torch.finfo(dtype).eps
