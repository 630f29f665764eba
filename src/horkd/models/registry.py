"""Backbone registry: a name maps to a factory ``(in_channels, width, **kw) -> backbone``.

A backbone maps ``[B, C, H, W]`` to pooled features ``[B, F]`` and says ``out_features = F``.
"""

from __future__ import annotations

from torch import nn

from horkd.registry import Registry

BACKBONES: Registry = Registry("model")


def features_width(backbone: nn.Module) -> int:
    width = getattr(backbone, "out_features", None)
    if not isinstance(width, int):
        raise TypeError(f"{type(backbone).__name__} must set an int attribute 'out_features'")
    return width
