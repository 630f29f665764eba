"""Nothing stale: a finished stage, or a study record, stands only for the data it learnt from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from horkd.cli import main
from horkd.data.digest import data_digest
from horkd.study.records import record_key


def _folder(root: Path, per_class: int, start: int = 0) -> None:
    rng = np.random.default_rng(start)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(start, start + per_class):
                pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_images_added_to_a_folder_retrain_its_teacher_on_the_same_command(tmp_path, tiny_cfg,
                                                                          capsys):
    images = tmp_path / "images"
    _folder(images, 8)
    raw = {**tiny_cfg, "methods": ["teacher_lr"], "degrade": {"lr_size": 4},
           "data": {"dataset": "image_folder", "root": str(images), "hr_size": 12,
                    "val_fraction": 0.25}}
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(raw))
    command = ["run", str(config), "--no-progress"]
    done = Path(tiny_cfg["output_dir"]) / "seed0" / "teacher" / "done.json"

    assert main(command) == 0
    first = json.loads(done.read_text())
    assert main(command) == 0  # the same data: the teacher is reused
    assert json.loads(done.read_text()) == first
    capsys.readouterr()

    for label in ("cat", "dog"):  # two images added
        Image.new("RGB", (12, 12), (40, 90, 200)).save(images / "train" / label / "new.png")
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "[teacher] its data changed since it was trained" in out
    again = json.loads(done.read_text())
    assert again["fingerprint"] != first["fingerprint"]
    assert again["data_files"] != first["data_files"]


def test_a_replaced_image_changes_the_digest_and_the_record_key(tmp_path):
    images = tmp_path / "images"
    _folder(images, 3)
    config = {"data": {"dataset": "image_folder", "root": str(images)}, "methods": ["scratch"]}
    before = data_digest("image_folder", str(images))
    key = record_key(config, "teacher-fp", 0, "final", True)
    assert data_digest("image_folder", str(images)) == before  # stable while nothing changes
    victim = images / "train" / "cat" / "0.png"
    Image.new("RGB", (12, 12), (1, 2, 3)).save(victim)
    os.utime(victim, ns=(1, 1))  # a replacement with another time; its size may differ too
    assert data_digest("image_folder", str(images)) != before
    assert record_key(config, "teacher-fp", 0, "final", True) != key
    victim.unlink()  # removed
    assert data_digest("image_folder", str(images)) not in (before, None)


def test_a_system_dataset_is_digested_by_content(tmp_path):
    """scikit-learn's digits: the same bytes give the same digest on every machine."""
    first = data_digest("digits", None)
    assert first is not None and first == data_digest("digits", None)
    assert data_digest("no_such_plugin_dataset", None) is None


def test_idx_files_are_digested_by_their_images_compressed_or_not(tmp_path):
    """The same Fashion-MNIST from Debian, torchvision's download or Zalando's .gz files: one
    digest, so a committed study record holds wherever the images are the same."""
    from conftest import idx_tree

    idx_tree(tmp_path / "gz", compress=True)
    idx_tree(tmp_path / "raw", compress=False)
    packed = data_digest("fashion_mnist", str(tmp_path / "gz"))
    assert packed is not None
    assert packed == data_digest("fashion_mnist", str(tmp_path / "raw"))
    assert packed != data_digest("image_folder", str(tmp_path / "gz"))  # a folder: by file stats
