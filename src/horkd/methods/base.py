"""The contract every method keeps: own the networks, freeze the reference, return named losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from horkd.models import ModelOutput

View = Literal["hr", "lr"]


@dataclass
class Batch:
    """One augmentation of the HR images and the LR view degraded from that same tensor."""

    hr: Tensor
    lr: Tensor
    target: Tensor
    index: Tensor | None = None
    labeled: Tensor | None = None  # bool [B]: which labels the task loss may see (few-label runs)
    flipped: Tensor | None = None  # bool [B]: which HR images augmentation mirrored

    def view(self, which: View) -> Tensor:
        return self.hr if which == "hr" else self.lr


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def task_loss(criterion: nn.Module, out: ModelOutput, batch: Batch) -> Tensor:
    """The task loss on the labelled part of the batch; 0 (with a graph) when none is labelled."""
    if batch.labeled is None:
        return criterion(out, batch.target)
    if not bool(batch.labeled.any()):
        return out.embedding.sum() * 0.0
    mask = batch.labeled
    return criterion(ModelOutput(out.embedding[mask], out.logits[mask]), batch.target[mask])


class Method(nn.Module):
    """A training objective around one trainable ``student`` (the network this stage produces).

    ``criterion`` is the task loss (cross-entropy, a metric-learning loss, a margin head); it may
    hold parameters (proxies, class centres), which train with the student. The optional
    ``reference`` is frozen and stays in eval mode whatever ``train()`` is called
    with, so its BatchNorm statistics never drift. ``forward`` returns the student's output and a
    dict of named, already weighted loss terms; the trainer sums them.
    """

    def __init__(
        self,
        student: nn.Module,
        criterion: nn.Module,
        reference: nn.Module | None = None,
        *,
        student_view: View = "lr",
        task_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.student = student
        self.criterion = criterion
        self.reference = freeze(reference) if reference is not None else None
        self.student_view: View = student_view
        self.task_weight = task_weight
        self.reference_cache: Any = None  # a horkd.reference_cache.ReferenceCache, when built

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [
            p
            for name, p in self.named_parameters()
            if p.requires_grad and not name.startswith("reference.")
        ]

    def saved_networks(self) -> dict[str, nn.Module]:
        """Networks this stage produces, by role; the trainer checkpoints each."""
        return {"student": self.student}

    @torch.no_grad()
    def reference_output(self, batch: Batch) -> ModelOutput:
        """The frozen reference on the HR batch: looked up when precomputed, else computed."""
        assert self.reference is not None
        if self.reference_cache is not None and batch.index is not None:
            return self.reference_cache.lookup(batch.index, batch.flipped)
        return self.reference(batch.hr)

    def forward(self, batch: Batch) -> tuple[ModelOutput, dict[str, Tensor]]:
        raise NotImplementedError
