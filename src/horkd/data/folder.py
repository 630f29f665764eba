"""Any ``train/`` + ``test/`` (or ``val/``) tree of class folders, decoded lazily by torchvision."""

from __future__ import annotations

from pathlib import Path

import torchvision.datasets as tvd
import torchvision.transforms as T

from horkd.data.image_check import open_rgb_or_gray, readable_splits
from horkd.data.registry import DATASETS, DataNotFoundError, DatasetInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _transform(hr_size: int, channels: int) -> T.Compose:
    steps = [T.Grayscale(1)] if channels == 1 else [T.Lambda(lambda im: im.convert("RGB"))]
    return T.Compose([*steps, T.Resize((hr_size, hr_size), antialias=True), T.ToTensor()])


@DATASETS.register("image_folder")
def image_folder(
    root: str | None,
    hr_size: int | None,
    download: bool = False,
    channels: int = 3,
    skip_bad_images: bool = False,
):
    """ROOT/train/<class>/*.png|jpg and ROOT/test/<class>/... (``val/`` accepted for test)."""
    layout = "ROOT/train/<class>/<images> and ROOT/test/<class>/<images> (or ROOT/val/)"
    if not root:
        raise DataNotFoundError(f"image_folder: no data root given; pass --data-root with {layout}")
    base = Path(root)
    train_dir = base / "train"
    test_dir = next((base / n for n in ("test", "val") if (base / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataNotFoundError(f"image_folder: {base} is missing train/ or test/; expected {layout}")
    size = hr_size or 224
    transform = _transform(size, channels)
    train = tvd.ImageFolder(str(train_dir), transform=transform, loader=open_rgb_or_gray)
    test = tvd.ImageFolder(str(test_dir), transform=transform, loader=open_rgb_or_gray)
    kept, skipped = readable_splits(
        train.samples, test.samples, skip=skip_bad_images, dataset="image_folder"
    )
    for split, samples in zip((train, test), kept, strict=True):
        split.samples = split.imgs = samples
        split.targets = [label for _, label in samples]
    if train.classes != test.classes:
        raise DataNotFoundError(
            f"image_folder: train/ and {test_dir.name}/ hold different class folders "
            f"({len(train.classes)} vs {len(test.classes)})"
        )
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.25,))
    info = DatasetInfo("image_folder", len(train.classes), channels, mean, std, size, train.classes)
    info.skipped_images = skipped
    return train, test, info
