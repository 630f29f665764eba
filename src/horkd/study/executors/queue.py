"""The bookkeeping an engine that submits tasks itself shares (the local pool, SLURM): which
task is ready, a lost task back at the front, the first error kept while the running tasks
finish and report."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from horkd.study.executors import OnDone
from horkd.study.schedule import Task


class TaskQueue:
    """Tasks in their order, each ready once the tasks keyed in its ``after`` are done."""

    def __init__(self, tasks: Sequence[Task], on_done: OnDone, retries: int) -> None:
        self.pending = list(tasks)
        self.on_done = on_done
        self.retries = retries
        self.done: set[Hashable] = set()
        self.lost: dict[Hashable, int] = {}
        self.failed: BaseException | None = None  # after an error nothing new is handed out

    def next_ready(self) -> Task | None:
        if self.failed is not None:
            return None
        task = next((t for t in self.pending if t.after <= self.done), None)
        if task is not None:
            self.pending.remove(task)
        return task

    def finished(self, task: Task, value: Any) -> None:
        self.done.add(task.key)
        self.on_done(task, value)

    def error(self, error: BaseException) -> None:
        """A task's own error: kept (the first one) and raised once nothing runs."""
        self.failed = self.failed or error

    def lost_task(self, task: Task, what: str, error: BaseException) -> None:
        """A task whose worker went away: back to the front, at most ``retries`` times."""
        count = self.lost.get(task.key, 0)
        if count >= self.retries:
            self.error(error)
            return
        self.lost[task.key] = count + 1
        print(f"[{task.label}] {what}: run again, from its run directory ({count + 1} of "
              f"{self.retries} retries)", flush=True)
        self.pending.insert(0, task)

    def stalled(self) -> None:
        """Nothing runs: raise the kept error, or say which prerequisites never come."""
        if self.failed is not None:
            raise self.failed
        missing = sorted({str(k) for t in self.pending for k in t.after - self.done})
        raise ValueError(f"tasks wait on prerequisites no task provides: {missing}")
