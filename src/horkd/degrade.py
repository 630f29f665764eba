"""HR -> LR degradation on batched tensors, on whatever device the batch lives.

Images are float tensors in [0, 1]. The pipeline augments the HR batch once, then derives the LR
view from that same tensor, so the two views line up pixel for pixel.

Order of operations (each optional step mimics real LR capture):
blur (optics) -> downsample (sensor) -> noise (sensor) -> JPEG (storage) -> re-upsample (when the
student takes LR at the HR size).

Antialiasing: ``area`` is an average over each output pixel's footprint (adaptive average pooling),
so it is antialiased by construction and the ``antialias`` flag does not change it. ``bilinear`` and
``bicubic`` use PyTorch's antialiased kernels (``F.interpolate(..., antialias=True)``), whose
support widens with the downsampling factor; with ``antialias=False`` they point-sample and alias.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

INTERPOLATIONS = ("area", "bilinear", "bicubic")


def resolve_lr_size(hr_size: int, lr_size: int | None = None, factor: int | None = None) -> int:
    """The LR side from an explicit size or a downsampling factor (``hr_size // factor``).

    Args:
        hr_size: Side of the square HR images, in pixels.
        lr_size: Side of the LR images, in pixels.
        factor: Downsampling factor; the LR side is ``hr_size // factor`` (rounded down).

    Returns:
        The LR side in pixels, at least 1 and below ``hr_size``.

    Raises:
        ValueError: ``hr_size`` is not positive; both or neither of ``lr_size`` and
            ``factor`` are given; either is not positive; the factor leaves less than one
            pixel; or the LR side is not smaller than the HR side.
    """
    if hr_size is None or hr_size <= 0:
        raise ValueError(f"HR size must be a positive integer, got {hr_size}")
    if (lr_size is None) == (factor is None):
        raise ValueError(
            f"give exactly one of lr_size or factor (got lr_size={lr_size}, factor={factor})"
        )
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
    """How LR images are made; the size (exactly one of ``lr_size`` / ``factor``) is checked
    against the HR size by :func:`resolve_lr_size` when a :class:`Degrader` is built.

    ``noise_std`` is in [0, 1] pixel units, added to the LR image, then clamped to [0, 1].
    ``jpeg_quality`` (1..100) round-trips the LR image through JPEG; ``None`` skips it.
    ``upsample`` returns LR re-upsampled to the HR size with ``upsample_interpolation``
    (``area`` then means pixel replication).

    Attributes:
        lr_size: Side of the LR images, in pixels.
        factor: Downsampling factor; the LR side is ``hr_size // factor``.
        interpolation: Downsampling kernel: ``"area"``, ``"bilinear"`` or ``"bicubic"``.
        antialias: Whether ``bilinear`` and ``bicubic`` downsampling is antialiased (``area``
            always is).
        blur_sigma: Standard deviation of the Gaussian blur before downsampling, in HR
            pixels; 0 turns it off.
        noise_std: Standard deviation of the Gaussian noise on the LR image, in [0, 1] pixel
            units; 0 turns it off.
        jpeg_quality: JPEG quality (1..100) of the LR round-trip; ``None`` skips it.
        upsample: Whether the LR image is re-upsampled to the HR size.
        upsample_interpolation: Kernel of the re-upsampling, one of the same three.

    Raises:
        ValueError: An interpolation is not one of the three; ``blur_sigma`` or
            ``noise_std`` is negative or NaN; or ``jpeg_quality`` is outside 1..100. The size
            is checked later, against the HR size, when a :class:`Degrader` is built.
    """

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
                raise ValueError(
                    f"{name} must be one of {', '.join(INTERPOLATIONS)}; got '{value}'"
                )
        for name in ("blur_sigma", "noise_std"):
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0 (0 turns it off), got {value}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100 (or None), got {self.jpeg_quality}")


def _resize(x: Tensor, size: int, mode: str, antialias: bool) -> Tensor:
    if mode == "area":  # an average over each output pixel's footprint: antialiased already
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=antialias)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a ``[B, C, H, W]`` batch, radius ``ceil(3 sigma)``.

    Reflect padding keeps the border from darkening; images smaller than the radius (where
    reflection is undefined) fall back to replicating the edge.

    Args:
        x: Images ``[B, C, H, W]``, float.
        sigma: Standard deviation of the Gaussian, in pixels (> 0).

    Returns:
        The blurred images, of ``x``'s shape, dtype and device.
    """
    radius = max(1, math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    mode = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(x, horizontal, groups=channels)
    return F.conv2d(x, vertical, groups=channels)


def _jpeg_codec_torchvision(images: list[Tensor], quality: int) -> list[Tensor]:
    # torchvision 0.29 deprecates its codecs in favour of torchcodec; they still work, and the
    # warning on every batch would drown the training log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import decode_jpeg, encode_jpeg

        return list(decode_jpeg(encode_jpeg(images, quality=quality)))


def _jpeg_codec_pillow(images: list[Tensor], quality: int) -> list[Tensor]:
    import io

    from PIL import Image

    out = []
    for img in images:
        array = img.permute(1, 2, 0).numpy()
        pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1))
    return out


