"""The toy networks and task loss the trainer and gloo tests share: a linear embedding with a
class head, small enough that a two-rank run on CPU takes a second. One definition, so a change
to :class:`horkd.models.ModelOutput` is made once here and not in each test file."""

from __future__ import annotations

import torch
from torch import nn

from horkd.models import ModelOutput


class CrossEntropy(nn.Module):
    """The task loss on a network's logits (what a method's criterion is handed)."""

    def forward(self, out: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out.logits, target)


class LinearNet(nn.Module):
    """``inputs`` features (an image is flattened) -> a ``dim`` embedding -> ``classes`` logits.
    Without ``norm`` a NaN pixel spoils its own row alone; with it a BatchNorm layer after the
    embedding holds running statistics (which a NaN batch would spoil)."""

    def __init__(self, inputs: int, dim: int, classes: int = 3, norm: bool = False) -> None:
        super().__init__()
        self.embed_dim = dim
        self.body, self.head = nn.Linear(inputs, dim), nn.Linear(dim, classes)
        self.norm = nn.BatchNorm1d(dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> ModelOutput:
        embedding = self.norm(self.body(x.flatten(1)))
        return ModelOutput(embedding, self.head(embedding))
