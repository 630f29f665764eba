"""Scoring the final networks of a seed once on the test split: result rows, the resolution
curve, the cost. The one place where "a network that sees HR, fed LR re-upsampled" (the
``reference`` methods such as ``teacher_lr``) is special."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from horkd.cost import count_flops, count_parameters
from horkd.evaluate import InputFn, identity
from horkd.experiment.context import RunContext
from horkd.experiment.networks import Networks
from horkd.methods import METHODS
from horkd.tasks import Scoring

AT_HR = Scoring(hr=True)  # a network that sees HR (teacher, assistant)
AT_LR = Scoring(lr=True)  # a student, at the LR input it was trained on
ON_UPSAMPLED_LR = Scoring(hr=True, lr=True, upsample=True)  # an HR network fed LR


@dataclass
class Row:
    """One line of the results table: a network, its cost and its task metrics."""

    method: str
    role: str  # teacher | assistant | student
    params: int
    flops: int
    metrics: dict[str, float]
    # "teacher": a chain method whose assistant failed its guard learnt from the teacher instead;
    # the row says so wherever it is shown, never a silent substitute under the method's name
    fallback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "role": self.role,
            "params": self.params,
            "flops": self.flops,
            **({"fallback": self.fallback} if self.fallback else {}),
            **self.metrics,
        }


@dataclass
class SeedResult:
    """What one seed measured on the test split: the rows and the resolution curve."""

    seed: int
    rows: list[Row]
    curve: dict[str, dict[str, float]] = field(default_factory=dict)


def student_scoring(method: str) -> Scoring:
    """A trained method's network at its LR input (re-upsampled for the LR oracle)."""
    return Scoring(lr=True, upsample=True) if METHODS.get(method).upsampled else AT_LR


def teacher_gallery(ctx: RunContext, networks: Networks, method: str) -> Scoring:
    """The asymmetric protocol: the teacher embeds the HR gallery once, the student the LR
    queries, mapped into the teacher's space by the projector of its embedding term toward that
    teacher, or else by a linear map fitted (least squares) on the training split."""
    from horkd.reference_cache import weights_digest

    outcome, teacher = networks.student(method), networks.teacher()
    projector = outcome.projector
    if projector and projector.get("target_weights") == weights_digest(teacher):
        weight = projector.get("weight")
        mapping = (lambda e: e) if weight is None else (lambda e: e @ weight.t())
        return Scoring(lr=True, gallery=teacher, query_map=mapping)
    weight = fit_linear_map(ctx, outcome.model, teacher)
    return Scoring(lr=True, gallery=teacher, map_fitted=True,
                   query_map=lambda e: F.normalize(e, dim=1) @ weight)


def fit_linear_map(ctx: RunContext, student: nn.Module, teacher: nn.Module) -> Tensor:
    """W minimising ||X W - Y||^2 + l ||W||^2 over the training images: X the student's
    normalised embeddings of their LR views, Y the teacher's of the HR images."""
    from horkd.tasks import embed

    x, _ = embed(student, ctx.splits.train, ctx.device, ctx.inputs("lr"))
    y, _ = embed(teacher, ctx.splits.train, ctx.device, ctx.inputs("hr"))
    x, y = F.normalize(x.double(), dim=1), F.normalize(y.double(), dim=1)
    gram = x.t() @ x
    ridge = 1e-3 * gram.trace() / gram.shape[0]
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.linalg.solve(gram + ridge * eye, x.t() @ y).float()


def cost(ctx: RunContext, model: nn.Module, takes_hr: bool) -> tuple[int, int]:
    """Parameters and FLOPs at the input size the network takes."""
    side = ctx.hr_size if takes_hr or ctx.upsampled else ctx.lr_size
    return count_parameters(model), count_flops(model, (ctx.in_channels, side, side))


def result_rows(
    ctx: RunContext, networks: Networks, methods: list[str], *, with_teacher: bool = True
) -> list[Row]:
    """Train what the methods need, then score every network once on the test split.

    ``with_teacher=False`` leaves out the rows of the networks that see HR (a study that runs
    each method separately scores its shared teacher once, not once per method).
    """
    task = ctx.task
    teacher = networks.teacher()
    t_cost = cost(ctx, teacher, takes_hr=True)
    rows: list[Row] = []
    if with_teacher:
        rows.append(Row("teacher", "teacher", *t_cost, task.test(ctx, teacher, AT_HR)))
    for name in methods:
        spec = METHODS.get(name)
        if not spec.trains:
            if not with_teacher:  # it scores the teacher: one of the rows left out
                continue
            network = networks.scored(name)
            metrics = task.test(ctx, network, ON_UPSAMPLED_LR)
            rows.append(Row(name, spec.scores or "teacher", *cost(ctx, network, True), metrics))
            continue
        if "assistant" in spec.needs and not any(r.role == "assistant" for r in rows):
            assistant = networks.assistant()
            on_lr = ctx.cfg.distill.assistant_input == "lr"  # learnt on LR: scored on it too
            metrics = task.test(ctx, assistant, ON_UPSAMPLED_LR if on_lr else AT_HR)
            rows.append(Row("assistant", "assistant", *cost(ctx, assistant, True), metrics))
        student = networks.student(name).model
        scoring = student_scoring(name)
        if task.teacher_gallery and spec.group in ("baseline", "ours"):
            scoring = teacher_gallery(ctx, networks, name)
        metrics = task.test(ctx, student, scoring)
        fallback = ("teacher" if "assistant" in spec.needs
                    and not networks.assistant_verdict()["trusted"] else None)
        rows.append(Row(name, "student", *cost(ctx, student, spec.upsampled), metrics, fallback))
    return rows


