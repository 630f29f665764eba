"""Batch augmentation on the device: one random crop/flip per sample, applied to the HR batch.

Two ways to draw it: fresh per step (``augment_batch_with_flips``), or one of K fixed views per
image (:class:`FixedViews`, drawn once with a fixed seed), so a frozen reference's outputs can be
computed once per image and view and looked up, random crops included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentSpec:
    crop_padding: int = 0
    hflip: bool = False


PADDING_SHARE = 16  # random shifts of up to a sixteenth of the HR side


def padding_for(hr_size: int) -> int:
    """``data.augment.crop_padding: null``: shifts scaled to the HR side, at least one pixel. A
    fixed 4 px (CIFAR's, on 32 px) moves a 20-px image by a fifth and cost a small folder's
    teacher 5 points; ``horkd study init`` writes this same value for the folder it reads."""
    return max(1, hr_size // PADDING_SHARE)


def folder_augment(hr_size: int) -> dict[str, int | bool]:
    """The augmentation of a user's image folder at HR side ``hr_size``: what
    ``configs/image_folder.yaml`` resolves to (``crop_padding: null, hflip: true``) and what
    ``horkd study init`` writes, so a run and a study of one folder are trained alike."""
    return {"crop_padding": padding_for(hr_size), "hflip": True}


def _source(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Draw where the generator lives (then move to the batch), so one CPU generator gives the
    same augmentation whether the batch is on the CPU or a GPU."""
    return generator.device if generator is not None else device


def crop(x: Tensor, padding: int, dy: Tensor, dx: Tensor) -> Tensor:
    """Each image shifted by its own offsets inside a zero-padded frame, vectorised."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = dy.view(b, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)  # [B, H, 1]
    cols = dx.view(b, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)  # [B, 1, W]
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def mirror(x: Tensor, flip: Tensor) -> Tensor:
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def augment_batch(x: Tensor, spec: AugmentSpec, generator: torch.Generator | None = None) -> Tensor:
    """Random crop with zero padding and random horizontal flip, vectorised over the batch."""
    return augment_batch_with_flips(x, spec, generator)[0]


def augment_batch_with_flips(
    x: Tensor, spec: AugmentSpec, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor | None]:
    """:func:`augment_batch`, also saying which samples were mirrored (None: flips are off), so a
    cache of the reference's outputs can pick the matching view."""
    b = x.shape[0]
    source = _source(generator, x.device)
    if spec.crop_padding > 0:
        p = spec.crop_padding
        offsets = torch.randint(0, 2 * p + 1, (2, b), generator=generator, device=source)
        dy, dx = offsets.to(x.device)
        x = crop(x, p, dy, dx)
    flip = None
    if spec.hflip:
        flip = (torch.rand(b, generator=generator, device=source) < 0.5).to(x.device)
        x = mirror(x, flip)
    return x, flip


class FlipViews:
    """The cacheable views of fresh per-step augmentation without crops: the image (view 0) and,
    with flips on, its mirror (view 1)."""

    def __init__(self, hflip: bool) -> None:
        self.views = 2 if hflip else 1

    def key(self) -> str:
        return "flips" if self.views == 2 else "plain"

    def apply(self, x: Tensor, index: Tensor, view: Tensor) -> Tensor:
        return mirror(x, view.to(x.device) == 1)


class FixedViews:
    """K augmentations per training image, drawn once: crop offsets and a flip per (image, view).

    A training step picks one view per image at random; the same view of the same image is the
    same tensor in every epoch, so the reference's output for it can be cached ("consistent"
    teaching with many views). ``views`` is K; the table depends only on (images, K, spec, seed).
    """

    def __init__(self, images: int, views: int, spec: AugmentSpec, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        p = spec.crop_padding
        self.spec, self.views = spec, views
        self.offsets = torch.randint(0, 2 * p + 1, (images, views, 2), generator=generator)
        flips = torch.rand(images, views, generator=generator) < 0.5
        self.flips = flips if spec.hflip else torch.zeros_like(flips)

    def key(self) -> str:
        return f"views{self.views}-pad{self.spec.crop_padding}-flip{int(self.spec.hflip)}"

    def apply(self, x: Tensor, index: Tensor, view: Tensor) -> Tensor:
        """Images ``x`` (dataset positions ``index``) in their views ``view``."""
        index, view = index.cpu(), view.cpu()
        if self.spec.crop_padding > 0:
            dy, dx = self.offsets[index, view].to(x.device).unbind(-1)
            x = crop(x, self.spec.crop_padding, dy, dx)
        return mirror(x, self.flips[index, view].to(x.device))

    def draw(self, batch: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.views, (batch,), generator=generator, device=generator.device)
