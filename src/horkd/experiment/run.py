"""Entry points: a whole run (every seed, every method, the results table), the orders ablation.

Layout of a run directory (self-describing: config, code version, seeds, metrics, weights)::

    RUN/config.yaml  RUN/run.json  RUN/results.{md,csv,json}  RUN/ship.json  RUN/ablation.json
    RUN/test_hits.json (per test image, each student's hit: the verdict's noise call)
    RUN/seed0/teacher/model.{safetensors,json} metrics.{csv,jsonl} tensorboard/ done.json
    RUN/seed0/assistant/...        RUN/seed0/students/<method>/...
    RUN/seed0/results.json  RUN/seed0/resolution_curve.json

A stage whose ``done.json`` holds the current settings' fingerprint is loaded, not retrained.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from horkd import distributed, stop
from horkd.checkpoint import git_sha, write_json
from horkd.config import ExperimentConfig
from horkd.experiment.context import (
    RunContext,
    build_context,
    load_splits,
    odd_sides,
    resolve_device,
)
from horkd.experiment.evaluation import (
    AT_LR,
    SeedResult,
    aggregate,
    score_seed,
    student_test_hits,
)
from horkd.experiment.networks import Networks
from horkd.experiment.ship import seed_evidence, write_choice
from horkd.experiment.stages import StageRunner
from horkd.methods import METHODS, methods_in
from horkd.notes import note
from horkd.paired import TEST_HITS_FILE, write_hits
from horkd.reference_cache import ReferenceCaches
from horkd.run_dir import RunDirError, prepare_run_dir
from horkd.run_lock import RunLock, RunLockedError

ORDER_SUBSETS = ([1], [2], [3], [1, 2], [1, 3], [2, 3], [1, 2, 3])


def start_processes(cfg: ExperimentConfig) -> None:
    """Join torchrun's process group when launched by it (no-op otherwise)."""
    distributed.init_distributed(resolve_device(cfg.device).type)


def prepare_run_dir_once(
    cfg: ExperimentConfig, run_dir: Path, resume: bool = False, overwrite: bool = False
) -> None:
    """Rank 0 checks and prepares the directory; every rank gets its verdict."""
    error = None
    if distributed.is_main():
        try:
            prepare_run_dir(cfg, run_dir, resume=resume, overwrite=overwrite)
        except RunDirError as exc:
            error = str(exc)
    error = distributed.broadcast_from_main(error)
    if error is not None:
        raise RunDirError(error)


@contextmanager
def owning(
    cfg: ExperimentConfig, *, resume: bool = False, overwrite: bool = False
) -> Iterator[Path]:
    """Join torchrun's processes, take the run directory's lock (rank 0: one writer) and
    prepare the directory; the lock is held until the block ends (or the process dies)."""
    run_dir = Path(cfg.output_dir)
    start_processes(cfg)
    error, lock = None, None
    try:  # whatever ends the block (an error, Ctrl-C) lets go of the lock and deletes its file
        if distributed.is_main():
            try:
                lock = RunLock(run_dir).acquire()
            except RunLockedError as exc:
                error = str(exc)
        error = distributed.broadcast_from_main(error)
        if error is not None:
            raise RunLockedError(error)
        prepare_run_dir_once(cfg, run_dir, resume=resume, overwrite=overwrite)
        yield run_dir
    finally:
        if lock is not None:
            lock.release()


def open_seed(
    cfg: ExperimentConfig,
    seed: int,
    *,
    progress: bool = True,
    caches: ReferenceCaches | None = None,
    label: str = "",
) -> tuple[RunContext, Networks]:
    """The context and the networks of one seed of a prepared run directory (``output_dir``),
    continuing whatever that directory already holds for this config; ``label`` names the run
    in its epoch lines where several print to one log (a study's workers)."""
    ctx = build_context(cfg, seed, load_splits(cfg, seed))
    if distributed.is_main():  # said where a network will train on them, not where one is scored
        for line in odd_sides(ctx.hr_size, ctx.lr_size):
            note(line)
    seed_dir = Path(cfg.output_dir) / f"seed{seed}"
    stages = StageRunner(ctx, seed_dir, progress=progress, label=label, resume=True,
                         caches=caches)
    return ctx, Networks(ctx, stages)


def skipped_images(ctx: RunContext) -> list[str]:
    """Image files left out: found unreadable up front, or failing while the run read them
    (on rank 0, those of every rank: each reads its own share; every rank calls this)."""
    from horkd.data.loader import file_roots

    lost = [
        message
        for split in (ctx.splits.train, ctx.splits.val, ctx.splits.test)
        if split is not None
        for root in file_roots(split)
        for message in getattr(root, "lost", [])
    ]
    ranks = distributed.gather_to_main(lost)
    if ranks is not None:
        lost = [message for share in ranks for message in share]  # type: ignore[attr-defined]
    return list(ctx.info.skipped_images) + list(dict.fromkeys(lost))


@dataclass
class RunOutcome:
    """What ``run_experiment`` measured: the aggregated table and every seed's result."""

    run_dir: Path
    table: list[dict[str, Any]]
    seeds: list[SeedResult] = field(default_factory=list)
    lr_size: int | None = None


def run_seed(
    ctx: RunContext, networks: Networks, methods: list[str], *, with_teacher: bool = True
) -> SeedResult:
    """Train what ``methods`` need and score it; rank 0 writes the seed's results files."""
    result = score_seed(ctx, networks, methods, with_teacher=with_teacher)
    if distributed.is_main():
        seed_dir = networks.stages.seed_dir
        write_json(seed_dir / "results.json", [r.as_dict() for r in result.rows])
        if result.curve:
            write_json(seed_dir / "resolution_curve.json", result.curve)
    return result


