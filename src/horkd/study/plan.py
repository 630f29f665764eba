"""Where a study stands, without training anything: every run with its state, and the table
``horkd study FILE --status`` prints. The study is walked as a run with ``train=False`` walks
it, a :class:`Planner` noting each job it meets; a run is running when a live process holds its
run directory's lock."""

from __future__ import annotations

from dataclasses import dataclass
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

    def jobs(self, jobs: list[Job], selected: list[bool]) -> None:
        for job, picked in zip(jobs, selected, strict=True):
            who = holder(job.config["output_dir"])
            for seed in job.seeds:
                state = ("recorded" if job.recorded(seed) is not None
                         else "running" if who else "pending")
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
        picked = study.only.regime(regime, study.trained_methods(regime))
        for method in methods:
            for seed in r.seeds or study.study.seeds:
                teacher = study.teachers.slot(regime, seed)
                self.runs.append(PlannedRun("final", regime, method, "?", seed, "waiting",
                                            picked, teacher))


def plan(study: Any) -> list[PlannedRun]:
    """Every run of ``study`` and its state; the finals of a regime whose search is not finished
    are listed as waiting, their candidate to be chosen."""
    study.planner = Planner(study)
    log, study.log = study.log, lambda _: None
    try:
        study.regimes(train=False)
        return study.planner.runs
    finally:
        study.log, study.planner = log, None


def to_train(planned: list[PlannedRun]) -> list[tuple[str, str]]:
    """The kind of each task an invocation that trains will run (what the ETA weighs them by):
    its runs, ``(regime, method)``, and in each of its two batches (every regime's search, then
    every final) the teachers that batch needs, each a task of its own, ``("teacher", name)``."""
    todo = [p for p in planned if p.selected and p.state != "recorded"]
    teachers = {(p.kind, p.teacher) for p in todo}
    return [(p.regime, p.method) for p in todo] + [("teacher", t[0]) for _, t in teachers]


def status(study: Any) -> str:
    """What is recorded, running and pending, by regime and phase; the teachers; who runs what
    now; the records found damaged (moved aside as ``<name>.damaged`` when the walk met them)."""
    planned = plan(study)
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for p in planned:
        counts = rows.setdefault((p.regime, p.kind), {})
        counts[p.state] = counts.get(p.state, 0) + 1
    total = {s: sum(1 for p in planned if p.state == s)
             for s in ("recorded", "running", "pending", "waiting")}
    lines = [f"study {study.study.name}: {len(planned)} runs - {total['recorded']} recorded, "
             f"{total['running']} running, {total['pending'] + total['waiting']} pending"
             + (f" ({total['waiting']} wait for their regime's search)" if total["waiting"]
                else ""), "",
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
            state = (f"training ({who})" if who else
                     f"recorded, best val {recorded[key]['val']:.2f}" if key in recorded
                     else "pending")
            lines.append(f"  {name} seed {seed}: {state}")
    return lines
