"""One seed of one experiment as a frozen value: config, device, splits, sizes, input functions.

This is all a task or an evaluation sees. It owns no files and trains nothing; the stage runner
and the networks (``stages.py``, ``networks.py``) do that on top of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from horkd import distributed
from horkd.config import MIN_LR_SIDE, DegradeConfig, ExperimentConfig
from horkd.data import AugmentSpec, DatasetInfo, DataSplits, build_splits, labels_of
from horkd.data.augment import FixedViews, FlipViews, padding_for
from horkd.data.split import labeled_mask
from horkd.degrade import DegradeSpec, resolve_lr_size
from horkd.evaluate import InputFn, identity, lr_input_fn
from horkd.methods.base import View
from horkd.tasks import TASKS, Task


def degrade_spec(d: DegradeConfig, lr_size: int, upsample: bool) -> DegradeSpec:
    """The configured degradation at a given LR size (evaluation sweeps change only the size)."""
    return DegradeSpec(
        lr_size=lr_size,
        interpolation=d.interpolation,
        antialias=d.antialias,
        blur_sigma=d.blur_sigma,
        noise_std=d.noise_std,
        jpeg_quality=d.jpeg_quality,
        upsample=upsample,
    )


def run_sides(hr_size: int | None, native_size: int, degrade: DegradeConfig) -> tuple[int, int]:
    """The HR and LR sides of a run: ``data.hr_size``, else the data's own side (an image
    folder's: the median longer side of its training images, at most 224); ``degrade.lr_size``,
    else the HR side over ``degrade.factor`` (4 unless set). ``horkd run`` and ``horkd study
    init`` both take their sides from here, so one folder gets the same sides from either."""
    hr = hr_size or native_size
    where = (f"data.hr_size={hr}" if hr_size else
             f"the HR side {hr} px, the images' own (data.hr_size sets another)")
    if degrade.lr_size is not None and degrade.lr_size >= hr:
        raise ValueError(f"degrade.lr_size={degrade.lr_size} is not below {where}: a smaller "
                         "degrade.lr_size or a larger data.hr_size")
    lr = resolve_lr_size(hr, degrade.lr_size, degrade.factor)
    if lr < MIN_LR_SIDE:
        raise ValueError(f"degrade.factor={degrade.factor} leaves a {lr}-px LR side of {where}: "
                         f"at least {MIN_LR_SIDE} px; a smaller factor, or degrade.lr_size=N")
    return hr, lr


ODD_HR_SIDE = 16  # below: a teacher with little to see (Fashion-MNIST's side is 28)
ODD_LR_SIDE = 4  # below: a few pixels per image


def odd_sides(hr_size: int, lr_size: int, hr_setting: str = "data.hr_size",
              lr_setting: str = "degrade.lr_size or degrade.factor") -> list[str]:
    """Warnings for sides that are legal but unlikely to be meant (a typo, a factor too large
    for small images): a run on them trains, but on little of each image. The settings to check
    are named as the command the user ran takes them (``--hr-size`` for ``horkd study init``)."""
    odd = []
    if hr_size < ODD_HR_SIDE:
        odd.append(f"warning: the HR side is {hr_size} px, very small for a teacher (below "
                   f"{ODD_HR_SIDE}; Fashion-MNIST's is 28): check {hr_setting}")
    if lr_size < ODD_LR_SIDE:
        odd.append(f"warning: the LR side is {lr_size} px, {lr_size * lr_size} pixels per image "
                   f"(below {ODD_LR_SIDE}): little is left to recognise; check {lr_setting}")
    return odd


def augment_spec(cfg: ExperimentConfig, hr_size: int) -> AugmentSpec:
    """The configured augmentation; ``crop_padding: null`` scaled to the HR side."""
    a = cfg.data.augment
    padding = padding_for(hr_size) if a.crop_padding is None else a.crop_padding
    return AugmentSpec(padding, a.hflip)


def curve_sides(hr_size: int, lr_size: int) -> list[int]:
    """``report.resolution_sizes: auto``: the HR side, half of it, the LR side and half of that
    (the sizes ``horkd study init`` writes for the same folder)."""
    return sorted({hr_size, max(lr_size, hr_size // 2), lr_size, max(1, lr_size // 2)},
                  reverse=True)


def resolve_device(name: str) -> torch.device:
    """The configured device; under torchrun each process takes its own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available")
    return distributed.local_device(torch.device(name))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@dataclass(frozen=True)
