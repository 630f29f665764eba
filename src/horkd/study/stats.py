"""Seed statistics: mean, std, and a paired confidence interval of a difference.

Every method of a study runs with the same seeds on one split (``data.split_seed``), and a seed
fixes the initialisation and the data order (augmentation draws also depend on the method), so
the difference between two methods is taken per seed (paired) and its confidence interval uses
Student's t with n - 1 degrees of freedom.

A comparison the study file declares (method, comparator, equivalence margin m) is called
above / below (paired t test), equivalent within +-m (two one-sided tests, TOST) or
inconclusive, each p adjusted over the page's declared comparisons by Holm's step-down method;
the minimum detectable difference says what its seeds could have found. The formulas are in the
docstrings of :func:`paired_t_p`, :func:`tost_p`, :func:`minimum_detectable_difference` and
:func:`holm`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample std (n - 1); 0 for one value
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _t() -> Any:
    """Student's t distribution; scipy takes seconds to import, which `--status` should not pay."""
    from scipy import stats

    return stats.t


def t_quantile(level: float, df: int) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom (4.30 for
    95% at 2): what a mean of ``df + 1`` values' interval spans in standard errors."""
    return float(_t().ppf(0.5 + level / 2, df))


def summarize(values: list[float]) -> Summary:
    if not values:
        raise ValueError("no values to summarize")
    if not all(math.isfinite(v) for v in values):  # a run with no validation score: shown as nan
        return Summary(math.nan, math.nan, len(values))
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
        """Above, below or inconclusive, by the (unadjusted) interval rather than the mean: an
        interval that holds 0 shows no difference, not equivalence (that takes a declared
        margin and :func:`tost_p`)."""
        if self.low is None or self.high is None:
            return f"{self.interval()} (too few seeds for an interval)"
        word = ("above" if self.low > 0 else "below" if self.high < 0
                else "inconclusive: the interval holds 0")
        return f"{self.interval()}, {word}"


def paired_difference(a: list[float], b: list[float], level: float = 0.95) -> Difference:
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values need equal, non-zero lengths, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Difference(mean, None, None, len(diffs), level)
    half = t_quantile(level, len(diffs) - 1) * statistics.stdev(diffs)
    half /= len(diffs) ** 0.5
    return Difference(mean, mean - half, mean + half, len(diffs), level)


# --- declared comparisons: a test of a difference, equivalence, power, multiplicity ---------
#
# A study file declares, before any run, which method each method is compared with and an
# equivalence margin m (points of the headline metric). Every comparison is paired over the
# seeds: d_i = a_i - b_i, n seeds, mean d, sample sd s (n - 1), standard error se = s / sqrt(n),
# Student's t with n - 1 degrees of freedom, alpha = 1 - level (0.05 beside the 95% intervals).


def _t_ratio(numerator: float, se: float) -> float:
    """``numerator / se``, with a zero spread read as the limit: +-inf, or 0 for 0 / 0."""
    if se > 0:
        return numerator / se
    return math.copysign(math.inf, numerator) if numerator else 0.0


def paired_t_p(diffs: list[float]) -> float:
    """Two-sided p of the paired t test of ``mean d = 0``: ``t = mean / (s / sqrt(n))``,
    ``p = 2 * P(T_{n-1} > |t|)``. It is below alpha exactly where the two-sided interval at
    ``1 - alpha`` (:func:`paired_difference`) excludes 0."""
    n = len(diffs)
    if n < 2:
        raise ValueError("a paired t test needs at least two seeds")
    t = _t_ratio(statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(n))
    return float(min(1.0, 2 * _t().sf(abs(t), n - 1)))


