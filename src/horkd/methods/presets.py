"""Every registered method: the teacher and assistant stages, the baselines and HORKD.

Adding a method is one build function with ``@register_method`` (here, or in any module that is
imported before the config is read: a plugin, a test).
"""

from __future__ import annotations

from torch import nn

from horkd.losses import HybridOrderLoss
from horkd.losses.defaults import PUBLISHED_HINT_WEIGHT
from horkd.losses.hybrid import ORDERS, TERM_ORDER
from horkd.methods.base import Method
from horkd.methods.distill import DistillMethod
from horkd.methods.fitnet import FitNetMethod, HintReference
from horkd.methods.joint import JointMethod
from horkd.methods.references import LogitsFromTeacher
from horkd.methods.registry import (
    METHODS,
    LossSettings,
    MethodContext,
    MethodSpec,
    default_weights,
    register_method,
)
from horkd.methods.semi_supervised import PseudoLabelMethod
from horkd.methods.supervised import SupervisedMethod
from horkd.models.hint_stage import stage_grid


def hybrid_loss(
    loss_cfg: LossSettings,
    student: nn.Module,
    reference: nn.Module,
    terms: tuple[str, ...] | None = None,
    uses_logits: bool = True,
    bank: bool | None = None,
) -> HybridOrderLoss:
    """The configured hybrid loss restricted to a method's ``terms``.

    ``terms`` None: the terms of the configured orders (the order switch is applied once, by
    the loss); a fixed tuple (a baseline's): those terms, whatever the orders say. Where the
    task's logits mean nothing (metric learning, faces), the logit term is dropped. A weight
    left null takes the method's default (:func:`default_weights`). The bank of earlier samples
    (``distill.loss.bank_size``) belongs to the hybrid-order methods and to a baseline that
    isolates HORKD's loss (``kd_rkd``: ``bank=True``); ``bank`` None: the hybrid-order methods
    only (a published baseline has none).
    """
    hybrid = terms is None
    banked = hybrid if bank is None else bank
    wanted = set(TERM_ORDER) if hybrid else set(terms)
    if not uses_logits:
        wanted.discard("logits")
    defaults = default_weights(terms, uses_logits)

    def given(key: str) -> float:
        value = getattr(loss_cfg, key)
        return defaults[key] if value is None else value

    weights = {
        "embedding": given("embedding_weight"),
        "logits": loss_cfg.logit_weight,
        "distance": given("distance_weight"),
        "angle": given("angle_weight"),
    }
    weight = {term: value if term in wanted else 0.0 for term, value in weights.items()}
    return HybridOrderLoss(
        student.embed_dim,
        reference.embed_dim,
        embedding_weight=weight["embedding"],
        logit_weight=weight["logits"],
        temperature=loss_cfg.temperature,
        distance_weight=weight["distance"],
        angle_weight=weight["angle"],
        huber_delta=loss_cfg.huber_delta,
        relations=loss_cfg.relations,
        angle_anchors=loss_cfg.angle_anchors,
        orders=loss_cfg.orders if terms is None else ORDERS,
        bank_size=loss_cfg.bank_size if banked else 0,
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


def distill(
    ctx: MethodContext,
    student: nn.Module,
    reference: nn.Module,
    terms: tuple[str, ...] | None,
    student_view: str = "lr",
    bank: bool | None = None,
) -> Method:
    """``student`` learns from labels and the frozen ``reference`` through ``terms`` (with
    the bank of earlier samples as :func:`hybrid_loss` gives it)."""
    loss = hybrid_loss(ctx.distill.loss, student, reference, terms, ctx.uses_logits, bank)
    return DistillMethod(
        student,
        ctx.new_criterion(student),
        reference,
        loss,
        student_view=student_view,
        task_weight=ctx.distill.loss.task_weight,
    )


def _from_teacher(ctx: MethodContext, terms: tuple[str, ...] | None) -> Method:
    assert ctx.teacher is not None
    return distill(ctx, ctx.new_network("student"), ctx.teacher, terms)


# ---------------------------------------------------------------- stages other methods build on
@register_method(
    "teacher", "the HR teacher trained on labels", group="stage", needs=(), network="teacher"
)
def _teacher(ctx: MethodContext) -> Method:
    teacher = ctx.new_network("teacher")
    return SupervisedMethod(teacher, ctx.new_criterion(teacher), student_view="hr")


@register_method(
    "assistant",
    "cross-structure distillation: the light network learns from the teacher on HR",
    group="stage",
    terms=None,
    network="assistant",
)
def _assistant(ctx: MethodContext) -> Method:
    assert ctx.teacher is not None
    on_lr = ctx.distill.assistant_input == "lr"
    method = distill(ctx, ctx.new_network("assistant"), ctx.teacher, None,
                     student_view="lr" if on_lr else "hr")
    method.upsampled = True if on_lr else None  # the assistant has an HR architecture
    return method


# ---------------------------------------------------------------- references and baselines
METHODS.register("teacher_lr")(
    MethodSpec(
        "teacher_lr",
        "the HR teacher applied to LR input re-upsampled to HR size",
        group="reference",
        build=None,
        scores="teacher",
    )
)


@register_method(
    "lr_oracle",
    "the teacher's architecture and budget trained on LR re-upsampled to the HR size with every "
    "label: what the LR pixels themselves support",
    group="reference",
    needs=(),
    network="teacher",
    upsampled=True,
)
def _lr_oracle(ctx: MethodContext) -> Method:
    network = ctx.new_network("teacher")
    return SupervisedMethod(network, ctx.new_criterion(network), student_view="lr")


@register_method(
    "scratch", "the student trained on LR with labels only", group="baseline", needs=()
)
def _scratch(ctx: MethodContext) -> Method:
    student = ctx.new_network("student")
    return SupervisedMethod(student, ctx.new_criterion(student), task_weight=1.0)


@register_method(
    "hinton_kd",
    "Hinton KD: softened teacher logits, teacher -> student",
    group="baseline",
    terms=("logits",),
)
def _hinton_kd(ctx: MethodContext) -> Method:
    return _from_teacher(ctx, ("logits",))


@register_method(
    "fitnet",
    "FitNet (Romero et al. 2015): the student's middle stage, through a conv regressor, imitates "
    "the teacher's middle stage (its map pooled to the student's grid), with the task loss",
    group="baseline",
    terms=("hint",),
)
def _fitnet(ctx: MethodContext) -> Method:
    assert ctx.teacher is not None and ctx.student_input is not None
    student = ctx.new_network("student")
    channels, side = ctx.student_input
    weight = ctx.distill.loss.hint_weight
    return FitNetMethod(
        student,
        ctx.new_criterion(student),
        HintReference(ctx.teacher, stage_grid(student, channels, side)),
        hint_weight=PUBLISHED_HINT_WEIGHT if weight is None else weight,
        task_weight=ctx.distill.loss.task_weight,
    )


@register_method(
    "embedding_regression",
    "the student's final embedding, through a linear map, regresses the teacher's (first order "
    "on embeddings alone; not FitNet, whose hint is a middle stage)",
    group="baseline",
    terms=("embedding",),
)
def _embedding_regression(ctx: MethodContext) -> Method:
    return _from_teacher(ctx, ("embedding",))


@register_method(
    "rkd",
    "RKD distance + angle, teacher -> student, no assistant",
    group="baseline",
    terms=("distance", "angle"),
)
def _rkd(ctx: MethodContext) -> Method:
    return _from_teacher(ctx, ("distance", "angle"))


# ---------------------------------------------------------------- baselines that isolate parts
@register_method(
    "kd_rkd",
    "Hinton KD + RKD distance and angle, teacher -> student, with the bank (distill.loss."
    "bank_size): HORKD's loss without the assistant, the embedding term or the orders switch",
    group="baseline",
    terms=("logits", "distance", "angle"),
)
def _kd_rkd(ctx: MethodContext) -> Method:
    assert ctx.teacher is not None
    return distill(ctx, ctx.new_network("student"), ctx.teacher,
                   ("logits", "distance", "angle"), bank=True)


@register_method(
    "semi_supervised",
    "no teacher: the student pseudo-labels the unlabelled training images the distilled "
    "students see (its own confident predictions, FixMatch's threshold); few-label runs only",
    group="baseline",
    needs=(),
    unlabelled=True,
    settings=("pseudo_label",),
)
def _semi_supervised(ctx: MethodContext) -> Method:
    student = ctx.new_network("student")
    settings = ctx.distill.pseudo_label
    return PseudoLabelMethod(
        student, ctx.new_criterion(student), threshold=settings.threshold, weight=settings.weight
    )


# ---------------------------------------------------------------- hybrid-order distillation
@register_method(
    "horkd_no_assistant",
    "hybrid orders, teacher -> student directly",
    group="ours",
    terms=None,
)
def _horkd_no_assistant(ctx: MethodContext) -> Method:
    return _from_teacher(ctx, None)


@register_method(
    "horkd",
    "hybrid orders through the assistant: T -> A on HR, then A -> S on LR",
    group="ours",
    needs=("teacher", "assistant"),
    terms=None,
)
def _horkd(ctx: MethodContext) -> Method:
    assert ctx.assistant is not None
    if not ctx.assistant_trusted:  # a poor bridge: every order straight from the teacher
        return _from_teacher(ctx, None)
    student = ctx.new_network("student")
    if ctx.distill.warm_start:
        warm_start(student, ctx.assistant)
    reference: nn.Module = ctx.assistant
    if ctx.distill.student_logits_from == "teacher":
        assert ctx.teacher is not None
        reference = LogitsFromTeacher(ctx.assistant, ctx.teacher)
    return distill(ctx, student, reference, None)


@register_method(
    "horkd_joint",
    "hybrid orders, assistant (HR) and student (LR) trained together on each batch",
    group="ours",
    terms=None,
)
def _horkd_joint(ctx: MethodContext) -> Method:
    assert ctx.teacher is not None
    student, assistant = ctx.new_network("student"), ctx.new_network("assistant")
    loss_cfg = ctx.distill.loss
    return JointMethod(
        student,
        ctx.new_criterion(student),
        assistant,
        ctx.new_criterion(assistant),
        ctx.teacher,
        hybrid_loss(loss_cfg, assistant, ctx.teacher, None, ctx.uses_logits),
        hybrid_loss(loss_cfg, student, assistant, None, ctx.uses_logits),
        task_weight=loss_cfg.task_weight,
        student_logits_from=ctx.distill.student_logits_from,
    )
