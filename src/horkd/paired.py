"""Two classifiers scored on the same images: the difference of their accuracies, its standard
error, and whether it is within noise.

Pairing on the images removes what the two share (the images both get right or both miss), so
a small split can still tell a clear difference; what it cannot tell, it says. Per image the two
students' hits differ by -1, 0 or 1 (a share between for a student scored over several sizes).
Two sources of noise are added up, in points squared:

- the images: the per-image differences averaged over the seeds, their variance over the image
  count (another split of the same size could give another difference);
- the seeds, where there are several: the per-seed differences' variance over the seed count
  (another seed could too). With one seed this part is unknown and left out, and said to be.

A difference of at most :data:`NOISE_FACTOR` standard errors (about a 95% interval that holds 0)
is within noise. The per-image hits of a run's students on the test split are kept in
``RUN/test_hits.json`` (:data:`TEST_HITS_FILE`), so the report judges its verdict the same way.
"""

from __future__ import annotations

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
    """``a - b`` in points, paired on ``images`` images (and ``seeds`` seeds)."""

    mean: float
    standard_error: float
    images: int
    seeds: int

    @property
    def within_noise(self) -> bool:
        return abs(self.mean) <= NOISE_FACTOR * self.standard_error

    def spread(self) -> str:
        """Which noise the standard error holds, in words."""
        if self.seeds > 1:
            return f"paired on the same {self.images} images over {self.seeds} seeds, " \
                   "image-to-image and seed-to-seed spread included"
        return f"paired on the same {self.images} images; one seed: seed-to-seed spread not " \
               "included"


def paired_difference(a: Sequence[Tensor], b: Sequence[Tensor]) -> PairedDifference:
    """``a`` and ``b``: per seed, each image's hit (1 right, 0 wrong) of the two students, on the
    same images in the same order."""
    if not a or len(a) != len(b):
        raise ValueError("paired_difference needs the same seeds for both students")
    diffs = 100.0 * torch.stack([(x.double() - y.double()) for x, y in zip(a, b, strict=True)])
    seeds, images = diffs.shape
    if images < 2:
        return PairedDifference(float(diffs.mean()) if images else math.nan, math.inf, images,
                                seeds)
    variance = float(diffs.mean(0).var(unbiased=True)) / images
    if seeds > 1:
        variance += float(diffs.mean(1).var(unbiased=True)) / seeds
    return PairedDifference(float(diffs.mean()), math.sqrt(variance), images, seeds)


def write_hits(path: Path, metric: str, seeds: list[int], hits: dict[str, list[Tensor]]) -> None:
    """``hits``: method -> per seed the 0/1 hit of each test image, stored one bit an image."""
    packed = {name: [np.packbits(h.numpy().astype(bool)).tobytes().hex() for h in per_seed]
              for name, per_seed in hits.items()}
    images = {int(h.numel()) for per_seed in hits.values() for h in per_seed}
    if len(images) != 1:
        raise ValueError(f"per-image hits over different image counts: {sorted(images)}")
    write_json(path, {"metric": metric, "images": images.pop(), "seeds": seeds, "hits": packed},
               "the students' per-image test hits")


def read_hits(path: Path) -> tuple[str, dict[str, list[Tensor]]] | None:
    """The metric and per-method, per-seed hits :func:`write_hits` wrote (None: no file)."""
    if not path.is_file():
        return None
    raw: dict[str, Any] = json.loads(path.read_text())
    count = int(raw["images"])

    def unpack(text: str) -> Tensor:
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:count]
        return torch.from_numpy(bits.astype(np.float32))

    return raw["metric"], {name: [unpack(t) for t in per_seed]
                           for name, per_seed in raw["hits"].items()}
