"""The frozen reference's outputs computed once per (image, augmentation) and reused every epoch.

The teacher (or assistant) is frozen and in eval mode, so its output for a given HR image never
changes. When augmentation can take only a few values per image (none, a horizontal flip, or K
fixed views drawn once: ``data.augment.views``), all of them are computed in one pass before
training and a training step looks them up by dataset index and view instead of running the
reference: the reference forward leaves the step. Fresh random crops have too many values to
store, so they keep the live reference (the config refuses the combination).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import Dataset

from horkd import distributed
from horkd.checkpoint import atomic_write
from horkd.data import BatchLoader
from horkd.data.augment import FixedViews, FlipViews
from horkd.data.memory import TensorImageDataset
from horkd.models import ModelOutput
from horkd.run_lock import waiting_lock

Views = FixedViews | FlipViews


class ReferenceCache:
    """``embedding[v, i]`` and ``logits[v, i]`` for view ``v`` of image ``i`` (view 0 plain and 1
    mirrored for :class:`FlipViews`, one of K fixed views for :class:`FixedViews`).

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
        views: Views,
        batch_size: int = 256,
    ) -> ReferenceCache:
        """One pass of ``reference`` over ``dataset`` per view; under torchrun each process
        computes a contiguous share of the batches and the shares are gathered, so every process
        holds the whole cache after 1/N of the pass."""
        reference.eval()
        embeddings: list[list[Tensor]] = [[] for _ in range(views.views)]
        logits: list[list[Tensor]] = [[] for _ in range(views.views)]
        seen: list[Tensor] = []
        # a file that fails is left out (never a neighbour's copy): each output is put back at
        # its own dataset index below
        loader = BatchLoader(dataset, batch_size, shuffle=False)
        for x, _, positions in loader.iter_range(distributed.my_batches(len(loader))):
            x = x.to(device)
            seen.append(positions)
            for v in range(views.views):
                view = torch.full((x.shape[0],), v, dtype=torch.long)
                out = reference(views.apply(x, positions, view))
                embeddings[v].append(out.embedding.float())
                logits[v].append(out.logits.float())
        split = distributed.batches_are_split(len(loader))
        size = len(dataset)  # type: ignore[arg-type]

        def rows(parts: list[Tensor]) -> Tensor:
            local = torch.cat(parts)
            return distributed.gather_rows(local) if split else local

        index = rows(seen).to(device)

        def placed(parts: list[list[Tensor]]) -> Tensor:
            """Every view's rows at their dataset index; NaN at a file that failed to read,
            so a step that looks one up is skipped as non-finite instead of distilling
            towards another image's outputs."""
            values = torch.stack([rows(p) for p in parts])
            table = values.new_full((values.shape[0], size, values.shape[2]), float("nan"))
            table[:, index] = values
            return table

        return cls(placed(embeddings), placed(logits))

    def lookup(self, index: Tensor, view_id: Tensor | None) -> ModelOutput:
        index = index.to(self.embedding.device)
        if view_id is None:
            return ModelOutput(self.embedding[0, index], self.logits[0, index])
        view = view_id.to(self.embedding.device).long()
        if not getattr(self, "_views_checked", False):
            # once, not every step (it waits for the device); a batch maker that drew another
            # view later would still fail, at the indexing
            if int(view.max()) >= self.embedding.shape[0]:
                raise RuntimeError(
                    f"the batch took view {int(view.max())} but the cache holds "
                    f"{self.embedding.shape[0]} view(s) per image"
                )
            self._views_checked = True
        return ModelOutput(self.embedding[view, index], self.logits[view, index])


class ReferenceCaches:
    """The caches of one process's runs, by reference weights and training images.

    A study trains many students (methods, seeds, search candidates) from one frozen teacher on
    one training split; they share its cache instead of each recomputing it. With a
    ``directory`` the caches are also kept on disk (safetensors, written atomically), so the
    runs of other processes, and a rerun after a crash, load them instead of recomputing.
    """

    def __init__(self, directory: str | Path | None = None, keep: int = 4) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.keep = keep  # a teacher's cache of 54k images and both flips is ~60 MB
        self._memory: OrderedDict[str, ReferenceCache] = OrderedDict()

    def get(
        self, reference: nn.Module, dataset: Dataset, device: torch.device, *, views: Views
    ) -> ReferenceCache:
        images = dataset_digest(dataset)
        if images is None:  # file-backed images: not worth a key, built for this stage alone
            return ReferenceCache.build(reference, dataset, device, views=views)
        key = f"{weights_digest(reference)}-{images}-{views.key()}"
        if isinstance(views, FixedViews):  # the table itself, not only its size
            key += "-" + hashlib.sha256(views.offsets.numpy().tobytes()
                                        + views.flips.numpy().tobytes()).hexdigest()[:12]
        if key not in self._memory:
            self._memory[key] = self._load_or_build(key, reference, dataset, device, views)
            while len(self._memory) > self.keep:
                self._memory.popitem(last=False)
        self._memory.move_to_end(key)
        return self._memory[key]

    def _load_or_build(
        self, key: str, reference: nn.Module, dataset: Dataset, device: torch.device, views: Views
    ) -> ReferenceCache:
        if self.directory is None or distributed.active():  # a build there is collective
            return ReferenceCache.build(reference, dataset, device, views=views)
        with waiting_lock(self.directory / f".{key}.lock"):  # one builder per key
            return self._read_or_build(key, reference, dataset, device, views)

    def _read_or_build(
        self, key: str, reference: nn.Module, dataset: Dataset, device: torch.device, views: Views
    ) -> ReferenceCache:
        assert self.directory is not None
        path = self.directory / f"{key}.safetensors"
        if path.is_file():
            try:
                tensors = load_file(str(path), device=str(device))
                return ReferenceCache(tensors["embedding"], tensors["logits"])
            except Exception:  # noqa: BLE001 - a torn or foreign file is rebuilt
                path.unlink(missing_ok=True)
        cache = ReferenceCache.build(reference, dataset, device, views=views)
        tensors = {"embedding": cache.embedding.cpu(), "logits": cache.logits.cpu()}
        atomic_write(path, lambda tmp: save_file(tensors, tmp))
        return cache


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
