"""One experiment's configuration: typed, validated before any training, defaults in one place.

A YAML file maps onto :class:`ExperimentConfig`; ``key.sub=value`` overrides from the command line
are applied to the raw mapping before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

STAGES = ("teacher", "assistant", "student")


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and what is allowed. ``problems``
    holds each validation problem as (key path, message), for a caller that names where the
    key was written (a study file's ``base``, an override, a candidate)."""

    def __init__(self, message: str, problems: list[tuple[tuple[str, ...], str]] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class _Strict(BaseModel):
    """Unknown keys are typos, not extensions: reject them."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class AugmentConfig(_Strict):
    """Applied once to the HR batch; the LR view is derived from the augmented tensor."""

    crop_padding: int | None = Field(
        0, ge=0, description="random shifts of up to this many pixels; null: a sixteenth of the "
        "HR side, at least 1 (the rule horkd study init writes for a folder)")
    hflip: bool = False
    views: int | None = Field(
        None,
        ge=1,
        description="K fixed augmentations per training image (drawn once); each step takes one "
        "at random. Lets distill.cache_reference store every view, random crops included",
    )


MIN_HR_SIDE = 4  # an HR side below this cannot hold an LR image of MIN_LR_SIDE and more
MIN_LR_SIDE = 2  # one pixel is one colour: nothing left to recognise


class DataConfig(_Strict):
    dataset: str = "fashion_mnist"
    root: str | None = None
    download: bool = False
    hr_size: int | None = Field(None, description="HR side in pixels; null = native size")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    split_seed: int | None = Field(
        None, description="seed of the subset/validation carving; null = each run seed's own"
    )
    label_fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="few labels: the task loss sees this stratified share of the training "
        "labels, in batches of labelled images of their own; distillation terms still use "
        "every training image",
    )
    labeled_batch_size: int | None = Field(
        None,
        ge=1,
        description="few labels: each step also draws this many labelled images for the task "
        "loss (null = the stage's batch size)",
    )
    train_subset: int | None = Field(None, ge=10)
    test_subset: int | None = Field(None, ge=10)
    test_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="image_folder without a test split (ROOT/<class>/ or ROOT/train/ alone): "
        "about this share of each class held out as one, each file by a hash of its class and "
        "name (adding or removing files moves no other); glyphs: the "
        "share of the font faces whose families are the test fonts",
    )
    glyph_renders: int = Field(
        4, ge=1, description="glyphs: varied renders of each character of each font (seeded)"
    )
    glyph_min_families: int = Field(
        20, ge=3, description="glyphs: refuse a font set of fewer families (too few to split)"
    )
    glyph_fonts: Literal["all", "teacher", "students"] = Field(
        "all", description="glyphs: train on every training font, or on one of two halves of "
        "the training families (whole families, fixed by a hash of their names; about half "
        "the faces each): a teacher on 'teacher' has seen no design its students on "
        "'students' train on (validation and test fonts are the same for both)"
    )
    val_from_subset: int | None = Field(
        None,
        ge=10,
        description="validate on the images a run with train_subset=N (same val_fraction and "
        "split seed) validates on, and train on every other training image: a teacher trained "
        "so has never seen its students' validation images",
    )
    val_size: int | None = Field(
        None,
        ge=1,
        description="validate on exactly this many training images (stratified), in place of "
        "val_fraction: a validation split sized like a few-label run's labelled set (glyphs: "
        "this many of the validation fonts' images, up to all of them)",
    )
    split_file: str | None = Field(
        None,
        description="a partition manifest of the training images into named, disjoint parts "
        "(horkd split writes one; a relative path is read from the current folder): the run "
        "trains and validates on data.part alone",
    )
    part: str | None = Field(None, description="split_file's part this run trains and "
                             "validates on (train_subset and the validation split come from it)")
    test_part: str | None = Field(
        None, description="split_file's part scored as the test split, in place of the "
        "dataset's own: training images no earlier choice has seen"
    )
    channels: Literal[1, 3] | None = Field(
        None, description="image_folder only: 1 or 3; null: 1 when the folder's images are "
        "stored grey, else 3")
    num_workers: int | None = Field(
        None, ge=0, description="processes reading image files beside training (file datasets "
        "only); null: none on a CPU, from the CPUs on a GPU (up to 4, one core left to "
        "training); 0: none")
    skip_bad_images: bool = Field(False, description="leave unreadable image files out, counted")
    augment: AugmentConfig = AugmentConfig()

    @field_validator("hr_size")
    @classmethod
    def _hr_side(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_HR_SIDE:
            raise ValueError(f"{value} px is no image to recognise: at least {MIN_HR_SIDE} (the "
                             "LR image is smaller still; below 16 px a run warns)")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from horkd.data import DATASETS

        DATASETS.check(name)  # imports no reader: validating a config stays quick
        return name

    @model_validator(mode="after")
    def _one_subset_rule(self) -> DataConfig:
        if self.val_from_subset is not None and self.train_subset is not None:
            raise ValueError("data.val_from_subset trains on the whole training set but the "
                             "students' validation images: leave data.train_subset unset")
        if self.val_from_subset is not None and (self.val_size or self.split_file):
            raise ValueError("data.val_from_subset carves a val_fraction run's validation "
                             "images; with data.val_size or data.split_file keep a teacher off "
                             "its students' images with a part of its own")
        if self.glyph_fonts != "all" and self.dataset != "glyphs":
            raise ValueError(f"data.glyph_fonts={self.glyph_fonts} splits the glyphs dataset's "
                             f"fonts; {self.dataset} has none: leave it at all")
        if self.dataset == "glyphs" and self.augment.hflip:
            raise ValueError("data.augment.hflip=true mirrors the glyphs, and a mirrored b is a "
                             "d, a mirrored p a q: set data.augment.hflip=false for glyphs")
        if self.dataset == "glyphs" and self.split_file is not None:
            from horkd.data import held_apart_refusal

            raise ValueError(held_apart_refusal("glyphs") + " (data.glyph_fonts keeps a "
                             "teacher off its students' fonts)")
        self._check_parts()
        return self

    def _check_parts(self) -> None:
        """The parts named exist in the manifest (read here, so a typo stops before a run)."""
        if self.split_file is None:
            if self.part is not None or self.test_part is not None:
                raise ValueError("data.part and data.test_part name parts of data.split_file: "
                                 "set it")
            return
        if self.part is None:
            raise ValueError("data.split_file holds several parts: name the one this run "
                             "trains on (data.part)")
        if self.part == self.test_part:
            raise ValueError(f"data.part and data.test_part are both {self.part}: a run is "
                             "never tested on what it trained on")
        from horkd.data.partition import load_partition

        partition = load_partition(self.split_file)
        partition.indices(self.part, "data.part")
        if self.test_part is not None:
            partition.indices(self.test_part, "data.test_part")


class DegradeConfig(_Strict):
    """How LR is made from HR (see :mod:`horkd.degrade`) and how the student takes it."""

    lr_size: int | None = None
    lr_sizes: list[int] | None = Field(
        None,
        min_length=1,
        description="train across sizes: each batch draws one of these LR sizes (the student "
        "is evaluated inside this range at an image's own size); lr_size is then the smallest",
    )
    factor: int | None = Field(None, ge=2)
    interpolation: Literal["area", "bilinear", "bicubic"] = "area"
    antialias: bool = True
    blur_sigma: float = Field(0.0, ge=0.0)
    noise_std: float = Field(0.0, ge=0.0)
    jpeg_quality: int | None = Field(None, ge=1, le=100)
    student_input: Literal["native", "upsampled"] = "native"
    size_statistics: Literal["recomputed", "per_size", "shared"] = Field(
        "recomputed",
        description="a native student trained across lr_sizes keeps BatchNorm statistics per "
        "trained size (an image uses the nearest size's): recomputed from training images at "
        "every epoch end, before validation (each size is a fraction of the batches, so its "
        "running average lags the weights: on a short run 41.8% against 92.9% recomputed), or "
        "per_size as running averages only; shared keeps one set; weights are shared either way",
    )
    statistics_images: int = Field(
        1024, ge=1, description="training images per size that size_statistics=recomputed reads"
    )
    work_size: int | Literal["auto"] | None = Field(
        "auto",
        description="a native student trained across lr_sizes resizes every input to this side "
        "inside the network (bilinear, antialiased), after its BatchNorm statistics are picked "
        "by the input's own size; auto: the trained size nearest half the HR side; null feeds "
        "every size as it is; a single-size student ignores auto",
    )
    eval_sizes: list[int] | None = Field(
        None, description="extra LR sizes every final model is evaluated at"
    )

    @field_validator("lr_size")
    @classmethod
    def _lr_side(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_LR_SIDE:
            raise ValueError(f"{value} px leaves nothing to recognise: at least {MIN_LR_SIDE} "
                             "(below 4 px a run warns)")
        return value

    @field_validator("eval_sizes")
    @classmethod
    def _eval_sides(cls, value: list[int] | None) -> list[int] | None:
        """Each an LR side of its own: 0 once scored the LR side under a ``@0`` column."""
        if value is not None and any(s < MIN_LR_SIDE for s in value):
            raise ValueError(f"degrade.eval_sizes {value}: every size at least {MIN_LR_SIDE} px")
        return value

    @field_validator("work_size", mode="before")
    @classmethod
    def _side_auto_or_null(cls, value: Any) -> Any:
        """One readable line for a bad value, instead of one per member of the union."""
        if value is None or value == "auto":
            return value
        side = value
        if isinstance(value, str) and value.strip().isdigit():
            side = int(value)
        if isinstance(side, int) and not isinstance(side, bool) and side >= 2:
            return side
        raise ValueError(f"a side in pixels (2 or more), auto or null, not {value!r}")

    @property
    def native_across_sizes(self) -> bool:
        """Whether the student takes LR at its own side, from two or more trained sizes."""
        return len(self.lr_sizes or []) > 1 and self.student_input == "native"

    def resolved_work_size(self, hr_size: int) -> int | None:
        """The side a student computes at (``None``: each input at its own side).

        ``auto`` takes the trained size nearest half the HR side (the larger on a tie): on
        Fashion-MNIST (HR 28) it was the best side tried and on digits (HR 16) level with the
        best, 5.5 and 3 validation points above feeding every size as it is; being a trained
        size, images of that size pass unresized.
        """
        if not self.native_across_sizes or self.work_size is None:
            return None
        if self.work_size != "auto":
            return self.work_size
        return min(self.lr_sizes or [], key=lambda s: (abs(2 * s - hr_size), -s))

    @property
    def norm_sizes(self) -> list[int] | None:
        """The sizes a student keeps BatchNorm statistics for (``None``: one set)."""
        per_size = self.native_across_sizes and self.size_statistics != "shared"
        return list(self.lr_sizes or []) if per_size else None

    @model_validator(mode="after")
    def _one_size(self) -> DegradeConfig:
        if self.lr_sizes is not None:
            sizes = sorted(set(self.lr_sizes))
            if any(s < MIN_LR_SIDE for s in sizes):
                raise ValueError(f"degrade.lr_sizes must be positive pixel sizes of at least "
                                 f"{MIN_LR_SIDE}, got {sizes}")
            if self.factor is not None:
                raise ValueError("give degrade.lr_sizes or degrade.factor, not both")
            if self.lr_size is not None and self.lr_size != sizes[0]:
                raise ValueError(
                    f"with degrade.lr_sizes the LR size is their smallest ({sizes[0]}); drop "
                    "degrade.lr_size"
                )
            self.lr_sizes, self.lr_size = sizes, sizes[0]
        if self.work_size not in (None, "auto") and not self.native_across_sizes:
            raise ValueError(
                "degrade.work_size is for a native student trained across degrade.lr_sizes "
                "(two or more sizes, student_input: native); drop it here"
            )
        if self.lr_size is None and self.factor is None:
            self.factor = 4
        if self.lr_size is not None and self.factor is not None:
            raise ValueError(
                "give either degrade.lr_size or degrade.factor, not both (a KEY=VALUE override of "
                "one on the command line replaces the config file's other)"
            )
        return self


class ModelConfig(_Strict):
    arch: str
    embed_dim: int | None = Field(128, ge=2)
    width: int | None = Field(None, ge=1)
    weights: str | None = Field(
        None,
        description="backbone weights to start from: a file, or pretrained weights by name for a "
        "torchvision arch (DEFAULT, or one of its weights such as IMAGENET1K_V1: torchvision's "
        "weights API and torch hub's cache) or a timm arch (DEFAULT: timm's pretrained)",
    )
    checkpoint: str | None = Field(
        None,
        description="a horkd checkpoint to load instead of training; {seed} stands for the run "
        "seed (one checkpoint per seed)",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, name: str) -> str:
        from horkd.models import BACKBONES

        if not name.startswith("timm:"):
            BACKBONES.get(name)
        return name

    @model_validator(mode="after")
    def _weights_of_this_arch(self) -> ModelConfig:
        """A weights name must be one this architecture has (nothing is read here)."""
        from horkd.models.pretrained import check_weights_name, is_weights_name

        if self.weights is not None and is_weights_name(self.weights):
            check_weights_name(self.arch, self.weights)
        return self


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = True


class StageConfig(_Strict):
    """The budget of one training stage; every student baseline gets the student's budget."""

    epochs: int = Field(5, ge=0)
    batch_size: int = Field(128, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0.0)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap for smoke runs")
    select_on_val: bool = Field(True, description="keep the epoch with the best validation top-1")
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="also save the resumable state every N steps (always per epoch)"
    )
    max_nonfinite_steps: int = Field(
        20, ge=0, description="stop after more than this many non-finite losses in a row"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast dtype; relational terms always compute in fp32"
    )
    channels_last: bool = False
    compile: bool = Field(False, description="torch.compile the trained network")
    batchnorm_statistics: Literal["auto", "running", "recomputed"] = Field(
        "auto",
        description="BatchNorm statistics for validation and the saved model: 'recomputed' at "
        "every epoch end from degrade.statistics_images fixed training images, 'running' as "
        "training leaves them; 'auto' recomputes when an epoch has under 100 steps, where the "
        "running averages lag the weights. Training is the same either way. A native student "
        "across lr_sizes with a set of statistics per size (degrade.size_statistics per_size "
        "or recomputed) follows degrade.size_statistics instead",
    )


