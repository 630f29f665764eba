"""Teacher -> assistant -> student, every baseline beside it, one results table.

Layout of a run directory (self-describing: config, code version, seeds, metrics, weights)::

    RUN/config.yaml  RUN/run.json  RUN/results.{md,csv,json}
    RUN/seed0/teacher/model.{safetensors,json} metrics.{csv,jsonl} tensorboard/
    RUN/seed0/assistant/...        RUN/seed0/students/<method>/...
    RUN/seed0/results.json

A stage whose ``done.json`` exists is loaded instead of retrained when resuming.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from horkd import distributed
from horkd.checkpoint import build_from_checkpoint, git_sha, write_json
from horkd.config import DegradeConfig, ExperimentConfig, StageConfig
from horkd.cost import count_flops, count_parameters
from horkd.data import AugmentSpec, DataSplits, build_splits, labels_of, make_loader
from horkd.data.augment import augment_batch_with_flips
from horkd.data.split import labeled_mask
from horkd.degrade import Degrader, DegradeSpec, resolve_lr_size
from horkd.evaluate import identity, lr_input_fn
from horkd.losses.task import build_task_loss
from horkd.methods import METHODS, Batch, DistillMethod, Method, MethodContext, SupervisedMethod
from horkd.methods.presets import hybrid_loss
from horkd.models import build_model
from horkd.reference_cache import ReferenceCache
from horkd.run_dir import (
    RunDirError,
    assistant_fingerprint,
    finished_stage,
    prepare_run_dir,
    student_fingerprint,
    teacher_fingerprint,
)
from horkd.tasks import TASKS
from horkd.trainer import Trainer

__all__ = ["RunDirError", "SeedRun", "load_splits", "run_ablation", "run_experiment"]


def degrade_spec(d: DegradeConfig, lr_size: int, upsample: bool) -> DegradeSpec:
    """The configured degradation at a given LR size (evaluation sweeps change only the size)."""
    return DegradeSpec(
        lr_size=lr_size,
        interpolation=d.interpolation,
        antialias=d.antialias,
        blur_sigma=d.blur_sigma,
        noise_std=d.noise_std,
        jpeg_quality=d.jpeg_quality,
        upsample=upsample,
    )


def resolve_device(name: str) -> torch.device:
    """The configured device; under torchrun each process takes its own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available")
    return distributed.local_device(torch.device(name))


def start_processes(cfg: ExperimentConfig) -> None:
    """Join torchrun's process group when launched by it (no-op otherwise)."""
    distributed.init_distributed(resolve_device(cfg.device).type)


def prepare_run_dir_once(cfg: ExperimentConfig, run_dir: Path, resume: bool, overwrite: bool):
    """Rank 0 checks and prepares the directory; every rank gets its verdict."""
    error = None
    if distributed.is_main():
        try:
            prepare_run_dir(cfg, run_dir, resume=resume, overwrite=overwrite)
        except RunDirError as exc:
            error = str(exc)
    error = distributed.broadcast_from_main(error)
    if error is not None:
        raise RunDirError(error)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class PairedBatchMaker:
    """Augment the HR batch once on the device, then degrade that same tensor to LR.

    Its generator is part of the resumable training state (``state_dict``), so a resumed stage
    draws the same crops, flips and noise as one that never stopped.
    """

    def __init__(
        self,
        augment: AugmentSpec,
        degrader: Degrader | None,
        generator: torch.Generator,
        labeled: Tensor | None = None,
    ) -> None:
        self.augment = augment
        self.degrader = degrader
        self.generator = generator
        self.labeled = labeled  # bool per training image (few-label runs); None = all labelled

    def __call__(self, x: Tensor, y: Tensor, index: Tensor) -> Batch:
        hr, flipped = augment_batch_with_flips(x, self.augment, self.generator)
        lr = hr if self.degrader is None else self.degrader(hr, generator=self.generator)
        labeled = None
        if self.labeled is not None:
            labeled = self.labeled[index.cpu()].to(y.device)
        return Batch(hr=hr, lr=lr, target=y, index=index, flipped=flipped, labeled=labeled)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


@dataclass
class Row:
    """One line of the results table: a network, its cost and its task metrics."""

    method: str
    role: str  # teacher | assistant | student
    params: int
    flops: int
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "role": self.role,
            "params": self.params,
            "flops": self.flops,
            **self.metrics,
        }


