"""The study page's picture of its data: test images at HR, as the teacher sees them, and at
every LR view a regime gives its students (size, blur, noise), the same images in each row.

Why: a low-resolution result means little until a reader has seen what the students were given;
a regime that changes the degradation (a 6-px, blurred, noisy view) gets its own row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from horkd.data import DataNotFoundError, DataSplits
from horkd.data.loader import resolve_tensor_dataset
from horkd.degrade import Degrader, DegradeSpec
from horkd.study.page_files import figure_link

COLUMNS = 14  # images across the picture


def _configs(study: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The base config and each regime's (regimes that do not build are left out)."""
    from horkd.config import config_from_dict

    base = config_from_dict(dict(study["base"]))
    regimes = {}
    for name, regime in study["regimes"].items():
        try:
            regimes[name] = config_from_dict(dict(study["base"]),
                                             list(regime.get("overrides") or []))
        except Exception:  # noqa: BLE001 - a regime that does not build has no view to show
            continue
    return base, regimes


def student_views(base: Any, regimes: dict[str, Any],
                  hr_side: int) -> list[tuple[DegradeSpec, list[str]]]:
    """Each distinct LR view of the regimes that read the base config's data, with the regimes
    that train and test their students on it (a regime trained across ``degrade.lr_sizes``
    under each of its sizes): the plain views from the largest side down, then the degraded
    ones (blur, noise, JPEG)."""
    from horkd.experiment.context import degrade_spec, run_sides

    views: dict[DegradeSpec, list[str]] = {}
    for name, cfg in regimes.items():
        if (cfg.data.dataset, cfg.data.root, cfg.data.hr_size) != (
                base.data.dataset, base.data.root, base.data.hr_size):
            continue  # another dataset or HR side: not these images
        try:
            _, lr = run_sides(cfg.data.hr_size, hr_side, cfg.degrade)
        except ValueError:
            continue
        for size in cfg.degrade.lr_sizes or [lr]:
            views.setdefault(degrade_spec(cfg.degrade, size, upsample=False), []).append(name)

    def order(spec: DegradeSpec) -> tuple[bool, int]:
        degraded = bool(spec.blur_sigma or spec.noise_std or spec.jpeg_quality is not None)
        return degraded, -(spec.lr_size or 0)

    return sorted(views.items(), key=lambda view: order(view[0]))


def view_label(spec: DegradeSpec, base: DegradeSpec | None = None) -> str:
    """``LR 6 px, blur 1, noise 0.05``: what sets the view apart, in the config's units (the
    resampling too, where it is not ``base``'s)."""
    parts = [f"LR {spec.lr_size} px"]
    if base is not None and (spec.interpolation, spec.antialias) != (base.interpolation,
                                                                     base.antialias):
        parts.append(spec.interpolation + ("" if spec.antialias else ", no antialias"))
    if spec.blur_sigma:
        parts.append(f"blur {spec.blur_sigma:g}")
    if spec.noise_std:
        parts.append(f"noise {spec.noise_std:g}")
    if spec.jpeg_quality is not None:
        parts.append(f"JPEG {spec.jpeg_quality}")
    return ", ".join(parts)


def page_splits(cfg: Any) -> DataSplits:
    """The splits a run of ``cfg`` is scored on (its task's: a retrieval task's test split is its
    unseen classes), whole (no ``test_subset``: the picture draws from the whole test split), as
    far as they are on this machine: a page is written without downloading anything."""
    from horkd.experiment.context import load_splits
    from horkd.tasks import TASKS

    local = cfg.model_copy(deep=True)
    local.data.download = False
    local.data.test_subset = None
    return TASKS.get(local.task)().prepare(load_splits(local, seed=0), local, 0)


