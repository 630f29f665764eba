"""``horkd study init``: a study file for a user's image folder that ``horkd study`` runs as written.

The study asks of the user's data what the shipped one asks of Fashion-MNIST: a teacher trained
once on every label (validated on the students' validation images, so it never trained on them),
every method beside the label-only student, each method's settings searched on validation with
the same three candidates, then several seeds scored once on the test split, with paired
intervals. ``--labels`` adds regimes where the students may use a share of the labels only (the
teacher then stands for a model trained on labels the user does not have).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

VAL_FRACTION = 0.1  # of the training images, carved for every choice the study makes
METHODS = ("scratch", "hinton_kd", "rkd", "horkd_no_assistant", "horkd")
# Three candidates per method, the same search budget for every method (the shipped study's).
CANDIDATES = MappingProxyType({
    "scratch": (("train.student.optimizer.lr=0.02",), ("train.student.optimizer.lr=0.05",),
                ("train.student.optimizer.lr=0.1",)),
    "hinton_kd": (("distill.loss.temperature=4",), ("distill.loss.temperature=2",),
                  ("distill.loss.temperature=8",)),
    "fitnet": (("distill.loss.hint_weight=1",), ("distill.loss.hint_weight=10",),
               ("distill.loss.hint_weight=100",)),
    "embedding_regression": (("distill.loss.embedding_weight=1",),
                             ("distill.loss.embedding_weight=4",),
                             ("distill.loss.embedding_weight=16",)),
    "rkd": (("distill.loss.distance_weight=25", "distill.loss.angle_weight=50"),
            ("distill.loss.distance_weight=5", "distill.loss.angle_weight=10"),
            ("distill.loss.distance_weight=1", "distill.loss.angle_weight=2")),
    "horkd_no_assistant": (("distill.loss.distance_weight=5", "distill.loss.angle_weight=10"),
                           ("distill.loss.distance_weight=25", "distill.loss.angle_weight=50"),
                           ("distill.loss.orders=[2,3]", "distill.loss.distance_weight=5",
                            "distill.loss.angle_weight=10")),
    "horkd": (("distill.loss.distance_weight=5", "distill.loss.angle_weight=10"),
              ("distill.loss.distance_weight=5", "distill.loss.angle_weight=10",
               "distill.loss.bank_size=1024"),
              ("distill.loss.orders=[2,3]", "distill.loss.distance_weight=5",
               "distill.loss.angle_weight=10")),
})


def regime_name(fraction: float) -> str:
    """``0.01`` -> ``labels1``, ``0.005`` -> ``labels0_5``: the share in percent."""
    return "labels" + f"{100 * fraction:g}".replace(".", "_")


def study_for_folder(
    folder: str | Path,
    *,
    lr_size: int | None = None,
    hr_size: int | None = None,
    labels: list[float] | None = None,
    seeds: list[int] | None = None,
    methods: list[str] | None = None,
    skip_bad_images: bool = False,
) -> str:
    """The study file (YAML text) for the image folder ``folder`` (``train/`` and ``test/``, a
    sub-folder per class). The sides are those ``horkd run`` gives the folder
    (:func:`horkd.experiment.context.run_sides`): ``hr_size`` unset, the median longer side of
    its training images (at most 224); ``lr_size`` unset, a quarter of it. ``skip_bad_images``: unreadable files are left out
    here and by every run of the study, rather than stopping it."""
    from horkd.config import DegradeConfig
    from horkd.data.folder import image_folder
    from horkd.experiment.context import curve_sides, run_sides
    from horkd.methods import METHODS as REGISTERED

    root = Path(folder).resolve()
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the study file
        train, _, info = image_folder(str(root), hr_size, skip_bad_images=skip_bad_images)
    hr = info.native_size
    if lr_size is not None and not 1 <= lr_size < hr:
        raise ValueError(f"--lr-size must be below the HR side ({hr} px), got {lr_size}")
    hr, lr = run_sides(hr_size, hr, DegradeConfig(lr_size=lr_size))  # as `horkd run` does
    print(f"study init: HR side {hr} px, LR side {lr} px (the sides `horkd run` gives this folder "
          "with configs/image_folder.yaml; --hr-size, --lr-size choose others)", file=sys.stderr)
    methods = _known(list(methods or METHODS))
    _enough_to_choose(len(train.samples), len(train.classes))
    fractions = _shares(labels or [], len(train.samples), len(train.classes))
    name = root.name or "images"
    teacher, base = _experiments(root, hr, lr, skip_bad_images)
    study = {
        "name": f"{name}_study",
        "output_dir": f"runs/study-{name}",
        "records": f"{name}-records",
        "workers": 1,
        "seeds": list(seeds or [0, 1, 2]),
        "teachers": {"teacher": teacher},
        "base": base,
        "methods": methods,
        "baselines": [m for m in methods if REGISTERED.get(m).group == "baseline"],
        "main_regime": "full",
        # what the page will claim, declared now, before any run: each comparison called above,
        # below, equivalent within +-margin or inconclusive, Holm-adjusted over the page
        **({"comparisons": {m: "hinton_kd" for m in ("horkd", "horkd_no_assistant")
                            if m in methods},
            "margin": 0.5} if "hinton_kd" in methods and
           {"horkd", "horkd_no_assistant"} & set(methods) else {}),
        "regimes": _regimes(hr, lr, methods, fractions),
        "search": {"seed": 100, "candidates": {m: [list(c) for c in CANDIDATES[m]]
                                               for m in methods}},
        "ablation_seeds": [],
        "curve_sizes": curve_sides(hr, lr),
    }
    header = (
        f"# A study of {root} ({len(train.classes)} classes, {len(train.samples)} training "
        f"images), written by `horkd study init`.\n"
        "# Run it: horkd study THIS_FILE --doc RESULTS.md   (--status shows where it stands;\n"
        "# --executor ray|slurm spreads it over machines: docs/scale.md). Each finished run is\n"
        "# recorded under `records` (keep it with this file): a rerun continues, never repeats.\n"
        "# Change epochs, networks or candidates before the first run: the candidates are the\n"
        "# search budget, the same for every method, chosen on validation images only.\n"
        "# `comparisons` and `margin` are what the page will claim: declare them before any run.\n"
    )
    return header + yaml.dump(study, Dumper=_Plain, sort_keys=False, width=100,
                              default_flow_style=None)


class _Plain(yaml.SafeDumper):
    """Writes shared sub-trees out in full (no ``&id001`` anchors): a file for people."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _enough_to_choose(images: int, classes: int) -> None:
    """Every choice of the study is made on validation images: a folder that leaves some class
    none would score every run nan and choose at random."""
    held = round(VAL_FRACTION * images)
    if held < classes:
        raise ValueError(f"{images} training images leave {held} validation image(s) for "
                         f"{classes} classes ({VAL_FRACTION:.0%} carved, at least one a class): "
                         f"a study needs at least {int(classes / VAL_FRACTION)} training images")


