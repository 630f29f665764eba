"""The demo config's HORKD student step, built for timing (shared by distributed_relations.py and
gpu.py): the demo's networks (student resnet8, width 8, 64-d embedding, on native 7x7 LR;
batch 128 per process), its loss weights (softened logits at T = 4, distance 5, angle 10, global
relations) and a cached reference (random outputs for 4 fixed views of every image, as the
demo's ``cache_reference`` looks them up), trained by horkd's own Trainer step (DDP under
several processes, the one host-device sync per step). The images are random 7x7 bytes held in
memory; the LR degradation of a real run is left out, so the step is the training it pays for.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from horkd.config import StageConfig
from horkd.data.loader import BatchLoader
from horkd.data.memory import TensorImageDataset
from horkd.losses import HybridOrderLoss
from horkd.methods.base import Batch
from horkd.methods.distill import DistillMethod
from horkd.models import ModelOutput, build_model
from horkd.reference_cache import ReferenceCache
from horkd.trainer import Trainer

BATCH, IMAGES, VIEWS, CLASSES, SIDE = 128, 4096, 4, 10, 7


class CrossEntropy(nn.Module):
    def forward(self, out: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out.logits, target)


def demo_trainer(device: torch.device, precision: str = "fp32",
                 rank: int = 0, world: int = 1) -> tuple[Trainer, BatchLoader]:
    """A Trainer for the demo's HORKD student and its batches (this process's share)."""
    torch.manual_seed(0)
    student = build_model("resnet8", CLASSES, 1, embed_dim=64, width=8)
    reference = build_model("resnet8", CLASSES, 1, embed_dim=64, width=8)
    loss = HybridOrderLoss(64, 64, logit_weight=1.0, temperature=4.0, distance_weight=5.0,
                           angle_weight=10.0)
    method = DistillMethod(student, CrossEntropy(), reference, loss, student_view="lr")
    method.reference_cache = ReferenceCache(
        torch.randn(VIEWS, IMAGES, 64, device=device),
        torch.randn(VIEWS, IMAGES, CLASSES, device=device))
    images = torch.randint(0, 256, (IMAGES, 1, SIDE, SIDE), dtype=torch.uint8)
    data = TensorImageDataset(images, torch.randint(0, CLASSES, (IMAGES,)))
    batches = BatchLoader(data, BATCH, shuffle=True, drop_last=True, rank=rank,
                          world_size=world, device=device)
    views = torch.Generator(device=device).manual_seed(1)

    def make(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> Batch:
        view = torch.randint(0, VIEWS, (x.shape[0],), device=device, generator=views)
        return Batch(hr=x, lr=x, target=y, index=index.to(device), view_id=view)

    stage = StageConfig(epochs=1, batch_size=BATCH, scheduler="none", precision=precision)
    out = Path(tempfile.mkdtemp(prefix="horkd-step-"))
    trainer = Trainer(method, stage, train_batches=batches, make_batch=make, validate=None,
                      score_key="top1", device=device, out_dir=out,
                      meta={"student": {"model": {}}}, progress=False)
    return trainer, batches


def demo_step(trainer: Trainer, batches) -> Callable[[], None]:
    """One training step of ``trainer`` per call, cycling over ``batches`` (what both the
    distributed and the GPU benchmark time)."""
    from horkd.loop_state import LoopState

    trainer.method.train()
    loop = LoopState()
    stream = iter(batches)

    def step() -> None:
        nonlocal stream
        batch = next(stream, None)
        if batch is None:
            stream = iter(batches)
            batch = next(stream)
        trainer._train_step(loop, *batch, epoch=0, step=loop.step)

    return step
