"""Which orders ablations a study trains, and where each is recorded (the study's runner trains
them; its plan counts them)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from horkd.study.jobs import Job
from horkd.study.records import record_key


@dataclass(frozen=True)
class AblationJob:
    """One method's orders ablation with its chosen settings, and where it is recorded."""

    job: Job
    key: str
    path: Path

    def recorded(self) -> dict[str, Any] | None:
        stored = json.loads(self.path.read_text()) if self.path.is_file() else {}
        return stored if stored.get("key") == self.key else None


def ablation_job(runner: Any, chosen: dict[str, Any], method: str) -> AblationJob:
    regime = runner.study.main_regime
    tag = runner.final_tag(regime, chosen)
    job = runner.job("final", regime, method, tag, chosen["overrides"],
                     runner.study.ablation_seeds, [method])
    teacher = [job.teacher[str(s)]["fingerprint"] for s in job.seeds]
    key = record_key(job.config, ",".join(teacher), -1, "ablation", False)
    return AblationJob(job, key, runner.book.folder / "ablation" / f"{method}.json")


def ablated_methods(runner: Any) -> list[str]:
    from horkd.methods import METHODS, methods_in

    if runner.study.ablation_methods is not None:
        return runner.study.ablation_methods
    main = runner.study.regime_methods(runner.study.main_regime)
    return [m for m in methods_in("ours", main) if METHODS.get(m).follows_orders]
