"""Seed statistics: mean, std, and a paired confidence interval of a difference.

Every method of a study runs with the same seeds on one split (``data.split_seed``), and a seed
fixes the initialisation and the data order (augmentation draws also depend on the method), so
the difference between two methods is taken per seed (paired) and its confidence interval uses
Student's t with n - 1 degrees of freedom.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample std (n - 1); 0 for one value
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(values: list[float]) -> Summary:
    if not values:
        raise ValueError("no values to summarize")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Summary(statistics.fmean(values), std, len(values))


@dataclass(frozen=True)
class Difference:
    """``a - b`` paired by seed: mean, and the two-sided interval at ``level`` (None for n < 2)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    level: float

    @property
    def above_zero(self) -> bool:
        return self.low is not None and self.low > 0

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def interval(self) -> str:
        """``+m [+low, +high]``, or the mean alone where there is no interval."""
        if self.low is None or self.high is None:
            return f"{self.mean:+.2f}"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"

    def verdict(self) -> str:
        """Above, below or level, by the interval rather than the mean."""
        if self.low is None or self.high is None:
            return f"{self.interval()} (too few seeds for an interval)"
        word = ("above" if self.low > 0 else "below" if self.high < 0
                else "level: the interval holds 0")
        return f"{self.interval()}, {word}"


def paired_difference(a: list[float], b: list[float], level: float = 0.95) -> Difference:
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values need equal, non-zero lengths, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Difference(mean, None, None, len(diffs), level)
    half = scipy_stats.t.ppf(0.5 + level / 2, len(diffs) - 1) * statistics.stdev(diffs)
    half /= len(diffs) ** 0.5
    return Difference(mean, mean - half, mean + half, len(diffs), level)
