"""RESULTS.md from a finished study: setup, per-regime tables with seeds and intervals, the
search, the figures, and the command with its wall time. Numbers are read, never typed."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from horkd.checkpoint import write_text
from horkd.data.validation_source import describe_validation, holds_validation_apart
from horkd.numerics_version import NUMERICS_VERSION
from horkd.results import method_cell, primary_metric
from horkd.study.across_sizes import comparison
from horkd.study.compute import cost_cell, student_costs
from horkd.study.config import regime_comparisons, regime_margin
from horkd.study.data_figure import data_section
from horkd.study.page_files import figure_link, figures_folder
from horkd.study.progress import duration
from horkd.study.search_rounds import one_knob
from horkd.study.stats import (
    POWER,
    Comparison,
    Difference,
    adjust,
    compare,
    holm_demands,
    paired_difference,
    pending,
    summarize,
)
from horkd.study.targets import gap_share, targets_section
from horkd.study.teacher_identity import paired_values, teacher_note

EXTRA_METRICS = ("R@1 LR->HR teacher", "mean@", "worst@")  # reported beside the headline


def regime_metrics(finals: list[dict[str, Any]], regime: str,
                   reused: Collection[str] = ()) -> list[str]:
    """The headline metric of a regime's students, then the extra ones they report (the
    teacher-gallery protocol, the mean and worst over the resolution curve). An extra metric
    that only the ``reused`` methods' runs (another regime's) report is left out: every
    student of the regime would show as pending for it."""
    rows = [row for res in finals if res["regime"] == regime for rs in res["rows"].values()
            for row in rs if row["role"] == "student"]
    if not rows:
        return []
    own = [row for row in rows if row["method"] not in reused] or rows
    keys = list(dict.fromkeys(k for row in own for k in row))
    head = primary_metric(rows)
    return [head] + [k for k in keys if k.startswith(EXTRA_METRICS) and not k.endswith("_std")]


def _seed_values(
    finals: list[dict[str, Any]], regime: str, metric: str | None = None
) -> dict[str, Any]:
    """method -> {seed: metric} for the students, plus the regime's teacher rows."""
    students: dict[str, dict[int, float]] = {}
    teachers: dict[str, dict[int, dict[str, float]]] = {}
    val: dict[str, list[float]] = {}
    numerics: dict[str, int] = {}  # the oldest NUMERICS_VERSION among a method's seeds
    fallbacks: dict[str, int] = {}  # seeds whose chain fell back to the teacher (the guard)
    weights: dict[str, dict[int, str | None]] = {}  # the teacher each seed learnt from
    for res in finals:
        if res["regime"] != regime:
            continue
        val[res["method"]] = list(res["val"].values())
        weights.setdefault(res["method"], {}).update(
            {int(s): w for s, w in (res.get("weights") or {}).items()})
        if res.get("numerics"):
            numerics[res["method"]] = min(res["numerics"].values())
        for seed, rows in res["rows"].items():
            metric = metric or primary_metric(rows)
            for row in rows:
                if row["role"] == "student" and metric in row:
                    students.setdefault(row["method"], {})[int(seed)] = row[metric]
                    if row.get("fallback"):
                        fallbacks[row["method"]] = fallbacks.get(row["method"], 0) + 1
                elif row["role"] == "teacher":
                    teachers.setdefault(row["method"], {})[int(seed)] = row
    return {"metric": metric, "students": students, "teachers": teachers, "val": val,
            "numerics": numerics, "fallbacks": fallbacks, "weights": weights}


def _label_only(study: dict[str, Any], students: dict[str, Any]) -> str | None:
    """The baseline that learns from labels alone (scratch), the "vs scratch" reference."""
    from horkd.methods import METHODS

    for name in study["baselines"]:
        if name in students and name in METHODS and METHODS.get(name).needs == ():
            return name
    return None


def _gap_closed(value: float, low: float | None, high: float | None) -> str:
    """The share of the gap between ``low`` (scratch) and ``high`` (the LR oracle) closed."""
    share = gap_share(value, low, high)
    return "-" if share is None else f"{share:.0f}%"


