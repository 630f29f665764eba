"""The results table in three forms: JSON for programs, CSV for spreadsheets, Markdown for people."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from horkd.config import ExperimentConfig

BASELINES = ("scratch", "hinton_kd", "fitnet", "rkd", "horkd_no_assistant")


def _fmt(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if value is None:
        return "-"
    std = entry.get(f"{key}_std")
    if entry.get("seeds", 1) > 1 and std is not None:
        return f"{value:.2f} ± {std:.2f}"
    return f"{value:.2f}"


def _columns(table: list[dict[str, Any]]) -> list[str]:
    extra = []
    for entry in table:
        extra.extend(k for k in entry if k.startswith("top1@") and not k.endswith("_std"))
    return list(dict.fromkeys(extra))


def format_table(table: list[dict[str, Any]], lr_size: int | None = None) -> str:
    """A Markdown table: method, LR top-1, HR top-1, params, FLOPs, extra sizes."""
    lr_label = f"LR top-1 ({lr_size}px)" if lr_size else "LR top-1"
    extra = _columns(table)
    header = ["method", "role", lr_label, "HR top-1", "params", "MFLOPs", *extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in table:
        cells = [
            e["method"],
            e["role"],
            _fmt(e, "lr_top1"),
            _fmt(e, "hr_top1"),
            f"{e['params']:,}",
            f"{e['flops'] / 1e6:.2f}",
            *[_fmt(e, k) for k in extra],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(table: list[dict[str, Any]]) -> str:
    """One honest sentence: does HORKD beat the best baseline in this run, and by how much."""
    by_name = {e["method"]: e for e in table if e.get("lr_top1") is not None}
    baselines = {n: e["lr_top1"] for n, e in by_name.items() if n in BASELINES}
    ours = {n: by_name[n]["lr_top1"] for n in ("horkd", "horkd_joint") if n in by_name}
    if not baselines or not ours:
        return ""
    best_name = max(baselines, key=baselines.get)
    parts = []
    for name, value in ours.items():
        diff = value - baselines[best_name]
        relation = f"beats by {diff:.2f}" if diff > 0 else f"trails by {-diff:.2f}"
        parts.append(
            f"{name} ({value:.2f}) {relation} points the best baseline {best_name} "
            f"({baselines[best_name]:.2f})"
        )
    return "; ".join(parts) + "."


def write_results(run_dir: Path, table: list[dict[str, Any]], cfg: ExperimentConfig) -> str:
    (run_dir / "results.json").write_text(json.dumps(table, indent=2))
    columns = list(dict.fromkeys(k for e in table for k in e))
    with (run_dir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    lr_size = cfg.degrade.lr_size
    markdown = format_table(table, lr_size)
    note = verdict(table)
    seeds = ", ".join(map(str, cfg.seeds))
    text = (
        f"# {cfg.name}\n\nDataset `{cfg.data.dataset}`, seeds {seeds}. Test-split accuracy (%) of "
        "the epoch picked on the validation split. LR top-1 is at the student's input; HR top-1 "
        "is for networks that see HR.\n\n"
        f"{markdown}\n\n{note}\n"
    )
    (run_dir / "results.md").write_text(text)
    return text
