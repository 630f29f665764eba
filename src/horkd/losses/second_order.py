"""Second order, pairs: the student keeps the teacher's normalised pairwise distances.

The loss averages over distinct pairs (i != j), where RKD's reference code averages over all
N^2 entries: :func:`~horkd.losses.distance_loss` says what that does to RKD's published weight.

The loss and its gradient come from the Gram matrices in one forward pass (as for the third
order): on a batch of 128 the N x N tensors are small, so what a step pays for is the number of
operations, and autograd through a dozen elementwise steps per side costs several times the
handful that the closed-form gradient needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from horkd.losses import cpu_kernels
from horkd.losses.numerics import (
    EPS,
    GradientInForward,
    full_precision,
    huber_sum,
    no_autocast,
    relation_grams,
    zero_with_graph,
)


def _normalized_from_grams(grams: Tensor) -> tuple[Tensor, Tensor]:
    """(q, d) for each Gram matrix in ``grams`` [B, N, N]: the distances over their off-diagonal
    mean, and the raw distances (diagonal 0). The diagonal is zeroed in place, not picked by
    boolean indexing, which costs a device sync and a gather."""
    n = grams.shape[-1]
    diag = grams.diagonal(dim1=1, dim2=2)
    squared = (diag.unsqueeze(2) + diag.unsqueeze(1)).sub_(grams, alpha=2.0)
    d = squared.clamp_min_(EPS).sqrt_()
    d.diagonal(dim1=1, dim2=2).zero_()
    mean = d.sum((1, 2), keepdim=True).div_(n * (n - 1)).clamp_min_(EPS)
    return d / mean, d


def _gram_grad(grad_q: Tensor, q: Tensor, d: Tensor) -> Tensor:
    """dL/dG given dL/dq (zero on the diagonal) for q = d / mean(d), d_ij = ||e_i - e_j||."""
    n = q.shape[0]
    pairs = n * (n - 1)
    mean = d.sum() / pairs
    # q_ab = d_ab / mean  ->  dL/dd_ij = (dL/dq_ij - sum_ab dL/dq_ab q_ab / pairs) / mean
    grad_d = (grad_q - torch.dot(grad_q.view(-1), q.view(-1)) / pairs) / mean
    # d = sqrt(clamp(sq, EPS)), sq_ij = G_ii + G_jj - 2 G_ij; the diagonal (and coincident
    # points, clamped) pass no gradient, as autograd through the clamp would give
    grad_sq = torch.where(d * d > EPS, grad_d / (2.0 * d).clamp_min(EPS), 0.0)
    grad = grad_sq.mul(-2.0)
    grad.diagonal().add_(grad_sq.sum(0) + grad_sq.sum(1))
    return grad


def _distance_eager(
    gram_s: Tensor,
    gram_t: Tensor,
    delta: float,
    need_s: bool,
    need_t: bool,
    rows: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(loss, dL/dG_s or None, dL/dG_t or None) with ATen operations; ``rows``: only those
    rows' part of the loss (the normalising mean stays over every pair)."""
    n = gram_s.shape[0]
    pairs = n * (n - 1)
    (q_s, q_t), (d_s, d_t) = _normalized_from_grams(torch.stack((gram_s, gram_t)))
    gap = q_s - q_t
    if rows is not None:  # the other rows are other processes' share
        gap[: rows[0]] = 0.0
        gap[rows[1] :] = 0.0
    total, clipped = huber_sum(gap, delta)  # the gap is 0 on the diagonal
    grad_q = clipped.div_(pairs)
    grad_s = _gram_grad(grad_q, q_s, d_s) if need_s else None
    grad_t = _gram_grad(grad_q.neg(), q_t, d_t) if need_t else None
    return total / pairs, grad_s, grad_t


class _DistanceLossFromGram(GradientInForward):
    """Mean Huber gap of normalised distances; the gradients are made in forward (by one fused
    loop on a CPU with numba, see :mod:`horkd.losses.cpu_kernels`)."""

    @staticmethod
    def forward(
        ctx: Any, gram_s: Tensor, gram_t: Tensor, delta: float, rows: tuple[int, int] | None
    ) -> Tensor:
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss, grad_s, grad_t = cpu_kernels.distance(
            gram_s, gram_t, delta, need_s, need_t, rows
        ) or _distance_eager(gram_s, gram_t, delta, need_s, need_t, rows)
        ctx.save_for_backward(grad_s, grad_t)
        return loss


def distance_loss(student: Tensor, teacher: Tensor, huber_delta: float = 1.0) -> Tensor:
    """Mean over i != j of huber(d^S_ij - d^T_ij), each side scaled by its mean distance.

    Scaling by the mean distance makes the loss blind to the embeddings' scale, so a student
    of another width or norm is compared on geometry alone.

    The mean is over the N(N-1) pairs of distinct samples. RKD's reference code (Park et al.,
    CVPR 2019) takes the smooth L1 (this Huber at delta 1) over all N^2 entries of the distance
    matrices, whose N zeros on the diagonal add nothing but count; both scale the distances by
    their mean over i != j. So this loss, and its gradient, is RKD's divided by (N-1)/N: 0.94
    at N = 16, 0.99 at N = 128. RKD's published weight 25 given here weighs the term as
    25 N/(N-1) would in RKD (26.7 at N = 16, 25.2 at 128); ``25 (N-1)/N`` (23.4 at N = 16,
    24.8 at 128) gives RKD's objective exactly. Under ``relations: global`` N is the batch of
    every process together.

    Args:
        student: The student's embeddings ``[N, Ds]``.
        teacher: The teacher's embeddings ``[N, Dt]`` of the same images; the widths may differ.
        huber_delta: Where the Huber penalty turns from quadratic to linear, in units of the
            normalised distance.

    Returns:
        The scalar loss, in float32 at least; 0 (still in the graph) when N < 2.
    """
    return distance_loss_from_gram(*relation_grams(student, teacher), huber_delta)


