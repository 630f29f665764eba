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


def augment_batch(x: Tensor, spec: AugmentSpec, generator: torch.Generator | None = None) -> Tensor:
    """Random crop with zero padding and random horizontal flip, vectorised over the batch."""
    b, _, h, w = x.shape
    if spec.crop_padding > 0:
        p = spec.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=x.device)
        rows = (dy.view(b, 1) + torch.arange(h, device=x.device).view(1, h))  # [B, H]
        cols = (dx.view(b, 1) + torch.arange(w, device=x.device).view(1, w))  # [B, W]
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        x = padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]
        x = x.permute(0, 3, 1, 2).contiguous()
    if spec.hflip:
        flip = torch.rand(b, generator=generator, device=x.device) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    return x
