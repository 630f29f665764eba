"""The frozen reference's outputs computed once per (image, augmentation) and reused every epoch.

The teacher (or assistant) is frozen and in eval mode, so its output for a given HR image never
changes. When augmentation can take only a few values per image (none, or a horizontal flip), all
of them are computed in one pass before training and a training step looks them up by dataset
index instead of running the reference: the reference forward leaves the step. Random crops have
too many values to store, so they keep the live reference (the config refuses the combination).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from horkd.data import make_loader
from horkd.models import ModelOutput


class ReferenceCache:
    """``embedding[v, i]`` and ``logits[v, i]`` for view ``v`` (0 plain, 1 flipped) of image ``i``.

    Plain tensors on the training device, deliberately not module buffers: they are never saved
    in checkpoints (a resumed stage rebuilds them) and DDP does not broadcast them every step.
    """

    def __init__(self, embedding: Tensor, logits: Tensor) -> None:
        self.embedding = embedding
        self.logits = logits

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        reference: nn.Module,
        dataset: Dataset,
        device: torch.device,
        *,
        flips: bool,
        batch_size: int = 256,
    ) -> ReferenceCache:
        reference.eval()
        views = (False, True) if flips else (False,)
        embeddings: list[list[Tensor]] = [[] for _ in views]
        logits: list[list[Tensor]] = [[] for _ in views]
        for x, _, _ in make_loader(dataset, batch_size, shuffle=False):
            x = x.to(device)
            for v, flipped in enumerate(views):
                out = reference(x.flip(-1) if flipped else x)
                embeddings[v].append(out.embedding.float())
                logits[v].append(out.logits.float())
        return cls(
            torch.stack([torch.cat(e) for e in embeddings]),
            torch.stack([torch.cat(lg) for lg in logits]),
        )

    def lookup(self, index: Tensor, flipped: Tensor | None) -> ModelOutput:
        index = index.to(self.embedding.device)
        if flipped is None:
            return ModelOutput(self.embedding[0, index], self.logits[0, index])
        if self.embedding.shape[0] < 2:
            raise RuntimeError("the batch was flipped but the cache holds no flipped views")
        view = flipped.to(self.embedding.device).long()
        return ModelOutput(self.embedding[view, index], self.logits[view, index])
