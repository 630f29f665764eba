"""Sharded global relations: does a rank's relational cost fall with the number of ranks?

With ``relations: global`` the distance and angle terms span the batch of every process. Each
rank gathers the embeddings, makes the global Gram matrices and computes only its share of the
anchor rows (horkd.losses.hybrid: HybridOrderLoss._sharded_relations); one all-reduce adds the
shares. Measured here on this machine's CPU with gloo, one thread per process:

1. the relational terms (distance and angle, forward and backward) of a global batch of 256
   64-d embeddings, at world 1 (one process holds all 256) and world 2 (128 each);
2. the same at global batches of 512 and 1024 (fewer rounds), where the N^3 angle work weighs
   more against the collectives, whose cost grows only as N d;
3. the arithmetic alone at 256: each rank's share of the terms computed from the whole batch
   held locally, no gather and no all-reduce; beside 1, the time the collectives add;
4. the demo config's HORKD student step (benchmarks/demo_step.py: batch 128 per process) at
   world 1 and world 2.

Each set-up runs in its own processes, alternating between world 1 and 2 (``--repeats``), and a
figure is the median over rounds of a few back-to-back calls. The last line is the ratio of a
rank's relation time at 2 ranks to 1 rank (1.0: no gain from a second rank; 0.5: perfect).

    python benchmarks/distributed_relations.py           # 2 x 10 rounds per set-up
    python benchmarks/distributed_relations.py --quick   # a smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))

GLOBAL_BATCH, DIM, CALLS = 256, 64, 3
LARGER = (512, 1024)  # global batches timed beside GLOBAL_BATCH, with fewer rounds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _relations(rank: int, world: int, rounds: int, batch: int = GLOBAL_BATCH,
               calls: int = CALLS) -> list[float]:
    """ms per call of the relational terms, forward and backward, over this rank's rows of a
    global ``batch``."""
    from horkd import distributed

    student, teacher, loss = _embeddings_and_loss(batch)
    rows = slice(batch * rank // world, batch * (rank + 1) // world)

    def call() -> None:
        mine = student[rows].clone().requires_grad_(True)
        # equal shares, declared as the training step declares them: no counts exchanged
        with distributed.equal_rows(batch // world):
            terms = loss(mine, None, teacher[rows], None)
        sum(terms.values()).backward()

    return _timed(call, world, rounds, calls)


def _arithmetic(rank: int, world: int, rounds: int) -> list[float]:
    """ms per call of this rank's share of the terms (HybridOrderLoss.share_of_relations, what
    the sharded path computes) from the whole global batch held locally: the same arithmetic,
    no collective."""
    from horkd.losses.numerics import relation_grams

    student, teacher, loss = _embeddings_and_loss(GLOBAL_BATCH)
    weights = {"order2_distance": loss.distance_weight, "order3_angle": loss.angle_weight}

    def call() -> None:
        gram_s, gram_t = relation_grams(student.clone().requires_grad_(True), teacher)
        share = loss.share_of_relations(gram_s, gram_t)
        sum(weights[name] * term for name, term in share.items()).backward()

    return _timed(call, world, rounds)


def _embeddings_and_loss(batch: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    from horkd.losses import HybridOrderLoss

    torch.manual_seed(0)
    loss = HybridOrderLoss(DIM, DIM, logit_weight=0.0, distance_weight=5.0, angle_weight=10.0)
    return torch.randn(batch, DIM), torch.randn(batch, DIM), loss


def _timed(call, world: int, rounds: int, calls: int = CALLS) -> list[float]:
    """ms per ``call``, per round of ``calls`` calls, the ranks starting each round together
    (two calls first: they load, or compile, the fused kernels)."""
    for _ in range(2):
        call()
    times = []
    for _ in range(rounds):
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls * 1000)
    return times


def _steps(rank: int, world: int, rounds: int) -> list[float]:
    """ms per training step of the demo's HORKD student (batch 128 per rank)."""
    from demo_step import demo_step, demo_trainer

    trainer, batches = demo_trainer(torch.device("cpu"), rank=rank, world=world)
    return _timed(demo_step(trainer, batches), world, rounds)


