"""Run a study: teachers once, the search on validation data, then the final seeds on test.

Every run is an ordinary horkd run directory under ``OUT/runs/<regime>/<method>/<candidate>``, so
each stage resumes and is reused exactly as in ``horkd run``: rerunning a study after a crash
retrains nothing that finished. The final seed-``search.seed`` run of a searched regime is the
chosen candidate's own run (same config, same seed), so it is trained once. Candidates are scored
on the validation split only; the test split is scored once per final model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from horkd.config import apply_overrides, config_from_dict, load_config
from horkd.run_dir import settings_digest
from horkd.study.config import StudyConfig, load_study


@dataclass(frozen=True)
class Job:
    """One run directory: a method with one set of overrides, trained for some seeds."""

    kind: str  # "search" (validation score) | "final" (test metrics)
    regime: str
    method: str
    tag: str  # candidate index, "c0", "c1", ...
    config: dict[str, Any]
    with_teacher: bool = False  # also score the teacher (once per regime)
    threads: int = 1
    cache_dir: str | None = None  # where frozen teachers' outputs are kept for every worker

    @property
    def label(self) -> str:
        return f"{self.kind} {self.regime}/{self.method}/{self.tag}"


@dataclass
class JobResult:
    job: Job
    val: dict[int, float] = field(default_factory=dict)  # seed -> best validation score
    rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # seed -> test rows
    curve: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None  # a search candidate that diverged: it scores nan and loses


def run_job(job: Job) -> JobResult:
    """Train (or reuse) and score one run directory; runs in a worker process."""
    import torch

    from horkd.experiment import open_seed
    from horkd.experiment.run import run_seed
    from horkd.reference_cache import ReferenceCaches
    from horkd.run_dir import prepare_run_dir
    from horkd.trainer import TrainingDiverged

    torch.set_num_threads(job.threads)
    started = time.perf_counter()
    cfg = config_from_dict(job.config)
    run_dir = Path(cfg.output_dir)
    prepare_run_dir(cfg, run_dir, resume=True)
    caches = ReferenceCaches(job.cache_dir)
    result = JobResult(job)
    for seed in cfg.seeds:
        first = seed == cfg.seeds[0]  # the shared teacher is scored with the first seed only
        stored = _stored(job, run_dir, seed, first)
        if stored is not None:  # scored before: the test split is not scored again
            result.val[seed], result.rows[seed] = stored["val"], stored["rows"]
            if stored["curve"]:
                result.curve[seed] = stored["curve"]
            continue
        ctx, networks = open_seed(cfg, seed, progress=False, caches=caches)
        try:
            result.val[seed] = _validation_score(networks.student(job.method))
        except TrainingDiverged as exc:
            if job.kind != "search":
                raise  # a final run must finish: its seed cannot just be left out
            result.val[seed], result.error = float("nan"), str(exc)
            continue
        if job.kind == "final":
            scored = run_seed(ctx, networks, cfg.methods, with_teacher=job.with_teacher and first)
            result.rows[seed] = [row.as_dict() for row in scored.rows]
            if scored.curve:
                result.curve[seed] = scored.curve
            _store(job, run_dir, seed, first, result)
    result.seconds = time.perf_counter() - started
    return result


def _validation_score(outcome: Any) -> float:
    """The student's best validation score (what a search compares; the test split is not
    touched)."""
    if outcome.best_score is None:
        raise ValueError("the stage holds no validation score: the run needs data.val_fraction")
    return float(outcome.best_score)


def _score_key(job: Job, seed: int, first: bool) -> str:
    """What a stored final score depends on: the run's settings, not the list of seeds."""
    settings = {k: v for k, v in job.config.items() if k not in ("seeds", "name")}
    return settings_digest([settings, job.with_teacher and first, seed])


def _stored(job: Job, run_dir: Path, seed: int, first: bool) -> dict[str, Any] | None:
    path = run_dir / f"seed{seed}" / "study_scores.json"
    if job.kind != "final" or not path.exists():
        return None
    stored = json.loads(path.read_text())
    return stored if stored.get("key") == _score_key(job, seed, first) else None


def _store(job: Job, run_dir: Path, seed: int, first: bool, result: JobResult) -> None:
    from horkd.checkpoint import write_json

    write_json(
        run_dir / f"seed{seed}" / "study_scores.json",
        {
            "key": _score_key(job, seed, first),
            "val": result.val[seed],
            "rows": result.rows[seed],
            "curve": result.curve.get(seed, {}),
        },
    )


