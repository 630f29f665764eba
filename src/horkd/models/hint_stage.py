"""Where FitNet reads a network's middle: its guided layer (student) or its hint (teacher).

Each backbone names its own middle stage (``middle_stage()``); a backbone without one cannot be
guided by a hint, and says so by name rather than guessing from the module tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def middle_stage(network: nn.Module) -> nn.Module:
    """The module whose output is ``network``'s middle feature map.

    Raises:
        ValueError: the backbone defines no ``middle_stage()``.
    """
    backbone = getattr(network, "backbone", network)
    locate = getattr(backbone, "middle_stage", None)
    if not callable(locate):
        raise ValueError(
            f"fitnet needs a middle stage of {type(backbone).__name__}, which names none: give "
            "its backbone a middle_stage() method (the CIFAR resnets, the small CNNs, torchvision "
            "and timm backbones have one)"
        )
    return locate()


def middle_stage_name(network: nn.Module) -> str:
    """The dotted name of :func:`middle_stage` inside ``network``: owners keep the name, not the
    module, so the stage is not registered (and saved) twice."""
    stage = middle_stage(network)
    for name, module in network.named_modules():
        if module is stage:
            return name
    raise ValueError(f"the middle stage of {type(network).__name__} is not one of its modules")


def stage_channels(stage: nn.Module) -> int:
    """Channels of a stage's output: its last BatchNorm's, else its last convolution's."""
    norms = [m.num_features for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    if norms:
        return norms[-1]
    convs = [m.out_channels for m in stage.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"cannot tell the channels of {type(stage).__name__}")
    return convs[-1]


@contextmanager
def capturing(stage: nn.Module) -> Iterator[list[Tensor]]:
    """The outputs ``stage`` gives inside the block, in a list. The hook lives for the block
    only, so the network saved, exported or scored afterwards carries none."""
    captured: list[Tensor] = []
    hook: Callable = lambda _module, _inputs, output: captured.append(output)  # noqa: E731
    handle = stage.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def only_output(captured: list[Tensor]) -> Tensor:
    """The one output a stage gave in one forward (a stage run twice is a layout horkd does
    not know how to read)."""
    if len(captured) != 1:
        raise RuntimeError(f"the middle stage ran {len(captured)} times in one forward")
    return captured[0]


@torch.no_grad()
def stage_grid(network: nn.Module, in_channels: int, side: int) -> int:
    """The side of the middle feature map for square inputs of ``side`` pixels (a dry run)."""
    was_training = network.training
    network.eval()
    try:
        param = next(network.parameters())
        x = torch.zeros(1, in_channels, side, side, device=param.device, dtype=param.dtype)
        with capturing(middle_stage(network)) as maps:
            network(x)
    finally:
        network.train(was_training)
    return int(only_output(maps).shape[-1])
