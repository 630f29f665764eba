"""The networks of one seed: teacher, assistant and students, each trained once or loaded.

Every network is built through the method registry: the teacher and the assistant are the
``stage`` methods ``teacher`` and ``assistant``, each student its own method. A method's
``needs`` says which trained networks it is given.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from horkd import distributed, stop
from horkd.checkpoint import build_from_checkpoint
from horkd.config import ExperimentConfig
from horkd.experiment.bridge import as_reference, guard_verdict
from horkd.experiment.context import RunContext, seed_everything
from horkd.experiment.stages import StageOutcome, StageRunner, chance_note
from horkd.losses.task import build_task_loss
from horkd.methods import METHODS, MethodContext, MethodSpec
from horkd.models import build_model
from horkd.run_dir import assistant_fingerprint, student_fingerprint, teacher_fingerprint


class Networks:
    """Builds, trains (through the stage runner) and keeps the networks of ``ctx``'s seed."""

    def __init__(self, ctx: RunContext, stages: StageRunner) -> None:
        self.ctx = ctx
        self.stages = stages
        self._trained: dict[str, StageOutcome] = {}  # by stage folder, reused by every table
        self._facts: dict[str, Any] = {}  # what this seed measured once (the assistant's guard)

    # ----------------------------------------------------------------- building
    def recipe(self, role: str) -> dict[str, Any]:
        m, info = getattr(self.ctx.cfg, role), self.ctx.info
        recipe = {
            "arch": m.arch,
            "num_classes": info.num_classes,
            "in_channels": info.in_channels,
            "embed_dim": m.embed_dim,
            "width": m.width,
            "mean": list(info.mean),
            "std": list(info.std),
            **m.kwargs,
        }
        degrade = self.ctx.cfg.degrade
        if role == "student":  # only a student takes LR at several sizes
            if degrade.norm_sizes:
                recipe["norm_sizes"] = degrade.norm_sizes
            if self.ctx.work_size is not None:
                recipe["work_size"] = self.ctx.work_size
        return recipe

    def new_network(self, role: str) -> nn.Module:
        weights = getattr(self.ctx.cfg, role).weights
        return build_model(**self.recipe(role), weights_path=weights).to(self.ctx.device)

    def student_side(self) -> int:
        """The largest side the student is fed (the HR side where it takes LR re-upsampled)."""
        return self.ctx.hr_size if self.ctx.upsampled else max(self.ctx.lr_sizes)

    def new_criterion(self, network: nn.Module) -> nn.Module:
        loss = self.ctx.cfg.task_loss
        return build_task_loss(
            loss.name or self.ctx.task.default_loss,
            num_classes=self.ctx.info.num_classes,
            embed_dim=network.embed_dim,
            **loss.kwargs,
        ).to(self.ctx.device)

    def meta(
        self, role: str, method: str, view: str = "lr", upsampled: bool | None = None
    ) -> dict[str, Any]:
        """What a checkpoint records: how to rebuild it, what it takes as input, its config."""
        ctx = self.ctx
        upsampled = ctx.upsampled if upsampled is None else upsampled
        return {
            "model": self.recipe(role),
            "role": role,
            "method": method,
            "seed": ctx.seed,
            "input": {
                "view": view,
                "hr_size": ctx.hr_size,
                "lr_size": ctx.lr_size if view == "lr" else None,
                "lr_sizes": list(ctx.lr_sizes) if view == "lr" and len(ctx.lr_sizes) > 1
                else None,
                "upsampled": upsampled if view == "lr" else False,
            },
            "dataset": ctx.cfg.data.dataset,
            "classes": list(ctx.info.class_names or []) if ctx.cfg.task == "classification"
            else [],
            "task": ctx.cfg.task,
            "config": ctx.cfg.model_dump(mode="json"),
        }

    def _given(self, role: str) -> nn.Module | None:
        """A user's checkpoint for ``role`` (teacher.checkpoint, assistant.checkpoint); ``{seed}``
        in the path stands for the run seed (a teacher per seed)."""
        path = getattr(self.ctx.cfg, role).checkpoint
        if not path:
            return None
        path = path.replace("{seed}", str(self.ctx.seed))
        if role not in self._trained:
            expect = {k: self.recipe(role)[k] for k in ("arch", "num_classes", "in_channels")}
            network = build_from_checkpoint(path, expect=expect).to(self.ctx.device).eval()
            self._trained[role] = StageOutcome({"student": network})
        return self._trained[role].model

    # ----------------------------------------------------------------- training
    def _train(
        self,
        spec: MethodSpec,
        stage: str,
        fingerprint: str,
        cfg: ExperimentConfig | None = None,
    ) -> StageOutcome:
        """Load ``stage`` when it finished with ``fingerprint``, else build ``spec``'s method
        (given the networks it needs, trained first) and train it with its role's budget."""
        if stage in self._trained:
            return self._trained[stage]
        outcome = self.stages.finished(stage, fingerprint)
        if outcome is None:
            # a stop asked for during the stage before (or anything since) starts no other;
            # every rank gets here together, as it trains the stage together
            stop.check(f"before {stage} (seed {self.ctx.seed}) started")
            cfg = cfg or self.ctx.cfg
            method_ctx = MethodContext(
                distill=cfg.distill,  # null weights: hybrid_loss takes the method's own
                new_network=self.new_network,  # type: ignore[arg-type]
                new_criterion=self.new_criterion,
                teacher=self.teacher() if "teacher" in spec.needs else None,
                assistant=self.assistant_reference() if "assistant" in spec.needs else None,
                uses_logits=self.ctx.task.uses_logits,
                assistant_trusted="assistant" not in spec.needs or self.assistant_verdict()["trusted"],
                student_input=(self.ctx.in_channels, self.student_side()),
            )
            seed_everything(self.ctx.seed, self.ctx.cfg.deterministic)
            assert spec.build is not None
            method = spec.build(method_ctx)
            upsampled = True if spec.upsampled or method.upsampled else None
            metas = {
                "student": self.meta(spec.network, spec.name, method.student_view, upsampled),
                "assistant": self.meta("assistant", spec.name, "hr"),  # the joint companion
            }
            if "assistant" in spec.needs:
                metas["student"]["assistant_guard"] = self.assistant_verdict()
            budget = getattr(self.ctx.cfg.train, spec.network)
            outcome = self.stages.train(stage, method, budget, metas, fingerprint, upsampled,
                                        few_labels=spec.network != "teacher")
            if spec.network == "teacher" and distributed.is_main() and (
                    note := chance_note(outcome.record, self.ctx.info.num_classes)):
                print(note, flush=True)
        for network in outcome.networks.values():
            network.eval()
        self._trained[stage] = outcome
        return outcome

    def teacher(self) -> nn.Module:
        given = self._given("teacher")
        if given is not None:
            return given
        fingerprint = teacher_fingerprint(self.ctx.cfg, self.ctx.seed)
        return self._train(METHODS.get("teacher"), "teacher", fingerprint).model

    def assistant(self) -> nn.Module:
        """Cross-structure distillation: the light network learns from the teacher on HR."""
        given = self._given("assistant")
        if given is not None:
            return given
        fingerprint = assistant_fingerprint(self.ctx.cfg, self.ctx.seed)
        return self._train(METHODS.get("assistant"), "assistant", fingerprint).model

    def assistant_reference(self) -> nn.Module:
        """The assistant as the students see it (an LR one looks at their LR view)."""
        return as_reference(self.ctx, self.assistant())

    def student(
        self, method: str, stage: str | None = None, orders: list[int] | None = None
    ) -> StageOutcome:
        """A new student trained by ``method`` with the student's budget.

        ``orders`` overrides the distilled orders for this student only (the ablation), whose
        result is kept under ``stage`` (default ``students/<method>``).
        """
        spec = METHODS.get(method)
        if not spec.trains:
            raise ValueError(f"method '{method}' trains nothing (it scores the {spec.scores})")
        cfg = self.ctx.cfg
        if orders is not None:
            cfg = cfg.model_copy(deep=True)
            cfg.distill.loss.orders = list(orders)
        fingerprint = student_fingerprint(
            cfg,
            self.ctx.seed,
            method,
            teacher="teacher" in spec.needs,
            assistant="assistant" in spec.needs,
            upstream=self.ctx.cfg,
            network=spec.network,
        )
        return self._train(spec, stage or f"students/{method}", fingerprint, cfg)

    def assistant_verdict(self) -> dict[str, Any]:
        """The guard's verdict on this seed's assistant (computed once)."""
        if "assistant_verdict" not in self._facts:
            self._facts["assistant_verdict"] = guard_verdict(
                self.ctx, self.teacher(), self.assistant(), self.stages.label)
        return self._facts["assistant_verdict"]

    def outcome(self, stage: str) -> StageOutcome:
        """What a stage of this seed trained or loaded (``teacher``, ``students/<method>``)."""
        if stage not in self._trained:
            raise KeyError(f"stage '{stage}' has not run in this seed")
        return self._trained[stage]

    def scored(self, method: str) -> nn.Module:
        """The network a method's row scores: its student, or the network it names."""
        spec = METHODS.get(method)
        if spec.trains:
            return self.student(method).model
        return self.teacher() if spec.scores == "teacher" else self.assistant()
