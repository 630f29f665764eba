"""One study job (a run directory: a method, one set of overrides, some seeds) or teacher, as a
worker trains it. A seed whose record exists with the same settings key is reused; any other is
trained (or continued from its run directory), scored and recorded."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from horkd.study.records import RecordBook, RunRecord, environment, record_key


@dataclass(frozen=True)
class Job:
    """One run directory: a method with one set of overrides, trained for some seeds."""

    kind: str  # "search" (validation score) | "final" (test metrics)
    regime: str
    method: str
    tag: str  # candidate index "c0", "c1", ...; "fixed" for a method that is not searched
    config: dict[str, Any]
    teacher: dict[str, dict[str, str]]  # seed -> {"name", "fingerprint"} of its teacher
    records: str  # the study's records folder
    with_teacher: bool = False  # also score the teacher rows (once per regime, first seed)
    threads: int = 1
    cache_dir: str | None = None  # where frozen teachers' outputs are kept for every worker

    @property
    def label(self) -> str:
        return f"{self.kind} {self.regime}/{self.method}/{self.tag}"

    @property
    def seeds(self) -> list[int]:
        return list(self.config["seeds"])

    def scored(self, seed: int) -> bool:
        return self.kind == "final" and self.with_teacher and seed == self.seeds[0]

    def key(self, seed: int) -> str:
        teacher = self.teacher[str(seed)]["fingerprint"]
        return record_key(self.config, teacher, seed, self.kind, self.scored(seed))

    def recorded(self, seed: int) -> RunRecord | None:
        book = RecordBook(Path(self.records))
        return book.load(self.kind, self.regime, self.method, self.tag, seed, self.key(seed))


@dataclass
class JobResult:
    job: Job
    records: dict[int, RunRecord] = field(default_factory=dict)
    trained: bool = False  # whether any seed was trained here (not read from a record)

    @property
    def error(self) -> str | None:
        return next((r.error for r in self.records.values() if r.error), None)


def run_job(job: Job) -> JobResult:
    """Train (or reuse) and score one run directory; runs in a worker process."""
    result = JobResult(job)
    missing = []
    for seed in job.seeds:
        record = job.recorded(seed)
        if record is not None:
            result.records[seed] = record
        else:
            missing.append(seed)
    if missing:
        result.trained = True
        result.records.update(_train(job, missing))
    return result


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block on ``threads`` threads, then give the process its own setting back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(job: Job, seeds: list[int]) -> dict[int, RunRecord]:
    with torch_threads(job.threads):  # results on a CPU depend on the thread count
        return _train_seeds(job, seeds)


def _train_seeds(job: Job, seeds: list[int]) -> dict[int, RunRecord]:
    from horkd.config import config_from_dict
    from horkd.run_dir import prepare_run_dir
    from horkd.run_lock import RunLock

    cfg = config_from_dict(job.config)
    with RunLock(cfg.output_dir):
        prepare_run_dir(cfg, Path(cfg.output_dir), resume=True)
        return _record_seeds(job, cfg, seeds)


def _record_seeds(job: Job, cfg: Any, seeds: list[int]) -> dict[int, RunRecord]:
    from horkd.experiment import open_seed
    from horkd.experiment.run import run_seed
    from horkd.reference_cache import ReferenceCaches
    from horkd.trainer import TrainingDiverged

    caches = ReferenceCaches(job.cache_dir)
    book = RecordBook(Path(job.records))
    out = {}
    for seed in seeds:
        started = time.perf_counter()
        record = RunRecord(job.key(seed), job.kind, job.regime, job.method, job.tag, seed,
                           job.config, job.teacher[str(seed)], math.nan, threads=job.threads,
                           environment=environment())
        ctx, networks = open_seed(cfg, seed, progress=False, caches=caches)
        try:
            outcome = networks.student(job.method)
        except TrainingDiverged as exc:
            if job.kind != "search":
                raise  # a final run must finish: its seed cannot just be left out
            record.error = str(exc)
        else:
            record.val = float(outcome.best_score) if outcome.best_score is not None else math.nan
            record.history = _validation_history(networks.stages.seed_dir, job.method)
            from horkd.methods import METHODS

            if "assistant" in METHODS.get(job.method).needs:
                record.facts["assistant_guard"] = networks.assistant_verdict()
            if job.kind == "final":
                scored = run_seed(ctx, networks, cfg.methods, with_teacher=job.scored(seed))
                record.rows = [row.as_dict() for row in scored.rows]
                record.curve = scored.curve
        record.seconds = time.perf_counter() - started
        book.save(record)
        out[seed] = record
    return out


def _validation_history(seed_dir: Path, method: str) -> list[dict[str, float]]:
    """Per-epoch validation scores of the student (what picked its epoch)."""
    from horkd.logger import read_jsonl

    path = seed_dir / "students" / method / "metrics.jsonl"
    if not path.is_file():
        return []
    return [{k: v for k, v in row.items() if k == "epoch" or k.startswith("val/")}
            for row in read_jsonl(path)]


@dataclass(frozen=True)
class TeacherJob:
    """One study teacher (one seed's, for a per-seed teacher), trained in a worker like a run."""

    name: str
    seed: int
    config_path: str  # the teacher's experiment file ...
    overrides: tuple[str, ...]  # ... with its run directory and seed
    record: str  # where its facts are written for the page
    facts: dict[str, Any]  # what is known before training (fingerprint, architecture, ...)
    threads: int = 1

    @property
    def key(self) -> tuple[str, str, int]:
        return ("teacher", self.name, self.seed)


def run_teacher(job: TeacherJob) -> dict[str, Any]:
    """Train (or load) one teacher and record its facts; runs in a worker process."""
    from horkd.checkpoint import write_json
    from horkd.config import load_config
    from horkd.experiment import open_seed
    from horkd.run_dir import prepare_run_dir
    from horkd.run_lock import RunLock

    cfg = load_config(job.config_path, list(job.overrides))
    with RunLock(cfg.output_dir), torch_threads(job.threads):
        prepare_run_dir(cfg, Path(cfg.output_dir), resume=True)
        _, networks = open_seed(cfg, job.seed, progress=False)
        networks.teacher()
    outcome = networks.outcome("teacher")
    info = {**job.facts, "val": outcome.best_score,
            "train_seconds": outcome.record.get("seconds"), "threads": job.threads,
            "environment": environment()}
    path = Path(job.record)
    record = teacher_record(json.loads(path.read_text()) if path.is_file() else None, info)
    write_json(path, record)
    return {**record, "val_here": outcome.best_score}  # the teacher this machine holds


def teacher_record(recorded: dict[str, Any] | None, trained: dict[str, Any]) -> dict[str, Any]:
    """The record to keep after ``trained`` was trained or loaded. A teacher trained again
    elsewhere (its checkpoint is not in git; another CPU rounds differently) keeps the record of
    the teacher the earlier runs learnt from, and lists the new one under ``retrained``, so the
    page can say that later runs learnt from a teacher with another score. A teacher loaded
    again keeps where it was first trained."""
    same = recorded is not None and recorded.get("fingerprint") == trained.get("fingerprint")
    if not same:
        return trained
    if recorded["val"] == trained["val"]:
        kept = {k: recorded[k] for k in ("environment", "retrained") if k in recorded}
        return {**{k: v for k, v in trained.items() if k != "environment"}, **kept}
    again = {"val": trained["val"], "train_seconds": trained.get("train_seconds"),
             "threads": trained.get("threads"), "machine": platform.machine(),
             **({"environment": trained["environment"]} if "environment" in trained else {})}
    retrained = list(recorded.get("retrained", []))
    if all(r["val"] != trained["val"] for r in retrained):
        print(f"teacher {trained.get('name')} seed {trained.get('seed')} trained again: best "
              f"validation {trained['val']:.2f} against the recorded {recorded['val']:.2f}; "
              "runs trained from now learn from it (the record keeps both)", flush=True)
        retrained.append(again)
    return {**recorded, "retrained": retrained}


def execute(
    jobs: list[Job], workers: int, teachers: Sequence[TeacherJob],
    needs: Sequence[set[tuple]], log: Callable[[str], None] = print,
) -> list[JobResult]:
    """Run jobs (and the ``teachers`` they need: ``needs[i]`` holds job ``i``'s teacher keys) in
    ``workers`` processes, in this one when 1; seed-major (see ``schedule``); results in the
    jobs' order."""
    from horkd.study.schedule import Task, run_tasks, seed_major

    prerequisites = {t.key: Task(t.key, run_teacher, t) for t in teachers}
    tasks = seed_major([j.seeds for j in jobs], needs, prerequisites,
                       lambda i: Task(("job", i), run_job, jobs[i]))
    done: dict[int, JobResult] = {}

    def on_done(task: Task, value: Any) -> None:
        if isinstance(value, JobResult):
            done[task.key[1]] = value
            log(describe(value))
        else:
            log(describe_teacher(value))

    run_tasks(tasks, workers, on_done)
    return [done[i] for i in range(len(jobs))]


def describe(result: JobResult) -> str:
    scores = ", ".join(f"seed {s}: {r.val:.2f}" for s, r in result.records.items())
    seconds = sum(r.seconds for r in result.records.values())
    how = f"{seconds:.0f} s" if result.trained else "recorded"
    failed = f"; diverged: {result.error}" if result.error else ""
    return f"[{result.job.label}] val {scores} ({how}){failed}"


def describe_teacher(info: dict[str, Any]) -> str:
    """One log line for a teacher, the same from the worker pool and from this process."""
    here = info.get("val_here", info["val"])
    line = f"[teacher {info['name']} seed {info['seed']}] {info['arch']}, best val {here:.2f}"
    return line if here == info["val"] else f"{line} (recorded {info['val']:.2f}: trained again)"
