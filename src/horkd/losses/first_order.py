"""First order, "look one": each sample's own output imitates the reference's."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from horkd.losses.numerics import full_precision, no_autocast


class EmbeddingRegression(nn.Module):
    """Mean over samples of ||P s_i - t_i||^2 / d: regression of the final embedding (the
    ``embedding_regression`` baseline; FitNet proper guides a middle stage: methods/fitnet.py).

    P is a learned linear projector when the widths differ (or ``projector=True``), identity
    otherwise. YAML: ``distill.loss.embedding_weight: 1.0``.

    Args:
        student_dim: Width of the student's embedding.
        teacher_dim: Width of the teacher's embedding.
        projector: Whether to learn P (``[student_dim -> teacher_dim]``, no bias); ``None``:
            only when the widths differ. P's parameters belong to this module, so the
            optimiser must see them.

    Raises:
        ValueError: ``projector=False`` and the widths differ.
    """

    def __init__(self, student_dim: int, teacher_dim: int, projector: bool | None = None) -> None:
        super().__init__()
        use_projector = student_dim != teacher_dim if projector is None else projector
        if not use_projector and student_dim != teacher_dim:
            raise ValueError(
                f"embedding widths differ ({student_dim} vs {teacher_dim}): a projector is needed"
            )
        self.projector: nn.Module = (
            nn.Linear(student_dim, teacher_dim, bias=False) if use_projector else nn.Identity()
        )

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """The loss of one batch, in float32 at least (autocast is off inside).

        Args:
            student: The student's embeddings ``[N, student_dim]``.
            teacher: The teacher's embeddings ``[N, teacher_dim]`` of the same images.

        Returns:
            The scalar loss.
        """
        with no_autocast(student.device.type):
            projected = self.projector(full_precision(student))
            return F.mse_loss(projected, full_precision(teacher).to(projected.dtype))


class HintonKD(nn.Module):
    """KL(softmax(t / T) || softmax(s / T)) * T^2 (Hinton et al. 2015), batch mean.

    YAML: ``distill.loss.logit_weight: 1.0`` and ``distill.loss.temperature: 4.0``.

    The T^2 factor keeps the gradient's scale independent of T, so the weight need not move
    when the temperature does.

    Args:
        temperature: T; higher softens both distributions and shows more of the teacher's
            ranking of the wrong classes.

    Raises:
        ValueError: ``temperature`` is not positive.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """The loss of one batch, in float32 at least (autocast is off inside).

        Args:
            student_logits: The student's logits ``[N, K]``.
            teacher_logits: The teacher's logits ``[N, K]`` of the same images.

        Returns:
            The scalar loss, a mean over the N samples.
        """
        tau = self.temperature
        with no_autocast(student_logits.device.type):
            s = F.log_softmax(full_precision(student_logits) / tau, dim=1)
            t = F.log_softmax(full_precision(teacher_logits).to(s.dtype) / tau, dim=1)
            return F.kl_div(s, t, reduction="batchmean", log_target=True) * tau * tau
