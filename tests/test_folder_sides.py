"""One size rule for a user's folder: `horkd run configs/image_folder.yaml` and `horkd study init`
give the same folder the same HR and LR sides; a study file is written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from horkd.cli import main
from horkd.config import load_config
from horkd.data import AugmentSpec
from horkd.experiment import build_context, open_seed

ROOT = Path(__file__).resolve().parents[1]


def _photos(root: Path, sizes: tuple[tuple[int, int], ...]) -> Path:
    """Three classes of non-square colour images of mixed sizes, no test split made."""
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(12):
            w, h = sizes[i % len(sizes)]
            pixels = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
            pixels[..., c] += 180
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("lr_size", [None, 5])
def test_run_and_study_init_choose_the_same_sides(tmp_path, capsys, lr_size):
    # longer sides 40, 30, 36 (median 36) - not the 64 a fixed side would blow them up to
    folder = _photos(tmp_path / "photos", ((40, 30), (24, 30), (36, 27)))
    given = [] if lr_size is None else [f"degrade.lr_size={lr_size}"]
    cfg = load_config(ROOT / "configs/image_folder.yaml", [f"data.root={folder}", *given])
    ctx = build_context(cfg, 0)
    assert (ctx.hr_size, ctx.lr_size) == (36, lr_size or 9)
    assert ctx.curve_sizes == ((36, 18, 9, 4) if lr_size is None else (36, 18, 5, 2))
    capsys.readouterr()
    argv = ["study", "init", "--data", str(folder)] + ([] if lr_size is None else
                                                       ["--lr-size", str(lr_size)])
    assert main(argv) == 0
    out = capsys.readouterr()
    study = yaml.safe_load(out.out)
    assert study["base"]["data"]["hr_size"] == ctx.hr_size
    assert study["base"]["degrade"]["lr_size"] == ctx.lr_size
    assert study["curve_sizes"] == list(ctx.curve_sizes)
    assert f"HR side {ctx.hr_size} px, LR side {ctx.lr_size} px" in out.err
    # and the same augmentation: shifts scaled to the HR side (36 px: 2), not CIFAR's fixed 4
    assert AugmentSpec(**study["base"]["data"]["augment"]) == ctx.augment == AugmentSpec(2, True)
    assert study["teachers"]["teacher"]["data"]["augment"] == study["base"]["data"]["augment"]


def test_the_folder_augmentation_scales_with_the_hr_side(tmp_path, capsys):
    folder = _photos(tmp_path / "photos", ((20, 20),))
    for hr, padding in ((20, 1), (64, 4), (224, 14)):
        cfg = load_config(ROOT / "configs/image_folder.yaml",
                          [f"data.root={folder}", f"data.hr_size={hr}"])
        assert build_context(cfg, 0).augment == AugmentSpec(padding, True)
        capsys.readouterr()
        assert main(["study", "init", "--data", str(folder), "--hr-size", str(hr)]) == 0
        study = yaml.safe_load(capsys.readouterr().out)
        assert study["base"]["data"]["augment"] == {"crop_padding": padding, "hflip": True}


def test_study_init_out_is_written_only_when_it_succeeds(tmp_path, capsys):
    folder = _photos(tmp_path / "photos", ((20, 20),))
    out = tmp_path / "my_study.yaml"
    assert main(["study", "init", "--data", str(folder), "--labels", "0.001", "--out",
                 str(out)]) == 2
    assert "labelled images for 3 classes" in capsys.readouterr().err
    assert not out.exists()  # a refusal leaves no empty file behind, unlike `> my_study.yaml`
    assert main(["study", "init", "--data", str(folder), "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert said.out == ""  # the study file went to --out alone
    assert f"study file: {out}" in said.err
    assert yaml.safe_load(out.read_text())["base"]["data"]["hr_size"] == 20
    assert not list(tmp_path.glob(".my_study.yaml.*"))  # no temporary left beside it


def test_small_sides_warn_and_impossible_ones_are_one_line_errors(tmp_path, capsys):
    """8-px images give an 8-px HR and a 2-px LR side: legal, odd, said (on standard error for
    study init, whose standard output is the study file); 6-px images would give a 1-px LR side:
    refused in one line naming the setting, by `horkd run` and by study init alike."""
    small = _photos(tmp_path / "small", ((8, 8),))
    cfg = load_config(ROOT / "configs/image_folder.yaml", [f"data.root={small}",
                                                           f"output_dir={tmp_path / 'run'}"])
    capsys.readouterr()
    ctx, _ = open_seed(cfg, 0)
    assert (ctx.hr_size, ctx.lr_size) == (8, 2)
    said = capsys.readouterr().out
    assert "warning: the HR side is 8 px, very small for a teacher" in said
    assert "warning: the LR side is 2 px, 4 pixels per image" in said
    assert main(["study", "init", "--data", str(small)]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["base"]["degrade"]["lr_size"] == 2
    assert "warning: the LR side is 2 px" in out.err and "warning" not in out.out

    tiny = _photos(tmp_path / "tiny", ((6, 6),))
    config = tmp_path / "c.yaml"
    config.write_text((ROOT / "configs/image_folder.yaml").read_text())
    argv = ["run", str(config), "--data-root", str(tiny), "--output-dir", str(tmp_path / "r")]
    for command in (argv, ["study", "init", "--data", str(tiny)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()  # (study init's notes on the data come first)
        assert "degrade.factor=4 leaves a 1-px LR side of the HR side 6 px" in \
            err.splitlines()[-1] and "Traceback" not in err, err
    assert main(argv + ["degrade.lr_size=6"]) == 2  # not below the images' own side
    assert ("degrade.lr_size=6 is not below the HR side 6 px, the images' own (data.hr_size "
            "sets another)") in capsys.readouterr().err


def _grey_folder(root, classes: int, per_class: int, side: int, step: int):
    """Flat grey PNGs, one grey level per image, ``step`` apart between classes."""
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((side, side), 40 + step * c + i, np.uint8)).save(
                root / f"class{c}" / f"{i}.png")
    return root


def test_a_folder_of_grey_images_trains_with_one_channel(tmp_path, capsys, monkeypatch):
    grey = _grey_folder(tmp_path / "grey", classes=2, per_class=10, side=12, step=150)
    # grey pictures stored otherwise, as a real folder has some: RGBA, a palette, an RGB JPEG
    picture = Image.fromarray(np.arange(144, dtype=np.uint8).reshape(12, 12))
    picture.convert("RGBA").save(grey / "class0/rgba.png")
    picture.convert("P").save(grey / "class1/palette.png")
    picture.convert("RGB").save(grey / "class1/photo.jpg")
    config = ROOT / "configs/image_folder.yaml"
    assert build_context(load_config(config, [f"data.root={grey}"]), 0).in_channels == 1
    said = capsys.readouterr().out
    assert said.count(f"the images in {grey} are grey, so the networks take 1 channel") == 1
    assert "data.channels=3" in said  # how to take them as colour all the same
    as_colour = load_config(config, [f"data.root={grey}", "data.channels=3"])
    assert build_context(as_colour, 0).in_channels == 3
    colour = _photos(tmp_path / "photos", ((20, 20),))
    assert build_context(load_config(config, [f"data.root={colour}"]), 0).in_channels == 3
    assert "networks take" not in capsys.readouterr().out
    # a stage trained when a grey folder was taken as colour (3 channels) is not reused
    import horkd.run_dir
    from horkd.run_dir import teacher_fingerprint

    now = teacher_fingerprint(load_config(config, [f"data.root={grey}"]), 0)
    monkeypatch.setattr(horkd.run_dir, "stored_channels", lambda root: 3)
    assert teacher_fingerprint(load_config(config, [f"data.root={grey}"]), 0) != now


def test_a_folder_run_is_named_after_the_folder(tmp_path):
    folder = _photos(tmp_path / "shapes", ((20, 20),))
    cfg = load_config(ROOT / "configs/image_folder.yaml", [f"data.root={folder}"])
    assert (cfg.name, cfg.output_dir) == ("shapes", "runs/shapes")  # not my_images
    given = load_config(ROOT / "configs/image_folder.yaml",
                        [f"data.root={folder}", "output_dir=runs/first", "name=mine"])
    assert (given.name, given.output_dir) == ("mine", "runs/first")


def test_study_init_gives_its_advice_once_in_its_own_options(tmp_path, capsys):
    """The side and channels study init took are said once, as the options that change them
    (--hr-size, --lr-size, --channels), not again as a run's config keys beside them."""
    folder = _grey_folder(tmp_path / "scans", classes=3, per_class=30, side=10, step=60)
    assert main(["study", "init", "--data", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "check --hr-size" in err and "check --lr-size" in err  # 10 px and 2 px: odd, said
    assert err.count("--channels 3") == 1 and err.count("grey") == 1, err
    for key in ("data.hr_size", "data.channels", "degrade.lr_size", "degrade.factor"):
        assert key not in err, (key, err)
    assert "the sides `horkd run` gives this folder" in err
    # sides the user chose are not the ones a run would give the folder: not said to be
    assert main(["study", "init", "--data", str(folder), "--hr-size", "16", "--lr-size", "4",
                 "--out", str(tmp_path / "chosen.yaml")]) == 0
    err = capsys.readouterr().err
    assert "HR side 16 px, LR side 4 px (as asked)" in err
    assert "the sides `horkd run` gives" not in err
