"""What each student cost to make: its own run (the assistant's stage included, where it has one)
and its share of the teacher it learnt from, in CPU-seconds on the machine that ran it.

A study trains a teacher once and many students learn from it; charging the whole teacher to
each would hide how cheap the students are, charging nothing would hide that distillation needs
a teacher at all. So each final student run that learnt from a teacher carries an equal share of
that teacher's training (its CPU-seconds divided by the number of such runs in the study).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping
from typing import Any


def teacher_cpu_seconds(teachers: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """A teacher's training CPU-seconds, by its fingerprint: measured where its record keeps
    them, else wall seconds x threads (records made before CPU time was kept)."""
    from horkd.report.compute import cpu_of

    return {info["fingerprint"]: cpu_of(info, "train_seconds", "train_cpu_seconds")
            for info in teachers.values() if info.get("fingerprint")}


def student_costs(summary: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """``(regime, method) -> {"own": median CPU-s of a seed's run, "teacher": mean teacher
    share}`` over the final runs recorded. The median, not the mean: the first run a worker
    process trains also pays for loading (and rendering or digesting) the data, several times a
    later run's cost for a cheap method."""
    from horkd.methods import METHODS

    finals = summary["finals"]
    users: Counter[str] = Counter()
    for res in finals:
        if _learns_from_teacher(res["method"], METHODS):
            users.update(fp for fp in res.get("teacher", {}).values() if fp)
    teacher_cost = teacher_cpu_seconds(summary.get("teachers", {}))
    out: dict[tuple[str, str], dict[str, float]] = {}
    for res in finals:
        own = list(res.get("cpu_seconds", {}).values())
        if not own:
            continue
        shares = [teacher_cost.get(fp, 0.0) / users[fp] for fp in res.get("teacher", {}).values()
                  if fp and users[fp] and _learns_from_teacher(res["method"], METHODS)]
        out[(res["regime"], res["method"])] = {
            "own": statistics.median(own),
            "teacher": sum(shares) / len(own) if shares else 0.0,
        }
    return out


def _learns_from_teacher(method: str, methods: Any) -> bool:
    return method in methods and "teacher" in methods.get(method).needs


def cost_cell(cost: Mapping[str, float] | None) -> str:
    """``own + teacher share`` in CPU-minutes, as the page shows it."""
    if not cost:
        return "-"
    own, share = cost["own"] / 60, cost["teacher"] / 60
    return f"{own:.1f}" + (f" + {share:.1f}" if share else "")
