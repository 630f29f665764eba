"""Dataset registry: a name maps to ``builder(root, hr_size, download, **kw) -> (train, test, info)``."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset

from horkd.registry import Registry

#: Dataset builders by name (``fashion_mnist``, ``cifar10``, ``image_folder``, ...). A builder is
#: ``builder(root, hr_size, download, **kw) -> (train, test, info)``: ``root`` is the data folder
#: (``None``: where the system keeps it, for the datasets it has a place for), ``hr_size`` the
#: side in pixels to resize images to (``None``: their own), ``download`` whether it may fetch
#: the data; ``info`` is a :class:`DatasetInfo`. A builder raises :class:`DataNotFoundError`
#: when the data is missing. ``horkd.data.build_splits`` calls it by name.
DATASETS: Registry = Registry("dataset", lazy={
    **dict.fromkeys(("fashion_mnist", "mnist", "cifar10", "cifar100", "svhn", "stl10", "digits"),
                    "horkd.data.vision"),
    "cub200": "horkd.data.fine_grained", "cars196": "horkd.data.fine_grained",
    "image_folder": "horkd.data.folder", "glyphs": "horkd.data.glyphs",
})


class DataNotFoundError(FileNotFoundError):
    """The data is not where we looked; the message says where we looked and how to get it.

    A :class:`FileNotFoundError`, so callers that catch that see it too.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class DatasetInfo:
    """What a model needs to know about its data.

    ``mean``/``std`` are per-channel in [0, 1] units (the models normalise, the data does not);
    ``native_size`` is the side of the images the datasets yield: the dataset's own resolution,
    or the HR size when ``build_splits`` was asked to resize.

    Attributes:
        name: The dataset's registry name.
        num_classes: Number of classes K; labels are ``0 .. K - 1``.
        in_channels: Channels of the images (1 grey, 3 RGB).
        mean: Per-channel mean, in [0, 1] pixel units.
        std: Per-channel standard deviation, in [0, 1] pixel units.
        native_size: Side of the square images the datasets yield, in pixels.
        class_names: Names by label index; ``None`` when the data names none.
        skipped_images: Paths of unreadable files that were left out.
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
    """Train, validation (carved from train) and test datasets of ``(image in [0,1], label)``.

    Each item is ``(image [C, S, S] float in [0, 1], label int)``.

    Attributes:
        train: What trains.
        val: What choices are made on (early stopping, the assistant's guard); ``None`` when
            no validation split was asked for.
        test: What is reported; never used for choices.
        info: What a model needs to know about the data.
    """

    train: Dataset
    val: Dataset | None
    test: Dataset
    info: DatasetInfo
