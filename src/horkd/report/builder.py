"""``horkd report``: a Markdown report (and CSV tables, PNG figures) from finished run dirs.

Everything is read from what runs wrote (results.json, metrics.jsonl, resolution_curve.json,
ablation.json, checkpoints); only the CPU latency of the networks is measured here.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from horkd.checkpoint import (
    SHIP_FILE,
    atomic_write,
    build_from_checkpoint,
    load_meta,
    write_text,
)
from horkd.cost import count_flops, count_parameters, measure_latency
from horkd.export import input_shape
from horkd.logger import read_jsonl
from horkd.methods import methods_in
from horkd.report import figures
from horkd.report.compute import training_compute
from horkd.results import format_table, legend, read_test_hits, read_validation, verdict


def _seed_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("seed*") if p.is_dir())


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a horkd run directory (no config.yaml)")
    return yaml.safe_load(path.read_text())


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_curves(run_dir: Path) -> dict[str, dict[str, float]]:
    """The resolution curve averaged over seeds."""
    per_seed = [
        json.loads(p.read_text())
        for s in _seed_dirs(run_dir)
        if (p := s / "resolution_curve.json").is_file()
    ]
    if not per_seed:
        return {}
    curves: dict[str, dict[str, float]] = {}
    for name in per_seed[0]:
        curves[name] = {
            size: statistics.fmean(c[name][size] for c in per_seed if name in c)
            for size in per_seed[0][name]
        }
    return curves


def histories(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Per-epoch metrics of the main stages of the first seed (teacher, assistant, students)."""
    seeds = _seed_dirs(run_dir)
    if not seeds:
        return {}
    out = {}
    for pattern in ("teacher/metrics.jsonl", "assistant/metrics.jsonl",
                    "students/*/metrics.jsonl"):
        for path in sorted(seeds[0].glob(pattern)):
            out[str(path.parent.relative_to(seeds[0]))] = read_jsonl(path)
    return out


