"""Distillation losses by order; each is registered under the name a config uses."""

from horkd.losses.first_order import EmbeddingRegression, HintonKD
from horkd.losses.hybrid import HybridOrderLoss
from horkd.losses.registry import LOSSES, build_loss, register_loss
from horkd.losses.second_order import DistanceLoss, distance_loss
from horkd.losses.third_order import AngleLoss, angle_loss

__all__ = [
    "LOSSES",
    "AngleLoss",
    "DistanceLoss",
    "EmbeddingRegression",
    "HintonKD",
    "HybridOrderLoss",
    "angle_loss",
    "build_loss",
    "distance_loss",
    "register_loss",
]
