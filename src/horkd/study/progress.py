"""A study's progress, readable in a log file and live on a terminal.

A line as the first task starts - ``[0/45] started: teacher cls seed 0 - ETA 3.1 h`` - then a
line per finished task - ``[12/45] final labels1/horkd/c1 seed 3: val 84.10, test 83.36 (52 s)
- 3 running, ETA 31 min`` - to the study's log whatever it is (a file, a pipe), and on a
terminal a bar under them. The ETA weighs each remaining task by what tasks of its kind (a
regime's method, a teacher) took so far, or took when recorded at the same thread count - a
HORKD final took 380-580 s where a Hinton KD final took 20-30 s (w16_full, one thread), so
counting tasks promised minutes where half an hour was left - and turns those seconds of work
into wall time at the pace the finished ones kept (so the workers' parallelism is in it). A kind
not seen yet is estimated from its own group only: a student run from student runs, a teacher
from teachers (a 2274 s teacher once made 13 student runs of about a minute say "ETA 8.2 h");
with nothing to go by the line says after what the ETA comes.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from statistics import fmean
from typing import Any


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def group(kind: Hashable) -> str:
    """``teacher`` for a teacher's kind ``("teacher", name)``, ``run`` for any other."""
    return "teacher" if isinstance(kind, tuple) and kind[:1] == ("teacher",) else "run"


class Progress:
    """Counts the tasks an invocation trains; ``total`` is known before the first one starts.
    ``prior``: seconds of recorded tasks by kind; ``like``: a kind whose time is ``n`` times
    another's (an orders ablation: a final run per order subset and seed)."""

    def __init__(
        self,
        total: int,
        log: Callable[[str], None] = print,
        bar: bool | None = None,
        kinds: Iterable[Hashable] = (),
        prior: dict[Hashable, list[float]] | None = None,
        workers: int = 1,
        like: dict[Hashable, tuple[Hashable, float]] | None = None,
    ) -> None:
        self.total = total
        self.count = 0
        self.trained = 0
        self.started = time.monotonic()
        self.left = Counter(kinds)  # the kind of each task still to finish, where known
        self.took: dict[Hashable, list[float]] = {}  # seconds of each trained task, by kind
        self.prior = prior or {}
        self.like = like or {}
        self.workers = max(1, workers)
        self.said_start = False
        self.noted: set[Hashable] = set()  # tasks said: one that loads again is not
        self._log = log
        self._bar = None
        if bar is None:
            bar = log is print and sys.stderr.isatty()
        if bar and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="task", dynamic_ncols=True, leave=False)

    def log(self, line: str) -> None:
        """A line above the bar (or alone, without one)."""
        if self._bar is not None:
            self._bar.write(line)
        else:
            self._log(line)

    def starting(self, what: str) -> str | None:
        """The line as the first task starts (none later): the count and the ETA at once, not
        after a teacher's minutes."""
        if self.said_start or self.count:
            return None
        self.said_start = True
        line = f"[0/{self.total}] started: {what} - ETA {self._eta_text(self.total)}"
        self.log(line)
        return line

    def finished(self, what: str, running: int, trained: bool = True, kind: Hashable = None,
                 seconds: float | None = None, task: Hashable = None) -> str:
        """One task done: its line, with how many still run and the time left. A task that did
        not train (a teacher loaded from its checkpoint in a second) is said without counting:
        it is no task of the count, and no measure of a study's hours; and only where this
        invocation has not said ``task`` (or ``what``) yet - a teacher is loaded again before
        each batch of runs."""
        said = task if task is not None else what
        if not trained:
            if said not in self.noted:
                self.noted.add(said)
                self.log(what)
            return what
        self.noted.add(said)
        self.said_start = True
        self.count += 1
        self.trained += 1
        self.total = max(self.total, self.count)
        if self.left[kind] > 0:
            self.left[kind] -= 1
        if seconds is not None:
            self.took.setdefault(kind, []).append(seconds)
        left = self.total - self.count
        tail = f"{running} running, ETA {self._eta_text(left)}" if left else "all done"
        line = f"[{self.count}/{self.total}] {what} - {tail}"
        self.log(line)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"{running} running")
        return line

    def _eta_text(self, left: int) -> str:
        seconds, missing = self._eta(left)
        if missing:
            return f"after the first {missing}"
        return duration(seconds)

    def _estimate(self, kind: Hashable) -> float | None:
        """Seconds of work a task of ``kind`` takes: its own kind's mean, else (for a kind like
        another) that kind's times the factor, else its group's mean; None with nothing to go by."""
        own = self.took.get(kind) or self.prior.get(kind)
        if own:
            return fmean(own)
        if kind in self.like:
            base, times = self.like[kind]
            estimate = self._estimate(base)
            return None if estimate is None else estimate * times
        mine = group(kind)
        same = [t for k, times in (*self.took.items(), *self.prior.items()) if group(k) == mine
                for t in times]
        return fmean(same) if same else None

    def _eta(self, left: int) -> tuple[float, str | None]:
        """Seconds of wall time left: the remaining tasks' work, at the wall time per second of
        work so far (before any: the workers share it); with a task of a group never seen, what
        to wait for instead (``student run``, ``teacher``)."""
        kinds = [k for k, n in self.left.items() for _ in range(max(0, n))]
        kinds += [None] * max(0, left - len(kinds))  # tasks of no stated kind: student runs
        estimates = {kind: self._estimate(kind) for kind in set(kinds)}
        unknown = {group(kind) for kind, estimate in estimates.items() if estimate is None}
        if unknown:  # a student run tells the most: wait for one where it is unknown
            return 0.0, "student run" if "run" in unknown else "teacher"
        work = sum(estimates[kind] or 0.0 for kind in kinds)
        done = sum(sum(times) for times in self.took.values())
        wall = time.monotonic() - self.started
        pace = wall / done if done else 1 / min(self.workers, max(1, left))
        return work * pace, None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
