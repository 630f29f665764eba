"""Two classifiers scored on the same images: the difference of their accuracies, its standard
error, and whether it is within noise.

Pairing on the images removes what the two share (the images both get right or both miss), so
a small split can still tell a clear difference; what it cannot tell, it says. Per image the two
students' hits differ by -1, 0 or 1 (a share between for a student scored over several sizes).
Two sources of noise are added up, in points squared:

- the images: the per-image differences averaged over the seeds, their variance over the image
  count (another split of the same size could give another difference); where each seed has
  its own split, each seed's variance over its image count, summed over the seeds squared;
- the seeds, where there are several: the per-seed differences' variance over the seed count
  (another seed could too). With one seed this part is unknown and left out, and said to be.

A difference of at most :data:`NOISE_FACTOR` standard errors (about a 95% interval that holds 0)
is within noise. The per-image hits of a run's students on the test split are kept in
``RUN/test_hits.json`` (:data:`TEST_HITS_FILE`), so the report judges its verdict the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from horkd.checkpoint import write_json

NOISE_FACTOR = 2.0  # a difference of at most this many standard errors is within noise
TEST_HITS_FILE = "test_hits.json"


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` in points, paired on ``images`` images per seed over ``seeds`` seeds."""

    mean: float
    standard_error: float
    images: int
    seeds: int
    same_images: bool = True  # every seed scored the same images (else each its own split)

    @property
    def within_noise(self) -> bool:
        return abs(self.mean) <= NOISE_FACTOR * self.standard_error

    def spread(self) -> str:
        """Which noise the standard error holds, in words."""
        if self.seeds == 1:
            return (f"paired on the same {self.images} images; one seed: seed-to-seed spread not "
                    "included")
        where = (f"the same {self.images} images" if self.same_images
                 else "each seed's own images")
        return (f"paired on {where} over {self.seeds} seeds, image-to-image and seed-to-seed "
                "spread included")


def paired_difference(a: Sequence[Tensor], b: Sequence[Tensor],
                      same_images: bool = True) -> PairedDifference:
    """``a`` and ``b``: per seed, each image's hit (1 right, 0 wrong) of the two students, on the
    same images in the same order. ``same_images``: every seed scored the same images (one
    split), so the differences are averaged per image over the seeds; else (a split per seed)
    each seed's images contribute their own variance."""
    if not a or len(a) != len(b):
        raise ValueError("paired_difference needs the same seeds for both students")
    diffs = [100.0 * (x.double() - y.double()) for x, y in zip(a, b, strict=True)]
    seeds, images = len(diffs), min(d.numel() for d in diffs)
    leads = torch.stack([d.mean() for d in diffs])
    mean = float(leads.mean())
    if images < 2:
        return PairedDifference(mean, math.inf, images, seeds, same_images)
    if same_images:
        variance = float(torch.stack(diffs).mean(0).var(unbiased=True)) / images
    else:
        variance = sum(float(d.var(unbiased=True)) / d.numel() for d in diffs) / seeds**2
    if seeds > 1:
        variance += float(leads.var(unbiased=True)) / seeds
    return PairedDifference(mean, math.sqrt(variance), images, seeds, same_images)


class ImagesDigest:
    """A running digest of a split's images in order (the batches as scored): whether the seeds
    scored the same images, without keeping them."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, batch: Tensor) -> None:
        self._hash.update(batch.detach().cpu().contiguous().numpy().tobytes())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:16]


@dataclass
class SplitHits:
    """Per method, per seed, each image's hit on one split, for :func:`paired_difference`."""

    metric: str
    hits: dict[str, list[Tensor]]
    same_images: bool = True


def write_hits(path: Path, metric: str, seeds: list[int], hits: dict[str, list[Tensor]],
               digests: list[str]) -> None:
    """``hits``: method -> per seed the 0/1 hit of each image, stored one bit an image;
    ``digests``: per seed, :class:`ImagesDigest` of the images scored."""
    packed = {name: [np.packbits(h.numpy().astype(bool)).tobytes().hex() for h in per_seed]
              for name, per_seed in hits.items()}
    counts = [int(h.numel()) for h in next(iter(hits.values()))]
    write_json(path, {"metric": metric, "seeds": seeds, "images": counts, "digests": digests,
                      "hits": packed}, "the students' per-image test hits")


def read_hits(path: Path) -> SplitHits | None:
    """What :func:`write_hits` wrote (None: no file, as for a run of an older version)."""
    if not path.is_file():
        return None
    raw: dict[str, Any] = json.loads(path.read_text())
    counts = [int(n) for n in raw["images"]]

    def unpack(text: str, count: int) -> Tensor:
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:count]
        return torch.from_numpy(bits.astype(np.float32))

    hits = {name: [unpack(t, n) for t, n in zip(per_seed, counts, strict=True)]
            for name, per_seed in raw["hits"].items()}
    return SplitHits(raw["metric"], hits, len(set(raw["digests"])) == 1)
