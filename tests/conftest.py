"""Shared fixtures: a tiny, fast experiment config on real data (scikit-learn's digits)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def tiny_config_dict(output_dir: Path, **changes: Any) -> dict[str, Any]:
    """Digits at 16px HR -> 4px LR, tiny CNNs, a few steps per stage: seconds, not minutes."""
    stage = {"epochs": 2, "batch_size": 32, "max_steps_per_epoch": 3, "optimizer": {"lr": 0.05}}
    cfg: dict[str, Any] = {
        "name": "tiny",
        "output_dir": str(output_dir),
        "seeds": [0],
        "device": "cpu",
        "data": {
            "dataset": "digits",
            "hr_size": 16,
            "val_fraction": 0.2,
            "train_subset": 300,
            "test_subset": 100,
            "augment": {"crop_padding": 1, "hflip": False},
        },
        "degrade": {"lr_size": 4, "eval_sizes": [8]},
        "teacher": {"arch": "cnn_small", "embed_dim": 32, "width": 8},
        "assistant": {"arch": "cnn_tiny", "embed_dim": 16, "width": 4},
        "student": {"arch": "cnn_tiny", "embed_dim": 16, "width": 4},
        "train": {"teacher": stage, "assistant": stage, "student": stage},
        "methods": ["teacher_lr", "scratch", "horkd"],
    }
    for key, value in changes.items():
        cfg[key] = value
    return cfg


def tiny_study_base(tmp_path: Path) -> dict[str, Any]:
    """A study's ``base``: the tiny config without what a study sets per run, one split, and
    assistant and student stages of two steps."""
    base = tiny_config_dict(tmp_path / "unused")
    for key in ("name", "output_dir", "seeds", "methods"):
        base.pop(key)
    base["data"] = {**base["data"], "split_seed": 0}
    stage = {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2}
    base["train"] = {"assistant": stage, "student": stage}
    return base


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> dict[str, Any]:
    return tiny_config_dict(tmp_path / "run")


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """One IDX file of unsigned bytes, gzipped as the datasets ship it unless ``compress=False``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def idx_tree(folder: Path, n_train: int = 40, n_test: int = 20, compress: bool = True):
    """Fashion-MNIST's four IDX files (random images, labels cycling 0-9) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays
