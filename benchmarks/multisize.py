"""Training across LR sizes against training at one, side by side in one run.

The step timed is a student's distillation step as ``horkd run`` makes it: the batch maker
(augmentation, then the degradation, here to one size drawn per batch), the student (resnet8,
width 8) forward and backward through the hybrid loss against a cached teacher, the optimiser.
Both set-ups run the same number of steps in alternating rounds after a warm-up; the ratio is the
median of per-round ratios (across sizes over one size). Native input: a 21-px batch costs the
student about 9x a 7-px one, so the mean cost depends on the sizes drawn; with ``--upsampled``
every batch is re-upsampled to 28 px and the size changes nothing; with ``--work-size W`` the
student resizes every batch to W px inside the network (``degrade.work_size``), so each step
costs about what a W-px step does (the default, ``auto``, is the trained size nearest half the
HR side: 14 px here; ``--work-size none`` feeds every size at its own). The across-sizes
student keeps its BatchNorm statistics per size and recomputes them once per epoch, as a run
does by default (``--shared-statistics``: one set); that recomputation is timed too and spread
over an epoch of ``--epoch-steps`` steps.

    python benchmarks/multisize.py                      # sizes 5,7,10,14,21 (at 14 px) vs 7
    python benchmarks/multisize.py --work-size none     # every size at its own side
    python benchmarks/multisize.py --upsampled
    python benchmarks/multisize.py --single 14          # against the 14-px specialist
    python benchmarks/multisize.py --work-size 10       # every size computed at 10 px
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from horkd.config import config_from_dict
from horkd.data.vision import DEBIAN_FASHION_MNIST
from horkd.experiment import build_context
from horkd.experiment.batches import batch_maker, train_batches
from horkd.experiment.stages import statistics_refresher
from horkd.losses.task import build_task_loss
from horkd.methods import METHODS, MethodContext
from horkd.models import build_model
from horkd.optim import build_optimizer
from horkd.reference_cache import ReferenceCache


def setup(sizes: list[int] | None, upsampled: bool, single: int = 7,
          statistics_per_size: bool = True, work_size: int | str | None = "auto"):
    degrade = {"lr_sizes": sizes, "work_size": work_size} if sizes else {"lr_size": single}
    degrade["student_input"] = "upsampled" if upsampled else "native"
    degrade["size_statistics"] = "recomputed" if statistics_per_size else "shared"
    data = {"dataset": "fashion_mnist", "hr_size": 28, "train_subset": 6000,
            "augment": {"hflip": True}}
    if not DEBIAN_FASHION_MNIST.is_dir():
        data = {"dataset": "digits", "hr_size": 28, "augment": {"hflip": True}}
    cfg = config_from_dict({"device": "cpu", "data": data, "degrade": degrade,
                            "distill": {"cache_reference": True}})
    ctx = build_context(cfg, 0)
    torch.manual_seed(0)
    teacher = build_model("resnet20", ctx.info.num_classes, ctx.in_channels, 128, 16).eval()
    student = build_model("resnet8", ctx.info.num_classes, ctx.in_channels, 64, 8,
                          norm_sizes=cfg.degrade.norm_sizes,  # as a run builds it
                          work_size=ctx.work_size)
    method_ctx = MethodContext(
        cfg.distill, lambda role: student,
        lambda n: build_task_loss("cross_entropy", ctx.info.num_classes, n.embed_dim),
        teacher=teacher,
    )
    method = METHODS.get("horkd_no_assistant").build(method_ctx)
    method.reference_cache = ReferenceCache.build(teacher, ctx.splits.train, ctx.device,
                                                  views=ctx.cache_views())
    optimizer = build_optimizer(method.trainable_parameters(), cfg.train.student)
    batches = train_batches(ctx, cfg.train.student)
    refresh = statistics_refresher(ctx, "lr", None, cfg.train.student, len(batches))
    return ctx, method, optimizer, batch_maker(ctx, "students/bench"), batches, refresh


def run_steps(parts, steps: int) -> float:
    ctx, method, optimizer, make, loader, _ = parts
    method.train()
    batches = iter(loader)
    started = time.perf_counter()
    for _ in range(steps):
        try:
            x, y, index = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y, index = next(batches)
        _, terms = method(make(x, y, index))
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _work_size(text: str) -> int | str | None:
    word = text.lower()
    if word == "none":
        return None
    return "auto" if word == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5,7,10,14,21")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--upsampled", action="store_true")
    parser.add_argument("--single", type=int, default=7, help="the single-size run's LR size")
    parser.add_argument("--shared-statistics", action="store_true",
                        help="one set of BatchNorm statistics for every size (default: per size)")
    parser.add_argument("--epoch-steps", type=int, default=211,
                        help="steps per epoch to spread the statistics' recomputation over "
                        "(default: the study's 27,000 training images in batches of 128)")
    parser.add_argument("--work-size", type=_work_size, default="auto",
                        help="the side the across-sizes student computes every batch at: a "
                        "number, auto (as a run's default) or none (each at its own side)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    single = setup(None, args.upsampled, args.single)
    across = setup(sizes, args.upsampled, statistics_per_size=not args.shared_statistics,
                   work_size=args.work_size)
    run_steps(single, 5)
    run_steps(across, 5)
    ratios, times = [], {"single": [], "across": []}
    for _ in range(args.rounds):
        t_single, t_across = run_steps(single, args.steps), run_steps(across, args.steps)
        times["single"].append(t_single / args.steps * 1000)
        times["across"].append(t_across / args.steps * 1000)
        ratios.append(t_across / t_single)
    mode = "upsampled to 28 px" if args.upsampled else "native"
    if not args.upsampled:
        mode += ", statistics " + ("shared" if args.shared_statistics else "per size")
    if across[0].work_size is not None:
        mode += f", computed at {across[0].work_size} px"
    refresh = across[-1]
    if refresh is not None:  # once per epoch: timed in the same rounds' conditions
        refresh_ms = statistics.median(
            _timed(lambda: refresh(across[1].student)) for _ in range(3)) * 1000
        step_single, step_across = (statistics.median(times[k]) for k in ("single", "across"))
        epoch = (args.epoch_steps * step_across + refresh_ms) / (args.epoch_steps * step_single)
        print(f"per-size statistics recomputed once per epoch: {refresh_ms:.0f} ms "
              f"({refresh_ms / step_across:.1f} steps); an epoch of {args.epoch_steps} steps "
              f"across sizes costs {epoch:.2f}x one at one size (target <= 1.20)")
    print(f"student step ({mode}, threads {torch.get_num_threads()}): one size ({args.single} px) "
          f"{statistics.median(times['single']):.1f} ms, across {sizes} "
          f"{statistics.median(times['across']):.1f} ms: ratio "
          f"{statistics.median(ratios):.2f} (median of {args.rounds} rounds; target <= 1.20)")


if __name__ == "__main__":
    main()
