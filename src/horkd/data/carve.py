"""Draw a partition of a dataset's training images (what ``horkd split`` writes).

Why: a confirmatory round needs a test split carved from training images that no earlier run
has scored, and teachers that never see the students' images. Which images earlier runs scored
is computed from their configs with the same carving the runs used (:func:`split_indices`), so
the answer is exact, not remembered.

A part is given as ``NAME=N`` (N images, or a share of the training images when below 1,
stratified, drawn only from images no ``--avoid`` config scored or kept its students on),
``NAME=from:FILE`` (exactly the training images FILE's runs train and validate on; a study file:
its students' runs) or ``NAME=rest`` (every image no other part holds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from horkd.data.split import split_indices, stratified_subset


@dataclass(frozen=True)
class PartSpec:
    name: str
    count: float | None = None  # NAME=N (a share when below 1)
    source: str | None = None  # NAME=from:FILE
    rest: bool = False  # NAME=rest


def parse_part(text: str) -> PartSpec:
    """``NAME=N``, ``NAME=F`` (a share), ``NAME=from:FILE`` or ``NAME=rest``."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--part {text}: expected NAME=N, NAME=from:FILE or NAME=rest with a "
                         "name of letters, digits, - and _")
    if spec == "rest":
        return PartSpec(name, rest=True)
    if spec.startswith("from:") and spec[5:]:
        return PartSpec(name, source=spec[5:])
    try:
        count = float(spec)
    except ValueError:
        count = -1.0
    if count <= 0 or (count >= 1 and count != int(count)):
        raise ValueError(f"--part {text}: the size must be a number of images, a share below 1, "
                         "from:FILE or rest")
    return PartSpec(name, count=count)


def experiments(path: str | Path, students_only: bool = False) -> list[tuple[str, Any]]:
    """(label, ExperimentConfig) of every run a file stands for: an experiment config itself; a
    study file its students' runs (``base`` under each regime's overrides and the search
    candidates it trains with, on the regime's seeds and the search seed) and, unless
    ``students_only``, its teachers (on the seeds they train with)."""
    from horkd.config import apply_overrides, config_from_dict, load_config, read_yaml_mapping

    raw = read_yaml_mapping(path)
    if "base" not in raw or "regimes" not in raw:
        return [(str(path), load_config(path))]
    from horkd.study.config import load_study, searched

    study, root = load_study(path)
    runs: list[tuple[str, Any]] = []
    teacher_seeds: dict[str, set[int]] = {}
    for name, regime in study.regimes.items():
        searches = [study.search.seed] if regime.choices_from is None else []
        ablation = study.ablation_seeds if name == study.main_regime else []
        seeds = sorted({*(regime.seeds or study.seeds), *searches, *ablation})
        if regime.teacher_per_seed:
            teacher_seeds.setdefault(regime.teacher, set()).update(seeds)
        source = regime.choices_from or name
        layers = [list(regime.overrides)]
        for method in study.regime_methods(name):
            if searched(method) and method in study.search.candidates:
                layers += [[*regime.overrides, *candidate]
                           for candidate in study.candidates(source, method)]
        for overrides in layers:
            merged = apply_overrides(study.base, overrides)
            merged["seeds"] = seeds
            runs.append((f"{path} regime {name}", config_from_dict(merged)))
    if students_only:
        return runs
    for name, given in study.teachers.items():
        seeds = sorted(teacher_seeds.get(name, []))
        overrides = [f"seeds={seeds}"] if seeds else []
        cfg = (config_from_dict(dict(given), overrides) if isinstance(given, dict)
               else load_config(root / given, overrides))
        runs.append((f"{path} teacher {name}", cfg))
    return runs


@dataclass
class Seen:
    """Which training images a config's runs saw, as masks over the training set.

    Attributes:
        scored: Validated or tested on (a retrieval run: every image of its pool, its unseen
            classes being its test).
        subset: Trained and validated on as a subset of the training set (``train_subset`` or
            a partition's part): a students' subset.
        pool: Trained or validated on.
    """

    scored: Tensor
    subset: Tensor
    pool: Tensor


