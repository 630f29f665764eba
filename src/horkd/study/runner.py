"""Run a study: teachers once, the search on validation data, then the final seeds on test.

Every run is an ordinary horkd run directory under ``OUT/runs/<regime>/<method>/<candidate>``
(``<candidate>-seed<N>`` for a final seed: a job per seed, so workers share a method's seeds), so
each stage resumes and is reused exactly as in ``horkd run``. Every finished seed of every job is
also kept as a run record (``records``, committed with the study): a recorded run is never
trained again, so a fresh clone retrains only what is missing, and a study that records every run
rebuilds its page in minutes. Regimes run one after another (search, choice, finals), so a study
stopped half-way holds finished regimes; within a regime, runs and the teachers they need are
trained seed-major by the worker pool (``schedule``). Candidates are scored on the validation
split only; the test split is scored once per final model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from horkd.checkpoint import write_json
from horkd.config import apply_overrides, config_from_dict, load_config
from horkd.data.validation_source import describe_validation
from horkd.notes import once_per_invocation
from horkd.numerics_version import NUMERICS_VERSION
from horkd.run_dir import teacher_fingerprint
from horkd.study.ablations import ablated_methods, ablation_job
from horkd.study.config import StudyConfig, load_study, searched
from horkd.study.executors import Engine, ExecutorConfig, make_engine
from horkd.study.jobs import (
    Job,
    JobResult,
    SharedFolder,
    TeacherJob,
    describe_teacher,
    merge_seeds,
    run_job,
    run_teacher,
    save_teacher,
)
from horkd.study.plan import Planner, count, to_train, walk
from horkd.study.progress import Progress
from horkd.study.records import (
    RecordBook,
    environment,
    environment_differences,
    read_teacher_record,
)
from horkd.study.search_rounds import extend_searches, mean_score, search_seeds
from horkd.study.selection import Selection
from horkd.study.teacher_identity import RegimeTeachers, identity, learns_from_teacher
from horkd.study.threads import default_threads


class Teachers:
    """The study's teachers: trained once (per seed for a ``teacher_per_seed`` regime), as tasks
    of the worker pool, and only when a run that is not recorded needs one."""

    def __init__(
        self, study: StudyConfig, root: Path, book: RecordBook, log: Callable, threads: int,
        out: Path,
    ) -> None:
        self.study, self.root, self.book, self.log = study, root, book, log
        self.out = out / "teachers"
        self.threads = threads  # results on a CPU depend on the thread count: keep it fixed
        self.per_seed = {r.teacher_names[0] for r in study.regimes.values() if r.teacher_per_seed}
        self.shared: SharedFolder | None = None  # set when runs may train on other machines
        self.gpus = 0.0  # what a teacher asks an engine for besides its threads
        self._first: dict[str, int] = {}

    def run_dir(self, name: str, seed: int | str) -> Path:
        """A teacher trained per seed (a per-seed regime's, or one of several teacher seeds)
        has a run directory per seed, so two workers can train two seeds' teachers at once; a
        shared teacher (its config's own first seed) has one."""
        own = name not in self.per_seed and str(seed) == str(self.first_seed(name))
        return self.out / (name if own else f"{name}-seed{seed}")

    def first_seed(self, name: str) -> int:
        """The teacher config's own first seed (read once)."""
        if name not in self._first:
            self._first[name] = self.config(name).seeds[0]
        return self._first[name]

    def overrides(self, name: str, seed: int | None = None) -> list[str]:
        if seed is None:
            return [f"output_dir={self.out / name}"]
        return [f"output_dir={self.run_dir(name, seed)}", f"seeds=[{seed}]"]

    def config(self, name: str, seed: int | None = None) -> Any:
        """Teacher ``name``'s experiment config (a file beside the study, or written in it),
        for one ``seed`` (default: its own first)."""
        given = self.study.teachers[name]
        if isinstance(given, dict):
            return config_from_dict(dict(given), self.overrides(name, seed))
        return load_config(self.root / given, self.overrides(name, seed))

    def slots(self, regime: str) -> list[tuple[str, int]]:
        """The teachers a regime's seeds are spread over: each name x each teacher seed."""
        r = self.study.regimes[regime]
        return [(name, seed) for name in r.teacher_names
                for seed in (r.teacher_seeds or [self.first_seed(name)])]

    def slot(self, regime: str, seed: int) -> tuple[str, int]:
        """The teacher (name, seed) a run of ``regime`` with ``seed`` learns from: its own seed's
        for a per-seed regime, else round-robin over :meth:`slots` by the seed's index among
        the regime's final seeds (a search seed: among the search seeds) - fixed by the study
        file alone."""
        r = self.study.regimes[regime]
        if r.teacher_per_seed:
            return r.teacher_names[0], seed
        slots = self.slots(regime)
        finals = r.seeds or self.study.seeds
        searches = search_seeds(self.study)
        index = (finals.index(seed) if seed in finals
                 else searches.index(seed) if seed in searches else 0)
        return slots[index % len(slots)]

    def seed_of(self, regime: str, seed: int) -> int:
        """Which teacher seed a run of ``regime`` with ``seed`` learns from."""
        return self.slot(regime, seed)[1]

    def checkpoint(self, name: str, per_seed: bool, seed: int | None = None) -> str:
        """Where a run finds its teacher; ``{seed}`` is filled in by the run, per seed."""
        if per_seed:
            return str(self.run_dir(name, "{seed}") / "seed{seed}" / "teacher" / "model")
        seed = self.first_seed(name) if seed is None else seed
        return str(self.run_dir(name, seed) / f"seed{seed}" / "teacher" / "model")

    def fingerprint(self, name: str, seed: int) -> str:
        return teacher_fingerprint(self.config(name, seed), seed)

    def job(self, name: str, seed: int) -> TeacherJob:
        """The task that trains (or loads) teacher ``name`` of ``seed`` and records its facts."""
        cfg = self.config(name, seed)
        facts = {"name": name, "seed": seed, "fingerprint": teacher_fingerprint(cfg, seed),
                 "numerics_version": NUMERICS_VERSION,
                 "config": self.study.teachers[name], "arch": cfg.teacher.arch,
                 "epochs": cfg.train.teacher.epochs,
                 "validation": describe_validation(cfg.data.model_dump())}
        return TeacherJob(name, seed, cfg.model_dump(mode="json"),
                          str(self.book.teacher_path(name, seed)), facts, self.threads,
                          self.shared, self.gpus)

    def ensure(self, name: str, seed: int, quiet: bool = False) -> dict[str, Any]:
        """Train (or load) teacher ``name`` of ``seed`` in this process (``quiet``: the caller
        says what it reached)."""
        job = self.job(name, seed)
        info = save_teacher(job, run_teacher(job))
        if not quiet:
            self.log(describe_teacher(info))
        return info

    def recorded(self) -> dict[str, dict[str, Any]]:
        """Every teacher's recorded facts, by ``name`` (``name/seed`` for per-seed teachers)."""
        out = {}
        for path in sorted((self.book.folder / "teachers").glob("*.json")):
            info = read_teacher_record(path)
            if info is not None:
                out[f"{info['name']}/seed{info['seed']}"] = info
        return out


class Study:
    """Builds every job's config from the study file and puts the results together."""

    def __init__(
        self,
        study: StudyConfig,
        root: Path,
        workers: int | None = None,
        threads: int | None = None,
        log: Callable[[str], None] = print,
        only: list[str] | None = None,
        executor: ExecutorConfig | None = None,
    ) -> None:
        self.study = study
        self.only = Selection(study, only)
        self.root = root
        self.out = Path(study.output_dir).resolve()  # workers elsewhere have another cwd
        self.executor = executor or study.executor
        self.workers = workers or study.workers
        chosen = (threads, "--threads") if threads else default_threads(self.executor,
                                                                         self.workers)
        self.threads, self.threads_from = chosen  # the log says where the number came from
        self.book = RecordBook((root / study.records).resolve())
        self.teachers = Teachers(study, root, self.book, log, self.threads, self.out)
        self.teachers.gpus = self.executor.gpus_per_job
        self.cache_dir = str(self.out / "reference_cache")
        self.log = log
        self.progress: Progress | None = None
        self._engine: Engine | None = None
        self.planner: Planner | None = None  # set while the study is walked without training
        self.identities = RegimeTeachers(self.book, self._teacher_checkpoint)
        self.extended: dict[tuple[str, str], list[list[str]]] = {}  # search.extend's steps
        self._said: set[str] = set()  # lines about teachers already logged

    @property
    def engine(self) -> Engine:
        """The executor, made on first use; runs that may leave this machine get a marker file
        they must find, so a worker without the shared output folder fails with one line."""
        if self._engine is None:
            self._engine = make_engine(self.executor, self.workers, self.threads, self.out)
            if self._engine.remote:
                self.teachers.shared = SharedFolder.mark(self.out)
        return self._engine

    # ------------------------------------------------------------------ configs
    def run_dir(self, regime: str, method: str, tag: str) -> Path:
        return self.out / "runs" / regime / method / tag

    def final_tag(self, regime: str, chosen: dict[str, Any]) -> str:
        """A searched regime's finals continue the chosen candidate's run; others have their own."""
        if chosen["tag"] == "fixed" or self.study.regimes[regime].choices_from is None:
            return chosen["tag"]
        return "chosen"

    def job(
        self, kind: str, regime: str, method: str, tag: str, candidate: list[str],
        seeds: list[int], methods: list[str], with_teacher: bool = False,
        run_name: str | None = None,
    ) -> Job:
        r = self.study.regimes[regime]
        raw = apply_overrides(self.study.base, r.overrides + candidate)
        slots = {seed: self.teachers.slot(regime, seed) for seed in seeds}
        name, first = slots[seeds[0]]
        checkpoint = self.teachers.checkpoint(name, r.teacher_per_seed, first)
        raw["teacher"] = {**raw.get("teacher", {}), "checkpoint": checkpoint}
        raw.update(
            name=f"{self.study.name}/{regime}/{method}/{tag}",
            output_dir=str(self.run_dir(regime, method, run_name or tag)),
            seeds=list(seeds),
            methods=list(methods),
        )
        curve = (regime == self.study.main_regime or r.curve or bool(r.specialists)
                 or any(regime in other.specialists for other in self.study.regimes.values()))
        if kind == "final" and curve and self.study.curve_sizes:
            raw.setdefault("report", {})["resolution_sizes"] = list(self.study.curve_sizes)
        config_from_dict(raw)  # fail here, before any training, on a bad combination
        teacher = {str(seed): {"name": name, "fingerprint": self.teachers.fingerprint(name, tseed)}
                   for seed, (name, tseed) in slots.items()}
        job = Job(kind, regime, method, tag, raw, teacher, str(self.book.folder), with_teacher,
                  self.threads, self.cache_dir, gpus=self.executor.gpus_per_job)
        stale = self.identities.stale_seeds(job)
        for seed in stale:
            self._say(f"{job.label} seed {seed}: learnt from another teacher than the regime's "
                      "other runs: pending, trains again from the regime's teacher")
        return replace(job, stale=stale) if stale else job

    def _teacher_checkpoint(self, fingerprint: str) -> str | None:
        """The checkpoint a run learning from the teacher of ``fingerprint`` loads now."""
        if not hasattr(self, "_checkpoints"):
            self._checkpoints: dict[str, str] = {}
            for regime in self.study.regimes:
                seeds = (self.study.regimes[regime].seeds or self.study.seeds) + search_seeds(
                    self.study)
                for name, tseed in {self.teachers.slot(regime, s) for s in seeds}:
                    self._checkpoints[self.teachers.fingerprint(name, tseed)] = (
                        self.teachers.checkpoint(name, False, tseed))
        return self._checkpoints.get(fingerprint)

    def _say(self, line: str) -> None:
        """Log a line about teachers once (not while the study is only planned: --status
        shows it there)."""
        if self.planner is None and line not in self._said:
            self._said.add(line)
            self.log(line)

    def trained_methods(self, regime: str) -> list[str]:
        """The methods this regime trains itself (not those it reuses from another regime)."""
        from horkd.methods import METHODS

        reused = self.study.regimes[regime].reuse
        return [m for m in self.study.regime_methods(regime)
                if METHODS.get(m).trains and m not in reused]

    def reference_methods(self, regime: str) -> list[str]:
        from horkd.methods import METHODS

        return [m for m in self.study.regime_methods(regime) if not METHODS.get(m).trains]

    # ------------------------------------------------------------------ phases
    def candidates(self, regime: str, method: str) -> list[list[str]]:
        """A method's search candidates in a regime: the declared ones, then those added where
        the choice sat at an end of the grid (``search.extend``)."""
        return self.study.candidates(regime, method) + self.extended.get((regime, method), [])

    def search_jobs(self, regime: str) -> list[Job]:
        return [job for method in self.trained_methods(regime) if searched(method)
                for i in range(len(self.candidates(regime, method)))
                for job in self.candidate_jobs(regime, method, i)]

    def candidate_jobs(self, regime: str, method: str, index: int) -> list[Job]:
        """A job per search seed of one candidate (the first seed in the run directory
        ``c<i>``, as with a single search seed)."""
        candidate = self.candidates(regime, method)[index]
        return [self.job("search", regime, method, f"c{index}", candidate, [seed], [method],
                         run_name=f"c{index}" if k == 0 else f"c{index}-seed{seed}")
                for k, seed in enumerate(search_seeds(self.study))]

    def final_jobs(self, regime: str, choices: dict[str, dict[str, Any]]) -> list[Job]:
        """A job per method and seed (so the workers share a method's seeds), each in a run
        directory of its own."""
        seeds = self.study.regimes[regime].seeds or self.study.seeds
        jobs = []
        trained = self.trained_methods(regime)
        for method in trained:
            if method not in choices:  # its search is unfinished: its finals wait for it
                continue
            chosen = choices[method]
            tag = self.final_tag(regime, chosen)
            for seed in seeds:
                # the regime's teacher rows are scored once: its first method, its first seed
                with_teacher = method == trained[0] and seed == seeds[0]
                methods = [*self.reference_methods(regime), method] if with_teacher else [method]
                jobs.append(self.job("final", regime, method, tag, chosen["overrides"], [seed],
                                     methods, with_teacher, run_name=f"{tag}-seed{seed}"))
        return jobs

    def run(self, jobs: list[Job], train: bool) -> list[JobResult]:
        """Every job's results: recorded ones read, the others trained (their teachers first);
        with ``train=False`` (or for a job ``--only`` leaves out) the unrecorded seeds are left
        out."""
        picked = [train and self.only.job(j) for j in jobs]
        for job in (j for j, p in zip(jobs, picked, strict=True) if p):
            if line := self.identities.new_teacher_note(job):
                self._say(line)
        if self.planner is not None:
            self.planner.jobs(jobs, [self.only.job(j) for j in jobs])
        trained = iter(self._train([j for j, p in zip(jobs, picked, strict=True) if p]))
        return [
            next(trained) if p else JobResult(j, {s: r for s in j.seeds if (r := j.recorded(s))})
            for j, p in zip(jobs, picked, strict=True)
        ]

    def _train(self, jobs: list[Job]) -> list[JobResult]:
        from horkd.study.dispatch import train_jobs

        return train_jobs(self, jobs)

    def regimes(self, train: bool) -> tuple[list[JobResult], dict[str, Any], list[JobResult]]:
        """Search, choice and finals of every regime. Every search goes out in one batch and
        every final whose settings are chosen in a second, so a regime's last slow run never
        holds back another regime's work (a worker, or a cluster, stays busy)."""
        order = self.study.order()
        found = merge_seeds(self.run([job for regime in order
                                      if self.study.regimes[regime].choices_from is None
                                      for job in self.search_jobs(regime)], train))
        found += extend_searches(self, found, train)
        choices: dict[str, Any] = {}
        final_jobs: list[Job] = []
        for regime in order:
            chosen = self._choices(regime, found, choices)
            if self.planner is not None:  # finals waiting for a search, some methods or all
                self.planner.waiting(regime, [m for m in self.trained_methods(regime)
                                              if chosen is None or m not in chosen])
            if chosen is None:
                continue
            choices[regime] = chosen
            final_jobs += self.final_jobs(regime, chosen)
        finals = merge_seeds(self.run(final_jobs, train))
        for regime in order:
            for method, source in self.study.regimes[regime].reuse.items():
                if regime not in choices:
                    continue
                choices[regime][method] = {"scores": {}, "tag": "fixed", "val": None,
                                           "overrides": [], "from": source}
                finals += [reused(res, regime) for res in finals
                           if res.job.regime == source and res.job.method == method]
        return found, choices, finals

    def _choices(self, regime: str, found: list[JobResult],
                 chosen: dict[str, Any]) -> dict[str, Any] | None:
        """The settings ``regime``'s finals train with: its own search's picks, or those of the
        regime it takes its choices from; None while the search they come from is unfinished."""
        r = self.study.regimes[regime]
        if r.choices_from is None:
            mine = [res for res in found if res.job.regime == regime]
            waiting = {res.job.method for res in mine
                       if any(s not in res.records for s in search_seeds(self.study))}
            if waiting:  # each method's finals wait for its own search, not for another's
                self.log(f"[{regime}] search of {', '.join(sorted(waiting))} incomplete: "
                         "their finals wait")
            done = [res for res in mine if res.job.method not in waiting]
            trained = [m for m in self.trained_methods(regime) if m not in waiting]
            return (choose(self.study, regime, done, trained,
                           lambda method: self.candidates(regime, method)) if trained else None)
        if r.choices_from not in chosen:
            return None
        picks = {m: c for m, c in chosen[r.choices_from].items()
                 if m in self.trained_methods(regime)}
        source = self.trained_methods(r.choices_from)
        for method in self.trained_methods(regime):
            if method in source and searched(method) and method not in picks:
                continue  # its search in the source regime is unfinished: it waits
            picks.setdefault(method, {"scores": {}, "tag": "fixed", "val": None, "overrides": []})
        return picks or None


def choose(study: StudyConfig, regime: str, results: list[JobResult], trained: list[str],
           candidates: Any = None) -> dict[str, dict[str, Any]]:
    """method -> the candidate with the best validation score, its mean over the search seeds
    (first on ties); ``trained`` methods that are not searched keep their fixed settings.
    ``candidates(method)``: the method's candidate list (default: the study file's)."""
    candidates = candidates or (lambda method: study.candidates(regime, method))
    seeds = search_seeds(study)
    choices: dict[str, dict[str, Any]] = {}
    for res in results:
        job = res.job
        score = mean_score([res.records[s].val for s in seeds])
        entry = choices.setdefault(job.method, {"scores": {}, "tag": None, "val": -math.inf})
        entry["scores"][job.tag] = score
        if score > entry["val"]:
            entry.update(tag=job.tag, val=score)
    for method, entry in choices.items():
        if entry["tag"] is None:
            raise ValueError(
                f"search in '{regime}': no candidate of '{method}' reached a finite "
                f"validation score ({entry['scores']}); widen or fix its candidates"
            )
        entry["overrides"] = candidates(method)[int(entry["tag"][1:])]
    for method in trained:
        if not searched(method):
            choices[method] = {"scores": {}, "tag": "fixed", "val": None, "overrides": []}
    return choices


def reused(result: JobResult, regime: str) -> JobResult:
    """Another regime's runs of one method shown in ``regime``: its own rows only (the source
    regime's teacher rows belong to the source's teacher), counted as trained there."""
    records = {seed: replace(record, rows=[r for r in record.rows
                                          if r.get("method") == result.job.method])
               for seed, record in result.records.items()}
    return JobResult(replace(result.job, regime=regime, with_teacher=False), records, False)


def ablation(
    runner: Study, choices: dict[str, dict[str, dict[str, Any]]], train: bool = True
) -> dict[str, Any] | None:
    """The orders ablation of each ablated method's chosen settings in the main regime
    (recorded like the runs: a recorded ablation is read, not trained again). Each one trained
    is a task of the study's count, as its runs are."""
    from horkd.experiment import run_ablation
    from horkd.study.jobs import describe_teacher

    regime = runner.study.main_regime
    methods = [m for m in ablated_methods(runner) if m in runner.trained_methods(regime)]
    if not methods or regime not in choices:
        return None
    merged: dict[str, Any] = {"orders": {}}
    progress = runner.progress
    for method in methods:
        planned = ablation_job(runner, choices[regime][method], method)
        job, stored = planned.job, planned.recorded()
        if stored is None:
            if not train:
                continue
            what = f"ablation {regime}/{method} seeds {','.join(map(str, job.seeds))}"
            if progress is not None:
                progress.starting(what)
            started = time.perf_counter()
            for seed in job.seeds:
                name = job.teacher[str(seed)]["name"]
                info = runner.teachers.ensure(name, runner.teachers.seed_of(regime, seed),
                                              quiet=progress is not None)
                if progress is not None:
                    progress.finished(describe_teacher(info), 1, trained=info["trained_here"],
                                      kind=("teacher", name), seconds=info["seconds_here"])
            result = run_ablation(config_from_dict(job.config), progress=False, resume=True)
            stored = {"key": planned.key, "result": result.as_dict()}
            write_json(planned.path, stored)
            if progress is not None:
                seconds = time.perf_counter() - started
                progress.finished(f"{what}: {len(result.orders.get(method, {}))} order sets "
                                  f"({seconds:.0f} s)", 0, kind=("ablation", method),
                                  seconds=seconds)
        merged.update(metric=stored["result"]["metric"], seeds=stored["result"]["seeds"])
        merged["orders"].update(stored["result"]["orders"])
    return merged if merged["orders"] else None


def ablation_cost(runner: Study) -> dict[Any, tuple[Any, float]]:
    """What an ablation's time is like, for the ETA: one final run of its method in the main
    regime for each order subset and ablation seed."""
    from horkd.experiment.run import ORDER_SUBSETS

    regime = runner.study.main_regime
    runs = len(ORDER_SUBSETS) * len(runner.study.ablation_seeds)
    return {("ablation", m): ((regime, m), runs) for m in ablated_methods(runner)}


def run_study(
    path: str | Path,
    *,
    workers: int | None = None,
    threads: int | None = None,
    train: bool = True,
    log: Callable[[str], None] = print,
    only: list[str] | None = None,
    executor: ExecutorConfig | None = None,
    register: list[str] | None = None,
) -> Path:
    """Run (or continue) the whole study; writes OUT/study.json and returns its path. With
    ``train=False`` nothing is trained: the summary holds what the records hold. ``only``
    (``"regime"`` or ``"regime/method"`` items) trains those first; the rest is read from the
    records, as with ``train=False``. ``executor`` (default: the study file's) says where runs
    train. ``register``: confirmatory regimes whose design is registered anew first."""
    from horkd.study import registration

    study, root = load_study(path)
    runner = Study(study, root, workers, threads, log, only, executor)
    for regime in register or []:
        if study.regimes.get(regime) is None or study.regimes[regime].role != "confirmatory":
            raise ValueError(f"--register {regime}: not a confirmatory regime of the study")
        registration.register(runner, regime, log)
    registered = registration.check(runner, train, log)
    started = time.time()
    if train:
        planner = walk(runner)
        tasks = to_train(runner, planner)
        recorded = sum(1 for p in planner.runs if p.state == "recorded")
        where = runner.executor.kind + (f" at {runner.executor.address}"
                                        if runner.executor.address else "")
        log(f"study {study.name}: {count(len(tasks), 'task')} to train ({tasks.parts()}; "
            f"{recorded} of {len(planner.runs)} runs recorded) on {where}, {runner.threads} thread(s) per run ({runner.threads_from})"
            + (f", {runner.workers} worker(s)" if runner.executor.kind == "local" else ""))
        if len(tasks):
            runner.engine  # noqa: B018  (made now: a missing extra or cluster fails first)
        runner.progress = Progress(len(tasks), log, kinds=tasks.kinds, prior=tasks.prior,
                                   workers=runner.workers, like=ablation_cost(runner))
    try:
        with once_per_invocation():  # a note true of every run (the data's) is said once
            try:
                search, choices, finals = runner.regimes(train)
            finally:
                if runner._engine is not None:
                    runner._engine.close()
                if runner.teachers.shared is not None:
                    runner.teachers.shared.remove()
            ablate = train and runner.only.regime(study.main_regime, ablated_methods(runner))
            ablation_result = ablation(runner, choices, ablate) if study.ablation_seeds else None
    finally:
        if runner.progress is not None:
            runner.progress.close()
    summary = {
        "study": study.model_dump(mode="json"),
        "study_file": str(path),
        "teachers": runner.teachers.recorded(),
        "search": [_result_dict(r) for r in search],
        "choices": choices,
        "registrations": registered,
        "extended": {regime: {m: c for (r, m), c in runner.extended.items() if r == regime}
                     for regime in {r for r, _ in runner.extended}},
        "finals": [_result_dict(r) for r in finals],
        "ablation": ablation_result,
        "seconds": time.time() - started,
        "compute_seconds": sum(r.cost() for res in search + finals
                               for r in res.records.values() if r.regime == res.job.regime),
        "workers": runner.workers,
        "threads_per_worker": runner.threads,
    }
    runner.out.mkdir(parents=True, exist_ok=True)
    out = runner.out / "study.json"
    write_json(out, summary, "the study's summary")  # whole or as it was
    return out


def study_status(path: str | Path) -> str:
    """``horkd study FILE --status``: the table of what is recorded, running and pending."""
    from horkd.study import registration
    from horkd.study.plan import status

    study, root = load_study(path)
    runner = Study(study, root)
    registration.check(runner, train=False)  # a changed registered design: refused here too
    return status(runner)


def _result_dict(result: JobResult) -> dict[str, Any]:
    job = result.job
    records = result.records
    return {
        "kind": job.kind,
        "regime": job.regime,
        "method": job.method,
        "tag": job.tag,
        "with_teacher": job.with_teacher,
        "seeds": sorted(records),
        "output_dir": job.config["output_dir"],
        "val": {s: r.val for s, r in records.items()},
        "rows": {s: r.rows for s, r in records.items() if r.rows},
        "curve": {s: r.curve for s, r in records.items() if r.curve},
        "history": {s: r.history for s, r in records.items()},
        "facts": {s: r.facts for s, r in records.items() if r.facts},
        "seconds": sum(r.seconds for r in records.values()),
        "cpu_seconds": {s: r.cost() for s, r in records.items()},
        "numerics": {s: r.numerics_version for s, r in records.items()},
        "teacher": {s: r.teacher.get("fingerprint") for s, r in records.items()},
        # the weights each seed learnt from (None: the method learns from no teacher)
        "weights": {s: identity(r.teacher) if learns_from_teacher(r.method) else None
                    for s, r in records.items()},
        "error": result.error,
    }


def reproduce(path: str | Path, record_path: str | Path, log: Callable[[str], None] = print) -> bool:
    """Train one recorded run again from its settings in a fresh directory and say whether it
    reproduces the recorded scores exactly (bit for bit on CPU with the same thread count)."""
    import tempfile

    from horkd.study.records import read_record

    study, root = load_study(path)
    record = read_record(record_path)
    runner = Study(study, root, 1, record.threads, log)
    teacher_seed = runner.teachers.seed_of(record.regime, record.seed)
    teacher = runner.teachers.ensure(record.teacher["name"], teacher_seed)
    with tempfile.TemporaryDirectory() as scratch:
        config = {**record.config, "output_dir": str(Path(scratch) / "run"),
                  "seeds": [record.seed]}
        job = Job(record.kind, record.regime, record.method, record.tag, config,
                  {str(record.seed): record.teacher},
                  str(Path(scratch) / "records"), record.kind == "final" and any(
                      row["role"] == "teacher" for row in record.rows), record.threads)
        again = run_job(job).records[record.seed]
    same_val = again.val == record.val or (math.isnan(again.val) and math.isnan(record.val))
    same_rows = again.rows == record.rows
    log(f"recorded val {record.val!r}, again {again.val!r}; test rows "
        f"{'identical' if same_rows else 'differ'} ({again.seconds:.0f} s, "
        f"{record.threads} thread(s))")
    if not same_rows:
        for old, new in zip(record.rows, again.rows, strict=False):
            if old != new:
                log(f"  {old.get('method')}: recorded {old} vs {new}")
    if not (same_val and same_rows):
        per_seed = study.regimes[record.regime].teacher_per_seed
        checkpoint = runner.teachers.checkpoint(record.teacher["name"], per_seed,
                                                None if per_seed else teacher_seed)
        for line in why_not_reproduced(record, teacher, checkpoint.format(seed=teacher_seed)):
            log(line)
    return same_val and same_rows


def why_not_reproduced(record: Any, teacher: dict[str, Any], checkpoint: str) -> list[str]:
    """What differs between the recorded run and this one besides its settings (which the
    record's key fixes): the teacher it learnt from, and the CPU and PyTorch that computed it."""
    lines = []
    here = teacher.get("val_here", teacher["val"])
    if here != teacher["val"]:
        lines.append(f"why: its teacher was trained again here (best val {here:.2f}, recorded "
                     f"{teacher['val']:.2f}), so everything that learns from it differs; with the "
                     f"original teacher's checkpoint at {checkpoint} the run learns from that one")
    gpu = record.environment.get("gpu", "none")
    if gpu != "none" and record.config.get("device", "auto") != "cpu":
        lines.append(f"why: it was trained on a GPU ({gpu}), whose kernels are not bit-exact from "
                     "one run to the next: small differences are expected there")
    if not record.environment:
        lines.append(f"why: the record does not say which CPU and PyTorch trained it (recorded "
                     f"before that was kept; machine {record.machine}); bit-exact holds only on "
                     "the same kind of CPU with the same PyTorch and threads")
    elif diff := environment_differences(record.environment, environment()):
        lines.append("why: trained elsewhere (" + "; ".join(
            f"{k} {a} there, {b} here" for k, (a, b) in diff.items()) + "): another CPU kind or "
            "PyTorch rounds differently, so bit-exact holds only where the record was made")
    if not lines:
        lines.append("why: unknown - the same teacher, CPU kind, PyTorch and threads gave other "
                     "numbers; that is a reproducibility bug worth reporting")
    return lines
