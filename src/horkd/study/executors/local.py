"""The local executor: a pool of worker processes on this machine (this process when 1 worker).

Workers end with their driver. A stop asked of the driver (Ctrl-C, SIGTERM) is handed to every
worker, which stops its run at the next safe point with its state saved; nothing new starts and
the driver ends with 130/143 once the running runs have stopped. A driver that dies without a
word (SIGKILL, a crash) is noticed by each worker at once (the kernel's parent-death signal on
Linux, a watchdog thread reading the parent's pid everywhere): the worker's run stops at its
next safe point and the worker exits, within ``GRACE`` seconds whatever it is doing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from multiprocessing import get_context
from typing import Any

from horkd import stop
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


POLL = 0.2  # seconds between the driver's looks at its stop request while runs train


def run_tasks(
    tasks: Sequence[Task], workers: int, on_done: OnDone, pool: Executor | None = None,
    retries: int = 2, engine: Engine | None = None,
) -> Executor | None:
    """Run ``tasks`` (in their order, each once its prerequisites are done) in ``workers``
    processes, or in this one when 1; ``on_done`` sees each result as it arrives. On an error
    nothing new starts, the running tasks finish (they save their state) and the error is
    raised. A worker process lost mid-task (killed, out of memory) breaks the pool: the tasks
    that were running go back to the queue of a new pool, each at most ``retries`` times. A stop
    request (SIGINT/SIGTERM to this process) is passed to the workers, nothing new starts and
    :class:`~horkd.stop.TrainingStopped` is raised once the running tasks have stopped.
    Returns the pool, still open when it was given (``pool``), for the next call."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            stop.check(f"before {task.label} started")
            if engine is not None:
                engine.running = 1
            on_done(task, task.fn(task.arg))
        return pool
    keep = pool is not None
    pool = pool or _new_pool(workers)
    queue, running = TaskQueue(tasks, on_done, retries), {}
    broken = False  # a broken pool takes no more work: a new one when its tasks are out
    stopping: str | None = None  # the signal that asked this process to stop
    try:
        while queue.pending or running:
            if stopping is None and (stopping := stop.requested()) is not None:
                _ask_workers(pool, stopping)  # a signal sent to this process alone
            while (stopping is None and not broken and len(running) < workers
                   and (task := queue.next_ready())):
                running[pool.submit(in_worker, task.fn, task.arg)] = task
            if engine is not None:
                engine.running = len(running)
            if not running and stopping is not None:
                break
            if not running and broken and queue.failed is None:
                pool.shutdown(wait=True)
                pool, broken = _new_pool(workers), False
                continue
            if not running:
                queue.stalled()
            finished, _ = wait(running, timeout=POLL, return_when=FIRST_COMPLETED)
            for future in finished:
                broken |= _collect(queue, running.pop(future), future, stopping)
    except BaseException:
        # a second signal, or an error: the workers stop at their next safe point (their state
        # saved) instead of training to the end while the driver waits for them
        _ask_workers(pool, stop.requested() or "SIGTERM")
        pool.shutdown(wait=True, cancel_futures=True)  # report the error without running the rest
        raise
    if stopping is not None:
        pool.shutdown(wait=True, cancel_futures=True)
        raise stop.TrainingStopped(
            f"stopped by {stopping}: the runs that were training saved their state and nothing "
            f"else started; every finished run is recorded: {stop.RERUN}", stopping)
    if keep:
        return pool
    pool.shutdown()
    return None


def _ask_workers(pool: Executor, name: str) -> None:
    """Pass this process's stop request to its workers (a pool of another kind has none)."""
    if isinstance(pool, WorkerPool):
        pool.ask_to_stop(name)


def _collect(queue: TaskQueue, task: Task, future: Future, stopping: str | None = None) -> bool:
    """A finished future's result to the queue; True when its worker was lost (broken pool)."""
    try:
        value = future.result()
    except BrokenProcessPool as exc:
        if stopping is not None:  # stopping: a lost run is continued by the rerun, not now
            return True
        queue.lost_task(task, "its worker process was lost", exc)
        return True
    except Exception as exc:  # the run's own error (or its stop): the others finish and report
        queue.error(exc)
        return False
    queue.finished(task, value)
    return False


