"""Joint schedule: assistant (HR) and student (LR) learn together on the same batch.

The assistant learns from labels and the frozen teacher; the student learns from labels and the
assistant's outputs of this very step (detached, so the student cannot pull the assistant toward
LR features), its softened logits from the teacher's instead with
``distill.student_logits_from: teacher``.
"""

from __future__ import annotations

from torch import Tensor, nn

from horkd.losses import HybridOrderLoss
from horkd.methods.base import Batch, Method, forward_both, task_loss
from horkd.models import ModelOutput


class JointMethod(Method):
    def __init__(
        self,
        student: nn.Module,
        criterion: nn.Module,
        assistant: nn.Module,
        assistant_criterion: nn.Module,
        teacher: nn.Module,
        assistant_loss: HybridOrderLoss,
        student_loss: HybridOrderLoss,
        *,
        student_view: str = "lr",
        task_weight: float = 1.0,
        student_logits_from: str = "assistant",
    ) -> None:
        super().__init__(
            student, criterion, teacher, student_view=student_view, task_weight=task_weight
        )
        self.assistant = assistant
        self.assistant_criterion = assistant_criterion
        self.assistant_loss = assistant_loss
        self.student_loss = student_loss
        self.student_logits_from = student_logits_from

    def saved_networks(self) -> dict[str, nn.Module]:
        return {"student": self.student, "assistant": self.assistant}

    def forward(self, batch: Batch) -> tuple[ModelOutput, dict[str, Tensor]]:
        teacher_out = self.reference_output(batch)
        a_out, a_labeled = forward_both(self.assistant, batch, "hr")
        s_out, s_labeled = forward_both(self.student, batch, self.student_view)  # type: ignore[arg-type]
        terms: dict[str, Tensor] = {}
        if self.task_weight > 0:
            terms["assistant/task"] = self.task_weight * task_loss(
                self.assistant_criterion, a_out, a_labeled, batch
            )
            terms["task"] = self.task_weight * task_loss(self.criterion, s_out, s_labeled, batch)
        a_terms = self.assistant_loss(
            a_out.embedding, a_out.logits, teacher_out.embedding, teacher_out.logits
        )
        terms.update({f"assistant/{name}": value for name, value in a_terms.items()})
        target_logits = teacher_out.logits if self.student_logits_from == "teacher" else a_out.logits
        terms.update(
            self.student_loss(
                s_out.embedding, s_out.logits, a_out.embedding.detach(), target_logits.detach()
            )
        )
        return s_out, terms
