"""The demo config's HORKD student step on a GPU, in fp32 and with AMP (bf16 autocast), beside
the same figures on this machine's CPU: images per second, host-device syncs per step, and the
share of the step that the relational terms (distance and angle, forward and backward) take.

The step is horkd's own Trainer step on the demo's networks and loss with a cached reference
(benchmarks/demo_step.py). Syncs are counted on a GPU by torch's sync debug mode, on a CPU by
counting host reads of tensors (``item``, ``tolist``, ``float()``, ...). The relational share
is the time of the relational terms called alone on 128 x 64 embeddings over the step's time.
Without a GPU it prints the CPU figures and says that none was found.

    python benchmarks/gpu.py            # 200 timed steps on a GPU, 20 on the CPU
    python benchmarks/gpu.py --quick    # a smoke check
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))



def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count_host_reads(run) -> int:  # type: ignore[no-untyped-def]
    """Host reads of tensors while ``run()`` runs (the CPU's stand-in for device syncs)."""
    from horkd.host_reads import counting_reads

    count = [0]
    with counting_reads(count):
        run()
    return count[0]


def _count_cuda_syncs(run) -> int:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(device: torch.device, precision: str, steps: int) -> dict[str, float]:
    from demo_step import BATCH, demo_step, demo_trainer

    trainer, batches = demo_trainer(device, precision)
    step = demo_step(trainer, batches)

    for _ in range(3):  # kernels loaded, chunk sizes read, caches warm
        step()
    _sync(device)
    counter = _count_cuda_syncs if device.type == "cuda" else _count_host_reads
    checked = 5
    syncs = counter(lambda: [step() for _ in range(checked)]) / checked
    per_step = _seconds_per_call(step, device, steps, warm=0)

    loss = trainer.method.distill_loss
    student = torch.randn(BATCH, 64, device=device)
    teacher = torch.randn(BATCH, 64, device=device)

    def relations() -> None:
        mine = student.clone().requires_grad_(True)
        sum(loss._relations(mine, teacher).values()).backward()

    per_relations = _seconds_per_call(relations, device, steps, warm=3)
    return {"images_per_s": BATCH / per_step, "ms_per_step": per_step * 1000,
            "syncs_per_step": syncs, "relation_share": per_relations / per_step}


def _seconds_per_call(call, device: torch.device, calls: int, warm: int) -> float:
    """Wall seconds per ``call`` over ``calls`` of them, after ``warm`` untimed ones, the
    device drained before and after."""
    for _ in range(warm):
        call()
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        call()
    _sync(device)
    return (time.perf_counter() - start) / calls


def _row(name: str, figures: dict[str, float]) -> str:
    return (f"{name:28s} {figures['images_per_s']:10.0f} {figures['ms_per_step']:9.2f} "
            f"{figures['syncs_per_step']:8.1f} {100 * figures['relation_share']:9.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps on the GPU")
    parser.add_argument("--cpu-steps", type=int, default=20, help="timed steps on the CPU")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    gpu_steps, cpu_steps = (10, 3) if args.quick else (args.steps, args.cpu_steps)
    from horkd.losses import cpu_kernels

    print(f"horkd demo HORKD student step, batch 128, {datetime.date.today().isoformat()}")
    print(f"{'':28s} {'images/s':>10s} {'ms/step':>9s} {'syncs':>8s} {'relations':>10s}")
    if torch.cuda.is_available():
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
        print(f"GPU: {name}, torch {torch.__version__}")
        for precision in ("fp32", "bf16"):
            label = "fp32" if precision == "fp32" else "AMP (bf16 autocast)"
            print(_row(f"GPU {label}", measure(device, precision, gpu_steps)), flush=True)
    else:
        print("no GPU was found: the CPU figures only")
    kernels = "fused kernels" if cpu_kernels.installed() and cpu_kernels.enabled() else "eager"
    print(f"CPU: {torch.get_num_threads()} thread(s), relational terms by {kernels}")
    for precision in ("fp32", "bf16"):
        label = "fp32" if precision == "fp32" else "AMP (bf16 autocast)"
        print(_row(f"CPU {label}", measure(torch.device("cpu"), precision, cpu_steps)),
              flush=True)


if __name__ == "__main__":
    main()
