"""Second order, pairs: the student keeps the teacher's normalised pairwise distances."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from horkd.losses.functional import (
    EPS,
    centered_gram,
    full_precision,
    gram_distances,
    no_autocast,
    zero_with_graph,
)
from horkd.losses.registry import register_loss


def normalized_distances(e: Tensor) -> Tensor:
    """d_ij / mean_{i != j} d_ij with a zero diagonal, from the Gram matrix (no N x N x d tensor).

    The off-diagonal entries are picked by multiplying with a mask, not by boolean indexing:
    indexing costs a device sync and a gather, which at training batch sizes costs more than
    the loss itself.
    """
    n = e.shape[0]
    d = gram_distances(centered_gram(e)) * _off_diagonal(n, e)
    return d / (d.sum() / (n * (n - 1))).clamp_min(EPS)


def _off_diagonal(n: int, like: Tensor) -> Tensor:
    return 1.0 - torch.eye(n, dtype=like.dtype, device=like.device)


def distance_loss(student: Tensor, teacher: Tensor, huber_delta: float = 1.0) -> Tensor:
    """Mean over i != j of huber(d^S_ij - d^T_ij), each side scaled by its mean distance."""
    n = student.shape[0]
    if n < 2:
        return zero_with_graph(student, teacher)
    with no_autocast(student.device.type):
        s = full_precision(student)
        t = full_precision(teacher).to(s.dtype)
        gap = F.huber_loss(
            normalized_distances(s), normalized_distances(t), reduction="none", delta=huber_delta
        )
        return (gap * _off_diagonal(n, s)).sum() / (n * (n - 1))


@register_loss("rkd_distance")
class DistanceLoss(nn.Module):
    """Second-order relational loss (RKD distance). YAML: ``distill.loss.distance_weight: 25``."""

    def __init__(self, huber_delta: float = 1.0) -> None:
        super().__init__()
        self.huber_delta = huber_delta

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return distance_loss(student, teacher, self.huber_delta)
