"""How much of an across-sizes student's loss is its BatchNorm statistics, side by side in one run.

A native student trained across LR sizes (``degrade.lr_sizes``) with ``degrade.size_statistics:
shared`` keeps one set of BatchNorm running statistics for batches of 5 and of 21 pixels, whose
features differ in scale and in how much of them is zero padding; the running average is then a
mix weighted towards the last batches' sizes. This reads a finished student from its run
directory and scores it on the validation split at every trained size three ways: with the
statistics as trained, recomputed on training images at each size separately (an upper bound
for per-size statistics), and recomputed once over all sizes. Weights are never changed; the
test split is not touched.

For a student that keeps its statistics per size (``degrade.size_statistics: per_size``) every
batch updates its own size's set, so both recomputed rows are per size: they show how far the
running averages kept during training lag behind a fresh estimate. On a short run that lag was
large enough (41.8% against 92.9% on digits, 3 epochs) that ``recomputed``, the default now,
does this at every epoch end; for such a student the rows agree.

    python benchmarks/sizes_batchnorm.py RUN_DIR METHOD [--seed N] [--batches 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from horkd.config import load_config
from horkd.experiment import open_seed
from horkd.models.size_norm import recompute_size_statistics


def recompute_statistics(
    model: nn.Module, loader: DataLoader, to_inputs: list, batches: int
) -> None:
    """The statistics as a run with ``size_statistics: recomputed`` estimates them, over
    ``batches`` training batches, each given at every size in ``to_inputs``."""
    def images():
        return (x for _, (x, _y) in zip(range(batches), loader, strict=False))

    recompute_size_statistics(model, images, to_inputs)
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("method", help="the student's method (its stage name)")
    parser.add_argument("--seed", type=int, default=None, help="default: the run's first seed")
    parser.add_argument("--batches", type=int, default=20, help="batches of 256 per estimate")
    args = parser.parse_args()
    cfg = load_config(args.run_dir / "config.yaml")
    if not cfg.degrade.lr_sizes:
        raise SystemExit(f"{args.run_dir} trains at one LR size: nothing to compare")
    seed = cfg.seeds[0] if args.seed is None else args.seed
    ctx, networks = open_seed(cfg, seed, progress=False)
    model = networks.student(args.method).model.eval()
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    sizes = list(ctx.lr_sizes)
    inputs = {s: ctx.inputs("lr", size=s) for s in sizes}
    loader = DataLoader(ctx.splits.train, batch_size=256, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    key = ctx.task.score_key

    def scores() -> list[float]:
        return [ctx.task.validate(ctx, model, inputs[s])[key] for s in sizes]

    rows = {"as trained": scores()}
    per_size = []
    for s in sizes:
        model.load_state_dict(trained)
        recompute_statistics(model, loader, [inputs[s]], args.batches)
        per_size.append(ctx.task.validate(ctx, model, inputs[s])[key])
    rows["recomputed per size"] = per_size
    model.load_state_dict(trained)
    recompute_statistics(model, loader, [inputs[s] for s in sizes], args.batches)
    rows["recomputed over all"] = scores()
    print(f"{args.run_dir} {args.method} seed {seed}: validation {key} (%)")
    print(f"{'statistics':<22}" + "".join(f"{s:>7}px" for s in sizes) + "    mean   worst")
    for name, values in rows.items():
        print(f"{name:<22}" + "".join(f"{v:9.2f}" for v in values)
              + f"  {sum(values) / len(values):6.2f}  {min(values):6.2f}")


if __name__ == "__main__":
    main()
