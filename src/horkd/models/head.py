"""The wrapper every network shares: pixels -> normalise -> backbone -> embedding -> logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from horkd.models.registry import features_width


class ModelOutput(NamedTuple):
    embedding: Tensor
    logits: Tensor


class EmbeddingClassifier(nn.Module):
    """Normalisation lives here so data stays in [0, 1] (degradation and export see pixels).

    The embedding is linear (Linear + BatchNorm, no ReLU) so relational geometry is not clipped;
    ``embed_dim=None`` uses the pooled features as the embedding. Forward has no data-dependent
    branches, so ``torch.jit.trace`` and ONNX export see one graph.

    ``work_size`` resizes every input to one side first (a student trained across LR sizes):
    the layers then see an object at one scale whatever size it came at, so what they learn at
    one size serves the others; fed at their own sizes, the sizes barely shared what they learnt.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        embed_dim: int | None = 128,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        work_size: int | None = None,
    ) -> None:
        super().__init__()
        features = features_width(backbone)
        in_channels = getattr(backbone, "in_channels", None)
        # Persistent, so a checkpoint carries the normalisation its weights were trained with.
        self.register_buffer("mean", _channel_buffer("mean", mean, 0.0, in_channels))
        self.register_buffer("std", _channel_buffer("std", std, 1.0, in_channels))
        if bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {list(std or [])}")
        self.backbone = backbone
        if embed_dim is None:
            self.embed: nn.Module = nn.Identity()
            embed_dim = features
        else:
            self.embed = nn.Sequential(nn.Linear(features, embed_dim), nn.BatchNorm1d(embed_dim))
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.embed_dim: int = embed_dim
        self.num_classes = num_classes
        self.in_channels: int | None = in_channels
        self.work_size = work_size

    def forward(self, x: Tensor) -> ModelOutput:
        if self.work_size is not None:
            side = (self.work_size, self.work_size)
            x = F.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        embedding = self.embed(self.backbone(x))
        return ModelOutput(embedding, self.classifier(embedding))


def _channel_buffer(
    name: str, values: Sequence[float] | None, default: float, in_channels: int | None
) -> Tensor:
    """A ``[1, C, 1, 1]`` tensor; one value is broadcast to every channel."""
    if values is None:
        return torch.full((1, 1, 1, 1), default)
    values = [float(v) for v in values]
    if in_channels is not None and len(values) not in (1, in_channels):
        raise ValueError(
            f"{name} has {len(values)} values but the model takes {in_channels} channels"
        )
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)
