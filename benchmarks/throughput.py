"""Training images per second: plain LR student vs HORKD with a live vs a cached reference.

The set-ups of one student step on the Fashion-MNIST pipeline's networks (teacher resnet20,
width 16, on HR 28x28; student resnet8, width 8, on native 7x7 LR; batch 128; flips as
augmentation), timed side by side in this process: every round runs each set-up for a few steps
back to back, and a set-up's ratio to plain training is the median over rounds of its time
divided by plain's time in the same round, so a machine that slows down or speeds up between
rounds does not bias it (the spread across rounds is printed beside it).

- plain:   the student on LR with cross-entropy only (what training from scratch costs);
- live:    HORKD, all orders; the frozen teacher runs on the HR batch every step;
- cached:  HORKD, all orders; the teacher's outputs for both flips of every training image were
           computed once before training (its one-off cost is printed in plain-step equivalents);
- cached+anchors: the same with the third order estimated on 16 random anchors per step
           (``distill.loss.angle_anchors: 16``) instead of all 128: the exact angle term is
           O(N^3), and beside a student this small it is a large part of the step on a CPU;
- cached, eager ops: "cached" with the relational terms computed by ATen operations instead of
           the fused CPU kernels (what runs without numba, and on a GPU).

The HORKD set-ups use the fused CPU kernels of ``horkd.losses.cpu_kernels`` when numba is
installed (the header line says whether they ran).

    python benchmarks/throughput.py            # 40 rounds of 6 steps per set-up
    python benchmarks/throughput.py --quick    # a smoke check
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from horkd.data import AugmentSpec, BatchLoader
from horkd.data.augment import FlipViews
from horkd.data.memory import TensorImageDataset
from horkd.degrade import Degrader, DegradeSpec
from horkd.experiment.batches import PairedBatchMaker
from horkd.losses import cpu_kernels
from horkd.losses.task import build_task_loss
from horkd.methods import DistillMethod, Method, SupervisedMethod
from horkd.models import build_model
from horkd.reference_cache import ReferenceCache


def training_images(n: int) -> tuple[TensorImageDataset, str]:
    """Fashion-MNIST where it is installed; otherwise random images of the same shape."""
    try:
        from horkd.data import build_splits

        splits = build_splits("fashion_mnist", val_fraction=0.0, train_subset=n)
        return splits.train, "Fashion-MNIST"  # type: ignore[return-value]
    except FileNotFoundError:
        images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
        return TensorImageDataset(images, torch.randint(0, 10, (n,))), "random 28x28 images"


def hybrid(student_dim: int, teacher_dim: int, angle_anchors: int | None = None):
    from horkd.losses import HybridOrderLoss

    return HybridOrderLoss(student_dim, teacher_dim, embedding_weight=1.0, logit_weight=1.0,
                           distance_weight=25.0, angle_weight=50.0, angle_anchors=angle_anchors)


def make_step(
    method: Method, make_batch: PairedBatchMaker, kernels: bool = True
) -> Callable[[tuple], None]:
    optimizer = torch.optim.SGD(
        [p for p in method.trainable_parameters()], lr=0.01, momentum=0.9
    )

    def step(item: tuple) -> None:
        x, y, index = item
        with cpu_kernels.use_kernels(kernels):
            _, terms = method(make_batch(x, y, index))
            optimizer.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, steps, batch = (2, 3, 64) if args.quick else (40, 6, 128)
    torch.manual_seed(0)
    data, source = training_images(batch * 40)
    loader = BatchLoader(data, batch, shuffle=True, seed=0, drop_last=True)
    batches = list(loader)

    teacher = build_model("resnet20", 10, 1, embed_dim=128, width=16).eval()
    degrader = Degrader(28, DegradeSpec(lr_size=7))
    augment = AugmentSpec(crop_padding=0, hflip=True)

    def student() -> torch.nn.Module:
        torch.manual_seed(1)
        return build_model("resnet8", 10, 1, embed_dim=64, width=8)

    def maker() -> PairedBatchMaker:
        return PairedBatchMaker(augment, degrader, torch.Generator().manual_seed(0))

    ce = build_task_loss("cross_entropy", num_classes=10, embed_dim=64)
    plain = SupervisedMethod(student(), ce, student_view="lr")
    live_student = student()
    live = DistillMethod(live_student, ce, teacher, hybrid(64, 128))
    cached_student = student()
    cached = DistillMethod(cached_student, ce, teacher, hybrid(64, 128))
    started = time.perf_counter()
    cached.reference_cache = ReferenceCache.build(teacher, data, torch.device("cpu"), views=FlipViews(True))
    cache_seconds = time.perf_counter() - started
    sampled = DistillMethod(student(), ce, teacher, hybrid(64, 128, angle_anchors=16))
    sampled.reference_cache = cached.reference_cache
    eager = DistillMethod(student(), ce, teacher, hybrid(64, 128))
    eager.reference_cache = cached.reference_cache
    for method in (plain, live, cached, sampled, eager):
        method.train()

    setups = {name: make_step(m, maker(), kernels) for name, m, kernels in
              (("plain", plain, True), ("live", live, True), ("cached", cached, True),
               ("cached+anchors", sampled, True), ("cached, eager ops", eager, False))}
    for step in setups.values():  # warm-up
        for item in batches[:2]:
            step(item)
    seconds: dict[str, list[float]] = {name: [] for name in setups}
    for r in range(rounds):
        for name, step in setups.items():
            chunk = batches[(r * steps) % len(batches):][:steps] or batches[:steps]
            start = time.perf_counter()
            for item in chunk:
                step(item)
            seconds[name].append((time.perf_counter() - start) / len(chunk))

    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratios = {
        name: sorted(t / p for t, p in zip(values, seconds["plain"], strict=True))
        for name, values in seconds.items()
    }
    kernels = "fused CPU kernels (numba)" if cpu_kernels.installed() else "eager ops (no numba)"
    print(f"data: {source}; batch {batch}; {rounds} rounds x {steps} steps per set-up; "
          f"torch threads {torch.get_num_threads()}; relational terms: {kernels}")
    print(f"{'set-up':17s} {'ms/step':>9s} {'images/s':>9s} {'x plain':>8s} {'(quartiles)':>13s}")
    for name, sec in median.items():
        r = ratios[name]
        quartiles = f"{r[len(r) // 4]:.2f}-{r[(3 * len(r)) // 4]:.2f}"
        print(f"{name:17s} {sec * 1e3:9.1f} {batch / sec:9.0f} {statistics.median(r):8.2f} "
              f"{quartiles:>13s}")
    per_plain = cache_seconds / median["plain"]
    print(f"cache build (both flips of {len(data)} images, once): {cache_seconds:.2f} s "
          f"= {per_plain:.0f} plain steps")
    for name in ("cached", "cached+anchors", "cached, eager ops"):
        ratio = statistics.median(ratios[name])
        print(f"HORKD {name}: {ratio:.2f}x the plain step "
              f"(target <= 1.30: {'met' if ratio <= 1.3 else 'NOT met'})")


if __name__ == "__main__":
    main()