def regime_tables(
    summary: dict[str, Any], regime: str, metric: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The Markdown table of one regime for one metric (default: the headline) and the figures
    it was computed from; seeds not recorded yet leave a method pending (its intervals wait for
    every seed)."""
    from horkd.methods import METHODS

    study = summary["study"]
    data = _seed_values(summary["finals"], regime, metric)
    metric, students = data["metric"], data["students"]
    seeds = sorted(study["regimes"][regime].get("seeds") or study["seeds"])
    done = {m: v for m, v in students.items() if all(s in v for s in seeds)}
    baselines = [b for b in study["baselines"] if b in done]
    # the best baseline is the one a user would pick: by validation score, not by test score
    best = max(baselines, key=lambda b: summarize(data["val"][b]).mean) if baselines else None
    scratch = _label_only(study, done)
    declared_label_only = _label_only(study, dict.fromkeys(study["baselines"]))
    oracle = next((m for m in done if m == "lr_oracle"), None)
    mean = {m: summarize([v[s] for s in seeds]).mean for m, v in done.items()}
    choices = summary["choices"].get(regime, {})
    costs = student_costs(summary)
    lines = [
        "| method | chosen settings | val mean | test mean | std | "
        f"seeds {', '.join(map(str, seeds))} | vs best baseline ({best or 'none yet'}, by val) | "
        f"vs {scratch or 'scratch'} |" + (" gap closed |" if oracle else "")
        + " CPU-min per seed (median run + teacher share) |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if oracle else "") + "---|",
    ]
    facts: dict[str, Any] = {"metric": metric, "best_baseline": best, "label_only": scratch,
                             "methods": {}}
    for method in study["regimes"][regime].get("methods") or study["methods"]:
        if method not in students and (method not in METHODS or not METHODS.get(method).trains):
            continue  # a reference (teacher) row: listed under the table
        settings = _settings(choices.get(method, {}))
        if method not in done:
            have = len(students.get(method, {}))
            lines.append(f"| {method} | {settings} | - | pending ({have} of {len(seeds)} seeds) "
                         "| - | - | - | - |" + (" - |" if oracle else "") + " - |")
            continue
        series = [done[method][s] for s in seeds]
        stats = summarize(series)
        vs_best = _paired(data, seeds, method, best)
        vs_scratch = (_paired(data, seeds, method, scratch) if scratch or declared_label_only
                      else "none in this study")
        gap = _gap_closed(stats.mean, mean.get(scratch), mean.get(oracle)) if oracle else None
        older = data["numerics"].get(method, NUMERICS_VERSION) < NUMERICS_VERSION
        shown = method_cell({"method": method, "seeds": len(seeds),
                             "fallback_seeds": data["fallbacks"].get(method, 0)})
        shown += " (older numerics)" if older else ""
        cost = costs.get((regime, method))
        lines.append(
            f"| {shown} | {settings} | {summarize(data['val'][method]).mean:.2f} | "
            f"{stats.mean:.2f} | {stats.std:.2f} | {' / '.join(f'{v:.2f}' for v in series)} | "
            f"{_cell(vs_best, method == best)} | {_cell(vs_scratch, method == scratch)} |"
            + (f" {gap} |" if oracle else "") + f" {cost_cell(cost)} |"
        )
        facts["methods"][method] = {
            "mean": stats.mean,
            "std": stats.std,
            "values": series,
            "vs_best": None if isinstance(vs_best, str) else vs_best.as_dict(),
            "vs_scratch": None if isinstance(vs_scratch, str) else vs_scratch.as_dict(),
            "gap_closed": gap,
            "cpu_seconds": cost,
            "numerics_version": data["numerics"].get(method),
            # the teacher weights each seed learnt from (None: it learns from no teacher);
            # two methods' values pair only at the seeds where these agree
            "teachers": [data["weights"].get(method, {}).get(s) for s in seeds],
        }
    ids = {m: data["weights"].get(m, {}) for m in done}
    note = teacher_note(ids, seeds, summary.get("teachers"))
    facts["teachers_apart"] = note[1:] if note else []
    table = "\n".join(lines + note) + _teacher_lines(data["teachers"], facts)
    return table, facts


def ship_line(summary: dict[str, Any], regime: str) -> tuple[str, dict[str, Any] | None]:
    """The method a regime would ship, as a run does (:mod:`horkd.experiment.ship`): the student
    with the highest mean validation score over the seeds (references excluded), its lead over
    the next paired by seed on validation - over the seeds whose runs learnt from one teacher,
    as every pair on the page - within noise where its 95% interval holds 0."""
    from horkd.methods import METHODS

    study = summary["study"]
    seeds = sorted(study["regimes"][regime].get("seeds") or study["seeds"])
    mine = [res for res in summary["finals"] if res["regime"] == regime
            and res["method"] in METHODS and METHODS.get(res["method"]).group in ("baseline",
                                                                                  "ours")]
    val = {res["method"]: {int(k): v for k, v in res["val"].items()} for res in mine}
    ids = {res["method"]: {int(s): w for s, w in (res.get("weights") or {}).items()}
           for res in mine}
    done = {m: v for m, v in val.items() if all(s in v for s in seeds)}
    if not done:
        return "", None
    ranked = sorted(done, key=lambda m: -statistics.fmean(done[m][s] for s in seeds))
    best = ranked[0]
    line = (f"Would ship: `{best}`, the highest mean validation score "
            f"({statistics.fmean(done[best][s] for s in seeds):.2f} over seeds "
            f"{', '.join(map(str, seeds))})")
    facts: dict[str, Any] = {"method": best, "runner_up": None, "lead": None}
    if len(ranked) > 1:
        other = ranked[1]
        a, b, apart = paired_values(seeds, done[best], done[other], ids.get(best, {}),
                                    ids.get(other, {}))
        if len(a) >= 2:
            lead = paired_difference(a, b)
            noise = ("within noise: the interval holds 0" if lead.low is None or lead.low <= 0
                     else "beyond noise")
            line += f", {lead.interval()} over `{other}` paired by seed ({noise})"
            facts.update(runner_up=other, lead=lead.as_dict())
        else:
            line += f", above `{other}` (too few seeds learnt from one teacher to pair)"
            facts.update(runner_up=other)
        if apart:
            line += (f" (seed{'s' if len(apart) > 1 else ''} {', '.join(map(str, apart))} "
                     "left out: the two runs learnt from different teachers)")
    waiting = [m for m in val if m not in done]
    line += (f"; pending: {', '.join(waiting)}." if waiting else ".")
    return line, facts


def _paired(data: dict[str, Any], seeds: list[int], method: str,
            other: str | None) -> Difference | str:
    """``method - other`` paired over the seeds whose runs learnt from the same teacher, or why
    there is no such interval (no baseline yet, the baseline pending, no seed of one teacher,
    one seed)."""
    if other is None:
        return "no baseline recorded yet"
    if other not in data["students"]:
        return f"{other} pending"
    a, b, _ = paired_values(seeds, data["students"][method], data["students"][other],
                            data["weights"].get(method, {}), data["weights"].get(other, {}))
    if not a:
        return "not paired (another teacher)"
    if len(a) < 2:
        return "one seed of one teacher: no interval"
    return paired_difference(a, b)


def _cell(diff: Difference | str, itself: bool) -> str:
    if itself:
        return "-"
    return diff if isinstance(diff, str) else diff.interval()


def _settings(chosen: dict[str, Any]) -> str:
    """A method's chosen overrides as the table shows them; where its runs come from."""
    text = "; ".join(chosen.get("overrides", [])) or "defaults"
    return text + (f" (runs of `{chosen['from']}`)" if "from" in chosen else "")


def _teacher_lines(teachers: dict[str, dict[int, dict[str, float]]], facts: dict) -> str:
    lines, seeds = [], set()
    for name, per_seed in teachers.items():
        seed, row = next(iter(per_seed.items()))
        seeds.add(seed)
        shown = {k: v for k, v in row.items() if k not in ("method", "role", "params", "flops")
                 and not k.startswith(("R@2", "R@4", "R@8")) and "top5" not in k}
        facts[name] = shown
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in shown.items()))
    # with several teachers the rows are those of the first final seed's teacher, not a mean
    which = f", with the teacher of seed {seeds.pop()}" if len(seeds) == 1 else ""
    return f"\n\nTeacher rows (scored once{which}):\n" + "\n".join(lines) if lines else ""


