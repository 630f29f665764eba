"""The one training loop every stage uses.

The method returns a dict of named loss terms; the loop sums them, steps, logs each term, evaluates
on the validation split (carved from the training data) and keeps the best epoch by validation
score (the task's: top-1, Recall@1). The test split never reaches this module.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from horkd import distributed, stop
from horkd.checkpoint import save_checkpoint
from horkd.config import StageConfig
from horkd.logger import MetricsLogger
from horkd.loop_state import (
    LoopState,
    StageParts,
    StageResult,
    empty_partial,
    restore_loop,
    save_loop,
)
from horkd.methods import Batch, Method
from horkd.optim import build_optimizer, build_scheduler
from horkd.running_stats import RunningStats
from horkd.stop import TrainingStopped

BatchFn = Callable[[Tensor, Tensor, Tensor], Batch]
STATE_FILE = "train_state.safetensors"

__all__ = [
    "STATE_FILE",
    "StageResult",
    "Trainer",
    "TrainingDiverged",
    "TrainingStopped",
    "checkpoint_name",
]


def checkpoint_name(role: str) -> str:
    """The network a stage produces is ``model``; companions (the joint assistant) keep their role."""
    return "model" if role == "student" else role


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses: continuing would only waste the machine."""


def epoch_batches(loader: Any, epoch: int, first_step: int) -> Iterator[Any]:
    """The epoch's batches from ``first_step`` on, in the order of a full pass."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    if hasattr(loader, "iter_from"):
        return loader.iter_from(first_step)
    batches = iter(loader)  # a plain DataLoader: replay the skipped batches to keep order
    for _ in range(first_step):
        next(batches, None)
    return batches


def wrap_for_processes(method: Method, device: torch.device) -> torch.nn.Module:
    """Under torchrun the method trains through DDP; on one process it is its own forward."""
    if not distributed.active():
        return method
    from torch.nn.parallel import DistributedDataParallel

    unused = bool(getattr(method, "leaves_parameters_unused", True))
    # buffers (BatchNorm statistics, the bank) are rank 0's at every epoch end
    # (Trainer._end_epoch): sending them before every forward only costs a collective. Newer
    # PyTorch names the switch forward_sync_buffers (and still syncs them once at the start)
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    buffers = {"forward_sync_buffers" if newer else "broadcast_buffers": False}
    return DistributedDataParallel(
        method,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=unused,  # the graph search, only where a method needs it
        static_graph=bool(getattr(method, "static_graph", False)) and not unused,
        **buffers,
    )


def progress_text(partial: dict[str, Any]) -> dict[str, str]:
    """The progress bar's running means of the epoch's loss terms and its images per second."""
    sums, steps = partial["sums"], max(1, partial["steps"])
    shown = sums if len(sums) <= 6 else {"loss": sums.get("loss", 0.0)}
    rate = partial["seen"] / max(1e-9, partial["elapsed"])
    return {k: f"{v / steps:.3f}" for k, v in shown.items()} | {"img/s": f"{rate:.0f}"}


# The loss terms of trained steps are summed on the device and read (a host-device sync) every
# this many steps, before a save and at the epoch's end: the step itself waits for the device
# once, to know whether its loss is finite.
READ_SUMS_EVERY = 25


def add_step(pending: dict[str, Tensor], terms: dict[str, Tensor], loss: Tensor) -> None:
    """Add one trained step's terms to the sums kept on the device (no wait for it)."""
    for name, value in (*terms.items(), ("loss", loss)):
        value = value.detach().float()
        pending[name] = pending[name] + value if name in pending else value


def read_sums(partial: dict[str, Any], pending: dict[str, Tensor]) -> None:
    """Move the device sums into the epoch's running sums (what its log row averages): one
    transfer for all the terms."""
    if not pending:
        return
    names = list(pending)
    values = torch.stack([pending[n] for n in names]).tolist()
    sums = partial["sums"]
    for name, value in zip(names, values, strict=True):
        sums[name] = sums.get(name, 0.0) + value
    pending.clear()


