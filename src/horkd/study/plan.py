"""Where a study stands, without training anything: every run with its state, and the table
``horkd study FILE --status`` prints. The study is walked as a run with ``train=False`` walks
it, a :class:`Planner` noting each job it meets; a run is running when a live process holds its
run directory's lock.

The study's own count (``N tasks to train``, its ``[k/N]`` lines) and ``--status`` count the same
thing, :class:`Tasks`: each run (one seed of one method's settings) not recorded, each teacher
whose checkpoint is not trained yet (once, however many batches load it), and each orders
ablation not recorded. The count said 32 tasks where ``--status`` said 30 runs: it counted a
teacher task in each of the two batches (searches, finals), the second one a load.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from horkd.run_lock import holder
from horkd.study.jobs import Job


@dataclass(frozen=True)
class PlannedRun:
    """One seed of one job as the study stands: recorded, running (a live process holds its run
    directory), pending, or waiting (a final whose regime's search is not finished)."""

    kind: str
    regime: str
    method: str
    tag: str
    seed: int
    state: str
    selected: bool  # whether this invocation trains it (``--only``)
    teacher: tuple[str, int]  # the teacher it learns from: (name, seed)
    holder: str | None = None
    why: str | None = None  # why a recorded run is pending again

    @property
    def label(self) -> str:
        return f"{self.kind} {self.regime}/{self.method}/{self.tag} seed {self.seed}"


class Planner:
    """Notes the jobs a study's walk meets (``study`` is a :class:`~horkd.study.runner.Study`)."""

    def __init__(self, study: Any) -> None:
        self.study = study
        self.runs: list[PlannedRun] = []
        self.choices: dict[str, Any] = {}  # each regime's chosen settings, where known
        self.seconds: dict[Hashable, list[float]] = {}  # recorded runs' times, by kind

    def jobs(self, jobs: list[Job], selected: list[bool]) -> None:
        for job, picked in zip(jobs, selected, strict=True):
            who = holder(job.config["output_dir"])
            for seed in job.seeds:
                record = job.recorded(seed)
                state = ("recorded" if record is not None
                         else "running" if who else "pending")
                if record is not None and record.threads == self.study.threads and record.seconds:
                    self.seconds.setdefault((job.regime, job.method), []).append(record.seconds)
                teacher = (job.teacher[str(seed)]["name"],
                           self.study.teachers.seed_of(job.regime, seed))
                why = "learnt from another teacher" if seed in job.stale else None
                self.runs.append(PlannedRun(job.kind, job.regime, job.method, job.tag, seed,
                                            state, picked, teacher, who, why))

    def waiting(self, regime: str, methods: list[str]) -> None:
        """The finals of ``methods`` in ``regime``, which wait for the search that chooses their
        settings (a method that is not searched, the LR oracle, has its finals listed anyway)."""
        study = self.study
        r = study.study.regimes[regime]
        for method in methods:
            # this method's own selection: ``--only few/horkd`` trains no final of few/scratch,
            # so the [k/N] count must not wait for one
            picked = study.only.regime(regime, [method])
            for seed in r.seeds or study.study.seeds:
                teacher = study.teachers.slot(regime, seed)
                self.runs.append(PlannedRun("final", regime, method, "?", seed, "waiting",
                                            picked, teacher))


def plan(study: Any) -> list[PlannedRun]:
    """Every run of ``study`` and its state; the finals of a regime whose search is not finished
    are listed as waiting, their candidate to be chosen."""
    return walk(study).runs


def walk(study: Any) -> Planner:
    """The study walked without training: its runs, choices and recorded run times."""
    planner = study.planner = Planner(study)
    log, study.log = study.log, lambda _: None
    try:
        planner.choices = study.regimes(train=False)[1]
        return planner
    finally:
        study.log, study.planner = log, None


@dataclass
class Tasks:
    """What an invocation that trains will train, each with the kind the ETA weighs it by: runs
    ``(regime, method)``, teachers ``("teacher", name)``, ablations ``("ablation", method)``."""

    runs: list[Hashable] = field(default_factory=list)
    teachers: list[Hashable] = field(default_factory=list)
    ablations: list[Hashable] = field(default_factory=list)
    prior: dict[Hashable, list[float]] = field(default_factory=dict)  # recorded times, by kind

    @property
    def kinds(self) -> list[Hashable]:
        return [*self.runs, *self.teachers, *self.ablations]

    def __len__(self) -> int:
        return len(self.kinds)

    def parts(self) -> str:
        """``6 runs, 1 teacher``: what the tasks are."""
        parts = [count(len(self.runs), "run")]
        if self.teachers:
            parts.append(count(len(self.teachers), "teacher"))
        if self.ablations:
            parts.append(count(len(self.ablations), "orders ablation"))
        return ", ".join(parts)

    def __str__(self) -> str:
        """``7 tasks (6 runs, 1 teacher)``: the count the study's log and --status both give."""
        return f"{count(len(self), 'task')} ({self.parts()})"


def count(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def to_train(study: Any, planner: Planner) -> Tasks:
    """The tasks an invocation that trains will run, from the walk ``planner`` made."""
    todo = [p for p in planner.runs if p.selected and p.state != "recorded"]
    needed = {p.teacher for p in todo}
    ablations = _ablations(study, planner.choices)
    main = study.study.main_regime
    for _ in ablations:  # an ablation trains the chosen settings on the ablation seeds
        needed |= {(study.study.regimes[main].teacher, study.teachers.seed_of(main, seed))
                   for seed in study.study.ablation_seeds}
    teachers = [("teacher", name) for name, seed in sorted(needed)
                if not teacher_trained(study, name, seed)]
    prior = dict(planner.seconds)
    for info in study.teachers.recorded().values():
        if info.get("train_seconds") and info.get("threads") == study.threads:
            prior.setdefault(("teacher", info["name"]), []).append(info["train_seconds"])
    return Tasks([(p.regime, p.method) for p in todo], teachers,
                 [("ablation", m) for m in ablations], prior)


def teacher_trained(study: Any, name: str, seed: int) -> bool:
    """Whether teacher ``name`` of ``seed`` has a finished checkpoint here trained with this
    study's settings (it loads, in a second: no task to count). One trained with others (an
    edited teacher, or another study file with the same ``output_dir``) trains again: a task."""
    from horkd.run_dir import finished_stage

    return finished_stage(_teacher_stage(study, name, seed), study.teachers.fingerprint(name, seed))


def _teacher_stage(study: Any, name: str, seed: int) -> Path:
    return Path(study.teachers.run_dir(name, seed)) / f"seed{seed}" / "teacher"


def _ablations(study: Any, choices: dict[str, Any]) -> list[str]:
    """The methods whose orders ablation this invocation trains: not recorded with their chosen
    settings, or whose settings wait for the search (they are trained once it is done)."""
    from horkd.study.ablations import ablated_methods, ablation_job

    main = study.study.main_regime
    methods = [m for m in ablated_methods(study) if m in study.trained_methods(main)]
    if not study.study.ablation_seeds or not study.only.regime(main, methods):
        return []
    out = []
    for method in methods:
        chosen = choices.get(main, {}).get(method)
        if chosen is None or not ablation_job(study, chosen, method).recorded():
            out.append(method)
    return out


def status(study: Any) -> str:
    """What is recorded, running and pending, by regime and phase; the teachers; who runs what
    now; the records found damaged (moved aside as ``<name>.damaged`` when the walk met them)."""
    planner = walk(study)
    planned = planner.runs
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for p in planned:
        counts = rows.setdefault((p.regime, p.kind), {})
        counts[p.state] = counts.get(p.state, 0) + 1
    total = {s: sum(1 for p in planned if p.state == s)
             for s in ("recorded", "running", "pending", "waiting")}
    lines = [f"study {study.study.name}: {len(planned)} runs - {total['recorded']} recorded, "
             f"{total['running']} running, {total['pending'] + total['waiting']} pending"
             + (f" ({total['waiting']} wait for their regime's search)" if total["waiting"]
                else ""),
             f"to train: {to_train(study, planner)}", "",
             f"{'regime':<16} {'phase':<7} {'recorded':>9} {'running':>8} {'pending':>8}"]
    for (regime, kind), c in rows.items():
        pending = c.get("pending", 0) + c.get("waiting", 0)
        lines.append(f"{regime:<16} {kind:<7} {c.get('recorded', 0):>4}/{sum(c.values()):<4} "
                     f"{c.get('running', 0):>8} {pending:>8}"
                     + ("  (after the search)" if c.get("waiting") else ""))
    lines += ["", "teachers:", *_teacher_lines(study, planned)]
    again = [p for p in planned if p.why and p.state == "pending"]
    if again:
        lines += ["", "pending again, learnt from another teacher than their regime's other runs "
                  "(trained again from the regime's teacher):"] + [f"  {p.label}" for p in again]
    running = [p for p in planned if p.state == "running"]
    if running:
        lines += ["", "running now:"] + [f"  {p.label}: {p.holder}" for p in running]
    damaged = study.book.damaged()
    if damaged:
        lines += ["", "damaged records, moved aside (their runs are pending and train again; "
                  "delete these files once looked at):"] + [f"  {p}" for p in damaged]
    return "\n".join(lines)


def _teacher_lines(study: Any, planned: list[PlannedRun]) -> list[str]:
    recorded = study.teachers.recorded()
    lines = []
    for name in study.study.teachers:
        seeds = sorted({p.teacher[1] for p in planned if p.teacher[0] == name}) or [
            study.teachers.config(name).seeds[0]]
        for seed in seeds:
            key = f"{name}/seed{seed}"
            who = holder(study.teachers.run_dir(name, seed))
            mine = study.teachers.fingerprint(name, seed)
            other = (key in recorded and recorded[key].get("fingerprint") != mine
                     or (_teacher_stage(study, name, seed) / "done.json").is_file()
                     and not teacher_trained(study, name, seed))
            state = (f"training ({who})" if who else
                     "pending: the teacher recorded here was trained with other settings than "
                     "this file's (another study file with the same output_dir and records, or "
                     "an edited teacher); it trains again" if other else
                     f"recorded, best val {recorded[key]['val']:.2f}" if key in recorded
                     else "pending")
            lines.append(f"  {name} seed {seed}: {state}")
    return lines
