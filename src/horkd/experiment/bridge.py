"""The assistant as a bridge: what it looks at, how the students see it, whether it is trusted.

The paper's assistant learns on HR (the architecture gap first); with ``distill.assistant_input:
lr`` it learns on the students' LR re-upsampled to the HR size (the resolution gap first). Either
way a reference is handed the HR batch, so an LR assistant degrades it itself.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from horkd.degrade import Degrader
from horkd.evaluate import InputFn
from horkd.experiment.context import RunContext
from horkd.methods.references import OnDegradedInput


def assistant_view(ctx: RunContext) -> InputFn:
    """Validation or test images as the assistant takes them."""
    if ctx.cfg.distill.assistant_input == "lr":
        return ctx.inputs("lr", upsample=True)
    return ctx.inputs("hr")


def as_reference(ctx: RunContext, assistant: nn.Module) -> nn.Module:
    """The assistant as the students' reference: an LR one looks at their LR view of HR."""
    if ctx.cfg.distill.assistant_input == "hr":
        return assistant
    return OnDegradedInput(assistant, Degrader(ctx.hr_size, ctx.degrade_spec(ctx.lr_size, True)))


def guard_verdict(ctx: RunContext, teacher: nn.Module, assistant: nn.Module) -> dict[str, Any]:
    """Whether the assistant is worth learning from: its validation score within
    ``distill.assistant_guard`` points of the teacher's, both on the input the assistant takes
    (an LR assistant is held to what the teacher does with that LR, not with detail it lacks)."""
    guard = ctx.cfg.distill.assistant_guard
    verdict: dict[str, Any] = {"trusted": True, "guard": guard}
    if guard is None or ctx.splits.val is None:
        return verdict
    seen, task = assistant_view(ctx), ctx.task
    t_score = task.validate(ctx, teacher, seen)[task.score_key]
    a_score = task.validate(ctx, assistant, seen)[task.score_key]
    verdict.update(teacher=t_score, assistant=a_score, trusted=a_score >= t_score - guard)
    if not verdict["trusted"]:
        print(f"the assistant scores {a_score:.2f} on validation against the teacher's "
              f"{t_score:.2f} (more than distill.assistant_guard={guard} points below): HORKD "
              "students learn from the teacher directly", flush=True)
    return verdict
