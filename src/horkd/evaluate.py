"""Top-1 / top-5 of a classifier on HR batches turned into whatever input the model takes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from horkd.degrade import Degrader, DegradeSpec

InputFn = Callable[[Tensor], Tensor]


def identity(x: Tensor) -> Tensor:
    return x


@torch.no_grad()
def classifier_hits(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, ...]],
    device: torch.device,
    to_input: InputFn = identity,
) -> Tensor:
    """[top-1 hits, top-5 hits, images] of ``model(to_input(hr))`` over the batches: counts, so
    the shares of several processes add up (:func:`accuracy` turns them into percentages)."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.long)
    for x, y, *_ in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(to_input(x)).logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top == y.unsqueeze(1)
        counts += torch.tensor([int(hits[:, 0].sum()), int(hits.any(dim=1).sum()), y.numel()])
    model.train(was_training)
    return counts


def accuracy(hits: Tensor) -> dict[str, float]:
    """Top-1 / top-5 in percent from :func:`classifier_hits`' counts (NaN for no images)."""
    correct1, correct5, total = (int(v) for v in hits)
    if total == 0:
        return {"top1": float("nan"), "top5": float("nan")}
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total}


def lr_input_fn(
    hr_size: int,
    spec: DegradeSpec,
    device: torch.device,
    seed: int = 0,
    input_size: int | None = None,
) -> InputFn:
    """Deterministic degradation for evaluation: the same noise for every model compared.

    ``input_size`` resizes the LR image to the size a native-LR model was trained at, so a
    model trained on 7x7 inputs can be scored on images that were degraded to, say, 14x14 or 5x5
    (the resolution curve) without seeing an input scale it never saw.
    """
    degrader = Degrader(hr_size, spec).to(device)

    def to_input(x: Tensor) -> Tensor:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        lr = degrader(x, generator=generator)
        if input_size is not None and lr.shape[-1] != input_size:
            lr = F.interpolate(
                lr, size=(input_size, input_size), mode="bilinear", antialias=True
            ).clamp(0.0, 1.0)
        return lr

    return to_input
