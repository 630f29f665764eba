"""``horkd eval``: a checkpoint's accuracy at several input sizes, on its own dataset's test split."""

from __future__ import annotations

from pathlib import Path

import torch

from horkd.checkpoint import CheckpointError, build_from_checkpoint, load_meta
from horkd.config import ExperimentConfig
from horkd.evaluate import evaluate_classifier, identity, lr_input_fn
from horkd.pipeline import EVAL_BATCH, degrade_spec, load_splits, resolve_device


def evaluate_checkpoint(
    path: str | Path,
    sizes: list[int] | None = None,
    data_root: str | None = None,
    upsample: bool | None = None,
) -> list[str]:
    """Lines of a small table: size, top-1, top-5. Sizes >= HR size mean the HR images."""
    from horkd.data import make_loader

    meta = load_meta(path)
    if "config" not in meta or "input" not in meta:
        raise CheckpointError(f"{path}: metadata lacks the training config; cannot find its data")
    cfg = ExperimentConfig.model_validate(meta["config"])
    if data_root:
        cfg.data.root = data_root
    model_input = meta["input"]
    hr_size = int(model_input["hr_size"])
    if upsample is None:
        upsample = bool(model_input.get("upsampled", False))
    if sizes is None:
        sizes = [hr_size] + ([model_input["lr_size"]] if model_input.get("lr_size") else [])
    for size in sizes:
        if size <= 0:
            raise ValueError(f"--sizes must be positive, got {size}")
    device = resolve_device(cfg.device)
    model = build_from_checkpoint(path).to(device)
    splits = load_splits(cfg, int(meta.get("seed", 0)))
    lines = [f"{meta['model']['arch']} ({meta.get('method', '?')}) on {cfg.data.dataset} test:"]
    lines.append(f"{'size':>6} {'top1':>7} {'top5':>7}")
    for size in sizes:
        if size >= hr_size:
            to_input = identity
        else:
            spec = degrade_spec(cfg.degrade, size, upsample)
            to_input = lr_input_fn(hr_size, spec, device)
        batches = make_loader(splits.test, batch_size=EVAL_BATCH, shuffle=False, seed=0)
        with torch.no_grad():
            acc = evaluate_classifier(model, batches, device, to_input)
        lines.append(f"{size:>6} {acc['top1']:>7.2f} {acc['top5']:>7.2f}")
    return lines
