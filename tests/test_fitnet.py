"""FitNet as published: a middle stage of the student, through a conv regressor, imitates the
teacher's middle stage (Romero et al. 2015), trained with the task loss in one stage."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from horkd.methods import METHODS
from horkd.methods.base import Batch
from horkd.methods.fitnet import FitNetMethod, HintReference
from horkd.models import build_model
from horkd.models.hint_stage import middle_stage, stage_grid


class _CE(torch.nn.Module):
    def forward(self, out, target):
        return F.cross_entropy(out.logits, target)


def _method(weight: float = 10.0) -> FitNetMethod:
    torch.manual_seed(0)
    teacher = build_model("resnet20", num_classes=10, in_channels=1)
    student = build_model("resnet8", num_classes=10, in_channels=1, width=8, embed_dim=16)
    grid = stage_grid(student, 1, 7)
    return FitNetMethod(student, _CE(), HintReference(teacher, grid), hint_weight=weight)


def _batch(n: int = 8) -> Batch:
    hr = torch.rand(n, 1, 28, 28)
    return Batch(hr, F.interpolate(hr, size=7, mode="area"), torch.randint(0, 10, (n,)))


def test_the_hint_is_the_teachers_middle_map_pooled_to_the_students_grid():
    method = _method()
    student_map = stage_grid(method.student, 1, 7)
    assert student_map == 4  # 7 -> 7 -> 4 in the CIFAR resnet's second stage
    ref: HintReference = method.reference  # type: ignore[assignment]
    hr = torch.rand(2, 1, 28, 28)
    captured = []
    handle = middle_stage(ref.teacher).register_forward_hook(lambda m, i, o: captured.append(o))
    flat = ref(hr).embedding
    handle.remove()
    assert captured[0].shape[-1] == 14  # the teacher's own map at HR
    expected = F.adaptive_avg_pool2d(captured[0], 4)
    assert torch.equal(ref.hint_map(flat), expected)
    assert ref.channels == 32 and ref.embed_dim == 32 * 4 * 4


def test_the_hint_trains_the_students_middle_stage_and_the_regressor_not_the_teacher():
    method = _method()
    _, terms = method(_batch())
    assert set(terms) == {"task", "hint"}
    terms["hint"].backward()
    guided = middle_stage(method.student)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in guided.parameters())
    assert all(p.grad is not None for p in method.regressor.parameters())
    assert all(p.grad is None for p in method.reference.parameters())
    assert method.student.classifier.weight.grad is None  # the hint stops at the middle
    # the guided stage is referred to by name, so nothing is saved twice
    assert not any(k.startswith("guided") for k in method.state_dict())


def test_a_few_steps_on_the_hint_bring_the_student_closer_to_the_teachers_map():
    method = _method(weight=1.0)
    method.task_weight = 0.0
    optimiser = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9)
    batch = _batch(32)
    first = None
    for _ in range(30):
        _, terms = method(batch)
        first = first if first is not None else float(terms["hint"].detach())
        optimiser.zero_grad()
        terms["hint"].backward()
        optimiser.step()
    assert float(terms["hint"].detach()) < 0.5 * first  # it learns (a broken gradient path would not)


def test_fitnet_and_the_embedding_regression_are_two_named_baselines():
    fitnet, regression = METHODS.get("fitnet"), METHODS.get("embedding_regression")
    assert "middle stage" in fitnet.description and "regressor" in fitnet.description
    assert "not FitNet" in regression.description and regression.terms == ("embedding",)
    assert fitnet.loss_defaults()["hint_weight"] == 100.0  # mdistiller's published weight


def test_a_backbone_without_a_middle_stage_is_named():
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="middle stage of Flat"):
        middle_stage(Flat())


def test_torchvision_resnet_and_small_cnn_name_their_middle_stage():
    tv = build_model("tv_resnet18", num_classes=3, in_channels=3)
    assert middle_stage(tv) is tv.backbone.net.layer2
    cnn = build_model("cnn_small", num_classes=3, in_channels=1, width=4)
    assert stage_grid(cnn, 1, 8) == 4


def test_a_hint_pooled_to_another_grid_is_another_cache_entry():
    """The reference cache is keyed by the reference's state: the same teacher's hint pooled to a
    4-cell and to a 7-cell grid (a 7-px and a 14-px student) must not share one."""
    from horkd.reference_cache import weights_digest

    teacher = build_model("resnet20", num_classes=10, in_channels=1)
    assert weights_digest(HintReference(teacher, 4)) != weights_digest(HintReference(teacher, 7))
    assert weights_digest(HintReference(teacher, 4)) == weights_digest(HintReference(teacher, 4))