def tost_p(diffs: list[float], margin: float) -> tuple[float, float]:
    """The two one-sided tests (TOST, Schuirmann 1987) of equivalence within ``+-margin``:

    - lower: H0 ``mean d <= -m`` against ``mean d > -m``: ``t_l = (mean + m) / se``,
      ``p_l = P(T_{n-1} > t_l)``;
    - upper: H0 ``mean d >= +m`` against ``mean d < +m``: ``t_u = (mean - m) / se``,
      ``p_u = P(T_{n-1} < t_u)``.

    Equivalence is shown at alpha where both reject, i.e. where ``max(p_l, p_u) <= alpha`` -
    the same as the ``1 - 2 alpha`` (90% for alpha 0.05) two-sided interval lying inside
    ``(-m, +m)``. Returns ``(p_l, p_u)``."""
    n = len(diffs)
    if n < 2:
        raise ValueError("TOST needs at least two seeds")
    if margin <= 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(n)
    lower = float(_t().sf(_t_ratio(mean + margin, se), n - 1))
    upper = float(_t().cdf(_t_ratio(mean - margin, se), n - 1))
    return lower, upper


def minimum_detectable_difference(sd: float, n: int, alpha: float = 0.05,
                                  power: float = 0.8) -> float | None:
    """The smallest true paired difference ``n`` seeds detect with probability ``power`` by a
    two-sided test at ``alpha``: ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)``
    (the usual t approximation of the noncentral-t power; ``sd`` is the sample sd of the
    paired differences). None for fewer than two seeds."""
    if n < 2:
        return None
    quantiles = _t().ppf(1 - alpha / 2, n - 1) + _t().ppf(power, n - 1)
    return float(quantiles * sd / math.sqrt(n))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's (1979) step-down adjustment, in the order given: with the k p values sorted
    ``p_(1) <= ... <= p_(k)``, ``adj_(i) = max_{j <= i} min(1, (k - j + 1) * p_(j))``. A
    hypothesis is rejected at family-wise error alpha where its adjusted p is ``<= alpha``.
    E.g. (0.01, 0.04, 0.03) -> (0.03, 0.06, 0.06)."""
    k = len(pvalues)
    adjusted = [0.0] * k
    running = 0.0
    for rank, index in enumerate(sorted(range(k), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (k - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class HolmDemands:
    """What Holm's step-down over ``m`` comparisons asks of ``n`` paired seeds, at its
    strictest step (alpha / m: the first hypothesis tested) and its loosest (alpha: the last).

    ``difference_sds``: the mean paired difference, in paired sds, whose t reaches the two-sided
    threshold (above or below); ``equivalence_sd``: the largest paired sd at which a mean
    difference of 0 passes TOST within ``+-margin``. Both ``(strictest, loosest)``; why a
    comparison is inconclusive can be read off them before any seed is run."""

    n: int
    m: int
    difference_sds: tuple[float, float]
    equivalence_sd: tuple[float, float] | None


def holm_demands(n: int, m: int, alpha: float = 0.05,
                 margin: float | None = None) -> HolmDemands | None:
    """:class:`HolmDemands` of ``n`` seeds in a family of ``m``; None for fewer than two seeds."""
    if n < 2 or m < 1:
        return None
    root = math.sqrt(n)
    levels = (alpha / m, alpha)
    difference = tuple(float(_t().ppf(1 - a / 2, n - 1)) / root for a in levels)
    equivalence = (tuple(margin * root / float(_t().ppf(1 - a, n - 1)) for a in levels)
                   if margin is not None else None)
    return HolmDemands(n, m, difference, equivalence)  # type: ignore[arg-type]


POWER = 0.8  # the power the minimum detectable difference is given at


@dataclass(frozen=True)
class Comparison:
    """A declared comparison ``method - comparator`` paired over the seeds of one regime.

    ``p`` is the two-sided paired t test of no difference, ``p_tost`` the TOST p of
    equivalence within ``+-margin`` (``max(p_l, p_u)``; None without a margin), ``mdd`` the
    minimum detectable difference at 80% power; ``p_holm`` and ``p_tost_holm`` are the same
    after Holm's adjustment over the page's family (:func:`adjust`); None before it, or for
    fewer than two seeds."""

    regime: str
    method: str
    comparator: str
    mean: float
    low: float | None
    high: float | None
    sd: float
    n: int
    level: float
    margin: float | None
    p: float | None
    p_tost: float | None
    mdd: float | None
    role: str = "exploratory"
    p_holm: float | None = None
    p_tost_holm: float | None = None
    apart: tuple[int, ...] = ()  # seeds left out: their two runs learnt from different teachers
    family: int = 1  # how many comparisons Holm adjusted it among (set by adjust)

    @property
    def alpha(self) -> float:
        return 1 - self.level

    def as_dict(self) -> dict[str, Any]:
        """The fields (a pending comparison's NaN as None) and the call."""
        fields = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                  for k, v in asdict(self).items()}
        return {**fields, "call": self.call() if self.n else "pending"}

    def call(self) -> str:
        """``above`` / ``below`` (the difference test, Holm-adjusted p <= alpha), else
        ``equivalent`` (TOST, Holm-adjusted p <= alpha), else ``inconclusive``."""
        if self.p is None:
            return "inconclusive"
        p = self.p if self.p_holm is None else self.p_holm
        if p <= self.alpha and self.mean != 0:
            return "above" if self.mean > 0 else "below"
        tost = self.p_tost if self.p_tost_holm is None else self.p_tost_holm
        if tost is not None and tost <= self.alpha:
            return "equivalent"
        return "inconclusive"

    def verdict(self) -> str:
        """The call in words: what the seeds show, and what they could not."""
        call = self.call()
        if self.p is None:
            return "inconclusive (too few seeds for a test)"
        tost = self.p_tost if self.p_tost_holm is None else self.p_tost_holm
        within = tost is not None and tost <= self.alpha
        if call in ("above", "below"):
            return call + (f", by less than the margin (equivalent within ±{self.margin:g} too)"
                           if within else "")
        if call == "equivalent":
            return f"equivalent within ±{self.margin:g}"
        raw = ("above" if self.mean > 0 else "below") if self.p <= self.alpha else None
        corrected = self.p_holm is not None and self.family > 1
        return ("inconclusive: "
                + (f"{raw} by its raw p, not after Holm's adjustment over the page; "
                   if raw else "")
                + f"its {self.n} seeds detect only differences of {self.mdd:.2f} or more at "
                f"{POWER:.0%} power"
                + (" at the raw alpha (more under Holm's)" if corrected else "")
                + ("" if self.margin is not None else " (no margin declared)"))