def _columns(test: Any, class_names: list[str] | None) -> tuple[list[int], list[str], str]:
    """The test images shown: the dataset's own choice where it makes one (glyphs: confusable
    characters of a few test fonts), else the first test image of each class (as many classes
    as fit), then images spread evenly over the test split to fill the row."""
    if hasattr(test, "picture_columns"):
        return test.picture_columns(COLUMNS)
    from horkd.data import labels_of

    labels = labels_of(test).tolist()
    firsts: dict[int, int] = {}
    for index, label in enumerate(labels):
        firsts.setdefault(label, index)
    picked = sorted(firsts.values())[:COLUMNS]
    count = min(COLUMNS, len(labels))
    spread = [round(i * (len(labels) - 1) / max(1, count - 1)) for i in range(count)]
    picked += [i for i in spread if i not in picked][:count - len(picked)]
    titles = [class_names[labels[i]] if class_names else str(labels[i]) for i in picked]
    what = (f"one test image of each class ({min(len(firsts), COLUMNS)} of {len(firsts)})"
            + (", then more from across the test split" if len(picked) > len(firsts) else "")
            + ", titled by class")
    return picked, titles, what


Samples = tuple[torch.Tensor, torch.Tensor]  # a few test images at HR and at the main view


def _sizes(splits: DataSplits, test_subset: int | None) -> str:
    """How many images each split of the base run holds, and (where the dataset can say, as the
    glyphs' faces and design groups) what they are drawn from; ``test_subset``: how many of the
    test images each run scores."""
    parts, drawn_from = [], None
    for name, dataset in (("training", splits.train), ("validation", splits.val),
                          ("test", splits.test)):
        if dataset is None:
            continue
        resolved = resolve_tensor_dataset(dataset)
        composition = getattr(resolved[0], "composition", None) if resolved else None
        parts.append(f"{len(dataset):,} {name}" + (f" ({composition(resolved[1])})"
                                                      if callable(composition) else ""))
        drawn_from = drawn_from or (getattr(resolved[0], "drawn_from", None) if resolved else None)
    if test_subset is not None and test_subset < len(splits.test):
        parts[-1] += f", of which each run scores a stratified {test_subset:,}"
    whole = f" They are drawn from {drawn_from}." if drawn_from else ""
    return "The base run's images: " + ", ".join(parts) + "." + whole


def data_section(study: dict[str, Any], figures: Path) -> tuple[list[str], Samples | None]:
    """The page's section on its data (the picture and which regimes see which row), and the
    first two test images at HR and at the base config's view, for the labels curve's strip:
    the data is read once a page. No section where the data is not on this machine (the page
    is then written without it), one line where it is but cannot be drawn (the picture never
    stops the page)."""
    try:
        base, regimes = _configs(study)
        return _section(base, regimes, page_splits(base), figures)
    except DataNotFoundError:
        return [], None
    except Exception as error:  # noqa: BLE001 - the picture must not stop the page
        first = (str(error).splitlines() or [type(error).__name__])[0]
        return ["", "## The data", "", f"No picture of the test images: {first}"], None


def _section(base: Any, regimes: dict[str, Any], splits: DataSplits,
             figures: Path) -> tuple[list[str], Samples]:
    from horkd.experiment.context import degrade_spec, run_sides
    from horkd.report.figures import image_rows

    picked, titles, what = _columns(splits.test, splits.info.class_names)
    hr = torch.stack([splits.test[i][0] for i in picked])
    side = hr.shape[-1]
    views = student_views(base, regimes, side)
    plain = degrade_spec(base.degrade, run_sides(base.data.hr_size, side, base.degrade)[1],
                         upsample=False)

    def seen(spec: DegradeSpec, images: torch.Tensor) -> torch.Tensor:
        # seeded: the noise of a noisy view is the same on every rebuild of the page
        return Degrader(side, spec)(images, generator=torch.Generator().manual_seed(0))

    rows = [(f"HR {side} px\n(teacher)", hr)]
    rows += [(view_label(spec, plain).replace(", ", "\n", 1), seen(spec, hr)) for spec, _ in views]
    path = image_rows(rows, titles, figures / "data.png")
    lines = [f"- {view_label(spec, plain)}: " + ", ".join(f"`{r}`" for r in names)
             for spec, names in views]
    first = torch.stack([splits.test[i][0] for i in range(min(2, len(splits.test)))])
    return ["", "## The data", "", _sizes(splits, base.data.test_subset), "",
            f"Test images at HR, as the teacher sees them, and at each LR view the students "
            f"train and are tested on; columns: {what}.", "",
            f"![test images at HR and as the students see them]({figure_link(path)})", "",
            "The regimes of each LR view:", "", *lines], (first, seen(plain, first))
