"""Student imitates a frozen reference (teacher or assistant) through the hybrid-order loss.

Which terms are on decides the method: Hinton KD (logits), FitNet-style regression (embeddings),
RKD (distance + angle), HORKD (all orders). The reference always sees HR; the student sees its
``student_view`` (HR for the assistant's cross-structure stage, LR for the student's).
"""

from __future__ import annotations

from torch import Tensor, nn

from horkd.losses import HybridOrderLoss
from horkd.methods.base import Batch, Method, forward_both, task_loss
from horkd.models import ModelOutput


class DistillMethod(Method):
    def __init__(
        self,
        student: nn.Module,
        criterion: nn.Module,
        reference: nn.Module,
        loss: HybridOrderLoss,
        *,
        student_view: str = "lr",
        task_weight: float = 1.0,
    ) -> None:
        super().__init__(
            student, criterion, reference, student_view=student_view, task_weight=task_weight
        )
        self.distill_loss = loss

    def forward(self, batch: Batch) -> tuple[ModelOutput, dict[str, Tensor]]:
        out, labeled_out = forward_both(self.student, batch, self.student_view)  # type: ignore[arg-type]
        ref = self.reference_output(batch)
        terms = self.distill_loss(out.embedding, out.logits, ref.embedding, ref.logits)
        if self.task_weight > 0:
            task = task_loss(self.criterion, out, labeled_out, batch)
            terms = {"task": self.task_weight * task, **terms}
        return out, terms