def run_experiment(
    cfg: ExperimentConfig,
    *,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    report: bool = False,
    caches: ReferenceCaches | None = None,
) -> RunOutcome:
    """Run every seed, write results.{json,csv,md} (and RUN/report/ when ``report``)."""

    with owning(cfg, resume=resume, overwrite=overwrite) as run_dir:
        return _run(cfg, run_dir, progress=progress, report=report, caches=caches)


def _run(
    cfg: ExperimentConfig,
    run_dir: Path,
    *,
    progress: bool,
    report: bool,
    caches: ReferenceCaches | None,
) -> RunOutcome:
    from horkd.results import write_results

    started = time.time()
    record: dict[str, Any] = {
        "name": cfg.name, "git_sha": git_sha(), "seeds": cfg.seeds, "started": started,
    }
    if distributed.is_main():
        write_json(run_dir / "run.json", record)
    caches = caches if caches is not None else ReferenceCaches()
    results, skipped, evidence = [], [], []
    test_hits: dict[str, list[Tensor]] = {}
    test_images: list[str] = []
    for seed in cfg.seeds:
        stop.check(f"before seed {seed}")
        ctx, networks = open_seed(cfg, seed, progress=progress, caches=caches)
        results.append(run_seed(ctx, networks, cfg.methods))
        skipped = skipped_images(ctx)
        if distributed.is_main():
            evidence.append(seed_evidence(ctx, networks, cfg.methods, run_dir))
            hits, digest = student_test_hits(ctx, networks, cfg.methods)
            for name, each in hits.items():
                test_hits.setdefault(name, []).append(each)
            test_images.append(digest)
    outcome = RunOutcome(run_dir, aggregate([r.rows for r in results]), results, ctx.lr_size)
    if not distributed.is_main():
        return outcome
    key = ctx.task.score_key
    metric = f"validation {'top-1' if key == 'top1' else key} at {ctx.lr_size} px"
    ship = write_choice(run_dir, [e for e in evidence if e is not None], metric)
    if test_hits:  # per image, what the verdict's noise call pairs on
        write_hits(run_dir / TEST_HITS_FILE, "lr_top1", cfg.seeds, test_hits, test_images)
    else:
        (run_dir / TEST_HITS_FILE).unlink(missing_ok=True)
    write_results(run_dir, outcome.table, cfg, lr_size=ctx.lr_size, ship=ship)
    if report:
        from horkd.report import build_report

        build_report([run_dir])
    record.update(
        seconds=time.time() - started,
        skipped_images={"count": len(skipped), "files": skipped[:100]},
        processes=distributed.world_size(),
    )
    write_json(run_dir / "run.json", record)
    return outcome


@dataclass
class AblationResult:
    """Each ``ours`` method's test metric with each subset of orders, beside the baselines."""

    metric: str
    seeds: list[int]
    orders: dict[str, dict[str, list[float]]]  # method -> "1+2" -> one value per seed
    baselines: dict[str, list[float]]  # baseline method -> one value per seed

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "seeds": self.seeds,
            "orders": self.orders,
            "baselines": self.baselines,
        }


def ablated_methods(cfg: ExperimentConfig) -> list[str]:
    """The run's methods whose terms follow ``distill.loss.orders`` (what the ablation varies)."""
    ours = [m for m in methods_in("ours", cfg.methods) if METHODS.get(m).follows_orders]
    if not ours:
        raise ValueError(
            "horkd ablate varies the orders of the run's own methods: list at least one method "
            f"of group 'ours' in methods (e.g. {', '.join(methods_in('ours'))})"
        )
    return ours


def run_ablation(
    cfg: ExperimentConfig,
    *,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    caches: ReferenceCaches | None = None,
) -> AblationResult:
    """Every ``ours`` method of the run distilled with each subset of orders (same teacher,
    assistant, budget and seeds), beside the run's baselines; writes RUN/ablation.json."""
    ours, baselines = ablated_methods(cfg), methods_in("baseline", cfg.methods)
    with owning(cfg, resume=resume, overwrite=overwrite) as run_dir:
        return _ablation(cfg, run_dir, ours, baselines, progress, caches)


def _ablation(
    cfg: ExperimentConfig,
    run_dir: Path,
    ours: list[str],
    baselines: list[str],
    progress: bool,
    caches: ReferenceCaches | None,
) -> AblationResult:
    from horkd.results import primary_metric

    caches = caches if caches is not None else ReferenceCaches()
    tags = ["+".join(map(str, subset)) for subset in ORDER_SUBSETS]
    result = AblationResult("", list(cfg.seeds), {m: {t: [] for t in tags} for m in ours},
                            {b: [] for b in baselines})

    def score(ctx: RunContext, model: Any) -> float:
        metrics = ctx.task.test(ctx, model, AT_LR)
        result.metric = result.metric or primary_metric([{"role": "student", **metrics}]) or ""
        return metrics[result.metric]

    for seed in cfg.seeds:
        stop.check(f"before seed {seed}")
        ctx, networks = open_seed(cfg, seed, progress=progress, caches=caches)
        for name in baselines:
            result.baselines[name].append(score(ctx, networks.student(name).model))
        for name in ours:
            for subset, tag in zip(ORDER_SUBSETS, tags, strict=True):
                if sorted(subset) == sorted(cfg.distill.loss.orders):  # the run's own student
                    student = networks.student(name)
                else:
                    stage = f"ablation/{name}/orders_{tag}"
                    student = networks.student(name, stage=stage, orders=subset)
                result.orders[name][tag].append(score(ctx, student.model))
    if distributed.is_main():
        write_json(run_dir / "ablation.json", result.as_dict())
    return result

