"""Counting host reads of tensors (``.item()``, ``float(t)``, ``bool(t)``, ...): on a CPU the
stand-in for the device syncs a training step waits on, so a test and a benchmark can count them
where no GPU (and no CUDA sync debug mode) is there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: The tensor methods that read a value back to the host.
READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@contextmanager
def counting_reads(counts: list[int]) -> Iterator[None]:
    """Add to ``counts[0]`` one per host read of a tensor while the block runs."""
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counted(original):  # type: ignore[no-untyped-def]
        def read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            counts[0] += 1
            return original(self, *args, **kwargs)
        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
