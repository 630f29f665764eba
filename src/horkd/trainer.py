"""The one training loop every stage uses.

The method returns a dict of named loss terms; the loop sums them, steps, logs each term, evaluates
on the validation split (carved from the training data) and keeps the best epoch by validation
score (the task's: top-1, Recall@1). The test split never reaches this module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from horkd.checkpoint import save_checkpoint
from horkd.config import StageConfig
from horkd.logger import MetricsLogger
from horkd.methods import Batch, Method

BatchFn = Callable[[Tensor, Tensor, Tensor], Batch]


def checkpoint_name(role: str) -> str:
    """The network a stage produces is ``model``; companions (the joint assistant) keep their role."""
    return "model" if role == "student" else role


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses: continuing would only waste the machine."""


@dataclass
class StageResult:
    best_epoch: int
    best_score: float  # the validation metric that picked the epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0


def build_optimizer(params: list[torch.nn.Parameter], cfg: StageConfig) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=opt.lr,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov and opt.momentum > 0,
        )
    optimizer_cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return optimizer_cls(params, lr=opt.lr, weight_decay=opt.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: StageConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step learning-rate factor: linear warm-up, then cosine, step or constant."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = cfg.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if cfg.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if cfg.scheduler == "step":
            return 0.1 ** (int(progress >= 0.5) + int(progress >= 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """Trains ``method`` for one stage and leaves the best-on-validation weights in it."""

    def __init__(
        self,
        method: Method,
        cfg: StageConfig,
        *,
        train_batches: Any,
        make_batch: BatchFn,
        validate: Callable[[torch.nn.Module], dict[str, float]] | None,
        score_key: str,
        device: torch.device,
        out_dir: str | Path,
        meta: dict[str, dict[str, Any]],
        progress: bool = True,
        max_bad_steps: int = 20,
    ) -> None:
        self.method = method.to(device)
        self.cfg = cfg
        self.train_batches = train_batches
        self.make_batch = make_batch
        self.validate = validate
        self.score_key = score_key
        self.device = device
        self.out_dir = Path(out_dir)
        self.meta = meta  # per saved network role: the build recipe and anything to record
        self.progress = progress
        self.max_bad_steps = max_bad_steps

    def _steps_per_epoch(self) -> int:
        steps = len(self.train_batches)
        if self.cfg.max_steps_per_epoch is not None:
            steps = min(steps, self.cfg.max_steps_per_epoch)
        return max(1, steps)

    def fit(self) -> StageResult:
        cfg = self.cfg
        method = self.method
        optimizer = build_optimizer(method.trainable_parameters(), cfg)
        steps_per_epoch = self._steps_per_epoch()
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
        logger = MetricsLogger(self.out_dir)
        result = StageResult(best_epoch=-1, best_score=-math.inf)
        best_state: dict[str, dict[str, Tensor]] | None = None
        consecutive_bad = 0
        try:
            for epoch in range(cfg.epochs):
                if hasattr(self.train_batches, "set_epoch"):
                    self.train_batches.set_epoch(epoch)
                method.train()
                sums: dict[str, float] = {}
                seen = steps = 0
                start = time.perf_counter()
                bar = tqdm(
                    total=steps_per_epoch,
                    desc=f"{self.out_dir.name} {epoch + 1}/{cfg.epochs}",
                    disable=not self.progress,
                    leave=False,
                    dynamic_ncols=True,
                )
                for step, (x, y, index) in enumerate(self.train_batches):
                    if step >= steps_per_epoch:
                        break
                    batch = self.make_batch(
                        x.to(self.device, non_blocking=True),
                        y.to(self.device, non_blocking=True),
                        index,
                    )
                    _, terms = method(batch)
                    loss = sum(terms.values())
                    if not torch.isfinite(loss):
                        consecutive_bad += 1
                        result.skipped_steps += 1
                        optimizer.zero_grad(set_to_none=True)
                        if consecutive_bad > self.max_bad_steps:
                            bad = [k for k, v in terms.items() if not torch.isfinite(v)]
                            raise TrainingDiverged(
                                f"{consecutive_bad} consecutive non-finite losses at epoch "
                                f"{epoch + 1}, step {step}; non-finite terms: {', '.join(bad)}. "
                                "Try a lower learning rate, smaller loss weights or grad_clip."
                            )
                        continue
                    consecutive_bad = 0
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(method.trainable_parameters(), cfg.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    steps += 1
                    seen += int(y.shape[0])
                    for name, value in terms.items():
                        sums[name] = sums.get(name, 0.0) + float(value.detach())
                    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                    if self.progress:
                        elapsed = time.perf_counter() - start
                        shown = sums if len(sums) <= 6 else {"loss": sums["loss"]}
                        bar.set_postfix(
                            {k: f"{v / steps:.3f}" for k, v in shown.items()}
                            | {"img/s": f"{seen / max(elapsed, 1e-9):.0f}"}
                        )
                    bar.update(1)
                bar.close()
                elapsed = time.perf_counter() - start
                row: dict[str, Any] = {"epoch": epoch + 1}
                row.update({f"train/{k}": v / max(1, steps) for k, v in sums.items()})
                row["train/images_per_s"] = seen / max(elapsed, 1e-9)
                row["lr"] = optimizer.param_groups[0]["lr"]
                if self.validate is not None:
                    row.update({f"val/{k}": v for k, v in self.validate(method.student).items()})
                logger.log(row)
                result.history.append(row)
                if not self.progress:
                    score_text = f"{row.get(f'val/{self.score_key}', float('nan')):.2f}"
                    print(
                        f"[{self.out_dir.name}] epoch {epoch + 1}/{cfg.epochs} "
                        f"loss {row.get('train/loss', float('nan')):.4f} "
                        f"val {self.score_key} {score_text} ({elapsed:.0f}s)",
                        flush=True,
                    )
                score = row.get(f"val/{self.score_key}", float(epoch))
                if not cfg.select_on_val or self.validate is None or score > result.best_score:
                    result.best_epoch, result.best_score = epoch + 1, score
                    best_state = {
                        role: {k: v.detach().clone() for k, v in net.state_dict().items()}
                        for role, net in method.saved_networks().items()
                    }
        finally:
            logger.close()
        if best_state is not None:
            for role, net in method.saved_networks().items():
                net.load_state_dict(best_state[role])
        self.save_final(result)
        return result

    def save_final(self, result: StageResult) -> None:
        """One checkpoint per produced network, with the epoch picked on validation."""
        for role, net in self.method.saved_networks().items():
            meta = dict(self.meta.get(role, {}))
            meta["metrics"] = {
                "best_epoch": result.best_epoch,
                f"best_val_{self.score_key}": result.best_score,
                "skipped_steps": result.skipped_steps,
            }
            save_checkpoint(self.out_dir / checkpoint_name(role), net, meta)
