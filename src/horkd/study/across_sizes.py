"""Students trained across LR sizes against the single-size specialists, read from the study's
records: each at the specialist's own size, and the worst point of the resolution curve (how
well one network serves the whole range a camera delivers). Paired by seed."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from horkd.results import primary_metric
from horkd.study.page_files import figure_link
from horkd.study.stats import Difference, paired_difference

Curves = dict[str, dict[int, dict[int, float]]]  # method -> seed -> size -> score


def regime_curves(finals: list[dict[str, Any]], regime: str, seeds: list[int]) -> Curves:
    """Each student's resolution curve per seed, for the methods with every one of ``seeds``."""
    curves: Curves = {}
    for res in finals:
        if res["regime"] != regime:
            continue
        for seed, curve in res.get("curve", {}).items():
            points = curve.get(res["method"])
            if points:
                per_seed = curves.setdefault(res["method"], {})
                per_seed[int(seed)] = {int(s): v for s, v in points.items()}
    return {m: c for m, c in curves.items() if all(s in c for s in seeds)}


def own_size(study: dict[str, Any], regime: str) -> int:
    """The LR size a single-size regime trains at: the study's base under its overrides."""
    from horkd.config import config_from_dict

    cfg = config_from_dict(dict(study["base"]), list(study["regimes"][regime]["overrides"]))
    if cfg.degrade.lr_sizes:
        raise ValueError(f"specialist regime '{regime}' trains across sizes, not at one")
    return cfg.degrade.lr_size


def _cell(ours: list[float], theirs: list[float], their_name: str = "") -> str:
    diff: Difference = paired_difference(ours, theirs)
    name = f" ({their_name})" if their_name else ""
    return (f"{statistics.fmean(ours):.2f} vs {statistics.fmean(theirs):.2f}{name}: "
            f"{diff.verdict()}")


def comparison(summary: dict[str, Any], regime: str, figures: Path) -> list[str]:
    """The Markdown section of one across-sizes regime: a table and a figure, or nothing while
    its students are not all recorded."""
    study = summary["study"]
    r = study["regimes"][regime]
    seeds = sorted(r.get("seeds") or study["seeds"])
    across = regime_curves(summary["finals"], regime, seeds) if r.get("specialists") else {}
    if not across:
        return []
    specialists = {sp: (own_size(study, sp), regime_curves(summary["finals"], sp, seeds))
                   for sp in r["specialists"]}
    single = [(f"{m} @{size}px", c) for size, curves in specialists.values()
              for m, c in curves.items()]
    best = max(single, key=lambda item: statistics.fmean(
        min(item[1][s].values()) for s in seeds), default=None)
    head = ["method"] + [f"at {size} px: across vs `{sp}`" for sp, (size, _) in specialists.items()]
    head.append("worst point: across vs the most robust single-size student")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, curve in across.items():
        cells = [method]
        for size, curves in specialists.values():
            spec = curves.get(method)
            cells.append(_cell([curve[s][size] for s in seeds], [spec[s][size] for s in seeds])
                         if spec and all(size in curve[s] for s in seeds) else "pending")
        cells.append(_cell([min(curve[s].values()) for s in seeds],
                           [min(best[1][s].values()) for s in seeds], best[0]) if best else "pending")
        lines.append("| " + " | ".join(cells) + " |")
    sizes = sorted(next(iter(next(iter(across.values())).values())))
    rows = next(rs for res in summary["finals"] if res["regime"] == regime
                for rs in res["rows"].values())
    figure = _figure(across, specialists, seeds, primary_metric(rows),
                     figures / f"across_sizes_{regime}.png")
    return [
        "", f"### `{regime}` against the single-size specialists", "",
        f"Seeds {seeds}, paired by seed; each cell is the across-sizes student against the "
        f"specialist (same method) at the specialist's own size, and the lowest point of the "
        f"curve over {sizes[0]}-{sizes[-1]} px against the single-size student whose lowest "
        "point is highest. A curve point at s px is the HR test image degraded to s px and given "
        "to the model as it takes input: a single-size native student resized to its own LR "
        "size, an across-sizes one at s inside its trained range and at the nearest trained size "
        "outside it.", "", *lines, "", f"![across sizes]({figure_link(figure)})",
    ]


def _figure(across: Curves, specialists: dict[str, tuple[int, Curves]], seeds: list[int],
            metric: str, path: Path) -> Path:
    from horkd.report.figures import method_style, resolution_curve

    def mean_curve(curve: dict[int, dict[int, float]]) -> dict[str, float]:
        sizes = set.intersection(*(set(curve[s]) for s in seeds))
        return {str(z): statistics.fmean(curve[s][z] for s in seeds) for z in sorted(sizes)}

    curves, styles = {}, {}
    for method, curve in across.items():
        curves[f"{method} across sizes"] = mean_curve(curve)
        styles[f"{method} across sizes"] = method_style(method)
    for (size, per_method), dash in zip(specialists.values(), ("--", ":", "-."), strict=False):
        for method in across:
            if method in per_method:
                name = f"{method} @{size}px"
                curves[name] = mean_curve(per_method[method])
                styles[name] = (method_style(method)[0], dash)
    return resolution_curve(curves, metric, path, styles=styles)
