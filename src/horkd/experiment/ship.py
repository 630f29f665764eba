"""The student a run ships: chosen on the validation split among the students it trained.

A run trains several students (its methods, each with every seed); a user wants one model. The
choice is made on the validation split only (the test split scores, it never chooses): the
method with the highest mean validation score over the seeds, and of its students the seed with
the highest. The references (``teacher_lr``, ``lr_oracle``) are bounds, not candidates.

Whether the lead over the next method is within noise is judged on the same validation images
(classification, :mod:`horkd.paired`, rule :data:`horkd.paired.NOISE_RULE`): with several seeds,
the per-seed leads' spread and Student's t; with one seed, the per-image differences' spread and
1.96, the seed-to-seed spread unknown and said to be. A lead within noise could well be reversed
by another seed (or split). The validation score also picked each student's epoch, which
flatters every student a little and alike. Retrieval and face runs choose on their validation
score without that judgement.

A chosen student whose validation top-1 is within 5 points of chance is flagged, not hidden: when
the lower end of its 95% interval (Wilson's, over the chosen method's validation hits pooled over
its seeds, not the best seed's: a maximum is biased high) is at most :data:`NEAR_CHANCE_MARGIN`
points above chance (100 / the number of classes), the choice says "near chance: not worth
shipping; more labels/epochs" (``near_chance`` in ``ship.json``).

The choice is written to ``RUN/ship.json`` (atomically); ``horkd predict|export|eval RUN`` and
``Recogniser.load(RUN)`` read it and use that student.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from horkd.checkpoint import SHIP_FILE, write_json
from horkd.data.loader import BatchLoader
from horkd.experiment.context import RunContext
from horkd.experiment.networks import Networks
from horkd.experiment.stages import validated_sizes
from horkd.methods import METHODS
from horkd.paired import NOISE_RULE, Z_95, ImagesDigest, lead_noise

NEAR_CHANCE_MARGIN = 5.0  # points above chance within which a student's lower bound is "near"


def candidates(methods: list[str]) -> list[str]:
    """The run's methods that train a student to deploy (baselines and ours)."""
    return [m for m in methods if METHODS.get(m).trains and METHODS.get(m).group in
            ("baseline", "ours")]


@dataclass
class SeedEvidence:
    """One seed's validation scores of the candidates, and per image (classification) whether
    each student was right (a share over its trained sizes for a student across sizes)."""

    seed: int
    stage_dirs: dict[str, str] = field(default_factory=dict)  # method -> folder, run-relative
    scores: dict[str, float] = field(default_factory=dict)
    hits: dict[str, Tensor] = field(default_factory=dict)
    images: str | None = None  # digest of the validation images (a split per seed or one)
    classes: int | None = None  # classification: how many, for chance


@torch.no_grad()
def _hits(ctx: RunContext, model: nn.Module) -> tuple[Tensor, str]:
    """Per validation image, the share of the student's trained LR sizes it classifies right;
    and a digest of the images (:class:`horkd.paired.ImagesDigest`)."""
    inputs = [ctx.inputs("lr", size=s) for s in validated_sizes(ctx, "lr", None)]
    was_training = model.training
    model.eval()
    parts, images = [], ImagesDigest()
    for x, y, _ in BatchLoader(ctx.splits.val, batch_size=512, shuffle=False):
        images.add(x)
        x = x.to(ctx.device)
        right = [(model(f(x)).logits.argmax(1).cpu() == y).float() for f in inputs]
        parts.append(torch.stack(right).mean(0))
    model.train(was_training)
    return (torch.cat(parts) if parts else torch.zeros(0)), images.hexdigest()


def seed_evidence(ctx: RunContext, networks: Networks, methods: list[str],
                  run_dir: Path) -> SeedEvidence | None:
    """What the choice needs from one seed (None: no validation split or nothing to choose)."""
    names = candidates(methods)
    if ctx.splits.val is None or not names:
        return None
    evidence = SeedEvidence(ctx.seed)
    if ctx.cfg.task == "classification":
        evidence.classes = ctx.splits.info.num_classes
    for name in names:
        model = networks.student(name).model
        stage = networks.stages.seed_dir / "students" / name
        evidence.stage_dirs[name] = str(stage.relative_to(run_dir))
        if ctx.cfg.task == "classification":
            evidence.hits[name], evidence.images = _hits(ctx, model)
            evidence.scores[name] = 100.0 * float(evidence.hits[name].mean())
        else:
            key = ctx.task.score_key
            scores = [ctx.task.validate(ctx, model, ctx.inputs("lr", size=s))[key]
                      for s in validated_sizes(ctx, "lr", None)]
            evidence.scores[name] = statistics.fmean(scores)
    return evidence


def wilson_lower(hits: Tensor) -> float:
    """The lower end of Wilson's 95% interval of an accuracy, in points, from per-image hits."""
    n = hits.numel()
    if n == 0:
        return 0.0
    p, z2 = float(hits.double().mean()), Z_95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return 100.0 * max(0.0, centre - half)


def _chance(choice: dict[str, Any], evidence: list[SeedEvidence]) -> None:
    """Whether the chosen method is near chance on validation (classification only): its hits
    pooled over its seeds (the best seed alone would be a maximum, biased high)."""
    method, classes = choice["method"], evidence[0].classes
    if not classes or not all(method in e.hits for e in evidence):
        return
    hits = torch.cat([e.hits[method] for e in evidence])
    chance, lower = 100.0 / classes, wilson_lower(hits)
    choice.update(chance=round(chance, 4), lower_bound=round(lower, 4),
                  lower_bound_images=int(hits.numel()),
                  near_chance=bool(lower <= chance + NEAR_CHANCE_MARGIN))


