"""The order in which a study's teachers and runs are trained (the executors run them).

Seed-major: every method of the first seed before any method of the second, so a study stopped
part-way holds complete seeds (paired differences need every method of a seed), not every seed
of its first methods. A teacher is a task of its own, placed just before the first run that
needs it: with several workers, seed 1's teacher trains while seed 0's students do, instead of
every teacher training first on one core.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker: ``fn(arg)`` once every task keyed in ``after`` is done."""

    key: Hashable
    fn: Callable[[Any], Any]
    arg: Any
    after: frozenset = field(default_factory=frozenset)

    @property
    def threads(self) -> int:
        """The CPU threads the task trains with: what an engine reserves for it."""
        return int(getattr(self.arg, "threads", 1))

    @property
    def gpus(self) -> float:
        return float(getattr(self.arg, "gpus", 0))

    @property
    def label(self) -> str:
        return str(getattr(self.arg, "label", self.key))


def seed_major(
    seeds: Sequence[Sequence[int]],
    needs: Sequence[set[Hashable]],
    prerequisites: dict[Hashable, Task],
    make: Callable[[int], Task],
) -> list[Task]:
    """Tasks in training order: item ``i`` (its ``seeds``) by lowest seed, then given order, each
    preceded by the prerequisites in ``needs[i]`` not placed yet."""
    order = sorted(range(len(seeds)), key=lambda i: (min(seeds[i], default=0), i))
    placed: set[Hashable] = set()
    tasks: list[Task] = []
    for i in order:
        wanted = sorted((k for k in needs[i] if k in prerequisites), key=str)
        for key in wanted:
            if key not in placed:
                tasks.append(prerequisites[key])
                placed.add(key)
        task = make(i)
        tasks.append(Task(task.key, task.fn, task.arg, frozenset(wanted)))
    return tasks