def epoch_row(partial: dict[str, Any], epoch: int, lr: float) -> dict[str, Any]:
    """The epoch's log row: mean of each loss term over its steps (and processes), speed, lr."""
    steps = max(1, partial["steps"])
    means = distributed.mean_over_ranks({k: v / steps for k, v in partial["sums"].items()})
    row: dict[str, Any] = {"epoch": epoch + 1}
    row.update({f"train/{k}": v for k, v in means.items()})
    images_per_s = partial["seen"] / max(partial.get("elapsed", 0.0), 1e-9)
    row["train/images_per_s"] = images_per_s * distributed.world_size()
    row["train/seconds"] = partial.get("elapsed", 0.0)  # kept across a resume, unlike a clock
    # the process's CPU over the epoch's steps, every thread: a pause (SIGSTOP) is not work
    row["train/cpu_seconds"] = partial.get("cpu", 0.0)
    row["lr"] = lr
    return row


def epoch_line(label: str, epoch: int, epochs: int, row: dict[str, Any], score_key: str,
               elapsed: float, per_epoch: float | None = None) -> str:
    """The line an epoch prints where no bar is drawn (output to a file, a study's workers).
    ``per_epoch``: the mean seconds of the epochs so far, for the time the stage has left - a
    study's first task is its teacher, whose minutes no ETA covered otherwise."""
    score = row.get(f"val/{score_key}", float("nan"))
    line = (f"[{label}] epoch {epoch + 1}/{epochs} loss {row.get('train/loss', float('nan')):.4f} "
            f"val {score_key} {score:.2f} ({elapsed:.0f}s")
    left = (epochs - epoch - 1) * per_epoch if per_epoch is not None else 0.0
    if left > 0:
        line += f"; this stage ends in about {_seconds(left)}"
    return line + ")"


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class Trainer:
    """Trains ``method`` for one stage and leaves the best-on-validation weights in it.

    With ``resume`` the stage continues from ``out_dir/train_state.safetensors`` (written at every
    epoch end and every ``checkpoint_every_steps`` steps), see :mod:`horkd.loop_state`.
    """

    def __init__(
        self,
        method: Method,
        cfg: StageConfig,
        *,
        train_batches: Any,
        make_batch: BatchFn,
        validate: Callable[[torch.nn.Module], dict[str, float]] | None,
        refresh_statistics: Callable[[torch.nn.Module], None] | None = None,
        score_key: str,
        device: torch.device,
        out_dir: str | Path,
        meta: dict[str, dict[str, Any]],
        progress: bool = True,
        label: str | None = None,
        resume: bool = False,
        fingerprint: str | None = None,
    ) -> None:
        self.method = method.to(device)
        if cfg.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if cfg.compile:
            self.method.student.compile()
        # ``self.method`` stays the bare module for saving, validation and resumable state.
        self.forward = wrap_for_processes(self.method, device)
        self.main = distributed.is_main()
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.cfg = cfg
        self.train_batches = train_batches
        self.validate = validate
        self.refresh_statistics = refresh_statistics  # run on the student before validation
        self.score_key = score_key
        self.device = device
        self.out_dir = Path(out_dir)
        self.meta = meta  # per saved network role: the build recipe and anything to record
        self.bar = progress and self.main and sys.stderr.isatty()  # else a line per epoch
        self.label = label or self.out_dir.name  # what names the run in its lines
        self.resume = resume
        self.fingerprint = fingerprint  # what the stage was configured with; a change restarts it
        self.state_path = self.out_dir / STATE_FILE
        # the most rows a rank brings to a step, the same on every rank (the stage's batch size)
        self.batch_rows = int(getattr(train_batches, "batch_size", None) or cfg.batch_size)
        self.pending: dict[str, Tensor] = {}  # trained steps' loss terms, summed on the device
        optimizer = build_optimizer(self.method.trainable_parameters(), cfg)
        self.parts = StageParts(
            method=self.method,
            optimizer=optimizer,
            scheduler=build_scheduler(optimizer, cfg, self.steps_per_epoch()),
            scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
            make_batch=make_batch,
        )
        # put back by a skipped step: its forward has already updated them
        self.running_stats = RunningStats(self.method)

    def steps_per_epoch(self) -> int:
        steps = len(self.train_batches)
        if self.cfg.max_steps_per_epoch is not None:
            steps = min(steps, self.cfg.max_steps_per_epoch)
        return max(1, steps)

    def fit(self) -> StageResult:
        loop = LoopState()
        if self.resume:
            restore_loop(self.state_path, loop, self.parts, self.fingerprint)
        logger = MetricsLogger(self.out_dir, rows=loop.result.history) if self.main else None
        try:
            # the command's stop request (the CLI installs one for its whole life); a caller
            # without one gets it for this loop
            with stop.handling():
                self._stop_if_asked(loop, saved=False)  # asked while the stage was being set up
                while loop.epoch < self.cfg.epochs:
                    self._train_epoch(loop)
                    self._end_epoch(loop, logger)
                    self._save_state(loop)
                    # asked during validation or the save (the last epoch's included): the
                    # state just saved holds the whole epoch, so the rerun continues from it
                    self._stop_if_asked(loop, saved=True)
        finally:
            if logger is not None:
                logger.close()
        if loop.best_state is not None:
            for role, net in self.method.saved_networks().items():
                net.load_state_dict(loop.best_state[role])
        if self.main:
            self.save_final(loop.result)
        distributed.barrier()  # later stages on other ranks may read what rank 0 wrote
        return loop.result

    def _save_state(self, loop: LoopState) -> None:
        # every rank, at the same step: each hands rank 0 its own RNGs and batch maker, rank 0
        # writes them beside the weights and optimiser, which are the same on every rank
        save_loop(self.state_path, loop, self.parts, self.fingerprint)

    def _stop_if_asked(self, loop: LoopState, saved: bool) -> None:
        """Stop here when any rank was asked to (every rank calls this at the same point)."""
        stopping, name = stop.agreed()
        if not stopping:
            return
        if saved:
            where = f"at the end of epoch {loop.epoch}; the state is saved in {self.state_path}"
        else:
            where = (f"before epoch {loop.epoch + 1}, step {loop.step} of {self.out_dir.name} "
                     "(nothing trained since its last save)")
        raise TrainingStopped(
            f"stopped by {name or 'another process'} {where}: {stop.RERUN}", name)

    def _train_epoch(self, loop: LoopState) -> None:
        """The rest of ``loop.epoch`` from ``loop.step``; saves and stops on a signal."""
        epoch, steps_per_epoch = loop.epoch, self.steps_per_epoch()
        self.method.train()
        bar = tqdm(
            total=steps_per_epoch,
            initial=loop.step,
            desc=f"{self.out_dir.name} {epoch + 1}/{self.cfg.epochs}",
            disable=not self.bar,
            leave=False,
            dynamic_ncols=True,
        )
        start = time.perf_counter() - loop.partial.get("elapsed", 0.0)
        cpu_start = time.process_time() - loop.partial.get("cpu", 0.0)  # kept across a resume too
        batches = epoch_batches(self.train_batches, epoch, loop.step)
        for step, (x, y, index) in enumerate(batches, start=loop.step):
            if step >= steps_per_epoch:
                break
            # the ranks stop (and save, a collective) at the same step, whichever got the
            # signal: the step's one collective carries the request
            stopping = self._train_step(loop, x, y, index, epoch, step)
            name = stop.requested()
            # one process reads its own request at once (a request that came during the step)
            stopping = stopping or (name is not None and not distributed.active())
            loop.step = step + 1
            loop.partial["elapsed"] = time.perf_counter() - start
            loop.partial["cpu"] = time.process_time() - cpu_start
            if loop.step % READ_SUMS_EVERY == 0:
                read_sums(loop.partial, self.pending)
                if self.bar:
                    bar.set_postfix(progress_text(loop.partial))
            bar.update(1)
            every = self.cfg.checkpoint_every_steps
            if stopping or (every and loop.step % every == 0):
                read_sums(loop.partial, self.pending)
                self._save_state(loop)
            if stopping:
                raise TrainingStopped(
                    f"stopped by {name or 'another process'} at epoch {epoch + 1}, "
                    f"step {loop.step}; the state is saved in {self.state_path}: {stop.RERUN}",
                    name)
        read_sums(loop.partial, self.pending)
        bar.close()

    def _train_step(
        self, loop: LoopState, x: Tensor, y: Tensor, index: Tensor, epoch: int, step: int
    ) -> bool:
        """One optimiser step; a non-finite loss skips it, too many in a row stop the stage.
        Returns whether some rank was asked to stop (read with the finite check)."""
        parts = self.parts
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batch = parts.make_batch(x, y.to(self.device, non_blocking=True), index)
        enabled = self.autocast_dtype is not None
        self.running_stats.save()
        rows = int(x.shape[0])  # a shape: known on the host, no wait
        # every rank's batch has these rows (equal shares; a failed file keeps its row):
        # the sharded relations' gathers need no counts from the device; checked below
        with distributed.equal_rows(self.batch_rows) as gathers, torch.autocast(
                self.device.type, dtype=self.autocast_dtype, enabled=enabled):
            _, terms = self.forward(batch)
        loss = sum(terms.values())
        parts.optimizer.zero_grad(set_to_none=True)
        # the step's one wait for the device; the ranks skip together
        finite, stopping = distributed.step_agreement(
            torch.isfinite(loss), stop.requested() is not None, rows, gathers)
        if not finite:
            self.running_stats.restore()
            loop.consecutive_bad += 1
            loop.result.skipped_steps += 1
            if loop.consecutive_bad > self.cfg.max_nonfinite_steps:
                bad = [k for k, v in terms.items() if not torch.isfinite(v)]
                raise TrainingDiverged(
                    f"{self.out_dir.name}: {loop.consecutive_bad} consecutive non-finite losses "
                    f"up to epoch {epoch + 1}, step {step}; non-finite terms: {', '.join(bad)}. "
                    "Try a lower learning rate, smaller loss weights or train.<stage>.grad_clip."
                )
            return stopping
        loop.consecutive_bad = 0
        parts.scaler.scale(loss).backward()
        if self.cfg.grad_clip is not None:
            parts.scaler.unscale_(parts.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.trainable_parameters(), self.cfg.grad_clip)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.scheduler.step()
        loop.partial["steps"] += 1
        loop.partial["seen"] += int(y.shape[0])
        add_step(self.pending, terms | self.method.observed(), loss)
        return stopping

    def _end_epoch(self, loop: LoopState, logger: MetricsLogger | None) -> None:
        """Validate, log the epoch's row and keep the weights if validation improved."""
        method, partial, epoch = self.method, loop.partial, loop.epoch
        row = epoch_row(partial, epoch, self.parts.optimizer.param_groups[0]["lr"])
        if self.refresh_statistics is not None:
            self.refresh_statistics(method.student)
        # every process validates and saves rank 0's buffers (DDP does not send them per step)
        distributed.broadcast_buffers(method)
        if self.validate is not None:
            row.update({f"val/{k}": v for k, v in self.validate(method.student).items()})
        if logger is not None:
            logger.log(row)
        loop.result.history.append(row)
        if self.main and not self.bar:
            times = [r["train/seconds"] for r in loop.result.history if "train/seconds" in r]
            print(epoch_line(self.label, epoch, self.cfg.epochs, row, self.score_key,
                             partial.get("elapsed", 0.0),
                             sum(times) / len(times) if times else None), flush=True)
        score = row.get(f"val/{self.score_key}", float(epoch))
        result = loop.result
        if not self.cfg.select_on_val or self.validate is None or score > result.best_score:
            result.best_epoch, result.best_score = epoch + 1, score
            loop.best_state = {
                role: {k: v.detach().clone() for k, v in net.state_dict().items()}
                for role, net in method.saved_networks().items()
            }
        loop.epoch, loop.step, loop.partial = epoch + 1, 0, empty_partial()

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
