"""Training batches of a stage: the data order, the paired HR/LR views made on the device and, in
few-label runs, the stream of labelled batches beside them."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from horkd import distributed
from horkd.config import StageConfig
from horkd.data import AugmentSpec, BatchLoader
from horkd.data.augment import FixedViews, augment_batch_with_flips
from horkd.degrade import Degrader
from horkd.experiment.context import RunContext
from horkd.methods import Batch


class LabeledStream:
    """Endless batches of the labelled training images, reshuffled at each pass (seeded by the
    pass), resumable by (pass, batch) like the main data order."""

    def __init__(self, dataset: Dataset, indices: Tensor, batch_size: int, seed: int) -> None:
        self.indices = indices
        world = distributed.world_size()
        self.loader = BatchLoader(
            Subset(dataset, indices.tolist()),
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
            drop_last=len(indices) >= batch_size * world,
            rank=distributed.rank(),
            world_size=world,
            fill_failed_rows=True,  # under torchrun the ranks take equal steps when a file fails
        )
        self.cycle, self.step = 0, 0
        self._batches: Any = None

    def next(self) -> tuple[Tensor, Tensor, Tensor]:
        """The next labelled batch: images, labels, positions in the training set."""
        while True:
            if self._batches is None:
                self.loader.set_epoch(self.cycle)
                self._batches = self.loader.iter_from(self.step)
            item = next(self._batches, None)
            if item is not None:
                self.step += 1
                x, y, positions = item
                return x, y, self.indices[positions]
            self.cycle, self.step, self._batches = self.cycle + 1, 0, None

    def state_dict(self) -> dict[str, int]:
        return {"cycle": self.cycle, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.cycle, self.step, self._batches = int(state["cycle"]), int(state["step"]), None


class PairedBatchMaker:
    """Augment the HR batch once on the device, then degrade that same tensor to LR.

    Its generator (and the labelled stream's position) is part of the resumable training state
    (``state_dict``), so a resumed stage draws the same crops, flips, views and noise as one that
    never stopped.
    """

    def __init__(
        self,
        augment: AugmentSpec,
        degrader: Degrader | list[Degrader] | None,
        generator: torch.Generator,
        views: FixedViews | None = None,
        labeled: LabeledStream | None = None,
    ) -> None:
        self.augment = augment
        # one degrader per LR size; with several, each step draws one (the whole batch's size)
        self.degraders = degrader if isinstance(degrader, list) else [degrader]
        self.degrader = self.degraders[0]
        self.generator = generator
        self.views = views
        self.labeled = labeled

    def __call__(self, x: Tensor, y: Tensor, index: Tensor) -> Batch:
        if len(self.degraders) > 1:  # the step's LR size, drawn from the seeded stream
            drawn = torch.randint(len(self.degraders), (1,), generator=self.generator,
                                  device=self.generator.device)
            self.degrader = self.degraders[int(drawn)]
        batch = self.pair(x, y, index)
        if self.labeled is not None:
            xl, yl, il = self.labeled.next()
            batch.labeled = self.pair(xl.to(x.device), yl.to(y.device), il)
        return batch

    def pair(self, x: Tensor, y: Tensor, index: Tensor) -> Batch:
        if self.views is None:
            hr, flipped = augment_batch_with_flips(x, self.augment, self.generator)
            view_id = None if flipped is None else flipped.long()
        else:
            view_id = self.views.draw(x.shape[0], self.generator).to(x.device)
            hr = self.views.apply(x, index, view_id)
        lr = hr if self.degrader is None else self.degrader(hr, generator=self.generator)
        return Batch(hr=hr, lr=lr, target=y, index=index, view_id=view_id)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        if self.labeled is not None:
            state["labeled"] = self.labeled.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if self.labeled is not None and "labeled" in state:
            self.labeled.load_state_dict(state["labeled"])


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
        device=ctx.device,  # in-memory images: held there as uint8, converted there
        fill_failed_rows=True,  # under torchrun a failed file keeps its row: equal steps
    )


def batch_maker(
    ctx: RunContext,
    stage_name: str,
    degrade: bool = True,
    stage: StageConfig | None = None,
    upsample: bool | None = None,
    few_labels: bool = True,
) -> PairedBatchMaker:
    """The stage's own augmentation stream, seeded by the run seed and the stage's name.

    ``degrade=False`` for stages that see only HR (teacher, assistant): they make no LR view, so
    the degradation settings cannot change what they learn. ``upsample`` overrides how the LR
    view is given (the LR oracle takes it at the HR size whatever the students take).
    ``few_labels=False``: the stage sees every label even in a few-label run (the teacher and
    the LR oracle stand for networks trained on data whose labels the student lacks).
    """
    upsample = ctx.upsampled if upsample is None else upsample
    degrader: list[Degrader] | None = None
    if degrade:  # one per trained LR size (the LR oracle: the run's LR size only)
        sizes = ctx.lr_sizes if upsample == ctx.upsampled else (ctx.lr_size,)
        degrader = [Degrader(ctx.hr_size, ctx.degrade_spec(s, upsample)).to(ctx.device)
                    for s in sizes]
    offset = len(stage_name) + sum(map(ord, stage_name))
    seed = ctx.seed * 1000 + offset + 7919 * distributed.rank()  # own draws per rank
    generator = torch.Generator(device=ctx.device).manual_seed(seed)
    labeled = None
    if ctx.labeled_indices is not None and few_labels:
        size = ctx.cfg.data.labeled_batch_size or (stage.batch_size if stage else 128)
        labeled = LabeledStream(ctx.splits.train, ctx.labeled_indices, size, seed + 1)
    return PairedBatchMaker(ctx.augment, degrader, generator, ctx.views, labeled)
