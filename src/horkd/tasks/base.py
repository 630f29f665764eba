"""What a task decides: which labels the networks see, their task loss, and how they are scored.

The pipeline, trainer and methods are shared by every task; a task plugs in through this small
contract and one registry line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from horkd.data import DataSplits, make_loader
from horkd.registry import Registry

if TYPE_CHECKING:
    from horkd.config import ExperimentConfig

InputFn = Callable[[Tensor], Tensor]
TASKS: Registry = Registry("task")
EVAL_BATCH = 512


@torch.no_grad()
def embed(
    model: nn.Module, dataset: Any, device: torch.device, to_input: InputFn
) -> tuple[Tensor, Tensor]:
    """Embeddings and labels of a whole dataset, in order, with ``to_input`` applied to HR."""
    was_training = model.training
    model.eval()
    embeddings, labels = [], []
    for x, y, _ in make_loader(dataset, batch_size=EVAL_BATCH, shuffle=False):
        embeddings.append(model(to_input(x.to(device))).embedding.float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(embeddings), torch.cat(labels)


class Task:
    """One recognition task. ``score_key`` is the validation metric that picks epochs."""

    name = "task"
    score_key = "top1"
    default_loss = "cross_entropy"
    uses_logits = True  # whether logit-based distillation (Hinton KD) means anything here

    def prepare(self, splits: DataSplits, cfg: ExperimentConfig, seed: int = 0) -> DataSplits:
        return splits

    def validate(
        self, model: nn.Module, dataset: Any, device: torch.device, to_input: InputFn
    ) -> dict[str, float]:
        raise NotImplementedError

    def score_at(self, run: Any, model: nn.Module, to_input: InputFn) -> float:
        """The headline metric with test images fed through ``to_input`` (resolution curves)."""
        raise NotImplementedError(f"task '{self.name}' has no resolution curve")

    def test(self, run: Any, model: nn.Module, kind: str) -> dict[str, float]:
        """Metrics of a final model on the test data. ``kind``: ``hr`` (a network that sees HR),
        ``lr`` (a student), or ``teacher_lr`` (the HR teacher fed LR re-upsampled)."""
        raise NotImplementedError
