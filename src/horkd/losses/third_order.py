"""Third order, triplets: the student keeps the teacher's angles a_ijk at each anchor e_i.

a_ijk = cos of the angle between e_j - e_i and e_k - e_i. Everything comes from the Gram matrix
G = E E^T:  <e_j - e_i, e_k - e_i> = G_jk - G_ij - G_ik + G_ii  and
||e_j - e_i||^2 = G_ii + G_jj - 2 G_ij,  so the N x N x d difference tensor never exists.
The N x N x N angles are made a chunk of anchors at a time, and the gradient is accumulated in the
same pass, so memory stays O(chunk * N^2 + N^2 + N d).

The loss averages over distinct triplets, where RKD's reference code averages over all N^3
entries: :func:`~horkd.losses.angle_loss` says what that does to RKD's published weight.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from horkd.losses import cpu_kernels
from horkd.losses.numerics import (
    EPS,
    GradientInForward,
    coincidence_eps,
    huber_sum,
    no_autocast,
    relation_grams,
    zero_with_graph,
)

CHUNK_ELEMENTS = 1 << 21  # c * N * N per side and chunk on a CPU: ~8 MB per float32 side
# On a GPU a chunk may take this share of the free memory: a chunk costs about ten c x N x N
# tensors of both sides at once (cosines, gaps, clipped gaps, gradient buffers)
GPU_MEMORY_SHARE = 0.125
_CHUNK_TENSORS = 10


@functools.cache
def _gpu_chunk_elements(index: int, itemsize: int) -> int:
    """c * N * N per side that fits the GPU's free memory, read once per device: a chunk of a
    few hundred anchors instead of a CPU-sized one, so a large global batch is a handful of
    kernel launches per step, not hundreds."""
    free, _ = torch.cuda.mem_get_info(index)
    return max(CHUNK_ELEMENTS, int(free * GPU_MEMORY_SHARE) // (2 * _CHUNK_TENSORS * itemsize))


def default_chunk(n: int, device: torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> int:
    """Anchors per chunk for a batch of ``n``: on a CPU about 2M cosines (8 MB in float32) per
    side; on a GPU what a share of its free memory holds (``GPU_MEMORY_SHARE``).

    Args:
        n: The batch size N.
        device: Where the Gram matrices are (``None``: a CPU).
        dtype: Their dtype (a GPU chunk is sized in bytes).

    Returns:
        The chunk size, between 1 and ``n``.
    """
    elements = CHUNK_ELEMENTS
    if device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        elements = _gpu_chunk_elements(index, torch.finfo(dtype).bits // 8)
    return max(1, min(n, elements // max(1, n * n)))


def _chunk_angles(grams: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
    """cos [2, c, N, N] at the chunk's anchors and the inverse norms [2, c, N] (0 where
    e_j = e_i), for the student's and the teacher's Gram matrix stacked in ``grams`` [2, N, N].

    Both sides go through one set of operations: at training batch sizes a step pays per
    operation more than per element. A difference vector of (numerically) zero length has no
    direction: its cosines are 0, as with normalising a zero vector. That also zeroes the rows
    and columns j = i and k = i (their squared length is exactly 0), so only the diagonal j = k
    of a non-distinct triplet is left to the caller.
    """
    diag = grams.diagonal(dim1=1, dim2=2)  # [2, N]
    rows = grams[:, anchors]  # G_ij for i in the chunk: [2, c, N]
    d_ii = diag[:, anchors].unsqueeze(2)
    squared = (d_ii + diag.unsqueeze(1)).sub_(rows, alpha=2.0)
    inv = torch.where(
        squared > coincidence_eps(grams.dtype), squared.clamp_min(EPS).rsqrt(), 0.0
    )
    half = rows - 0.5 * d_ii  # G_ij + G_ik - G_ii = half_j + half_k
    cos = grams.unsqueeze(1) - half.unsqueeze(3)
    cos.sub_(half.unsqueeze(2)).mul_(inv.unsqueeze(3)).mul_(inv.unsqueeze(2)).clamp_(-1.0, 1.0)
    return cos, inv


def _gram_grad_(
    grad: Tensor, anchors: Tensor, grad_cos: Tensor, cos: Tensor, inv: Tensor
) -> None:
    """Accumulate into ``grad`` count * dL/dG of one chunk, given count * dL/dcos (symmetric
    in j, k).

    Overwrites ``grad_cos`` and ``cos``: on a CPU a fresh c x N x N buffer costs more (page
    faults) than the arithmetic done in it, so the chunk's buffers are reused.
    """
    # cos = num * inv_j * inv_k with num = G_jk - G_ij - G_ik + G_ii and
    # inv_j = sq_j^(-1/2), sq_j = G_ii + G_jj - 2 G_ij;  d cos / d sq_j = -cos * inv_j^2 / 2.
    # grad_cos and cos are symmetric in (j, k), so sums over j equal sums over k; with
    # p_j = sum_k grad_cos * cos * inv_j^2 (= -dL/dsq_j) and r_j = sum_k dL/dnum_jk - p_j:
    # dG_jk += dL/dnum_jk,  dG_ij -= 2 r_j,  dG_ii += sum_j r_j,  dG_jj -= p_j.
    p = cos.mul_(grad_cos).sum(2).mul_(inv * inv)
    grad_num = grad_cos.mul_(inv.unsqueeze(2)).mul_(inv.unsqueeze(1))
    r = grad_num.sum(2).sub_(p)
    grad += grad_num.sum(0)
    grad.index_add_(0, anchors, r, alpha=-2.0)
    grad.view(-1).index_add_(0, anchors * (grad.shape[0] + 1), r.sum(1))
    grad.diagonal().sub_(p.sum(0))


def _angle_eager(
    gram_s: Tensor,
    gram_t: Tensor,
    anchors: Tensor,
    delta: float,
    need_s: bool,
    need_t: bool,
    chunk: int,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(loss, dL/dG_s or None, dL/dG_t or None) with ATen operations, a chunk of anchors at a
    time; what runs on a GPU (and on a CPU without numba)."""
    n = gram_s.shape[0]
    count = anchors.numel() * (n - 1) * (n - 2)
    grad_s = torch.zeros_like(gram_s) if need_s else None
    grad_t = torch.zeros_like(gram_t) if need_t else None
    grams = torch.stack((gram_s, gram_t))
    total = gram_s.new_zeros(())
    for start in range(0, anchors.numel(), chunk):
        part = anchors[start : start + chunk]
        (cos_s, cos_t), (inv_s, inv_t) = _chunk_angles(grams, part)
        # the gap goes into cos_t's buffer unless the teacher's side needs its cosines
        gap = torch.sub(cos_s, cos_t, out=None if grad_t is not None else cos_t)
        gap.diagonal(dim1=1, dim2=2).zero_()  # j = k: not a distinct triplet
        chunk_total, clipped = huber_sum(gap, delta)
        total += chunk_total
        if grad_s is None and grad_t is None:
            continue
        # dL/dcos = clipped / count for the student, its negative for the teacher: both
        # scale factors are applied once to the N x N results, not to every chunk
        if grad_t is not None:
            _gram_grad_(grad_t, part, clipped.clone() if need_s else clipped, cos_t, inv_t)
        if grad_s is not None:
            _gram_grad_(grad_s, part, clipped, cos_s, inv_s)
    if grad_s is not None:
        grad_s.div_(count)
    if grad_t is not None:
        grad_t.div_(-count)
    return total / count, grad_s, grad_t