def search_table(summary: dict[str, Any]) -> str:
    """Every search candidate's validation score (the mean over the search seeds); a choice at
    an end of a numeric grid (the highest or lowest value a varied setting takes among the
    candidates) is flagged: the best setting may lie beyond the grid. Candidates added beyond a
    grid's end (``search.extend``) are marked, and the searches they extended named."""
    study = summary["study"]
    lines = ["| regime | method | candidate | settings | val score |", "|---|---|---|---|---|"]
    defaults: dict[str, Any] = {}
    searches: set[tuple[str, str]] = set()
    edges: list[str] = []
    extended = summary.get("extended") or {}
    regimes, methods = list(study["regimes"]), list(study.get("methods") or [])

    def order(regime: str, method: str) -> tuple[int, int]:  # study order, not the runs' order
        return (regimes.index(regime) if regime in regimes else len(regimes),
                methods.index(method) if method in methods else len(methods))

    def place(res: dict[str, Any]) -> tuple[int, int, int]:  # an added candidate by its method
        return (*order(res["regime"], res["method"]), int(res["tag"][1:]))

    unextendable: list[str] = []
    for res in sorted(summary["search"], key=place):
        method, regime = res["method"], res["regime"]
        index = int(res["tag"][1:])
        own = study["regimes"][regime].get("candidates") or {}
        declared = own.get(method) or study["search"]["candidates"][method]
        candidates = declared + extended.get(regime, {}).get(method, [])
        settings = "; ".join(candidates[index]) or "defaults"
        if index >= len(declared):
            settings += " (added: the grid extended)"
        chosen = summary["choices"].get(regime, {}).get(method, {}).get("tag") == res["tag"]
        searches.add((regime, method))
        mark = " (chosen)" if chosen else ""
        if chosen:
            if regime not in defaults:
                defaults[regime] = _regime_config(study, regime)
            edge = grid_edges(candidates, index, defaults[regime])
            if edge:
                mark = f" (chosen, at the grid's edge: {edge})"
                edges.append(f"`{regime}` {method}")
                if one_knob(declared) is None:
                    unextendable.append(f"`{regime}` {method}")
        values = list(res["val"].values())
        score = (None if not values else math.nan if not all(map(math.isfinite, values))
                 else statistics.fmean(values))
        shown = ("diverged" if res.get("error") else "pending" if score is None
                 else f"{score:.2f}" + (f" (mean of {len(values)} seeds)" if len(values) > 1
                                        else ""))
        guard = [f.get("assistant_guard", {}) for f in (res.get("facts") or {}).values()]
        if any(not g.get("trusted", True) for g in guard):  # scored as horkd_no_assistant
            shown += " (fell back to teacher -> student: the assistant failed its guard)"
        lines.append(f"| {regime} | {method} | {res['tag']}{mark} | {settings} | {shown} |")
    steps = {(r, m): len(c) for r, by_method in extended.items() for m, c in by_method.items()}
    grown = [f"`{r}` {m} ({n} step{'s' if n > 1 else ''})"
             for (r, m), n in sorted(steps.items(), key=lambda kv: order(*kv[0]))]
    if grown:
        lines += ["", f"Extended beyond their declared grid (search.extend = "
                  f"{study['search'].get('extend', 0)} steps at most): {', '.join(grown)}."]
    if edges:
        lines += ["", f"{len(edges)} of {len(searches)} searches chose a candidate at an end of "
                  f"a numeric grid ({', '.join(edges)}): the grid does not bracket the choice, "
                  "so a better setting may lie beyond it"
                  + (" (still, after the extension)" if grown else "")
                  + (f"; in {len(unextendable)} of them ({', '.join(unextendable)}) the "
                     "candidates vary more than one setting, a grid no extension grows"
                     if unextendable else "")
                  + "."]
    return "\n".join(lines)


def _regime_config(study: dict[str, Any], regime: str) -> Any:
    """The experiment config a regime's runs start from (for the settings a candidate leaves
    at their default); None where it cannot be built (a partial study)."""
    from horkd.config import config_from_dict

    try:
        return config_from_dict(dict(study["base"]),
                                list(study["regimes"][regime].get("overrides") or []))
    except Exception:  # noqa: BLE001  (only the edge flag's default values depend on it)
        return None


def _number(value: Any) -> float | None:
    """A finite number from an override value or a config field; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _setting(config: Any, key: str) -> Any:
    """The value of a dotted key in a config (None where absent)."""
    for part in key.split("."):
        if config is None:
            return None
        config = config.get(part) if isinstance(config, dict) else getattr(config, part, None)
    return config


def grid_edges(candidates: list[list[str]], chosen: int, config: Any = None) -> str:
    """Where the ``chosen`` candidate sits at an end of the numeric grid the candidates span:
    for every override key that takes at least two numeric values across the candidates that
    share the chosen one's other, non-numeric settings (a candidate without a key has the value
    of ``config``, the regime's experiment config, when given), the chosen value if it is the
    lowest or the highest, e.g. ``distill.loss.temperature=8, the highest of 2 / 4 / 8``; ""
    for an interior choice. A candidate that differs by ``orders=[2,3]`` is no step of the
    ``bank_size`` grid: it says nothing of a bank size beyond the chosen one. A chosen 0 at the
    low end (a term or a bank switched off) is no edge: the grid cannot go below it."""
    parsed = [dict(o.split("=", 1) for o in c if "=" in o) for c in candidates]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    values = {k: [p[k] if k in p else _setting(config, k) for p in parsed] for k in keys}
    numeric = {k for k, vs in values.items()
               if all(v is None or _number(v) is not None for v in vs)}
    mine = [_plain(values[k][chosen]) for k in keys if k not in numeric]
    line = [i for i in range(len(parsed))
            if [_plain(values[k][i]) for k in keys if k not in numeric] == mine]
    found = []
    for key in (k for k in keys if k in numeric):
        grid = sorted({v for v in (_number(values[key][i]) for i in line) if v is not None})
        value = _number(values[key][chosen])
        if len(grid) < 2 or value is None or grid[0] < value < grid[-1]:
            continue
        if value == grid[0] == 0:  # a weight or a bank of 0 is off: no step lies below it
            continue
        end = "the highest" if value == grid[-1] else "the lowest"
        found.append(f"{key}={value:g}, {end} of {' / '.join(f'{v:g}' for v in grid)}")
    return "; ".join(found)


def _plain(value: Any) -> Any:
    """A setting comparable whether it came from an override's text or from a config."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return list(value) if isinstance(value, tuple) else value


