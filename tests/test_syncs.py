"""The training step waits for the device at most once: loss terms are summed on the device and
read every few steps, the non-finite check is one flag, the bank and the reference cache decide
on the device. On a GPU each such wait stalls the step until every queued kernel is done.

On a CPU the waits are counted by instrumenting the calls that read a tensor on the host
(``item``, ``tolist``, ``float()``, ``int()``, ``bool()``); on a GPU by torch's sync debug mode.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_port import free_port
from toy_nets import CrossEntropy, LinearNet

from horkd import trainer as trainer_module
from horkd.config import StageConfig
from horkd.host_reads import counting_reads
from horkd.losses import HybridOrderLoss
from horkd.methods.base import Batch
from horkd.methods.distill import DistillMethod
from horkd.reference_cache import ReferenceCache
from horkd.trainer import Trainer

STEPS, BATCH, IMAGES = 30, 16, 64


def _trainer(tmp_path, device: torch.device, nan_at: int | None = None) -> Trainer:
    """HORKD's step with every term (logits, distance over a bank, angle) and a cached
    reference looked up with flip views, on a linear student."""
    torch.manual_seed(0)
    images = torch.randn(IMAGES, 10)
    if nan_at is not None:
        images[nan_at] = float("nan")
    teacher = LinearNet(10, 6, norm=True).eval()
    with torch.no_grad():
        out = [teacher(images), teacher(images.flip(1))]
    cache = ReferenceCache(torch.stack([o.embedding for o in out]).to(device),
                           torch.stack([o.logits for o in out]).to(device))
    loss = HybridOrderLoss(4, 6, bank_size=32)
    method = DistillMethod(LinearNet(10, 4, norm=True), CrossEntropy(), teacher, loss, student_view="hr")
    method.reference_cache = cache
    order = torch.randperm(IMAGES)
    batches = [(images[order[i:i + BATCH]], torch.randint(0, 3, (BATCH,)), order[i:i + BATCH])
               for i in range(0, IMAGES, BATCH)] * (STEPS * BATCH // IMAGES + 1)

    def make(x, y, index):
        views = (index % 2).to(x.device)
        return Batch(hr=x, lr=x, target=y, index=index, view_id=views)

    stage = StageConfig(epochs=1, batch_size=BATCH, max_steps_per_epoch=STEPS, scheduler="none",
                        max_nonfinite_steps=2)
    return Trainer(method, stage,
                   train_batches=batches, make_batch=make, validate=None, score_key="top1",
                   device=device, out_dir=tmp_path, meta={"student": {"model": {}}},
                   progress=False)


def _reads(trainer: Trainer):
    """Train ``trainer``'s stage counting host reads: per step, in the whole epoch; and the result."""
    per_step: list[int] = []
    epoch = [0]
    step, train_epoch = trainer._train_step, trainer._train_epoch

    def counted_step(*args, **kwargs):
        counts = [0]
        with counting_reads(counts):
            result = step(*args, **kwargs)
        per_step.append(counts[0])
        return result

    def counted_epoch(loop):
        with counting_reads(epoch):
            train_epoch(loop)

    trainer._train_step, trainer._train_epoch = counted_step, counted_epoch
    result = trainer.fit()
    return per_step, epoch[0], result


def test_a_training_step_reads_the_device_once(tmp_path):
    trainer = _trainer(tmp_path, torch.device("cpu"))
    per_step, epoch, result = _reads(trainer)
    assert len(per_step) == STEPS and result.skipped_steps == 0
    # the finite flag (and the stop request), read together; the first step also checks the
    # cache's views once
    assert max(per_step[1:]) == 1 and per_step[0] == 2, per_step
    # the whole epoch: one read per step, the loss sums every READ_SUMS_EVERY steps and at the
    # end, nothing else
    assert epoch == STEPS + 1 + STEPS // trainer_module.READ_SUMS_EVERY + 1, epoch
    # the terms still reach the log: the epoch's row averages every step
    row = result.history[-1]
    assert {"train/loss", "train/order2_distance", "train/order3_angle"} <= set(row)
    assert torch.isfinite(torch.tensor(row["train/loss"]))


def _sharded_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = _trainer(Path(out) / f"rank{rank}", torch.device("cpu"))
        per_step, epoch, result = _reads(trainer)
        torch.save({"per_step": per_step, "epoch": epoch, "skipped": result.skipped_steps},
                   Path(out) / f"reads{rank}.pt")
        dist.barrier()  # both ranks done: neither tears its gloo pairs down under the other
    finally:
        dist.destroy_process_group()


def test_a_sharded_training_step_reads_the_device_once(tmp_path):
    """Two gloo processes, global relations sharded between them: the gathers of the student's
    and the reference's embeddings read no row counts (each rank's are its own, the trainer
    declares them equal), so a step still waits once, and the check that the ranks' batches
    were equal rides on that one read."""
    port = free_port()
    mp.spawn(_sharded_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        reads = torch.load(tmp_path / f"reads{rank}.pt", weights_only=True)
        per_step = reads["per_step"]
        assert len(per_step) == STEPS and reads["skipped"] == 0
        assert max(per_step[1:]) == 1 and per_step[0] == 2, (rank, per_step)
        assert reads["epoch"] == STEPS + 1 + STEPS // trainer_module.READ_SUMS_EVERY + 1


def test_the_one_read_still_skips_a_non_finite_step(tmp_path):
    """A NaN image makes its batch's loss NaN: that step is skipped, the others train."""
    trainer = _trainer(tmp_path, torch.device("cpu"), nan_at=5)
    result = trainer.fit()
    assert 1 <= result.skipped_steps < STEPS
    assert all(torch.isfinite(p).all() for p in trainer.method.student.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_training_step_syncs_once_on_a_gpu(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, torch.device("cuda"))
    per_step: list[int] = []
    step = trainer._train_step

    def watched_step(*args, **kwargs):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                result = step(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        per_step.append(sum("synchroniz" in str(w.message) for w in caught))
        return result

    monkeypatch.setattr(trainer, "_train_step", watched_step)
    trainer.fit()
    assert max(per_step[1:]) <= 1, per_step  # the first step may size the angle chunks
