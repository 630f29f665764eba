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


RECORDS = Path(__file__).resolve().parents[1] / "docs" / "results" / "runs"


def test_every_committed_record_says_which_numerics_measured_it():
    """The page marks a row measured by an older NUMERICS_VERSION; a record without one, or
    from a version the code has not reached, would be read as current."""
    from horkd.numerics_version import NUMERICS_VERSION

    records = sorted(RECORDS.rglob("*.json"))
    assert len(records) > 500
    versions = {p: json.loads(p.read_text()).get("numerics_version") for p in records}
    missing = [str(p.relative_to(RECORDS)) for p, v in versions.items() if v is None]
    assert not missing, f"records without numerics_version: {missing[:5]}"
    assert all(1 <= v <= NUMERICS_VERSION for v in versions.values())


def test_every_committed_run_record_holds_the_key_the_code_gives_its_settings():
    """A record is reused when its key equals the one the code computes for the job: a key from
    an older scheme would leave the page pending and the study retraining it."""
    import pytest

    from horkd.data.digest import data_digest
    from horkd.study.records import RunRecord

    if data_digest("fashion_mnist", None) is None:
        pytest.skip("Debian's Fashion-MNIST is not installed here (make fashion-mnist)")
    teachers = {json.loads(p.read_text())["fingerprint"]
                for p in (RECORDS / "teachers").glob("*.json")}
    stale = []
    for path in sorted(RECORDS.glob("*/*/*/*.json")):
        record = RunRecord(**json.loads(path.read_text()))
        keys = {record_key(record.config, record.teacher["fingerprint"], record.seed, record.kind,
                           scored) for scored in (False, True)}
        if record.key not in keys or record.teacher["fingerprint"] not in teachers:
            stale.append(str(path.relative_to(RECORDS)))
    assert not stale, f"{len(stale)} records keyed by another scheme, e.g. {stale[:3]}"


def test_a_saved_record_names_paths_inside_the_study_folder_relative_to_it(tmp_path,
                                                                          monkeypatch):
    """Committed records name no folder of the machine that trained them: paths under the
    working folder are written relative to it, others (and the key) as they are."""
    import json

    from horkd.study.records import RecordBook, RunRecord

    monkeypatch.chdir(tmp_path)
    config = {"output_dir": str(tmp_path / "runs" / "r" / "c0"),
              "teacher": {"checkpoint": str(tmp_path / "runs" / "t" / "model")},
              "data": {"root": "/srv/images"}}
    record = RunRecord(key="k", kind="final", regime="r", method="scratch", tag="c0", seed=0,
                       config=config, teacher={"name": "t"}, val=1.0)
    path = RecordBook(tmp_path / "records").save(record)
    saved = json.loads(path.read_text())["config"]
    assert saved["output_dir"] == "runs/r/c0"
    assert saved["teacher"]["checkpoint"] == "runs/t/model"
    assert saved["data"]["root"] == "/srv/images" and record.config == config


def test_a_folders_digest_is_the_same_whichever_modules_were_imported(tmp_path):
    """The held-out rule is part of an image folder's digest; it once registered only when the
    folder reader (torchvision) was imported, so ``--status`` (which imports no reader) keyed a
    study's records one way and a training process another."""
    import subprocess
    import sys

    folder = tmp_path / "imgs"
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        (folder / c / "1.png").write_bytes(b"not read: the digest is stat only")
    ask = ("import sys; {pre}from horkd.data.digest import data_digest; "
           f"print(data_digest('image_folder', {str(folder)!r}))")
    said = [subprocess.run([sys.executable, "-c", ask.format(pre=pre)], capture_output=True,
                           text=True, check=True).stdout.strip()
            for pre in ("", "import horkd.data.folder; ")]
    assert said[0] == said[1] and len(said[0]) == 16
    from horkd.data.digest import folder_digest

    assert said[0] != folder_digest(folder)  # the rule is in it: a folder without test/
