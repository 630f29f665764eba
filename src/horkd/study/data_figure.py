"""The study page's picture of its data: test images at HR, as the teacher sees them, and at
every LR view a regime gives its students (size, blur, noise), the same images in each row.

Why: a low-resolution result means little until a reader has seen what the students were given;
a regime that changes the degradation (a 6-px, blurred, noisy view) gets its own row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from horkd.data import DataNotFoundError, DataSplits
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


def view_label(spec: DegradeSpec) -> str:
    """``LR 6 px, blur 1, noise 0.05``: what sets the view apart, in the config's units."""
    parts = [f"LR {spec.lr_size} px"]
    if spec.blur_sigma:
        parts.append(f"blur {spec.blur_sigma:g}")
    if spec.noise_std:
        parts.append(f"noise {spec.noise_std:g}")
    if spec.jpeg_quality is not None:
        parts.append(f"JPEG {spec.jpeg_quality}")
    return ", ".join(parts)


def test_split(cfg: Any) -> DataSplits:
    """The splits a run of ``cfg`` reads (its test split as its students are scored on), as
    far as they are on this machine: a page is written without downloading anything."""
    from horkd.experiment.context import load_splits

    local = cfg.model_copy(deep=True)
    local.data.download = False
    return load_splits(local, seed=0)


def _columns(test: Any, class_names: list[str] | None) -> tuple[list[int], list[str], str]:
    """The test images shown: the dataset's own choice where it makes one (glyphs: confusable
    characters of a few test fonts), else images spread evenly over the test split."""
    if hasattr(test, "picture_columns"):
        return test.picture_columns(COLUMNS)
    count = min(COLUMNS, len(test))
    picked = [round(i * (len(test) - 1) / max(1, count - 1)) for i in range(count)]
    labels = [int(test[i][1]) for i in picked]
    titles = [class_names[y] if class_names else str(y) for y in labels]
    return picked, titles, f"{count} images spread evenly over the test split, titled by class"


def data_section(study: dict[str, Any], figures: Path) -> list[str]:
    """The page's section on its data: the picture and which regimes see which row; nothing
    where the data is not on this machine (the page is then written without it)."""
    try:
        base, regimes = _configs(study)
        splits = test_split(base)
    except (DataNotFoundError, OSError, ValueError):
        return []
    test = splits.test
    while isinstance(test, Subset):  # a test_subset's images: pictured from their whole split
        test = test.dataset
    try:
        picked, titles, what = _columns(test, splits.info.class_names)
        hr = torch.stack([test[i][0] for i in picked])
    except Exception as error:  # noqa: BLE001 - the picture must not stop the page
        return ["", "## The data", "", f"No picture of the test images: {error}"]
    side = hr.shape[-1]
    views = student_views(base, regimes, side)
    rows = [(f"HR {side} px\n(teacher)", hr)]
    for spec, _ in views:
        # seeded: the noise of a noisy view is the same on every rebuild of the page
        low = Degrader(side, spec)(hr, generator=torch.Generator().manual_seed(0))
        rows.append((view_label(spec).replace(", ", "\n", 1), low))
    from horkd.report.figures import image_rows

    path = image_rows(rows, titles, figures / "data.png")
    lines = [f"- {view_label(spec)}: " + ", ".join(f"`{r}`" for r in names)
             for spec, names in views]
    return ["", "## The data", "",
            f"Test images at HR, as the teacher sees them, and at each LR view the students "
            f"train and are tested on; columns: {what}.", "",
            f"![test images at HR and as the students see them]({figure_link(path)})", "",
            "The regimes of each LR view:", "", *lines]