def _jpeg_codec(images: list[Tensor], quality: int) -> list[Tensor]:
    """torchvision's codec where it exists; Pillow once torchvision drops it."""
    try:
        return _jpeg_codec_torchvision(images, quality)
    except (ImportError, AttributeError):
        return _jpeg_codec_pillow(images, quality)


def jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
    """Encode and decode each image of ``[B, C, H, W]`` (C = 1 or 3) as JPEG at ``quality``.

    Goes through CPU uint8 (what a real file stores) and returns to ``x``'s device and dtype;
    no gradient flows through this step.

    Args:
        x: Images ``[B, C, H, W]``, pixels in [0, 1] (clamped to it first).
        quality: JPEG quality, 1..100 (higher keeps more detail).

    Returns:
        The decoded images, of ``x``'s shape, pixels in [0, 1] quantised to 1/255.

    Raises:
        ValueError: ``x`` has neither 1 nor 3 channels.
    """
    if x.shape[1] not in (1, 3):
        raise ValueError(f"JPEG needs 1 or 3 channels, got {x.shape[1]}")
    images = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    decoded = torch.stack(_jpeg_codec(list(images), quality))
    return (decoded.float() / 255.0).to(device=x.device, dtype=x.dtype)


def _gaussian_noise(shape: torch.Size, device: torch.device, generator: torch.Generator | None):
    # Drawn on the generator's device (then moved) so a CPU generator also drives GPU batches,
    # and in float32 whatever the image dtype, so the same seed gives the same noise.
    source = generator.device if generator is not None else device
    noise = torch.randn(shape, generator=generator, device=source, dtype=torch.float32)
    return noise.to(device)


class Degrader(nn.Module):
    """Batched HR -> LR: blur, downsample (antialiased), noise, JPEG, optionally re-upsample.

    Holds no parameters or buffers; ``.to(device)`` is harmless and every op follows the input's
    device. Pass a seeded ``generator`` to ``forward`` for reproducible noise.

    Args:
        hr_size: Side of the square HR images it takes, in pixels.
        spec: How LR images are made.
        **spec_kwargs: The fields of a :class:`DegradeSpec`, instead of ``spec``.

    Raises:
        ValueError: Both ``spec`` and keywords are given; a field is invalid (see
            :class:`DegradeSpec`); or the LR size does not fit ``hr_size`` (see
            :func:`resolve_lr_size`).
        TypeError: A keyword is not a field of :class:`DegradeSpec`.
    """

    def __init__(self, hr_size: int, spec: DegradeSpec | None = None, **spec_kwargs) -> None:
        super().__init__()
        if spec is not None and spec_kwargs:
            raise ValueError("give a DegradeSpec or its fields as keywords, not both")
        self.spec = spec if spec is not None else DegradeSpec(**spec_kwargs)
        self.hr_size = hr_size
        self._lr_size = resolve_lr_size(hr_size, self.spec.lr_size, self.spec.factor)

    @property
    def lr_size(self) -> int:
        """Side of the native LR image in pixels (before any re-upsampling)."""
        return self._lr_size

    @property
    def out_size(self) -> int:
        """Side of what ``forward`` returns, in pixels; the HR size when re-upsampling, else the
        LR size."""
        return self.hr_size if self.spec.upsample else self._lr_size

    def extra_repr(self) -> str:
        return f"hr_size={self.hr_size}, lr_size={self._lr_size}, spec={self.spec}"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The LR view of HR images.

        Args:
            x: HR images ``[B, C, hr_size, hr_size]`` or one ``[C, hr_size, hr_size]``, float,
                pixels in [0, 1]. JPEG needs C = 1 or 3.
            generator: Draws the noise; seed it for the same noise every call. A CPU generator
                also drives a GPU batch. ``None``: torch's global RNG.

        Returns:
            The LR images ``[B, C, out_size, out_size]`` (or ``[C, out_size, out_size]``),
            pixels in [0, 1], on ``x``'s device. Gradients flow through every step but JPEG.

        Raises:
            ValueError: ``x`` is not 3- or 4-dimensional, not floating point, or not
                ``hr_size`` square; or JPEG is on and C is neither 1 nor 3.
        """
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"expected [B, C, H, W] or [C, H, W], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a float image in [0, 1], got dtype {x.dtype}")
        if tuple(x.shape[-2:]) != (self.hr_size, self.hr_size):
            raise ValueError(
                f"expected {self.hr_size}x{self.hr_size} HR images, got "
                f"{x.shape[-2]}x{x.shape[-1]}: build the Degrader with the images' size"
            )
        spec = self.spec
        if spec.blur_sigma > 0:
            x = gaussian_blur(x, spec.blur_sigma)
        # bicubic overshoots at edges; clamping keeps every step's output a valid image
        lr = _resize(x, self._lr_size, spec.interpolation, spec.antialias).clamp(0.0, 1.0)
        if spec.noise_std > 0:
            noise = _gaussian_noise(lr.shape, lr.device, generator)
            lr = (lr + spec.noise_std * noise.to(lr.dtype)).clamp(0.0, 1.0)
        if spec.jpeg_quality is not None:
            lr = jpeg_roundtrip(lr, spec.jpeg_quality)
        if spec.upsample:
            lr = _resize(lr, self.hr_size, spec.upsample_interpolation, spec.antialias)
            lr = lr.clamp(0.0, 1.0)
        return lr.squeeze(0) if single else lr
