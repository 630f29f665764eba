"""One study job (a run directory: a method, one set of overrides, some seeds) or teacher, as a
worker trains it. A seed whose record exists with the same settings key is reused; any other is
trained (or continued from its run directory), scored and recorded."""

from __future__ import annotations

import io
import math
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from horkd.numerics_version import NUMERICS_VERSION
from horkd.study.records import (
    RecordBook,
    RunRecord,
    environment,
    read_teacher_record,
    record_key,
)


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
    missing: tuple[int, ...] | None = None  # the seeds to train (None: those not recorded)
    shared: SharedFolder | None = None  # the folder every worker must see as the driver does
    gpus: float = 0  # what an engine reserves for it besides its threads
    stale: tuple[int, ...] = ()  # recorded seeds that learnt from another teacher: retrained

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
        if seed in self.stale:
            return None
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


def merge_seeds(results: list[JobResult]) -> list[JobResult]:
    """One result per (regime, method, candidate): the per-seed jobs' records together."""
    merged: dict[tuple[str, str, str], JobResult] = {}
    for res in results:
        key = (res.job.regime, res.job.method, res.job.tag)
        if key not in merged:
            merged[key] = JobResult(res.job, dict(res.records), res.trained)
        else:
            merged[key].records.update(res.records)
            merged[key].trained |= res.trained
    return list(merged.values())


@dataclass(frozen=True)
class SharedFolder:
    """A file the driver wrote in the study's output folder: a worker that does not find it
    (with this token) is on a machine that does not share the run directories."""

    path: str
    token: str

    @classmethod
    def mark(cls, folder: Path) -> SharedFolder:
        import secrets

        from horkd.checkpoint import atomic_write

        token = secrets.token_hex(8)  # one marker per invocation: two drivers can share OUT
        marker = (folder / f".horkd-study-{token}").resolve()
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(marker, lambda tmp: Path(tmp).write_text(token))
        return cls(str(marker), token)

    def remove(self) -> None:
        Path(self.path).unlink(missing_ok=True)

    def check(self) -> None:
        marker = Path(self.path)
        seen = marker.read_text().strip() if marker.is_file() else None
        if seen != self.token:
            raise SharedFolderError(
                f"worker {platform.node()} does not see the study's output folder "
                f"{marker.parent} as the driver wrote it: run directories and teacher checkpoints "
                "need a filesystem every worker sees (a shared output_dir; docs/scale.md)"
            )


class SharedFolderError(OSError):
    """A worker on a machine that does not see the study's output folder."""


def run_job(job: Job) -> JobResult:
    """Train and score the seeds of one run directory that are not recorded; runs in a worker.
    The records are returned, not written: the driver alone writes them."""
    if job.shared is not None:
        job.shared.check()
    result = JobResult(job)
    if job.missing is None:
        result.records = {s: r for s in job.seeds if (r := job.recorded(s)) is not None}
        missing = [s for s in job.seeds if s not in result.records]
    else:
        missing = list(job.missing)
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
    out = {}
    for seed in seeds:
        started, cpu_started = time.perf_counter(), time.process_time()
        record = RunRecord(job.key(seed), job.kind, job.regime, job.method, job.tag, seed,
                           job.config, learnt_from(job, cfg, seed), math.nan,
                           threads=job.threads, environment=environment(),
                           numerics_version=NUMERICS_VERSION)
        ctx, networks = open_seed(cfg, seed, progress=False, caches=caches,
                                  label=f"{job.label} seed {seed}")
        try:
            outcome = networks.student(job.method)
        except TrainingDiverged as exc:
            if job.kind != "search":
                raise  # a final run must finish: its seed cannot just be left out
            record.error = str(exc)
        else:
            record.val = float(outcome.best_score) if outcome.best_score is not None else math.nan
            record.history = _validation_history(networks.stages.seed_dir, job.method)
            if ctx.splits.val is not None:  # what its choices rest on: the page says when few
                record.facts["val_images"] = len(ctx.splits.val)
            from horkd.methods import METHODS

            if "assistant" in METHODS.get(job.method).needs:
                record.facts["assistant_guard"] = networks.assistant_verdict()
            if job.kind == "final":
                scored = run_seed(ctx, networks, cfg.methods, with_teacher=job.scored(seed))
                record.rows = [row.as_dict() for row in scored.rows]
                record.curve = scored.curve
        record.seconds = time.perf_counter() - started
        # a run resumed after a stop trained its first epochs in an earlier process: its stages
        # keep their CPU across the resume (the teacher's is its own record's)
        record.cpu_seconds = max(time.process_time() - cpu_started,
                                 _stages_cpu(networks.stages.seed_dir))
        out[seed] = record
    return out


