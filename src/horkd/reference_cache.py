"""The frozen reference's outputs computed once per (image, augmentation) and reused every epoch.

The teacher (or assistant) is frozen and in eval mode, so its output for a given HR image never
changes. When augmentation can take only a few values per image (none, or a horizontal flip), all
of them are computed in one pass before training and a training step looks them up by dataset
index instead of running the reference: the reference forward leaves the step. Random crops have
too many values to store, so they keep the live reference (the config refuses the combination).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from horkd import distributed
from horkd.data import make_loader
from horkd.data.memory import TensorImageDataset
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
        """One pass of ``reference`` over ``dataset`` (twice with ``flips``); under torchrun each
        process computes a contiguous share of the batches and the shares are gathered, so every
        process holds the whole cache after 1/N of the pass."""
        reference.eval()
        views = (False, True) if flips else (False,)
        embeddings: list[list[Tensor]] = [[] for _ in views]
        logits: list[list[Tensor]] = [[] for _ in views]
        loader = make_loader(dataset, batch_size, shuffle=False)
        for x, _, _ in loader.iter_range(distributed.my_batches(len(loader))):
            x = x.to(device)
            for v, flipped in enumerate(views):
                out = reference(x.flip(-1) if flipped else x)
                embeddings[v].append(out.embedding.float())
                logits[v].append(out.logits.float())
        split = distributed.batches_are_split(len(loader))

        def rows(parts: list[Tensor]) -> Tensor:
            local = torch.cat(parts)
            return distributed.gather_rows(local) if split else local

        return cls(
            torch.stack([rows(e) for e in embeddings]), torch.stack([rows(lg) for lg in logits])
        )

    @classmethod
    def shared(
        cls, reference: nn.Module, dataset: Dataset, device: torch.device, *, flips: bool
    ) -> ReferenceCache:
        """:meth:`build`, memoised in this process by the reference's weights and the images.

        A study trains many students (methods, seeds, search candidates) from one frozen teacher
        on one training split; they share its cache instead of each recomputing it.
        """
        images = dataset_digest(dataset)
        if images is None:
            return cls.build(reference, dataset, device, flips=flips)
        key = f"{weights_digest(reference)}:{images}:{flips}:{device}"
        if key not in _SHARED:
            _SHARED[key] = cls.build(reference, dataset, device, flips=flips)
            while len(_SHARED) > _SHARED_MAX:
                _SHARED.popitem(last=False)
        _SHARED.move_to_end(key)
        return _SHARED[key]

    def lookup(self, index: Tensor, flipped: Tensor | None) -> ModelOutput:
        index = index.to(self.embedding.device)
        if flipped is None:
            return ModelOutput(self.embedding[0, index], self.logits[0, index])
        if self.embedding.shape[0] < 2:
            raise RuntimeError("the batch was flipped but the cache holds no flipped views")
        view = flipped.to(self.embedding.device).long()
        return ModelOutput(self.embedding[view, index], self.logits[view, index])


_SHARED: OrderedDict[str, ReferenceCache] = OrderedDict()
_SHARED_MAX = 4  # a teacher's cache of 54k images and both flips is ~60 MB


def weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def dataset_digest(dataset: Dataset) -> str | None:
    """Which images, in which order: the chain of index views down to in-memory images (their
    content, hashed once per tensor); None for file-backed datasets, which are not shared."""
    parts = []
    while hasattr(dataset, "indices") and hasattr(dataset, "dataset"):  # Subset and kin
        indices = torch.as_tensor(dataset.indices)  # type: ignore[attr-defined]
        parts.append(hashlib.sha256(indices.numpy().tobytes()).hexdigest())
        dataset = dataset.dataset  # type: ignore[attr-defined]
    if not isinstance(dataset, TensorImageDataset):
        return None
    parts.append(dataset.content_digest())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
