"""Networks that map an image to ``ModelOutput(embedding, logits)``, built by name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from horkd.models import cifar_resnet, small_cnn, torchvision_models  # noqa: F401  (register)
from horkd.models.head import EmbeddingClassifier, ModelOutput
from horkd.models.registry import BACKBONES
from horkd.models.timm_models import PREFIX as TIMM_PREFIX
from horkd.models.timm_models import build_timm

CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "net.fc.", "net.classifier.", "net.head.")


def build_backbone(arch: str, in_channels: int = 3, width: int | None = None, **kwargs) -> nn.Module:
    if arch.startswith(TIMM_PREFIX):
        return build_timm(arch[len(TIMM_PREFIX):], in_channels, width, **kwargs)
    return BACKBONES.get(arch)(in_channels=in_channels, width=width, **kwargs)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load users' torchvision/timm weights (classifier keys dropped); mismatches are explained."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    inner = backbone.net if hasattr(backbone, "net") else backbone
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    missing, unexpected = inner.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(CLASSIFIER_PREFIXES)]
    if missing or unexpected:
        raise ValueError(
            f"weights in {path} do not fit this backbone: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    embed_dim: int | None = 128,
    width: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    weights_path: str | Path | None = None,
    **kwargs,
) -> EmbeddingClassifier:
    backbone = build_backbone(arch, in_channels, width, **kwargs)
    if weights_path is not None:
        load_backbone_weights(backbone, weights_path)
    model = EmbeddingClassifier(backbone, num_classes, embed_dim, mean, std)
    model.in_channels = in_channels
    return model


def list_models() -> list[str]:
    return BACKBONES.names()


__all__ = [
    "BACKBONES",
    "EmbeddingClassifier",
    "ModelOutput",
    "build_backbone",
    "build_model",
    "list_models",
    "load_backbone_weights",
]