class TrainConfig(_Strict):
    teacher: StageConfig = StageConfig()
    assistant: StageConfig = StageConfig()
    student: StageConfig = StageConfig()


def _loss_default(key: str) -> Callable[[], float]:
    """The default of ``distill.loss.<key>`` from the hybrid-order loss's one table of defaults,
    :data:`~horkd.losses.defaults.HYBRID_DEFAULTS` (looked up when a config is made, as the
    registries are: config imports no loss module at its top)."""

    def default() -> float:
        from horkd.losses.defaults import HYBRID_DEFAULTS

        return HYBRID_DEFAULTS[key]

    return default


class LossConfig(_Strict):
    """Weights of the hybrid-order loss. A weight given here applies to every method that uses
    its term; a weight left null takes the method's own default (``horkd list``): the baselines
    their published ones, the hybrid-order methods the accuracy study's choice. The defaults
    here and the hybrid-order methods' weights come from the one table the loss's constructor
    takes too, :data:`~horkd.losses.defaults.HYBRID_DEFAULTS`."""

    task_weight: float = Field(1.0, ge=0.0)
    embedding_weight: float | None = Field(
        None, ge=0.0, description="alpha: first order, embeddings; null = the method's default"
    )
    logit_weight: float = Field(
        default_factory=_loss_default("logit_weight"),
        ge=0.0,
        description="alpha: first order, softened logits",
    )
    temperature: float = Field(default_factory=_loss_default("temperature"), gt=0.0)
    distance_weight: float | None = Field(
        None, ge=0.0, description="beta: second order; null = the method's default"
    )
    angle_weight: float | None = Field(
        None, ge=0.0, description="gamma: third order; null = the method's default"
    )
    hint_weight: float | None = Field(
        None, ge=0.0,
        description="fitnet: its middle-stage hint term; null = the method's default (100)",
    )
    huber_delta: float = Field(default_factory=_loss_default("huber_delta"), gt=0.0)
    orders: list[Literal[1, 2, 3]] = Field(default_factory=lambda: [1, 2, 3])
    angle_anchors: int | None = Field(
        None,
        ge=1,
        description="third order estimated on this many random anchors per step; null = exact",
    )
    bank_size: int = Field(
        0,
        ge=0,
        description="second order also compares each sample with the last M samples of earlier "
        "steps (their student embeddings detached, their reference embeddings exact): relations "
        "that look beyond one batch; 0 = within the batch",
    )
    relations: Literal["global", "local"] = Field(
        "global",
        description="second/third order over the whole global batch (all ranks) or each rank's",
    )

    def settled(self, defaults: Mapping[str, float]) -> LossConfig:
        """These settings with every weight left null taken from ``defaults`` (a method's)."""
        unset = {key: value for key, value in defaults.items() if getattr(self, key) is None}
        return self.model_copy(update=unset) if unset else self


