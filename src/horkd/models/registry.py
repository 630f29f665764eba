"""Backbone registry: a name maps to a factory ``(in_channels, width, **kw) -> backbone``.

A backbone maps ``[B, C, H, W]`` to pooled features ``[B, F]`` and says ``out_features = F``
(and, when it knows it, ``in_channels``). Unknown keyword arguments raise ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from horkd.registry import Registry

#: Backbone factories by name (``resnet20``, ``cnn_small``, ``tv_resnet18``, ...). Register one
#: with ``@BACKBONES.register("name")`` on a function ``(in_channels=3, width=None, **kw)``
#: that returns the backbone; :func:`horkd.models.build_model` then builds it by that name.
BACKBONES: Registry[Callable[..., nn.Module]] = Registry("model")


def features_width(backbone: nn.Module) -> int:
    """The head is sized from this, so a backbone that forgets it must fail at build time.

    Args:
        backbone: A backbone a factory built.

    Returns:
        Its ``out_features``: the width F of the pooled features it returns.

    Raises:
        TypeError: ``out_features`` is missing, not an int (a bool does not count), or below 1.
    """
    width = getattr(backbone, "out_features", None)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise TypeError(f"{type(backbone).__name__} must set a positive int 'out_features'")
    return width
