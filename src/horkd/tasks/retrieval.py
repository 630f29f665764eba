"""Cross-resolution metric learning: train on the first half of the classes, retrieve the rest.

Recall@K (embeddings L2-normalised, the query's own image excluded from the gallery) in three
settings: HR query / HR gallery (upper bound), LR / LR, and LR query / HR gallery, the realistic
case of a low-resolution probe searched in a high-resolution database. The gallery is embedded by
the same network from the HR images; with ``degrade.student_input: upsampled`` the student takes
both at the HR size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from horkd.data import DataSplits, TensorImageDataset, labels_of
from horkd.data.loader import resolve_tensor_dataset
from horkd.data.split import split_indices
from horkd.metrics import recall_at_k
from horkd.tasks.base import TASKS, InputFn, Scoring, Task, TaskContext, embed

KS = (1, 2, 4, 8)


class _Relabeled(torch.utils.data.Dataset):
    """A class subset whose labels are renumbered 0..C'-1 (heads are sized to seen classes)."""

    def __init__(self, dataset: Any, indices: list[int], mapping: dict[int, int]) -> None:
        self.subset = Subset(dataset, indices)
        self.mapping = mapping
        self.targets = [mapping[int(v)] for v in labels_of(self.subset)]

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        image, label = self.subset[i]
        return image, self.mapping[int(label)]


def class_split(dataset: Any, classes: list[int]) -> Any:
    """The samples of ``classes``, labels renumbered; stays an in-memory tensor set if it was."""
    labels = labels_of(dataset)
    chosen = torch.nonzero(torch.isin(labels, torch.tensor(classes))).flatten()
    mapping = {c: i for i, c in enumerate(sorted(classes))}
    resolved = resolve_tensor_dataset(dataset)
    if resolved is not None:
        base, index_map = resolved
        remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
        for c, i in mapping.items():
            remap[c] = i
        images, old = base.images[index_map[chosen]], base.labels[index_map[chosen]]
        return TensorImageDataset(images, remap[old])
    return _Relabeled(dataset, chosen.tolist(), mapping)


def seen_classes(classes: int, train: int, seed: int | None) -> list[int]:
    """The training classes: the first ``train``, or ``train`` drawn at random with ``seed``."""
    if seed is None:
        return list(range(train))
    order = torch.randperm(classes, generator=torch.Generator().manual_seed(10_007 + seed))
    return sorted(order[:train].tolist())


@TASKS.register("retrieval")
class Retrieval(Task):
    name = "retrieval"
    score_key = "recall@1"
    default_loss = "proxy_anchor"
    uses_logits = False
    teacher_gallery = True

    def prepare(self, splits: DataSplits, cfg: Any, seed: int = 0) -> DataSplits:
        """The protocol of the field: pool every image, the first classes train (a validation
        part carved from them), the remaining classes -- never seen in training -- are tested."""
        n = splits.info.num_classes
        seen = seen_classes(n, cfg.retrieval.train_classes or n // 2,
                            seed if cfg.retrieval.random_classes else None)
        unseen = [c for c in range(n) if c not in seen]
        if not unseen:
            raise ValueError("retrieval.train_classes leaves no unseen class to test on")
        parts = [splits.train] + ([splits.val] if splits.val is not None else []) + [splits.test]
        pool = _pool(parts)
        train_all = class_split(pool, seen)
        split_seed = seed if cfg.data.split_seed is None else cfg.data.split_seed
        carved = split_indices(labels_of(train_all), split_seed, cfg.data.val_fraction,
                               cfg.data.val_size)
        keep, held = carved.train, carved.val
        assert held is not None  # val_fraction > 0 (config)
        info = splits.info
        info.num_classes = len(seen)
        return DataSplits(
            train=Subset(train_all, keep.tolist()),
            val=Subset(train_all, held.tolist()),
            test=class_split(pool, unseen),
            info=info,
        )

    def score_split(
        self, model: nn.Module, dataset: Any, device: torch.device, to_input: InputFn
    ) -> dict[str, float]:
        emb, labels = embed(model, dataset, device, to_input)
        r = recall_at_k(emb, labels, emb, labels, KS, exclude_same_index=True)
        return {f"recall@{k}": v for k, v in r.items()}

    def score_at(self, ctx: TaskContext, model: nn.Module, to_input: InputFn) -> float:
        """Recall@1 of queries fed through ``to_input`` against the HR gallery."""
        test, device = ctx.splits.test, ctx.device
        gallery, labels = embed(model, test, device, ctx.inputs("hr"))
        queries, _ = embed(model, test, device, to_input)
        return recall_at_k(queries, labels, gallery, labels, (1,), exclude_same_index=True)[1]

    def test(self, ctx: TaskContext, model: nn.Module, scoring: Scoring) -> dict[str, float]:
        test, device = ctx.splits.test, ctx.device
        hr_emb, labels = embed(model, test, device, ctx.inputs("hr"))
        metrics: dict[str, float] = {}
        if scoring.lr:
            to_lr = ctx.inputs("lr", upsample=scoring.upsample)
            lr_emb, _ = embed(model, test, device, to_lr)
            lr_hr = recall_at_k(lr_emb, labels, hr_emb, labels, KS, exclude_same_index=True)
            lr_lr = recall_at_k(lr_emb, labels, lr_emb, labels, KS, exclude_same_index=True)
            metrics.update({f"R@{k} LR->HR": v for k, v in lr_hr.items()})
            metrics.update({f"R@{k} LR->LR": v for k, v in lr_lr.items()})
            if scoring.gallery is not None and scoring.query_map is not None:
                gallery, _ = embed(scoring.gallery, test, device, ctx.inputs("hr"))
                mapped = scoring.query_map(lr_emb)
                asym = recall_at_k(mapped, labels, gallery, labels, KS, exclude_same_index=True)
                metrics.update({f"R@{k} LR->HR teacher": v for k, v in asym.items()})
                metrics["teacher map fitted"] = float(scoring.map_fitted)
        if scoring.hr:
            hr_hr = recall_at_k(hr_emb, labels, hr_emb, labels, KS, exclude_same_index=True)
            metrics.update({f"R@{k} HR->HR": v for k, v in hr_hr.items()})
        return metrics


def _pool(parts: list[Any]) -> Any:
    """All images of the given splits as one dataset (one tensor set when they share storage)."""
    resolved = [resolve_tensor_dataset(p) for p in parts]
    if all(r is not None for r in resolved):
        images = torch.cat([base.images[idx] for base, idx in resolved])  # type: ignore[misc]
        labels = torch.cat([base.labels[idx] for base, idx in resolved])  # type: ignore[misc]
        return TensorImageDataset(images, labels)
    return torch.utils.data.ConcatDataset(parts)