def compare(regime: str, method: str, comparator: str, a: list[float], b: list[float],
            margin: float | None = None, level: float = 0.95,
            role: str = "exploratory") -> Comparison:
    """``a - b`` paired by seed: interval, difference test, TOST within ``+-margin``, minimum
    detectable difference (unadjusted; :func:`adjust` adds Holm's)."""
    diff = paired_difference(a, b, level)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if diff.n < 2:
        return Comparison(regime, method, comparator, diff.mean, None, None, 0.0, diff.n, level,
                          margin, None, None, None, role)
    sd = statistics.stdev(diffs)
    p_tost = max(tost_p(diffs, margin)) if margin is not None else None
    return Comparison(regime, method, comparator, diff.mean, float(diff.low),
                      float(diff.high), sd, diff.n, level, margin, paired_t_p(diffs), p_tost,
                      minimum_detectable_difference(sd, diff.n, 1 - level, POWER), role)


def pending(regime: str, method: str, comparator: str, margin: float | None = None,
            level: float = 0.95, role: str = "exploratory") -> Comparison:
    """A declared comparison whose seeds are not all recorded yet (``n = 0``, no p)."""
    return Comparison(regime, method, comparator, math.nan, None, None, math.nan, 0, level,
                      margin, None, None, None, role)


def adjust(comparisons: list[Comparison]) -> list[Comparison]:
    """Holm over the family - the difference tests of every comparison given, and
    (separately) the TOST p of every comparison with a margin. A comparison without a p
    (pending, one seed) counts as p = 1: it keeps its place in the family, so the adjustment
    of the others does not shrink while runs are missing, and it is never rejected."""
    ps = holm([1.0 if c.p is None else c.p for c in comparisons])
    with_margin = [i for i, c in enumerate(comparisons) if c.margin is not None]
    tosts = holm([1.0 if comparisons[i].p_tost is None else comparisons[i].p_tost
                  for i in with_margin])
    tost_of = dict(zip(with_margin, tosts, strict=True))
    return [replace(c, p_holm=None if c.p is None else ps[i],
                    p_tost_holm=None if c.p_tost is None else tost_of[i],
                    family=len(comparisons))
            for i, c in enumerate(comparisons)]