def _worker(rank: int, world: int, port: int, rounds: int, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                          RANK=str(rank), LOCAL_RANK=str(rank))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        few = max(2, rounds // 2)
        # the two rows the collectives' line subtracts are timed back to back
        result = {"relations": _relations(rank, world, rounds),
                  "arithmetic": _arithmetic(rank, world, rounds),
                  **{f"relations{n}": _relations(rank, world, few, n, 1) for n in LARGER},
                  "step": _steps(rank, world, rounds)}
        Path(f"{out}.{rank}").write_text(json.dumps(result))
    finally:
        if world > 1:
            dist.destroy_process_group()


def run(world: int, rounds: int) -> dict[str, list[float]]:
    """Every rank's times, pooled (each rank's figure is its own time per call)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times")
        mp.spawn(_worker, args=(world, _free_port(), rounds, out), nprocs=world, join=True)
        pooled: dict[str, list[float]] = {}
        for rank in range(world):
            for key, values in json.loads(Path(f"{out}.{rank}").read_text()).items():
                pooled.setdefault(key, []).extend(values)
    return pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, repeats = (2, 1) if args.quick else (args.rounds, args.repeats)
    os.environ["OMP_NUM_THREADS"] = "1"
    from horkd.losses import cpu_kernels

    times: dict[int, dict[str, list[float]]] = {1: {}, 2: {}}
    for _ in range(repeats):
        for world in (1, 2):
            for key, values in run(world, rounds).items():
                times[world].setdefault(key, []).extend(values)
    kernels = "fused CPU kernels" if cpu_kernels.installed() and cpu_kernels.enabled() else "eager ops"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"gloo on this CPU, one thread per process, {kernels}; load average before: {load}; "
          f"each figure the median over its rounds per rank, [min-max] beside it")
    label = {"relations": f"relational terms, global batch {GLOBAL_BATCH} (ms/rank)",
             **{f"relations{n}": f"relational terms, global batch {n} (ms/rank)"
                for n in LARGER},
             "arithmetic": f"  their arithmetic alone, batch {GLOBAL_BATCH} (ms/rank)",
             "step": "demo HORKD student step, 128/rank (ms)"}
    median = {w: {k: statistics.median(v) for k, v in t.items()} for w, t in times.items()}
    print(f"{'':52s} {'world 1':>20s} {'world 2':>20s} {'2 / 1':>6s} {'rounds':>6s}")

    def cell(world: int, key: str) -> str:
        values = times[world][key]
        return f"{median[world][key]:7.2f} [{min(values):.1f}-{max(values):.1f}]"

    for key in ("relations", "arithmetic", *(f"relations{n}" for n in LARGER), "step"):
        one, two = median[1][key], median[2][key]
        ratio = f"{two / one:6.2f}" if key != "step" else f"{'-':>6s}"  # not one batch: below
        print(f"{label[key]:52s} {cell(1, key):>20s} {cell(2, key):>20s} {ratio} "
              f"{len(times[1][key]):6d}")
    images = {w: BATCH_PER_RANK * w / (median[w]["step"] / 1000) for w in (1, 2)}
    # the step keeps 128 images per rank, so its relations span 256 at world 2 against 128:
    # its time ratio compares unlike work; the images per second over all ranks do not
    print(f"{'demo step, images/s over all ranks':52s} {images[1]:20.0f} {images[2]:20.0f}")
    collectives = median[2]["relations"] - median[2]["arithmetic"]
    print(f"collectives and waits at world 2, batch {GLOBAL_BATCH}: {collectives:.2f} ms/rank")
    ratio = median[2]["relations"] / median[1]["relations"]
    print(f"per-rank relation time, 2 ranks / 1 rank: {ratio:.2f}")


BATCH_PER_RANK = 128

if __name__ == "__main__":
    main()
