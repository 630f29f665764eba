"""Every method a config can name, in one registry: the baselines and HORKD itself.

A preset says which trained networks it needs (teacher, assistant) and builds the
:class:`~horkd.methods.base.Method` that trains a new student. Adding a method is one function here
(or in its own module) with ``@METHODS.register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from horkd.config import ExperimentConfig, LossConfig
from horkd.losses import HybridOrderLoss
from horkd.methods.base import Method
from horkd.methods.distill import DistillMethod
from horkd.methods.joint import JointMethod
from horkd.methods.references import LogitsFromTeacher
from horkd.methods.supervised import SupervisedMethod
from horkd.registry import Registry

TERMS = ("embedding", "logits", "distance", "angle")
_TERM_ORDER = {"embedding": 1, "logits": 1, "distance": 2, "angle": 3}


@dataclass
class MethodContext:
    """What a preset may use: the config, the trained reference networks, fresh networks."""

    cfg: ExperimentConfig
    new_student: Callable[[], nn.Module]
    new_assistant: Callable[[], nn.Module]
    new_criterion: Callable[[nn.Module], nn.Module]  # the task loss for a given network
    teacher: nn.Module | None = None
    assistant: nn.Module | None = None
    uses_logits: bool = True  # False for tasks whose logits mean nothing (retrieval, faces)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    build: Callable[[MethodContext], Method] | None  # None: evaluation only, nothing trained
    needs_teacher: bool = True
    needs_assistant: bool | Callable[[ExperimentConfig], bool] = False

    def requires_assistant(self, cfg: ExperimentConfig) -> bool:
        """Whether the sequential assistant stage must have run before this method."""
        if callable(self.needs_assistant):
            return self.needs_assistant(cfg)
        return self.needs_assistant


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str,
    description: str,
    *,
    needs_teacher: bool = True,
    needs_assistant: bool | Callable[[ExperimentConfig], bool] = False,
) -> Callable:
    def decorator(build: Callable[[MethodContext], Method]) -> Callable[[MethodContext], Method]:
        spec = MethodSpec(name, description, build, needs_teacher, needs_assistant)
        METHODS.register(name)(spec)
        return build

    return decorator


def hybrid_loss(
    loss_cfg: LossConfig,
    student: nn.Module,
    reference: nn.Module,
    terms: tuple[str, ...] | None = None,
    uses_logits: bool = True,
) -> HybridOrderLoss:
    """The configured hybrid loss, restricted to ``terms`` (None: the configured orders).

    Where the task's logits mean nothing (metric learning, faces), the logit term is dropped.
    """
    if terms is None:
        wanted = {t for t in TERMS if _TERM_ORDER[t] in loss_cfg.orders}
    else:
        wanted = set(terms)
    if not uses_logits:
        wanted.discard("logits")
    return HybridOrderLoss(
        student.embed_dim,
        reference.embed_dim,
        embedding_weight=loss_cfg.embedding_weight if "embedding" in wanted else 0.0,
        logit_weight=loss_cfg.logit_weight if "logits" in wanted else 0.0,
        temperature=loss_cfg.temperature,
        distance_weight=loss_cfg.distance_weight if "distance" in wanted else 0.0,
        angle_weight=loss_cfg.angle_weight if "angle" in wanted else 0.0,
        huber_delta=loss_cfg.huber_delta,
        relations=loss_cfg.relations,
        angle_anchors=loss_cfg.angle_anchors,
        orders=(1, 2, 3),
    )


def warm_start(student: nn.Module, assistant: nn.Module) -> None:
    """Copy the assistant's weights: same architecture, so only the input resolution changes."""
    try:
        student.load_state_dict(assistant.state_dict())
    except RuntimeError as exc:
        raise ValueError(
            "distill.warm_start needs the student and assistant to share one architecture "
            f"(arch, width, embed_dim); set distill.warm_start=false otherwise ({exc})"
        ) from None


def _distill(
    ctx: MethodContext, student: nn.Module, reference: nn.Module, terms: tuple[str, ...] | None
) -> Method:
    """``student`` learns from labels and the frozen ``reference`` through ``terms``."""
    loss = hybrid_loss(ctx.cfg.distill.loss, student, reference, terms, ctx.uses_logits)
    return DistillMethod(
        student,
        ctx.new_criterion(student),
        reference,
        loss,
        task_weight=ctx.cfg.distill.loss.task_weight,
    )


def _distill_from_teacher(ctx: MethodContext, terms: tuple[str, ...] | None) -> Method:
    assert ctx.teacher is not None
    return _distill(ctx, ctx.new_student(), ctx.teacher, terms)


METHODS.register("teacher_lr")(
    MethodSpec(
        "teacher_lr", "the HR teacher applied to LR input re-upsampled to HR size", build=None
    )
)


@register_method("scratch", "the student trained on LR with labels only", needs_teacher=False)
def _scratch(ctx: MethodContext) -> Method:
    student = ctx.new_student()
    return SupervisedMethod(student, ctx.new_criterion(student), task_weight=1.0)


@register_method("hinton_kd", "Hinton KD: softened teacher logits, teacher -> student")
def _hinton_kd(ctx: MethodContext) -> Method:
    return _distill_from_teacher(ctx, ("logits",))


@register_method("fitnet", "embedding regression (FitNet-style), teacher -> student")
def _fitnet(ctx: MethodContext) -> Method:
    return _distill_from_teacher(ctx, ("embedding",))


@register_method("rkd", "RKD distance + angle, teacher -> student, no assistant")
def _rkd(ctx: MethodContext) -> Method:
    return _distill_from_teacher(ctx, ("distance", "angle"))


@register_method("horkd_no_assistant", "hybrid orders, teacher -> student directly")
def _horkd_no_assistant(ctx: MethodContext) -> Method:
    return _distill_from_teacher(ctx, None)


@register_method(
    "horkd",
    "hybrid orders through the assistant: T -> A on HR, then A -> S on LR (config `schedule`)",
    needs_assistant=lambda cfg: cfg.schedule == "sequential",
)
def _horkd(ctx: MethodContext) -> Method:
    if ctx.cfg.schedule == "joint":
        return _horkd_joint(ctx)
    assert ctx.assistant is not None
    student = ctx.new_student()
    if ctx.cfg.distill.warm_start:
        warm_start(student, ctx.assistant)
    reference = ctx.assistant
    if ctx.cfg.distill.student_logits_from == "teacher":
        assert ctx.teacher is not None
        reference = LogitsFromTeacher(ctx.assistant, ctx.teacher)
    return _distill(ctx, student, reference, None)


@register_method(
    "horkd_joint", "hybrid orders, assistant (HR) and student (LR) trained together on each batch"
)
def _horkd_joint(ctx: MethodContext) -> Method:
    assert ctx.teacher is not None
    student, assistant = ctx.new_student(), ctx.new_assistant()
    loss_cfg = ctx.cfg.distill.loss
    return JointMethod(
        student,
        ctx.new_criterion(student),
        assistant,
        ctx.new_criterion(assistant),
        ctx.teacher,
        hybrid_loss(loss_cfg, assistant, ctx.teacher, None, ctx.uses_logits),
        hybrid_loss(loss_cfg, student, assistant, None, ctx.uses_logits),
        task_weight=loss_cfg.task_weight,
        student_logits_from=ctx.cfg.distill.student_logits_from,
    )