def curve_figure(summary: dict[str, Any], out_dir: Path) -> Path | None:
    from horkd.report.figures import resolution_curve

    regime = summary["study"]["main_regime"]
    per_network: dict[str, dict[str, list[float]]] = {}
    for res in summary["finals"]:
        if res["regime"] != regime:
            continue
        for curve in res["curve"].values():
            for network, points in curve.items():
                for size, value in points.items():
                    per_network.setdefault(network, {}).setdefault(size, []).append(value)
    if not per_network:
        return None
    means = {
        n: {s: statistics.fmean(v) for s, v in points.items()} for n, points in per_network.items()
    }
    metric = _seed_values(summary["finals"], regime)["metric"] or "score"
    lr_size = summary["study"]["base"].get("degrade", {}).get("lr_size")
    return resolution_curve(means, metric, out_dir / "resolution_curve.png", lr_size=lr_size)


def labels_figure(summary: dict[str, Any], out_dir: Path,
                  samples: tuple[Any, Any] | None = None) -> Path | None:
    """The study's ``label_curve`` regimes along the share of labels the students use: every
    baseline and method of ours recorded in at least two of them (a method trained only where
    labels are few, as the semi-supervised student, is a shorter line, not left out), with the
    HR teacher and the LR oracle (trained with every label)."""
    from horkd.config import apply_overrides
    from horkd.report.figures import label_curve

    study = summary["study"]
    regimes = study.get("label_curve") or []
    if len(regimes) < 2:
        return None
    series: dict[str, list[tuple[float, float, float]]] = {}
    references: dict[str, float] = {}
    per_regime = {r: _seed_values(summary["finals"], r) for r in regimes}
    metric = next((v["metric"] for v in per_regime.values() if v["metric"]), None)
    for regime, values in per_regime.items():
        raw = apply_overrides(study["base"], study["regimes"][regime].get("overrides") or [])
        share = 100 * (raw.get("data", {}).get("label_fraction") or 1.0)
        seeds = study["regimes"][regime].get("seeds") or study["seeds"]
        for method, by_seed in values["students"].items():
            if not all(s in by_seed for s in seeds):
                continue
            points = [by_seed[s] for s in seeds]
            if method == "lr_oracle":
                references["LR oracle, every label"] = summarize(points).mean
                continue
            series.setdefault(method, []).append((share, *_mean_interval(points)))
        teacher = values["teachers"].get("teacher")
        if teacher and metric:
            row = next(iter(teacher.values()))
            references.setdefault("HR teacher", row.get(metric.replace("lr_", "hr_"), math.nan))
    from horkd.methods import methods_in

    series = {m: p for m, p in series.items() if len(p) >= 2 and m in
              study["baselines"] + methods_in("ours")}
    if not series or metric is None:
        return None
    references = {k: v for k, v in references.items() if math.isfinite(v)}
    return label_curve(series, references, metric, out_dir / "labels_curve.png",
                       samples)


def _mean_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The mean and the half-width of its t interval over seeds (0 for one seed)."""
    from scipy import stats as scipy_stats

    s = summarize(values)
    if s.n < 2:
        return s.mean, 0.0
    return s.mean, float(scipy_stats.t.ppf(0.5 + level / 2, s.n - 1) * s.std / s.n ** 0.5)


def ablation_figure(summary: dict[str, Any], out_dir: Path) -> tuple[Path, str] | None:
    from horkd.report.figures import orders_ablation

    ablation = summary.get("ablation")
    if not ablation:
        return None
    stats = {
        method: {tag: summarize(values) for tag, values in tags.items()}
        for method, tags in ablation["orders"].items()
    }
    # reference lines: the final baselines (their searched settings) at the ablation's seeds
    finals = _seed_values(summary["finals"], summary["study"]["main_regime"])["students"]
    seeds = [int(s) for s in ablation["seeds"]]
    baselines = {
        name: summarize([finals[name][s] for s in seeds]).mean
        for name in summary["study"]["baselines"]
        if name in finals and all(s in finals[name] for s in seeds)
    }
    path = orders_ablation(
        {m: {t: (s.mean, s.std) for t, s in tags.items()} for m, tags in stats.items()},
        ablation["metric"],
        out_dir / "orders_ablation.png",
        baselines,
        seeds=len(seeds),
    )
    tags = list(next(iter(stats.values())))
    rows = ["| method | " + " | ".join(tags) + " |", "|---" * (len(tags) + 1) + "|"]
    for method, by_tag in stats.items():
        rows.append(f"| {method} | " + " | ".join(f"{by_tag[t].mean:.2f}" for t in tags) + " |")
    if baselines:
        rows += ["", "Baselines at the same seeds: "
                 + ", ".join(f"{n} {v:.2f}" for n, v in baselines.items()) + "."]
    return path, "\n".join(rows)


def _setup(summary: dict[str, Any]) -> list[str]:
    study = summary["study"]
    parts = [
        f"# Results: {study.get('title') or study['name']}",
        "",
        "Generated by `horkd study` from the study's own files; every number below was measured "
        "by the command at the end of this page. Hyper-parameters were chosen on "
        + _validation_words(study) + "; the test split scored each final model once.",
        "",
        "## Setup",
        "",
        f"- Seeds of the final runs: {study['seeds']} (unless a regime says otherwise); "
        + _search_seeds(study["search"]) + ", "
        f"{len(next(iter(study['search']['candidates'].values())))} candidates per method "
        + ("(the same budget for every method)" if not study["search"].get("extend") else
           "(the same budget for every method), and up to "
           f"{study['search']['extend']} more where one numeric setting varies and the choice "
           "was at an end of its grid (the search table lists them)")
        + "; what a method does not search is the base config's"
        + _base_loss(study) + "." + _searched_by_some(summary),
        f"- Baselines: {', '.join(study['baselines'])}. Intervals are paired by seed (same split, "
        "labelled subset and data order), 95%, Student's t with n-1 degrees of freedom.",
    ]
    for name, t in summary["teachers"].items():
        parts.append(
            f"- Teacher `{name}`: {t['arch']}, {t['epochs']} epochs, best validation "
            f"{t['val']:.2f}" + (f" on {t['validation']}" if t.get("validation") else "")
            + f" ({_teacher_time(t)} to train)."
            + "".join(_retrained(r) for r in t.get("retrained", []))
            + _near_chance(t)
        )
    return parts + _few_validation_images(summary)


def _base_loss(study: dict[str, Any]) -> str:
    """The base loss settings every candidate starts from (a method that searches no temperature
    distils at this one), so a table that lists only overrides is read whole."""
    loss = ((study.get("base") or {}).get("distill") or {}).get("loss") or {}
    return (" (`distill.loss`: " + ", ".join(f"{k} {v}" for k, v in loss.items()) + ")"
            if loss else "")


def _searched_by_some(summary: dict[str, Any]) -> str:
    """The base loss settings some methods search and the others distil at (Hinton KD's
    temperature, say): a difference between a method that searched a setting and one that did
    not is partly the search's, and the reader is told so, with what the searchers chose."""
    study = summary["study"]
    base = ((study.get("base") or {}).get("distill") or {}).get("loss") or {}
    grids = [study["search"]["candidates"]] + [r.get("candidates") or {}
                                               for r in study["regimes"].values()]
    searched: dict[str, list[str]] = {}
    for method in study["methods"]:
        for grid in grids:
            candidates = [dict(o.partition("=")[::2] for o in c) for c in grid.get(method) or []]
            for key in base:
                name = f"distill.loss.{key}"
                varied = len({c.get(name) for c in candidates}) > 1
                if varied and method not in searched.get(key, []):
                    searched.setdefault(key, []).append(method)
    distillers = {m for methods in searched.values() for m in methods}
    lines = []
    for key, methods in searched.items():
        if set(methods) == distillers:
            continue  # every method that searches its loss searched this one
        picks = {m: sorted({o.partition("=")[2] for choice in (summary.get("choices") or {})
                            .values() for o in (choice.get(m) or {}).get("overrides") or []
                            if o.startswith(f"distill.loss.{key}=")}, key=_as_number)
                 for m in methods}
        lines.append(f"{key} by " + ", ".join(m + (
            f" (chose {picks[m][0]})" if len(picks[m]) == 1 else
            f" (chose {' / '.join(picks[m])} across regimes)" if picks[m] else "")
            for m in methods))
    if not lines:
        return ""
    return (" Base loss settings only some methods search (the others distil at the base's; a "
            "difference between a method that searched one and one that did not is partly the "
            "search's): " + "; ".join(lines) + ".")


