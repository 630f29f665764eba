"""Two classifiers scored on the same images: the lead of one over the other, its standard
error, and whether it is within noise.

Per image the two students' hits differ by -1, 0 or 1 (a share between for a student scored over
several sizes); each seed's lead is the mean of its images' differences, in points. The rule
(:data:`NOISE_RULE`) is the textbook one:

- several seeds (S >= 2): the lead is the mean of the S per-seed leads, its standard error their
  sample sd over sqrt(S), and it is beyond noise when over Student's t (0.975, S - 1 df) standard
  errors (4.30 at 3 seeds). The per-seed leads already hold each seed's image-to-image noise, so
  nothing is added to them (adding it counted it twice). Where every seed scored the same images,
  another draw of images is not in their spread, and the call says so;
- one seed: the paired per-image standard error (the differences' sd over sqrt(images)) and the
  normal 1.96; the seed-to-seed spread is unknown and not included, and the call says so.

The per-image hits of a run's students on the test split are kept in ``RUN/test_hits.json``
(:data:`TEST_HITS_FILE`), so the report judges its verdict the same way.
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

Z_95 = 1.959964  # the normal quantile of a two-sided 95% interval
ONE_SEED_CUT = Z_95  # one seed: the per-image standard error against the normal
NOISE_RULE = ("with S >= 2 seeds the lead's standard error is the sd of the per-seed leads over "
              "sqrt(S), beyond noise when over Student's t (0.975, S - 1 df) of them; with one "
              "seed the paired per-image standard error and 1.96 (one seed: seed-to-seed spread "
              "not included)")
TEST_HITS_FILE = "test_hits.json"


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` in points, paired on ``images`` images per seed over ``seeds`` seeds; beyond
    noise when over ``cut`` standard errors (:data:`NOISE_RULE`)."""

    mean: float
    standard_error: float
    images: int
    seeds: int
    same_images: bool = True  # every seed scored the same images (else each its own split)
    cut: float = ONE_SEED_CUT

    @property
    def half_width(self) -> float:
        """The 95% interval's half width, in points: a lead at most this is within noise."""
        return self.cut * self.standard_error

    @property
    def within_noise(self) -> bool:
        return abs(self.mean) <= self.half_width

    def spread(self) -> str:
        """Which noise the standard error holds, in words."""
        if self.seeds == 1:
            return (f"paired on the same {self.images} images; one seed: seed-to-seed spread not "
                    "included")
        held = (f"the same {self.images} images (another draw of images not included)"
                if self.same_images else "each seed's own images")
        return (f"the spread of {self.seeds} per-seed leads on {held}, Student's t at "
                f"{self.seeds - 1} df")


def lead_noise(a: Sequence[Tensor], b: Sequence[Tensor],
               same_images: bool = True) -> PairedDifference:
    """``a`` and ``b``: per seed, each image's hit (1 right, 0 wrong) of the two students, on the
    same images in the same order. ``same_images``: every seed scored the same images (one
    split), else each seed its own; the standard error is the same rule either way
    (:data:`NOISE_RULE`), the words say which."""
    if not a or len(a) != len(b):
        raise ValueError("lead_noise needs the same seeds for both students")
    diffs = [100.0 * (x.double() - y.double()) for x, y in zip(a, b, strict=True)]
    seeds, images = len(diffs), min(d.numel() for d in diffs)
    if images < (2 if seeds == 1 else 1):
        return PairedDifference(math.nan if images == 0 else float(diffs[0].mean()), math.inf,
                                images, seeds, same_images)
    leads = torch.stack([d.mean() for d in diffs])
    mean = float(leads.mean())
    if seeds > 1:
        from horkd.study.stats import t_quantile  # lazy: scipy, and the study package's imports

        se = float(leads.std(unbiased=True)) / math.sqrt(seeds)
        return PairedDifference(mean, se, images, seeds, same_images, t_quantile(0.95, seeds - 1))
    se = float(diffs[0].std(unbiased=True)) / math.sqrt(images)
    return PairedDifference(mean, se, images, seeds, same_images)


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
    """Per method, per seed, each image's hit on one split, for :func:`lead_noise`."""

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