class _AngleLossFromGram(GradientInForward):
    """Huber loss between student and teacher angles over distinct triplets.

    The loss is a scalar, so its gradient with respect to each Gram matrix (N x N) is computed
    in the same pass as the loss and only scaled in backward: nothing of size N^3 is kept, and no
    triplet is computed twice. On a CPU with numba one fused loop does it
    (:mod:`horkd.losses.cpu_kernels`), elsewhere chunks of ATen operations.
    """

    @staticmethod
    def forward(
        ctx: Any,
        gram_s: Tensor,
        gram_t: Tensor,
        delta: float,
        chunk: int,
        anchors: Tensor,
        all_anchors: int,
    ) -> Tensor:
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if anchors.numel() == 0:  # a rank whose share of the anchors is empty
            ctx.save_for_backward(torch.zeros_like(gram_s) if need_s else None,
                                  torch.zeros_like(gram_t) if need_t else None)
            return gram_s.new_zeros(())
        loss, grad_s, grad_t = cpu_kernels.angle(
            gram_s, gram_t, anchors, delta, need_s, need_t
        ) or _angle_eager(gram_s, gram_t, anchors, delta, need_s, need_t, chunk)
        if anchors.numel() != all_anchors:
            # a share of the anchors: its part of the mean over all of them
            share = anchors.numel() / all_anchors
            loss = loss * share
            grad_s = grad_s * share if grad_s is not None else None
            grad_t = grad_t * share if grad_t is not None else None
        ctx.save_for_backward(grad_s, grad_t)
        return loss


