"""The study page's picture of its data: HR test images and every LR view a regime trains its
students on, one row each, with the regimes of each view named under it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import tiny_config_dict
from PIL import Image

from horkd.config import config_from_dict
from horkd.study.data_figure import data_section, student_views


def _study(tmp_path: Path) -> dict:
    base = tiny_config_dict(tmp_path / "runs")
    return {"base": base, "regimes": {
        "small": {"overrides": []},  # LR 4 px
        "noisy": {"overrides": ["degrade.lr_size=8", "degrade.blur_sigma=1.0",
                                "degrade.noise_std=0.1"]},
        "across": {"overrides": ["degrade.lr_sizes=[4,6]", "degrade.lr_size=null"]},
        "bicubic": {"overrides": ["degrade.interpolation=bicubic"]},  # LR 4 px, resampled apart
        "other_side": {"overrides": ["data.hr_size=12"]},  # other HR images: not drawn
    }}


def test_each_lr_view_is_a_row_and_names_its_regimes(tmp_path: Path) -> None:
    study = _study(tmp_path)
    base = config_from_dict(dict(study["base"]))
    regimes = {name: config_from_dict(dict(study["base"]), r["overrides"])
               for name, r in study["regimes"].items()}
    views = [(spec.lr_size, spec.interpolation, spec.blur_sigma, names)
             for spec, names in student_views(base, regimes, 16)]
    # plain views from the largest side down, then the degraded one; a regime trained across
    # sizes is under each of its sizes
    assert views == [(6, "area", 0.0, ["across"]), (4, "area", 0.0, ["small", "across"]),
                     (4, "bicubic", 0.0, ["bicubic"]), (8, "area", 1.0, ["noisy"])]

    figures = tmp_path / "page"
    figures.mkdir()
    lines, _ = data_section(study, figures)
    assert "## The data" in lines
    assert "- LR 4 px: `small`, `across`" in lines
    assert "- LR 4 px, bicubic: `bicubic`" in lines  # two views, two labels
    assert "- LR 8 px, blur 1, noise 0.1: `noisy`" in lines
    assert not any("other_side" in line for line in lines)
    # every class of the digits shown once before any repeats
    assert any("one test image of each class (10 of 10)" in line for line in lines)
    picture = np.asarray(Image.open(figures / "data.png").convert("L"))
    assert picture.std() > 20  # images drawn, not an empty canvas


def test_a_study_whose_data_is_not_here_is_written_without_the_picture(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study["base"]["data"] = {"dataset": "image_folder", "root": str(tmp_path / "absent")}
    assert data_section(study, tmp_path) == ([], None)
    assert not (tmp_path / "data.png").exists()


def test_a_test_split_that_cannot_be_read_says_so_in_one_line(tmp_path: Path) -> None:
    """The data is there but a file is junk: the page says why it has no picture."""
    root = tmp_path / "shapes"
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((16, 16), 40 * c + i, np.uint8)).save(
                root / f"class{c}" / f"{i}.png")
        (root / f"class{c}" / "junk.png").write_text("not an image")
    study = _study(tmp_path)
    study["base"]["data"] = {"dataset": "image_folder", "root": str(root), "hr_size": 16}
    lines, _ = data_section(study, tmp_path)
    assert lines[:2] == ["", "## The data"]
    assert lines[-1].startswith("No picture of the test images: ") and "\n" not in lines[-1]
