"""Train or load one stage: the Trainer, resume, ``done.json`` and the reference cache.

A stage is a folder of a seed's run directory (``teacher``, ``assistant``, ``students/<name>``)
holding the networks it produced and ``done.json``: the fingerprint of the settings it was
trained with and its validation outcome. The runner returns what it trained or loaded; nothing
in the same process reads the files back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Subset

from horkd import distributed
from horkd.checkpoint import CheckpointError, build_from_checkpoint, write_json
from horkd.config import StageConfig
from horkd.data.digest import data_digest
from horkd.data.loader import BatchLoader
from horkd.experiment.batches import batch_maker, train_batches
from horkd.experiment.context import RunContext
from horkd.methods import Method
from horkd.models.size_norm import recompute_size_statistics
from horkd.reference_cache import ReferenceCaches
from horkd.run_dir import finished_stage
from horkd.trainer import STATE_FILE, Trainer


@dataclass(frozen=True)
class StageOutcome:
    """The networks a stage produced (by role: ``student``, ``assistant`` for the joint method)
    and its record: fingerprint, best epoch, validation score, seconds."""

    networks: dict[str, nn.Module]
    record: dict[str, Any] = field(default_factory=dict)
    projector: dict[str, Any] | None = None  # its embedding term's map P (weight, target digest)
    trained_now: bool = False  # trained by this process, not loaded from a finished stage

    @property
    def model(self) -> nn.Module:
        return self.networks["student"]

    @property
    def best_score(self) -> float | None:
        return self.record.get("best_score")


def projector_of(method: Method) -> dict[str, Any] | None:
    """The learned map P of a first-order embedding term toward a frozen reference, with the
    digest of the network it maps into (None: the method has no such term)."""
    from horkd.reference_cache import weights_digest

    loss = getattr(method, "distill_loss", None)
    embedding = getattr(loss, "embedding", None)
    reference = method.reference
    if embedding is None or reference is None:
        return None
    target = getattr(reference, "assistant", reference)  # LogitsFromTeacher: the embedding's
    facts: dict[str, Any] = {
        "target": "assistant" if target is not reference else "reference",
        "target_weights": weights_digest(target),
    }
    weight = getattr(embedding.projector, "weight", None)
    if weight is None:
        return {**facts, "identity": True}
    return {**facts, "weight": weight.detach().float().cpu().contiguous()}


def save_projector(out_dir: Path, method: Method) -> dict[str, Any] | None:
    """:func:`projector_of`, its weight saved as ``projector.safetensors`` beside the model
    (``horkd search --gallery-model`` maps queries with it); returns what model.json records."""
    from safetensors.torch import save_file

    from horkd.checkpoint import atomic_write

    facts = projector_of(method)
    if facts is None or "weight" not in facts:
        return facts
    tensors = {"weight": facts.pop("weight")}
    atomic_write(out_dir / "projector.safetensors", lambda tmp: save_file(tensors, tmp))
    return {**facts, "file": "projector.safetensors"}


SHORT_EPOCH = 100  # steps: below this, BatchNorm running averages lag an epoch's weights


def near_chance(top1: float, num_classes: int) -> bool:
    """A top-1 closer to chance than to a quarter of the way from chance to 100."""
    if num_classes < 2:
        return False
    chance = 100.0 / num_classes
    return top1 < chance + (100.0 - chance) / 4


def chance_note(record: dict[str, Any], num_classes: int) -> str | None:
    """A line for a classification teacher whose best validation top-1 is closer to chance than
    to a quarter of the way from chance to 100: there is nothing to distil, and a user should
    hear it after the teacher, not from a report of students at chance an hour later."""
    score = record.get("best_score")
    if record.get("score_key") != "top1" or score is None or not near_chance(score, num_classes):
        return None
    chance = 100.0 / num_classes
    return (f"teacher: best validation top-1 {score:.2f} with {num_classes} classes (chance "
            f"{chance:.2f}): it has learned next to nothing to teach its students. With a few "
            "hundred images, try train.teacher.optimizer.name=adam train.teacher.optimizer.lr=0.001 "
            "train.teacher.optimizer.weight_decay=0 data.augment.crop_padding=0, more "
            "train.teacher.epochs, or a pretrained teacher (teacher.arch=tv_resnet18 "
            "teacher.width=null teacher.weights=DEFAULT: torchvision's ImageNet weights, or "
            "teacher.weights=FILE)")


def validated_sizes(ctx: RunContext, view: str, upsample: bool | None) -> tuple[int, ...]:
    """The LR sizes a stage is validated at: every trained size for a student as the students
    take LR, the one LR size otherwise (an HR stage ignores it)."""
    return tuple(ctx.lr_sizes) if view == "lr" and upsample is None else (ctx.lr_size,)


def statistics_refresher(
    ctx: RunContext, view: str, upsample: bool | None, stage: StageConfig, steps: int
) -> Callable[[nn.Module], None] | None:
    """BatchNorm statistics recomputed at every epoch end from a fixed sample of training images
    (unaugmented, as validation sees them), so the epoch picked and the saved model use
    statistics that match their weights. A native student across sizes has one set per size
    (``degrade.size_statistics``); any other network, ``train.<stage>.batchnorm_statistics``:
    by default when an epoch is short, where the running averages (momentum 0.1) still hold
    much of earlier weights' statistics."""
    degrade = ctx.cfg.degrade
    if view == "lr" and upsample is None and degrade.norm_sizes:
        if degrade.size_statistics != "recomputed":
            return None
    elif stage.batchnorm_statistics == "running" or (
            stage.batchnorm_statistics == "auto" and steps >= SHORT_EPOCH):
        return None
    train = ctx.splits.train
    count = min(degrade.statistics_images, len(train))  # type: ignore[arg-type]
    order = torch.Generator().manual_seed(ctx.seed)  # its own: the training stream is untouched
    picked = torch.randperm(len(train), generator=order)  # type: ignore[arg-type]
    per_batch = -(-count // -(-count // 256))  # batches of 256 at most, near-equal sizes
    sample = BatchLoader(Subset(train, picked[:count].tolist()), batch_size=per_batch,
                         shuffle=False, num_workers=ctx.cfg.data.num_workers)
    inputs = [ctx.inputs(view, size=s, upsample=upsample)  # type: ignore[arg-type]
              for s in validated_sizes(ctx, view, upsample)]

    def batches() -> Iterator[Tensor]:
        for images, _, _ in sample:
            yield images.to(ctx.device)

    return lambda model: recompute_size_statistics(model, batches, inputs)


class StageRunner:
    """Trains a seed's stages under ``seed_dir``; a finished stage with the same fingerprint is
    loaded instead (``resume``), an interrupted one continues from its saved state."""

    def __init__(
        self,
        ctx: RunContext,
        seed_dir: Path,
        *,
        progress: bool = True,
        label: str = "",
        resume: bool = False,
        caches: ReferenceCaches | None = None,
    ) -> None:
        self.ctx = ctx
        self.seed_dir = seed_dir
        self.progress = progress
        self.label = label  # before a stage's name in its lines: which of many runs it is
        self.resume = resume
        self.caches = caches if caches is not None else ReferenceCaches()

    def finished(self, name: str, fingerprint: str) -> StageOutcome | None:
        """The stage's networks and record when it finished with these settings, else None."""
        stage_dir = self.seed_dir / name
        if not (self.resume and finished_stage(stage_dir, fingerprint)):
            self._say_if_data_changed(name, stage_dir)
            self._set_aside_unreadable_state(name, stage_dir)
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:  # done.json never outranks weights that cannot be read: those retrain the stage
            record = json.loads((stage_dir / "done.json").read_text())
            networks = {"student": build_from_checkpoint(stage_dir / "model").to(self.ctx.device)}
            projector = json.loads((stage_dir / "model.json").read_text()).get("projector")
            if projector and projector.get("file"):
                file = stage_dir / projector["file"]
                try:
                    projector["weight"] = load_file(str(file))["weight"]
                except (SafetensorError, KeyError) as exc:
                    raise CheckpointError(f"cannot read {file}: {exc}") from None
        except (CheckpointError, OSError, ValueError) as exc:
            self._say(name, f"finished, but {exc}: training it again")
            return None
        return StageOutcome(networks, record, projector)

    def _say(self, name: str, text: str) -> None:
        if distributed.is_main():
            where = f"{self.label}: {name}" if self.label else name
            print(f"[{where}] {text}", flush=True)

    def _set_aside_unreadable_state(self, name: str, stage_dir: Path) -> None:
        """A damaged ``done.json`` is named (the stage trains again); an interrupted stage's
        saved state that cannot be read (cut short, overwritten) is moved aside, with a line
        saying so, and the stage starts over instead of stopping."""
        from safetensors import safe_open

        if not (self.resume and distributed.is_main()):
            return
        done = stage_dir / "done.json"
        try:
            if done.is_file() and not isinstance(json.loads(done.read_text()), dict):
                raise ValueError("it holds no JSON object")
        except (OSError, ValueError) as exc:
            self._say(name, f"{done} cannot be read ({exc}): training the stage again")
        state = stage_dir / STATE_FILE
        if not state.is_file():
            return
        try:
            with safe_open(str(state), framework="pt") as handle:
                handle.metadata()
        except Exception as exc:  # noqa: BLE001 - safetensors' own errors: the file is damaged
            aside = state.with_name(state.name + ".damaged")
            state.replace(aside)
            self._say(name, f"its saved training state {state} cannot be read ({exc}): moved "
                      f"aside to {aside.name}; the stage starts over")

    def _say_if_data_changed(self, name: str, stage_dir: Path) -> None:
        """A finished stage retrained because its data changed says so (else a user who added
        images sees a long retraining with no reason given)."""
        if not self.resume or not distributed.is_main():
            return
        try:
            done = json.loads((stage_dir / "done.json").read_text())
        except (OSError, ValueError):
            return
        where = f"{self.label}: {name}" if self.label else name
        if "data_files" not in done:  # finished by a horkd that did not record its data
            print(f"[{where}] was trained by an earlier horkd that did not record which data it "
                  "learnt from: training it again", flush=True)
        elif done["data_files"] != self.data_files():
            print(f"[{where}] its data changed since it was trained (images added, "
                  "removed or replaced): training it again", flush=True)

    def data_files(self) -> str | None:
        cfg = self.ctx.cfg.data
        return data_digest(cfg.dataset, cfg.root)

    def train(
        self,
        name: str,
        method: Method,
        stage: StageConfig,
        metas: dict[str, dict[str, Any]],
        fingerprint: str,
        upsample: bool | None = None,
        few_labels: bool = True,
    ) -> StageOutcome:
        """Train ``method`` as stage ``name``; ``upsample`` overrides how it takes LR (the LR
        oracle: at the HR size whatever the students take)."""
        ctx = self.ctx
        out_dir = self.seed_dir / name
        view = method.student_view
        if ctx.cfg.distill.cache_reference and method.reference is not None:
            method.reference_cache = self.caches.get(
                method.reference, ctx.splits.train, ctx.device, views=ctx.cache_views()
            )
        batches = train_batches(ctx, stage)
        steps = min(len(batches), stage.max_steps_per_epoch or len(batches))
        trainer = Trainer(
            method,
            stage,
            train_batches=batches,
            make_batch=batch_maker(ctx, name, view == "lr", stage, upsample, few_labels),
            validate=self._validator(view, upsample),
            refresh_statistics=statistics_refresher(ctx, view, upsample, stage, steps),
            score_key=ctx.task.score_key,
            device=ctx.device,
            out_dir=out_dir,
            meta=metas,
            progress=self.progress,
            label=f"{self.label}: {out_dir.name}" if self.label else None,
            resume=self.resume,
            fingerprint=fingerprint,
        )
        if distributed.is_main():  # a stage in training is not finished, whatever ran before
            (out_dir / "done.json").unlink(missing_ok=True)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = trainer.fit()
        record = {
            "fingerprint": fingerprint,
            "data_files": self.data_files(),
            "threads": torch.get_num_threads(),  # seconds x threads: CPU where cpu_seconds is not
            "best_epoch": result.best_epoch,
            "best_score": result.best_score,
            "score_key": ctx.task.score_key,
            "skipped_steps": result.skipped_steps,
            # a stage resumed from an earlier process trained there too: its epochs' own times
            "seconds": max(time.perf_counter() - started,
                           sum(row.get("train/seconds", 0.0) for row in result.history)),
            # the CPU it used, every thread (a pause is not counted, unlike seconds x threads)
            "cpu_seconds": max(time.process_time() - cpu_started,
                               sum(row.get("train/cpu_seconds", 0.0) for row in result.history)),
        }
        if distributed.is_main():
            self._record_facts(out_dir, method, view, upsample)
            write_json(out_dir / "done.json", record)
            trainer.discard_state()  # the checkpoint and done.json above supersede it
        return StageOutcome(method.saved_networks(), record, projector_of(method), trained_now=True)

    def _record_facts(
        self, out_dir: Path, method: Method, view: str, upsample: bool | None
    ) -> None:
        """What using the network later needs, beside its weights: the projector of its
        embedding term (to search a gallery embedded by that reference) and the task's facts
        (a face model's verification threshold, chosen on validation pairs)."""
        meta_path = out_dir / "model.json"
        meta = json.loads(meta_path.read_text())
        to_input = self.ctx.inputs(view, upsample=upsample)  # type: ignore[arg-type]
        meta.update(self.ctx.task.checkpoint_facts(self.ctx, method.student, to_input))
        projector = save_projector(out_dir, method)
        if projector:
            meta["projector"] = projector
        write_json(meta_path, meta)

    def _validator(self, view: str, upsample: bool | None) -> Any:
        """Validation at the stage's input; a student trained across LR sizes is scored at each
        and the metrics averaged, so the epoch picked is the best over the range."""
        ctx = self.ctx
        if ctx.splits.val is None:
            return None
        inputs = [ctx.inputs(view, size=s, upsample=upsample)  # type: ignore[arg-type]
                  for s in validated_sizes(ctx, view, upsample)]

        def validate(model: nn.Module) -> dict[str, float]:
            scores = [ctx.task.validate(ctx, model, to_input) for to_input in inputs]
            return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}

        return validate
