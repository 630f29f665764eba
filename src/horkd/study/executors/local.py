"""The local executor: a pool of worker processes on this machine (this process when 1 worker)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from horkd.study.executors import EXECUTORS, Engine, OnDone
from horkd.study.executors.queue import TaskQueue
from horkd.study.schedule import Task


@EXECUTORS.register("local")
class LocalEngine(Engine):
    """``workers`` processes of ``threads`` threads each; runs never leave this machine."""

    @property
    def remote(self) -> bool:
        return False

    _pool: Executor | None = None  # kept between a study's phases: workers start once

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        if self.workers > 1 and len(tasks) > 1 and self._pool is None:
            self._pool = _new_pool(self.workers)
        self._pool = run_tasks(tasks, self.workers, on_done, pool=self._pool,
                               retries=self.config.retries, engine=self)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _new_pool(workers: int) -> ProcessPoolExecutor:
    context = get_context("spawn")  # never fork a process whose thread pools have started
    return ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=follow_parent, initargs=(os.getpid(),))


def run_tasks(
    tasks: Sequence[Task], workers: int, on_done: OnDone, pool: Executor | None = None,
    retries: int = 2, engine: Engine | None = None,
) -> Executor | None:
    """Run ``tasks`` (in their order, each once its prerequisites are done) in ``workers``
    processes, or in this one when 1; ``on_done`` sees each result as it arrives. On an error
    nothing new starts, the running tasks finish (they save their state) and the error is
    raised. A worker process lost mid-task (killed, out of memory) breaks the pool: the tasks
    that were running go back to the queue of a new pool, each at most ``retries`` times.
    Returns the pool, still open when it was given (``pool``), for the next call."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            if engine is not None:
                engine.running = 1
            on_done(task, task.fn(task.arg))
        return pool
    keep = pool is not None
    pool = pool or _new_pool(workers)
    queue, running = TaskQueue(tasks, on_done, retries), {}
    broken = False  # a broken pool takes no more work: a new one when its tasks are out
    try:
        while queue.pending or running:
            while not broken and len(running) < workers and (task := queue.next_ready()):
                running[pool.submit(task.fn, task.arg)] = task
            if engine is not None:
                engine.running = len(running)
            if not running and broken and queue.failed is None:
                pool.shutdown(wait=True)
                pool, broken = _new_pool(workers), False
                continue
            if not running:
                queue.stalled()
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                broken |= _collect(queue, running.pop(future), future)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # report the error without running the rest
        raise
    if keep:
        return pool
    pool.shutdown()
    return None


def _collect(queue: TaskQueue, task: Task, future: Future) -> bool:
    """A finished future's result to the queue; True when its worker was lost (broken pool)."""
    try:
        value = future.result()
    except BrokenProcessPool as exc:
        queue.lost_task(task, "its worker process was lost", exc)
        return True
    except Exception as exc:  # the run's own error: the others finish and report
        queue.error(exc)
        return False
    queue.finished(task, value)
    return False


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