class TaskLossConfig(_Strict):
    """The task loss; null name = the task's default (cross_entropy, proxy_anchor, arcface)."""

    name: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_loss(cls, name: str | None) -> str | None:
        if name is not None:
            from horkd.losses.task import TASK_LOSSES

            TASK_LOSSES.get(name)
        return name


class RetrievalConfig(_Strict):
    train_classes: int | None = Field(
        None, ge=1, description="classes 0..n-1 train, the rest test; null = first half"
    )
    random_classes: bool = Field(
        False,
        description="the training classes are drawn at random with the run seed (every method of "
        "a seed shares the split; each seed has its own) instead of the first ones",
    )


class FaceConfig(_Strict):
    pairs_file: str | None = Field(None, description="LFW-style pairs.txt; null = sample pairs")
    pairs_root: str | None = Field(None, description="folder of <name>/<name>_0001.jpg images")
    sampled_pairs: int = Field(600, ge=20, description="pairs drawn from test identities")
    probe_sizes: list[int] = Field(default_factory=lambda: [16, 12, 8])


class PseudoLabelConfig(_Strict):
    """The teacher-free semi-supervised student's settings (``semi_supervised``): its own
    prediction on an unlabelled image becomes that image's target where it is confident. Here,
    beside the distillation settings, because a method's builder reads ``distill``; no other
    method reads them. The defaults are FixMatch's (Sohn et al. 2020), as
    :mod:`horkd.methods.semi_supervised` names them (``PSEUDO_THRESHOLD``, ``PSEUDO_WEIGHT``)."""

    threshold: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="semi_supervised: an unlabelled image's prediction becomes its target when "
        "its largest softmax probability is at least this (FixMatch's 0.95)",
    )
    weight: float = Field(
        1.0,
        ge=0.0,
        description="semi_supervised: weight of the pseudo-label term beside the task loss "
        "(FixMatch's lambda_u, 1)",
    )


