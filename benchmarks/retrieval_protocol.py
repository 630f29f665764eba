"""Why do retrieval seeds spread so far? The protocol measured, before seeds are spent on it.

The second study's retrieval regime (classes 0-4 train, 5-9 test, Proxy-Anchor, the learning rate
chosen for classification) gave test Recall@1 LR->HR differing by up to 18 points between seeds
of one method while validation (seen classes) barely moved. This script trains the LR-scratch
student (no teacher needed) with several seeds and learning rates and records, at every epoch,
the validation Recall@1 (seen classes: what picks the epoch) and the test Recall@1 LR->HR (unseen
classes), so the two candidate causes can be told apart:

- epoch selection: does the epoch picked on seen-class validation land on a good test epoch, or
  would the last epoch be steadier?
- the metric loss: do test scores swing from epoch to epoch (instability), more so at a high
  learning rate?

Test scores are recorded for this diagnosis only; nothing here chooses a setting of the study.

    python benchmarks/retrieval_protocol.py --seeds 0,1,2 --lrs 0.2,0.02 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from horkd.config import config_from_dict
from horkd.experiment import build_context
from horkd.experiment.batches import batch_maker, train_batches
from horkd.experiment.networks import Networks
from horkd.experiment.stages import StageRunner
from horkd.methods import METHODS, MethodContext
from horkd.tasks import Scoring
from horkd.trainer import Trainer


def run(seed: int, lr: float, epochs: int, subset: int, out: Path) -> list[dict]:
    cfg = config_from_dict({
        "device": "cpu", "task": "retrieval", "task_loss": {"name": "proxy_anchor"},
        "retrieval": {"train_classes": 5}, "seeds": [seed], "output_dir": str(out),
        "data": {"dataset": "fashion_mnist", "hr_size": 28, "train_subset": subset,
                 "split_seed": 0, "augment": {"hflip": True}},
        "degrade": {"lr_size": 7, "student_input": "upsampled"},
        "student": {"arch": "resnet8", "width": 8, "embed_dim": 64},
        "train": {"student": {"epochs": epochs, "optimizer": {"lr": lr}}},
    })
    ctx = build_context(cfg, seed)
    networks = Networks(ctx, StageRunner(ctx, out, progress=False))
    method_ctx = MethodContext(cfg.distill, networks.new_network, networks.new_criterion,
                               uses_logits=False)
    torch.manual_seed(seed)
    method = METHODS.get("scratch").build(method_ctx)
    val_input = ctx.inputs("lr")

    def validate(model: torch.nn.Module) -> dict[str, float]:
        """Seen-class validation (picks the epoch) and, for this diagnosis, the unseen test."""
        val = ctx.task.validate(ctx, model, val_input)["recall@1"]
        test = ctx.task.test(ctx, model, Scoring(lr=True))["R@1 LR->HR"]
        return {"recall@1": val, "test_R@1": test}

    trainer = Trainer(method, cfg.train.student, train_batches=train_batches(ctx, cfg.train.student),
                      make_batch=batch_maker(ctx, "students/scratch"), validate=validate,
                      score_key="recall@1", device=ctx.device, out_dir=out / "scratch", meta={},
                      progress=False)
    return trainer.fit().history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lrs", default="0.2,0.02")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--subset", type=int, default=30000)
    args = parser.parse_args()
    results = {}
    for lr in (float(x) for x in args.lrs.split(",")):
        for seed in (int(x) for x in args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                history = run(seed, lr, args.epochs, args.subset, Path(tmp))
            val = [row["val/recall@1"] for row in history]
            test = [row["val/test_R@1"] for row in history]
            best = max(range(len(val)), key=val.__getitem__)
            results[f"lr={lr} seed={seed}"] = {"val": val, "test": test, "picked": best + 1}
            print(f"lr {lr} seed {seed}: val R@1 by epoch {[round(v, 1) for v in val]}, test "
                  f"R@1 LR->HR {[round(t, 1) for t in test]}, picked epoch {best + 1}: "
                  f"test {test[best]:.1f} (last epoch {test[-1]:.1f})", flush=True)
        picked = [r["test"][r["picked"] - 1] for k, r in results.items() if k.startswith(f"lr={lr}")]
        last = [r["test"][-1] for k, r in results.items() if k.startswith(f"lr={lr}")]
        swings = [max(r["test"]) - min(r["test"][1:]) for k, r in results.items()
                  if k.startswith(f"lr={lr}")]
        print(f"lr {lr}: test at the picked epoch {statistics.fmean(picked):.1f} (spread "
              f"{max(picked) - min(picked):.1f}), at the last epoch {statistics.fmean(last):.1f} "
              f"(spread {max(last) - min(last):.1f}); largest epoch-to-epoch swing after epoch 1: "
              f"{max(swings):.1f}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
