"""LR image classification: top-1 / top-5 at the student's LR size (and HR for HR networks)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from horkd import distributed
from horkd.evaluate import accuracy, classifier_hits
from horkd.tasks.base import TASKS, InputFn, Task, eval_batches


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    score_key = "top1"

    def validate(
        self, model: nn.Module, dataset: Any, device: torch.device, to_input: InputFn
    ) -> dict[str, float]:
        """Under torchrun each process scores its share and the counts are summed."""
        batches, split = eval_batches(dataset)
        hits = classifier_hits(model, batches, device, to_input)
        return accuracy(distributed.sum_over_ranks(hits) if split else hits)

    def score_at(self, run: Any, model: nn.Module, to_input: InputFn) -> float:
        return self.validate(model, run.splits.test, run.device, to_input)["top1"]

    def test(self, run: Any, model: nn.Module, kind: str) -> dict[str, float]:
        test = run.splits.test
        metrics: dict[str, float] = {}
        if kind in ("hr", "teacher_lr"):
            metrics["hr_top1"] = self.validate(model, test, run.device, run.input_fn("hr"))["top1"]
        if kind in ("lr", "teacher_lr"):
            upsample = True if kind == "teacher_lr" else None
            lr = self.validate(model, test, run.device, run.input_fn("lr", upsample=upsample))
            metrics = {"lr_top1": lr["top1"], "lr_top5": lr["top5"], **metrics}
            for size in run.cfg.degrade.eval_sizes or []:
                if size < run.hr_size:
                    to_input = run.input_fn("lr", size=size, upsample=upsample)
                    metrics[f"top1@{size}"] = self.validate(model, test, run.device, to_input)[
                        "top1"
                    ]
        return metrics