def distance_loss_from_gram(
    gram_s: Tensor,
    gram_t: Tensor,
    huber_delta: float = 1.0,
    rows: tuple[int, int] | None = None,
) -> Tensor:
    """:func:`~horkd.losses.distance_loss` from the two Gram matrices (``centered_gram``), which
    the hybrid loss computes once for both relational terms.

    Args:
        gram_s: The student's ``[N, N]`` Gram matrix, as
            :func:`~horkd.losses.numerics.relation_grams` makes it.
        gram_t: The teacher's ``[N, N]`` Gram matrix, of the same dtype.
        huber_delta: As in :func:`~horkd.losses.distance_loss`.
        rows: ``(start, stop)``: only the pairs (i, j) with i in these rows, as their part of
            the mean over all pairs, so the parts of several processes add up to the whole
            loss and gradient (sharded global relations); ``None``: every row.

    Returns:
        The scalar loss; 0 (still in the graph) when N < 2.
    """
    if gram_s.shape[0] < 2:
        return zero_with_graph(gram_s, gram_t)
    if rows is not None and rows == (0, gram_s.shape[0]):
        rows = None
    with no_autocast(gram_s.device.type):
        return _DistanceLossFromGram.apply(gram_s, gram_t, huber_delta, rows)


class DistanceLoss(nn.Module):
    """Second-order relational loss (RKD distance, averaged over distinct pairs: see
    :func:`~horkd.losses.distance_loss`). YAML: ``distill.loss.distance_weight: 5``.

    Args:
        huber_delta: As in :func:`~horkd.losses.distance_loss`.
    """

    def __init__(self, huber_delta: float = 1.0) -> None:
        super().__init__()
        self.huber_delta = huber_delta

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """:func:`~horkd.losses.distance_loss` of embeddings ``[N, Ds]`` and ``[N, Dt]``."""
        return distance_loss(student, teacher, self.huber_delta)

    def from_gram(
        self, gram_s: Tensor, gram_t: Tensor, rows: tuple[int, int] | None = None
    ) -> Tensor:
        """:func:`~horkd.losses.second_order.distance_loss_from_gram` of two ``[N, N]`` Grams
        (``rows``: a process's share, as there)."""
        return distance_loss_from_gram(gram_s, gram_t, self.huber_delta, rows)


def bank_distance_loss(
    student: Tensor,
    teacher: Tensor,
    bank_student: Tensor,
    bank_teacher: Tensor,
    huber_delta: float = 1.0,
    filled: Tensor | None = None,
) -> Tensor:
    """Distances of each batch sample to the batch *and* to a bank of earlier samples ("look
    more" than one batch): mean over the pairs (i in batch, j in batch or bank, j != i) of
    huber(d^S_ij - d^T_ij), each side scaled by its mean over those pairs (N(N-1) + NM of them:
    distinct pairs, as :func:`~horkd.losses.distance_loss`). The bank's student embeddings are
    detached (earlier steps), so gradients flow through the batch alone.

    Args:
        student: The student's embeddings ``[N, Ds]`` of this batch.
        teacher: The teacher's embeddings ``[N, Dt]`` of the same images.
        bank_student: The student's embeddings ``[M, Ds]`` of earlier samples (M may be 0).
        bank_teacher: The teacher's embeddings ``[M, Dt]`` of the same earlier samples.
        huber_delta: As in :func:`~horkd.losses.distance_loss`.
        filled: A count (a tensor, never read by the host): only the bank's first ``filled``
            rows count, the others are left out; ``None``: all M.

    Returns:
        The scalar loss, in float32 at least; 0 (still in the graph) when N + M < 2.
    """
    with no_autocast(student.device.type):
        s, t = full_precision(student), full_precision(teacher).to(full_precision(student).dtype)
        s_all = torch.cat([s, bank_student.to(s.dtype)])
        t_all = torch.cat([t, bank_teacher.to(s.dtype)])
        n, m = s.shape[0], bank_student.shape[0]
        if filled is None and n + m < 2:
            return zero_with_graph(student, teacher)
        valid = torch.ones(n, n + m, dtype=torch.bool, device=s.device)
        valid[:, :n].fill_diagonal_(False)
        if filled is not None:
            valid[:, n:] &= torch.arange(m, device=s.device) < filled.to(s.device)
        # masked sums over a count kept on the device: a boolean-mask selection waits for it
        count = valid.sum().to(s.dtype)

        def normalized(x: Tensor, pool: Tensor) -> Tensor:
            # ||x_i - p_j||^2 from inner products: no N x (N + M) x d tensor of differences
            squared = (x * x).sum(1, keepdim=True) + (pool * pool).sum(1) - 2.0 * x @ pool.t()
            d = torch.where(valid, squared.clamp_min(EPS), 1.0).sqrt()
            mean = torch.where(valid, d, 0.0).sum() / count.clamp_min(1.0)
            return d / mean.clamp_min(EPS)

        gap = normalized(s, s_all) - normalized(t, t_all)
        clipped = gap.clamp(-huber_delta, huber_delta)
        huber = clipped * (gap - clipped / 2)
        # no pair (one sample, an empty bank): 0, still in the graph
        return torch.where(valid, huber, 0.0).sum() / count.clamp_min(1.0)
