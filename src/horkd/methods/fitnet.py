"""FitNet (Romero et al., ICLR 2015): a middle stage of the student, through a convolutional
regressor, imitates the middle stage of the teacher (the hint).

As mdistiller's FitNet does, the hint is trained *with* the task loss in one stage
(``task + hint_weight * MSE``), not in the paper's two stages (hint alone, then KD): a deviation
from the paper that mdistiller's maintainers name too, chosen here because the second stage would
add Hinton KD to the baseline, and one stage gives it the budget and the schedule of every other
method. The regressor is mdistiller's ConvReg for maps of equal size: a 3x3 convolution from the
student's channels to the teacher's, batch norm, ReLU (the hint is a ReLU output in the CIFAR
resnets; mdistiller meets a size mismatch with a strided or transposed convolution instead of the
pooling below).

**HR hint, LR guided layer.** The teacher looks at HR and the student at LR, so the teacher's
middle map is larger (14x14 against 4x4 for a 28-px teacher and a 7-px student). The teacher's
map is average-pooled to the student's grid: both maps cover the whole image, so each pooled cell
is the teacher's view of the region the student's cell sees, and the student is never asked to
produce detail its pixels do not hold (upsampling the student's map would ask exactly that).
Pooling is done once per image and view when the reference cache is on, so the teacher leaves the
step as it does for every other method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from horkd.methods.base import Batch, Method, forward_both, task_loss
from horkd.models import ModelOutput
from horkd.models.hint_stage import capturing, middle_stage_name, only_output, stage_channels


class HintReference(nn.Module):
    """The frozen teacher as FitNet sees it: its logits, and its middle map pooled to the
    student's ``grid`` and flattened into ``embedding``, so the reference cache stores it as it
    stores any output."""

    def __init__(self, teacher: nn.Module, grid: int) -> None:
        super().__init__()
        self.teacher = teacher
        self.stage_name = middle_stage_name(teacher)
        self.channels = stage_channels(teacher.get_submodule(self.stage_name))
        self.grid = grid
        self.embed_dim: int = self.channels * grid * grid
        # In the state, so the reference cache (keyed by the state's digest) keeps a hint pooled
        # to one grid apart from the same teacher's hint pooled to another.
        self.register_buffer("hint_grid", torch.tensor([grid]))

    def forward(self, x: Tensor) -> ModelOutput:
        with capturing(self.teacher.get_submodule(self.stage_name)) as maps:
            out = self.teacher(x)
        hint = F.adaptive_avg_pool2d(only_output(maps), self.grid)
        return ModelOutput(hint.flatten(1), out.logits)  # type: ignore[attr-defined]

    def hint_map(self, flat: Tensor) -> Tensor:
        return flat.view(-1, self.channels, self.grid, self.grid)


def regressor(student_channels: int, teacher_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(student_channels, teacher_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(teacher_channels),
        nn.ReLU(inplace=True),
    )


class FitNetMethod(Method):
    """``task_weight * task + hint_weight * ||r(guided) - pool(hint)||^2`` (mean over elements)."""

    def __init__(
        self,
        student: nn.Module,
        criterion: nn.Module,
        reference: HintReference,
        *,
        hint_weight: float,
        task_weight: float = 1.0,
    ) -> None:
        super().__init__(student, criterion, reference, student_view="lr", task_weight=task_weight)
        self.guided = middle_stage_name(student)
        channels = stage_channels(student.get_submodule(self.guided))
        self.regressor = regressor(channels, reference.channels)
        self.hint_weight = hint_weight

    def forward(self, batch: Batch) -> tuple[ModelOutput, dict[str, Tensor]]:
        with capturing(self.student.get_submodule(self.guided)) as maps:
            out, labeled_out = forward_both(self.student, batch, self.student_view)  # type: ignore[arg-type]
        guided = only_output(maps)[: batch.target.shape[0]]  # the labelled rows follow
        reference: HintReference = self.reference  # type: ignore[assignment]
        hint = reference.hint_map(self.reference_output(batch).embedding)
        regressed = self.regressor(guided)
        if hint.shape[-2:] != regressed.shape[-2:]:  # a student across sizes: its grid varies
            hint = F.adaptive_avg_pool2d(hint, regressed.shape[-2:])
        terms = {"hint": self.hint_weight * F.mse_loss(regressed.float(), hint.float())}
        if self.task_weight > 0:
            terms = {"task": self.task_weight * task_loss(self.criterion, out, labeled_out, batch),
                     **terms}
        return out, terms
