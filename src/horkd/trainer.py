"""The one training loop every stage uses.

The method returns a dict of named loss terms; the loop sums them, steps, logs each term, evaluates
on the validation split (carved from the training data) and keeps the best epoch by validation
score (the task's: top-1, Recall@1). The test split never reaches this module.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from horkd import distributed
from horkd.checkpoint import CheckpointError, save_checkpoint
from horkd.config import StageConfig
from horkd.logger import MetricsLogger
from horkd.methods import Batch, Method
from horkd.train_state import capture_rng, load_training_state, restore_rng, save_training_state

BatchFn = Callable[[Tensor, Tensor, Tensor], Batch]


def checkpoint_name(role: str) -> str:
    """The network a stage produces is ``model``; companions (the joint assistant) keep their role."""
    return "model" if role == "student" else role


STATE_FILE = "train_state.safetensors"


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses: continuing would only waste the machine."""


class TrainingStopped(RuntimeError):
    """SIGTERM/SIGINT arrived; the state was saved at the end of the current step."""


@dataclass
class StageResult:
    best_epoch: int
    best_score: float  # the validation metric that picked the epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0


def _empty_partial() -> dict[str, Any]:
    return {"sums": {}, "seen": 0, "steps": 0, "elapsed": 0.0}


@dataclass
class _LoopState:
    """Where the loop is: what a resumed stage needs besides the optimiser and the RNGs."""

    epoch: int = 0  # the epoch in progress (== epochs when the stage is done)
    step: int = 0  # batches of that epoch already trained on
    result: StageResult = field(default_factory=lambda: StageResult(-1, -math.inf))
    best_state: dict[str, dict[str, Tensor]] | None = None
    consecutive_bad: int = 0
    partial: dict[str, Any] = field(default_factory=_empty_partial)  # the epoch's running sums


