"""Distillation losses by order: one module per order, combined by :class:`HybridOrderLoss`."""

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