def choose(evidence: list[SeedEvidence], metric: str) -> dict[str, Any] | None:
    """The student to ship and why (what ``ship.json`` holds); None when there is none.
    ``metric`` says what the scores are (``validation top-1 at 7 px``)."""
    if not evidence:
        return None
    names = list(evidence[0].scores)
    means = {n: statistics.fmean(e.scores[n] for e in evidence) for n in names}
    ranked = sorted(names, key=lambda n: -means[n])  # stable: the config's order breaks ties
    best = ranked[0]
    seed_of = max(evidence, key=lambda e: e.scores[best])  # first seed on a tie
    choice: dict[str, Any] = {
        "method": best,
        "seed": seed_of.seed,
        "path": seed_of.stage_dirs[best],
        "chosen_on": metric,
        "validation_images": int(seed_of.hits[best].numel()) if seed_of.hits else None,
        "seeds": [e.seed for e in evidence],
        "validation": {n: round(means[n], 4) for n in ranked},
        "runner_up": None,
        "lead": None,
        "standard_error": None,
        "within_noise": None,
        "noise": None,  # which spread the standard error holds, in words
        "cut": None,  # how many standard errors the lead must pass to be beyond noise
        "chance": None,  # classification: 100 / classes, and the chosen method's 95% lower
        "lower_bound": None,  # bound on validation (Wilson's, its hits pooled over its seeds)
        "lower_bound_images": None,
        "near_chance": None,
        "rule": f"highest mean {metric} over seeds among the trained students "
                f"(references excluded); noise, on the validation images: {NOISE_RULE}",
    }
    if len(ranked) > 1:
        second = ranked[1]
        choice["runner_up"] = second
        choice["lead"] = round(means[best] - means[second], 4)
        if all(e.hits for e in evidence):
            lead = lead_noise([e.hits[best] for e in evidence],
                              [e.hits[second] for e in evidence],
                              same_images=len({e.images for e in evidence}) == 1)
            choice["standard_error"] = round(lead.standard_error, 4)
            choice["cut"] = round(lead.cut, 4)
            choice["within_noise"] = lead.within_noise
            choice["noise"] = lead.spread()
    _chance(choice, evidence)
    return choice


def describe(choice: dict[str, Any]) -> str:
    """The choice in words, for results.md and the end of ``horkd run``; a near-chance student
    is said to be first."""
    return near_chance(choice) + _choice(choice)


def near_chance(choice: dict[str, Any]) -> str:
    """The warning a near-chance choice opens with (empty otherwise)."""
    if not choice.get("near_chance"):
        return ""
    classes = round(100 / choice["chance"])
    images = choice.get("lower_bound_images") or choice.get("validation_images")
    return (f"Near chance: not worth shipping; more labels/epochs. `{choice['method']}`'s "
            f"validation top-1 is within {NEAR_CHANCE_MARGIN:g} points of chance: the lower end "
            f"of its 95% interval (Wilson, on {images} validation hits pooled over its seeds) is "
            f"{choice['lower_bound']:.2f}, not over {choice['chance'] + NEAR_CHANCE_MARGIN:.2f} "
            f"(chance, {choice['chance']:.2f} with {classes} classes, + "
            f"{NEAR_CHANCE_MARGIN:g} points). ")


def _choice(choice: dict[str, Any]) -> str:
    best, metric = choice["method"], choice["chosen_on"]
    images = choice.get("validation_images")
    verb = "Best of a poor lot" if choice.get("near_chance") else "Deploy"  # never both
    text = f"{verb} `{best}` ({choice['path']}): chosen on {metric}, {choice['validation'][best]:.2f}"
    second = choice.get("runner_up")
    if second is None:
        return text + " (the only student the run trained)."
    lead, se = choice["lead"], choice.get("standard_error")
    than = f"`{second}` ({choice['validation'][second]:.2f})"
    if lead == 0:
        return text + f", level with the next, {than}: a tie goes to the method listed first."
    text += f", {lead:.2f} points above the next, {than}"
    if se is None:
        return text + "; whether that is noise is judged for classification only."
    spread = choice.get("noise") or f"paired on the same {images} images"
    cut = choice.get("cut") or 2.0  # a choice written before the cut was kept: its rule, 2
    one = f"one is {se:.2f} points, {spread}"
    if choice["within_noise"]:
        return (text + f": within noise (the lead is not over {cut:.2f} standard errors; "
                f"{one}): either would likely serve as well.")
    return text + f": beyond noise (the lead is over {cut:.2f} standard errors; {one})."


def write_choice(run_dir: Path, evidence: list[SeedEvidence], metric: str) -> str:
    """Decide, write ``RUN/ship.json`` (whole or not at all) and return the choice in words
    (empty when nothing was chosen, and any older choice removed)."""
    choice = choose(evidence, metric)
    if choice is None:
        (run_dir / SHIP_FILE).unlink(missing_ok=True)
        return ""
    text = describe(choice)
    write_json(run_dir / SHIP_FILE, {**choice, "summary": text}, "the student to ship")
    return text
