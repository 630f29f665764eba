"""Where a run's validation images come from, and whether a loaded teacher trained on them, for a
dataset that holds its validation images apart (the glyphs of the validation fonts)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from horkd.config import config_from_dict
from horkd.data.validation_source import describe_validation, same_held_apart_set

GLYPHS = {"dataset": "glyphs", "hr_size": 32, "val_fraction": 0.1, "test_fraction": 0.2,
          "split_seed": 0}


def test_the_page_names_what_each_run_validated_on() -> None:
    assert describe_validation({"dataset": "fashion_mnist", "val_fraction": 0.1}) == \
        "10% of its own training images"
    assert "3000-image subset" in describe_validation({"dataset": "fashion_mnist",
                                                       "val_from_subset": 3000})
    assert describe_validation({"dataset": "fashion_mnist", "val_size": 120}) == \
        "120 images carved from its own training images"
    assert "validation fonts" in describe_validation({**GLYPHS, "val_from_subset": 3000})


def _held_out(tmp_path, monkeypatch, students: dict, teachers: dict) -> bool | None:
    """``teacher_held_out`` for a student run with ``students`` data settings whose teacher's
    checkpoint says it trained with ``teachers``."""
    from horkd.experiment.bridge import teacher_held_out

    meta = {"config": {"data": teachers}, "seed": 7}
    monkeypatch.setattr("horkd.checkpoint.load_meta", lambda path: meta)
    cfg = config_from_dict({"output_dir": str(tmp_path), "data": students,
                            "teacher": {"arch": "resnet8",
                                        "checkpoint": str(tmp_path / "teacher" / "model")}})
    return teacher_held_out(SimpleNamespace(cfg=cfg, seed=0))


@pytest.mark.parametrize(("teacher_change", "expected"), [
    ({}, True),                                  # the same validation fonts, other training fonts
    ({"train_subset": 20000, "split_seed": 3, "glyph_renders": 2}, True),  # no seed moves them
    ({"val_fraction": 0.2}, False),              # other validation families: it may have trained
    ({"test_fraction": 0.1}, False),             # on some of this run's validation fonts
    ({"root": "/elsewhere"}, False),             # other fonts altogether
])
def test_a_glyph_teacher_is_held_out_exactly_when_it_kept_the_same_validation_fonts(
        tmp_path, monkeypatch, teacher_change: dict, expected: bool) -> None:
    """A glyph teacher on the teachers' half of the training fonts never saw the validation
    fonts its students choose on, whatever its seed, subset or renders; another family split
    may have put some of them in its training half."""
    students = {**GLYPHS, "glyph_fonts": "students", "train_subset": 6200}
    teachers = {**GLYPHS, "glyph_fonts": "teacher", **teacher_change}
    assert _held_out(tmp_path, monkeypatch, students, teachers) is expected


def test_a_carved_split_is_not_judged_by_the_held_apart_rule() -> None:
    assert same_held_apart_set({"dataset": "fashion_mnist"}, {"dataset": "fashion_mnist"}) is None


def test_a_glyph_teacher_of_other_font_files_is_not_held_out(tmp_path, monkeypatch) -> None:
    """The same settings over another font set draw other validation fonts: where the
    teacher's stage recorded other data files, it may have trained on this run's."""
    import json

    fonts = tmp_path / "fonts"
    fonts.mkdir()
    settings = {**GLYPHS, "root": str(fonts)}
    students = {**settings, "glyph_fonts": "students"}
    teachers = {**settings, "glyph_fonts": "teacher"}
    stage = tmp_path / "teacher"
    stage.mkdir()
    (stage / "done.json").write_text(json.dumps({"data_files": "another-font-set"}))
    assert _held_out(tmp_path, monkeypatch, students, teachers) is False
    from horkd.data.digest import data_digest

    (stage / "done.json").write_text(json.dumps({"data_files": data_digest("glyphs",
                                                                           str(fonts))}))
    assert _held_out(tmp_path, monkeypatch, students, teachers) is True


def test_a_study_refuses_a_glyph_teacher_whose_fonts_may_be_its_students_test_fonts(
        tmp_path) -> None:
    """The study's teacher file with another test share (so other test fonts) is refused at
    load, naming the teacher and the setting; the shipped pair loads."""
    import shutil
    from pathlib import Path

    import yaml

    from horkd.config import ConfigError
    from horkd.study import load_study

    shipped = Path(__file__).resolve().parents[1] / "configs" / "study"
    assert load_study(shipped / "glyphs.yaml")[0].name == "glyphs_study"
    shutil.copy(shipped / "glyphs.yaml", tmp_path / "glyphs.yaml")
    teacher = yaml.safe_load((shipped / "teacher_glyphs.yaml").read_text())
    teacher["data"]["test_fraction"] = 0.1
    (tmp_path / "teacher_glyphs.yaml").write_text(yaml.safe_dump(teacher))
    with pytest.raises(ConfigError, match=r"teachers\.glyphs: data\.test_fraction=0\.1 where "
                                          r"the students' is 0\.2"):
        load_study(tmp_path / "glyphs.yaml")


def test_a_dataset_that_holds_validation_apart_must_say_so() -> None:
    """A dataset whose training split brings its own validation images, but is not registered in
    HELD_APART, is refused for its author: the page and the guard would describe it wrongly."""
    import torch

    from horkd.data import build_splits
    from horkd.data.memory import TensorImageDataset
    from horkd.data.registry import DATASETS, DatasetInfo

    def apart(root, hr_size, download, **kw):
        train = TensorImageDataset(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.arange(8) % 2)
        train.validation_indices = torch.tensor([0, 1])
        test = TensorImageDataset(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.arange(4) % 2)
        return train, test, DatasetInfo("apart", 2, 1, (0.5,), (0.25,), 4)

    from horkd.data import validation_source

    DATASETS.register("apart")(apart)
    try:
        with pytest.raises(ValueError, match="register it in horkd.data.validation_source"):
            build_splits("apart")
        validation_source.HELD_APART.register("apart")("its own validation images")
        assert len(build_splits("apart").val) == 2
        assert describe_validation({"dataset": "apart"}) == "its own validation images"
    finally:
        DATASETS.unregister("apart")
        if "apart" in validation_source.HELD_APART:
            validation_source.HELD_APART.unregister("apart")
