"""Pretrained weights by name: torchvision's own weights API and cache, timm's ``pretrained``.

``teacher.weights: DEFAULT`` (or a weights name of the model, ``IMAGENET1K_V1``, or the full
``ResNet18_Weights.IMAGENET1K_V1``) on a torchvision architecture (``tv_resnet18``) is looked
up with :func:`torchvision.models.get_model_weights` and read from torch hub's cache
(``$TORCH_HOME/hub/checkpoints``), downloaded there first where the network allows; with no
network the error names the file and where to put it. On a timm architecture (``timm:<name>``)
``DEFAULT`` is timm's ``pretrained=True`` (timm's own download and cache). A path is a weights
file, as before (:func:`horkd.models.load_backbone_weights`).

The weights are read tensors-only (``weights_only``); a grey model (one input channel) gets the
RGB stem summed over its colours, the usual way to give a colour-trained network grey images.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import Tensor, nn

TV_PREFIX = "tv_"
WEIGHTS_NAME = r"(?:[A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*"  # DEFAULT, ResNet18_Weights.X


def is_weights_name(value: str | Path) -> bool:
    """Whether ``value`` names pretrained weights (``DEFAULT``, ``IMAGENET1K_V1``,
    ``ResNet18_Weights.IMAGENET1K_V1``) rather than a weights file."""
    return re.fullmatch(WEIGHTS_NAME, str(value)) is not None


def _torchvision_weights(arch: str, name: str) -> Any:
    """The torchvision weights enum member ``name`` of ``arch`` (``tv_resnet18``)."""
    import torchvision.models as tvm

    model = arch.removeprefix(TV_PREFIX)
    options = tvm.get_model_weights(model)
    if "." in name:
        chosen = tvm.get_weight(name) if name.split(".")[0] == options.__name__ else None
    else:
        chosen = options.__members__.get(name)
    if chosen is None:
        raise ValueError(f"weights '{name}' are not {model}'s: torchvision has "
                         f"{', '.join(options.__members__)} ({options.__name__})")
    return chosen


def check_weights_name(arch: str, name: str) -> None:
    """A named weight must exist for ``arch`` (checked when the config loads, nothing read)."""
    if arch.startswith("timm:"):
        if name != "DEFAULT":
            raise ValueError(f"a timm model takes weights DEFAULT (timm's pretrained=True; a tag "
                             f"goes in the name, timm:<name>.<tag>), not '{name}'")
        return
    if not arch.startswith(TV_PREFIX):
        raise ValueError(f"'{name}' names pretrained weights, which torchvision (tv_*) and timm "
                         f"(timm:*) architectures have, not '{arch}'; give a weights file")
    _torchvision_weights(arch, name)


def cache_file(url: str) -> Path:
    """Where torch hub keeps the file of ``url`` (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def torchvision_state(arch: str, name: str) -> dict[str, Tensor]:
    """The state dict of torchvision's weights ``name`` for ``arch``, from torch hub's cache
    (downloaded into it when missing and the network allows)."""
    weights = _torchvision_weights(arch, name)
    target = cache_file(weights.url)
    try:
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except OSError as exc:  # no network, a proxy, a full disk: the file can be put there by hand
        reason = getattr(exc, "reason", None) or exc
        raise ValueError(
            f"weights {weights}: {target.name} is not in torch hub's cache and cannot be "
            f"downloaded ({reason}); fetch {weights.url} where there is a network and put it "
            f"at {target}") from None


def grey_stem(state: dict[str, Tensor], expected: dict[str, Tensor]) -> dict[str, Tensor]:
    """RGB stem weights summed over their colours where the model takes one channel."""
    out = dict(state)
    for key, value in state.items():
        want = expected.get(key)
        if (want is not None and value.dim() == 4 and value.shape[1] == 3 and want.shape[1] == 1
                and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]):
            out[key] = value.sum(dim=1, keepdim=True)
    return out


def pretrained_backbone(arch: str, name: str, in_channels: int, width: int | None,
                        **kwargs: object) -> nn.Module:
    """The backbone of ``arch`` starting from the pretrained weights ``name``."""
    from horkd.models import build_backbone, load_backbone_state

    check_weights_name(arch, name)
    if arch.startswith("timm:"):
        try:
            return build_backbone(arch, in_channels, width, pretrained=True, **kwargs)
        except ImportError:
            raise
        except Exception as exc:  # timm and the hub raise many kinds for a missing network
            raise ValueError(
                f"timm could not load the pretrained weights of {arch[len('timm:'):]} ({exc}); "
                "with no network, fetch them where there is one (timm keeps them in the "
                "Hugging Face cache, HF_HOME) or give teacher.weights a weights file") from None
    backbone = build_backbone(arch, in_channels, width, **kwargs)
    state = torchvision_state(arch, name)
    target = backbone.net if isinstance(getattr(backbone, "net", None), nn.Module) else backbone
    if in_channels == 1:
        state = grey_stem(state, target.state_dict())
    load_backbone_state(backbone, state, f"torchvision's {name} for {arch}")
    return backbone
