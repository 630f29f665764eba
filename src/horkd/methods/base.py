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
    """One augmentation of the HR images and the LR view degraded from that same tensor.

    ``view``: which cacheable augmentation each image took (0 plain / 1 mirrored, or one of the
    K fixed views), so a reference cache can look up the matching output. ``labeled``: in
    few-label runs, a batch of labelled images drawn beside this one; the task loss sees only
    it, while distillation terms use this batch (every training image).
    """

    hr: Tensor
    lr: Tensor
    target: Tensor
    index: Tensor | None = None
    view_id: Tensor | None = None
    labeled: Batch | None = None

    def view(self, which: View) -> Tensor:
        return self.hr if which == "hr" else self.lr


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def forward_both(
    network: nn.Module, batch: Batch, view: View
) -> tuple[ModelOutput, ModelOutput | None]:
    """``network`` on the batch and, in few-label runs, on its labelled batch, in one pass (one
    set of batch-norm statistics for both)."""
    if batch.labeled is None:
        return network(batch.view(view)), None
    n = batch.target.shape[0]
    out = network(torch.cat([batch.view(view), batch.labeled.view(view)]))
    return (
        ModelOutput(out.embedding[:n], out.logits[:n]),
        ModelOutput(out.embedding[n:], out.logits[n:]),
    )


def task_loss(
    criterion: nn.Module, out: ModelOutput, labeled_out: ModelOutput | None, batch: Batch
) -> Tensor:
    """The task loss: on the labelled batch in few-label runs, else on the batch itself."""
    if batch.labeled is None:
        return criterion(out, batch.target)
    assert labeled_out is not None
    return criterion(labeled_out, batch.labeled.target)


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
        self.upsampled: bool | None = None  # True: LR re-upsampled to HR (an LR assistant)

    def observed(self) -> dict[str, Tensor]:
        """What the last step measured beside its loss terms, by name (e.g. the share of
        pseudo-labels that passed their threshold): device scalars the trainer averages over the
        epoch and logs as ``train/<name>``, never adds to the loss. None by default."""
        return {}

    # How DistributedDataParallel may treat a step (see horkd.trainer.wrap_for_processes): the
    # same parameters take part in every step, so DDP may record the graph once. A method
    # whose step varies (a branch taken on some steps) sets it False.
    static_graph: bool = True

    @property
    def leaves_parameters_unused(self) -> bool:
        """Whether a step may leave a trainable parameter without a gradient, so DDP must search
        the graph for them every step. Without a task loss (``task_weight`` 0) the criterion's
        parameters (proxies, a margin head) and a head only it reads get none; a method with
        other parameters that may sit out overrides this."""
        return self.task_weight == 0

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
            return self.reference_cache.lookup(batch.index, batch.view_id)
        return self.reference(batch.hr)

    def forward(self, batch: Batch) -> tuple[ModelOutput, dict[str, Tensor]]:
        raise NotImplementedError
