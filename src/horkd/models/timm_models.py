"""timm backbones by prefix (``timm:<name>``), so any timm name works without registering each."""

from __future__ import annotations

import importlib

from torch import Tensor, nn

PREFIX = "timm:"


class TimmBackbone(nn.Module):
    """Keeps timm's key names under ``.net`` so users' timm state dicts load unchanged."""

    def __init__(self, net: nn.Module, in_channels: int) -> None:
        super().__init__()
        self.net = net
        self.in_channels = in_channels
        self.out_features = int(net.num_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def middle_stage(self) -> nn.Module:
        """The middle entry of timm's own ``feature_info`` (the stages it exposes as features)."""
        info = getattr(self.net, "feature_info", None)
        names = [entry["module"] for entry in info] if info else []
        if len(names) < 2:
            raise ValueError(f"timm model {type(self.net).__name__} lists no feature stages")
        return self.net.get_submodule(names[len(names) // 2])


def build_timm(
    name: str, in_channels: int = 3, width: int | None = None, pretrained: bool = False,
    **kwargs: object
) -> TimmBackbone:
    """``num_classes=0`` makes timm return pooled features; ``pretrained``: timm's own weights
    (downloaded by timm; off by default, so nothing is fetched unasked)."""
    if width is not None:
        raise TypeError("timm models take their width from the model name; leave 'width' unset")
    if not name:
        raise ValueError(f"give a timm model name after the prefix, e.g. '{PREFIX}resnet18'")
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise ImportError(
            f"model '{PREFIX}{name}' needs timm: pip install timm (or pip install 'horkd[timm]')"
        ) from None
    net = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_channels,
                            **kwargs)
    return TimmBackbone(net, in_channels)
