"""Backbone registry: a name maps to a factory ``(in_channels, width, **kw) -> backbone``.

A backbone maps ``[B, C, H, W]`` to pooled features ``[B, F]`` and says ``out_features = F``
(and, when it knows it, ``in_channels``). Unknown keyword arguments raise ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from horkd.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("model")


def features_width(backbone: nn.Module) -> int:
    """The head is sized from this, so a backbone that forgets it must fail at build time."""
    width = getattr(backbone, "out_features", None)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise TypeError(f"{type(backbone).__name__} must set a positive int 'out_features'")
    return width