class DistillConfig(_Strict):
    warm_start: bool = Field(
        False,
        description="the HORKD student starts from the assistant's weights (same architecture); "
        "off by default: a weak assistant's weights cost more than they give",
    )
    assistant_guard: float | None = Field(
        10.0,
        ge=0.0,
        description="the HORKD student learns from the assistant only when the assistant's "
        "validation score is within this many points of the teacher's (both on the input the "
        "assistant takes: HR, or LR with distill.assistant_input: lr); otherwise "
        "from the teacher directly, recorded in its checkpoint. null: always the assistant",
    )
    assistant_input: Literal["hr", "lr"] = Field(
        "hr",
        description="what the assistant learns on: hr (the paper's chain - the architecture gap "
        "first, on HR, then the resolution gap) or lr (the resolution gap first: the assistant "
        "learns on the students' LR re-upsampled to the HR size, from the teacher on HR, and the "
        "students imitate it on the LR input they see themselves; give it the teacher's "
        "architecture with assistant.arch)",
    )
    student_logits_from: Literal["assistant", "teacher"] = Field(
        "teacher",
        description="whose softened logits the HORKD student imitates (embedding and relations "
        "always come from the assistant)",
    )
    loss: LossConfig = LossConfig()
    cache_reference: bool = Field(
        False,
        description="precompute the frozen reference's outputs once per image and view (flips, "
        "or data.augment.views fixed views; fresh random crops cannot be cached)",
    )
    pseudo_label: PseudoLabelConfig = PseudoLabelConfig()

    def settled(self, defaults: Mapping[str, float]) -> DistillConfig:
        """These settings as one method trains with them (its own default weights filled in)."""
        loss = self.loss.settled(defaults)
        return self if loss is self.loss else self.model_copy(update={"loss": loss})


