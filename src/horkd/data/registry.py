"""Dataset registry: a name maps to ``builder(root, hr_size, download, **kw) -> (train, test, info)``."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset

from horkd.registry import Registry

DATASETS: Registry = Registry("dataset")


class DataNotFoundError(FileNotFoundError):
    """The data is not where we looked; the message says where we looked and how to get it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class DatasetInfo:
    """What a model needs to know about its data.

    ``mean``/``std`` are per-channel in [0, 1] units (the models normalise, the data does not);
    ``native_size`` is the side of the images the datasets yield: the dataset's own resolution,
    or the HR size when ``build_splits`` was asked to resize.
    """

    name: str
    num_classes: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    native_size: int
    class_names: list[str] | None = None
    skipped_images: list[str] = field(default_factory=list)  # unreadable files left out


@dataclass
class DataSplits:
    """Train, validation (carved from train) and test datasets of ``(image in [0,1], label)``."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    info: DatasetInfo
