"""What each student of a run cost to train, in CPU-seconds (the process's, every thread, kept
across a resume; wall seconds x threads for a stage recorded before horkd kept them) on
the machine that ran it: its own stage, the assistant stage trained for it, and its share of the
teacher; and what the method costs alone (its stage with the whole teacher and assistant).

A run trains its teacher once and every distilled student learns from it, so the shared cost
depends on which other methods the run lists; the ``alone`` column does not, and is the one to
compare across runs. A teacher loaded from a checkpoint was not trained here and costs nothing
here (the table says so). Times include any one-off compilation of the CPU kernels in the stage
that ran first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def stage_cpu_seconds(stage_dir: Path) -> float | None:
    try:
        done = json.loads((stage_dir / "done.json").read_text())
    except (OSError, ValueError):
        return None
    return cpu_of(done)


def cpu_of(record: Any, wall: str = "seconds", cpu: str = "cpu_seconds") -> float:
    """A record's CPU-seconds: measured (``cpu``) where it keeps them, else ``wall`` seconds x
    threads (records made before horkd kept CPU time, which count a pause as work)."""
    if record.get(cpu) is not None:
        return float(record[cpu])
    return float(record.get(wall) or 0.0) * int(record.get("threads") or 1)


def training_compute(seed_dir: Path, order: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per student of a seed (in ``order`` where given): own, assistant share, teacher
    share, total and alone, CPU-seconds; ``teacher`` None where no teacher trained here."""
    from horkd.methods import METHODS

    found = {p.parent.name: p.parent for p in (seed_dir / "students").glob("*/done.json")}
    names = [m for m in (order or []) if m in found] + sorted(set(found) - set(order or []))
    needs = {m: METHODS.get(m).needs if m in METHODS else () for m in names}
    teacher, assistant = stage_cpu_seconds(seed_dir / "teacher"), stage_cpu_seconds(seed_dir / "assistant")
    taught = sum("teacher" in n for n in needs.values()) or 1
    chained = sum("assistant" in n for n in needs.values()) or 1
    rows = []
    for name in names:
        own = stage_cpu_seconds(found[name]) or 0.0
        uses_t, uses_a = "teacher" in needs[name], "assistant" in needs[name]
        t_share = (teacher or 0.0) / taught if uses_t else 0.0
        a_share = (assistant or 0.0) / chained if uses_a else 0.0
        alone = own + ((teacher or 0.0) if uses_t else 0.0) + ((assistant or 0.0) if uses_a else 0.0)
        rows.append({"method": name, "own_cpu_s": own, "assistant_cpu_s": a_share,
                     "teacher_share_cpu_s": t_share if teacher is not None or not uses_t else None,
                     "total_cpu_s": own + a_share + t_share, "alone_cpu_s": alone})
    return rows