def angle_loss(
    student: Tensor,
    teacher: Tensor,
    huber_delta: float = 1.0,
    chunk_size: int | None = None,
    anchors: int | None = None,
) -> Tensor:
    """Mean over distinct (i, j, k) of huber(a^S_ijk - a^T_ijk); 0 when N < 3.

    The mean is over the N(N-1)(N-2) triplets of distinct samples. RKD's reference code (Park
    et al., CVPR 2019) takes the smooth L1 (this Huber at delta 1) over all N^3 entries of the
    angle tensors, where a triplet with j = i or k = i (cosine 0 on both sides) or j = k (cosine
    1 on both sides) adds nothing but count. So this loss, and its gradient, is RKD's divided by
    (N-1)(N-2)/N^2: 0.82 at N = 16, 0.95 at 64, 0.98 at 128. RKD's published weight 50 given
    here weighs the term as 50 N^2/((N-1)(N-2)) would in RKD (61.0 at N = 16, 51.2 at 128);
    ``50 (N-1)(N-2)/N^2`` (41.0 at N = 16, 48.8 at 128) gives RKD's objective exactly. Under
    ``relations: global`` N is the batch of every process together.

    ``anchors=k`` estimates it from k anchors i drawn at random (torch's global RNG, so every
    process of a run draws the same ones): every anchor has as many (j, k) pairs, so the mean over
    a random subset is an unbiased estimate, at k/N of the cost of the N^3 exact sum.

    Args:
        student: The student's embeddings ``[N, Ds]``.
        teacher: The teacher's embeddings ``[N, Dt]`` of the same images; the widths may differ.
        huber_delta: Where the Huber penalty turns from quadratic to linear, in cosine units.
        chunk_size: Anchors per chunk, which bounds memory at about ``chunk_size * N^2``
            elements per side (``None``: :func:`~horkd.losses.third_order.default_chunk`).
            Only speed and memory depend on it.
        anchors: Anchors drawn at random to estimate the loss (``None`` or ``>= N``: all,
            exact).

    Returns:
        The scalar loss, in float32 at least.
    """
    return angle_loss_from_gram(*relation_grams(student, teacher), huber_delta, chunk_size, anchors)


def angle_loss_from_gram(
    gram_s: Tensor,
    gram_t: Tensor,
    huber_delta: float = 1.0,
    chunk_size: int | None = None,
    anchors: int | None = None,
    share: tuple[int, int] | None = None,
) -> Tensor:
    """:func:`~horkd.losses.angle_loss` from the two Gram matrices (``centered_gram``), which the
    hybrid loss computes once for both relational terms.

    Args:
        gram_s: The student's ``[N, N]`` Gram matrix, as
            :func:`~horkd.losses.numerics.relation_grams` makes it.
        gram_t: The teacher's ``[N, N]`` Gram matrix, of the same dtype.
        huber_delta: As in :func:`~horkd.losses.angle_loss`.
        chunk_size: As in :func:`~horkd.losses.angle_loss`.
        anchors: As in :func:`~horkd.losses.angle_loss`.
        share: ``(start, stop)``: only the anchors at these positions (of all, or of the
            ``anchors`` drawn) are computed, and the result is their part of the mean over all
            anchors, so the parts of several processes add up to the whole loss and gradient
            (sharded global relations); ``None``: all of them.

    Returns:
        The scalar loss; 0 (still in the graph) when N < 3.
    """
    n = gram_s.shape[0]
    if n < 3:
        return zero_with_graph(gram_s, gram_t)
    chunk = chunk_size or default_chunk(n, gram_s.device, gram_s.dtype)
    if anchors is None or anchors >= n:
        chosen = torch.arange(n, device=gram_s.device)
    else:
        chosen = torch.randperm(n)[:anchors].sort().values.to(gram_s.device)
        if share is not None and torch.distributed.is_available() and \
                torch.distributed.is_initialized():
            # each rank computes its share of the same anchors: rank 0's draw (the ranks' own
            # generators differ, each draws its own crops and noise)
            torch.distributed.broadcast(chosen, src=0)
    all_anchors = chosen.numel()
    if share is not None:
        chosen = chosen[share[0] : share[1]]
    with no_autocast(gram_s.device.type):
        return _AngleLossFromGram.apply(gram_s, gram_t, huber_delta, chunk, chosen, all_anchors)


class AngleLoss(nn.Module):
    """Third-order relational loss (RKD angle, Gram form, averaged over distinct triplets: see
    :func:`~horkd.losses.angle_loss`). YAML: ``distill.loss.angle_weight: 10``.

    Args:
        huber_delta: As in :func:`~horkd.losses.angle_loss`.
        chunk_size: As in :func:`~horkd.losses.angle_loss`.
        anchors: As in :func:`~horkd.losses.angle_loss`.

    Raises:
        ValueError: ``anchors`` is below 1.
    """

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
        """:func:`~horkd.losses.angle_loss` of embeddings ``[N, Ds]`` and ``[N, Dt]``: a scalar."""
        return angle_loss(student, teacher, self.huber_delta, self.chunk_size, self.anchors)

    def from_gram(
        self, gram_s: Tensor, gram_t: Tensor, share: tuple[int, int] | None = None
    ) -> Tensor:
        """:func:`~horkd.losses.third_order.angle_loss_from_gram` of two ``[N, N]`` Grams
        (``share``: a process's part of the anchors, as there)."""
        return angle_loss_from_gram(
            gram_s, gram_t, self.huber_delta, self.chunk_size, self.anchors, share
        )

    def anchor_count(self, n: int) -> int:
        """How many anchors a batch of ``n`` has: what ``share`` divides."""
        return n if self.anchors is None else min(n, self.anchors)
