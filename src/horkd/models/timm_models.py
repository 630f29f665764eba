"""timm backbones by prefix (``timm:<name>``), only when timm is installed."""

from __future__ import annotations

import importlib

from torch import nn

PREFIX = "timm:"


class TimmBackbone(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.out_features = int(net.num_features)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.net(x)


def build_timm(name: str, in_channels: int = 3, width: int | None = None, **kwargs) -> TimmBackbone:
    """``num_classes=0`` makes timm return pooled features; ``pretrained=False``: no downloads."""
    if width is not None:
        raise TypeError("timm models take their width from the model name; leave 'width' unset")
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise ImportError(
            f"model '{PREFIX}{name}' needs timm: pip install timm (or pip install 'horkd[timm]')"
        ) from None
    net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
    return TimmBackbone(net)
