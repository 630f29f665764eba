"""The assistant as a bridge: what it looks at, how the students see it, whether it is trusted.

The paper's assistant learns on HR (the architecture gap first); with ``distill.assistant_input:
lr`` it learns on the students' LR re-upsampled to the HR size (the resolution gap first). Either
way a reference is handed the HR batch, so an LR assistant degrades it itself.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from horkd.data.validation_source import holds_validation_apart
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


def guard_verdict(ctx: RunContext, teacher: nn.Module, assistant: nn.Module,
                  label: str = "") -> dict[str, Any]:
    """Whether the assistant is worth learning from: its validation score within
    ``distill.assistant_guard`` points of the teacher's, both on the input the assistant takes
    (an LR assistant is held to what the teacher does with that LR, not with detail it lacks).
    ``label`` names the run in what it prints, where several runs share a log."""
    guard = ctx.cfg.distill.assistant_guard
    verdict: dict[str, Any] = {"trusted": True, "guard": guard}
    if guard is None or ctx.splits.val is None:
        return verdict
    seen, task = assistant_view(ctx), ctx.task
    t_score = task.validate(ctx, teacher, seen)[task.score_key]
    a_score = task.validate(ctx, assistant, seen)[task.score_key]
    held_out = teacher_held_out(ctx)
    verdict.update(teacher=t_score, assistant=a_score, trusted=a_score >= t_score - guard,
                   teacher_held_out=held_out)
    where = f"[{label}] " if label else ""
    if held_out is False:
        remedy = ("a teacher of the same data files, data.val_fraction and data.test_fraction"
                  if holds_validation_apart(ctx.cfg.data.dataset)
                  else "a teacher trained without them (data.val_from_subset)")
        print(f"{where}the teacher's checkpoint may have trained on images this run validates "
              f"on, so its validation score ({t_score:.2f}) is optimistic and the guard strict; "
              f"give it {remedy}", flush=True)
    if not verdict["trusted"]:
        print(f"{where}the assistant scores {a_score:.2f} on validation against the teacher's "
              f"{t_score:.2f} (more than distill.assistant_guard={guard} points below): HORKD "
              "students learn from the teacher directly", flush=True)
    return verdict


# what decides which images a run's validation split holds (not hr_size: it resizes them)
SPLIT_KEYS = ("dataset", "root", "val_fraction", "train_subset", "val_from_subset",
              "test_fraction", "skip_bad_images", "val_size", "split_file", "part")


def teacher_held_out(ctx: RunContext) -> bool | None:
    """Whether the teacher never trained on this run's validation images: True when it trained
    here, or its checkpoint carved the same validation split (the same task, split settings and
    seed, or ``val_from_subset`` naming this run's subset); False when it carved another; None
    when its checkpoint does not say."""
    from horkd.checkpoint import load_meta
    from horkd.config import DataConfig, RetrievalConfig
    from horkd.data.validation_source import same_held_apart_set

    if not ctx.cfg.teacher.checkpoint:
        return True
    path = ctx.cfg.teacher.checkpoint.replace("{seed}", str(ctx.seed))
    try:
        meta = load_meta(path)
    except (OSError, ValueError):
        return None
    config = meta.get("config") or {}
    if "data" not in config:
        return None
    ours = ctx.cfg.data.model_dump(mode="json")
    theirs = {**{k: f.default for k, f in DataConfig.model_fields.items()}, **config["data"]}
    our_seed = ours["split_seed"] if ours["split_seed"] is not None else ctx.seed
    their_seed = theirs["split_seed"] if theirs["split_seed"] is not None else meta.get("seed")
    task = config.get("task", "classification")
    retrieval = {**RetrievalConfig().model_dump(mode="json"), **config.get("retrieval", {})}
    if task != ctx.cfg.task or retrieval != ctx.cfg.retrieval.model_dump(mode="json") or (
            task == "retrieval" and meta.get("seed") != ctx.seed):  # classes drawn by the seed
        return False
    held_apart = same_held_apart_set(ours, theirs)
    if held_apart is not None:  # the validation fonts: no seed or subset moves them...
        return held_apart and _same_data_files(path, ours)
    same_split = all(theirs[k] == ours[k] for k in SPLIT_KEYS) and their_seed == our_seed
    if ours["split_file"] or theirs["split_file"]:
        return _apart_by_parts(ours, theirs, same_split)
    carved_ours = (ours["train_subset"] is not None
                   and theirs["val_from_subset"] == ours["train_subset"]
                   and all(theirs[k] == ours[k] for k in ("dataset", "root", "val_fraction"))
                   and their_seed == our_seed)
    return same_split or carved_ours


def _same_data_files(checkpoint: str, ours: dict[str, Any]) -> bool:
    """...unless its stage recorded other data files (the same settings over another font set
    draw other validation fonts); a checkpoint without a stage record is judged by settings."""
    import json
    from pathlib import Path

    from horkd.data.digest import data_digest

    try:
        done = json.loads((Path(checkpoint).parent / "done.json").read_text())
    except (OSError, ValueError):
        return True
    recorded = done.get("data_files") if isinstance(done, dict) else None
    return recorded is None or recorded == data_digest(ours["dataset"], ours["root"])


def _apart_by_parts(ours: dict[str, Any], theirs: dict[str, Any], same_split: bool) -> bool | None:
    """A teacher trained on another part of the same partition never saw this run's images; on
    the same part only the same carving held them out; None where the partitions differ or
    cannot be read."""
    from horkd.data.partition import PartitionError, partition_digest

    if not (ours["split_file"] and theirs["split_file"]):
        return None
    try:
        if partition_digest(ours["split_file"]) != partition_digest(theirs["split_file"]):
            return None
    except PartitionError:
        return None
    return True if theirs["part"] != ours["part"] else same_split