class SeedRun:
    """Everything one seed trains and evaluates; networks are trained once and reused."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        seed: int,
        run_dir: Path,
        *,
        splits: DataSplits,
        progress: bool = True,
        resume: bool = False,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.dir = run_dir / f"seed{seed}"
        self.progress = progress
        self.resume = resume
        self.device = resolve_device(cfg.device)
        self.task = TASKS.get(cfg.task)()
        self.splits = self.task.prepare(splits, cfg, seed)
        info = self.splits.info
        self.in_channels = info.in_channels
        self.hr_size = cfg.data.hr_size or info.native_size
        self.lr_size = resolve_lr_size(self.hr_size, cfg.degrade.lr_size, cfg.degrade.factor)
        self.upsampled = cfg.degrade.student_input == "upsampled"
        self.student_spec = self.degrade_spec(self.lr_size, upsample=self.upsampled)
        self.augment = AugmentSpec(cfg.data.augment.crop_padding, cfg.data.augment.hflip)
        self.labeled = None
        if cfg.data.label_fraction is not None:
            split_seed = seed if cfg.data.split_seed is None else cfg.data.split_seed
            labels = labels_of(self.splits.train)
            self.labeled = labeled_mask(labels, cfg.data.label_fraction, split_seed)
        self._teacher: nn.Module | None = None
        self._assistant: nn.Module | None = None
        self._students: dict[str, nn.Module] = {}  # trained once per run, reused by the curve

    # ----------------------------------------------------------------- data and inputs
    def degrade_spec(self, lr_size: int, upsample: bool) -> DegradeSpec:
        return degrade_spec(self.cfg.degrade, lr_size, upsample)

    def train_batches(self, stage: StageConfig) -> Any:
        return make_loader(
            self.splits.train,
            batch_size=stage.batch_size,
            shuffle=True,
            seed=self.seed,
            drop_last=len(self.splits.train) > stage.batch_size * distributed.world_size(),
            num_workers=self.cfg.data.num_workers,
            rank=distributed.rank(),
            world_size=distributed.world_size(),
        )

    def batch_fn(self, seed_offset: int, degrade: bool = True) -> PairedBatchMaker:
        """``degrade=False`` for stages that see only HR (teacher, assistant): they make no LR
        view, so the degradation settings cannot change what they learn."""
        degrader = Degrader(self.hr_size, self.student_spec).to(self.device) if degrade else None
        seed = self.seed * 1000 + seed_offset + 7919 * distributed.rank()  # own draws per rank
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return PairedBatchMaker(self.augment, degrader, generator, self.labeled)

    def input_fn(self, view: str, size: int | None = None, upsample: bool | None = None) -> Any:
        if view == "hr":
            return identity
        size = size or self.lr_size
        upsample = self.upsampled if upsample is None else upsample
        spec = self.degrade_spec(size, upsample)
        input_size = None if upsample else self.lr_size  # native students keep their input size
        return lr_input_fn(self.hr_size, spec, self.device, self.seed, input_size)

    # ----------------------------------------------------------------- networks
    def model_recipe(self, role: str) -> dict[str, Any]:
        m = getattr(self.cfg, role)
        info = self.splits.info
        return {
            "arch": m.arch,
            "num_classes": info.num_classes,
            "in_channels": info.in_channels,
            "embed_dim": m.embed_dim,
            "width": m.width,
            "mean": list(info.mean),
            "std": list(info.std),
            **m.kwargs,
        }

    def _expected(self, role: str) -> dict[str, Any]:
        """What a user-given checkpoint for ``role`` must match to fit this config."""
        recipe = self.model_recipe(role)
        return {k: recipe[k] for k in ("arch", "num_classes", "in_channels")}

    def new_model(self, role: str) -> nn.Module:
        m = getattr(self.cfg, role)
        return build_model(**self.model_recipe(role), weights_path=m.weights).to(self.device)

    def new_criterion(self, network: nn.Module) -> nn.Module:
        loss = self.cfg.task_loss
        return build_task_loss(
            loss.name or self.task.default_loss,
            num_classes=self.splits.info.num_classes,
            embed_dim=network.embed_dim,
            **loss.kwargs,
        ).to(self.device)

    def validator(self, view: str) -> Any:
        if self.splits.val is None:
            return None
        to_input = self.input_fn(view)

        def validate(model: nn.Module) -> dict[str, float]:
            return self.task.validate(model, self.splits.val, self.device, to_input)

        return validate

    def meta(self, role: str, view: str, method: str) -> dict[str, Any]:
        return {
            "model": self.model_recipe(role),
            "role": role,
            "method": method,
            "seed": self.seed,
            "input": {
                "view": view,
                "hr_size": self.hr_size,
                "lr_size": self.lr_size if view == "lr" else None,
                "upsampled": self.upsampled if view == "lr" else False,
            },
            "dataset": self.cfg.data.dataset,
            "task": self.cfg.task,
            "config": self.cfg.model_dump(mode="json"),
        }

    def _train_stage(
        self,
        name: str,
        method: Method,
        stage: StageConfig,
        metas: dict[str, dict[str, Any]],
        fingerprint: str,
    ) -> None:
        out_dir = self.dir / name
        view = method.student_view
        if self.cfg.distill.cache_reference and method.reference is not None:
            method.reference_cache = ReferenceCache.shared(
                method.reference, self.splits.train, self.device, flips=self.augment.hflip
            )
        trainer = Trainer(
            method,
            stage,
            train_batches=self.train_batches(stage),
            make_batch=self.batch_fn(
                seed_offset=len(name) + sum(map(ord, name)), degrade=view == "lr"
            ),
            validate=self.validator(view),
            score_key=self.task.score_key,
            device=self.device,
            out_dir=out_dir,
            meta=metas,
            progress=self.progress,
            resume=self.resume,
            fingerprint=fingerprint,
        )
        if distributed.is_main():  # a stage in training is not finished, whatever ran before
            (out_dir / "done.json").unlink(missing_ok=True)
        started = time.perf_counter()
        result = trainer.fit()
        if not distributed.is_main():
            return
        write_json(
            out_dir / "done.json",
            {
                "fingerprint": fingerprint,
                "best_epoch": result.best_epoch,
                "best_score": result.best_score,
                "score_key": self.task.score_key,
                "skipped_steps": result.skipped_steps,
                "seconds": time.perf_counter() - started,
            },
        )
        trainer.discard_state()  # the checkpoint and done.json above supersede it

    def _finished(self, name: str, fingerprint: str) -> bool:
        return self.resume and finished_stage(self.dir / name, fingerprint)

    def _load(self, name: str, role: str = "model") -> nn.Module:
        return build_from_checkpoint(self.dir / name / role).to(self.device)

    def teacher(self) -> nn.Module:
        if self._teacher is not None:
            return self._teacher
        m = self.cfg.teacher
        if m.checkpoint:
            self._teacher = build_from_checkpoint(
                m.checkpoint, expect=self._expected("teacher")
            ).to(self.device)
        elif self._finished("teacher", fp := teacher_fingerprint(self.cfg, self.seed)):
            self._teacher = self._load("teacher")
        else:
            seed_everything(self.seed, self.cfg.deterministic)
            teacher = self.new_model("teacher")
            method = SupervisedMethod(teacher, self.new_criterion(teacher), student_view="hr")
            metas = {"student": self.meta("teacher", "hr", "supervised")}
            self._train_stage("teacher", method, self.cfg.train.teacher, metas, fp)
            self._teacher = method.student
        self._teacher.eval()
        return self._teacher

    def assistant(self) -> nn.Module:
        """Cross-structure distillation: the light network learns from the teacher on HR."""
        if self._assistant is not None:
            return self._assistant
        if self.cfg.assistant.checkpoint:
            self._assistant = build_from_checkpoint(
                self.cfg.assistant.checkpoint, expect=self._expected("assistant")
            ).to(self.device)
        elif self._finished("assistant", fp := assistant_fingerprint(self.cfg, self.seed)):
            self._assistant = self._load("assistant")
        else:
            teacher = self.teacher()
            seed_everything(self.seed, self.cfg.deterministic)
            assistant = self.new_model("assistant")
            loss = hybrid_loss(
                self.cfg.distill.loss, assistant, teacher, None, self.task.uses_logits
            )
            method = DistillMethod(
                assistant,
                self.new_criterion(assistant),
                teacher,
                loss,
                student_view="hr",
                task_weight=self.cfg.distill.loss.task_weight,
            )
            metas = {"student": self.meta("assistant", "hr", "horkd_cross_structure")}
            self._train_stage("assistant", method, self.cfg.train.assistant, metas, fp)
            self._assistant = method.student
        self._assistant.eval()
        return self._assistant

    def student(
        self, method_name: str, stage: str | None = None, orders: list[int] | None = None
    ) -> nn.Module:
        """A new student trained by ``method_name`` with the student's budget.

        ``orders`` overrides the distilled orders for this student only (the ablation), whose
        result is kept under ``stage`` (default ``students/<method>``).
        """
        name = stage or f"students/{method_name}"
        if name in self._students:
            return self._students[name]
        spec = METHODS.get(method_name)
        assert spec.build is not None, f"{method_name} trains nothing"
        cfg = self.cfg
        if orders is not None:
            cfg = cfg.model_copy(deep=True)
            cfg.distill.loss.orders = list(orders)
        fp = student_fingerprint(
            cfg,
            self.seed,
            method_name,
            teacher=spec.needs_teacher,
            assistant=spec.requires_assistant(self.cfg),
            upstream=self.cfg,
        )
        if self._finished(name, fp):
            self._students[name] = self._load(name)
            return self._students[name]
        ctx = MethodContext(
            cfg=cfg,
            new_student=lambda: self.new_model("student"),
            new_assistant=lambda: self.new_model("assistant"),
            new_criterion=self.new_criterion,
            teacher=self.teacher() if spec.needs_teacher else None,
            assistant=self.assistant() if spec.requires_assistant(self.cfg) else None,
            uses_logits=self.task.uses_logits,
        )
        seed_everything(self.seed, self.cfg.deterministic)
        method = spec.build(ctx)
        metas = {
            "student": self.meta("student", "lr", method_name),
            "assistant": self.meta("assistant", "hr", method_name),
        }
        self._train_stage(name, method, self.cfg.train.student, metas, fp)
        self._students[name] = method.student
        return method.student

    def validation_score(self, method_name: str) -> float:
        """The student's best validation score (the task's score key), training it if needed.

        What a hyper-parameter search compares: the test split is not touched.
        """
        self.student(method_name)
        done = self.dir / "students" / method_name / "done.json"
        score = json.loads(done.read_text()).get("best_score")
        if score is None:
            raise ValueError(f"{done} holds no validation score: the run needs data.val_fraction")
        return float(score)

    # ----------------------------------------------------------------- results
    def _cost(self, model: nn.Module, view: str) -> tuple[int, int]:
        side = self.hr_size if view == "hr" or self.upsampled else self.lr_size
        shape = (self.in_channels, side, side)
        return count_parameters(model), count_flops(model, shape)

    def run(self, methods: list[str], *, with_teacher: bool = True) -> list[Row]:
        """Train what the methods need, then score every network once on the test split.

        ``with_teacher=False`` leaves out the teacher's own rows (a study that runs each method
        separately scores its shared teacher once, not once per method).
        """
        rows: list[Row] = []
        teacher = self.teacher()
        t_cost = self._cost(teacher, "hr")
        if with_teacher:
            rows.append(Row("teacher", "teacher", *t_cost, self.task.test(self, teacher, "hr")))
        for name in methods:
            spec = METHODS.get(name)
            if spec.build is None:  # teacher_lr: the teacher on LR re-upsampled to HR size
                metrics = self.task.test(self, teacher, "teacher_lr")
                rows.append(Row(name, "teacher", *t_cost, metrics))
                continue
            if spec.requires_assistant(self.cfg) and not any(r.role == "assistant" for r in rows):
                assistant = self.assistant()
                metrics = self.task.test(self, assistant, "hr")
                rows.append(Row("assistant", "assistant", *self._cost(assistant, "hr"), metrics))
            student = self.student(name)
            metrics = self.task.test(self, student, "lr")
            rows.append(Row(name, "student", *self._cost(student, "lr"), metrics))
        if self.cfg.report.resolution_sizes:
            curve = self.resolution_curve(methods, with_teacher=with_teacher)
        if distributed.is_main():
            write_json(self.dir / "results.json", [r.as_dict() for r in rows])
            if self.cfg.report.resolution_sizes:
                write_json(self.dir / "resolution_curve.json", curve)
        return rows

    def sized_input(self, kind: str, size: int) -> Any:
        """The input of a network of ``kind`` when test images are degraded to ``size``."""
        if size >= self.hr_size:
            if kind in ("hr", "teacher_lr") or self.upsampled:
                return identity
            size = self.lr_size  # a native-LR student sees HR images at its own input size
        upsample = True if kind in ("hr", "teacher_lr") else None
        return self.input_fn("lr", size=size, upsample=upsample)

    def resolution_curve(
        self, methods: list[str], *, with_teacher: bool = True
    ) -> dict[str, dict[str, float]]:
        """The task's headline metric of every network at each of ``report.resolution_sizes``."""
        sizes = self.cfg.report.resolution_sizes or []
        networks: dict[str, tuple[nn.Module, str]] = {}
        if with_teacher:
            networks["teacher"] = (self.teacher(), "hr")
        for name in methods:
            spec = METHODS.get(name)
            if spec.build is None:
                continue
            if spec.requires_assistant(self.cfg):
                networks["assistant"] = (self.assistant(), "hr")
            networks[name] = (self.student(name), "lr")
        curve: dict[str, dict[str, float]] = {}
        for name, (model, kind) in networks.items():
            curve[name] = {
                str(size): self.task.score_at(self, model, self.sized_input(kind, size))
                for size in sizes
            }
        return curve