class _StopRequests:
    """Turn SIGTERM (pre-emption) and SIGINT into a request honoured at the next step boundary,
    so the state saved on the way out is consistent."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


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
    """Trains ``method`` for one stage and leaves the best-on-validation weights in it.

    With ``resume`` the stage continues from ``out_dir/train_state.safetensors`` (written at every
    epoch end and every ``checkpoint_every_steps`` steps): weights, optimiser, scheduler, RNG
    states, the batch maker's generator and the position in the epoch's data order, so on CPU a
    resumed stage ends with the same weights, bit for bit, as one that never stopped.
    """

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
        resume: bool = False,
        fingerprint: str | None = None,
    ) -> None:
        self.method = method.to(device)
        if cfg.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if cfg.compile:
            self.method.student.compile()
        # Under torchrun the method trains through DDP; ``self.method`` stays the bare module
        # for saving, validation and resumable state.
        self.forward: torch.nn.Module = self.method
        if distributed.active():
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(
                self.method,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,  # a method may leave a head unused in a stage
            )
        self.main = distributed.is_main()
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.cfg = cfg
        self.train_batches = train_batches
        self.make_batch = make_batch
        self.validate = validate
        self.score_key = score_key
        self.device = device
        self.out_dir = Path(out_dir)
        self.meta = meta  # per saved network role: the build recipe and anything to record
        self.progress = progress and self.main
        self.resume = resume
        self.fingerprint = fingerprint  # what the stage was configured with; a change restarts it
        self.state_path = self.out_dir / STATE_FILE

    def _steps_per_epoch(self) -> int:
        steps = len(self.train_batches)
        if self.cfg.max_steps_per_epoch is not None:
            steps = min(steps, self.cfg.max_steps_per_epoch)
        return max(1, steps)

    def _epoch_batches(self, epoch: int, first_step: int) -> Iterator[Any]:
        loader = self.train_batches
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        if hasattr(loader, "iter_from"):
            return loader.iter_from(first_step)
        batches = iter(loader)  # a plain DataLoader: replay the skipped batches to keep order
        for _ in range(first_step):
            next(batches, None)
        return batches

    def fit(self) -> StageResult:
        cfg = self.cfg
        method = self.method
        optimizer = build_optimizer(method.trainable_parameters(), cfg)
        steps_per_epoch = self._steps_per_epoch()
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
        loop = _LoopState()
        if self.resume:
            self._restore(loop, optimizer, scheduler)
        logger = MetricsLogger(self.out_dir, rows=loop.result.history) if self.main else None
        result = loop.result

        def save_state() -> None:
            if self.main:  # one writer; every rank holds the same weights and optimiser
                self._save_state(loop, optimizer, scheduler)

        try:
            with _StopRequests() as stop:
                while loop.epoch < cfg.epochs:
                    epoch = loop.epoch
                    method.train()
                    bar = tqdm(
                        total=steps_per_epoch,
                        initial=loop.step,
                        desc=f"{self.out_dir.name} {epoch + 1}/{cfg.epochs}",
                        disable=not self.progress,
                        leave=False,
                        dynamic_ncols=True,
                    )
                    start = time.perf_counter() - loop.partial.get("elapsed", 0.0)
                    batches = self._epoch_batches(epoch, loop.step)
                    for step, (x, y, index) in enumerate(batches, start=loop.step):
                        if step >= steps_per_epoch:
                            break
                        self._train_step(loop, optimizer, scheduler, x, y, index, epoch, step)
                        loop.step = step + 1
                        loop.partial["elapsed"] = time.perf_counter() - start
                        if self.progress:
                            sums, steps = loop.partial["sums"], max(1, loop.partial["steps"])
                            shown = sums if len(sums) <= 6 else {"loss": sums.get("loss", 0.0)}
                            bar.set_postfix(
                                {k: f"{v / steps:.3f}" for k, v in shown.items()}
                                | {"img/s": f"{loop.partial['seen'] / max(1e-9, loop.partial['elapsed']):.0f}"}
                            )
                        bar.update(1)
                        every = cfg.checkpoint_every_steps
                        if stop.requested or (every and loop.step % every == 0):
                            save_state()
                        if stop.requested:
                            raise TrainingStopped(
                                f"stopped by {stop.requested} at epoch {epoch + 1}, step "
                                f"{loop.step}; the state is saved in {self.state_path}: run the "
                                "same command again to continue"
                            )
                    bar.close()
                    self._end_epoch(loop, logger, optimizer)
                    save_state()
        finally:
            if logger is not None:
                logger.close()
        if loop.best_state is not None:
            for role, net in method.saved_networks().items():
                net.load_state_dict(loop.best_state[role])
        if self.main:
            self.save_final(result)
        distributed.barrier()  # later stages on other ranks may read what rank 0 wrote
        return result

    def _train_step(
        self,
        loop: _LoopState,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        x: Tensor,
        y: Tensor,
        index: Tensor,
        epoch: int,
        step: int,
    ) -> None:
        """One optimiser step; a non-finite loss skips it, too many in a row stop the stage."""
        method = self.method
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batch = self.make_batch(x, y.to(self.device, non_blocking=True), index)
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            _, terms = self.forward(batch)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        if not distributed.all_ranks_true(bool(torch.isfinite(loss))):  # ranks skip together
            loop.consecutive_bad += 1
            loop.result.skipped_steps += 1
            if loop.consecutive_bad > self.cfg.max_nonfinite_steps:
                bad = [k for k, v in terms.items() if not torch.isfinite(v)]
                raise TrainingDiverged(
                    f"{self.out_dir.name}: {loop.consecutive_bad} consecutive non-finite losses "
                    f"up to epoch {epoch + 1}, step {step}; non-finite terms: {', '.join(bad)}. "
                    "Try a lower learning rate, smaller loss weights or train.<stage>.grad_clip."
                )
            return
        loop.consecutive_bad = 0
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(method.trainable_parameters(), self.cfg.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        scheduler.step()
        partial = loop.partial
        partial["steps"] += 1
        partial["seen"] += int(y.shape[0])
        sums = partial["sums"]
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())

    def _end_epoch(
        self, loop: _LoopState, logger: MetricsLogger | None, optimizer: torch.optim.Optimizer
    ) -> None:
        """Validate, log the epoch's row and keep the weights if validation improved."""
        cfg, method, partial = self.cfg, self.method, loop.partial
        epoch = loop.epoch
        steps = max(1, partial["steps"])
        means = distributed.mean_over_ranks({k: v / steps for k, v in partial["sums"].items()})
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({f"train/{k}": v for k, v in means.items()})
        images_per_s = partial["seen"] / max(partial.get("elapsed", 0.0), 1e-9)
        row["train/images_per_s"] = images_per_s * distributed.world_size()
        row["lr"] = optimizer.param_groups[0]["lr"]
        if self.validate is not None:
            distributed.broadcast_buffers(method)
            row.update({f"val/{k}": v for k, v in self.validate(method.student).items()})
        if logger is not None:
            logger.log(row)
        loop.result.history.append(row)
        if not self.progress and self.main:
            score_text = f"{row.get(f'val/{self.score_key}', float('nan')):.2f}"
            print(
                f"[{self.out_dir.name}] epoch {epoch + 1}/{cfg.epochs} "
                f"loss {row.get('train/loss', float('nan')):.4f} "
                f"val {self.score_key} {score_text} ({partial.get('elapsed', 0.0):.0f}s)",
                flush=True,
            )
        score = row.get(f"val/{self.score_key}", float(epoch))
        result = loop.result
        if not cfg.select_on_val or self.validate is None or score > result.best_score:
            result.best_epoch, result.best_score = epoch + 1, score
            loop.best_state = {
                role: {k: v.detach().clone() for k, v in net.state_dict().items()}
                for role, net in method.saved_networks().items()
            }
        loop.epoch, loop.step, loop.partial = epoch + 1, 0, _empty_partial()

    # ----------------------------------------------------------------- resumable state
    def _trained_state(self) -> dict[str, Tensor]:
        """The method's weights minus the frozen reference, which the stage rebuilds anyway."""
        return {
            k: v for k, v in self.method.state_dict().items() if not k.startswith("reference.")
        }

    def _save_state(
        self,
        loop: _LoopState,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "world_size": distributed.world_size(),
            "epoch": loop.epoch,
            "step": loop.step,
            "method": self._trained_state(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(),
            "batch_maker": (
                self.make_batch.state_dict() if hasattr(self.make_batch, "state_dict") else None
            ),
            "best_epoch": loop.result.best_epoch,
            "best_score": loop.result.best_score,
            "best_state": loop.best_state,
            "history": loop.result.history,
            "skipped_steps": loop.result.skipped_steps,
            "consecutive_bad": loop.consecutive_bad,
            "partial": loop.partial,
        }
        save_training_state(self.state_path, state)

    def _restore(
        self,
        loop: _LoopState,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        if not self.state_path.exists():
            return
        state = load_training_state(self.state_path)
        if state.get("world_size", 1) != distributed.world_size():
            distributed.print_main(
                f"[{self.out_dir.name}] the saved training state comes from "
                f"{state.get('world_size', 1)} process(es), this run has "
                f"{distributed.world_size()}: the data order and schedule differ, so this stage "
                "starts over",
                flush=True,
            )
            return
        if state.get("fingerprint") != self.fingerprint:
            distributed.print_main(
                f"[{self.out_dir.name}] the saved training state was made with other settings; "
                "this stage starts over",
                flush=True,
            )
            return
        missing, unexpected = self.method.load_state_dict(state["method"], strict=False)
        missing = [k for k in missing if not k.startswith("reference.")]
        if missing or unexpected:
            raise CheckpointError(
                f"{self.state_path} does not fit this stage's networks (missing: "
                f"{', '.join(missing[:5]) or '-'}; unexpected: {', '.join(unexpected[:5]) or '-'})"
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        if state["batch_maker"] is not None and hasattr(self.make_batch, "load_state_dict"):
            self.make_batch.load_state_dict(state["batch_maker"])
        loop.epoch, loop.step = state["epoch"], state["step"]
        loop.best_state = state["best_state"]
        loop.consecutive_bad = state["consecutive_bad"]
        loop.partial = state["partial"]
        loop.result = StageResult(
            best_epoch=state["best_epoch"],
            best_score=state["best_score"],
            history=state["history"],
            skipped_steps=state["skipped_steps"],
        )
        distributed.print_main(
            f"[{self.out_dir.name}] resuming at epoch {loop.epoch + 1}, step {loop.step}",
            flush=True,
        )

    def discard_state(self) -> None:
        """Drop the resumable state once the stage's outcome is recorded elsewhere."""
        if self.main:
            self.state_path.unlink(missing_ok=True)

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
