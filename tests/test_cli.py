"""The command line: help, errors as one line without a traceback, eval and train subcommands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from horkd.cli import demo_config_dict, main
from horkd.config import config_from_dict


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as code:
        main(["--help"])
    assert code.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "train", "eval", "demo", "list"):
        assert command in out


COMMANDS = ("run", "train", "demo", "ablate", "eval", "export", "predict", "search", "verify",
            "report", "study", "split", "list")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    """argparse formats help strings with %, so a stray percent sign breaks only --help."""
    with pytest.raises(SystemExit) as code:
        main([command, "--help"])
    assert code.value.code == 0
    assert f"horkd {command}" in capsys.readouterr().out


def test_demo_config_is_valid():
    cfg = config_from_dict(demo_config_dict())
    assert cfg.data.dataset == "fashion_mnist" and cfg.data.hr_size == 28
    assert cfg.degrade.lr_size == 7
    assert cfg.data.label_fraction is not None  # the few-label regime the demo shows
    assert {"teacher_lr", "scratch", "hinton_kd", "rkd", "horkd_no_assistant", "horkd"} <= set(
        cfg.methods)
    assert cfg.distill.cache_reference and cfg.data.augment.views


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "{cfg}", "degrade.lr_size=40"], "must be smaller"),
        (["run", "{cfg}", "teacher.arch=resnet"], "unknown model 'resnet'"),
        (["run", "{missing}"], "config file not found"),
        (["eval", "{missing}"], "not found"),
        (["run", "{cfg}", "data.dataset=image_folder", "data.root={missing}"], "missing"),
        # overrides also count after options, and an unknown option is still refused
        (["run", "{cfg}", "--no-report", "degrade.lr_size=40"], "must be smaller"),
    ],
)
def test_user_errors_are_one_line(tmp_path, tiny_cfg, args, needle):
    cfg_path = _write(tmp_path, tiny_cfg)
    filled = [a.format(cfg=cfg_path, missing=tmp_path / "missing") for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "horkd", *filled], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr
    assert proc.stderr.startswith("horkd: error:")


@pytest.mark.parametrize("args", [["run", "cfg.yaml", "a.b=1", "--bogus"],
                                  ["export", "model", "a.b=1"]])
def test_unknown_arguments_are_still_refused(args, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert f"unrecognized arguments: {args[-1]}" in capsys.readouterr().err


def test_train_then_eval(tmp_path, tiny_cfg, capsys):
    """The student `horkd train` trains has learnt, as `horkd eval` scores it: digits' ten
    classes put chance at 10 top-1; two whole epochs in batches of 16 put the scratch student
    at 54-74 (16, 4 px) and 56-62 (8 px) over seeds 0-2, at 7-11 with training disabled."""
    tiny_cfg["train"] = {**tiny_cfg["train"], "student": {
        **tiny_cfg["train"]["student"], "batch_size": 16, "max_steps_per_epoch": None}}
    cfg_path = _write(tmp_path, tiny_cfg)
    assert main(["train", str(cfg_path), "--stage", "student", "--method", "scratch",
                 "--no-progress"]) == 0
    ckpt = Path(tiny_cfg["output_dir"]) / "seed0/students/scratch/model"
    assert ckpt.with_suffix(".safetensors").exists()
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--sizes", "20"]) == 2  # above the HR side: said
    assert "20 px is outside 1-16" in capsys.readouterr().err
    assert main(["eval", str(ckpt), "--sizes", "16,8,4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "top1" in lines[1]
    assert [line.split()[0] for line in lines[-3:]] == ["16", "8", "4"]
    chance, margin = 100 / 10, 15.0  # learnt: above chance by the margin at every size
    for line in lines[-3:]:
        top1 = float(line.split()[1])
        assert chance + margin < top1 <= 100.0, line


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "horkd_joint" in out and "fashion_mnist" in out


def test_eval_scores_a_folder_model_at_the_side_it_learnt_at(tmp_path, tiny_cfg, capsys):
    """data.hr_size unset: the run takes the folder's median side (12 here); images added to the
    folder later move that median, not the side the checkpoint is scored at."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def images(side: int, count: int, tag: str) -> None:
        for split in ("train", "test"):
            for label in ("cat", "dog"):
                folder = tmp_path / "images" / split / label
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"{tag}{i}.png")

    images(12, 8, "small")
    raw = {**tiny_cfg, "methods": ["scratch"], "degrade": {"lr_size": 4},
           "data": {"dataset": "image_folder", "root": str(tmp_path / "images"),
                    "val_fraction": 0.25}}
    assert main(["train", str(_write(tmp_path, raw)), "--stage", "student", "--method",
                 "scratch", "--no-progress"]) == 0
    assert "HR side 12 px" in capsys.readouterr().out
    images(40, 12, "big")  # the folder's median side is now 40
    assert main(["eval", str(Path(tiny_cfg["output_dir"]) / "seed0/students/scratch")]) == 0
    out = capsys.readouterr().out
    assert "HR side" not in out  # the data is read at the checkpoint's side, not measured again
    lines = out.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[0] == "size")
    assert [line.split()[0] for line in lines[header + 1:]] == ["12", "4"]
