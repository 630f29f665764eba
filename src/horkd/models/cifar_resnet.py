"""CIFAR-style ResNets (He et al. 2016, Sec. 4.2): 3x3 stem at stride 1, three stages.

Depth 6n+2 with basic blocks; stage widths w, 2w, 4w. Padding keeps even 7x7 inputs alive
(7 -> 7 -> 4 -> 2), which is what a natively-LR student needs.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from horkd.models.registry import BACKBONES


class BasicBlock(nn.Module):
    """Two 3x3 convs plus a shortcut; a 1x1 projection only where shape changes (option B)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stride-1 stem keeps LR inputs' few pixels; only two stride-2 stages follow."""

    def __init__(self, depth: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.in_channels = in_channels
        self.out_features = in_planes
        self.blocks_per_stage = blocks
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.layers(self.stem(x))).flatten(1)

    def middle_stage(self) -> nn.Module:
        """The last block of the second of three stages: FitNet's hint and guided layer."""
        return self.layers[2 * self.blocks_per_stage - 1]


def _register(depth: int) -> None:
    @BACKBONES.register(f"resnet{depth}")
    def factory(in_channels: int = 3, width: int | None = None) -> CifarResNet:
        return CifarResNet(depth, in_channels, 16 if width is None else width)

    factory.__doc__ = f"CIFAR-style ResNet-{depth} (width = first-stage channels, default 16)."


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(_depth)
