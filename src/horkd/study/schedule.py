"""The order in which a study's teachers and runs are trained, and the worker pool that trains them.

Seed-major: every method of the first seed before any method of the second, so a study stopped
part-way holds complete seeds (paired differences need every method of a seed), not every seed
of its first methods. A teacher is a task of its own, placed just before the first run that
needs it: with several workers, seed 1's teacher trains while seed 0's students do, instead of
every teacher training first on one core.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker: ``fn(arg)`` once every task keyed in ``after`` is done."""

    key: Hashable
    fn: Callable[[Any], Any]
    arg: Any
    after: frozenset = field(default_factory=frozenset)


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


def run_tasks(
    tasks: Sequence[Task], workers: int, on_done: Callable[[Task, Any], None],
    pool: Executor | None = None,
) -> None:
    """Run ``tasks`` (in their order, each once its prerequisites are done) in ``workers``
    processes, or in this one when 1; ``on_done`` sees each result as it arrives. On an error
    nothing new starts, the running tasks finish (they save their state) and the error is
    raised."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_done(task, task.fn(task.arg))
        return
    if pool is None:
        context = get_context("spawn")  # never fork a process whose thread pools have started
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                   initializer=follow_parent, initargs=(os.getpid(),))
    pending = list(tasks)
    running: dict[Future, Task] = {}
    done: set[Hashable] = set()
    try:
        while pending or running:
            while len(running) < workers:
                task = next((t for t in pending if t.after <= done), None)
                if task is None:
                    break
                pending.remove(task)
                running[pool.submit(task.fn, task.arg)] = task
            if not running:
                missing = sorted({str(k) for t in pending for k in t.after - done})
                raise ValueError(f"tasks wait on prerequisites no task provides: {missing}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                value = future.result()
                done.add(task.key)
                on_done(task, value)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # report the error without running the rest
        raise
    pool.shutdown()


def follow_parent(parent: int, grace: float = 30.0, every: float = 1.0) -> None:
    """Worker initializer: when the study process is gone (killed, crashed) the worker stops
    too, instead of training on unseen (and holding its run's lock): SIGTERM first, so a
    training run saves its state at the step boundary as on any pre-emption, then exit after
    ``grace`` seconds whatever it is doing."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(143)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()
