"""torchvision backbones, built without weights (never downloads); load local weights by path.

torchvision is imported when one is built, not when the names are registered: importing it
costs seconds (its model zoo pulls in torch's compiler), which a command that only validates a
config or runs a small student (``horkd predict``) should not pay.
"""

from __future__ import annotations

from torch import Tensor, nn

from horkd.models.registry import BACKBONES


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier whose last Linear is identity, so it returns pooled features.

    The network stays under ``.net`` with torchvision's own key names, so users' torchvision
    state dicts load into it unchanged.
    """

    def __init__(self, net: nn.Module, in_channels: int, out_features: int) -> None:
        super().__init__()
        self.net = net
        self.in_channels = in_channels
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def middle_stage(self) -> nn.Module:
        """``layer2`` of the resnets and ``stage3`` of shufflenet (FitNet's middle hint); the
        middle block of ``features`` for the networks built as one sequence (mobilenets)."""
        for name in ("layer2", "stage3"):  # resnets; shufflenet (stages 2, 3, 4)
            if isinstance(getattr(self.net, name, None), nn.Module):
                return getattr(self.net, name)
        features = getattr(self.net, "features", None)
        if isinstance(features, nn.Sequential) and len(features) > 1:
            return features[len(features) // 2]
        raise ValueError(f"{type(self.net).__name__} has no middle stage horkd knows")


def _replace_stem(net: nn.Module, in_channels: int) -> None:
    """Greyscale data needs a stem conv taking ``in_channels``; everything else keeps its shape."""
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
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            parent_name, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent_name), attr, new)
            return
    raise RuntimeError(f"no 3-channel stem conv found in {type(net).__name__}")


def _strip_head(net: nn.Module) -> int:
    """Replace the final Linear by identity; return the width of what comes out instead."""
    if isinstance(getattr(net, "fc", None), nn.Linear):  # resnets, shufflenet
        width = net.fc.in_features
        net.fc = nn.Identity()
        return width
    classifier = net.classifier
    if not isinstance(classifier, nn.Sequential) or not isinstance(classifier[-1], nn.Linear):
        raise RuntimeError(f"unexpected classifier layout in {type(net).__name__}")
    # mobilenet_v2 (Dropout, Linear) and v3 (Linear, Hardswish, Dropout, Linear): the pre-logit
    # layers of v3 are part of the features, as torchvision trained them.
    width = classifier[-1].in_features
    classifier[-1] = nn.Identity()
    return width


def _register(name: str) -> None:
    @BACKBONES.register(f"tv_{name}")
    def factory(
        in_channels: int = 3, width: int | None = None, **kwargs: object
    ) -> TorchvisionBackbone:
        if width is not None:
            raise TypeError(f"tv_{name} has a fixed width; leave 'width' unset (on the command "
                            "line: teacher.width=null, or the role's own)")
        import torchvision.models as tvm

        net = getattr(tvm, name)(weights=None, **kwargs)  # torchvision rejects unknown kwargs
        _replace_stem(net, in_channels)
        return TorchvisionBackbone(net, in_channels, _strip_head(net))

    factory.__doc__ = f"torchvision {name}, no weights (pass a local file as model.weights)."


for _name in ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
              "mobilenet_v3_large", "shufflenet_v2_x1_0"):
    _register(_name)
