"""Third order, triplets: the student keeps the teacher's angles a_ijk at each anchor e_i.

a_ijk = cos of the angle between e_j - e_i and e_k - e_i. Everything comes from the Gram matrix
G = E E^T:  <e_j - e_i, e_k - e_i> = G_jk - G_ij - G_ik + G_ii  and
||e_j - e_i||^2 = G_ii + G_jj - 2 G_ij,  so the N x N x d difference tensor never exists.
The N x N x N angles are made a chunk of anchors at a time, and the gradient is accumulated in the
same pass, so memory stays O(chunk * N^2 + N^2 + N d).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from horkd.losses.functional import (
    EPS,
    centered_gram,
    coincidence_eps,
    full_precision,
    no_autocast,
    zero_with_graph,
)
from horkd.losses.registry import register_loss

CHUNK_ELEMENTS = 1 << 21  # c * N * N per chunk: ~8 MB per float32 tensor


def default_chunk(n: int) -> int:
    return max(1, min(n, CHUNK_ELEMENTS // max(1, n * n)))


def _chunk_angles(gram: Tensor, diag: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
    """cos [c, N, N] at the chunk's anchors and the inverse norms [c, N] (0 where e_j = e_i).

    A difference vector of (numerically) zero length has no direction: its cosines are 0, as
    with normalising a zero vector. Entries of non-distinct triplets (j = i, k = i, j = k) are
    0 for student and teacher alike, so they add nothing to the loss or its gradient.
    """
    rows = gram[anchors]  # G_ij for i in the chunk: [c, N]
    d_ii = diag[anchors]
    c = rows.shape[0]
    squared = d_ii.unsqueeze(1) + diag.unsqueeze(0) - 2.0 * rows
    valid = squared > coincidence_eps(gram.dtype)
    inv = torch.where(valid, squared.clamp_min(EPS).rsqrt(), torch.zeros_like(squared))
    cos = gram.unsqueeze(0).repeat(c, 1, 1)  # G_jk
    cos.sub_(rows.unsqueeze(2)).sub_(rows.unsqueeze(1)).add_(d_ii.view(-1, 1, 1))
    cos.mul_(inv.unsqueeze(2)).mul_(inv.unsqueeze(1)).clamp_(-1.0, 1.0)
    local = torch.arange(c, device=gram.device)
    cos[local, anchors, :] = 0.0
    cos[local, :, anchors] = 0.0
    cos.diagonal(dim1=1, dim2=2).zero_()
    return cos, inv


def _gram_grad(grad: Tensor, anchors: Tensor, grad_cos: Tensor, cos: Tensor, inv: Tensor) -> None:
    """Accumulate into ``grad`` the dL/dG of one chunk, given dL/dcos for its angles."""
    # cos = num * inv_j * inv_k with num = G_jk - G_ij - G_ik + G_ii and
    # inv_j = sq_j^(-1/2), sq_j = G_ii + G_jj - 2 G_ij;  d cos / d sq_j = -cos * inv_j^2 / 2.
    grad_num = grad_cos * inv.unsqueeze(2) * inv.unsqueeze(1)
    weighted = grad_cos * cos
    grad_sq = -0.5 * (weighted.sum(2) + weighted.sum(1)) * inv * inv
    grad += grad_num.sum(0)
    grad.index_add_(0, anchors, -grad_num.sum(2) - grad_num.sum(1) - 2.0 * grad_sq)
    grad[anchors, anchors] += grad_num.sum((1, 2)) + grad_sq.sum(1)
    grad.diagonal().add_(grad_sq.sum(0))


class _AngleLossFromGram(torch.autograd.Function):
    """Huber loss between student and teacher angles over distinct triplets, chunked.

    The loss is a scalar, so its gradient with respect to each Gram matrix (N x N) is computed
    in the same pass over the chunks as the loss and only scaled in backward: nothing of size
    N^3 is kept, and no chunk is computed twice.
    """

    @staticmethod
    def forward(
        ctx: Any, gram_s: Tensor, gram_t: Tensor, delta: float, chunk: int, anchors: Tensor
    ) -> Tensor:
        n = gram_s.shape[0]
        count = anchors.numel() * (n - 1) * (n - 2)
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_s = torch.zeros_like(gram_s) if need_s else None
        grad_t = torch.zeros_like(gram_t) if need_t else None
        diag_s, diag_t = gram_s.diagonal(), gram_t.diagonal()
        total = gram_s.new_zeros(())
        for start in range(0, anchors.numel(), chunk):
            part = anchors[start : start + chunk]
            cos_s, inv_s = _chunk_angles(gram_s, diag_s, part)
            cos_t, inv_t = _chunk_angles(gram_t, diag_t, part)
            total += F.huber_loss(cos_s, cos_t, reduction="sum", delta=delta)
            if grad_s is None and grad_t is None:
                continue
            grad_cos = (cos_s - cos_t).clamp_(-delta, delta).div_(count)
            if grad_s is not None:
                _gram_grad(grad_s, part, grad_cos, cos_s, inv_s)
            if grad_t is not None:
                _gram_grad(grad_t, part, grad_cos.neg_(), cos_t, inv_t)
        ctx.save_for_backward(grad_s, grad_t)
        return total / count

    @staticmethod
    def backward(
        ctx: Any, grad_out: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        grad_s, grad_t = ctx.saved_tensors
        return (
            grad_s * grad_out if grad_s is not None else None,
            grad_t * grad_out if grad_t is not None else None,
            None,
            None,
            None,
        )


def angle_loss(
    student: Tensor,
    teacher: Tensor,
    huber_delta: float = 1.0,
    chunk_size: int | None = None,
    anchors: int | None = None,
) -> Tensor:
    """Mean over distinct (i, j, k) of huber(a^S_ijk - a^T_ijk); 0 when N < 3.

    ``anchors=k`` estimates it from k anchors i drawn at random (torch's global RNG, so every
    process of a run draws the same ones): every anchor has as many (j, k) pairs, so the mean over
    a random subset is an unbiased estimate, at k/N of the cost of the N^3 exact sum.
    """
    n = student.shape[0]
    if n < 3:
        return zero_with_graph(student, teacher)
    with no_autocast(student.device.type):
        s = full_precision(student)
        t = full_precision(teacher).to(s.dtype)
        chunk = chunk_size or default_chunk(n)
        if anchors is None or anchors >= n:
            chosen = torch.arange(n, device=s.device)
        else:
            chosen = torch.randperm(n)[:anchors].sort().values.to(s.device)
        return _AngleLossFromGram.apply(
            centered_gram(s), centered_gram(t), huber_delta, chunk, chosen
        )


@register_loss("rkd_angle")
class AngleLoss(nn.Module):
    """Third-order relational loss (RKD angle, Gram form). YAML: ``distill.loss.angle_weight: 50``."""

    def __init__(
        self, huber_delta: float = 1.0, chunk_size: int | None = None, anchors: int | None = None
    ) -> None:
        super().__init__()
        if anchors is not None and anchors < 1:
            raise ValueError(f"anchors must be >= 1 or None, got {anchors}")
        self.huber_delta = huber_delta
        self.chunk_size = chunk_size
        self.anchors = anchors

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return angle_loss(student, teacher, self.huber_delta, self.chunk_size, self.anchors)
