"""LR face recognition: identities for training, verification pairs and identification for test.

Inputs are assumed to be aligned face crops (alignment is out of scope). Verification follows the
LFW protocol on a ``pairs.txt`` (10-fold accuracy with the threshold chosen on the other nine
folds, ROC AUC, TAR at FAR 1e-2 / 1e-3), the probe of each pair degraded to LR against the HR
other image. Without a pairs file, pairs are drawn (fixed seed) from the test identities.
Rank-1 identification: LR probes against an HR gallery of one image per test identity.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from horkd import distributed
from horkd.data import labels_of
from horkd.data.images import load_image
from horkd.metrics import best_threshold, rank1_identification, verification_metrics
from horkd.tasks.base import TASKS, InputFn, Scoring, Task, TaskContext, embed
from horkd.tasks.retrieval import KS, recall_at_k


@dataclass
class Pairs:
    """Verification pairs: two image tensors per pair, whether same identity, the fold."""

    first: Tensor
    second: Tensor
    same: np.ndarray
    fold: np.ndarray


def _lfw_image(root: Path, name: str, number: int) -> Path:
    return root / name / f"{name}_{number:04d}.jpg"


def parse_pairs_file(path: str | Path) -> list[tuple[tuple[str, int], tuple[str, int], bool, int]]:
    """LFW ``pairs.txt``: header ``folds n``, then per fold n same pairs ``name i j`` and n
    different pairs ``name1 i name2 j``."""
    lines = Path(path).read_text().split("\n")
    header = lines[0].split()
    if len(header) != 2 or not all(h.isdigit() for h in header):
        raise ValueError(f"{path}: first line must be '<folds> <pairs per fold>', got {lines[0]!r}")
    folds, per_fold = int(header[0]), int(header[1])
    rows = [line.split() for line in lines[1:] if line.strip()]
    if len(rows) != folds * 2 * per_fold:
        raise ValueError(f"{path}: expected {folds * 2 * per_fold} pairs, found {len(rows)}")
    pairs = []
    for n, row in enumerate(rows):
        fold = n // (2 * per_fold)
        if len(row) == 3:
            pairs.append(((row[0], int(row[1])), (row[0], int(row[2])), True, fold))
        elif len(row) == 4:
            pairs.append(((row[0], int(row[1])), (row[2], int(row[3])), False, fold))
        else:
            raise ValueError(f"{path}: line {n + 2} is neither 'name i j' nor 'name i name j'")
    return pairs


def _load(path: Path, size: int, channels: int) -> Tensor:
    if not path.is_file():
        raise FileNotFoundError(f"pair image not found: {path}")
    image = load_image(path, channels).resize((size, size))
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1)


def load_pairs_file(path: str | Path, root: str | Path, size: int, channels: int) -> Pairs:
    rows = parse_pairs_file(path)
    root = Path(root)
    first = torch.stack([_load(_lfw_image(root, *a), size, channels) for a, _, _, _ in rows])
    second = torch.stack([_load(_lfw_image(root, *b), size, channels) for _, b, _, _ in rows])
    same = np.array([s for _, _, s, _ in rows])
    fold = np.array([f for _, _, _, f in rows])
    return Pairs(first, second, same, fold)


def sample_pairs(dataset: Any, n_pairs: int, folds: int = 10, seed: int = 0) -> Pairs:
    """Half same-identity, half different pairs from a labelled set, spread over ``folds``."""
    labels = labels_of(dataset).tolist()
    by_id: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_id.setdefault(label, []).append(index)
    rng = random.Random(seed)
    repeated = [ids for ids in by_id.values() if len(ids) > 1]
    if not repeated or len(by_id) < 2:
        raise ValueError("verification pairs need identities with 2+ images and 2+ identities")
    pairs = []
    for n in range(n_pairs):
        if n % 2 == 0:
            a, b = rng.sample(rng.choice(repeated), 2)
            pairs.append((a, b, True))
        else:
            x, y = rng.sample(sorted(by_id), 2)
            pairs.append((rng.choice(by_id[x]), rng.choice(by_id[y]), False))
    first = torch.stack([dataset[a][0] for a, _, _ in pairs])
    second = torch.stack([dataset[b][0] for _, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    fold = np.arange(n_pairs) * folds // n_pairs
    return Pairs(first, second, same, fold)


@torch.no_grad()
def _embed_tensor(model: nn.Module, images: Tensor, device: torch.device, to_input: InputFn):
    """L2-normalised embeddings of pair images; under torchrun each process embeds a contiguous
    share of the chunks and the shares are gathered, as :func:`embed` does for datasets."""
    model.eval()
    chunks = images.split(256)
    share = distributed.my_batches(len(chunks))
    mine = chunks[share.start : share.stop]
    out = torch.cat([model(to_input(c.to(device))).embedding.float().cpu() for c in mine])
    if distributed.batches_are_split(len(chunks)):
        out = distributed.gather_rows(out)
    return F.normalize(out, dim=1)


@TASKS.register("face")
class FaceRecognition(Task):
    name = "face"
    score_key = "recall@1"
    default_loss = "arcface"
    uses_logits = False

    def __init__(self) -> None:
        self._pairs: Pairs | None = None  # one task object per run context: its pairs

    def score_split(
        self, model: nn.Module, dataset: Any, device: torch.device, to_input: InputFn
    ) -> dict[str, float]:
        emb, labels = embed(model, dataset, device, to_input)
        r = recall_at_k(emb, labels, emb, labels, KS[:1], exclude_same_index=True)
        return {"recall@1": r[1]}

    def score_at(self, ctx: TaskContext, model: nn.Module, to_input: InputFn) -> float:
        """Verification accuracy with the second image of each pair fed through ``to_input``."""
        pairs = self.pairs(ctx)
        first = _embed_tensor(model, pairs.first, ctx.device, ctx.inputs("hr"))
        second = _embed_tensor(model, pairs.second, ctx.device, to_input)
        scores = (first * second).sum(1).numpy()
        return verification_metrics(scores, pairs.same, pairs.fold)["acc"]

    def checkpoint_facts(
        self, ctx: TaskContext, model: nn.Module, to_input: InputFn
    ) -> dict[str, Any]:
        """The verification threshold, chosen on pairs drawn from the validation split (the
        first image HR, the second as the network takes it): ``horkd verify`` decides with it."""
        if ctx.splits.val is None:
            return {}
        try:
            pairs = sample_pairs(ctx.splits.val, ctx.cfg.face.sampled_pairs, seed=ctx.seed + 1)
        except ValueError:  # too few identities with two images in the validation split
            return {}
        first = _embed_tensor(model, pairs.first, ctx.device, ctx.inputs("hr"))
        second = _embed_tensor(model, pairs.second, ctx.device, to_input)
        scores = (first * second).sum(1).numpy()
        threshold, accuracy = best_threshold(scores, pairs.same)
        source = (f"chosen on {len(scores)} pairs of the validation split during training "
                  f"(accuracy {100 * accuracy:.1f}% there)")
        return {"verification": {"threshold": threshold, "source": source}}

    def pairs(self, ctx: TaskContext) -> Pairs:
        """The verification pairs: the configured pairs file, or pairs drawn from the test
        identities with the run's seed. Read once."""
        if self._pairs is None:
            face = ctx.cfg.face
            if face.pairs_file:
                root = face.pairs_root or Path(face.pairs_file).parent
                self._pairs = load_pairs_file(face.pairs_file, root, ctx.hr_size, ctx.in_channels)
            else:
                self._pairs = sample_pairs(ctx.splits.test, face.sampled_pairs, seed=ctx.seed)
        return self._pairs

    def test(self, ctx: TaskContext, model: nn.Module, scoring: Scoring) -> dict[str, float]:
        device, pairs = ctx.device, self.pairs(ctx)
        hr_first = _embed_tensor(model, pairs.first, device, ctx.inputs("hr"))
        if not scoring.lr:
            hr_second = _embed_tensor(model, pairs.second, device, ctx.inputs("hr"))
            scores = (hr_first * hr_second).sum(1).numpy()
            v = verification_metrics(scores, pairs.same, pairs.fold)
            return {f"HR-HR {k}": val for k, val in v.items() if k != "acc_std"}
        metrics: dict[str, float] = {}
        sizes = [ctx.lr_size] + [s for s in ctx.cfg.face.probe_sizes if s != ctx.lr_size]
        for size in sizes:
            if size >= ctx.hr_size:
                continue
            to_lr = ctx.inputs("lr", size=size, upsample=scoring.upsample)
            lr_second = _embed_tensor(model, pairs.second, device, to_lr)
            scores = (hr_first * lr_second).sum(1).numpy()
            v = verification_metrics(scores, pairs.same, pairs.fold)
            keys = ("acc", "auc", "tar@far=0.01", "tar@far=0.001") if size == ctx.lr_size else (
                "acc",)
            metrics.update({f"{size}px LR-HR {k}": v[k] for k in keys})
        gallery_idx, probe_idx = _gallery_split(ctx.splits.test)
        emb_hr, labels = embed(model, ctx.splits.test, device, ctx.inputs("hr"))
        to_lr = ctx.inputs("lr", upsample=scoring.upsample)
        emb_lr, _ = embed(model, ctx.splits.test, device, to_lr)
        metrics["rank1 LR->HR"] = rank1_identification(
            emb_lr[probe_idx], labels[probe_idx], emb_hr[gallery_idx], labels[gallery_idx]
        )
        return metrics


def _gallery_split(dataset: Any) -> tuple[Tensor, Tensor]:
    """The first image of every identity is its gallery entry; the others are probes."""
    labels = labels_of(dataset)
    seen: set[int] = set()
    gallery, probes = [], []
    for index, label in enumerate(labels.tolist()):
        (probes if label in seen else gallery).append(index)
        seen.add(label)
    return torch.tensor(gallery), torch.tensor(probes)
