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
FEW_VALIDATION_IMAGES = 100  # below it, one image moves a validation score by over a point
METHODS = ("scratch", "hinton_kd", "kd_rkd", "rkd", "horkd_no_assistant", "horkd")
# with few labels: the teacher-free student on the same unlabelled images, without which "the
# teacher's worth" mixes the teacher with the use of those images at all
FEW_LABEL_METHODS = ("semi_supervised",)
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
    "semi_supervised": (("distill.pseudo_label.threshold=0.95",),
                        ("distill.pseudo_label.threshold=0.7",),
                        ("distill.pseudo_label.threshold=0.5",)),
    "kd_rkd": (("distill.loss.distance_weight=5", "distill.loss.angle_weight=10"),
               ("distill.loss.distance_weight=25", "distill.loss.angle_weight=50"),
               ("distill.loss.distance_weight=1", "distill.loss.angle_weight=2")),
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


# written above `regimes:`: what each regime's role means and how a user makes one confirmatory
ROLE_COMMENT = (
    "# Each regime's role: exploratory (hypothesis-generating; the page marks it so) unless you\n"
    "# make it confirmatory before its first run: set `role: confirmatory` (it needs\n"
    "# {needs}). Its design (settings with every default, methods,\n"
    "# candidates, seeds, teachers, comparisons, margin) is then registered at its first run\n"
    "# and a change with runs recorded is refused; `horkd study THIS_FILE --register REGIME`\n"
    "# starts a new registration, the old one kept beside it.\n"
)


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
    out: str | Path | None = None,
    channels: int | None = None,
    teacher_epochs: int = 30,
    student_epochs: int = 15,
) -> str:
    """The study file (YAML text) for the image folder ``folder`` (a sub-folder per class,
    directly or under ``train/``; ``test/`` optional). The sides are those ``horkd run`` gives
    the folder (:func:`horkd.experiment.context.run_sides`): ``hr_size`` unset, the median longer side of
    its training images (at most 224); ``lr_size`` unset, a quarter of it. ``skip_bad_images``: unreadable files are left out
    here and by every run of the study, rather than stopping it. ``out``: the file it goes to,
    which names the study's run folder and records (:func:`_names`). ``channels`` unset: 1 where
    the folder's images are grey (:func:`horkd.data.images.stored_channels`, as a run
    decides), else 3."""
    from horkd.config import MIN_HR_SIDE, DegradeConfig
    from horkd.data.folder import image_folder
    from horkd.data.images import stored_channels
    from horkd.experiment.context import curve_sides, odd_sides, run_sides
    from horkd.methods import METHODS as REGISTERED

    if hr_size is not None and hr_size < MIN_HR_SIDE:
        raise ValueError(f"--hr-size must be at least {MIN_HR_SIDE} px, got {hr_size}")
    root = Path(folder).resolve()
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the study file
        train, _, info = image_folder(str(root), hr_size, skip_bad_images=skip_bad_images,
                                      channels=channels, say_defaults=False)
    hr = info.native_size
    if lr_size is not None and not 2 <= lr_size < hr:
        raise ValueError(f"--lr-size must be below the HR side ({hr} px) and at least 2, got "
                         f"{lr_size}")
    hr, lr = run_sides(hr_size, hr, DegradeConfig(lr_size=lr_size))  # as `horkd run` does
    for line in odd_sides(hr, lr, "--hr-size", "--lr-size"):  # the options of this command
        print(line, file=sys.stderr)
    if hr_size is None and lr_size is None:
        print(f"study init: HR side {hr} px, LR side {lr} px (the sides `horkd run` gives this "
              "folder with configs/image_folder.yaml; --hr-size, --lr-size choose others)",
              file=sys.stderr)
    else:  # the user's own choice: not the sides `horkd run` would give the folder
        print(f"study init: HR side {hr} px, LR side {lr} px (as asked)", file=sys.stderr)
    if channels is None:
        channels = stored_channels(str(root))  # as `horkd run` decides for the folder
        if channels == 1:
            print("study init: the images are grey: channels 1 (--channels 3 trains on them as "
                  "RGB)", file=sys.stderr)
    if teacher_epochs < 1 or student_epochs < 1:
        raise ValueError(f"--teacher-epochs and --student-epochs must be >= 1, got "
                         f"{teacher_epochs} and {student_epochs}")
    methods = _known(list(methods or METHODS))
    _enough_to_choose(len(train.samples), len(train.classes))
    fractions = _shares(labels or [], len(train.samples), len(train.classes))
    few_label = [m for m in FEW_LABEL_METHODS if fractions and m not in methods]
    name = root.name or "images"
    held = round(VAL_FRACTION * len(train.samples))
    few = (f"every choice of the study (each method's settings, each run's epoch, the method "
           f"to ship) rests on about {held} validation images ({VAL_FRACTION:.0%} of the "
           f"{len(train.samples)} training images): one image is {100 / held:.1f} points of a "
           "validation score"
           if held < FEW_VALIDATION_IMAGES else "")
    if few:
        print(f"study init: {few}", file=sys.stderr)
    teacher, base = _experiments(root, hr, lr, skip_bad_images, channels,
                                 (teacher_epochs, student_epochs))
    study = {
        "name": f"{name}_study",
        "output_dir": "",  # named below, from the file or the settings
        "records": "",
        "workers": 1,
        "seeds": list(seeds or [0, 1, 2]),
        "teachers": {"teacher": teacher},
        "base": base,
        "methods": methods,
        "baselines": [m for m in methods + few_label if REGISTERED.get(m).group == "baseline"],
        "main_regime": "full",
        # what the page will claim, declared now, before any run: each comparison called above,
        # below, equivalent within +-margin or inconclusive, Holm-adjusted over the page
        **_comparisons(methods, few_label),
        "regimes": _regimes(hr, lr, methods, fractions, few_label),
        "search": {"seed": 100, "candidates": {m: [list(c) for c in CANDIDATES[m]]
                                               for m in methods + few_label}},
        "ablation_seeds": [],
        "curve_sizes": curve_sides(hr, lr),
    }
    study["output_dir"], study["records"] = _names(study, name, out)
    header = (
        f"# A study of {root} ({len(train.classes)} classes, {len(train.samples)} training "
        f"images), written by `horkd study init`.\n"
        "# Run it: horkd study THIS_FILE --doc RESULTS.md   (--status shows where it stands;\n"
        "# --executor ray|slurm spreads it over machines: docs/scale.md). Each finished run is\n"
        "# recorded under `records` (keep it with this file): a rerun continues, never repeats.\n"
        "# Change epochs, networks or candidates before the first run: the candidates are the\n"
        "# search budget, the same for every method, chosen on validation images only.\n"
        "# `comparisons` and `margin` are what the page will claim: declare them before any run.\n"
        + (f"# Few: {few}.\n" if few else "")
    )
    text = yaml.dump(study, Dumper=_Plain, sort_keys=False, width=100, default_flow_style=None)
    needs = ("the comparisons and margin above" if "comparisons" in study else
             "`comparisons` and `margin`, in the regime or here")
    return header + text.replace("\nregimes:\n",
                                 "\n" + ROLE_COMMENT.format(needs=needs) + "regimes:\n", 1)