@torch.no_grad()
def student_test_hits(ctx: RunContext, networks: Networks,
                      methods: list[str]) -> tuple[dict[str, Tensor], str]:
    """Per test image, 1 where a trained student (baselines and ours) classifies it right at its
    LR input, scored as the table's ``lr_top1`` is (the same batches, so the same degradation
    noise): what the verdict pairs its noise call on (:mod:`horkd.paired`); and a digest of the
    test images. Classification only; no hits otherwise."""
    from horkd.data.loader import BatchLoader
    from horkd.paired import ImagesDigest
    from horkd.tasks.base import EVAL_BATCH

    images = ImagesDigest()
    if ctx.cfg.task != "classification":
        return {}, images.hexdigest()
    to_input = ctx.inputs("lr")
    hits: dict[str, Tensor] = {}
    for name in methods:
        spec = METHODS.get(name)
        if not spec.trains or spec.group not in ("baseline", "ours") or spec.upsampled:
            continue
        model = networks.student(name).model
        was_training = model.training
        model.eval()
        parts: list[Tensor] = []
        for x, y, *_ in BatchLoader(ctx.splits.test, batch_size=EVAL_BATCH, shuffle=False):
            if not hits:  # the images are the same for every student: digested once
                images.add(x)
            logits = model(to_input(x.to(ctx.device))).logits.float()
            parts.append((logits.argmax(1).cpu() == y).float())
        model.train(was_training)
        hits[name] = torch.cat(parts) if parts else torch.zeros(0)
    return hits, images.hexdigest()


def sized_input(ctx: RunContext, takes_hr: bool, size: int) -> InputFn:
    """The input of a network when the test images are degraded to ``size`` pixels: an HR
    network takes them re-upsampled to HR, a student as it takes LR (a native student resized to
    its own LR size). Sizes at or above HR mean the HR images themselves."""
    if size >= ctx.hr_size:
        if takes_hr or ctx.upsampled:
            return identity
        size = ctx.input_side(size)  # a native student sees HR at its (largest) input size
    return ctx.inputs("lr", size=size, upsample=True if takes_hr else None)


def resolution_curve(
    ctx: RunContext, networks: Networks, methods: list[str], *, with_teacher: bool = True
) -> dict[str, dict[str, float]]:
    """The task's headline metric of every trained network at each of ``ctx.curve_sizes``."""
    sizes = ctx.curve_sizes
    scored: dict[str, tuple[nn.Module, bool]] = {}
    if with_teacher:
        scored["teacher"] = (networks.teacher(), True)
    for name in methods:
        spec = METHODS.get(name)
        if not spec.trains:
            continue
        if "assistant" in spec.needs:
            scored["assistant"] = (networks.assistant(), True)
        scored[name] = (networks.student(name).model, spec.upsampled)
    return {
        name: {
            str(size): ctx.task.score_at(ctx, model, sized_input(ctx, takes_hr, size))
            for size in sizes
        }
        for name, (model, takes_hr) in scored.items()
    }


def score_seed(
    ctx: RunContext, networks: Networks, methods: list[str], *, with_teacher: bool = True
) -> SeedResult:
    rows = result_rows(ctx, networks, methods, with_teacher=with_teacher)
    curve = {}
    if ctx.curve_sizes:
        curve = resolution_curve(ctx, networks, methods, with_teacher=with_teacher)
        add_curve_summary(rows, curve)
    return SeedResult(ctx.seed, rows, curve)


def add_curve_summary(rows: list[Row], curve: dict[str, dict[str, float]]) -> None:
    """Each row's mean and worst headline metric over the resolution curve's sizes: how well
    one network serves the whole range a camera delivers."""
    for row in rows:
        points = curve.get(row.method)
        if row.role == "student" and points:
            sizes = sorted(int(s) for s in points)
            span = f"{sizes[0]}-{sizes[-1]}px"
            row.metrics[f"mean@{span}"] = statistics.fmean(points.values())
            row.metrics[f"worst@{span}"] = min(points.values())


def aggregate(rows_per_seed: list[list[Row]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per method, in the order methods first appear."""
    by_method: dict[str, list[Row]] = {}
    for rows in rows_per_seed:
        for row in rows:
            by_method.setdefault(row.method, []).append(row)
    table = []
    for method, rows in by_method.items():
        entry: dict[str, Any] = {
            "method": method,
            "role": rows[0].role,
            "params": rows[0].params,
            "flops": rows[0].flops,
            "seeds": len(rows),
        }
        fell_back = sum(r.fallback is not None for r in rows)
        if fell_back:
            entry["fallback_seeds"] = fell_back
        for key in rows[0].metrics:
            values = [r.metrics[key] for r in rows if key in r.metrics]
            entry[key] = statistics.fmean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table.append(entry)
    return table
