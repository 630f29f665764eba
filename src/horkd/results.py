"""The results table in three forms: JSON for programs, CSV for spreadsheets, Markdown for people."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from horkd.checkpoint import SHIP_FILE, atomic_write, write_text
from horkd.config import ExperimentConfig
from horkd.methods import METHODS
from horkd.paired import NOISE_RULE, TEST_HITS_FILE, SplitHits, lead_noise, read_hits

NOT_METRICS = frozenset({"method", "role", "params", "flops", "seeds", "fallback",
                         "fallback_seeds"})


def metric_columns(table: list[dict[str, Any]]) -> list[str]:
    """Metric keys, the students' (the headline) first, then those only HR networks have."""
    students = [e for e in table if e.get("role") == "student"]
    keys: list[str] = []
    for entry in students + [e for e in table if e.get("role") != "student"]:
        keys.extend(k for k in entry if k not in NOT_METRICS and not k.endswith("_std"))
    return list(dict.fromkeys(keys))


def primary_metric(table: list[dict[str, Any]]) -> str | None:
    """The students' headline metric: the first one a student row reports."""
    for entry in table:
        if entry.get("role") == "student":
            columns = [k for k in entry if k not in NOT_METRICS and not k.endswith("_std")]
            return columns[0] if columns else None
    return None


def _label(key: str, lr_size: int | None) -> str:
    names = {"lr_top1": "LR top-1", "lr_top5": "LR top-5", "hr_top1": "HR top-1"}
    label = names.get(key, key)
    if key.startswith("lr_") and lr_size:
        label += f" ({lr_size}px)"
    return label