def load_splits(cfg: ExperimentConfig, seed: int) -> DataSplits:
    """The dataset and its splits; under torchrun a download happens on rank 0 alone first."""
    if not (cfg.data.download and distributed.active()):
        return _build_splits(cfg, seed)
    splits = _build_splits(cfg, seed) if distributed.is_main() else None
    distributed.barrier()
    return splits if splits is not None else _build_splits(cfg, seed)


def _build_splits(cfg: ExperimentConfig, seed: int) -> DataSplits:
    d = cfg.data
    return build_splits(
        d.dataset,
        root=d.root,
        hr_size=d.hr_size,
        val_fraction=d.val_fraction,
        seed=seed if d.split_seed is None else d.split_seed,
        download=d.download,
        train_subset=d.train_subset,
        test_subset=d.test_subset,
        skip_bad_images=d.skip_bad_images,
        **({"channels": d.channels} if d.channels else {}),
    )


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
        for key in rows[0].metrics:
            values = [r.metrics[key] for r in rows if key in r.metrics]
            entry[key] = statistics.fmean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table.append(entry)
    return table


ORDER_SUBSETS = ([1], [2], [3], [1, 2], [1, 3], [2, 3], [1, 2, 3])


def run_ablation(
    cfg: ExperimentConfig, *, progress: bool = True, resume: bool = False, overwrite: bool = False
) -> Path:
    """The student distilled with each subset of orders (same teacher, assistant, budget and
    seeds), beside the LR-from-scratch student; writes RUN/ablation.json."""
    from horkd.results import primary_metric

    run_dir = Path(cfg.output_dir)
    start_processes(cfg)
    prepare_run_dir_once(cfg, run_dir, resume=resume, overwrite=overwrite)
    orders: dict[str, list[float]] = {"+".join(map(str, o)): [] for o in ORDER_SUBSETS}
    scratch: list[float] = []
    metric = None
    for seed in cfg.seeds:
        run = SeedRun(
            cfg, seed, run_dir, splits=load_splits(cfg, seed), progress=progress, resume=True
        )
        base = run.task.test(run, run.student("scratch"), "lr")
        metric = metric or primary_metric([{"role": "student", **base}])
        scratch.append(base[metric])
        for subset in ORDER_SUBSETS:
            tag = "+".join(map(str, subset))
            if sorted(subset) == sorted(cfg.distill.loss.orders):  # that student is the run's own
                student = run.student("horkd")
            else:
                student = run.student("horkd", stage=f"ablation/orders_{tag}", orders=subset)
            orders[tag].append(run.task.test(run, student, "lr")[metric])
    data = {"metric": metric, "method": "horkd", "seeds": cfg.seeds, "orders": orders,
            "scratch": scratch}
    if distributed.is_main():
        write_json(run_dir / "ablation.json", data)
    return run_dir


