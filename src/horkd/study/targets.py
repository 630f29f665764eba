"""The page's Targets table: each result the study file set out to reach before any run, met or
not, and by how much.

A study that states its targets up front and then shows only its findings leaves the reader to
work out which target a finding answers and whether it was reached; this table says it once,
from the same numbers as the findings (the Holm-adjusted calls, the paired differences, the
label-only-to-oracle gap, the CPU the recorded runs took), so a target missed is said as plainly
as one met.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from horkd.study.compute import teacher_cpu_seconds
from horkd.study.stats import Comparison, Difference


def evaluate(target: Mapping[str, Any], comparison: Comparison | None,
             means: Mapping[str, float]) -> tuple[str, str]:
    """``(measured, verdict)`` of one target. ``comparison``: the page's comparison of the
    target's method with its comparator (None: the target names none); ``means``: the regime's
    test means by method (headline metric). Pending until every number it needs is recorded."""
    measured, short = [], []
    if target.get("comparator") is not None:
        if comparison is None or comparison.n == 0:
            return "pending", "pending"
        call = comparison.call()
        c = comparison  # its interval in the findings' words (one seed: no interval)
        measured.append(f"{Difference(c.mean, c.low, c.high, c.n, c.level).interval()}, {call}")
        at_least = target.get("at_least")
        if at_least is not None and comparison.mean < at_least:
            short.append(f"{at_least - comparison.mean:.2f} short of {at_least:+.2f}")
        calls = target.get("calls")
        if calls and call not in calls:
            short.append(f"called {call}, not {' or '.join(calls)}")
    if target.get("gap_closed") is not None:
        need = ("scratch", "lr_oracle", target["method"])
        if any(means.get(m) is None for m in need):
            return "pending", "pending"
        low, high = means["scratch"], means["lr_oracle"]
        if high <= low:
            measured.append(f"no gap to close (scratch {low:.2f}, LR oracle {high:.2f})")
            short.append("no gap")
        else:
            closed = 100 * (means[target["method"]] - low) / (high - low)
            measured.append(f"{closed:.0f}% of the gap closed (scratch {low:.2f}, "
                            f"LR oracle {high:.2f})")
            if closed < target["gap_closed"]:
                short.append(f"{target['gap_closed'] - closed:.0f} points of the gap short of "
                             f"{target['gap_closed']:g}%")
    thresholds = [k for k in ("at_least", "calls", "gap_closed") if target.get(k) is not None]
    if not thresholds:
        return "; ".join(measured), "reported (no threshold)"
    return "; ".join(measured), ("not met: " + "; ".join(short)) if short else "met"


def study_cpu_hours(summary: Mapping[str, Any]) -> float:
    """The CPU the recorded runs of the page and its teachers took, in hours."""
    teachers = sum(teacher_cpu_seconds(summary.get("teachers", {})).values())
    return (float(summary.get("compute_seconds") or 0.0) + teachers) / 3600


def targets_section(summary: Mapping[str, Any], family: list[Comparison],
                    facts_by_regime: Mapping[str, Any]) -> list[str]:
    """``## Targets``: a row per declared target, and the CPU budget's row where one is set."""
    study = summary["study"]
    targets, budget = study.get("targets") or [], study.get("budget_cpu_hours")
    if not targets and budget is None:
        return []
    lines = ["", "## Targets", "",
             "Set in the study file before any run; measured on the test split with the "
             "findings' numbers (paired differences with their raw 95% interval and the "
             "Holm-adjusted call).", "",
             "| target | regime | measured | verdict |", "|---|---|---|---|"]
    by_pair = {(c.regime, c.method, c.comparator): c for c in family}
    unfinished = any(c.n == 0 and not c.apart for c in family)
    for t in targets:
        facts = facts_by_regime.get(t["regime"], {})
        headline = next(iter(facts.values()), {}) if facts else {}
        means = {m: f["mean"] for m, f in headline.get("methods", {}).items()}
        comparison = by_pair.get((t["regime"], t["method"], t.get("comparator")))
        measured, verdict = evaluate(t, comparison, means)
        unfinished |= verdict == "pending"
        lines.append(f"| {t['claim']} | `{t['regime']}` | {measured} | **{verdict}** |")
    if budget is not None:
        used = study_cpu_hours(summary)
        # a study with runs still to come has not met its budget yet, though it may have missed it
        verdict = (f"not met: {used - budget:.1f} h over" if used > budget
                   else "pending (runs still to come)" if unfinished
                   else f"met: {budget - used:.1f} h to spare")
        lines.append(f"| at most {budget:g} CPU-hours, teachers included | all | "
                     f"{used:.1f} CPU-hours recorded | **{verdict}** |")
    return lines
