"""A stage's optimiser and its per-step learning-rate schedule, from its StageConfig."""

from __future__ import annotations

import math

import torch

from horkd.config import StageConfig


def build_optimizer(params: list[torch.nn.Parameter], cfg: StageConfig) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=opt.lr,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov and opt.momentum > 0,
        )
    optimizer_cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return optimizer_cls(params, lr=opt.lr, weight_decay=opt.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: StageConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step learning-rate factor: linear warm-up, then cosine, step or constant."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = cfg.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if cfg.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if cfg.scheduler == "step":
            return 0.1 ** (int(progress >= 0.5) + int(progress >= 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