class ReportConfig(_Strict):
    resolution_sizes: list[int] | Literal["auto"] | None = Field(
        None,
        description="input sizes of the accuracy-vs-resolution curve; [] = none; null = none, "
        "or for a student trained across degrade.lr_sizes its trained sizes and the HR size; "
        "auto = the HR side, half of it, the LR side and half of that",
    )
    latency_repeats: int = Field(20, ge=1)


class ExperimentConfig(_Strict):
    name: str = "experiment"
    output_dir: str = "runs/experiment"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    task: Literal["classification", "retrieval", "face"] = "classification"
    task_loss: TaskLossConfig = TaskLossConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    face: FaceConfig = FaceConfig()
    deterministic: bool = False
    data: DataConfig = DataConfig()
    degrade: DegradeConfig = DegradeConfig()
    teacher: ModelConfig = ModelConfig(arch="resnet20")
    assistant: ModelConfig = ModelConfig(arch="cnn_small", embed_dim=64)
    student: ModelConfig = ModelConfig(arch="cnn_small", embed_dim=64)
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    methods: list[str] = Field(default_factory=lambda: ["scratch", "horkd"], min_length=1)
    report: ReportConfig = ReportConfig()

    @model_validator(mode="before")
    @classmethod
    def _named_after_the_data(cls, raw: Any) -> Any:
        """``name: null``: the data folder's name (a run on ``shapes/`` reports as ``shapes``,
        not as the config's ``my_images``); ``output_dir: null``: ``runs/<name>``."""
        if not isinstance(raw, dict) or not ({"name", "output_dir"} & {
                key for key, value in raw.items() if value is None}):
            return raw
        raw = dict(raw)
        if raw.get("name", "") is None:
            data = raw.get("data")
            root = data.get("root") if isinstance(data, dict) else None
            raw["name"] = (Path(str(root)).resolve().name if root else "") or "experiment"
        if raw.get("output_dir", "") is None:
            raw["output_dir"] = f"runs/{raw.get('name') or 'experiment'}"
        return raw

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, raw: Any) -> Any:
        """``schedule`` chose what the name ``horkd`` meant; the joint schedule is now its own
        method, so a name always means one method. Old run directories still load."""
        if isinstance(raw, dict) and "schedule" in raw:
            raw = dict(raw)
            if raw.pop("schedule") != "sequential":
                raise ValueError(
                    "schedule was removed: horkd is the sequential schedule and the joint one is "
                    "the method horkd_joint: list it in methods (and drop schedule)"
                )
        return raw

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, names: list[str]) -> list[str]:
        from horkd.methods import METHODS

        for name in names:
            if METHODS.get(name).group == "stage":
                raise ValueError(
                    f"methods: '{name}' is a stage other methods build on (trained when a "
                    "listed method needs it), not a method to list"
                )
        if len(set(names)) != len(names):
            raise ValueError("methods lists a name twice")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        hr = self.data.hr_size
        if hr is not None and self.degrade.lr_size is not None and self.degrade.lr_size >= hr:
            raise ValueError(
                f"degrade.lr_size ({self.degrade.lr_size}) must be smaller than data.hr_size ({hr})"
            )
        factor = self.degrade.factor
        if hr is not None and factor is not None and hr // factor < MIN_LR_SIDE:
            raise ValueError(
                f"degrade.factor={factor} leaves a {hr // factor}-px LR side of data.hr_size="
                f"{hr}: at least {MIN_LR_SIDE} px; a smaller factor, or degrade.lr_size=N"
            )
        work = self.degrade.work_size
        if hr is not None and isinstance(work, int) and work > hr:
            raise ValueError(
                f"degrade.work_size ({work}) is larger than data.hr_size ({hr}): it would only "
                "upsample further what the HR image does not hold"
            )
        too_large = [s for s in self.degrade.lr_sizes or [] if hr is not None and s >= hr]
        if too_large:
            raise ValueError(
                f"degrade.lr_sizes: {too_large} not below data.hr_size ({hr}); every LR size "
                "must be smaller than the HR images"
            )
        too_large = [s for s in self.degrade.eval_sizes or [] if hr is not None and s >= hr]
        if too_large:
            raise ValueError(f"degrade.eval_sizes: {too_large} not below data.hr_size ({hr}): "
                             "each is an LR side to score at, smaller than the HR images")
        from horkd.methods import METHODS
        from horkd.tasks import TASKS

        if not TASKS.get(self.task).uses_logits:
            for name in self.methods:
                if METHODS.get(name).logits_only:
                    raise ValueError(
                        f"methods: {name} distils class logits, which task '{self.task}' does "
                        "not train; drop it (the embedding-based methods apply)"
                    )
        augment = self.data.augment
        crops = augment.crop_padding is None or augment.crop_padding > 0
        if self.distill.cache_reference and crops and augment.views is None:
            raise ValueError(
                "distill.cache_reference stores one reference output per image and flip; random "
                "crops (data.augment.crop_padding > 0) have too many to store: set "
                "data.augment.views (K fixed views per image, all cached), crop_padding to 0, or "
                "cache_reference to false"
            )
        if self.distill.assistant_input == "lr" and self.degrade.lr_sizes:
            raise ValueError(
                "distill.assistant_input: lr trains the assistant at one LR size; a student "
                "across degrade.lr_sizes would see it at its smallest size only: use "
                "degrade.lr_size, or assistant_input: hr"
            )
        angle = self.distill.loss.angle_weight  # null: every method's default is above 0
        needs_triplets = 3 in self.distill.loss.orders and (angle is None or angle > 0)
        for stage in STAGES:
            batch = getattr(self.train, stage).batch_size
            if needs_triplets and batch < 3:
                raise ValueError(
                    f"train.{stage}.batch_size is {batch}: the third order needs at least 3 "
                    "samples per batch (or drop 3 from distill.loss.orders)"
                )
        return self

    @model_validator(mode="after")
    def _unlabelled_images(self) -> ExperimentConfig:
        """A method that learns from the images the task loss has no labels for (the
        semi-supervised student) needs a few-label run, and class logits to pseudo-label."""
        from horkd.methods import METHODS
        from horkd.tasks import TASKS

        for name in self.methods:
            if not METHODS.get(name).unlabelled:
                continue
            if self.data.label_fraction is None:
                raise ValueError(
                    f"methods: {name} learns from the training images whose labels the task "
                    "loss does not see, and with every label there are none: set "
                    "data.label_fraction (a few-label run) or drop it (scratch is its "
                    "every-label counterpart)"
                )
            if not TASKS.get(self.task).uses_logits:
                raise ValueError(
                    f"methods: {name} pseudo-labels images with class logits, which task "
                    f"'{self.task}' does not train; drop it"
                )
        return self


