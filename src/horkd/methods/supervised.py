"""Labels only: trains the teacher on HR, and the LR-from-scratch baseline."""

from __future__ import annotations

from torch import Tensor

from horkd.methods.base import Batch, Method
from horkd.models import ModelOutput


class SupervisedMethod(Method):
    """In few-label runs it trains on the labelled batches alone: a fair baseline sees every
    label every step, not a handful of them masked out of a batch of unlabelled images."""

    def forward(self, batch: Batch) -> tuple[ModelOutput, dict[str, Tensor]]:
        source = batch.labeled if batch.labeled is not None else batch
        out = self.student(source.view(self.student_view))
        return out, {"task": self.task_weight * self.criterion(out, source.target)}
