"""``horkd eval``: a checkpoint's headline metric at several input sizes, on its own test data."""

from __future__ import annotations

from pathlib import Path

from horkd.checkpoint import CheckpointError, build_from_checkpoint
from horkd.config import ExperimentConfig


def evaluate_checkpoint(
    path: str | Path,
    sizes: list[int] | None = None,
    data_root: str | None = None,
    upsample: bool | None = None,
) -> list[str]:
    """Lines of a small table: size and the task's metric. Sizes >= HR size mean HR images.

    The test data is rebuilt from the config stored in the checkpoint (``data_root`` overrides
    where it lives) into a run context (no run directory is touched); images are degraded
    exactly as the run's resolution curve does.
    """
    from horkd.experiment import build_context
    from horkd.experiment.evaluation import sized_input
    from horkd.inference.model_file import resolve_model

    model_file = resolve_model(path)
    if model_file.onnx:
        raise ValueError(f"{path}: horkd eval scores a checkpoint; name the one it was exported from")
    path, meta = model_file.path, model_file.meta
    if "config" not in meta or "input" not in meta:
        raise CheckpointError(f"{path}: metadata lacks the training config; cannot find its data")
    cfg = ExperimentConfig.model_validate(meta["config"])
    if data_root:
        cfg.data.root = data_root
    model_input = meta["input"]
    if upsample is None and model_input.get("view") == "lr":
        # as the network learnt: the LR oracle and an LR assistant take LR re-upsampled
        # whatever the run's students took
        upsample = bool(model_input.get("upsampled"))
    if upsample is not None:
        cfg.degrade.student_input = "upsampled" if upsample else "native"
    hr_size = int(model_input["hr_size"])
    cfg.data.hr_size = cfg.data.hr_size or hr_size  # the side it learnt at, not the folder's now
    # default: HR and every size the model was trained at (one, or a range)
    trained = model_input.get("lr_sizes") or [model_input.get("lr_size")]
    sizes = sizes or sorted({hr_size, *(int(s) for s in trained if s)}, reverse=True)
    for size in sizes:
        if not 0 < size <= hr_size:
            raise ValueError(f"--sizes: {size} px is outside 1-{hr_size} (the HR side this "
                             "model's data has; a curve point degrades the HR image to it)")
    ctx = build_context(cfg, int(meta.get("seed", 0)))
    model = build_from_checkpoint(path).to(ctx.device)
    takes_hr = model_input.get("view") == "hr"
    metric = {"classification": "top1", "retrieval": "R@1 LR->HR"}.get(cfg.task, "score")
    lines = [
        f"{meta['model']['arch']} ({meta.get('method', '?')}) on {cfg.data.dataset} test, "
        f"task {cfg.task}:",
        f"{'size':>6} {metric:>12}",
    ]
    for size in sizes:
        score = ctx.task.score_at(ctx, model, sized_input(ctx, takes_hr, size))
        lines.append(f"{size:>6} {score:>12.2f}")
    return lines
