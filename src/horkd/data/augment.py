"""Batch augmentation on the device: one random crop/flip per sample, applied to the HR batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentSpec:
    crop_padding: int = 0
    hflip: bool = False


def _source(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Draw where the generator lives (then move to the batch), so one CPU generator gives the
    same augmentation whether the batch is on the CPU or a GPU."""
    return generator.device if generator is not None else device


def augment_batch(x: Tensor, spec: AugmentSpec, generator: torch.Generator | None = None) -> Tensor:
    """Random crop with zero padding and random horizontal flip, vectorised over the batch."""
    return augment_batch_with_flips(x, spec, generator)[0]


def augment_batch_with_flips(
    x: Tensor, spec: AugmentSpec, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor | None]:
    """:func:`augment_batch`, also saying which samples were mirrored (None: flips are off), so a
    cache of the reference's outputs can pick the matching view."""
    b, _, h, w = x.shape
    source = _source(generator, x.device)
    if spec.crop_padding > 0:
        p = spec.crop_padding
        padded = F.pad(x, (p, p, p, p))
        offsets = torch.randint(0, 2 * p + 1, (2, b), generator=generator, device=source)
        dy, dx = offsets.to(x.device)
        rows = dy.view(b, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)  # [B, H, 1]
        cols = dx.view(b, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)  # [B, 1, W]
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
    flip = None
    if spec.hflip:
        flip = (torch.rand(b, generator=generator, device=source) < 0.5).to(x.device)
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    return x, flip