def cost_table(run_dir: Path, repeats: int = 20) -> list[dict[str, Any]]:
    """Params, FLOPs and CPU latency (median, batch 1 and 64) of teacher, assistant, student."""
    seeds = _seed_dirs(run_dir)
    if not seeds:
        return []
    candidates = {
        "teacher": seeds[0] / "teacher" / "model",
        "assistant": seeds[0] / "assistant" / "model",
    }
    students = sorted((seeds[0] / "students").glob("*/model.json")) if (
        seeds[0] / "students").is_dir() else []
    ours = methods_in("ours")
    preferred = [p for p in students if p.parent.name in ours] or students
    if preferred:
        candidates["student"] = preferred[0].with_suffix("")
    rows = []
    for role, path in candidates.items():
        if not path.with_suffix(".json").is_file():
            continue
        model = build_from_checkpoint(path)
        shape = input_shape(load_meta(path))
        rows.append({
            "network": role,
            "arch": load_meta(path)["model"]["arch"],
            "input": f"{shape[1]}x{shape[2]}",
            "params": count_parameters(model),
            "mflops": count_flops(model, shape) / 1e6,
            "latency_ms_b1": measure_latency(model, shape, 1, repeats),
            "latency_ms_b64": measure_latency(model, shape, 64, max(3, repeats // 4)),
        })
    teacher = next((r for r in rows if r["network"] == "teacher"), None)
    for row in rows:
        for key in ("params", "mflops", "latency_ms_b1", "latency_ms_b64"):
            row[f"{key}_vs_teacher"] = row[key] / teacher[key] if teacher and teacher[key] else None
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write, "a report table")


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            if isinstance(v, float):
                cells.append(f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}")
            elif isinstance(v, int):
                cells.append(f"{v:,}")
            else:
                cells.append("-" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _results_section(run_dir: Path, cfg: dict[str, Any], out: Path, name: str) -> list[str]:
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        return []
    table = json.loads(results_path.read_text())
    lr_size = cfg.get("degrade", {}).get("lr_size")
    _write_csv(out / f"{name}_results.csv", table)
    return ["### Results (test split, epoch picked on validation)", "",
            format_table(table, lr_size), "",
            verdict(table, read_test_hits(run_dir), read_validation(run_dir)), "",
            legend(table), ""]


def _ship_section(run_dir: Path) -> list[str]:
    """The student the run chose to deploy, as ``ship.json`` says it (a near-chance warning
    first)."""
    path = run_dir / SHIP_FILE
    if not path.is_file():
        return []
    summary = json.loads(path.read_text()).get("summary")
    return ["### The student to ship", "", summary, ""] if summary else []


def guard_verdicts(run_dir: Path) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """Per seed, the students that learn through the assistant and the guard's verdict on it
    (one per seed: every such student shares the seed's assistant)."""
    found: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for seed in _seed_dirs(run_dir):
        for meta in sorted((seed / "students").glob("*/model.json")):
            verdict = json.loads(meta.read_text()).get("assistant_guard")
            if verdict and "assistant" in verdict:
                found.setdefault(seed.name, ([], verdict))[0].append(meta.parent.name)
    return found


def _guard_section(run_dir: Path) -> list[str]:
    """Say, per seed, whether HORKD's students learned through the assistant: when the guard
    fires they learn every order from the teacher, and a reader of the table would not know."""
    verdicts = guard_verdicts(run_dir)
    if not verdicts:
        return []
    lines = ["### Assistant guard", "",
             "A student of the chain learns from the assistant only when the assistant's "
             "validation score is within `distill.assistant_guard` points of the teacher's; "
             "otherwise it learns every order from the teacher itself.", ""]
    for seed, (methods, v) in verdicts.items():
        learned = ("through the assistant" if v["trusted"] else
                   f"from the teacher: the assistant was more than {v['guard']} points below")
        lines.append(f"- {seed} ({', '.join(methods)}): assistant {v['assistant']:.2f} on "
                     f"validation against the teacher's {v['teacher']:.2f}; learned {learned}")
    return [*lines, ""]


def _curve_section(run_dir: Path, cfg: dict[str, Any], out: Path, name: str) -> list[str]:
    curves = mean_curves(run_dir)
    if not curves:
        return []
    lr_size = cfg.get("degrade", {}).get("lr_size")
    png = figures.resolution_curve(curves, _curve_metric(cfg), out / f"{name}_resolution.png",
                                   lr_size)
    sizes = sorted({int(s) for c in curves.values() for s in c}, reverse=True)
    rows = [{"network": n, **{f"{s}px": c.get(str(s)) for s in sizes}} for n, c in curves.items()]
    _write_csv(out / f"{name}_resolution.csv", rows)
    return ["### Accuracy versus input resolution", "",
            "A point at s px: the HR test image degraded to s px, then given to each network the "
            "way it takes input: networks that see HR get it re-upsampled to the HR size; a "
            "native student trained at one LR size gets it resized to that size; a student "
            "trained across sizes takes it at s itself inside its trained range, resized to the "
            "nearest trained size outside it (and, with a work size, resizes it to that side "
            "inside the network).", "",
            _markdown(rows, ["network", *[f"{s}px" for s in sizes]]), "",
            f"![resolution curve]({png.name})", ""]


def _ablation_section(run_dir: Path, out: Path, name: str) -> list[str]:
    path = run_dir / "ablation.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    seeds = len(data.get("seeds") or [None])
    results = {m: {t: _mean_std(v) for t, v in tags.items()} for m, tags in data["orders"].items()}
    baselines = {b: _mean_std(v)[0] for b, v in data.get("baselines", {}).items() if v}
    png = figures.orders_ablation(results, data.get("metric", "metric"),
                                  out / f"{name}_orders.png", baselines, seeds=seeds)
    rows = [{"method": m, "orders": t, "mean": ms[0], "std": ms[1] if seeds > 1 else None}
            for m, tags in results.items() for t, ms in tags.items()]
    rows += [{"method": b, "orders": "baseline", "mean": v, "std": None}
             for b, v in baselines.items()]
    _write_csv(out / f"{name}_orders.csv", rows)
    return [f"### Effect of each order (student, same budget, {seeds} seed(s))", "",
            _markdown(rows, ["method", "orders", "mean", "std"]), "",
            f"![orders ablation]({png.name})", ""]


def _cost_section(run_dir: Path, cfg: dict[str, Any], out: Path, name: str) -> list[str]:
    costs = cost_table(run_dir, cfg.get("report", {}).get("latency_repeats", 20))
    if not costs:
        return []
    _write_csv(out / f"{name}_cost.csv", costs)
    columns = ["network", "arch", "input", "params", "mflops", "latency_ms_b1", "latency_ms_b64",
               "params_vs_teacher", "mflops_vs_teacher", "latency_ms_b1_vs_teacher"]
    return ["### Model cost (CPU, median latency in ms)", "", _markdown(costs, columns), ""]


def _compute_section(run_dir: Path) -> list[str]:
    seeds = _seed_dirs(run_dir)
    cfg = _config(run_dir)
    rows = training_compute(seeds[0], cfg.get("methods")) if seeds else []
    if not rows:
        return []
    for row in rows:  # one format for every figure: whole CPU-seconds, tenths below ten
        for key, value in row.items():
            if isinstance(value, float):
                row[key] = f"{value:.1f}" if value < 10 else f"{value:,.0f}"
    columns = ["method", "own_cpu_s", "assistant_cpu_s", "teacher_share_cpu_s", "total_cpu_s",
               "alone_cpu_s"]
    return ["### Training compute (first seed, CPU-seconds the process used, every thread)", "",
            "`own`: the student's stage; `assistant`: the assistant stage trained for the chain "
            "methods, shared among them (charged even where the guard sent a student to the "
            "teacher: it was trained for it); `teacher share`: the teacher split among the "
            "students that learnt from it (`-`: loaded from a checkpoint, not trained here); "
            "`total`: what this run spent on the method, which depends on the other methods "
            "listed; `alone`: the method with the whole teacher and assistant, the figure to "
            "compare across runs. The first stage to run also pays any one-off compilation of "
            "the CPU kernels.", "", _markdown(rows, columns), ""]


def build_report(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> Path:
    """Write ``report.md`` with tables, CSVs and figures; returns the report path."""
    run_dirs = [Path(d) for d in run_dirs]
    out = Path(out_dir) if out_dir else run_dirs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections = ["# horkd report", ""]
    for run_dir in run_dirs:
        cfg = _config(run_dir)
        name = cfg.get("name", run_dir.name)
        sections += [f"## {name}", "", f"Run directory `{run_dir}`; task `{cfg.get('task')}`, "
                     f"dataset `{cfg['data']['dataset']}`, seeds {cfg.get('seeds')}.", ""]
        sections += _results_section(run_dir, cfg, out, name)
        sections += _ship_section(run_dir)
        sections += _guard_section(run_dir)
        sections += _curve_section(run_dir, cfg, out, name)
        sections += _ablation_section(run_dir, out, name)
        hist = histories(run_dir)
        if hist:
            png = figures.training_curves(hist, out / f"{name}_training.png")
            sections += ["### Training curves (first seed)", "", f"![training curves]({png.name})",
                         ""]
        sections += _cost_section(run_dir, cfg, out, name)
        sections += _compute_section(run_dir)
    path = out / "report.md"
    write_text(path, "\n".join(sections), "the report")
    return path


def _curve_metric(cfg: dict[str, Any]) -> str:
    return {"retrieval": "Recall@1 LR->HR"}.get(cfg.get("task", ""), "top-1 accuracy")