def _stages_cpu(seed_dir: Path) -> float:
    """The CPU-seconds the stages of a run's own seed folder recorded (the teacher left out: it
    is charged to the runs that learn from it through its record)."""
    from horkd.report.compute import stage_cpu_seconds

    return sum(stage_cpu_seconds(done.parent) or 0.0 for done in Path(seed_dir).rglob("done.json")
               if "teacher" not in done.relative_to(seed_dir).parts)


def learnt_from(job: Job, cfg: Any, seed: int) -> dict[str, str]:
    """The record's teacher: its name and fingerprint, and the digest of the weights this run
    loads (``weights``; ``assistant`` for a pre-trained assistant the method learns from)."""
    from horkd.methods import METHODS
    from horkd.study.teacher_identity import weights_digest

    teacher = dict(job.teacher[str(seed)])
    for role, key in (("teacher", "weights"), ("assistant", "assistant")):
        path = getattr(cfg, role).checkpoint
        if role == "assistant" and (not path or "assistant" not in METHODS.get(job.method).needs):
            continue
        digest = weights_digest(path.replace("{seed}", str(seed))) if path else None
        if digest:
            teacher[key] = digest
    return teacher


def _validation_history(seed_dir: Path, method: str) -> list[dict[str, float]]:
    """Per-epoch validation scores of the student (what picked its epoch)."""
    from horkd.logger import read_jsonl

    path = seed_dir / "students" / method / "metrics.jsonl"
    if not path.is_file():
        return []
    return [{k: v for k, v in row.items() if k == "epoch" or k.startswith("val/")}
            for row in read_jsonl(path)]


def teacher_label(name: Any, seed: Any) -> str:
    """``teacher cls seed 0``; ``teacher seed 0`` for a teacher named ``teacher`` (the name
    `horkd study init` gives), where the log once said ``teacher teacher seed 0``."""
    return f"{'teacher' if name == 'teacher' else f'teacher {name}'} seed {seed}"


@dataclass(frozen=True)
class TeacherJob:
    """One study teacher (one seed's, for a per-seed teacher), trained in a worker like a run."""

    name: str
    seed: int
    config: dict[str, Any]  # the teacher's experiment, with its run directory and seed
    record: str  # where the driver writes its facts for the page
    facts: dict[str, Any]  # what is known before training (fingerprint, architecture, ...)
    threads: int = 1
    shared: SharedFolder | None = None
    gpus: float = 0

    @property
    def key(self) -> tuple[str, str, int]:
        return ("teacher", self.name, self.seed)

    @property
    def label(self) -> str:
        return teacher_label(self.name, self.seed)


def run_teacher(job: TeacherJob) -> dict[str, Any]:
    """Train (or load) one teacher; runs in a worker. Its facts are returned: the driver
    writes them (:func:`save_teacher`)."""
    from horkd.config import config_from_dict
    from horkd.experiment import open_seed
    from horkd.run_dir import finished_stage, prepare_run_dir, teacher_fingerprint
    from horkd.run_lock import RunLock

    if job.shared is not None:
        job.shared.check()
    cfg = config_from_dict(job.config)
    stage = Path(cfg.output_dir) / f"seed{job.seed}" / "teacher"
    loads = finished_stage(stage, teacher_fingerprint(cfg, job.seed))
    with RunLock(cfg.output_dir), torch_threads(job.threads):
        # a teacher that loads is said once, by the driver: not "continuing the run in ..."
        # before each batch of runs that needs it
        with redirect_stdout(io.StringIO()) if loads else nullcontext():
            prepare_run_dir(cfg, Path(cfg.output_dir), resume=True)
        ctx, networks = open_seed(cfg, job.seed, progress=False, label=job.label)
        networks.teacher()
    outcome = networks.outcome("teacher")
    top1 = outcome.record.get("score_key") == "top1"  # the page weighs it against chance
    from horkd.study.teacher_identity import weights_digest

    weights = weights_digest(Path(cfg.output_dir) / f"seed{job.seed}" / "teacher" / "model")
    return {**job.facts, "val": outcome.best_score, **({"weights": weights} if weights else {}),
            **({"classes": ctx.info.num_classes} if top1 else {}),
            "train_seconds": outcome.record.get("seconds"),
            "train_cpu_seconds": outcome.record.get("cpu_seconds"), "threads": job.threads,
            "environment": environment(), "trained_here": outcome.trained_now}