def validation_problems(
    err: ValidationError, root: type[BaseModel] | None = None
) -> list[tuple[tuple[str, ...], str]]:
    """Each problem of ``err`` as (key path, message); an unknown key lists the allowed ones."""
    out = []
    for problem in err.errors():
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
            parent = _model_at(problem["loc"][:-1], root or ExperimentConfig)
            if parent is not None:
                message += f" (allowed: {', '.join(parent.model_fields)})"
        out.append((tuple(str(part) for part in problem["loc"]), message))
    return out


def problem_line(where: str, message: str) -> str:
    """``  where: message``; a problem of the whole (no key path) is its message alone."""
    return f"  {where}: {message}" if where else f"  {message}"


def format_validation_error(
    err: ValidationError, root: type[BaseModel] | None = None, what: str = "config"
) -> str:
    lines = [problem_line(".".join(loc), message)
             for loc, message in validation_problems(err, root)]
    return f"invalid {what}:\n" + "\n".join(lines)


def override_of(loc: tuple[str, ...], overrides: list[str]) -> str | None:
    """The last override that set ``loc`` or a key under or above it (None: none did)."""
    found = None
    for text in overrides:
        key = tuple(text.split("=", 1)[0].split("."))
        if key and (key[:len(loc)] == loc or loc[:len(key)] == key):
            found = text
    return found


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model class a location points into, to list its allowed keys."""
    model: type[BaseModel] = root
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return None
        if not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=3`` -> (["a", "b"], 3); the value is parsed as YAML so types come out right."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from None
    return key.split("."), value


def _copy_tree(node: Any) -> Any:
    """A deep copy that un-shares YAML aliases (``*stage``), so overriding one copy of an anchored
    section does not change the others (``copy.deepcopy`` would keep them shared)."""
    if isinstance(node, dict):
        return {key: _copy_tree(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_copy_tree(value) for value in node]
    return node


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    merged = _copy_tree(raw)
    sizes: dict[tuple[str, ...], str] = {}  # the LR side given by an override, either way
    for text in overrides:
        path, value = parse_override(text)
        other = _ONE_OF.get(tuple(path))
        if other is not None and value is not None:
            sizes[tuple(path)] = text
            given = sizes.get((*path[:-1], other))
            if given is not None:  # the rule's "an override wins" cannot pick between two
                raise ConfigError(f"{given} and {text} both set the LR side (degrade.lr_size in "
                                  "pixels, degrade.factor as HR side / factor): give one")
        node = merged
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
        if other is not None and value is not None and node.get(other) is not None:
            node[other] = None  # the size given last wins over the config's other way to say it
    return merged


# Two ways to give one setting: an override of either replaces the config's other (a config's
# `factor: 4` and `degrade.lr_size=8` on the command line mean an 8-px LR side).
_ONE_OF = MappingProxyType({("degrade", "lr_size"): "factor", ("degrade", "factor"): "lr_size"})


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    merged = apply_overrides(raw, overrides or [])
    try:
        return ExperimentConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err), validation_problems(err)) from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file that must hold a mapping; every way it can fail is one ConfigError line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys at the top level")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The experiment of a config file; an invalid one names the file, and a key an override
    set names that override."""
    try:
        return config_from_dict(read_yaml_mapping(path), overrides)
    except ConfigError as err:
        if not err.problems:  # the file is unreadable or an override is malformed: named already
            raise
        lines = []
        for loc, message in err.problems:
            given = override_of(loc, overrides or [])
            lines.append(problem_line(".".join(loc), message)
                         + (f" (the override {given})" if given else ""))
        raise ConfigError(f"invalid config {path}:\n" + "\n".join(lines), err.problems) \
            from None


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
