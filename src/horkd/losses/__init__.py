"""Distillation losses by order: one module per order, combined by :class:`HybridOrderLoss`.

Import them from here: :class:`HybridOrderLoss`; the first order's :class:`EmbeddingRegression`
and :class:`HintonKD`; the second order's :func:`distance_loss` and :class:`DistanceLoss`; the
third order's :func:`angle_loss` and :class:`AngleLoss`. Each takes the student's and the
teacher's tensors of the same N samples, row for row, and returns a scalar.
"""

from horkd.losses.first_order import EmbeddingRegression, HintonKD
from horkd.losses.hybrid import HybridOrderLoss
from horkd.losses.second_order import DistanceLoss, distance_loss
from horkd.losses.third_order import AngleLoss, angle_loss

__all__ = [
    "AngleLoss",
    "DistanceLoss",
    "EmbeddingRegression",
    "HintonKD",
    "HybridOrderLoss",
    "angle_loss",
    "distance_loss",
]
