"""Shared numerics of the relational losses: float32 islands, the centred Gram matrix, Huber sums
and gradients made in the forward pass."""

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


class _CenteredGram(torch.autograd.Function):
    """G = x x^T with x = (e - mean(e)) / sigma, sigma = mean_i ||e_i - mean(e)||.

    A Function with the backward written out: autograd through the eight small steps (the row
    norms' backward above all) costs more per training step than the relational kernels on top.
    """

    @staticmethod
    def forward(ctx: Any, e: Tensor) -> Tensor:
        centred = e - e.mean(dim=0, keepdim=True)
        norms = torch.linalg.vector_norm(centred, dim=1)
        sigma = norms.mean()
        floor = torch.finfo(e.dtype).tiny ** 0.5
        x = centred / sigma.clamp_min(floor)
        # a clamped sigma is a constant: its path carries no gradient
        ctx.save_for_backward(x, norms, sigma)
        ctx.floor = floor
        return x @ x.t()

    @staticmethod
    def backward(ctx: Any, grad_gram: Tensor) -> Tensor:
        x, norms, sigma = ctx.saved_tensors
        scale = sigma.clamp_min(ctx.floor)
        grad_x = (grad_gram + grad_gram.t()) @ x
        # x = c / sigma(c), d sigma / d c_i = c_i / (N ||c_i||) = x_i / (N ||x_i||), so
        # dL/dc_i = (dL/dx_i - <dL/dx, x> x_i / (N ||x_i||)) / sigma  (0 where c_i = 0)
        through_sigma = torch.where(sigma > ctx.floor, torch.sum(grad_x * x), 0.0)
        per_row = (through_sigma * scale / x.shape[0]) / norms.clamp_min(ctx.floor)
        grad_c = (grad_x - torch.where(norms > 0, per_row, 0.0).unsqueeze(1) * x) / scale
        return grad_c - grad_c.mean(dim=0, keepdim=True)


def centered_gram(e: Tensor) -> Tensor:
    """Gram matrix of the centred, unit-scale embeddings.

    Angles and normalised distances ignore translation and scale, so removing both changes no
    loss value; it keeps the entries of G near 1 whatever the network's embedding scale, which
    bounds the cancellation error of G_jk - G_ij - G_ik + G_ii and G_ii + G_jj - 2 G_ij.
    """
    return _CenteredGram.apply(e)


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
