"""Any ``train/`` + ``test/`` (or ``val/``) tree of class folders, decoded lazily; a single tree
of class folders gets a test split held out of it, each file by its own name
(:func:`horkd.data.held_out.test_share`).

Every file is checked once when the tree loads (:mod:`horkd.data.images`); the class folders of
the two splits must agree. A file that fails later (gone while the run reads it) raises a
:class:`BadImageError` naming it, which the batch loader turns into a skip when skipping is on.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torchvision.datasets as tvd
import torchvision.transforms as T

from horkd import distributed
from horkd.data.held_out import test_share
from horkd.data.images import IMAGE_EXTENSIONS, load_image, readable_splits, stored_channels
from horkd.data.registry import DATASETS, DataNotFoundError, DatasetInfo
from horkd.notes import note

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = ("ROOT/train/<class>/<images> and ROOT/test/<class>/<images> (or ROOT/val/), or "
          "ROOT/<class>/<images> with a test split held out")


def _transform(hr_size: int, channels: int) -> T.Compose:
    return T.Compose([T.Resize((hr_size, hr_size), antialias=True), T.ToTensor()])


class CheckedImageFolder(tvd.ImageFolder):
    """An ImageFolder whose files are decoded by :func:`load_image` in ``channels``; ``skip_bad``
    and ``lost`` (files that failed during the run, in the main process) are read by the batch
    loader."""

    def __init__(self, root: Path, channels: int, transform: Any, skip_bad: bool) -> None:
        super().__init__(
            str(root),
            transform=transform,
            loader=functools.partial(load_image, channels=channels),
            is_valid_file=_is_image,
        )
        self.skip_bad = skip_bad
        self.lost: list[str] = []


MAX_NATIVE_SIDE = 224  # photos of thousands of pixels are not trained on whole by default


def native_side(samples: list[tuple[str, int]], probes: int = 256, say: bool = True) -> int:
    """The HR side when ``data.hr_size`` is unset: the median of the training images' longer
    sides (read from the headers of up to ``probes`` files spread over the split), at most 224,
    so a folder of 32-px crops is not blown up to 224 and one of camera photos not kept whole."""
    from PIL import Image

    step = max(1, len(samples) // probes)
    sides = []
    for path, _ in samples[::step][:probes]:
        with Image.open(path) as image:
            sides.append(max(image.size))
    if not sides:
        raise DataNotFoundError("image_folder: no usable training image to take the HR side from")
    median = sorted(sides)[len(sides) // 2]
    side = min(median, MAX_NATIVE_SIDE)
    if say and distributed.is_main():
        note(f"image_folder: data.hr_size not set: HR side {side} px (the training images' "
             f"median longer side is {median}{'' if side == median else ', capped'}); set "
             "data.hr_size to choose another and to pin it")
    return side


def _is_image(path: str) -> bool:
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _split(base: Path, name: str, channels: int, transform: Any, skip: bool) -> Any:
    folder = base / name
    try:
        return CheckedImageFolder(folder, channels, transform, skip)
    except FileNotFoundError as exc:  # no class folder, or a class folder without images
        classes = [d for d in folder.iterdir() if d.is_dir()] if folder.is_dir() else []
        empty = sorted(d.name for d in classes
                       if not any(_is_image(str(p)) for p in d.rglob("*")))
        if 0 < len(empty) < len(classes):  # torchvision's words end "the classes X. ": say it
            # plainly (a folder with no image anywhere gets the layout instead)
            raise DataNotFoundError(
                f"image_folder: {folder}: class folder(s) {', '.join(empty)} hold no image file "
                f"(image files end in {', '.join(IMAGE_EXTENSIONS)}); add images or remove "
                "the folder") from None
        raise DataNotFoundError(
            f"image_folder: {folder}: {str(exc).strip().rstrip('.')} (expected {LAYOUT}; image "
            f"files end in {', '.join(IMAGE_EXTENSIONS)})"
        ) from None


def _held_out(base: Path, name: str, channels: int, skip: bool, fraction: float) -> tuple:
    """``base/name`` as train and test splits when the user made no test split: each file is held
    out by :func:`horkd.data.held_out.test_share` of its class and name, so about ``fraction``
    of every class is."""
    import copy

    train = _split(base, name, channels, None, skip)
    test = copy.copy(train)
    test.lost = []
    samples = train.samples
    held = [test_share(Path(os.path.relpath(path, train.root)).as_posix()) < fraction
            for path, _ in samples]
    for split, side in ((train, False), (test, True)):
        split.samples = split.imgs = [s for s, h in zip(samples, held, strict=True) if h == side]
        split.targets = [label for _, label in split.samples]
    if distributed.is_main():
        note(f"image_folder: {base / name} has no test split beside it: about {fraction:.0%} of "
             "each class's images are held out as the test split (data.test_fraction), each "
             "file by a hash of its class and name, so adding or removing images never moves "
             "another between train and test")
    return train, test



def _say_empty_classes(train: Any, test: Any, fraction: float) -> None:
    """A class the hash left with no test image (or nothing to train on) is named: legal, odd."""
    if not distributed.is_main():
        return
    for split, where in ((test, "no held-out test image"), (train, "no training image")):
        have = set(split.targets)
        missing = [c for i, c in enumerate(train.classes) if i not in have]
        if missing:
            note(f"image_folder: {len(missing)} class(es) got {where} ({', '.join(missing[:5])}"
                 f"{', ...' if len(missing) > 5 else ''}): each file is held out with chance "
                 f"data.test_fraction={fraction:g}, and these classes have few images; add "
                 "images, or make train/ and test/ folders")


@DATASETS.register("image_folder")
def image_folder(
    root: str | None,
    hr_size: int | None,
    download: bool = False,
    channels: int | None = None,
    skip_bad_images: bool = False,
    test_fraction: float = 0.2,
    say_defaults: bool = True,
):
    """ROOT/train/<class>/*.png|jpg and ROOT/test/<class>/... (``val/`` accepted for test);
    without a test split (ROOT/train/ alone, or ROOT/<class>/ directly) about ``test_fraction`` of
    each class is held out as one, each file by its own name
    (:func:`horkd.data.held_out.test_share`).
    ``channels`` unset: 1 for a folder of grey images, else 3. ``say_defaults=False``: the
    caller says the side and channels it took in its own words (``horkd study init``, in its
    options), so they are not said twice in two vocabularies."""
    if not root:
        raise DataNotFoundError(f"image_folder: no data root given; pass --data-root with {LAYOUT}")
    base = Path(root)
    if not base.is_dir():
        raise DataNotFoundError(f"image_folder: {base} is not a folder; expected {LAYOUT}")
    if channels is None:
        channels = stored_channels(str(base))
        if channels == 1 and say_defaults and distributed.is_main():
            note(f"image_folder: data.channels not set: the images in {base} are grey, so the "
                 "networks take 1 channel (data.channels=3 takes them as colour)")
    test_name = next((n for n in ("test", "val") if (base / n).is_dir()), None)
    if test_name is None:
        train_name = "train" if (base / "train").is_dir() else "."
        train, test = _held_out(base, train_name, channels, skip_bad_images, test_fraction)
        test_name = "the held-out"
    elif not (base / "train").is_dir():
        raise DataNotFoundError(f"image_folder: {base} has {test_name}/ but no train/; expected "
                                f"{LAYOUT}")
    else:
        train = _split(base, "train", channels, None, skip_bad_images)
        test = _split(base, test_name, channels, None, skip_bad_images)
    if len(train.classes) < 2:
        raise DataNotFoundError(
            f"image_folder: {train.root} holds {len(train.classes)} class folder "
            f"({', '.join(train.classes)}); recognition needs at least two"
        )
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DataNotFoundError(
            f"image_folder: train/ and {test_name}/ hold different class folders (only in "
            f"train/: {', '.join(only_train) or '-'}; only in {test_name}/: "
            f"{', '.join(only_test) or '-'}); every class needs a folder in both"
        )
    kept, skipped = readable_splits(
        train.samples, test.samples, skip=skip_bad_images, dataset="image_folder"
    )
    for split, samples in zip((train, test), kept, strict=True):
        split.samples = split.imgs = samples
        split.targets = [label for _, label in samples]
    if test_name == "the held-out":
        _say_empty_classes(train, test, test_fraction)
    size = hr_size or native_side(train.samples, say=say_defaults)
    train.transform = test.transform = _transform(size, channels)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.25,))
    info = DatasetInfo("image_folder", len(train.classes), channels, mean, std, size, train.classes)
    info.skipped_images = skipped
    return train, test, info