def _as_number(value: str) -> tuple[int, float | str]:
    """Sort key: numbers by value, anything else after them by text."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def _teacher_time(teacher: dict[str, Any]) -> str:
    """Wall minutes, and CPU minutes where the record kept them (a teacher trained beside other
    jobs waits: its wall time is not its cost)."""
    wall = f"{(teacher.get('train_seconds') or 0) / 60:.1f} min"
    cpu = teacher.get("train_cpu_seconds")
    return f"{wall} of wall time, {cpu / 60:.1f} CPU-min" if cpu else wall


def _validation_words(study: dict[str, Any]) -> str:
    """What the study's choices were made on: a split carved from the training set, or the
    images its dataset holds apart for validation (the glyphs of the validation fonts)."""
    dataset = (study.get("base") or {}).get("data", {}).get("dataset", "fashion_mnist")
    if holds_validation_apart(dataset):
        return f"{describe_validation({'dataset': dataset})}, never on training images"
    return "a validation split carved from the training set"


def _few_validation_images(summary: dict[str, Any]) -> list[str]:
    """One line where the choices rest on few validation images (a small folder's 10%): the
    search, each run's epoch and the method the page would ship were picked on them."""
    from horkd.study.template import FEW_VALIDATION_IMAGES

    counts = {f["val_images"] for res in (*summary["search"], *summary["finals"])
              for f in (res.get("facts") or {}).values() if "val_images" in f}
    if not counts or min(counts) >= FEW_VALIDATION_IMAGES:
        return []
    few = min(counts)
    return [f"- Every choice on this page (each method's settings, each run's epoch, the method "
            f"it would ship) rests on {few} validation images: one image moves a validation "
            f"score by {100 / few:.1f} points, so choices a few images apart are close to a "
            "coin toss; more training images (or a larger data.val_fraction) make them firmer."]


def _retrained(r: dict[str, Any]) -> str:
    """A teacher trained again (its checkpoint is not kept in git): its score, and where the
    runs that learnt from it are named (a record that says which weights it learnt from)."""
    took = f" ({r['train_seconds'] / 60:.1f} min)" if r.get("train_seconds") else ""
    which = ("the runs that learnt from it are named under their regimes, and paired only with "
             "runs of the same teacher" if r.get("weights") else
             "the runs recorded after that learnt from it")
    return (f" Trained again later (its checkpoint is not kept in git; another CPU rounds "
            f"differently): best validation {r['val']:.2f}{took}; {which}.")


def _search_seeds(search: dict[str, Any]) -> str:
    seeds = search.get("seeds") or [search["seed"]]
    if len(seeds) == 1:
        return f"search seed {seeds[0]}"
    return f"search seeds {seeds} (a candidate's score: its mean validation over them)"


def _near_chance(teacher: dict[str, Any]) -> str:
    """A teacher that learned next to nothing makes every distilled row below meaningless: the
    page says so where the teacher is described, not only the log of the run that trained it."""
    from horkd.experiment.stages import near_chance

    classes = teacher.get("classes")
    if not classes or not near_chance(teacher["val"], classes):
        return ""
    return (f" **Near chance** ({100 / classes:.2f} with {classes} classes): the students learnt "
            "from a teacher that knows next to nothing, so the distilled rows below say nothing "
            "about distillation; train a better teacher first (the README's 'Your own images' "
            "names the settings that help on a small folder, and a pretrained teacher).")


def page_comparisons(summary: dict[str, Any]) -> list[Comparison]:
    """Every comparison the study declares (``comparisons``, per regime or for the study),
    in every regime of the page, on the regime's headline metric and paired over its seeds;
    Holm-adjusted over all of them (a pending one keeps its place in the family at p = 1)."""
    study = summary["study"]
    family: list[Comparison] = []
    for regime, r in study["regimes"].items():
        pairs = regime_comparisons(study, regime)
        if not pairs:
            continue
        margin, role = regime_margin(study, regime), r.get("role") or "exploratory"
        metrics = regime_metrics(summary["finals"], regime, r.get("reuse") or {})
        data = _seed_values(summary["finals"], regime, metrics[0]) if metrics else {}
        students = data.get("students", {})
        seeds = sorted(r.get("seeds") or study["seeds"])
        for method, other in pairs:
            a, b = students.get(method, {}), students.get(other, {})
            if all(s in a and s in b for s in seeds):
                xs, ys, apart = paired_values(seeds, a, b, data["weights"].get(method, {}),
                                              data["weights"].get(other, {}))
                found = (compare(regime, method, other, xs, ys, margin, role=role) if xs else
                         pending(regime, method, other, margin, role=role))
                family.append(replace(found, apart=tuple(apart)))
            else:
                family.append(pending(regime, method, other, margin, role=role))
    return adjust(family)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}" if value >= 0.001 else "<0.001"


