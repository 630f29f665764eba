"""The page's Targets table: each result the study file set out to reach before any run, met or
not, and by how much.

A study that states its targets up front and then shows only its findings leaves the reader to
work out which target a finding answers and whether it was reached; this table says it once,
from the same numbers as the findings (the Holm-adjusted calls, the paired differences, the
label-only-to-oracle gap of the regime's table, the CPU the recorded runs took), so a target
missed is said as plainly as one met. Each verdict is judged on the figures as shown (two
decimals, whole percent), so a verdict never contradicts the number beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from horkd.study.compute import teacher_cpu_seconds
from horkd.study.stats import Comparison, Difference


def gap_share(value: float, low: float | None, high: float | None) -> float | None:
    """Percent of the gap between ``low`` (the label-only student) and ``high`` (the LR oracle)
    that ``value`` closes; None where there is no gap."""
    if low is None or high is None or high <= low:
        return None
    return 100 * (value - low) / (high - low)


def evaluate(target: Mapping[str, Any], comparison: Comparison | None,
             facts: Mapping[str, Any]) -> tuple[str, str]:
    """``(measured, verdict)`` of one target. ``comparison``: the page's comparison of the
    target's method with its comparator (None: the target names none); ``facts``: the regime's
    headline facts (test means by method, its label-only student). Pending until every number
    it needs is recorded."""
    measured, short = [], []
    if target.get("comparator") is not None:
        if comparison is None or comparison.n == 0:
            return "pending", "pending"
        c, call = comparison, comparison.call()
        measured.append(f"{Difference(c.mean, c.low, c.high, c.n, c.level).interval()}, {call}")
        at_least = target.get("at_least")
        if at_least is not None and round(c.mean, 2) < at_least:
            short.append(f"{at_least - round(c.mean, 2):.2f} short of {at_least:+.2f}")
        calls = target.get("calls")
        if calls and call not in calls:
            short.append(f"called {call}, not {' or '.join(calls)}")
    if target.get("gap_closed") is not None:
        means = {m: f["mean"] for m, f in facts.get("methods", {}).items()}
        low_name = facts.get("label_only")
        low, high, value = means.get(low_name), means.get("lr_oracle"), means.get(target["method"])
        if low is None or high is None or value is None:
            return "pending", "pending"
        share = gap_share(value, low, high)
        if share is None:
            measured.append(f"no gap to close ({low_name} {low:.2f}, LR oracle {high:.2f})")
            short.append("no gap")
        else:
            measured.append(f"{share:.0f}% of the gap closed ({low_name} {low:.2f}, LR oracle "
                            f"{high:.2f})")
            if round(share) < target["gap_closed"]:
                short.append(f"{target['gap_closed'] - round(share):g} points of the gap short "
                             f"of {target['gap_closed']:g}%")
    thresholds = [k for k in ("at_least", "calls", "gap_closed") if target.get(k) is not None]
    if not thresholds:
        return "; ".join(measured), "reported (no threshold)"
    return "; ".join(measured), ("not met: " + "; ".join(short)) if short else "met"


def study_cpu_hours(summary: Mapping[str, Any]) -> float:
    """The CPU the recorded runs of the page and its teachers took, in hours."""
    teachers = sum(teacher_cpu_seconds(summary.get("teachers", {})).values())
    return (float(summary.get("compute_seconds") or 0.0) + teachers) / 3600


def _headline(facts_by_regime: Mapping[str, Any], regime: str) -> Mapping[str, Any]:
    """A regime's facts on its headline metric (the first); empty before any final run."""
    return next(iter(facts_by_regime.get(regime, {}).values()), {})


def runs_to_come(summary: Mapping[str, Any], facts_by_regime: Mapping[str, Any]) -> bool:
    """Whether a regime still lacks a seed of a method it trains (a regime's table lists a
    method only once every seed is recorded)."""
    from horkd.methods import METHODS

    study = summary["study"]
    for regime, r in study["regimes"].items():
        done = _headline(facts_by_regime, regime).get("methods", {})
        for method in r.get("methods") or study["methods"]:
            if (method not in METHODS or METHODS.get(method).trains) and method not in done:
                return True
    return False


def targets_section(summary: Mapping[str, Any], family: list[Comparison],
                    facts_by_regime: Mapping[str, Any]) -> list[str]:
    """``## Targets``: a row per declared target, and the CPU budget's row where one is set."""
    study = summary["study"]
    targets, budget = study.get("targets") or [], study.get("budget_cpu_hours")
    if not targets and budget is None:
        return []
    lines = ["", "## Targets", "",
             "Set in the study file and registered with the confirmatory regimes' designs "
             "before their first run; measured on the test split with the findings' numbers "
             "(paired differences with their raw 95% interval, the Holm-adjusted call, the "
             "regime table's gap). A \"+x or more\" is met by the mean difference, a share of "
             "the gap is a point estimate (no interval); a claim with no threshold is reported "
             "(its call in the measured column).", "",
             "| target | regime | measured | verdict |", "|---|---|---|---|"]
    by_pair = {(c.regime, c.method, c.comparator): c for c in family}
    for t in targets:
        headline = _headline(facts_by_regime, t["regime"])
        comparison = by_pair.get((t["regime"], t["method"], t.get("comparator")))
        measured, verdict = evaluate(t, comparison, headline)
        claim = t["claim"].replace("|", "\\|")
        lines.append(f"| {claim} | `{t['regime']}` | {measured} | **{verdict}** |")
    if budget is not None:
        used = study_cpu_hours(summary)
        verdict = (f"not met: {used - budget:.1f} h over" if used > budget
                   # runs still to come: not met yet, though it may already be missed
                   else "pending (runs still to come)" if runs_to_come(summary, facts_by_regime)
                   else f"met: {budget - used:.1f} h to spare")
        lines.append(f"| at most {budget:g} CPU-hours, teachers included | all | "
                     f"{used:.1f} CPU-hours recorded | **{verdict}** |")
    return lines
