"""Jobs per hour through the local process pool and through Ray, side by side, and what each
engine costs per job beyond the job itself.

One small study (scikit-learn's digits, HR 32, a label-only student whose
final runs each train for about ``--job-seconds``) runs twice from scratch, on the same machine,
with the same workers and threads: once on the local pool, once on a Ray instance started here.
Per engine: wall time, jobs per hour, and the overhead per job - ``(wall x workers - the jobs'
own seconds) / jobs``, the time a worker slot spends on a job outside its training and scoring
(starting, shipping the job, waiting, writing the record) - as a share of a job's own time.

    python benchmarks/study_executors.py                 # 8 jobs of ~30 s, 2 workers x 1 thread
    python benchmarks/study_executors.py --workers 1     # beside another job on a 2-core machine
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from horkd.study.executors import ExecutorConfig
from horkd.study.runner import run_study


def study_file(folder: Path, jobs: int, epochs: int) -> Path:
    stage = {"epochs": epochs, "batch_size": 64, "optimizer": {"lr": 0.05}}
    data = {"dataset": "digits", "hr_size": 32, "val_fraction": 0.2, "split_seed": 0}
    network = {"arch": "resnet8", "width": 16, "embed_dim": 64}
    teacher = {"data": data, "degrade": {"lr_size": 16}, "teacher": network,
               "methods": ["scratch"], "device": "cpu",
               "train": {"teacher": {**stage, "epochs": 1, "max_steps_per_epoch": 2}}}
    study = {
        "name": "executors_benchmark", "output_dir": str(folder / "study"),
        "records": "records", "seeds": list(range(jobs)), "teachers": {"t": teacher},
        "base": {"data": data, "degrade": {"lr_size": 16}, "teacher": network,
                 "student": network, "train": {"student": stage}, "device": "cpu"},
        "methods": ["scratch"], "baselines": ["scratch"], "main_regime": "r",
        "regimes": {"r": {"teacher": "t", "methods": ["scratch"]}},
        "search": {"seed": 100, "candidates": {"scratch": [["train.student.optimizer.lr=0.05"]]}},
        "ablation_seeds": [],
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def measure(kind: str, jobs: int, epochs: int, workers: int) -> dict[str, float]:
    """One run of the study on ``kind``; Ray's start is timed apart (once per study)."""
    start = 0.0
    if kind == "ray":
        import ray

        began = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter() - began
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = study_file(Path(tmp), jobs, epochs)
            started = time.perf_counter()
            summary = run_study(path, workers=workers, threads=1, log=lambda _: None,
                                executor=ExecutorConfig(kind=kind))
            wall = time.perf_counter() - started
            finals = json.loads(summary.read_text())["finals"]
    finally:
        if kind == "ray":
            ray.shutdown()
    own = [s for res in finals for s in [res["seconds"] / max(1, len(res["seeds"]))]
           for _ in res["seeds"]]
    count = len(own) + 1  # the finals and the search run (the teacher is tiny and not counted)
    job = sum(own) / len(own)
    overhead = max(0.0, wall * workers - job * count) / count
    return {"wall": wall, "jobs_per_hour": 3600 * count / (wall + start), "job": job,
            "overhead": overhead, "share": overhead / job, "start": start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="final runs (seeds)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40,
                        help="epochs per job (40: about 30 s at one thread)")
    args = parser.parse_args()
    results = {kind: measure(kind, args.jobs, args.epochs, args.workers)
               for kind in ("local", "ray")}
    print(f"{args.jobs + 1} jobs, {args.workers} workers x 1 thread\n")
    print("| engine | wall (s) | jobs per hour | mean job (s) | overhead per job (s) | "
          "overhead / job |")
    print("|---|---|---|---|---|---|")
    for kind, r in results.items():
        print(f"| {kind} | {r['wall']:.1f} | {r['jobs_per_hour']:.0f} | {r['job']:.1f} | "
              f"{r['overhead']:.2f} | {100 * r['share']:.1f}% |")
    local, ray = results["local"], results["ray"]
    print(f"\nRay / local jobs per hour (Ray's start included): "
          f"{ray['jobs_per_hour'] / local['jobs_per_hour']:.3f}x; Ray's start {ray['start']:.1f} s, "
          "once per study")
    extra = ray["overhead"] - local["overhead"]
    print(f"Ray's overhead per job beyond the local pool's: {extra:.2f} s = "
          f"{100 * extra / ray['job']:.1f}% of a {ray['job']:.0f}-second job; Ray's own overhead "
          f"per job {100 * ray['share']:.1f}% of it (target: at most 5%)")


if __name__ == "__main__":
    main()