def _apart(c: Comparison) -> str:
    """Which seeds a comparison leaves out because its two runs learnt from other teachers."""
    if not c.apart:
        return ""
    return (f" (seed{'s' if len(c.apart) > 1 else ''} {', '.join(map(str, c.apart))} left out: "
            "the two runs learnt from different teachers)")


def _what_intervals_cover(study: dict[str, Any]) -> str:
    """Whether the seeds vary the data too: with ``data.split_seed`` fixed every run shares one
    split and labelled draw, so the intervals say nothing of another draw."""
    data = (study.get("base") or {}).get("data") or {}
    if data.get("split_seed") is None:
        return ", over seeds that each draw their own split and labelled subset"
    return (", over the seeds (and their teachers) alone: every run shares one data split, one "
            "labelled draw and one test subset")


def _demands_sentence(family: list[Comparison], seeds: int) -> str:
    """What Holm over the page's family asks of its seeds (the most common count recorded, else
    the study's), so an "inconclusive" can be read as the design's limit rather than a finding
    of no difference."""
    counts = [c.n for c in family if c.n] or [seeds]
    n = max(set(counts), key=counts.count)
    margins = [c.margin for c in family if c.margin is not None]
    demands = holm_demands(n, len(family), family[0].alpha, margins[0] if margins else None)
    if demands is None:
        return ""
    (strict, loose), sentence = demands.difference_sds, ""
    if demands.equivalence_sd is not None:
        sd_strict, sd_loose = demands.equivalence_sd
        sentence = (f", and equivalence within ±{margins[0]:g} a paired sd under "
                    f"{sd_strict:.2f} to {sd_loose:.2f} even where the true difference is 0")
    return (f" With {n} seeds, Holm over {len(family)} asks a difference of {strict:.1f} paired "
            f"sds to be called above or below at its strictest step ({loose:.1f} at its "
            f"loosest){sentence}.")


def _comparison_line(c: Comparison) -> str:
    """``horkd - hinton_kd: +0.08 [-0.34, +0.50], p 0.620 (Holm 1.000), ... : inconclusive``"""
    if c.n == 0 and c.apart:
        return f"{c.method} - {c.comparator}: not paired{_apart(c)}"
    if c.n == 0:
        return f"{c.method} - {c.comparator}: pending (not every seed recorded yet)"
    diff = Difference(c.mean, c.low, c.high, c.n, c.level)
    tost = (f"; TOST within ±{c.margin:g} p {_p(c.p_tost)} (Holm {_p(c.p_tost_holm)})"
            if c.p_tost is not None else "")
    mdd = f"; detectable at {POWER:.0%} power: {c.mdd:.2f}" if c.mdd is not None else ""
    return (f"{c.method} - {c.comparator}: {diff.interval()}, p {_p(c.p)} "
            f"(Holm {_p(c.p_holm)}){tost}{mdd}: **{c.verdict()}**{_apart(c)}")


def comparison_table(comparisons: list[Comparison]) -> str:
    """A regime's declared comparisons: the difference and its raw interval, the raw and the
    Holm-adjusted p of the difference test and of TOST, the minimum detectable difference and
    the call (made on the adjusted p)."""
    lines = ["| method - comparator | difference [95% interval] | p (Holm) | "
             "TOST p within ±margin (Holm) | detectable at 80% power | call |",
             "|---|---|---|---|---|---|"]
    for c in comparisons:
        if c.n == 0:
            what = "not paired" + _apart(c) if c.apart else "pending"
            lines.append(f"| {c.method} - {c.comparator} | {what} | - | - | - | - |")
            continue
        diff = Difference(c.mean, c.low, c.high, c.n, c.level)
        tost = (f"±{c.margin:g}: {_p(c.p_tost)} ({_p(c.p_tost_holm)})"
                if c.p_tost is not None else "no margin")
        lines.append(f"| {c.method} - {c.comparator} | {diff.interval()} | {_p(c.p)} "
                     f"({_p(c.p_holm)}) | {tost} | "
                     f"{'-' if c.mdd is None else f'{c.mdd:.2f}'} | {c.verdict()}{_apart(c)} |")
    return "\n".join(lines)


def _role(r: dict[str, Any]) -> str:
    return r.get("role") or "exploratory"


