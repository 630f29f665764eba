"""How many threads each of a study's runs trains with, and where that number came from.

The default follows what the environment allows: ``OMP_NUM_THREADS`` when it is set (the
thread count a user gives every process), else the CPUs this process may run on (its CPU
affinity, which a container or ``taskset`` narrows below the machine's count) shared by the
workers. ``os.cpu_count()`` alone said "2 thread(s) per run" under ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import os
from typing import Any


def usable_cpus() -> tuple[int, str]:
    """The CPUs this process may run on, and how that was found."""
    try:
        count = len(os.sched_getaffinity(0))
        return count, f"{count} CPU(s) this process may run on"
    except (AttributeError, OSError):  # no affinity on this platform
        count = os.cpu_count() or 1
        return count, f"{count} CPU(s)"


def default_threads(executor: Any, workers: int) -> tuple[int, str]:
    """Threads per run and the reason, for the study's log. A cluster job asks for its own CPUs
    (SLURM's cpus_per_task when set, else one)."""
    if executor.kind == "slurm" and executor.slurm.cpus_per_task:
        return executor.slurm.cpus_per_task, "executor.slurm.cpus_per_task"
    if executor.kind != "local":
        return 1, f"one per {executor.kind} job unless --threads says otherwise"
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) >= 1:
        return int(given), f"OMP_NUM_THREADS={given}"
    cpus, where = usable_cpus()
    if workers <= 1:
        return max(1, cpus), where
    return max(1, cpus // workers), f"{where}, shared by {workers} workers"