def run_experiment(
    cfg: ExperimentConfig,
    *,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    report: bool = False,
) -> tuple[Path, list[dict[str, Any]]]:
    """Run every seed, write results.{json,csv,md} (and RUN/report/ when ``report``), and return
    the run dir and the table."""
    from horkd.results import write_results

    run_dir = Path(cfg.output_dir)
    start_processes(cfg)
    prepare_run_dir_once(cfg, run_dir, resume=resume, overwrite=overwrite)
    main = distributed.is_main()
    started = time.time()
    if main:
        write_json(
            run_dir / "run.json",
            {"name": cfg.name, "git_sha": git_sha(), "seeds": cfg.seeds, "started": started},
        )
    all_rows = []
    skipped_images: list[str] = []
    for seed in cfg.seeds:
        splits = load_splits(cfg, seed)
        skipped_images = splits.info.skipped_images
        # prepare_run_dir left either a fresh directory or a run this config may continue.
        seed_run = SeedRun(cfg, seed, run_dir, splits=splits, progress=progress, resume=True)
        all_rows.append(seed_run.run(cfg.methods))
    table = aggregate(all_rows)
    if not main:
        return run_dir, table
    write_results(run_dir, table, cfg, lr_size=seed_run.lr_size)
    if report:
        from horkd.report import build_report

        build_report([run_dir])
    write_json(
        run_dir / "run.json",
        {
            "name": cfg.name,
            "git_sha": git_sha(),
            "seeds": cfg.seeds,
            "started": started,
            "seconds": time.time() - started,
            "skipped_images": {"count": len(skipped_images), "files": skipped_images[:100]},
            "processes": distributed.world_size(),
        },
    )
    return run_dir, table
