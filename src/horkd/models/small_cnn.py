"""Small plain CNNs for LR inputs: two stride-2 steps at most, so 7x7 still works (7 -> 4 -> 2)."""

from __future__ import annotations

from torch import Tensor, nn

from horkd.models.registry import BACKBONES


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Plain conv-BN-ReLU stack: the cheapest student that still sees a 7x7 image."""

    def __init__(self, in_channels: int, width: int, blocks_per_stage: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(in_channels, width)]
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks_per_stage):
                layers.append(_conv(cin, cout, stride=2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.in_channels = in_channels
        self.out_features = cin
        self.blocks_per_stage = blocks_per_stage

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)

    def middle_stage(self) -> nn.Module:
        """The last conv of the second of three stages (after the stem): FitNet's hint layer."""
        return self.features[2 * self.blocks_per_stage]


@BACKBONES.register("cnn_tiny")
def cnn_tiny(in_channels: int = 3, width: int | None = None) -> SmallCNN:
    """Four 3x3 convs (width w, w, 2w, 4w; default w=16)."""
    return SmallCNN(in_channels, 16 if width is None else width, blocks_per_stage=1)


@BACKBONES.register("cnn_small")
def cnn_small(in_channels: int = 3, width: int | None = None) -> SmallCNN:
    """Seven 3x3 convs (two per stage; default w=16).

    w=16 keeps the default student at ~0.3x resnet20's FLOPs; w=32 would cost more than resnet20.
    """
    return SmallCNN(in_channels, 16 if width is None else width, blocks_per_stage=2)
