"""HR -> LR degradation on batched tensors, on whatever device the batch lives.

Images are float tensors in [0, 1]. The pipeline augments the HR batch once, then derives the LR
view from that same tensor, so the two views line up pixel for pixel. ``area`` interpolation is an
average over each output pixel's footprint (inherently antialiased); ``bilinear``/``bicubic`` use
PyTorch's antialiased kernels when ``antialias`` is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

INTERPOLATIONS = ("area", "bilinear", "bicubic")


def resolve_lr_size(hr_size: int, lr_size: int | None = None, factor: int | None = None) -> int:
    """The LR side from an explicit size or a downsampling factor (``hr_size // factor``)."""
    if hr_size is None or hr_size <= 0:
        raise ValueError(f"HR size must be a positive integer, got {hr_size}")
    if (lr_size is None) == (factor is None):
        raise ValueError("give exactly one of lr_size or factor")
    if factor is not None:
        if factor <= 0:
            raise ValueError(f"downsampling factor must be positive, got {factor}")
        lr_size = hr_size // factor
        if lr_size < 1:
            raise ValueError(f"factor {factor} leaves less than one pixel of a {hr_size}px image")
    assert lr_size is not None
    if lr_size <= 0:
        raise ValueError(f"LR size must be positive, got {lr_size}")
    if lr_size >= hr_size:
        raise ValueError(f"LR size ({lr_size}) must be smaller than HR size ({hr_size})")
    return lr_size


@dataclass(frozen=True)
class DegradeSpec:
    """How LR images are made. Exactly one of ``lr_size`` / ``factor``."""

    lr_size: int | None = None
    factor: int | None = None
    interpolation: str = "area"
    antialias: bool = True
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    jpeg_quality: int | None = None
    upsample: bool = False
    upsample_interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        for name in ("interpolation", "upsample_interpolation"):
            value = getattr(self, name)
            if value not in INTERPOLATIONS:
                raise ValueError(f"{name} must be one of {', '.join(INTERPOLATIONS)}; got '{value}'")
        if self.blur_sigma < 0 or self.noise_std < 0:
            raise ValueError("blur_sigma and noise_std must be >= 0")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


def _resize(x: Tensor, size: int, mode: str, antialias: bool) -> Tensor:
    if mode == "area":
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=antialias)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflect padding; radius 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    mode = "reflect" if pad == radius else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(x, horizontal, groups=channels)
    return F.conv2d(x, vertical, groups=channels)


def jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
    """Encode and decode each image as JPEG (through CPU uint8, torchvision's codec)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    device, dtype = x.device, x.dtype
    images = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    encoded = encode_jpeg(list(images), quality=quality)
    decoded = decode_jpeg(encoded)
    out = torch.stack(decoded).to(device=device, dtype=torch.float32) / 255.0
    return out.to(dtype)


class Degrader(nn.Module):
    """Batched HR -> LR: blur, downsample (antialiased), noise, JPEG, optionally re-upsample."""

    def __init__(self, hr_size: int, spec: DegradeSpec | None = None, **spec_kwargs) -> None:
        super().__init__()
        self.spec = spec if spec is not None else DegradeSpec(**spec_kwargs)
        self.hr_size = hr_size
        self.lr_size = resolve_lr_size(hr_size, self.spec.lr_size, self.spec.factor)

    @property
    def out_size(self) -> int:
        return self.hr_size if self.spec.upsample else self.lr_size

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"expected [B, C, H, W] or [C, H, W], got shape {tuple(x.shape)}")
        spec = self.spec
        if spec.blur_sigma > 0:
            x = gaussian_blur(x, spec.blur_sigma)
        lr = _resize(x, self.lr_size, spec.interpolation, spec.antialias)
        if spec.noise_std > 0:
            noise = torch.randn(
                lr.shape, generator=generator, device=lr.device, dtype=torch.float32
            )
            lr = (lr + spec.noise_std * noise.to(lr.dtype)).clamp(0.0, 1.0)
        if spec.jpeg_quality is not None:
            lr = jpeg_roundtrip(lr, spec.jpeg_quality)
        if spec.upsample:
            size = x.shape[-1]
            lr = _resize(lr, size, spec.upsample_interpolation, spec.antialias).clamp(0.0, 1.0)
        return lr.squeeze(0) if single else lr


def degrade(x: Tensor, hr_size: int | None = None, **spec_kwargs) -> Tensor:
    """Functional form: ``degrade(batch, lr_size=16, interpolation="bicubic")``."""
    return Degrader(hr_size or x.shape[-1], DegradeSpec(**spec_kwargs))(x)


class PairedViews(Dataset):
    """``(hr, lr, label)`` where ``lr`` is degraded from that very (already augmented) ``hr``.

    Noise is reproducible: sample ``i`` in epoch ``e`` always uses the generator seeded from
    ``(seed, e, i)``; call :meth:`set_epoch` so the noise differs between epochs.
    """

    def __init__(self, base: Dataset, degrader: Degrader, seed: int = 0) -> None:
        self.base = base
        self.degrader = degrader
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        hr, label = self.base[index]
        generator = torch.Generator(device=hr.device)
        generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index)
        return hr, self.degrader(hr, generator=generator), label
