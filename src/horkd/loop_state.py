"""Where a stage's training loop is, and how that is saved and restored between processes.

The saved state is everything a resumed stage needs to end with the same weights, bit for bit on
CPU, as one that never stopped: weights, optimiser, scheduler, grad scaler, RNG states, the batch
maker's generator, the position in the epoch's data order and the epoch's running sums.

Under torchrun the weights, optimiser and position are the same on every rank and saved once;
what differs between ranks (the RNGs, the batch maker's generator and labelled-stream position,
the epoch's running sums) is gathered to rank 0 and saved in the same file under ``ranks``, one
entry per rank, so every rank resumes its own streams. One file keeps the save one atomic
write: per-rank files could be caught half-updated by a kill between two ranks' writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from horkd import distributed
from horkd.checkpoint import CheckpointError
from horkd.methods import Method
from horkd.train_state import capture_rng, load_training_state, restore_rng, save_training_state


@dataclass
class StageResult:
    best_epoch: int
    best_score: float  # the validation metric that picked the epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0


def empty_partial() -> dict[str, Any]:
    return {"sums": {}, "seen": 0, "steps": 0, "elapsed": 0.0}


@dataclass
class LoopState:
    """Where the loop is: what a resumed stage needs besides the optimiser and the RNGs."""

    epoch: int = 0  # the epoch in progress (== epochs when the stage is done)
    step: int = 0  # batches of that epoch already trained on
    result: StageResult = field(default_factory=lambda: StageResult(-1, -math.inf))
    best_state: dict[str, dict[str, Tensor]] | None = None
    consecutive_bad: int = 0
    partial: dict[str, Any] = field(default_factory=empty_partial)  # the epoch's running sums


@dataclass
class StageParts:
    """The objects of a stage whose state is saved beside the loop's."""

    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    make_batch: Any  # a PairedBatchMaker (or any callable with state_dict/load_state_dict)


def trained_state(method: Method) -> dict[str, Tensor]:
    """The method's weights minus the frozen reference, which the stage rebuilds anyway."""
    return {k: v for k, v in method.state_dict().items() if not k.startswith("reference.")}


def rank_part(loop: LoopState, parts: StageParts) -> dict[str, Any]:
    """What differs between the ranks of one stage: their randomness and their running sums."""
    make_batch = parts.make_batch
    return {
        "rng": capture_rng(),
        "batch_maker": make_batch.state_dict() if hasattr(make_batch, "state_dict") else None,
        "partial": loop.partial,
    }


def save_loop(path: Path, loop: LoopState, parts: StageParts, fingerprint: str | None) -> None:
    """Every rank calls this at the same step (a collective); rank 0 writes the one file."""
    ranks = distributed.gather_to_main(rank_part(loop, parts))
    if not distributed.is_main():
        return
    state = {
        "fingerprint": fingerprint,
        "world_size": distributed.world_size(),
        "epoch": loop.epoch,
        "step": loop.step,
        "method": trained_state(parts.method),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "ranks": ranks,
        "best_epoch": loop.result.best_epoch,
        "best_score": loop.result.best_score,
        "best_state": loop.best_state,
        "history": loop.result.history,
        "skipped_steps": loop.result.skipped_steps,
        "consecutive_bad": loop.consecutive_bad,
    }
    save_training_state(path, state)


def _usable(state: dict[str, Any], fingerprint: str | None, name: str) -> bool:
    """A saved state from another number of processes or other settings starts the stage over."""
    if state.get("world_size", 1) != distributed.world_size():
        distributed.print_main(
            f"[{name}] the saved training state comes from {state.get('world_size', 1)} "
            f"process(es), this run has {distributed.world_size()}: the data order and schedule "
            "differ, so this stage starts over",
            flush=True,
        )
        return False
    if state.get("fingerprint") != fingerprint:
        distributed.print_main(
            f"[{name}] the saved training state was made with other settings; this stage "
            "starts over",
            flush=True,
        )
        return False
    return True


def _restore_rank_part(
    state: dict[str, Any], loop: LoopState, parts: StageParts, name: str
) -> None:
    """This rank's own RNGs, batch maker and running sums. A state written before each rank saved
    its own part holds one process's: rank 0 takes it, the other ranks keep their freshly seeded
    streams (rather than all drawing rank 0's) and say so."""
    ranks = state.get("ranks")
    if ranks is None:
        ranks = [{key: state[key] for key in ("rng", "batch_maker", "partial")}]
    if len(ranks) < distributed.world_size():
        distributed.print_main(
            f"[{name}] the saved training state holds the randomness of rank 0 only (saved by an "
            "older horkd): the other ranks continue with freshly seeded augmentation streams",
            flush=True,
        )
    me = distributed.rank()
    own = ranks[me] if me < len(ranks) else None
    loop.partial = (own or ranks[0])["partial"]  # the log's running sums: rank 0's at worst
    if own is None:
        return
    restore_rng(own["rng"])
    if own["batch_maker"] is not None and hasattr(parts.make_batch, "load_state_dict"):
        parts.make_batch.load_state_dict(own["batch_maker"])


def restore_loop(path: Path, loop: LoopState, parts: StageParts, fingerprint: str | None) -> None:
    """Continue from ``path`` when it holds a state of this stage (else leave everything as is)."""
    name = path.parent.name
    if not path.exists():
        return
    state = load_training_state(path)
    if not _usable(state, fingerprint, name):
        return
    missing, unexpected = parts.method.load_state_dict(state["method"], strict=False)
    missing = [k for k in missing if not k.startswith("reference.")]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit this stage's networks (missing: "
            f"{', '.join(missing[:5]) or '-'}; unexpected: {', '.join(unexpected[:5]) or '-'})"
        )
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    _restore_rank_part(state, loop, parts, name)
    loop.epoch, loop.step = state["epoch"], state["step"]
    loop.best_state = state["best_state"]
    loop.consecutive_bad = state["consecutive_bad"]
    loop.result = StageResult(
        best_epoch=state["best_epoch"],
        best_score=state["best_score"],
        history=state["history"],
        skipped_steps=state["skipped_steps"],
    )
    distributed.print_main(
        f"[{name}] resuming at epoch {loop.epoch + 1}, step {loop.step}", flush=True
    )
