"""Bad input gets one readable message, no traceback and a non-zero exit: config, CLI, data,
checkpoints and run directories, table-driven."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from horkd.checkpoint import save_checkpoint
from horkd.cli import main
from horkd.data import build_splits
from horkd.models import build_model
from tests.conftest import tiny_config_dict

Setup = Callable[[Path], list[str]]


@dataclass
class Case:
    name: str
    setup: Setup  # builds what the case needs and returns the command line
    needles: tuple[str, ...]  # what the message must name
    code: int = 2


def _config(tmp: Path, *overrides: str, **changes) -> list[str]:
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp / "run", **changes)))
    return ["run", str(path), *overrides, "--no-progress", "--no-report"]


def _raw_yaml(text: str) -> Setup:
    def setup(tmp: Path) -> list[str]:
        path = tmp / "cfg.yaml"
        path.write_text(text)
        return ["run", str(path)]

    return setup


def _image_tree(tmp: Path, corrupt: bool) -> Path:
    root = tmp / "images"
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (12, 12), (i * 40, 80, 160)).save(folder / f"{i}.png")
    if corrupt:
        (root / "train/cat/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    return root


def _corrupt_image(tmp: Path) -> list[str]:
    root = _image_tree(tmp, corrupt=True)
    return _config(tmp, "data.dataset=image_folder", f"data.root={root}", "data.channels=3",
                   "data.train_subset=null", "data.test_subset=null")


def _one_class(tmp: Path) -> list[str]:
    root = _image_tree(tmp, corrupt=False)
    for split in ("train", "test"):
        shutil.rmtree(root / split / "dog")
    return _config(tmp, "data.dataset=image_folder", f"data.root={root}", "data.channels=3")


def _empty_class(tmp: Path) -> list[str]:
    root = _image_tree(tmp, corrupt=False)
    (root / "train" / "empty_class").mkdir()
    return _config(tmp, "data.dataset=image_folder", f"data.root={root}", "data.channels=3")


def _unfinished_stage(tmp: Path) -> list[str]:
    stage = tmp / "run/seed0/teacher"
    stage.mkdir(parents=True)
    (stage / "train_state.safetensors").write_bytes(b"a stage stopped mid-epoch")
    return ["predict", str(stage), str(tmp)]


def _checkpoint(tmp: Path, arch: str = "cnn_small") -> Path:
    model = build_model(arch, num_classes=10, in_channels=1, embed_dim=32, width=8)
    recipe = {"arch": arch, "num_classes": 10, "in_channels": 1, "embed_dim": 32, "width": 8}
    save_checkpoint(tmp / "ckpt/model", model, {"model": recipe})
    return tmp / "ckpt/model"


def _weights_without_meta(tmp: Path) -> list[str]:
    weights = _checkpoint(tmp).with_suffix(".safetensors")
    moved = weights.rename(tmp / "resnet_from_elsewhere.safetensors")
    return ["predict", str(moved), str(tmp)]


def _other_arch_teacher(tmp: Path) -> list[str]:
    ckpt = _checkpoint(tmp, arch="cnn_tiny")
    return _config(tmp, f"teacher.checkpoint={ckpt}")


def _corrupt_weights(tmp: Path) -> list[str]:
    ckpt = _checkpoint(tmp)
    ckpt.with_suffix(".safetensors").write_bytes(b"\x00\x01not safetensors at all")
    return ["export", str(ckpt)]


def _corrupt_meta(tmp: Path) -> list[str]:
    ckpt = _checkpoint(tmp)
    ckpt.with_suffix(".json").write_text("{ not json")
    return ["eval", str(ckpt)]


class _Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _pickle_payload(tmp: Path) -> list[str]:
    evil = tmp / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1), "x": _Payload(tmp / "CODE_RAN")}, evil)
    return _config(tmp, f"teacher.weights={evil}")


def _different_run(tmp: Path) -> list[str]:
    args = _config(tmp)
    run = tmp / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: someone-else\n")
    (run / "seed0/teacher").mkdir(parents=True)
    (run / "seed0/teacher/model.safetensors").write_bytes(b"weights someone trained")
    return args


def _foreign_folder(tmp: Path) -> list[str]:
    args = _config(tmp)
    (tmp / "run").mkdir()
    (tmp / "run/thesis.tex").write_text("precious")
    return args


CASES = [
    # ----------------------------------------------------------------- config files and values
    Case("invalid yaml", _raw_yaml("data: [unclosed\n  x: : y\n"), ("not valid YAML",)),
    Case("yaml not a mapping", _raw_yaml("- a\n- b\n"), ("mapping",)),
    Case("config file missing", lambda t: ["run", str(t / "nope.yaml")], ("config file not found",)),
    Case("unknown key", lambda t: _config(t, "trian.student.epochs=3"),
         ("trian", "unknown key", "allowed")),
    Case("unknown model", lambda t: _config(t, "teacher.arch=resnet2O"),
         ("unknown model 'resnet2O'", "Did you mean 'resnet20'", "Known:")),
    Case("unknown dataset", lambda t: _config(t, "data.dataset=fashion_mnst"),
         ("unknown dataset 'fashion_mnst'", "Did you mean 'fashion_mnist'")),
    Case("unknown method", lambda t: _config(t, "methods=[scratch,horkdd]"),
         ("unknown method 'horkdd'", "Did you mean 'horkd'")),
    Case("unknown task loss", lambda t: _config(t, "task_loss.name=arcfac"),
         ("arcfac", "Did you mean 'arcface'")),
    Case("negative loss weight", lambda t: _config(t, "distill.loss.distance_weight=-1"),
         ("distill.loss.distance_weight", "greater than or equal to 0")),
    Case("lr size not below hr", lambda t: _config(t, "degrade.lr_size=16"),
         ("degrade.lr_size (16) must be smaller than data.hr_size (16)",)),
    Case("batch too small for triplets", lambda t: _config(t, "train.student.batch_size=2"),
         ("train.student.batch_size is 2", "at least 3")),
    Case("lr sizes and factor both", lambda t: _config(t, "degrade.lr_sizes=[4,8]",
                                                       "degrade.lr_size=null", "degrade.factor=2"),
         ("degrade.lr_sizes or degrade.factor", "not both")),
    Case("bad device", lambda t: _config(t, "device=tpu"), ("device", "'cpu'")),
    Case("wrong type", lambda t: _config(t, "train.student.epochs=many"),
         ("train.student.epochs", "integer")),
    Case("duplicate method", lambda t: _config(t, "methods=[scratch,scratch]"), ("twice",)),
    # ----------------------------------------------------------------- command line
    Case("override without =", lambda t: _config(t, "train.student.epochs"),
         ("not of the form key.sub=value",)),
    Case("override into a value", lambda t: _config(t, "seeds.first=1"), ("'seeds' is not a section",)),
    Case("unknown command", lambda t: ["distil", "x.yaml"], ("invalid choice",)),
    Case("bad eval sizes", lambda t: ["eval", "ckpt", "--sizes", "28,x"],
         ("comma-separated list of pixel sizes",)),
    Case("bad export format", lambda t: ["export", "ckpt", "--format", "tflite"], ("invalid choice",)),
    # ----------------------------------------------------------------- data
    Case("missing data root", lambda t: _config(t, "data.dataset=fashion_mnist",
                                              f"data.root={t / 'no-data'}", "data.hr_size=28",
                                              "degrade.lr_size=7"),
         ("fashion_mnist", "no-data", "apt-get install dataset-fashion-mnist")),
    Case("image folder without images", lambda t: _config(t, "data.dataset=image_folder",
                                                        f"data.root={t}"),
         ("Found no valid file", "ROOT/train/<class>/<images>", "ROOT/<class>/<images>")),
    Case("image folder with an empty class", _empty_class,
         ("class folder(s) empty_class hold no image file", "; add images or remove")),
    Case("image folder with one class", _one_class, ("holds 1 class folder (cat)",
                                                     "at least two")),
    Case("predict with a stage still training", _unfinished_stage,
         ("has not finished training", "rerun its command")),
    Case("corrupt image", _corrupt_image, ("unusable image", "broken.png", "--skip-bad-images")),
    # ----------------------------------------------------------------- checkpoints and weights
    Case("checkpoint missing", lambda t: ["eval", str(t / "none/model")], ("not found",)),
    Case("corrupt checkpoint weights", _corrupt_weights, ("cannot read checkpoint weights",)),
    Case("corrupt checkpoint metadata", _corrupt_meta, ("not valid JSON",)),
    Case("predict with weights alone", _weights_without_meta,
         ("has no resnet_from_elsewhere.json beside it", "teacher.weights=FILE")),
    Case("teacher checkpoint of another arch", _other_arch_teacher,
         ("arch='cnn_tiny'", "arch='cnn_small'")),
    Case("weights file missing", lambda t: _config(t, f"teacher.weights={t / 'w.pth'}"),
         ("model weights file not found",)),
    Case("pickle that runs code", _pickle_payload,
         ("refusing to load", "weights.pth", "--trust-checkpoint")),
    Case("export of a missing checkpoint", lambda t: ["export", str(t / "x/model")], ("not found",)),
    # ----------------------------------------------------------------- run directories, numbers
    Case("output dir holds another run", _different_run,
         ("different config", "--resume", "--overwrite")),
    Case("output dir is not a run", _foreign_folder, ("does not hold a horkd run",)),
    Case("diverging loss", lambda t: _config(t, "train.teacher.optimizer.lr=1e30",
                                           "train.teacher.max_nonfinite_steps=1"),
         ("consecutive non-finite losses", "task", "lower learning rate"), 3),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_readable_message(case: Case, tmp_path, capfd):
    args = case.setup(tmp_path)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors (usage line + message)
        code = exc.code
    err = capfd.readouterr().err
    assert code == case.code, err
    assert "Traceback" not in err
    for needle in case.needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    message = [line for line in err.splitlines() if line.startswith(("horkd: error", "usage"))]
    assert message, err
    assert ".  (" not in err and ". (" not in err  # one sentence, not a library's and ours glued
    assert not (tmp_path / "CODE_RAN").exists()


def test_there_are_at_least_twenty_bad_inputs():
    assert len(CASES) >= 20


def test_skip_bad_images_counts_and_leaves_them_out(tmp_path, capsys):
    root = _image_tree(tmp_path, corrupt=True)
    splits = build_splits("image_folder", root=str(root), hr_size=12, val_fraction=0.0,
                          skip_bad_images=True)
    assert [Path(p).name for p in splits.info.skipped_images] == ["broken.png"]
    assert len(splits.train) == 8 and len(splits.test) == 8
    assert "left out 1 unusable image" in capsys.readouterr().out
    image, label = splits.train[0]
    assert image.shape == (3, 12, 12) and label == 0


def test_trusted_pickle_loads_only_with_the_flag(tmp_path):
    from horkd.models import read_state_dict
    from horkd.safe_load import UnsafeCheckpointError, trusting_pickles

    path = tmp_path / "w.pth"
    torch.save({"w": torch.ones(2), "x": _Payload(tmp_path / "CODE_RAN")}, path)
    with pytest.raises(UnsafeCheckpointError):
        read_state_dict(path)
    assert not (tmp_path / "CODE_RAN").exists()
    with trusting_pickles():
        state = read_state_dict(path)
    assert (tmp_path / "CODE_RAN").exists()  # the user asked for it, and the code did run
    assert torch.equal(state["w"], torch.ones(2))
