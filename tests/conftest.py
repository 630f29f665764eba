"""Shared fixtures: a tiny, fast experiment config on real data (scikit-learn's digits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> dict[str, Any]:
    return tiny_config_dict(tmp_path / "run")
