"""Fine-grained sets of cross-resolution metric learning: CUB-200-2011 and Stanford Cars.

Both are decoded lazily from their image files. For retrieval the task pools every image and
splits by class (first half train, second half test); for classification the official
train/test split is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision.datasets as tvd
from torch.utils.data import Dataset

from horkd.data.folder import IMAGENET_MEAN, IMAGENET_STD, _transform
from horkd.data.images import load_image, readable_splits
from horkd.data.registry import DATASETS, DataNotFoundError, DatasetInfo


class ImageList(Dataset):
    """(path, label) pairs decoded on access; ``targets`` lets splits read labels without I/O."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Any, channels: int = 3,
                 skip_bad: bool = False) -> None:
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.transform = transform
        self.channels = channels
        self.skip_bad = skip_bad  # read by the batch loader: skip files that fail mid-run
        self.lost: list[str] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(load_image(path, self.channels)), label


def _stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.25,))


def _read_table(path: Path) -> dict[int, str]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, value = line.split(maxsplit=1)
            rows[int(key)] = value.strip()
    return rows


@DATASETS.register("cub200")
def cub200(
    root: str | None,
    hr_size: int | None,
    download: bool = False,
    channels: int = 3,
    skip_bad_images: bool = False,
):
    """CUB-200-2011: ROOT/CUB_200_2011/{images.txt, image_class_labels.txt, images/,
    train_test_split.txt (optional)}; classes 1..200 become labels 0..199."""
    layout = "CUB_200_2011/images.txt, image_class_labels.txt and images/"
    if not root:
        raise DataNotFoundError(f"cub200: pass --data-root DIR holding {layout}")
    base = Path(root)
    base = base / "CUB_200_2011" if (base / "CUB_200_2011").is_dir() else base
    if not (base / "images.txt").is_file() or not (base / "image_class_labels.txt").is_file():
        raise DataNotFoundError(f"cub200: {base} lacks images.txt or image_class_labels.txt; "
                                f"expected {layout}")
    images = _read_table(base / "images.txt")
    classes = _read_table(base / "image_class_labels.txt")
    split_file = base / "train_test_split.txt"
    is_train = {k: v == "1" for k, v in _read_table(split_file).items()} if split_file.is_file() \
        else {k: True for k in images}
    size = hr_size or 224
    transform = _transform(size, channels)
    samples = {True: [], False: []}  # type: dict[bool, list[tuple[Path, int]]]
    for image_id, rel in sorted(images.items()):
        samples[is_train[image_id]].append((base / "images" / rel, int(classes[image_id]) - 1))
    (samples[True], samples[False]), skipped = readable_splits(
        samples[True], samples[False], skip=skip_bad_images, dataset="cub200"
    )
    num_classes = max(int(c) for c in classes.values())
    mean, std = _stats(channels)
    info = DatasetInfo("cub200", num_classes, channels, mean, std, size)
    info.skipped_images = skipped
    return (ImageList(samples[True], transform, channels, skip_bad_images),
            ImageList(samples[False], transform, channels, skip_bad_images), info)


class _Cars(tvd.StanfordCars):
    """torchvision's reader of the devkit annotations, with labels readable without decoding."""

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self._samples]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self._samples[index]
        image = load_image(path, getattr(self, "channels", 3))
        return (self.transform(image) if self.transform else image), label


@DATASETS.register("cars196")
def cars196(
    root: str | None,
    hr_size: int | None,
    download: bool = False,
    channels: int = 3,
    skip_bad_images: bool = False,
):
    """Stanford Cars in torchvision's layout: ROOT/stanford_cars/{devkit/cars_meta.mat,
    devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, cars_train/, cars_test/}."""
    layout = "stanford_cars/ with devkit/, cars_train/, cars_test/ (torchvision's layout)"
    if not root:
        raise DataNotFoundError(f"cars196: pass --data-root DIR holding {layout}")
    size = hr_size or 224
    transform = _transform(size, channels)
    try:
        train = _Cars(root, split="train", transform=transform)
        test = _Cars(root, split="test", transform=transform)
    except RuntimeError as exc:
        raise DataNotFoundError(f"cars196: {exc}; expected {layout}") from None
    for split in (train, test):
        split.channels, split.skip_bad, split.lost = channels, skip_bad_images, []
    (train._samples, test._samples), skipped = readable_splits(
        train._samples, test._samples, skip=skip_bad_images, dataset="cars196"
    )
    mean, std = _stats(channels)
    info = DatasetInfo("cars196", len(train.classes), channels, mean, std, size, train.classes)
    info.skipped_images = skipped
    return train, test, info