def seen_images(cfg: Any, labels: Tensor) -> Seen:
    """What ``cfg``'s runs saw of a dataset with training ``labels``: the union over the split
    seeds its runs carve with (``data.split_seed``, else each run seed)."""
    from horkd.data.partition import load_partition

    d = cfg.data
    n = labels.numel()
    part = test_part = None
    if d.split_file is not None:
        partition = load_partition(d.split_file)
        partition.check(d.dataset, n, None)
        part = partition.indices(d.part, "data.part")
        test_part = partition.indices(d.test_part, "data.test_part") if d.test_part else None
    seen = Seen(*(torch.zeros(n, dtype=torch.bool) for _ in range(3)))
    for seed in [d.split_seed] if d.split_seed is not None else cfg.seeds:
        carved = split_indices(labels, seed, d.val_fraction, d.val_size, d.train_subset,
                               d.val_from_subset, part, test_part)
        pool = carved.pool()
        seen.pool[pool] = True
        if carved.val is not None:
            seen.scored[carved.val] = True
        if carved.test is not None:
            seen.scored[carved.test] = True
        if cfg.task == "retrieval":  # its test classes come from the pooled images
            seen.scored[pool] = True
        if carved.layers:
            seen.subset[pool] = True
    return seen


def _same_data(label: str, cfg: Any, data: Any) -> None:
    """Refuse a config that reads other training images (or the same in another order)."""
    import inspect

    from horkd.data import DATASETS
    from horkd.data.digest import data_digest

    if cfg.data.dataset != data.dataset:
        raise ValueError(f"{label} trains on data.dataset={cfg.data.dataset}, not "
                         f"{data.dataset}: a partition covers one dataset's training images")
    accepted = inspect.signature(DATASETS.get(data.dataset)).parameters
    differ = [f"data.{k}={getattr(cfg.data, k)}" for k in ("test_fraction", "skip_bad_images")
              if k in accepted and getattr(cfg.data, k) != getattr(data, k)]
    if cfg.data.root != data.root and \
            data_digest(cfg.data.dataset, cfg.data.root) != data_digest(data.dataset, data.root):
        differ.append(f"data.root={cfg.data.root}")
    if differ:
        raise ValueError(f"{label} reads other training images ({', '.join(differ)}): a "
                         "partition covers one dataset's")


def union(files: list[str], data: Any, labels: Tensor, students_only: bool = False
          ) -> tuple[Seen, int]:
    """What every run of ``files`` saw (their data must be ``data``), and how many runs' split
    settings that took."""
    n = labels.numel()
    total = Seen(*(torch.zeros(n, dtype=torch.bool) for _ in range(3)))
    done: set[str] = set()
    for path in files:
        for label, cfg in experiments(path, students_only):
            _same_data(label, cfg, data)
            seeds = [cfg.data.split_seed] if cfg.data.split_seed is not None else cfg.seeds
            key = json.dumps([cfg.data.model_dump(mode="json"), cfg.task, seeds,
                              cfg.retrieval.model_dump(mode="json")], sort_keys=True)
            if key in done:
                continue
            done.add(key)
            seen = seen_images(cfg, labels)
            total.scored |= seen.scored
            total.subset |= seen.subset
            total.pool |= seen.pool
    return total, len(done)


def carve(labels: Tensor, specs: list[PartSpec], fresh: Tensor, sources: dict[str, Tensor],
          seed: int) -> dict[str, Tensor]:
    """Parts (training indices) in ``specs``' order of listing: ``from:`` parts first (their
    images, ``sources[name]``), then the sized parts, each stratified from the ``fresh`` images
    no other part holds, then the rest."""
    n = labels.numel()
    owner: dict[str, Tensor] = {}
    taken = torch.zeros(n, dtype=torch.bool)
    for spec in specs:
        if spec.source is not None:
            mask = sources[spec.name]
            clash = [other for other, index in owner.items() if mask[index].any()]
            if clash:
                raise ValueError(f"parts {clash[0]} and {spec.name} share images: from:FILE "
                                 "parts must be disjoint")
            owner[spec.name] = torch.nonzero(mask).flatten()
            taken |= mask
    for spec in specs:
        if spec.count is not None:
            pool = torch.nonzero(fresh & ~taken).flatten()
            want = round(spec.count * n) if spec.count < 1 else int(spec.count)
            if want > pool.numel():
                raise ValueError(f"part {spec.name}: {want} images asked for, {pool.numel()} "
                                 "are left that no earlier part holds and no --avoid config "
                                 "scored")
            chosen = pool[stratified_subset(labels[pool], want, seed)]
            owner[spec.name] = chosen.sort().values
            taken[chosen] = True
    for spec in specs:
        if spec.rest:
            owner[spec.name] = torch.nonzero(~taken).flatten()
            taken[:] = True
    return {spec.name: owner[spec.name] for spec in specs}


