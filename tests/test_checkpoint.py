"""Checkpoints round-trip through safetensors + JSON and refuse mismatched architectures."""

from __future__ import annotations

import pytest
import torch

from horkd.checkpoint import CheckpointError, build_from_checkpoint, load_meta, save_checkpoint
from horkd.models import build_model

RECIPE = {"arch": "cnn_tiny", "num_classes": 3, "in_channels": 1, "embed_dim": 8, "width": 4}


def test_round_trip(tmp_path):
    model = build_model(**RECIPE).eval()
    save_checkpoint(tmp_path / "m", model, {"model": RECIPE, "note": "x"})
    assert (tmp_path / "m.safetensors").exists() and (tmp_path / "m.json").exists()
    meta = load_meta(tmp_path / "m.safetensors")
    assert meta["note"] == "x" and meta["model"] == RECIPE and "horkd_version" in meta
    again = build_from_checkpoint(tmp_path / "m").eval()
    x = torch.rand(2, 1, 7, 7)
    assert torch.equal(model(x).logits, again(x).logits)


def test_saved_files_follow_the_umask_like_every_other_file(tmp_path):
    """A model others on the machine may read, as its metrics files are (not mkstemp's 0600)."""
    from horkd.checkpoint import umask

    save_checkpoint(tmp_path / "m", build_model(**RECIPE), {"model": RECIPE})
    (tmp_path / "plain.txt").write_text("written as any file is")
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert expected == 0o666 & ~umask()
    for name in ("m.safetensors", "m.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected


def test_mismatch_names_both(tmp_path):
    save_checkpoint(tmp_path / "m", build_model(**RECIPE), {"model": RECIPE})
    with pytest.raises(CheckpointError, match="arch='cnn_tiny'.*arch='resnet20'"):
        build_from_checkpoint(tmp_path / "m", expect={"arch": "resnet20"})
    with pytest.raises(CheckpointError, match="num_classes=3.*num_classes=10"):
        build_from_checkpoint(tmp_path / "m", expect={"num_classes": 10})


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        build_from_checkpoint(tmp_path / "nope")
    save_checkpoint(tmp_path / "m", build_model(**RECIPE), {"model": RECIPE})
    (tmp_path / "m.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_from_checkpoint(tmp_path / "m")
