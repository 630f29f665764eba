"""Which runs one invocation of ``horkd study --only REGIME[/METHOD]`` may train; the rest are
read from the records, so one regime's answer can come first in a study of many hours."""

from __future__ import annotations

from horkd.study.config import StudyConfig
from horkd.study.jobs import Job


class Selection:
    """``["lr14", "full/horkd"]`` -> every method of ``lr14`` and HORKD of ``full``; ``None``
    (no ``--only``): everything. Unknown names fail before anything trains."""

    def __init__(self, study: StudyConfig, only: list[str] | None) -> None:
        self.study = study
        named: dict[str, set[str]] = {}  # regime -> methods (empty: all of them)
        for item in only or []:
            regime, _, method = item.partition("/")
            if regime not in study.regimes:
                raise ValueError(f"--only {item}: no regime '{regime}' in the study (regimes: "
                                 f"{', '.join(study.regimes)})")
            methods = study.regime_methods(regime)
            if method and method not in methods:
                raise ValueError(f"--only {item}: regime '{regime}' has no method '{method}' "
                                 f"(methods: {', '.join(methods)})")
            if not method or named.get(regime) == set():
                named[regime] = set()
            else:
                named.setdefault(regime, set()).add(method)
        self.named = named if only else None

    def regime(self, regime: str, methods: list[str]) -> bool:
        """Whether this regime is named as a whole or through one of ``methods``."""
        if self.named is None:
            return True
        named = self.named.get(regime)
        return named is not None and (not named or any(m in named for m in methods))

    def job(self, job: Job) -> bool:
        """Whether the job may train: its regime (and method) was named, or it is a search
        whose choices a named regime takes."""
        if self.regime(job.regime, [job.method]):
            return True
        return job.kind == "search" and any(
            self.study.regimes[name].choices_from == job.regime for name in self.named or {}
        )
