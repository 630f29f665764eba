"""Third order, triplets: the student keeps the teacher's angles a_ijk at each anchor e_i.

a_ijk = cos of the angle between e_j - e_i and e_k - e_i. Everything comes from the Gram matrix
G = E E^T:  <e_j - e_i, e_k - e_i> = G_jk - G_ij - G_ik + G_ii  and
||e_j - e_i||^2 = G_ii + G_jj - 2 G_ij,  so the N x N x d difference tensor never exists.
The N x N x N angles are made a chunk of anchors at a time, in forward and again in backward
(recomputed, not stored), so memory stays O(chunk * N^2 + N^2 + N d).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from horkd.losses.functional import EPS, centered_gram, full_precision, no_autocast, zero_with_graph
from horkd.losses.registry import register_loss

CHUNK_ELEMENTS = 1 << 21  # c * N * N per chunk: ~8 MB per float32 tensor


def default_chunk(n: int) -> int:
    return max(1, min(n, CHUNK_ELEMENTS // max(1, n * n)))


def _chunk_angles(gram: Tensor, anchors: slice) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Angles at the anchors of one chunk: (cos [c,N,N], numerator, norms [c,N], squared norms)."""
    diag = gram.diagonal()
    rows = gram[anchors]  # G_ij for i in chunk: [c, N]
    d_ii = diag[anchors]
    numerator = gram.unsqueeze(0) - rows.unsqueeze(2) - rows.unsqueeze(1)
    numerator = numerator + d_ii.view(-1, 1, 1)
    squared = d_ii.unsqueeze(1) + diag.unsqueeze(0) - 2.0 * rows
    norms = squared.clamp_min(EPS).sqrt()
    cos = numerator / (norms.unsqueeze(2) * norms.unsqueeze(1))
    return cos, numerator, norms, squared


def _distinct_mask(n: int, anchors: slice, device: torch.device) -> Tensor:
    """True where i, j, k are pairwise distinct (i = the chunk's anchors)."""
    i = torch.arange(n, device=device)[anchors].view(-1, 1, 1)
    j = torch.arange(n, device=device).view(1, -1, 1)
    k = torch.arange(n, device=device).view(1, 1, -1)
    return (i != j) & (i != k) & (j != k)


def _huber(diff: Tensor, delta: float) -> Tensor:
    absdiff = diff.abs()
    return torch.where(absdiff < delta, 0.5 * diff * diff, delta * (absdiff - 0.5 * delta))


def _gram_grad_from_cos(
    gram: Tensor, anchors: slice, grad_cos: Tensor, cos: Tensor, norms: Tensor, squared: Tensor
) -> Tensor:
    """dL/dG contributed by one chunk, given dL/dcos for that chunk's angles."""
    grad = torch.zeros_like(gram)
    denom = norms.unsqueeze(2) * norms.unsqueeze(1)
    grad_num = grad_cos / denom  # [c, N, N]
    weighted = grad_cos * cos
    grad_norms = -(weighted.sum(2) + weighted.sum(1)) / norms  # [c, N]
    grad_sq = grad_norms / (2.0 * norms) * (squared > EPS).to(gram.dtype)
    idx = torch.arange(gram.shape[0], device=gram.device)[anchors]
    # numerator = G_jk - G_ij - G_ik + G_ii
    grad += grad_num.sum(0)
    row_grad = -grad_num.sum(2) - grad_num.sum(1) - 2.0 * grad_sq  # wrt G_ij, i in chunk
    grad.index_add_(0, idx, row_grad)
    diag_grad = grad_num.sum((1, 2)) + grad_sq.sum(1)  # wrt G_ii, i in chunk
    grad[idx, idx] += diag_grad
    grad.diagonal().add_(grad_sq.sum(0))  # squared norms also hold G_jj
    return grad


class _AngleLossFromGram(torch.autograd.Function):
    """Huber loss between student and teacher angles over distinct triplets, chunked."""

    @staticmethod
    def forward(ctx: Any, gram_s: Tensor, gram_t: Tensor, delta: float, chunk: int) -> Tensor:
        n = gram_s.shape[0]
        count = n * (n - 1) * (n - 2)
        total = gram_s.new_zeros(())
        for start in range(0, n, chunk):
            anchors = slice(start, min(n, start + chunk))
            cos_s = _chunk_angles(gram_s, anchors)[0]
            cos_t = _chunk_angles(gram_t, anchors)[0]
            mask = _distinct_mask(n, anchors, gram_s.device)
            total = total + (_huber(cos_s - cos_t, delta) * mask).sum()
        ctx.save_for_backward(gram_s, gram_t)
        ctx.delta, ctx.chunk, ctx.count = delta, chunk, count
        return total / count

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        gram_s, gram_t = ctx.saved_tensors
        n = gram_s.shape[0]
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_s = torch.zeros_like(gram_s) if need_s else None
        grad_t = torch.zeros_like(gram_t) if need_t else None
        scale = grad_out / ctx.count
        for start in range(0, n, ctx.chunk):
            anchors = slice(start, min(n, start + ctx.chunk))
            cos_s, _, norms_s, sq_s = _chunk_angles(gram_s, anchors)
            cos_t, _, norms_t, sq_t = _chunk_angles(gram_t, anchors)
            mask = _distinct_mask(n, anchors, gram_s.device)
            grad_cos = (cos_s - cos_t).clamp(-ctx.delta, ctx.delta) * mask * scale
            if grad_s is not None:
                grad_s += _gram_grad_from_cos(gram_s, anchors, grad_cos, cos_s, norms_s, sq_s)
            if grad_t is not None:
                grad_t -= _gram_grad_from_cos(gram_t, anchors, grad_cos, cos_t, norms_t, sq_t)
        return grad_s, grad_t, None, None


def angle_loss(
    student: Tensor, teacher: Tensor, huber_delta: float = 1.0, chunk_size: int | None = None
) -> Tensor:
    """Mean over distinct (i, j, k) of huber(a^S_ijk - a^T_ijk); 0 when N < 3."""
    n = student.shape[0]
    if n < 3:
        return zero_with_graph(student, teacher)
    with no_autocast(student.device.type):
        s = full_precision(student)
        t = full_precision(teacher).to(s.dtype)
        chunk = chunk_size or default_chunk(n)
        return _AngleLossFromGram.apply(centered_gram(s), centered_gram(t), huber_delta, chunk)


@register_loss("rkd_angle")
class AngleLoss(nn.Module):
    """Third-order relational loss (RKD angle, Gram form). YAML: ``distill.loss.angle_weight: 50``."""

    def __init__(self, huber_delta: float = 1.0, chunk_size: int | None = None) -> None:
        super().__init__()
        self.huber_delta = huber_delta
        self.chunk_size = chunk_size

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return angle_loss(student, teacher, self.huber_delta, self.chunk_size)
