"""Builders for the standard small vision datasets, all held in memory as uint8 tensors.

torchvision reads the on-disk formats (CIFAR pickles, SVHN .mat, STL-10 binaries). Its md5
checks are relaxed to "the files exist": users often hold re-packed copies, and the tests use
small fixtures in the real formats; structure is still checked when the files are parsed.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torchvision.datasets as tvd

from horkd.data.digest import DATA_FILES
from horkd.data.idx import read_idx
from horkd.data.memory import TensorImageDataset, channel_stats, resize_uint8
from horkd.data.registry import DATASETS, DataNotFoundError, DatasetInfo

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = MappingProxyType({
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
})
SOURCES = MappingProxyType({
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist (the four *-ubyte.gz files)",
    "mnist": "https://yann.lecun.com/exdb/mnist/ or a mirror (the four *-ubyte.gz files)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extracted into DIR",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extracted into DIR",
    "svhn": "http://ufldl.stanford.edu/housenumbers/ (train_32x32.mat, test_32x32.mat) into DIR",
    "stl10": "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz, extracted into DIR",
})
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _find_idx(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, name in IDX_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _idx_candidates(root: str | None, torchvision_folder: str, system: Path | None) -> list[Path]:
    """An explicit root is the only place looked in (a mistyped --data-root must not silently
    fall back to another copy); without one, the distribution's system copy."""
    if root:
        return [Path(root), Path(root) / torchvision_folder / "raw"]
    return [system] if system is not None else []


def _tensor_split(
    images: np.ndarray, labels: np.ndarray, hr_size: int | None
) -> TensorImageDataset:
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if hr_size is not None:
        x = resize_uint8(x, hr_size)
    return TensorImageDataset(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def _pair(
    name: str,
    train: TensorImageDataset,
    test: TensorImageDataset,
    num_classes: int,
    native: int,
    class_names: list[str] | None = None,
) -> tuple[TensorImageDataset, TensorImageDataset, DatasetInfo]:
    mean, std = channel_stats(train.images)
    info = DatasetInfo(
        name, num_classes, train.images.shape[1], mean, std, native, class_names
    )
    return train, test, info


def _idx_dataset(
    name: str,
    torchvision_cls: type,
    torchvision_folder: str,
    system: Path | None,
    root: str | None,
    hr_size: int | None,
    download: bool,
    class_names: list[str] | None,
    apt_package: str | None,
) -> tuple[TensorImageDataset, TensorImageDataset, DatasetInfo]:
    places = _idx_candidates(root, torchvision_folder, system)
    files = next((f for p in places if (f := _find_idx(p)) is not None), None)
    if files is None and download:
        target = Path(root or "data")
        torchvision_cls(str(target), train=True, download=True)
        torchvision_cls(str(target), train=False, download=True)
        files = _find_idx(target / torchvision_folder / "raw")
    if files is None:
        hints = []
        if apt_package:
            hints.append(f"apt-get install {apt_package} (puts the files in {system})")
        hints.append("pass --data-root DIR holding the four IDX files (.gz or not)")
        hints.append(f"they come from {SOURCES[name]}")
        hints.append("or set data.download=true where a network is available")
        looked = ", ".join(str(p) for p in places) or "(no root given)"
        raise DataNotFoundError(
            f"{name}: IDX files not found; looked in {looked}. To get them: " + "; ".join(hints)
        )
    train = _tensor_split(read_idx(files["train_images"]), read_idx(files["train_labels"]), hr_size)
    test = _tensor_split(read_idx(files["test_images"]), read_idx(files["test_labels"]), hr_size)
    return _pair(name, train, test, 10, 28, class_names)


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: str | None, hr_size: int | None, download: bool = False):
    """Zalando's Fashion-MNIST: 60k/10k greyscale 28x28, 10 classes."""
    return _idx_dataset(
        "fashion_mnist", tvd.FashionMNIST, "FashionMNIST", DEBIAN_FASHION_MNIST, root, hr_size,
        download, list(FASHION_CLASSES), "dataset-fashion-mnist",
    )


@DATASETS.register("mnist")
def mnist(root: str | None, hr_size: int | None, download: bool = False):
    """MNIST digits in their IDX files: 60k/10k greyscale 28x28."""
    return _idx_dataset(
        "mnist", tvd.MNIST, "MNIST", None, root, hr_size, download,
        [str(i) for i in range(10)], None,
    )


def _where_to_get(name: str, layout: str) -> str:
    return (
        f"pass --data-root DIR holding {layout} (from {SOURCES[name]}), "
        "or set data.download=true where a network is available"
    )


def _require_root(name: str, root: str | None, layout: str) -> str:
    if not root:
        raise DataNotFoundError(f"{name}: no data root given; {_where_to_get(name, layout)}")
    return root


def _torchvision_call(name: str, layout: str, root: str, build):  # type: ignore[no-untyped-def]
    """torchvision says "Dataset not found or corrupted"; say where we looked and how to fix it."""
    try:
        return build()
    except RuntimeError as exc:
        if "not found" in str(exc).lower() or "corrupted" in str(exc).lower():
            raise DataNotFoundError(
                f"{name}: files not found in {root}; {_where_to_get(name, layout)}"
            ) from None
        raise


