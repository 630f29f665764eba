"""Labels only: trains the teacher on HR, and the LR-from-scratch baseline."""

from __future__ import annotations

from torch import Tensor

from horkd.methods.base import Batch, Method, task_loss
from horkd.models import ModelOutput


class SupervisedMethod(Method):
    def forward(self, batch: Batch) -> tuple[ModelOutput, dict[str, Tensor]]:
        out = self.student(batch.view(self.student_view))
        return out, {"task": self.task_weight * task_loss(self.criterion, out, batch)}