def save_teacher(job: TeacherJob, trained: dict[str, Any]) -> dict[str, Any]:
    """Write a teacher's record (driver side); returns it with the score this machine holds."""
    from horkd.checkpoint import write_json

    trained = dict(trained)
    now = trained.pop("trained_here", True)  # a fact of this invocation, not of the teacher
    path = Path(job.record)
    record = teacher_record(read_teacher_record(path), trained)
    write_json(path, record)
    # this machine's score and time, not the recorded teacher's (they differ when trained again)
    return {**record, "val_here": trained["val"], "seconds_here": trained.get("train_seconds"),
            "trained_here": now}


def teacher_record(recorded: dict[str, Any] | None, trained: dict[str, Any]) -> dict[str, Any]:
    """The record to keep after ``trained`` was trained or loaded. A teacher trained again
    elsewhere (its checkpoint is not in git; another CPU rounds differently) keeps the record of
    the teacher the earlier runs learnt from, and lists the new one under ``retrained``, so the
    page can say that later runs learnt from a teacher with another score. A teacher loaded
    again keeps where it was first trained."""
    same = recorded is not None and recorded.get("fingerprint") == trained.get("fingerprint")
    if not same:
        return trained
    weights = trained.get("weights")
    known = recorded.get("weights")
    if (known == weights) if known and weights else recorded["val"] == trained["val"]:
        # the same teacher (by its weights; by its score where either has no digest)
        kept = {k: recorded[k] for k in ("environment", "retrained") if k in recorded}
        return {**{k: v for k, v in trained.items() if k != "environment"}, **kept}
    again = {"val": trained["val"], "train_seconds": trained.get("train_seconds"),
             "train_cpu_seconds": trained.get("train_cpu_seconds"),
             "threads": trained.get("threads"), "machine": platform.machine(),
             **({"weights": weights} if weights else {}),
             **({"environment": trained["environment"]} if "environment" in trained else {})}
    retrained = list(recorded.get("retrained", []))
    if not any((r.get("weights") == weights) if r.get("weights") and weights
               else r["val"] == trained["val"] for r in retrained):
        print(f"{teacher_label(trained.get('name'), trained.get('seed'))} trained again: best "
              f"validation {trained['val']:.2f} against the recorded {recorded['val']:.2f}; "
              "runs trained from now learn from it (the record keeps both)", flush=True)
        retrained.append(again)
    return {**recorded, "retrained": retrained}


def kind_of(job: Job | TeacherJob) -> tuple[str, str]:
    """What a task's duration is like that of (the study's ETA): a regime's method, a teacher."""
    return ("teacher", job.name) if isinstance(job, TeacherJob) else (job.regime, job.method)


def describe(result: JobResult) -> str:
    """What a finished job measured: ``final labels1/horkd/c1 seed 3: val 84.10, test 83.36
    (52 s)``."""
    from horkd.results import primary_metric

    parts = []
    for seed, record in result.records.items():
        mine = [row for row in record.rows if row.get("method") == record.method]
        metric = primary_metric(mine) if mine else None
        test = f", test {mine[0][metric]:.2f}" if metric and metric in mine[0] else ""
        parts.append(f"seed {seed}: val {record.val:.2f}{test}")
    seconds = sum(r.seconds for r in result.records.values())
    how = f"{seconds:.0f} s" if result.trained else "recorded"
    failed = f"; diverged: {result.error}" if result.error else ""
    return f"{result.job.label} {'; '.join(parts)} ({how}){failed}"


def describe_teacher(info: dict[str, Any]) -> str:
    """What a teacher reached: ``teacher classification seed 0: resnet20, best val 93.95
    (612 s)``, or ``..., loaded from its checkpoint`` where it did not train now."""
    here = info.get("val_here", info["val"])
    seconds = info.get("seconds_here", info.get("train_seconds"))
    now = info.get("trained_here", True)
    line = f"{teacher_label(info['name'], info['seed'])}: {info['arch']}, best val {here:.2f}"
    if here != info["val"]:
        again = "trained again" if now else "the checkpoint here was trained again"
        line += f" (recorded {info['val']:.2f}: {again})"
    if not now:
        return line + ", loaded from its checkpoint"
    return line + (f" ({seconds:.0f} s)" if seconds else "")
