"""The report's figures: accuracy versus resolution, the orders' effect, training curves."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (CI, servers)
import matplotlib.pyplot as plt  # noqa: E402

REFERENCE_STYLE = MappingProxyType({"teacher": ("black", "--"), "assistant": ("grey", ":")})


def method_style(name: str) -> tuple[Any, str]:
    """One colour per method in every figure (the registry's order), references dashed."""
    from horkd.methods import methods_in

    name = name.removeprefix("students/")
    if name in REFERENCE_STYLE:
        return REFERENCE_STYLE[name]
    known = methods_in("baseline") + methods_in("ours")
    index = known.index(name) if name in known else sum(map(ord, name))
    return plt.get_cmap("tab10")(index % 10), "-"


def resolution_curve(
    curves: dict[str, dict[str, float]],
    metric: str,
    path: Path,
    lr_size: int | None = None,
    styles: dict[str, tuple[Any, str]] | None = None,
) -> Path:
    """One line per network: the headline metric against the input resolution (paper Fig. 3).
    ``styles`` (name -> colour, line style) overrides the per-method style."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        sizes = sorted(int(s) for s in points)
        values = [points[str(s)] for s in sizes]
        color, style = (styles or {}).get(name) or method_style(name)
        ax.plot(sizes, values, marker="o", label=name, color=color, linestyle=style)
    if lr_size:
        ax.axvline(lr_size, color="tab:red", alpha=0.3, linewidth=6, label=f"train LR ({lr_size}px)")
    ax.set_xlabel("test input resolution (pixels per side)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{metric} versus input resolution")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def label_curve(
    series: dict[str, list[tuple[float, float, float]]],
    references: dict[str, float],
    metric: str,
    path: Path,
    samples: tuple[Any, Any] | None = None,
) -> Path:
    """What the teacher is worth as labels grow scarce: one line per method (x the share of the
    training labels in %, log scale; y the mean with its 95% interval over seeds), the
    references (the HR teacher, the LR oracle) as horizontal lines. ``samples`` (HR and LR image
    batches ``[K, C, H, W]`` in [0, 1]) adds a strip of what the students see."""
    width = 10.5 if samples is not None else 7
    fig = plt.figure(figsize=(width, 4.2))
    grid = fig.add_gridspec(2, 5 if samples is not None else 1)
    ax = fig.add_subplot(grid[:, 2:] if samples is not None else grid[:, 0])
    for name, points in series.items():
        xs, ys, half = zip(*sorted(points), strict=True)
        color, style = method_style(name)
        ax.errorbar(xs, ys, yerr=half, marker="o", capsize=3, label=name, color=color,
                    linestyle=style)
    for (name, value), style in zip(references.items(), ("--", ":", "-."), strict=False):
        ax.axhline(value, color="black", linestyle=style, linewidth=1, label=f"{name} {value:.1f}")
    ax.set_xscale("log")
    fractions = sorted({x for points in series.values() for x, _, _ in points})
    ax.set_xticks(fractions, [f"{x:g}%" for x in fractions])
    ax.minorticks_off()
    ax.set_xlabel("training labels the students may use")
    ax.set_ylabel(f"test {metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if samples is not None:
        hr, lr = samples
        for row, (batch, title) in enumerate(((hr, "HR (teacher)"), (lr, "LR (student)"))):
            for col in range(min(2, len(batch))):
                image = fig.add_subplot(grid[row, col])
                image.imshow(batch[col].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray",
                             vmin=0, vmax=1, interpolation="nearest")
                image.set_xticks([])
                image.set_yticks([])
                if col == 0:
                    image.set_ylabel(f"{title}\n{batch.shape[-1]} px", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def orders_ablation(
    results: dict[str, dict[str, tuple[float, float]]],
    metric: str,
    path: Path,
    baselines: dict[str, float] | None = None,
    seeds: int = 1,
) -> Path:
    """Bars of the metric for each subset of orders (a bar group per ablated method), mean with
    std error bars over seeds when there are several, and a dashed line per baseline (paper
    Fig. 4)."""
    baselines = baselines or {}
    methods = list(results)
    tags = list(next(iter(results.values())))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    tops: list[float] = []
    for i, method in enumerate(methods):
        xs = [t + (i - (len(methods) - 1) / 2) * width for t in range(len(tags))]
        means = [results[method][tag][0] for tag in tags]
        stds = [results[method][tag][1] for tag in tags]
        tops += [m + s for m, s in zip(means, stds, strict=True)] + means
        bars = ax.bar(xs, means, width, yerr=stds if seeds > 1 else None, capsize=3,
                      color=method_style(method)[0], alpha=0.8, label=method)
        for bar, mean in zip(bars, means, strict=True):
            ax.annotate(f"{mean:.2f}", (bar.get_x() + bar.get_width() / 2, mean), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 3), textcoords="offset points")
    for name, value in baselines.items():
        ax.axhline(value, color=method_style(name)[0], linestyle="--",
                   label=f"{name} ({value:.2f})")
    ax.set_xticks(range(len(tags)), tags)
    values = tops + list(baselines.values())
    ax.set_ylim(max(0.0, min(values) - 2.0), max(values) + 1.5)
    ax.set_xlabel("orders of relational knowledge distilled (1: samples, 2: pairs, 3: triplets)")
    ax.set_ylabel(f"student {metric} (%)")
    ax.set_title(f"Effect of each order ({seeds} seed{'s' if seeds > 1 else ''}"
                 f"{', mean and std' if seeds > 1 else ''})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curves(histories: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Task loss, each distillation term and the validation score per epoch, a line per stage."""
    stages = {s: rows for s, rows in histories.items() if rows}
    terms: list[str] = []
    for rows in stages.values():
        for key in rows[0]:
            if key.startswith("train/") and key not in ("train/loss", "train/images_per_s",
                                                         "train/seconds"):
                name = key.removeprefix("train/")
                if name not in terms and "/" not in name:  # joint runs' assistant/* stay out
                    terms.append(name)
    val_key = next((k for rows in stages.values() for k in rows[0] if k.startswith("val/")), None)
    panels = [*terms, *([val_key] if val_key else [])]
    cols = 3
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(13, 3.6 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        key = panel if panel.startswith("val/") else f"train/{panel}"
        for stage, rows in stages.items():
            if key in rows[0]:
                color, style = method_style(stage)
                ax.plot([r["epoch"] for r in rows], [r.get(key) for r in rows], marker=".",
                        label=stage.removeprefix("students/"), color=color, linestyle=style)
        is_val = panel.startswith("val/")
        ax.set_title(f"validation {panel.removeprefix('val/')}" if is_val
                     else f"{panel} (weighted, per epoch)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{panel.removeprefix('val/')} (%)" if is_val else "loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def image_rows(rows: list[tuple[str, Any]], titles: list[str], path: Path) -> Path:
    """A grid of images: one row per ``(label, batch [K, C, H, W] in [0, 1])``, the same K
    images in every row (HR, then each LR view), each drawn at the same size with its own
    pixels (nearest), so a 6-px image shows as the 36 pixels it is."""
    columns = len(titles)
    fig, axes = plt.subplots(len(rows), columns, squeeze=False,
                             figsize=(1.6 + 0.75 * columns, 0.3 + 0.85 * len(rows)))
    for r, (label, batch) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            image = batch[c].permute(1, 2, 0)
            ax.imshow(image.squeeze(-1).numpy() if image.shape[-1] == 1 else image.numpy(),
                      cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8, fontfamily="DejaVu Serif")  # serif: l and I apart
        axes[r][0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.3, w_pad=0.15, h_pad=0.15)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
