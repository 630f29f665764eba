"""torchvision backbones, built without weights (never downloads); load local weights by path."""

from __future__ import annotations

from collections.abc import Callable

import torchvision.models as tvm
from torch import nn

from horkd.models.registry import BACKBONES


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier with its last layer replaced by identity: pooled features out."""

    def __init__(self, net: nn.Module, out_features: int) -> None:
        super().__init__()
        self.net = net
        self.out_features = out_features

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.net(x)


def _first_conv_in(net: nn.Module, in_channels: int) -> None:
    """Swap the stem conv for one taking ``in_channels`` (greyscale data) with the same shape."""
    if in_channels == 3:
        return
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                bias=module.bias is not None,
            )
            parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            setattr(parent, name.rsplit(".", 1)[-1], new)
            return


def _strip_head(net: nn.Module) -> int:
    """Replace the classifier by identity; return the pooled feature width."""
    if isinstance(getattr(net, "fc", None), nn.Linear):
        width = net.fc.in_features
        net.fc = nn.Identity()
        return width
    classifier = net.classifier
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    if len(linears) == 1:  # mobilenet_v2: Dropout + Linear
        width = linears[0].in_features
        net.classifier = nn.Identity()
        return width
    # mobilenet_v3: Linear -> Hardswish -> Dropout -> Linear; keep all but the last Linear.
    width = linears[-1].in_features
    classifier[-1] = nn.Identity()
    return width


def _register(name: str, constructor: Callable[..., nn.Module]) -> None:
    @BACKBONES.register(f"tv_{name}")
    def factory(in_channels: int = 3, width: int | None = None) -> TorchvisionBackbone:
        if width is not None:
            raise TypeError(f"tv_{name} has a fixed width; leave 'width' unset")
        net = constructor(weights=None)
        _first_conv_in(net, in_channels)
        return TorchvisionBackbone(net, _strip_head(net))

    factory.__doc__ = f"torchvision {name}, no weights (pass a local file as model.weights)."


for _name, _ctor in {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "mobilenet_v2": tvm.mobilenet_v2,
    "mobilenet_v3_small": tvm.mobilenet_v3_small,
    "mobilenet_v3_large": tvm.mobilenet_v3_large,
    "shufflenet_v2_x1_0": tvm.shufflenet_v2_x1_0,
}.items():
    _register(_name, _ctor)
