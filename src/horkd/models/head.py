"""The wrapper every network shares: pixels -> normalise -> backbone -> embedding -> logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from horkd.models.registry import features_width


class ModelOutput(NamedTuple):
    embedding: Tensor
    logits: Tensor


class EmbeddingClassifier(nn.Module):
    """Normalisation lives here so data stays in [0, 1] (degradation and export see pixels).

    The embedding is linear (Linear + BatchNorm, no ReLU) so relational geometry is not clipped;
    ``embed_dim=None`` uses the pooled features as the embedding.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        embed_dim: int | None = 128,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        features = features_width(backbone)
        in_channels = len(mean) if mean is not None else None
        self.register_buffer("mean", _channel_buffer(mean, 0.0), persistent=True)
        self.register_buffer("std", _channel_buffer(std, 1.0), persistent=True)
        self.backbone = backbone
        if embed_dim is None:
            self.embed: nn.Module = nn.Identity()
            embed_dim = features
        else:
            self.embed = nn.Sequential(nn.Linear(features, embed_dim), nn.BatchNorm1d(embed_dim))
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> ModelOutput:
        x = (x - self.mean) / self.std
        embedding = self.embed(self.backbone(x))
        return ModelOutput(embedding, self.classifier(embedding))


def _channel_buffer(values: Sequence[float] | None, default: float) -> Tensor:
    if values is None:
        return torch.full((1, 1, 1, 1), default)
    return torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1)