def _fmt(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if value is None:
        return "-"
    std = entry.get(f"{key}_std")
    if entry.get("seeds", 1) > 1 and std is not None:
        return f"{value:.2f} ± {std:.2f}"
    return f"{value:.2f}"


def format_table(table: list[dict[str, Any]], lr_size: int | None = None) -> str:
    """A Markdown table: method, its group, role, every metric, params, FLOPs."""
    columns = metric_columns(table)
    header = ["method", "group", "role", *[_label(c, lr_size) for c in columns], "params",
              "MFLOPs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in table:
        cells = [
            method_cell(e),
            _group(e["method"]) or "-",
            e["role"],
            *[_fmt(e, c) for c in columns],
            f"{e['params']:,}",
            f"{e['flops'] / 1e6:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fell_back(entry: dict[str, Any]) -> tuple[int, int]:
    """(seeds whose chain fell back to teacher -> student, seeds) of a results entry: a seed's
    row (``fallback``) or the mean over seeds (``fallback_seeds``)."""
    return entry.get("fallback_seeds", 1 if entry.get("fallback") else 0), entry.get("seeds", 1)


def method_cell(entry: dict[str, Any]) -> str:
    """The method's name, and what it learnt from where that is not what the name says."""
    fell, seeds = fell_back(entry)
    if not fell:
        return entry["method"]
    where = f" in {fell} of {seeds} seeds" if seeds > 1 else ""
    return (f"{entry['method']} [fell back to teacher -> student{where}, as horkd_no_assistant: "
            "the assistant failed distill.assistant_guard]")


DROPPED = ("the assistant was dropped because its validation score was more than "
           "distill.assistant_guard points below the teacher's")


def what_ran(entry: dict[str, Any], table: list[dict[str, Any]]) -> str:
    """The legend's line for a method: its registry description, or where the assistant guard
    changed the chain, what ran instead and why; a reader of a fallback run must not be told
    of a teacher -> assistant -> student chain that did not run."""
    name = entry["method"]
    designed = METHODS.get(name).description
    fell, seeds = fell_back(entry)
    if fell and fell >= seeds:
        return (f"ran teacher -> student (every order straight from the teacher, as "
                f"horkd_no_assistant): {DROPPED}. The chain it is named for ({designed}) did "
                "not run")
    if fell:
        return (f"{designed}; in {fell} of {seeds} seeds it ran teacher -> student instead (as "
                f"horkd_no_assistant): {DROPPED}")
    if name == "assistant":  # it taught only the chain's students: say where it taught none
        chained = [fell_back(e) for e in table if e["method"] in METHODS
                   and "assistant" in METHODS.get(e["method"]).needs]
        dropped = max((f for f, _ in chained), default=0)
        if dropped:
            taught = ("taught no student here" if dropped >= max(s for _, s in chained) else
                      f"taught no student in {dropped} of {max(s for _, s in chained)} seeds")
            return (f"{designed}; it {taught}: distill.assistant_guard dropped it (trained and "
                    "scored all the same)")
    return designed


_COLUMN_MEANINGS = (
    ("group", "ours (this method), baseline (what it must beat) or reference (a bound, not a "
              "competitor)"),
    ("role", "which network the row scores: the HR teacher, the assistant, or a student at LR"),
    ("mean@", "a student's mean over every size of the resolution curve (one network for a "
              "camera's whole range)"),
    ("worst@", "a student's worst size on the resolution curve"),
    ("_std", "the ± after a number is its standard deviation over seeds"),
)


def legend(table: list[dict[str, Any]]) -> str:
    """How to read the table beside it: every method it names in one line (from the registry) and
    the columns a newcomer would not guess; so a report read alone explains itself."""
    lines = ["How to read it:", ""]
    for entry in table:
        name = entry["method"]
        if name in METHODS:
            lines.append(f"- `{name}`: {what_ran(entry, table)}")
    columns = metric_columns(table)
    for key, meaning in _COLUMN_MEANINGS:
        shown = key in ("group", "role") or any(c.startswith(key) for c in columns) or (
            key == "_std" and any(e.get("seeds", 1) > 1 for e in table))  # ± only with seeds
        if shown:
            lines.append(f"- {key.strip('_')}: {meaning}")
    return "\n".join(lines)


def _group(method: str) -> str | None:
    return METHODS.get(method).group if method in METHODS else None


def read_test_hits(run_dir: Path) -> SplitHits | None:
    """The run's per-image test hits of its students (None: an older run or another task)."""
    return read_hits(run_dir / TEST_HITS_FILE)


def read_validation(run_dir: Path) -> dict[str, float]:
    """Each trained student's mean validation score, as the run's ship choice recorded it
    (``ship.json``; empty when the run chose none)."""
    path = run_dir / SHIP_FILE
    if not path.is_file():
        return {}
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text())["validation"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def best_baseline(baselines: dict[str, float], validation: dict[str, float]) -> tuple[str, str]:
    """The baseline ours is held against, and how it was picked: on validation (as every other
    choice is) where every baseline has a validation score; else the best on test, said so."""
    if validation and all(n in validation for n in baselines):
        return max(baselines, key=validation.__getitem__), "on validation"
    return max(baselines, key=baselines.__getitem__), "on test: no validation scores"


def verdict(table: list[dict[str, Any]], hits: SplitHits | None = None,
            validation: dict[str, float] | None = None) -> str:
    """One honest sentence per method of ours: does it beat the best baseline in this run, by
    how much, and (with ``hits``, the students' per-image test hits of the run, as
    :func:`read_test_hits` gives them) whether that is within the noise of the test split,
    paired over the same images (:mod:`horkd.paired`). The best baseline is the one best on
    ``validation`` (:func:`read_validation`): picking it on test would let the test split
    choose. Groups come from the method registry, so a new method takes part by itself."""
    key = primary_metric(table)
    if key is None:
        return ""
    by_name = {e["method"]: e[key] for e in table if e.get(key) is not None}
    baselines = {n: v for n, v in by_name.items() if _group(n) == "baseline"}
    ours = {n: v for n, v in by_name.items() if _group(n) == "ours"}
    if not baselines or not ours:
        return ""
    best, picked = best_baseline(baselines, validation or {})
    shown = {e["method"]: method_cell(e) for e in table}
    per_image = hits.hits if hits is not None and hits.metric == key else {}
    same = hits.same_images if hits is not None else True
    parts, how = [], ""
    for name, value in ours.items():
        diff = value - baselines[best]
        relation = "ties" if round(diff, 2) == 0 else (
            f"beats by {diff:.2f} points" if diff > 0 else f"trails by {-diff:.2f} points"
        )
        noise = ""
        if name in per_image and best in per_image:
            paired = lead_noise(per_image[name], per_image[best], same)
            side = "within" if paired.within_noise else "beyond"
            images = f"these {paired.images}" if same else f"each seed's {paired.images}"
            noise = (f", {side} the noise of {images} test images ({paired.cut:.2f} standard "
                     f"errors: {paired.half_width:.2f} points)")
            how = f" Noise: {NOISE_RULE}; here {paired.spread()}."
        parts.append(
            f"{shown[name]} ({value:.2f}) {relation} the best baseline {best} "
            f"({picked}; {baselines[best]:.2f} on test){noise}"
        )
    return (f"On {key}: " + "; ".join(parts) + "." + how
            + _weak_teacher(table, key, baselines))


def _weak_teacher(table: list[dict[str, Any]], key: str, students: dict[str, float]) -> str:
    """A warning where the HR teacher does not beat, at HR, the students it should teach."""
    hr_key = key.replace("lr_", "hr_", 1)
    teacher = next((e.get(hr_key) for e in table if e["method"] == "teacher"), None)
    best = max(students, key=students.__getitem__)
    if teacher is None or hr_key == key or teacher > students[best]:
        return ""
    return (f" The HR teacher ({teacher:.2f} at HR) is no better than {best} ({students[best]:.2f}"
            " at LR): it has little to teach; a stronger teacher comes first (more epochs or "
            "images, or your own model through teacher.checkpoint / teacher.weights).")


def write_results(
    run_dir: Path, table: list[dict[str, Any]], cfg: ExperimentConfig, lr_size: int | None = None,
    ship: str = "",
) -> str:
    """results.{json,csv,md}; ``ship``: the student to deploy in words (:mod:`horkd.experiment.ship`),
    a section of results.md."""
    # each file whole or as it was: written aside and renamed (checkpoint.atomic_write)
    write_text(run_dir / "results.json", json.dumps(table, indent=2), "the results table")
    columns = list(dict.fromkeys(k for e in table for k in e))

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(table)

    atomic_write(run_dir / "results.csv", write_csv, "the results table")
    seeds = ", ".join(map(str, cfg.seeds))
    text = (
        f"# {cfg.name}\n\nTask `{cfg.task}`, dataset `{cfg.data.dataset}`, seeds {seeds}. "
        "Test-split metrics (%) of the epoch picked on the validation split. Students are "
        "scored at their LR input; networks that see HR at HR.\n\n"
        f"{format_table(table, lr_size)}\n\n"
        f"{verdict(table, read_test_hits(run_dir), read_validation(run_dir))}\n\n"
        f"{legend(table)}\n"
    )
    if ship:
        text += (f"\n## The student to ship\n\n{ship} `horkd predict {run_dir} IMAGES`, `horkd "
                 f"export {run_dir}` and `Recogniser.load(\"{run_dir}\")` use it ({run_dir}/ship.json)."
                 "\n")
    write_text(run_dir / "results.md", text, "the results table")
    return text