def _regimes(summary: dict[str, Any], figures: Path,
             family: list[Comparison] | None = None) -> tuple[list[str], dict[str, Any]]:
    parts: list[str] = []
    facts_by_regime: dict[str, Any] = {}
    family = page_comparisons(summary) if family is None else family
    for regime, r in summary["study"]["regimes"].items():
        head = (f"## Regime `{regime}` ({_role(r)}{_registered(summary, regime)})"
                + (f": {r['description']}" if r.get("description") else ""))
        metrics = regime_metrics(summary["finals"], regime, r.get("reuse") or {})
        source = r.get("choices_from")
        parts += ["", head, "",
                  f"Overrides: `{' '.join(r['overrides']) or '(none)'}`; {_teachers(r)}."
                  + (f" Settings taken from the `{source}` search." if source else "")]
        if not metrics:
            parts += ["", "Pending: no final run of this regime is recorded yet."]
            continue
        for i, metric in enumerate(metrics):
            table, facts = regime_tables(summary, regime, metric)
            facts_by_regime.setdefault(regime, {})[metric] = facts
            if i:  # the teacher rows are listed once, under the headline metric
                table = table.split("\n\nTeacher rows")[0]
            parts += ["", f"Metric `{metric}` (test):", "", table]
            if not i:
                shipped, facts["ship"] = ship_line(summary, regime)
                parts += ["", shipped] if shipped else []
                parts += _guard_note(summary["finals"], regime)
                declared = [c for c in family if c.regime == regime]
                facts["comparisons"] = [c.as_dict() for c in declared]
                if declared:
                    parts += ["", f"Declared comparisons on `{metric}` (paired over seeds; "
                              "p of the two-sided t test and of TOST, Holm-adjusted over the "
                              f"page's {len(family)} declared comparisons in brackets; the call "
                              "uses the adjusted p):", "", comparison_table(declared)]
            if metric.endswith("LR->HR teacher"):
                parts += ["", _map_note(summary["finals"], regime)]
        parts += comparison(summary, regime, figures)
    return parts, facts_by_regime


def _registered(summary: dict[str, Any], regime: str) -> str:
    """``, registered 2026-12-06 at commit abc1234 (design 1a2b...)`` for a confirmatory
    regime whose design was registered before its first run."""
    entry = (summary.get("registrations") or {}).get(regime)
    if not entry:
        return ""
    commit = (entry.get("git_commit") or "unknown")[:7]
    return f", design registered {entry['date']} at commit {commit}, digest {entry['digest']}"


def _teachers(r: dict[str, Any]) -> str:
    """``teacher `classification``` or, for teachers as a factor, which and how the seeds are
    spread over them."""
    names = [r["teacher"]] if isinstance(r["teacher"], str) else list(r["teacher"])
    seeds = r.get("teacher_seeds")
    if len(names) == 1 and not seeds:
        return f"teacher `{names[0]}`"
    each = ", ".join(f"`{n}`" for n in names) + (f" (teacher seeds {seeds})" if seeds else "")
    return f"teachers {each}, the final seeds spread over them round-robin by seed index"


def _verdict(diff: dict[str, Any] | None) -> str:
    return Difference(**diff).verdict() if diff else "-"


def findings(summary: dict[str, Any], facts_by_regime: dict[str, Any],
             family: list[Comparison] | None = None) -> list[str]:
    """The page's claims. First every comparison the study declared, called above / below /
    equivalent / inconclusive on Holm-adjusted p over the page, those of confirmatory regimes
    apart from those of exploratory ones; then, for a method of ours with no declared
    comparison in a regime, its descriptive line against the best baseline and the label-only
    student (raw intervals, not adjusted)."""
    from horkd.methods import METHODS

    study = summary["study"]
    family = page_comparisons(summary) if family is None else family
    declared = {(c.regime, c.method) for c in family}
    lines, pending_runs = [], []
    for regime, r in study["regimes"].items():
        facts = facts_by_regime.get(regime, {})
        facts = next(iter(facts.values())) if facts else {"methods": {}}
        for method in r.get("methods") or study["methods"]:
            if (method not in METHODS or METHODS.get(method).group != "ours"
                    or (regime, method) in declared):
                continue
            f = facts["methods"].get(method)
            if f is None:
                pending_runs.append(f"`{regime}` {method}")
                continue
            best = facts["best_baseline"]
            lines.append(
                f"- `{regime}`, {method}: {f['mean']:.2f} {facts['metric']}; vs the best baseline "
                + (f"({best}) {_verdict(f['vs_best'])}" if best else "(none recorded yet) -")
                + f"; vs the label-only student {_verdict(f['vs_scratch'])} ({_role(r)})"
            )
    if not lines and not family:
        return []
    parts = ["", "## Findings"]
    if family:
        alpha = family[0].alpha
        with_margin = sum(1 for c in family if c.margin is not None)
        parts += ["", f"The comparisons the study file declares (a confirmatory regime's before "
                  "its first run; an exploratory regime's may come after its scores), on each "
                  "regime's headline metric, paired over its seeds: a two-sided t test of no "
                  f"difference and, where a margin is declared, two one-sided tests (TOST) of "
                  f"equivalence within it, both at alpha {alpha:.2f} with Student's t (n-1 "
                  f"df); p adjusted with Holm's step-down method over the page's {len(family)} "
                  f"declared comparisons ({with_margin} with a margin for TOST; a pending one "
                  "counts as p = 1), raw p first, adjusted in brackets; the call uses the "
                  "adjusted p. \"Detectable\" is the smallest difference the seeds detect at "
                  f"{POWER:.0%} power (two-sided alpha {alpha:.2f} before Holm's correction, "
                  "from the paired sd); the "
                  "intervals are the raw 95% ones" + _what_intervals_cover(study) + "."
                  + _demands_sentence(family, len(study["seeds"]))]
        for role, title in (("confirmatory", "Confirmatory regimes (design, comparator and "
                             "margin declared before their first run)"),
                            ("exploratory", "Exploratory regimes (hypothesis-generating: a "
                             "claim here is for a confirmatory round to test)")):
            claims = [c for c in family if c.role == role]
            if claims:
                calls = [c.call() for c in claims if c.n]
                counts = ", ".join(f"{calls.count(w)} {w}" for w in
                                   ("above", "below", "equivalent", "inconclusive")
                                   if calls.count(w))
                parts += ["", f"{title}: {counts or 'nothing recorded yet'}.", ""]
                parts += [f"- `{c.regime}` ({role}), {_comparison_line(c)}" for c in claims]
    if lines:
        parts += ["", ("Not declared in the study file" if family else "No comparison is "
                       "declared in the study file") + ": each method of ours against the best "
                  "baseline (picked by validation score) and the label-only student - paired "
                  "95% intervals over seeds, raw (not adjusted for the page's other "
                  "comparisons), descriptive only; an interval that holds 0 is "
                  "\"inconclusive\", not \"level\" or equivalent (that takes a declared margin).",
                  "", *lines]
    if pending_runs:
        parts += ["", f"Not every seed recorded yet: {', '.join(pending_runs)}."]
    return parts


