"""LR image classification: top-1 / top-5 at the student's LR size (and HR for HR networks)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from horkd import distributed
from horkd.evaluate import accuracy, classifier_hits
from horkd.tasks.base import TASKS, InputFn, Scoring, Task, TaskContext, eval_batches


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    score_key = "top1"

    def score_split(
        self, model: nn.Module, dataset: Any, device: torch.device, to_input: InputFn
    ) -> dict[str, float]:
        """Under torchrun each process scores its share and the counts are summed."""
        batches, split = eval_batches(dataset)
        hits = classifier_hits(model, batches, device, to_input)
        return accuracy(distributed.sum_over_ranks(hits) if split else hits)

    def score_at(self, ctx: TaskContext, model: nn.Module, to_input: InputFn) -> float:
        return self.score_split(model, ctx.splits.test, ctx.device, to_input)["top1"]

    def test(self, ctx: TaskContext, model: nn.Module, scoring: Scoring) -> dict[str, float]:
        test, device = ctx.splits.test, ctx.device
        metrics: dict[str, float] = {}
        if scoring.hr:
            metrics["hr_top1"] = self.score_split(model, test, device, ctx.inputs("hr"))["top1"]
        if scoring.lr:
            upsample = scoring.upsample
            lr = self.score_split(model, test, device, ctx.inputs("lr", upsample=upsample))
            # with five classes or fewer top-5 is 100 by construction: not a measurement
            top5 = {"lr_top5": lr["top5"]} if ctx.splits.info.num_classes > 5 else {}
            metrics = {"lr_top1": lr["top1"], **top5, **metrics}
            for size in ctx.cfg.degrade.eval_sizes or []:
                if size < ctx.hr_size:
                    to_input = ctx.inputs("lr", size=size, upsample=upsample)
                    metrics[f"top1@{size}"] = self.score_at(ctx, model, to_input)
        return metrics
