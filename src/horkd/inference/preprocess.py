"""What a trained model takes, from its metadata, and how any image becomes that.

``input="hr"``: the image is a high-resolution picture; it is resized to the model's HR size and
degraded by the model's own degradation to its LR size (as its test images were). ``input="lr"``:
the image is a real low-resolution capture; it is only resized to the size the model takes.
Either way the image is first decoded and converted to the model's channels. The per-image part
(decode, resize) runs in DataLoader workers; the degradation runs on whole batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from horkd.data.images import load_image, to_channels
from horkd.evaluate import InputFn, identity, lr_input_fn

# hr: HR pictures, degraded as the model's test images were; lr: real LR captures, resized only;
# hr_raw: HR pictures fed as they are at the HR size (how a retrieval test embeds its gallery)
InputKind = Literal["hr", "lr", "hr_raw"]
ImageLike = str | Path | Image.Image | np.ndarray | Tensor


@dataclass(frozen=True)
class ModelInput:
    """The input a checkpoint's network was trained and scored on."""

    channels: int
    hr_size: int
    lr_size: int | None  # None: the network sees HR (a teacher, an assistant)
    upsampled: bool  # LR given re-upsampled to the HR size
    degrade: dict[str, Any]  # the run's degrade config (interpolation, blur, noise, JPEG)
    seed: int  # the run seed, which fixes the degradation noise as in its test scoring
    lr_range: tuple[int, int] | None = None  # trained across LR sizes: the smallest, largest

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ModelInput:
        given = meta.get("input")
        if not given or "hr_size" not in given:
            raise ValueError("the model's metadata does not say its input size")
        lr = given.get("lr_size") if given.get("view") == "lr" else None
        sizes = given.get("lr_sizes") if given.get("view") == "lr" else None
        return cls(
            channels=int(meta["model"].get("in_channels", 3)),
            hr_size=int(given["hr_size"]),
            lr_size=int(lr) if lr else None,
            upsampled=bool(given.get("upsampled")),
            degrade=dict(meta.get("config", {}).get("degrade", {})),
            seed=int(meta.get("seed", 0)),
            lr_range=(min(sizes), max(sizes)) if sizes and not given.get("upsampled") else None,
        )

    @property
    def size(self) -> int:
        """The side of the tensor the network takes."""
        return self.hr_size if self.lr_size is None or self.upsampled else self.lr_size

    def image_size(self, kind: InputKind) -> int:
        """The side an image is resized to before the batch step: HR for HR pictures (they are
        degraded next, or fed as they are), the network's own size for LR captures."""
        return self.size if kind == "lr" else self.hr_size

    def batch_step(self, kind: InputKind, device: torch.device) -> InputFn:
        """What whole batches go through: the model's degradation for HR pictures fed to an LR
        network, nothing otherwise."""
        if kind != "hr" or self.lr_size is None:
            return identity
        from horkd.config import DegradeConfig
        from horkd.experiment.context import degrade_spec

        spec = degrade_spec(DegradeConfig(**self.degrade), self.lr_size, self.upsampled)
        input_size = None if self.upsampled else self.lr_size
        return lr_input_fn(self.hr_size, spec, device, self.seed, input_size)


def to_pil(image: ImageLike, channels: int) -> Image.Image:
    """A path, PIL image, HxW(xC) uint8 array or CxHxW tensor (float in [0, 1] or uint8) as a
    PIL image in ``channels``; the same conversion for every source."""
    if isinstance(image, str | Path):
        return load_image(image, channels)
    if isinstance(image, Tensor):
        array = image.detach().cpu()
        if array.is_floating_point():
            array = (array.clamp(0, 1) * 255).round().to(torch.uint8)
        image = array.permute(1, 2, 0).numpy() if array.dim() == 3 else array.numpy()
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        image = Image.fromarray(array)
    if not isinstance(image, Image.Image):
        raise TypeError(f"cannot read an image from a {type(image).__name__}")
    return to_channels(image, channels)


SMALL = 2  # an image whose longer side is under 1/SMALL of the side it is resized to gets a note


def _side(pil: Image.Image, model: ModelInput, kind: InputKind) -> int:
    """The side ``pil`` is resized to before the batch step."""
    side = model.image_size(kind)
    if kind == "lr" and model.lr_range is not None:  # its own size inside the trained range
        side = min(max(max(pil.size), model.lr_range[0]), model.lr_range[1])
    return side


def small_image_note(image: Image.Image, model: ModelInput, kind: InputKind) -> str | None:
    """A note for an image far below the size the model takes it at (under half its side): it
    is enlarged that many times, so the answer rests on little of what the model learnt from."""
    side = _side(image, model, kind)
    longest = max(image.size)
    if longest * SMALL >= side:
        return None
    what = "HR" if kind != "lr" else "input"
    hint = ("; a real low-resolution capture is given with --input lr"
            if kind == "hr" and model.lr_size is not None else "")
    return (f"image {image.size[0]}x{image.size[1]} px is far below the model's {what} size "
            f"{side} px: enlarged {side / longest:.1f}x, the prediction may be unreliable{hint}")


def image_tensor(image: ImageLike, model: ModelInput, kind: InputKind) -> Tensor:
    """One image as the float tensor the batch step takes (decoded, converted, resized)."""
    pil = to_pil(image, model.channels)
    side = _side(pil, model, kind)
    if pil.size != (side, side):
        # An LR capture shrunk to the LR side: BOX, the area average training's LR images are
        # made with (degrade.interpolation: area); otherwise torchvision's resize of a PIL image
        # (bilinear, as the HR images were loaded), without importing torchvision (seconds)
        shrink = kind == "lr" and max(pil.size) > side
        pil = pil.resize((side, side), Image.Resampling.BOX if shrink
                         else Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.array(pil, dtype=np.uint8, copy=True))
    pixels = pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1).contiguous()
    return pixels.float().div(255)  # what torchvision's to_tensor gives, with fewer steps