def _guard_note(finals: list[dict[str, Any]], regime: str) -> list[str]:
    """Where ``distill.assistant_guard`` sent a HORKD student to the teacher instead of the
    assistant: the assistant's and the teacher's validation scores."""
    lines = []
    for res in finals:
        by_seed = {seed: f["assistant_guard"] for seed, f in res.get("facts", {}).items()
                   if "assistant_guard" in f}
        verdicts = list(by_seed.values())
        bypassed = [v for v in verdicts if not v.get("trusted", True)]
        which = ", ".join(str(s) for s, v in by_seed.items() if not v.get("trusted", True))
        seen = sum(1 for v in verdicts if v.get("teacher_held_out") is False)
        if res["regime"] == regime and seen:
            lines.append(f"- {res['method']}: in {seen} of {len(verdicts)} seeds the teacher had "
                         "trained on the validation images it was scored on (its score there is "
                         "optimistic, the guard stricter than it says)")
        held_out = [v for v in verdicts if v.get("teacher_held_out") is True]
        if res["regime"] == regime and held_out and not bypassed:
            assistant = sum(v["assistant"] for v in held_out) / len(held_out)
            teacher = sum(v["teacher"] for v in held_out) / len(held_out)  # several: their mean
            lines.append(
                f"- {res['method']}: the assistant was within the guard in {len(held_out)} of "
                f"{len(verdicts)} seeds ({assistant:.2f} on validation on average against the "
                f"teacher's {teacher:.2f} on the same images, which it never trained on)"
            )
        if res["regime"] == regime and bypassed:
            gap = sum(v["teacher"] - v["assistant"] for v in bypassed) / len(bypassed)
            lines.append(
                f"- {res['method']}: in {len(bypassed)} of {len(verdicts)} seeds ({which}) the "
                "assistant's "
                f"validation score trailed the teacher's by {gap:.1f} points on average (more "
                f"than `distill.assistant_guard` = {bypassed[0]['guard']}), so the student "
                "learnt every order from the teacher"
            )
    return ["", "Assistant guard:", "", *lines] if lines else []


def _map_note(finals: list[dict[str, Any]], regime: str) -> str:
    """Which students reached the teacher's space through their own projector, which through a
    linear map fitted on the training split."""
    fitted: dict[str, set[bool]] = {}
    for res in finals:
        if res["regime"] == regime:
            for rows in res["rows"].values():
                for row in rows:
                    if "teacher map fitted" in row:
                        fitted.setdefault(row["method"], set()).add(bool(row["teacher map fitted"]))
    by_map = {
        "their embedding term's projector toward the teacher": [m for m, f in fitted.items()
                                                                 if f == {False}],
        "a least-squares linear map fitted on the training split (no first-order embedding "
        "term toward the teacher)": [m for m, f in fitted.items() if f == {True}],
        "either, depending on the seed": [m for m, f in fitted.items() if len(f) > 1],
    }
    found = [f"{', '.join(ms)}: {how}" for how, ms in by_map.items() if ms]
    return ("The teacher embeds the HR gallery; the students' LR queries reach its space by "
            + "; ".join(found) + ".")


def _figures(summary: dict[str, Any], figures: Path,
             samples: tuple[Any, Any] | None = None) -> list[str]:
    parts: list[str] = []
    labels = labels_figure(summary, figures, samples)
    if labels is not None:
        parts += ["", "## What the teacher is worth as labels grow scarce", "",
                  "Regimes " + ", ".join(f"`{r}`" for r in summary["study"]["label_curve"])
                  + ": test mean and its 95% interval over seeds (not paired; the tables above "
                  "pair them).", "", f"![labels curve]({figure_link(labels)})"]
    curve = curve_figure(summary, figures)
    if curve is not None:
        parts += ["", "## Accuracy versus input resolution", "",
                  f"Main regime `{summary['study']['main_regime']}`, mean over seeds.", "",
                  f"![resolution curve]({figure_link(curve)})"]
    ablation = ablation_figure(summary, figures)
    if ablation is not None:
        path, table = ablation
        parts += ["", "## Orders ablation", "",
                  f"The ablated methods with their chosen settings, each subset of orders, seeds "
                  f"{summary['ablation']['seeds']}.", "", table, "",
                  f"![orders ablation]({figure_link(path)})"]
    return parts


def _closing(summary: dict[str, Any], command: str | None) -> list[str]:
    parts = ["", "## Search (validation split only)", "", search_table(summary)]
    discussion = summary["study"].get("discussion")
    if discussion:
        note = Path(summary["study_file"]).parent / discussion
        if note.exists():
            parts += ["", note.read_text().strip()]
    return parts + [
        "",
        "## Reproduce",
        "",
        f"`{command or 'make results'}` regenerates everything (rerunning it continues a study "
        "that stopped and scores nothing twice). Its last invocation took "
        f"{duration(summary['seconds'])} of wall time with {summary['workers']} worker "
        f"process(es), {summary['threads_per_worker']} thread(s) each; work finished by earlier "
        "invocations (and teachers trained beforehand"
        + (", timed above" if summary.get("teachers") else "") + ") is reused, not counted. "
        f"The recorded runs on this page took {duration(summary.get('compute_seconds', 0))} of "
        "training and scoring in all (the sum of their CPU times; wall time x threads for "
        "records made before CPU time was kept, which counts a pause as work).",
        "",
    ]


def write_document(
    summary_path: str | Path, doc_path: str | Path, command: str | None = None
) -> Path:
    summary = json.loads(Path(summary_path).read_text())
    doc_path = Path(doc_path)
    figures = figures_folder(doc_path)
    figures.mkdir(parents=True, exist_ok=True)
    family = page_comparisons(summary)  # the page's one Holm family
    regimes, facts_by_regime = _regimes(summary, figures, family)
    data, samples = data_section(summary["study"], figures)  # the data read once a page
    parts = (_setup(summary) + data + findings(summary, facts_by_regime, family)
             + targets_section(summary, family, facts_by_regime) + regimes
             + _figures(summary, figures, samples) + _closing(summary, command))
    # whole or as it was: an interrupted or failed rebuild leaves the previous page
    write_text(doc_path, "\n".join(parts), "the study's results page")
    write_text(figures / "facts.json", json.dumps(facts_by_regime, indent=1),
               "the facts behind the results page")
    return doc_path
