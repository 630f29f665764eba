"""A study's progress, readable in a log file and live on a terminal.

A line per finished task - ``[12/45] final labels1/horkd/c1 seed 3: val 84.10, test 83.36
(52 s) - 3 running, ETA 31 min`` - to the study's log whatever it is (a file, a pipe), and on a
terminal a bar under them. The ETA weighs each remaining task by what tasks of its kind (a
regime's method, a teacher) took so far - a HORKD final took 380-580 s where a Hinton KD final
took 20-30 s (w16_full, one thread), so counting tasks promised minutes where half an hour was
left - and turns those seconds of work into wall time at the pace the finished ones kept (so the
workers' parallelism is in it).
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


class Progress:
    """Counts the tasks an invocation trains; ``total`` is known before the first one starts."""

    def __init__(
        self,
        total: int,
        log: Callable[[str], None] = print,
        bar: bool | None = None,
        kinds: Iterable[Hashable] = (),
    ) -> None:
        self.total = total
        self.count = 0
        self.trained = 0
        self.started = time.monotonic()
        self.left = Counter(kinds)  # the kind of each task still to finish, where known
        self.took: dict[Hashable, list[float]] = {}  # seconds of each trained task, by kind
        self._log = log
        self._bar = None
        if bar is None:
            bar = log is print and sys.stderr.isatty()
        if bar and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="run", dynamic_ncols=True, leave=False)

    def log(self, line: str) -> None:
        """A line above the bar (or alone, without one)."""
        if self._bar is not None:
            self._bar.write(line)
        else:
            self._log(line)

    def finished(self, what: str, running: int, trained: bool = True, kind: Hashable = None,
                 seconds: float | None = None) -> str:
        """One task done: its line, with how many still run and the time left. Only trained
        tasks set the pace: a teacher loaded in a second is no measure of a study's hours."""
        self.count += 1
        self.trained += trained
        self.total = max(self.total, self.count)
        if self.left[kind] > 0:
            self.left[kind] -= 1
        if trained and seconds is not None:
            self.took.setdefault(kind, []).append(seconds)
        left = self.total - self.count
        eta = duration(self._eta(left)) if self.trained else "after the first trained run"
        tail = f"{running} running, ETA {eta}" if left else "all done"
        line = f"[{self.count}/{self.total}] {what} - {tail}"
        self.log(line)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"{running} running")
        return line

    def _eta(self, left: int) -> float:
        """Seconds of wall time left: the remaining tasks' work, each at its kind's mean (the
        mean of every trained task for a kind not seen yet), at the wall time per second of
        work so far; by task count alone where the tasks' seconds are not known."""
        wall = time.monotonic() - self.started
        done = sum(sum(times) for times in self.took.values())
        if not done:
            return wall / self.trained * left
        overall = fmean(t for times in self.took.values() for t in times)
        known = sum(self.left.values())
        work = sum(n * fmean(self.took.get(kind) or [overall]) for kind, n in self.left.items())
        work += max(0, left - known) * overall  # tasks of no stated kind
        return work * wall / done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
