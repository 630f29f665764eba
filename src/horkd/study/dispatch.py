"""Hand a study's unrecorded runs to its executor, each after the teachers it needs, and write
their records here, in the driver, as they arrive (one writer: two workers never write the same
record)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from horkd.study.jobs import (
    Job,
    JobResult,
    TeacherJob,
    describe,
    describe_teacher,
    kind_of,
    run_job,
    run_teacher,
    save_teacher,
)
from horkd.study.progress import Progress
from horkd.study.schedule import Task, seed_major


def train_jobs(study: Any, jobs: list[Job]) -> list[JobResult]:
    """Every job's result (``study`` a :class:`~horkd.study.runner.Study`): recorded seeds read,
    the rest trained on the study's engine, seed-major."""
    results = [JobResult(j, {s: r for s in j.seeds if (r := j.recorded(s))}) for j in jobs]
    todo = [i for i, res in enumerate(results) if len(res.records) < len(jobs[i].seeds)]
    if not todo:
        return results
    engine = study.engine
    submitted = [replace(jobs[i], missing=tuple(s for s in jobs[i].seeds
                                               if s not in results[i].records),
                         shared=study.teachers.shared) for i in todo]
    needs = [{(j.teacher[str(s)]["name"], study.teachers.seed_of(j.regime, s))
              for s in j.missing or ()} for j in submitted]
    teachers = {pair: study.teachers.job(*pair) for pair in sorted(set().union(*needs))}
    prerequisites = {t.key: Task(t.key, run_teacher, t) for t in teachers.values()}
    tasks = seed_major([j.seeds for j in submitted],
                       [{teachers[pair].key for pair in n} for n in needs], prerequisites,
                       lambda k: Task(("job", todo[k]), run_job, submitted[k]))
    counted = [t for t in tasks if not loads(study, t)]  # a teacher that loads is no task
    if study.progress is None:  # a caller that did not plan: count what this call trains
        study.progress = Progress(len(counted), study.log, bar=False,
                                  kinds=[kind_of(t.arg) for t in counted])
    study.progress.starting((counted or tasks)[0].label)

    def on_done(task: Task, value: Any) -> None:
        if isinstance(value, JobResult):
            for record in value.records.values():
                study.book.save(record)
            merged = results[task.key[1]]
            merged.records.update(value.records)
            merged.trained = True
            study.progress.finished(describe(value), engine.running, kind=kind_of(task.arg),
                                    seconds=sum(r.seconds for r in value.records.values()))
        else:  # a teacher loaded from its checkpoint is not a pace for the ETA
            info = save_teacher(task.arg, value)
            study.progress.finished(describe_teacher(info), engine.running,
                                    trained=info["trained_here"], kind=kind_of(task.arg),
                                    seconds=info["seconds_here"], task=task.arg.key)

    engine.run(tasks, on_done)
    return results


def loads(study: Any, task: Task) -> bool:
    """Whether ``task`` is a teacher whose checkpoint is trained: it loads in a second."""
    from horkd.study.plan import teacher_trained

    job = task.arg
    return isinstance(job, TeacherJob) and teacher_trained(study, job.name, job.seed)
