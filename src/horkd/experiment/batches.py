"""Training batches of a stage: the data order, and the paired HR/LR views made on the device."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from horkd import distributed
from horkd.config import StageConfig
from horkd.data import AugmentSpec, BatchLoader
from horkd.data.augment import augment_batch_with_flips
from horkd.degrade import Degrader
from horkd.experiment.context import RunContext
from horkd.methods import Batch


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


def train_batches(ctx: RunContext, stage: StageConfig) -> BatchLoader:
    """The stage's shuffled training order (the same for every method of one seed)."""
    train = ctx.splits.train
    return BatchLoader(
        train,
        batch_size=stage.batch_size,
        shuffle=True,
        seed=ctx.seed,
        drop_last=len(train) > stage.batch_size * distributed.world_size(),
        num_workers=ctx.cfg.data.num_workers,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
    )


def batch_maker(ctx: RunContext, stage_name: str, degrade: bool = True) -> PairedBatchMaker:
    """The stage's own augmentation stream, seeded by the run seed and the stage's name.

    ``degrade=False`` for stages that see only HR (teacher, assistant): they make no LR view, so
    the degradation settings cannot change what they learn.
    """
    student_spec = ctx.degrade_spec(ctx.lr_size, upsample=ctx.upsampled)
    degrader = Degrader(ctx.hr_size, student_spec).to(ctx.device) if degrade else None
    offset = len(stage_name) + sum(map(ord, stage_name))
    seed = ctx.seed * 1000 + offset + 7919 * distributed.rank()  # own draws per rank
    generator = torch.Generator(device=ctx.device).manual_seed(seed)
    return PairedBatchMaker(ctx.augment, degrader, generator, ctx.labeled)
