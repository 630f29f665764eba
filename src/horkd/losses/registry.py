"""Loss registry: the names a YAML config uses to pick a loss."""

from __future__ import annotations

from typing import Any

from torch import nn

from horkd.registry import Registry

LOSSES: Registry = Registry("loss")
register_loss = LOSSES.register


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    return LOSSES.get(name)(**kwargs)