def execute(
    jobs: list[Job], workers: int, log: Callable[[str], None] = print
) -> list[JobResult]:
    """Run jobs in ``workers`` processes (in this one when 1), results in the jobs' order."""
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for job in jobs:
            results.append(run_job(job))
            log(_describe(results[-1]))
        return results
    done: dict[int, JobResult] = {}
    context = get_context("spawn")  # never fork a process whose thread pools have started
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            log(_describe(done[futures[future]]))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # report the error without running the rest
        raise
    pool.shutdown()
    return [done[i] for i in range(len(jobs))]


def _describe(result: JobResult) -> str:
    scores = ", ".join(f"seed {s}: {v:.2f}" for s, v in result.val.items())
    failed = f"; diverged: {result.error}" if result.error else ""
    return f"[{result.job.label}] val {scores} ({result.seconds:.0f} s){failed}"


class Study:
    """Builds every job's config from the study file and puts the results together."""

    def __init__(self, study: StudyConfig, root: Path, workers: int | None = None) -> None:
        self.study = study
        self.root = root
        self.out = Path(study.output_dir)
        self.workers = workers or study.workers
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        self.checkpoints: dict[str, str] = {}
        self.cache_dir = str(self.out / "reference_cache")

    # ------------------------------------------------------------------ configs
    def teacher_config(self, name: str) -> Any:
        path = self.root / self.study.teachers[name]
        return load_config(path, [f"output_dir={self.out / 'teachers' / name}"])

    def run_dir(self, regime: str, method: str, tag: str) -> Path:
        return self.out / "runs" / regime / method / tag

    def final_tag(self, regime: str, chosen: dict[str, Any]) -> str:
        """A searched regime's finals continue the chosen candidate's run; others have their own."""
        return chosen["tag"] if self.study.regimes[regime].choices_from is None else "chosen"

    def job_config(
        self, regime: str, method: str, tag: str, candidate: list[str], seeds: list[int],
        methods: list[str], curve: bool = False,
    ) -> dict[str, Any]:
        r = self.study.regimes[regime]
        raw = apply_overrides(self.study.base, r.overrides + candidate)
        raw["teacher"] = {**raw.get("teacher", {}), "checkpoint": self.checkpoints[r.teacher]}
        raw.update(
            name=f"{self.study.name}/{regime}/{method}/{tag}",
            output_dir=str(self.run_dir(regime, method, tag)),
            seeds=list(seeds),
            methods=list(methods),
        )
        if curve and self.study.curve_sizes:
            raw.setdefault("report", {})["resolution_sizes"] = list(self.study.curve_sizes)
        config_from_dict(raw)  # fail here, before any training, on a bad combination
        return raw

    def trained_methods(self, regime: str) -> list[str]:
        from horkd.methods import METHODS

        return [m for m in self.study.regime_methods(regime) if METHODS.get(m).trains]

    def reference_methods(self, regime: str) -> list[str]:
        from horkd.methods import methods_in

        return methods_in("reference", self.study.regime_methods(regime))

    # ------------------------------------------------------------------ phases
    def train_teachers(self, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
        """Each teacher once, in this process (it is the largest network: all threads)."""
        from horkd.experiment import open_seed
        from horkd.run_dir import prepare_run_dir

        info: dict[str, dict[str, Any]] = {}
        for name in self.study.teachers:
            cfg = self.teacher_config(name)
            prepare_run_dir(cfg, Path(cfg.output_dir), resume=True)
            seed = cfg.seeds[0]
            _, networks = open_seed(cfg, seed, progress=False)
            networks.teacher()
            self.checkpoints[name] = str(networks.stages.seed_dir / "teacher" / "model")
            record = networks.outcome("teacher")
            info[name] = {
                "checkpoint": self.checkpoints[name],
                "config": str(self.root / self.study.teachers[name]),
                "arch": cfg.teacher.arch,
                "epochs": cfg.train.teacher.epochs,
                "val": record.best_score,
                "train_seconds": record.record.get("seconds"),
            }
            log(f"[teacher {name}] {cfg.teacher.arch}, best val {record.best_score:.2f}")
        return info

    def search_jobs(self) -> list[Job]:
        jobs = []
        for regime, r in self.study.regimes.items():
            if r.choices_from is not None:
                continue
            for method in self.trained_methods(regime):
                for i, candidate in enumerate(self.study.search.candidates[method]):
                    tag = f"c{i}"
                    raw = self.job_config(regime, method, tag, candidate,
                                          [self.study.search.seed], [method])
                    jobs.append(Job("search", regime, method, tag, raw, threads=self.threads,
                                    cache_dir=self.cache_dir))
        return jobs

    def choose(self, results: list[JobResult]) -> dict[str, dict[str, dict[str, Any]]]:
        """regime -> method -> the candidate with the best validation score (first on ties)."""
        choices: dict[str, dict[str, dict[str, Any]]] = {}
        for res in results:
            job = res.job
            score = res.val[self.study.search.seed]
            entry = choices.setdefault(job.regime, {}).setdefault(
                job.method, {"scores": {}, "tag": None, "val": float("-inf")}
            )
            entry["scores"][job.tag] = score
            if score > entry["val"]:
                entry.update(tag=job.tag, val=score)
        for regime, r in self.study.regimes.items():
            if r.choices_from is not None:
                choices[regime] = choices[r.choices_from]
        for per_method in choices.values():
            for method, entry in per_method.items():
                if entry["tag"] is None:
                    raise ValueError(
                        f"search: no candidate of '{method}' reached a finite validation score "
                        f"({entry['scores']}); widen or fix its candidates"
                    )
                index = int(entry["tag"][1:])
                entry["overrides"] = self.study.search.candidates[method][index]
        return choices

    def final_jobs(self, choices: dict[str, dict[str, dict[str, Any]]]) -> list[Job]:
        jobs = []
        for regime, r in self.study.regimes.items():
            curve = regime == self.study.main_regime
            for method in self.trained_methods(regime):
                chosen = choices[regime][method]
                tag = self.final_tag(regime, chosen)
                # the regime's teacher rows are scored once, beside its first trained method
                with_teacher = method == self.trained_methods(regime)[0]
                methods = [*self.reference_methods(regime), method] if with_teacher else [method]
                raw = self.job_config(regime, method, tag, chosen["overrides"],
                                      r.seeds or self.study.seeds, methods, curve=curve)
                jobs.append(Job("final", regime, method, tag, raw, with_teacher, self.threads,
                                self.cache_dir))
        return jobs

    def ablation(self, choices: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
        """The orders ablation of each ablated method's chosen settings in the main regime."""
        from horkd.experiment import run_ablation

        regime = self.study.main_regime
        methods = [m for m in self.ablated_methods() if m in self.trained_methods(regime)]
        if not methods:
            return None
        merged: dict[str, Any] = {"orders": {}}
        for method in methods:
            chosen = choices[regime][method]
            tag = self.final_tag(regime, chosen)
            raw = self.job_config(regime, method, tag, chosen["overrides"],
                                  self.study.ablation_seeds, [method])
            result = run_ablation(config_from_dict(raw), progress=False, resume=True)
            merged.update(metric=result.metric, seeds=result.seeds)
            merged["orders"].update(result.orders)
        return merged

    def ablated_methods(self) -> list[str]:
        from horkd.methods import METHODS, methods_in

        if self.study.ablation_methods is not None:
            return self.study.ablation_methods
        main = self.study.regime_methods(self.study.main_regime)
        return [m for m in methods_in("ours", main) if METHODS.get(m).follows_orders]


def run_study(
    path: str | Path, *, workers: int | None = None, log: Callable[[str], None] = print
) -> Path:
    """Run (or continue) the whole study; writes OUT/study.json and returns its path."""
    study, root = load_study(path)
    runner = Study(study, root, workers)
    started = time.time()
    teachers = runner.train_teachers(log)
    search = execute(runner.search_jobs(), runner.workers, log)
    choices = runner.choose(search)
    finals = execute(runner.final_jobs(choices), runner.workers, log)
    ablation = runner.ablation(choices)
    summary = {
        "study": study.model_dump(mode="json"),
        "study_file": str(path),
        "teachers": teachers,
        "search": [_result_dict(r) for r in search],
        "choices": choices,
        "finals": [_result_dict(r) for r in finals],
        "ablation": ablation,
        "seconds": time.time() - started,
        "workers": runner.workers,
        "threads_per_worker": runner.threads,
    }
    runner.out.mkdir(parents=True, exist_ok=True)
    out = runner.out / "study.json"
    out.write_text(json.dumps(summary, indent=1))
    return out


def _result_dict(result: JobResult) -> dict[str, Any]:
    job = asdict(result.job)
    job.pop("config")
    return {
        **job,
        "output_dir": result.job.config["output_dir"],
        "val": result.val,
        "rows": result.rows,
        "curve": result.curve,
        "seconds": result.seconds,
        "error": result.error,
    }
