"""What each student of a run cost to train: its own stage, the assistant stage it learnt through
and its share of the teacher, in CPU-seconds (seconds x threads) on the machine that ran it.

The teacher of a run is trained once and taught every distilled student, so each of them carries
an equal share of it; the assistant serves only the chain methods, so they share it alike. A
HORKD student's cost then shows the second training run the chain needs, beside its accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _stage(stage_dir: Path) -> float | None:
    try:
        done = json.loads((stage_dir / "done.json").read_text())
    except (OSError, ValueError):
        return None
    return float(done.get("seconds", 0.0)) * int(done.get("threads") or 1)


def training_compute(seed_dir: Path) -> list[dict[str, Any]]:
    """One row per student of a seed: own, assistant share, teacher share and total CPU-s."""
    from horkd.methods import METHODS

    students = sorted(p.parent for p in (seed_dir / "students").glob("*/done.json"))
    needs = {p.name: METHODS.get(p.name).needs if p.name in METHODS else () for p in students}
    teacher, assistant = _stage(seed_dir / "teacher"), _stage(seed_dir / "assistant")
    taught = sum("teacher" in n for n in needs.values()) or 1
    chained = sum("assistant" in n for n in needs.values()) or 1
    rows = []
    for path in students:
        own = _stage(path) or 0.0
        t_share = (teacher or 0.0) / taught if "teacher" in needs[path.name] else 0.0
        a_share = (assistant or 0.0) / chained if "assistant" in needs[path.name] else 0.0
        rows.append({"method": path.name, "own_cpu_s": own, "assistant_cpu_s": a_share,
                     "teacher_share_cpu_s": t_share, "total_cpu_s": own + a_share + t_share})
    return rows