def check_specs(specs: list[PartSpec]) -> None:
    names = [spec.name for spec in specs]
    if not specs:
        raise ValueError("name at least one part: --part NAME=N, NAME=from:FILE or NAME=rest")
    if len(set(names)) != len(names):
        raise ValueError(f"--part names a part twice: {', '.join(names)}")
    if sum(spec.rest for spec in specs) > 1:
        raise ValueError("at most one part takes the rest")


def data_config(path: str | Path, overrides: list[str]) -> Any:
    """The data section of an experiment config, or of a study file's ``base``."""
    from horkd.config import config_from_dict, load_config, read_yaml_mapping

    raw = read_yaml_mapping(path)
    if "base" in raw and "regimes" in raw:
        return config_from_dict(dict(raw["base"]), overrides).data
    return load_config(path, overrides).data


def draw_partition(config: str, overrides: list[str], specs: list[PartSpec], avoid: list[str],
                   seed: int) -> tuple[dict[str, Any], list[str]]:
    """The manifest of ``specs`` over the training images ``config`` names, and the lines that
    say what was drawn (counts per part and class)."""
    from horkd.data import build_splits, labels_of
    from horkd.data.digest import data_digest
    from horkd.data.partition import manifest

    check_specs(specs)
    data = data_config(config, overrides)
    splits = build_splits(data.dataset, root=data.root, val_fraction=0.0,
                          download=data.download, test_fraction=data.test_fraction,
                          skip_bad_images=data.skip_bad_images,
                          **({"channels": data.channels} if data.channels else {}))
    labels = labels_of(splits.train)
    earlier, runs = union(avoid, data, labels)
    fresh = ~(earlier.scored | earlier.subset)
    sources = {spec.name: union([spec.source], data, labels, students_only=True)[0].pool
               for spec in specs if spec.source is not None}
    parts = carve(labels, specs, fresh, sources, seed)
    drawn = {"seed": seed, "parts": [_spec_text(spec) for spec in specs], "avoid": avoid,
             "avoided": {"scored": int(earlier.scored.sum()),
                         "students_subsets": int(earlier.subset.sum()),
                         "never_scored": int(fresh.sum()), "split_settings": runs}}
    content = manifest(data.dataset, data_digest(data.dataset, data.root), labels, parts, drawn)
    lines = [f"{data.dataset}: {labels.numel()} training images; the --avoid configs "
             f"({runs} split settings) scored {int(earlier.scored.sum())} and kept students on "
             f"{int(earlier.subset.sum())}; {int(fresh.sum())} were in neither"]
    lines += _count_table(parts, labels, splits.info.class_names)
    return content, lines


def _spec_text(spec: PartSpec) -> str:
    if spec.rest:
        return f"{spec.name}=rest"
    if spec.source is not None:
        return f"{spec.name}=from:{spec.source}"
    return f"{spec.name}={spec.count:g}"


def _count_table(parts: dict[str, Tensor], labels: Tensor, names: list[str] | None) -> list[str]:
    """A row per part: its size and its images per class (the smallest and largest where the
    classes are too many to list)."""
    classes = int(labels.max()) + 1
    width = max(len(name) for name in parts)
    if classes > 12:
        return [f"  {name:{width}s} {index.numel():7d}  per class "
                f"{int(c.min())}..{int(c.max())}" for name, index in parts.items()
                for c in [torch.bincount(labels[index], minlength=classes)]]
    heads = [(names[c] if names else str(c))[:7] for c in range(classes)]
    lines = [f"  {'part':{width}s} {'images':>7s}  " + " ".join(f"{h:>7s}" for h in heads)]
    for name, index in parts.items():
        counts = torch.bincount(labels[index], minlength=classes).tolist()
        lines.append(f"  {name:{width}s} {index.numel():7d}  "
                     + " ".join(f"{c:7d}" for c in counts))
    return lines
