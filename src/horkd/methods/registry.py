"""The method registry: every network a run can train or score, with what it needs and its group.

A method is one build function and one ``@register_method`` line. Its spec says which trained
networks it learns from (``needs``), which group it belongs to (the results verdict, the study and
the ablation read groups, never names), and which distillation terms it uses. Builders see only
a :class:`MethodContext`: the sub-configs they use, network factories and the frozen references.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from torch import nn

from horkd.losses.defaults import (
    HYBRID_WEIGHTS,
    HYBRID_WEIGHTS_WITHOUT_LOGITS,
    PUBLISHED_HINT_WEIGHT,
    PUBLISHED_WEIGHTS,
)
from horkd.methods.base import Method
from horkd.registry import Registry


class LossSettings(Protocol):
    """The distillation loss settings a method builds its loss from (``distill.loss``).

    The config's pydantic model has these fields; a test may pass any object that does. The
    weights and the rest mean what the arguments of :class:`~horkd.losses.hybrid.HybridOrderLoss`
    of the same names mean; ``task_weight`` scales the task loss beside them.
    """

    task_weight: float
    embedding_weight: float | None  # None: the method's default (MethodSpec.loss_defaults)
    logit_weight: float
    temperature: float
    distance_weight: float | None
    angle_weight: float | None
    hint_weight: float | None  # fitnet's middle-stage hint; None: its default
    huber_delta: float
    orders: list[int]
    angle_anchors: int | None
    relations: Any
    bank_size: int


class PseudoLabelSettings(Protocol):
    """The semi-supervised student's settings (``distill.pseudo_label``): the confidence a
    prediction needs to become a target, and the weight of that term."""

    threshold: float
    weight: float


class DistillSettings(Protocol):
    """The distillation settings a builder may read (``distill``).

    Attributes:
        loss: The loss settings.
        warm_start: Whether the student starts from the assistant's weights.
        student_logits_from: Whose softened logits the student imitates (``"teacher"`` or
            ``"assistant"``).
        assistant_input: What the assistant is trained on (``"hr"`` or ``"lr"``).
        pseudo_label: The semi-supervised student's settings.
    """

    loss: LossSettings
    warm_start: bool
    student_logits_from: str
    assistant_input: str
    pseudo_label: PseudoLabelSettings

#: A method's group (see :data:`GROUPS`); the results, the study and the ablations read
#: groups, never names.
Group = Literal["stage", "reference", "baseline", "ours"]
#: A network a run trains; each method trains one and may learn from the others.
Role = Literal["teacher", "assistant", "student"]
#: Every :data:`Group`, in the order listings show them.
GROUPS: tuple[Group, ...] = ("stage", "reference", "baseline", "ours")
# What each group means, for `horkd list`, the results page and the config errors.
GROUP_MEANING = (
    ("stage", "trains a network other methods learn from (not listed in `methods`)"),
    ("reference", "a bound beside the students: the HR teacher on LR input, the LR oracle"),
    ("baseline", "a student trained by a published or plain method, the comparison"),
    ("ours", "a student trained by hybrid-order distillation"),
)


def default_weights(terms: tuple[str, ...] | None, uses_logits: bool) -> Mapping[str, float]:
    """The weights a method's terms take where ``distill.loss`` leaves them null, from the one
    table of loss defaults (:mod:`horkd.losses.defaults`): the baselines (a fixed ``terms``)
    their published weights, the hybrid orders (``terms`` None) HORKD's, which the loss's
    constructor takes too (:data:`~horkd.losses.defaults.HYBRID_WEIGHTS`; without class logits,
    :data:`~horkd.losses.defaults.HYBRID_WEIGHTS_WITHOUT_LOGITS`)."""
    if terms is not None:
        return PUBLISHED_WEIGHTS
    return HYBRID_WEIGHTS if uses_logits else HYBRID_WEIGHTS_WITHOUT_LOGITS


@dataclass(frozen=True)
class MethodContext:
    """What a builder may use: the distillation settings, fresh networks, frozen references.

    Attributes:
        distill: The run's ``distill`` settings.
        new_network: A fresh, untrained network of a role's architecture (its input size
            comes from the run).
        new_criterion: The task loss (cross-entropy, a metric-learning loss) for a network;
            it may hold parameters that train with it.
        teacher: The trained teacher, frozen, when the method ``needs`` it; else ``None``.
        assistant: The trained assistant, frozen, when the method ``needs`` it; else ``None``.
        uses_logits: ``False`` for tasks whose logits mean nothing (retrieval, faces).
        assistant_trusted: ``False`` when the assistant failed its guard: learn from the
            teacher instead.
        student_input: The channels and the (largest) side of the student's input, for the
            methods that size a layer by the student's feature maps (FitNet's regressor).
    """

    distill: DistillSettings
    new_network: Callable[[Role], nn.Module]
    new_criterion: Callable[[nn.Module], nn.Module]  # the task loss for a given network
    teacher: nn.Module | None = None
    assistant: nn.Module | None = None
    uses_logits: bool = True  # False for tasks whose logits mean nothing (retrieval, faces)
    assistant_trusted: bool = True  # False: the assistant failed its guard (learn from T)
    student_input: tuple[int, int] | None = None  # (channels, side) of the student's input


@dataclass(frozen=True)
class MethodSpec:
    """``build`` None: the method trains nothing and scores ``scores`` (a trained network) on
    the student's input, re-upsampled to the HR size (``teacher_lr``). ``network``: whose
    architecture and training budget the trained network takes (the LR oracle: the teacher's).
    ``upsampled``: it takes LR re-upsampled to the HR size whatever the students take.

    Made by :func:`register_method` and kept in :data:`METHODS`.

    Attributes:
        name: The name configs list under ``methods``.
        description: One line for ``horkd list`` and the results page.
        group: Its :data:`Group`.
        build: Makes the :class:`~horkd.methods.base.Method` from a :class:`MethodContext`.
        needs: The trained networks it learns from; they are trained first.
        terms: The distillation terms it uses (``"embedding"``, ``"logits"``,
            ``"distance"``, ``"angle"``); ``None``: those of ``distill.loss.orders``.
        network: Whose architecture and training budget its network takes.
        scores: The trained network a method without ``build`` scores.
        upsampled: Whether it takes LR re-upsampled to the HR size.
        unlabelled: Whether it learns from the training images the task loss has no labels
            for, without a teacher (the semi-supervised student): a few-label run only.
        settings: The ``distill`` sections it reads besides ``distill.loss`` (e.g.
            ``"pseudo_label"``); a method that learns from no teacher is fingerprinted by
            these alone.
    """

    name: str
    description: str
    group: Group
    build: Callable[[MethodContext], Method] | None
    needs: tuple[Role, ...] = ("teacher",)
    terms: tuple[str, ...] | None = ()  # distillation terms; None: those of distill.loss.orders
    network: Role = "student"
    scores: Role | None = None
    upsampled: bool = False
    unlabelled: bool = False
    settings: tuple[str, ...] = ()

    @property
    def view(self) -> str:
        """The input of the network it trains, ``"hr"`` for the stages and ``"lr"`` for
        everything scored."""
        return "hr" if self.group == "stage" else "lr"

    @property
    def trains(self) -> bool:
        """Whether it trains a network (it has a ``build``)."""
        return self.build is not None

    @property
    def follows_orders(self) -> bool:
        """Whether ``distill.loss.orders`` picks its terms (what the orders ablation varies)."""
        return self.terms is None

    @property
    def logits_only(self) -> bool:
        """Whether its one term is the softened logits (Hinton KD)."""
        return self.terms == ("logits",)

    def loss_defaults(self, uses_logits: bool = True) -> Mapping[str, float]:
        """The weights its terms take where ``distill.loss`` leaves them null, for a task that
        trains class logits (``uses_logits``) or one that does not (retrieval, faces).

        Returns:
            ``embedding_weight``, ``distance_weight`` and ``angle_weight``.
        """
        defaults = default_weights(self.terms, uses_logits)
        if self.terms is not None and "hint" in self.terms:  # FitNet's middle-stage hint
            return {**defaults, "hint_weight": PUBLISHED_HINT_WEIGHT}
        return defaults


#: Every method a run can name, by name. Filled by :func:`register_method` when
#: ``horkd.methods`` is imported.
METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str,
    description: str,
    *,
    group: Group,
    needs: tuple[Role, ...] = ("teacher",),
    terms: tuple[str, ...] | None = (),
    network: Role = "student",
    upsampled: bool = False,
    unlabelled: bool = False,
    settings: tuple[str, ...] = (),
) -> Callable[[Callable[[MethodContext], Method]], Callable[[MethodContext], Method]]:
    """Register a build function; the one line a new method adds (besides the function).

    >>> @register_method("my_kd", "logits and angles, teacher -> student", group="ours",
    ...                  terms=("logits", "angle"))
    ... def _my_kd(ctx: MethodContext) -> Method: ...

    Args:
        name: The name configs list under ``methods``.
        description: One line for ``horkd list`` and the results page.
        group: Its :data:`Group`.
        needs: The trained networks it learns from.
        terms: The distillation terms it uses; ``None``: those ``distill.loss.orders`` picks.
        network: Whose architecture and training budget its network takes.
        upsampled: Whether its network takes LR re-upsampled to the HR size.
        unlabelled: Whether it learns, teacher-free, from the images without labels (a
            few-label run only; the config refuses it otherwise).
        settings: The ``distill`` sections it reads besides ``distill.loss``.

    Returns:
        A decorator that registers a :class:`MethodSpec` for its build function and returns
        the function unchanged.

    Raises:
        ValueError: ``group`` is not one of :data:`GROUPS` (raised at once), or ``name`` is
            registered already (raised when the decorator is applied).
    """
    if group not in GROUPS:
        raise ValueError(f"method '{name}': group must be one of {GROUPS}, got {group!r}")

    def decorator(build: Callable[[MethodContext], Method]) -> Callable[[MethodContext], Method]:
        spec = MethodSpec(
            name, description, group, build, needs, terms, network, upsampled=upsampled,
            unlabelled=unlabelled, settings=settings,
        )
        METHODS.register(name)(spec)
        return build

    return decorator


def methods_in(group: Group, names: list[str] | None = None) -> list[str]:
    """The registered methods of ``group`` (among ``names`` when given, in their order).

    Args:
        group: The group to keep.
        names: The candidates; unregistered names are skipped. ``None``: every registered
            method, sorted.

    Returns:
        The names of that group.
    """
    pool = names if names is not None else METHODS.names()
    return [n for n in pool if n in METHODS and METHODS.get(n).group == group]