class _CIFAR10(tvd.CIFAR10):
    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / f).is_file() for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        if not os.path.isfile(path):
            raise RuntimeError(f"Dataset metadata file not found: {path}")
        with open(path, "rb") as handle:
            self.classes = pickle.load(handle, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _CIFAR100(_CIFAR10, tvd.CIFAR100):
    base_folder = tvd.CIFAR100.base_folder
    train_list = tvd.CIFAR100.train_list
    test_list = tvd.CIFAR100.test_list
    meta = tvd.CIFAR100.meta


def _cifar(name: str, cls: type, num_classes: int, layout: str, root, hr_size, download):  # type: ignore[no-untyped-def]
    root = _require_root(name, root, layout) if not download else (root or "data")
    splits = [
        _torchvision_call(name, layout, root, lambda t=t: cls(root, train=t, download=download))
        for t in (True, False)
    ]
    tensors = [
        _tensor_split(s.data.transpose(0, 3, 1, 2), np.asarray(s.targets), hr_size) for s in splits
    ]
    return _pair(name, tensors[0], tensors[1], num_classes, 32, list(splits[0].classes))


@DATASETS.register("cifar10")
def cifar10(root: str | None, hr_size: int | None, download: bool = False):
    """CIFAR-10 in torchvision's layout: ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}."""
    return _cifar("cifar10", _CIFAR10, 10, "cifar-10-batches-py/", root, hr_size, download)


@DATASETS.register("cifar100")
def cifar100(root: str | None, hr_size: int | None, download: bool = False):
    """CIFAR-100 (fine labels) in torchvision's layout: ROOT/cifar-100-python/{train,test,meta}."""
    return _cifar("cifar100", _CIFAR100, 100, "cifar-100-python/", root, hr_size, download)


class _SVHN(tvd.SVHN):
    def _check_integrity(self) -> bool:
        return (Path(self.root) / self.filename).is_file()


def _split_datasets(name: str, cls: type, layout: str, root, hr_size, download):  # type: ignore[no-untyped-def]
    """The train and test splits of a torchvision class taking ``split=``, in memory."""
    root = _require_root(name, root, layout) if not download else (root or "data")
    splits = [
        _torchvision_call(name, layout, root, lambda s=s: cls(root, split=s, download=download))
        for s in ("train", "test")
    ]
    train, test = (_tensor_split(s.data, s.labels, hr_size) for s in splits)
    return train, test, getattr(splits[0], "classes", None)


@DATASETS.register("svhn")
def svhn(root: str | None, hr_size: int | None, download: bool = False):
    """SVHN cropped digits: ROOT/{train,test}_32x32.mat (label 10 means digit 0)."""
    layout = "train_32x32.mat and test_32x32.mat"
    train, test, _ = _split_datasets("svhn", _SVHN, layout, root, hr_size, download)
    return _pair("svhn", train, test, 10, 32, [str(i) for i in range(10)])


class _STL10(tvd.STL10):
    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        names = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
        return all((folder / n).is_file() for n in names)


@DATASETS.register("stl10")
def stl10(root: str | None, hr_size: int | None, download: bool = False):
    """STL-10 labelled splits: ROOT/stl10_binary/{train,test}_{X,y}.bin (96x96 RGB)."""
    layout = "stl10_binary/{train,test}_{X,y}.bin"
    train, test, names = _split_datasets("stl10", _STL10, layout, root, hr_size, download)
    return _pair("stl10", train, test, 10, 96, names)


def _idx_files(torchvision_folder: str, system: Path | None) -> Callable[[str | None], list[Path]]:
    """The four IDX files the builder would read, for the data digest (none: an empty list)."""

    def files(root: str | None) -> list[Path]:
        for place in _idx_candidates(root, torchvision_folder, system):
            found = _find_idx(place) if place.is_dir() else None
            if found:
                return sorted(found.values())
        return []

    return files


DATA_FILES.register("fashion_mnist")(_idx_files("FashionMNIST", DEBIAN_FASHION_MNIST))
DATA_FILES.register("mnist")(_idx_files("MNIST", None))


@DATA_FILES.register("digits")
def _bundled_digits(root: str | None) -> list[Path]:
    import sklearn

    found = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
    return [found] if found.is_file() else []


@DATASETS.register("digits")
def digits(root: str | None, hr_size: int | None, download: bool = False):
    """scikit-learn's bundled 8x8 digits (1797 images): tiny real data for tests and smoke runs.

    A fixed, stratified 80/20 train/test split (seed 0), since the set ships as one array.
    """
    from sklearn.datasets import load_digits

    from horkd.data.split import stratified_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    train = _tensor_split(images[train_idx.numpy()], bunch.target[train_idx.numpy()], hr_size)
    test = _tensor_split(images[test_idx.numpy()], bunch.target[test_idx.numpy()], hr_size)
    return _pair("digits", train, test, 10, 8, [str(i) for i in range(10)])