def _shares(labels: list[float], images: int, classes: int) -> list[float]:
    """The label shares asked for, each leaving at least one labelled image per class."""
    fractions = sorted(set(labels))
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"--labels takes shares between 0 and 1, got {fractions}")
    students = round((1 - VAL_FRACTION) * images)  # the training split once validation is carved
    if fractions and round(fractions[0] * students) < classes:
        raise ValueError(f"--labels {fractions[0]:g} leaves {round(fractions[0] * students)} "
                         f"labelled images for {classes} classes: give at least "
                         f"{classes / students:.3f}")
    return fractions


def _known(methods: list[str]) -> list[str]:
    from horkd.methods import METHODS as REGISTERED

    for method in methods:
        REGISTERED.get(method)
        if method not in CANDIDATES:
            raise ValueError(f"study init: no search candidates for '{method}' (it writes "
                             f"{', '.join(CANDIDATES)})")
    return methods


def _experiments(root: Path, hr: int, lr: int,
                 skip_bad_images: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The teacher's experiment and the base of every student run. Both carve the same
    validation split (fraction and seed), so the teacher never trains on the students' one."""
    from horkd.data.augment import folder_augment

    data = {"dataset": "image_folder", "root": str(root), "hr_size": hr,
            "val_fraction": VAL_FRACTION, "split_seed": 0,
            "augment": folder_augment(hr),  # what configs/image_folder.yaml resolves to
            **({"skip_bad_images": True} if skip_bad_images else {})}
    stage = {"batch_size": 32, "optimizer": {"lr": 0.05}}
    network = {"arch": "resnet20", "width": 16, "embed_dim": 128}
    teacher = {"data": data, "degrade": {"lr_size": lr}, "teacher": network,
               "train": {"teacher": {"epochs": 30, **stage}}, "methods": ["scratch"]}
    light = {"arch": "resnet8", "width": 16, "embed_dim": 64}
    base = {"data": data, "degrade": {"lr_size": lr, "interpolation": "area"},
            "teacher": network, "assistant": light, "student": light,
            "train": {"assistant": {"epochs": 15, **stage}, "student": {"epochs": 15, **stage}}}
    return teacher, base


def _regimes(hr: int, lr: int, methods: list[str], fractions: list[float]) -> dict[str, Any]:
    regimes: dict[str, Any] = {
        "full": {"description": f"every training label, LR {lr}x{lr} from HR {hr}x{hr}",
                 "teacher": "teacher", "methods": ["teacher_lr", *methods]},
    }
    for fraction in fractions:
        regimes[regime_name(fraction)] = {
            "description": f"{100 * fraction:g}% of the training labels for the task loss; "
                           "every distillation term sees every training image",
            "teacher": "teacher", "overrides": [f"data.label_fraction={fraction}"]}
    return regimes
