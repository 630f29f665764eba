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
    """d_ij / mean_{i != j} d_ij, from the Gram matrix (no N x N x d tensor)."""
    d = gram_distances(centered_gram(e))
    off = ~torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return d / d[off].mean().clamp_min(EPS)


def distance_loss(student: Tensor, teacher: Tensor, huber_delta: float = 1.0) -> Tensor:
    """Mean over i != j of huber(d^S_ij - d^T_ij), each side scaled by its mean distance."""
    n = student.shape[0]
    if n < 2:
        return zero_with_graph(student, teacher)
    with no_autocast(student.device.type):
        s = full_precision(student)
        t = full_precision(teacher).to(s.dtype)
        off = ~torch.eye(n, dtype=torch.bool, device=s.device)
        ds, dt = normalized_distances(s)[off], normalized_distances(t)[off]
        return F.huber_loss(ds, dt, delta=huber_delta)


@register_loss("rkd_distance")
class DistanceLoss(nn.Module):
    """Second-order relational loss (RKD distance). YAML: ``distill.loss.distance_weight: 25``."""

    def __init__(self, huber_delta: float = 1.0) -> None:
        super().__init__()
        self.huber_delta = huber_delta

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return distance_loss(student, teacher, self.huber_delta)
