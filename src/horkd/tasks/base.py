"""What a task decides: which labels the networks see, their task loss, and how they are scored.

The experiment, trainer and methods are shared by every task; a task plugs in through this small
contract and one registry line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from horkd import distributed
from horkd.data import BatchLoader, DataSplits
from horkd.registry import Registry

InputFn = Callable[[Tensor], Tensor]
TASKS: Registry = Registry("task")


class TaskContext(Protocol):
    """What a task sees of one seed of a run (:class:`horkd.experiment.RunContext` is one):
    its config, seed, device, splits, sizes and ``inputs(view, size)``, the input function."""

    @property
    def cfg(self) -> Any: ...
    @property
    def seed(self) -> int: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def splits(self) -> DataSplits: ...
    @property
    def hr_size(self) -> int: ...
    @property
    def lr_size(self) -> int: ...
    @property
    def in_channels(self) -> int: ...
    def inputs(
        self, view: str, size: int | None = None, upsample: bool | None = None
    ) -> InputFn: ...
EVAL_BATCH = 512


def eval_batches(dataset: Any) -> tuple[Iterator[tuple[Tensor, Tensor, Tensor]], bool]:
    """This process's share of a split's evaluation batches, and whether the processes split
    them (then their results must be combined). All of them on one process; under torchrun a
    contiguous run per rank (:func:`horkd.distributed.my_batches`). The batches are the
    single process's own, so every image gets the same degradation noise."""
    loader = BatchLoader(dataset, batch_size=EVAL_BATCH, shuffle=False)
    share = distributed.my_batches(len(loader))
    return loader.iter_range(share), distributed.batches_are_split(len(loader))


@torch.no_grad()
def embed(
    model: nn.Module, dataset: Any, device: torch.device, to_input: InputFn
) -> tuple[Tensor, Tensor]:
    """Embeddings and labels of a whole dataset, in order, with ``to_input`` applied to HR.

    Under torchrun each process embeds its share and the shares are gathered, so every process
    returns the whole split's embeddings (retrieval and verification compare all of them)."""
    was_training = model.training
    model.eval()
    embeddings, labels = [], []
    batches, split = eval_batches(dataset)
    for x, y, _ in batches:
        embeddings.append(model(to_input(x.to(device))).embedding.float().cpu())
        labels.append(y)
    model.train(was_training)
    emb, lab = torch.cat(embeddings), torch.cat(labels)
    if split:
        emb, lab = distributed.gather_rows(emb), distributed.gather_rows(lab)
    return emb, lab


@dataclass(frozen=True)
class Scoring:
    """How a final network is scored on the test split: at HR, at LR, or both. ``upsample``:
    LR re-upsampled to the HR size (None: as the run's students take LR). ``gallery``: another
    network (the teacher) embeds the HR gallery and ``query_map`` takes the scored network's
    embeddings into that network's space (retrieval's asymmetric protocol)."""

    hr: bool = False
    lr: bool = False
    upsample: bool | None = None
    gallery: nn.Module | None = None
    query_map: Callable[[Tensor], Tensor] | None = None
    map_fitted: bool = False  # the map was fitted on the training split (no projector)


class Task:
    """One recognition task. ``score_key`` is the validation metric that picks epochs.

    A task sees a run only through its :class:`TaskContext`: the splits, the device, the sizes
    and ``ctx.inputs(view, size)``.
    """

    name = "task"
    score_key = "top1"
    default_loss = "cross_entropy"
    uses_logits = True  # whether logit-based distillation (Hinton KD) means anything here
    teacher_gallery = False  # students are also scored against a gallery the teacher embeds

    def prepare(self, splits: DataSplits, cfg: Any, seed: int = 0) -> DataSplits:
        """The splits this task trains and tests on (``cfg``: the experiment config)."""
        return splits

    def validate(self, ctx: TaskContext, model: nn.Module, to_input: InputFn) -> dict[str, float]:
        """Metrics on the validation split (what picks epochs and search candidates)."""
        assert ctx.splits.val is not None
        return self.score_split(model, ctx.splits.val, ctx.device, to_input)

    def score_split(
        self, model: nn.Module, dataset: Any, device: torch.device, to_input: InputFn
    ) -> dict[str, float]:
        raise NotImplementedError

    def checkpoint_facts(
        self, ctx: TaskContext, model: nn.Module, to_input: InputFn
    ) -> dict[str, Any]:
        """What a trained network's checkpoint records for later use (none by default)."""
        return {}

    def score_at(self, ctx: TaskContext, model: nn.Module, to_input: InputFn) -> float:
        """The headline metric with test images fed through ``to_input`` (resolution curves)."""
        raise NotImplementedError(f"task '{self.name}' has no resolution curve")

    def test(self, ctx: TaskContext, model: nn.Module, scoring: Scoring) -> dict[str, float]:
        """Metrics of a final network on the test data, scored as ``scoring`` says."""
        raise NotImplementedError
