"""Data builders on fixtures written in the real on-disk formats, splits, augmentation, loader."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import idx_tree
from PIL import Image

from horkd.data import (
    AugmentSpec,
    BatchLoader,
    DataNotFoundError,
    TensorImageDataset,
    augment_batch,
    build_splits,
    labels_of,
)
from horkd.data.idx import IdxFormatError, read_idx
from horkd.data.vision import DEBIAN_FASHION_MNIST


@pytest.mark.parametrize("layout", ["flat", "torchvision", "uncompressed"])
def test_fashion_mnist_idx_fixture(tmp_path, layout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    arrays = idx_tree(folder, compress=layout != "uncompressed")
    splits = build_splits("fashion_mnist", root=str(tmp_path), val_fraction=0.25, seed=0)
    assert splits.info.num_classes == 10 and splits.info.in_channels == 1
    assert len(splits.train) + len(splits.val) == 40 and len(splits.test) == 20
    image, label = splits.test[3]
    assert image.shape == (1, 28, 28) and label == 3
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][3].astype(np.float32)) / 255
    assert torch.allclose(image[0], expected)


def test_idx_resize_and_bad_magic(tmp_path):
    idx_tree(tmp_path)
    splits = build_splits("mnist", root=str(tmp_path), hr_size=14, val_fraction=0.25)
    assert splits.test[0][0].shape == (1, 14, 14) and splits.info.native_size == 14
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(IdxFormatError, match="magic"):
        read_idx(bad)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(labels, "wb") as handle:
        handle.write(bytes([0, 0, 0x42, 1]) + struct.pack(">I", 20) + bytes(20))
    with pytest.raises(IdxFormatError, match="t10k-labels.*magic"):
        build_splits("mnist", root=str(tmp_path))


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian dataset not installed")
def test_real_fashion_mnist():
    splits = build_splits("fashion_mnist", val_fraction=0.1)
    assert len(splits.train) + len(splits.val) == 60000 and len(splits.test) == 10000
    assert splits.info.class_names[0] == "T-shirt/top"


def test_missing_data_message(tmp_path, monkeypatch):
    monkeypatch.setattr("horkd.data.vision.DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError) as err:
        build_splits("fashion_mnist", root=str(tmp_path / "empty"))
    text = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in text and "--data-root" in text
    assert str(tmp_path / "empty") in text and str(tmp_path / "nowhere") in text


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "stl10"])
def test_missing_torchvision_format_message(tmp_path, name):
    with pytest.raises(DataNotFoundError) as err:
        build_splits(name, root=str(tmp_path))
    text = str(err.value)
    assert str(tmp_path) in text and "--data-root" in text and "http" in text
    with pytest.raises(DataNotFoundError, match="no data root"):
        build_splits(name)


def _cifar_tree(root: Path, hundred: bool) -> None:
    rng = np.random.default_rng(1)
    if hundred:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for name, n in (("train", 30), ("test", 10)):
            entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     "fine_labels": list(np.arange(n) % 100), "coarse_labels": [0] * n}
            (folder / name).write_bytes(pickle.dumps(entry))
        (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in
                                                                         range(100)]}))
        return
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8),
                 "labels": list(np.arange(6) % 10)}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in
                                                                        range(10)]}))


@pytest.mark.parametrize(("name", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickles(tmp_path, name, classes):
    _cifar_tree(tmp_path, hundred=name == "cifar100")
    splits = build_splits(name, root=str(tmp_path), val_fraction=0.2)
    assert splits.info.num_classes == classes and splits.info.in_channels == 3
    assert splits.test[0][0].shape == (3, 32, 32)
    assert splits.info.class_names[1] == "c1"


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    for split, n in (("train", 20), ("test", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)  # SVHN stores digit 0 as label 10
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    splits = build_splits("svhn", root=str(tmp_path), val_fraction=0.2)
    assert sorted(set(labels_of(splits.test).tolist())) == list(range(10))
    assert splits.test[0][0].shape == (3, 32, 32)


def test_stl10_binary(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for split, n in (("train", 20), ("test", 10)):
        rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    splits = build_splits("stl10", root=str(tmp_path), hr_size=32, val_fraction=0.2)
    assert splits.test[0][0].shape == (3, 32, 32) and splits.info.class_names[0] == "k0"


def _image_tree(root: Path, with_test: bool = True) -> None:
    for split in ("train", "test") if with_test else ("train",):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((20, 24, 3), 40 * i, dtype=np.uint8)).save(d / f"{i}.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder(tmp_path, channels):
    _image_tree(tmp_path)
    splits = build_splits("image_folder", root=str(tmp_path), hr_size=16, val_fraction=0.34,
                          channels=channels)
    assert splits.info.class_names == ["cat", "dog"] and splits.info.in_channels == channels
    assert splits.test[0][0].shape == (channels, 16, 16)
    batches = list(BatchLoader(splits.test, batch_size=4, shuffle=False))
    assert batches[0][0].shape == (4, channels, 16, 16)


def test_a_validation_split_too_small_to_hold_an_image_is_refused(tmp_path):
    _image_tree(tmp_path)  # 6 training images: 5% of them rounds to none
    with pytest.raises(ValueError, match="validation split is empty: data.val_fraction=0.05 of 6"):
        build_splits("image_folder", root=str(tmp_path), hr_size=16, val_fraction=0.05)


def test_image_folder_without_hr_size_takes_the_median_side_of_its_images(tmp_path, capsys):
    _image_tree(tmp_path)  # 20x24 images (H x W): the longer side is 24
    extra = tmp_path / "train" / "cat"
    for i, side in enumerate((30, 40)):  # two larger ones do not move the median
        Image.fromarray(np.zeros((side, side, 3), dtype=np.uint8)).save(extra / f"big{i}.png")
    splits = build_splits("image_folder", root=str(tmp_path), val_fraction=0.0)
    assert splits.info.native_size == 24
    assert splits.train[0][0].shape[1:] == splits.test[0][0].shape[1:] == (24, 24)
    assert "HR side 24 px" in capsys.readouterr().out


def test_the_native_side_of_large_photos_is_capped(tmp_path, capsys):
    from horkd.data.folder import MAX_NATIVE_SIDE, native_side

    paths = []
    for i, side in enumerate((300, 400, 500)):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.fromarray(np.zeros((side // 2, side, 3), dtype=np.uint8)).save(paths[-1])
    assert native_side([(p, 0) for p in paths]) == MAX_NATIVE_SIDE == 224
    assert "median longer side is 400, capped" in capsys.readouterr().out


@pytest.mark.parametrize("layout", ["train_only", "class_folders"])
def test_image_folder_without_a_test_split_holds_one_out(tmp_path, layout, capsys):
    """A user's folder as it usually is - one folder per class, no split made - gets a test
    split held out of it: each file by its class and name, the same files every run."""
    from horkd.data.held_out import test_share

    root = tmp_path / "images"
    for cls in ("cat", "dog", "bird"):
        d = root / ("train" if layout == "train_only" else ".") / cls
        d.mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((12, 12, 3), 20 * i, dtype=np.uint8)).save(d / f"{i}.png")
    a = build_splits("image_folder", root=str(root), hr_size=8, val_fraction=0.2,
                     test_fraction=0.3)
    assert "about 30% of each class's images are held out as the test split" in \
        capsys.readouterr().out
    assert a.info.class_names == ["bird", "cat", "dog"]
    test_files = {p for p, _ in a.test.samples}
    train_files = {p for p, _ in a.train.dataset.samples}
    assert not test_files & train_files and len(test_files | train_files) == 30
    tree = root / ("train" if layout == "train_only" else "")
    assert test_files == {str(p) for p in map(Path, test_files | train_files)
                          if test_share(p.relative_to(tree).as_posix()) < 0.3}
    assert 3 <= len(test_files) <= 15  # about 9
    b = build_splits("image_folder", root=str(root), hr_size=8, val_fraction=0.2,
                     test_fraction=0.3)
    assert [p for p, _ in b.test.samples] == [p for p, _ in a.test.samples]  # every run


def _held_out_files(root: Path, fraction: float = 0.25) -> tuple[set[str], set[str]]:
    splits = build_splits("image_folder", root=str(root), hr_size=8, val_fraction=0.2,
                          test_fraction=fraction, skip_bad_images=True)
    def names(samples):
        return {str(Path(p).relative_to(root)) for p, _ in samples}
    return names(splits.train.dataset.samples), names(splits.test.samples)


def test_adding_removing_or_breaking_files_moves_no_other_file_between_train_and_test(tmp_path):
    """Each file's side depends on itself alone: a folder that grows, shrinks or holds a broken
    file keeps every other file where it was (a draw over the file list reshuffles them)."""
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(24):
            Image.fromarray(np.full((6, 6, 3), 10 * i, dtype=np.uint8)).save(root / cls / f"{i}.png")
    train, test = _held_out_files(root)
    assert test and train
    for i in range(24, 30):  # more images of one class
        Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8)).save(root / "cat" / f"{i}.png")
    for i in range(3):  # some deleted
        (root / "dog" / f"{i}.png").unlink()
    (root / "cat" / "broken.png").write_bytes(b"not a png")  # left out by --skip-bad-images
    train2, test2 = _held_out_files(root)
    assert "cat/broken.png" not in train2 | test2
    kept = (train | test) & (train2 | test2)
    assert len(kept) == 45 and test & kept == test2 & kept and train & kept == train2 & kept
    more_train, more_test = _held_out_files(root, fraction=0.5)  # a larger share only adds
    assert test2 <= more_test and more_train <= train2


def test_a_class_the_hash_leaves_without_test_or_training_images_is_named(tmp_path, capsys):
    from horkd.data.held_out import test_share

    root = tmp_path / "images"
    names = [f"{i}.png" for i in range(200)]
    solo = next(n for n in names if test_share(f"solo/{n}") < 0.25)  # its one image is tested
    few = [n for n in names if test_share(f"few/{n}") >= 0.25][:2]  # both of these train
    for cls, files in (("many", names[:40]), ("solo", [solo]), ("few", few)):
        (root / cls).mkdir(parents=True)
        for name in files:
            Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8)).save(root / cls / name)
    build_splits("image_folder", root=str(root), hr_size=8, val_fraction=0.2, test_fraction=0.25)
    out = capsys.readouterr().out
    assert "1 class(es) got no held-out test image (few)" in out
    assert "1 class(es) got no training image (solo)" in out


def test_a_folder_split_by_name_is_part_of_the_data_digest(tmp_path):
    """Stages trained before the split was by name are trained again, not reused on a test
    split that moved; a folder with its own test/ keeps its digest."""
    from horkd.data.digest import data_digest, folder_digest

    (tmp_path / "held").mkdir()
    _image_tree(tmp_path / "split")
    _image_tree(tmp_path / "held" / "x", with_test=False)
    held = tmp_path / "held" / "x" / "train"
    assert data_digest("image_folder", str(held)) not in (None, folder_digest(held))
    split = tmp_path / "split"
    assert data_digest("image_folder", str(split)) == folder_digest(split)


def test_image_folder_with_test_but_no_train_is_refused(tmp_path):
    _image_tree(tmp_path)
    (tmp_path / "train").rename(tmp_path / "other")
    with pytest.raises(DataNotFoundError, match="has test/ but no train/"):
        build_splits("image_folder", root=str(tmp_path))


def test_digits_and_splits():
    a = build_splits("digits", val_fraction=0.2, seed=0, train_subset=500, test_subset=100)
    b = build_splits("digits", val_fraction=0.2, seed=0, train_subset=500, test_subset=100)
    c = build_splits("digits", val_fraction=0.2, seed=1, train_subset=500, test_subset=100)
    assert a.info.native_size == 8 and a.info.num_classes == 10
    train_idx, val_idx = set(a.train.indices), set(a.val.indices)
    assert not train_idx & val_idx
    assert len(train_idx) + len(val_idx) == 500
    assert set(labels_of(a.val).tolist()) == set(range(10))  # stratified
    assert a.val.indices == b.val.indices and a.val.indices != c.val.indices
    assert len(a.test) == 100
    # the test split never depends on the validation carve-out
    d = build_splits("digits", val_fraction=0.0, seed=0, train_subset=300, test_subset=100)
    assert d.val is None and d.test.indices == a.test.indices
    full = build_splits("digits", val_fraction=0.3, seed=1)
    assert len(full.test) == len(build_splits("digits", val_fraction=0.0).test)
    assert set(full.train.indices) | set(full.val.indices) == set(range(len(full.train.dataset)))


def test_augment_batch():
    x = torch.rand(64, 1, 8, 8)
    assert torch.equal(augment_batch(x, AugmentSpec()), x)
    spec = AugmentSpec(crop_padding=2, hflip=True)
    a = augment_batch(x, spec, torch.Generator().manual_seed(0))
    b = augment_batch(x, spec, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, spec, torch.Generator().manual_seed(1)))
    flipped = augment_batch(x, AugmentSpec(hflip=True), torch.Generator().manual_seed(0))
    is_flip = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(64)]
    assert 10 < sum(is_flip) < 54
    # a crop with padding p is the padded image at some offset within [0, 2p]
    cropped = augment_batch(x, AugmentSpec(crop_padding=1), torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(8):
        assert any(torch.equal(cropped[i], padded[i, :, dy:dy + 8, dx:dx + 8])
                   for dy in range(3) for dx in range(3))


def test_loader_covers_epoch_and_reshuffles():
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 2, 2).clone()
    base = TensorImageDataset(images, torch.arange(50) % 5)
    subset = torch.utils.data.Subset(base, list(range(10, 40)))
    loader = BatchLoader(subset, batch_size=7, shuffle=True, seed=0)
    seen = []
    for x, y, idx in loader:
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), idx + 10)  # index -> image
        assert torch.equal(y, (idx + 10) % 5)
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(30)) and len(loader) == 5
    first = [i.tolist() for _, _, i in loader]
    loader.set_epoch(1)
    assert [i.tolist() for _, _, i in loader] != first
    dropped = BatchLoader(subset, batch_size=7, shuffle=True, drop_last=True)
    assert len(dropped) == 4 and all(len(b[2]) == 7 for b in dropped)


def test_loader_fast_path_skips_getitem(monkeypatch):
    base = TensorImageDataset(torch.zeros(12, 1, 2, 2, dtype=torch.uint8), torch.arange(12) % 3)
    nested = torch.utils.data.Subset(torch.utils.data.Subset(base, list(range(2, 12))), [0, 5, 9])

    def refuse(self, index):
        raise AssertionError("per-sample __getitem__ on an in-memory dataset")

    monkeypatch.setattr(TensorImageDataset, "__getitem__", refuse)
    for dataset, n in ((base, 12), (nested, 3)):
        batches = list(BatchLoader(dataset, batch_size=5, shuffle=True))
        assert sum(len(b[2]) for b in batches) == n
    labels = torch.cat([y for _, y, _ in BatchLoader(nested, batch_size=2, shuffle=False)])
    assert labels.tolist() == [2 % 3, 7 % 3, 11 % 3]


class _Plain(torch.utils.data.Dataset):
    """Not an in-memory tensor dataset: served by a standard DataLoader."""

    def __len__(self):
        return 11

    def __getitem__(self, index):
        return torch.full((1, 2, 2), float(index)), index % 4


def test_loader_generic_path_indices_and_epochs():
    loader = BatchLoader(_Plain(), batch_size=4, shuffle=True, seed=3)
    seen = []
    for x, y, idx in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and idx.dtype == torch.int64
        assert torch.equal(x[:, 0, 0, 0].long(), idx) and torch.equal(y, idx % 4)
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(11)) and len(loader) == 3
    loader.set_epoch(2)
    assert [i for _, _, b in loader for i in b.tolist()] != seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_augment_cpu_generator_on_gpu_batch():
    x = torch.rand(16, 3, 8, 8)
    spec = AugmentSpec(crop_padding=2, hflip=True)
    on_cpu = augment_batch(x, spec, torch.Generator().manual_seed(0))
    on_gpu = augment_batch(x.cuda(), spec, torch.Generator().manual_seed(0))
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), on_cpu)


def _images(split) -> set[bytes]:
    return {split[i][0].numpy().tobytes() for i in range(len(split))}


def test_val_from_subset_keeps_a_teacher_off_its_students_validation_images():
    student = build_splits("digits", val_fraction=0.2, seed=3, train_subset=500)
    teacher = build_splits("digits", val_fraction=0.2, seed=3, val_from_subset=500)
    held = _images(student.val)
    assert _images(teacher.val) == held  # the teacher is validated where the students are
    assert not _images(teacher.train) & held  # ... and never trained there
    assert len(teacher.train) + len(teacher.val) == len(teacher.train.dataset)
    assert [int(y) for y in labels_of(teacher.val)] == [int(y) for y in labels_of(student.val)]


def test_val_from_subset_with_train_subset_is_refused():
    from horkd.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="leave data.train_subset unset"):
        config_from_dict({"data": {"dataset": "digits", "train_subset": 100,
                                   "val_from_subset": 200}})