class RunContext:
    """Everything fixed about one seed of a run before anything trains."""

    cfg: ExperimentConfig
    seed: int
    device: torch.device
    splits: DataSplits
    task: Task
    hr_size: int
    lr_size: int
    upsampled: bool  # the student takes LR re-upsampled to the HR size
    lr_sizes: tuple[int, ...]  # the LR sizes the student trains at (one, or a range)
    work_size: int | None  # the side such a student computes at (None: each size its own)
    labeled_indices: Tensor | None  # few-label runs: the training images whose labels count
    views: FixedViews | None = None  # K fixed augmentations per training image (if configured)

    @property
    def info(self) -> DatasetInfo:
        return self.splits.info

    @property
    def in_channels(self) -> int:
        return self.splits.info.in_channels

    @property
    def augment(self) -> AugmentSpec:
        return augment_spec(self.cfg, self.hr_size)

    def cache_views(self) -> FixedViews | FlipViews:
        """The augmentations a reference cache must hold: the fixed views, or plain (and
        mirrored when flips are on)."""
        return self.views if self.views is not None else FlipViews(self.augment.hflip)

    def degrade_spec(self, lr_size: int, upsample: bool) -> DegradeSpec:
        return degrade_spec(self.cfg.degrade, lr_size, upsample)

    @property
    def curve_sizes(self) -> tuple[int, ...]:
        """Input sizes of the accuracy-vs-resolution curve: ``report.resolution_sizes`` when
        set; unset, a student trained across sizes is scored over its trained sizes and the HR
        side (the range is its point; one score at its smallest size says little). Sizes above
        the HR side are left out: ``data.hr_size=32`` on a config whose curve starts at 64 would
        otherwise score upsampled images as a resolution."""
        configured = self.cfg.report.resolution_sizes
        if configured == "auto":
            return tuple(curve_sides(self.hr_size, self.lr_size))
        if configured is not None:
            return tuple(s for s in configured if s <= self.hr_size)
        if len(self.lr_sizes) > 1:
            return tuple(sorted({*self.lr_sizes, self.hr_size}, reverse=True))
        return ()

    def input_side(self, size: int) -> int:
        """The side a native student takes an image degraded to ``size``: the size itself inside
        its trained range, the nearest trained size outside it (a single-size student: always
        its own LR size)."""
        return min(max(size, self.lr_sizes[0]), self.lr_sizes[-1])

    def inputs(self, view: View, size: int | None = None, upsample: bool | None = None) -> InputFn:
        """HR test images turned into a network's input: ``hr`` as they are; ``lr`` degraded to
        ``size`` (default: the run's LR size), re-upsampled to HR when ``upsample`` (default: as
        the run's students take LR), else resized to the LR size a native student takes."""
        if view == "hr":
            return identity
        size = size or self.lr_size
        upsample = self.upsampled if upsample is None else upsample
        spec = self.degrade_spec(size, upsample)
        input_size = None if upsample else self.input_side(size)
        return lr_input_fn(self.hr_size, spec, self.device, self.seed, input_size)


def load_splits(cfg: ExperimentConfig, seed: int) -> DataSplits:
    """The dataset and its splits; under torchrun a download happens on rank 0 alone first."""
    if not (cfg.data.download and distributed.active()):
        return _build_splits(cfg, seed)
    splits = _build_splits(cfg, seed) if distributed.is_main() else None
    distributed.barrier()
    return splits if splits is not None else _build_splits(cfg, seed)


def _build_splits(cfg: ExperimentConfig, seed: int) -> DataSplits:
    d = cfg.data
    return build_splits(
        d.dataset,
        root=d.root,
        hr_size=d.hr_size,
        val_fraction=d.val_fraction,
        seed=seed if d.split_seed is None else d.split_seed,
        download=d.download,
        train_subset=d.train_subset,
        test_subset=d.test_subset,
        val_from_subset=d.val_from_subset,
        val_size=d.val_size,
        split_file=d.split_file,
        part=d.part,
        test_part=d.test_part,
        test_fraction=d.test_fraction,
        glyph_renders=d.glyph_renders,
        glyph_min_families=d.glyph_min_families,
        glyph_fonts=d.glyph_fonts,
        skip_bad_images=d.skip_bad_images,
        **({"channels": d.channels} if d.channels else {}),
    )


def build_context(
    cfg: ExperimentConfig, seed: int, splits: DataSplits | None = None
) -> RunContext:
    """The context of ``seed``: the task prepares its splits (a class split for retrieval), the
    sizes are resolved and checked, the labelled subset of a few-label run is drawn."""
    task = TASKS.get(cfg.task)()
    prepared = task.prepare(splits if splits is not None else load_splits(cfg, seed), cfg, seed)
    hr_size, lr_size = run_sides(cfg.data.hr_size, prepared.info.native_size, cfg.degrade)
    lr_sizes = tuple(cfg.degrade.lr_sizes or [lr_size])
    for size in lr_sizes:
        resolve_lr_size(hr_size, size)  # each below the HR size of the data
    split_seed = seed if cfg.data.split_seed is None else cfg.data.split_seed
    labeled = None
    if cfg.data.label_fraction is not None:
        mask = labeled_mask(labels_of(prepared.train), cfg.data.label_fraction, split_seed)
        labeled = torch.nonzero(mask).flatten()
    views = None
    if cfg.data.augment.views is not None:
        spec = augment_spec(cfg, hr_size)
        views = FixedViews(len(prepared.train), cfg.data.augment.views, spec, seed=split_seed)
    return RunContext(
        cfg=cfg,
        seed=seed,
        device=resolve_device(cfg.device),
        splits=prepared,
        task=task,
        hr_size=hr_size,
        lr_size=lr_size,
        upsampled=cfg.degrade.student_input == "upsampled",
        lr_sizes=lr_sizes,
        work_size=cfg.degrade.resolved_work_size(hr_size),
        labeled_indices=labeled,
        views=views,
    )