# ------------------------------------------------------------------------------- the workers

GRACE = 5.0  # seconds a worker whose driver is gone gives its run to reach a safe point
WATCH_EVERY = 0.25  # seconds between a worker's looks at its driver


class WorkerPool(ProcessPoolExecutor):
    """Spawned workers that end with the process that made them, and take its stop requests
    (through one shared integer: the signal number, 0 while nobody asked)."""

    def __init__(self, workers: int) -> None:
        context = get_context("spawn")  # never fork a process whose thread pools have started
        self.asked = context.RawValue("i", 0)  # no lock: a killed driver cannot leave it held
        super().__init__(max_workers=workers, mp_context=context, initializer=follow_parent,
                         initargs=(os.getpid(), GRACE, WATCH_EVERY, self.asked))

    def ask_to_stop(self, name: str) -> None:
        self.asked.value = int(getattr(signal, name, signal.SIGTERM))


def _new_pool(workers: int) -> WorkerPool:
    return WorkerPool(workers)


class _Watch:
    """A worker's view of its driver: whether a task runs and whether the driver is gone."""

    def __init__(self, parent: int, grace: float) -> None:
        self.parent = parent
        self.grace = grace
        self.busy = False
        self.orphaned = threading.Event()

    def driver_gone(self) -> bool:
        return self.orphaned.is_set() or os.getppid() != self.parent

    def on_parent_death_signal(self, _signum: int, _frame: Any) -> None:
        # the kernel also sends it when the *thread* that started this worker ends: only a
        # changed parent means the driver is gone
        if os.getppid() != self.parent:
            self.orphaned.set()


_WATCH: ContextVar[_Watch | None] = ContextVar("horkd_worker_watch", default=None)


def in_worker(fn: Callable[[Any], Any], arg: Any) -> Any:
    """A task's body in a pool worker: a worker whose driver went away while it ran exits as
    soon as the run has stopped (nobody is left to take its result or give it more work)."""
    watch = _WATCH.get()
    if watch is None:
        return fn(arg)
    watch.busy = True
    try:
        return fn(arg)
    finally:
        watch.busy = False
        if watch.driver_gone():
            _exit_now()


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(stop.EXIT_STATUS["SIGTERM"])


def _parent_death_signal(signum: int) -> bool:
    """Ask the kernel for ``signum`` when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``);
    False where that is not available (the watchdog thread alone notices then)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signum), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def follow_parent(parent: int, grace: float = GRACE, every: float = WATCH_EVERY,
                  asked: Any = None) -> None:
    """Worker initializer: the worker takes stop requests as any horkd command does (SIGINT and
    SIGTERM stop its run at the next safe point, state saved), and those its driver passes on
    (``asked``, a shared signal number). When the driver is gone (killed, even by SIGKILL, or
    crashed) the run is asked to stop as by SIGTERM and the worker exits once it has stopped,
    or after ``grace`` seconds whatever it is doing: it never trains on unseen, holding its
    run's lock."""
    request = stop.install()
    watch = _Watch(parent, grace)
    _WATCH.set(watch)
    if threading.current_thread() is threading.main_thread() and _parent_death_signal(
            signal.SIGUSR1):
        signal.signal(signal.SIGUSR1, watch.on_parent_death_signal)

    def follow() -> None:
        while not watch.driver_gone():
            if asked is not None and asked.value:
                request.request(signal.Signals(asked.value).name)
            watch.orphaned.wait(every)
        request.request("SIGTERM")
        deadline = time.monotonic() + watch.grace
        while watch.busy and time.monotonic() < deadline:  # its run stops at a safe point
            time.sleep(0.02)
        _exit_now()

    threading.Thread(target=follow, name="follow-parent", daemon=True).start()