def _names(study: dict[str, Any], folder: str, out: str | Path | None) -> tuple[str, str]:
    """The run folder and records of a study: named after its file (``--out my_study.yaml``:
    ``runs/my_study``, ``my_study-records``), else after the folder and a digest of its
    settings. Two studies of one folder once shared ``runs/study-<folder>`` and its records:
    the second retrained the first's teacher in place and counted the first's teacher as its own."""
    if out is not None:
        stem = Path(out).stem
        return f"runs/{stem}", f"{stem}-records"
    from horkd.run_dir import settings_digest

    digest = settings_digest({k: v for k, v in study.items()
                              if k not in ("output_dir", "records")})[:6]
    return f"runs/study-{folder}-{digest}", f"{folder}-{digest}-records"


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


def _experiments(root: Path, hr: int, lr: int, skip_bad_images: bool, channels: int,
                 epochs: tuple[int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The teacher's experiment and the base of every student run. Both carve the same
    validation split (fraction and seed), so the teacher never trains on the students' one."""
    from horkd.data.augment import folder_augment

    data = {"dataset": "image_folder", "root": str(root), "hr_size": hr, "channels": channels,
            "val_fraction": VAL_FRACTION, "split_seed": 0,
            "augment": folder_augment(hr),  # what configs/image_folder.yaml resolves to
            **({"skip_bad_images": True} if skip_bad_images else {})}
    stage = {"batch_size": 32, "optimizer": {"lr": 0.05}}
    network = {"arch": "resnet20", "width": 16, "embed_dim": 128}
    teacher = {"data": data, "degrade": {"lr_size": lr}, "teacher": network,
               "train": {"teacher": {"epochs": epochs[0], **stage}}, "methods": ["scratch"]}
    light = {"arch": "resnet8", "width": 16, "embed_dim": 64}
    base = {"data": data, "degrade": {"lr_size": lr, "interpolation": "area"},
            "teacher": network, "assistant": light, "student": light,
            "train": {"assistant": {"epochs": epochs[1], **stage},
                      "student": {"epochs": epochs[1], **stage}}}
    return teacher, base


def _comparisons(methods: list[str], few_label: list[str]) -> dict[str, Any]:
    """What the page will claim, declared before any run: HORKD against Hinton KD (and against
    Hinton KD + RKD, which isolates the assistant as the relations' source), and the teacher's
    worth: Hinton KD against the teacher-free students. Each called above / below / equivalent
    within +-margin / inconclusive, Holm-adjusted over the page."""
    have = set(methods) | set(few_label)
    wanted = {"horkd": ["hinton_kd", "kd_rkd"], "horkd_no_assistant": ["hinton_kd"],
              "hinton_kd": ["scratch", "semi_supervised"]}
    pairs = {m: [c for c in cs if c in have] for m, cs in wanted.items() if m in have}
    pairs = {m: cs for m, cs in pairs.items() if cs}
    return {"comparisons": pairs, "margin": 0.5} if pairs else {}


def _regimes(hr: int, lr: int, methods: list[str], fractions: list[float],
             few_label: list[str] = ()) -> dict[str, Any]:
    regimes: dict[str, Any] = {
        "full": {"description": f"every training label, LR {lr}x{lr} from HR {hr}x{hr}",
                 "role": "exploratory", "teacher": "teacher",
                 "methods": ["teacher_lr", *methods]},
    }
    for fraction in fractions:
        regimes[regime_name(fraction)] = {
            "description": f"{100 * fraction:g}% of the training labels for the task loss; "
                           "every distillation term sees every training image",
            "role": "exploratory", "teacher": "teacher",
            "overrides": [f"data.label_fraction={fraction}"],
            **({"methods": [*methods, *few_label]} if few_label else {})}
    return regimes
