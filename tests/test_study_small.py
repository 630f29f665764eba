"""A study of a small folder of one's own: the page's figures beside it under its own name, its
times in units that show, and the names and counts a new user relies on (issue 40)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from horkd.study.document import write_document


def _summary(compute_seconds: float = 124.0) -> dict:
    """A two-method, two-seed study's summary, as small as the page takes."""
    def final(method: str, values: list[float]) -> dict:
        return {"kind": "final", "regime": "full", "method": method, "tag": "c0",
                "seeds": [0, 1], "val": {"0": 60.0, "1": 64.0},
                "rows": {str(s): [{"method": method, "role": "student", "lr_top1": v}]
                         for s, v in enumerate(values)},
                "curve": {str(s): {method: {"20": v, "5": v - 10}} for s, v in enumerate(values)}}
    study = {"name": "shapes_study", "seeds": [0, 1], "baselines": ["scratch"],
             "methods": ["scratch", "horkd"], "main_regime": "full",
             "base": {"degrade": {"lr_size": 5}, "data": {"val_fraction": 0.1}},
             "regimes": {"full": {"overrides": [], "teacher": "teacher"}},
             "search": {"seed": 100, "candidates": {"scratch": [[]], "horkd": [[]]}}}
    return {"study": study, "study_file": "s.yaml", "teachers": {}, "search": [],
            "choices": {}, "registrations": {}, "extended": {},
            "finals": [final("scratch", [61.0, 66.0]), final("horkd", [56.0, 50.0])],
            "ablation": None, "seconds": 0.8, "compute_seconds": compute_seconds,
            "workers": 1, "threads_per_worker": 1}


def _page(tmp_path: Path, summary: dict, doc: str = "small_results.md") -> str:
    (tmp_path / "study.json").write_text(json.dumps(summary))
    return write_document(tmp_path / "study.json", tmp_path / doc).read_text()


def test_the_page_keeps_its_figures_in_a_folder_named_after_it(tmp_path):
    text = _page(tmp_path, _summary())
    assert (tmp_path / "small_results-figures" / "resolution_curve.png").stat().st_size > 0
    assert "](small_results-figures/resolution_curve.png)" in text
    assert not (tmp_path / "results").exists()  # no generic folder beside a page of another name
    # nor one that a case-insensitive file system would merge with a folder of the page's name
    assert not (tmp_path / "small_results").exists()


def test_the_page_is_headed_by_the_study_title_and_by_its_name_without_one(tmp_path):
    assert _page(tmp_path, _summary()).startswith("# Results: shapes_study\n")
    summary = _summary()
    summary["study"]["title"] = "Shapes at 5 pixels"
    assert _page(tmp_path, summary).startswith("# Results: Shapes at 5 pixels\n")


def test_a_few_minutes_of_training_are_not_said_as_0_0_h(tmp_path):
    text = _page(tmp_path, _summary(compute_seconds=124.0))
    assert "took 2 min of training and scoring" in text and "0.0 h" not in text
    assert "0.0 min of wall time" not in text  # the invocation's 0.8 s


def _shapes(root: Path, per_class: int = 12) -> Path:
    """Three classes of small grey images, no test split made (a folder of one's own)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (20, 20)).astype(np.uint8) + 60 * c
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def test_two_study_files_of_one_folder_get_their_own_run_folder_and_records(tmp_path, capsys):
    import yaml

    from horkd.cli import main

    folder = _shapes(tmp_path / "shapes")
    names = {}
    for out in ("small.yaml", "my_study.yaml"):
        assert main(["study", "init", "--data", str(folder), "--out", str(tmp_path / out)]) == 0
        raw = yaml.safe_load((tmp_path / out).read_text())
        names[out] = (raw["output_dir"], raw["records"])
    assert names["small.yaml"] == ("runs/small", "small-records")
    assert names["my_study.yaml"] == ("runs/my_study", "my_study-records")
    capsys.readouterr()
    # to standard output: named after the folder and its settings, so other settings differ
    printed = []
    for seeds in ("0,1", "0,1", "0,1,2"):
        assert main(["study", "init", "--data", str(folder), "--seeds", seeds]) == 0
        raw = yaml.safe_load(capsys.readouterr().out)
        printed.append((raw["output_dir"], raw["records"]))
    assert printed[0] == printed[1] != printed[2]
    assert printed[0][0].startswith("runs/study-shapes-")


class _Teachers:
    def __init__(self, root: Path, fingerprint: str, recorded: dict) -> None:
        self.root, self.mine, self._recorded = root, fingerprint, recorded

    def run_dir(self, name: str, seed: int) -> Path:
        return self.root / "teachers" / name

    def fingerprint(self, name: str, seed: int) -> str:
        return self.mine

    def recorded(self) -> dict:
        return self._recorded

    def config(self, name: str):
        return SimpleNamespace(seeds=[0])


def test_a_teacher_trained_with_other_settings_is_pending_not_recorded(tmp_path):
    """Another study file with the same output_dir trained `teacher`: this one's --status once
    said `recorded, best val 100.00` and counted no teacher to train, then retrained it."""
    from horkd.study.plan import _teacher_lines, teacher_trained

    done = tmp_path / "teachers" / "teacher" / "seed0" / "teacher" / "done.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"fingerprint": "theirs", "best_score": 100.0}))
    recorded = {"teacher/seed0": {"name": "teacher", "seed": 0, "fingerprint": "theirs",
                                  "val": 100.0}}
    study = SimpleNamespace(teachers=_Teachers(tmp_path, "mine", recorded),
                            study=SimpleNamespace(teachers={"teacher": {}}))
    planned = [SimpleNamespace(teacher=("teacher", 0))]
    assert not teacher_trained(study, "teacher", 0)
    [line] = _teacher_lines(study, planned)
    assert "pending" in line and "other settings" in line and "recorded, best" not in line
    # its own teacher, trained: recorded and loaded, no task
    done.write_text(json.dumps({"fingerprint": "mine", "best_score": 100.0}))
    recorded["teacher/seed0"]["fingerprint"] = "mine"
    assert teacher_trained(study, "teacher", 0)
    assert _teacher_lines(study, planned) == ["  teacher seed 0: recorded, best val 100.00"]


def test_the_study_log_names_a_teacher_once_and_says_a_loaded_one_once(tmp_path, capsys):
    """`teacher teacher seed 0` (a teacher named `teacher`), and between the search and the
    finals a `continuing the run in ...` + `loaded from its checkpoint` pair, once per batch."""
    from conftest import tiny_config_dict

    from horkd.study.jobs import TeacherJob, describe_teacher, run_teacher
    from horkd.study.progress import Progress

    config = tiny_config_dict(tmp_path / "teacher", methods=["scratch"])
    job = TeacherJob("teacher", 0, config, str(tmp_path / "record.json"), {"name": "teacher",
                                                                            "seed": 0})
    assert job.label == "teacher seed 0"
    assert TeacherJob("cls", 0, config, "", {}).label == "teacher cls seed 0"
    run_teacher(job)
    capsys.readouterr()
    loaded = run_teacher(job)  # trained: it loads
    assert not loaded["trained_here"]
    assert "continuing the run" not in capsys.readouterr().out
    line = describe_teacher({**loaded, "arch": "cnn_small"})
    assert line.startswith("teacher seed 0: cnn_small, best val")
    lines: list[str] = []
    progress = Progress(2, lines.append, bar=False)
    for _ in range(2):  # loaded before the search and again before the finals
        progress.finished(line, 0, trained=False, task=job.key)
    assert lines == [line]
    # trained in this invocation: loading it again later says nothing more
    lines.clear()
    progress = Progress(2, lines.append, bar=False)
    progress.finished("teacher seed 0: cnn_small, best val 50.00 (3 s)", 1, task=job.key)
    progress.finished(line, 0, trained=False, task=job.key)
    assert len(lines) == 1 and lines[0].startswith("[1/2] teacher seed 0")


def test_an_epoch_line_says_when_its_stage_ends():
    """A study's first task is its teacher: its epoch lines give the time it has left, where the
    study's ETA waits for the first student run."""
    from horkd.trainer import epoch_line

    row = {"train/loss": 1.5, "val/top1": 40.0}
    assert epoch_line("teacher seed 0: teacher", 0, 10, row, "top1", 2.2, per_epoch=2.5) == (
        "[teacher seed 0: teacher] epoch 1/10 loss 1.5000 val top1 40.00 (2s; this stage ends "
        "in about 22 s)")
    assert epoch_line("t", 29, 30, row, "top1", 61.0, per_epoch=60.0).endswith("(61s)")  # last
    assert "ends in about 29 min" in epoch_line("t", 0, 30, row, "top1", 60.0, per_epoch=60.0)


def test_study_init_trains_a_grey_folder_as_grey_and_takes_shorter_epochs(tmp_path, capsys):
    import numpy as np
    import yaml
    from PIL import Image

    from horkd.cli import build_parser, main

    grey = _shapes(tmp_path / "shapes")
    assert main(["study", "init", "--data", str(grey), "--teacher-epochs", "10",
                 "--student-epochs", "5"]) == 0
    out = capsys.readouterr()
    raw = yaml.safe_load(out.out)
    assert raw["base"]["data"]["channels"] == 1
    assert raw["teachers"]["teacher"]["data"]["channels"] == 1
    assert "grey: channels 1" in out.err
    assert raw["teachers"]["teacher"]["train"]["teacher"]["epochs"] == 10
    assert {raw["base"]["train"][s]["epochs"] for s in ("assistant", "student")} == {5}
    assert main(["study", "init", "--data", str(grey), "--channels", "3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["base"]["data"]["channels"] == 3
    # a colour folder, saved as RGB: 3 channels, nothing said
    colour = tmp_path / "colour"
    rng = np.random.default_rng(1)
    for c in range(3):
        (colour / f"class{c}").mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3)).astype(np.uint8)).save(
                colour / f"class{c}" / f"{i}.png")
    assert main(["study", "init", "--data", str(colour)]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["base"]["data"]["channels"] == 3 and "images are grey" not in out.err
    # the folder need not hold train/ and test/ (it ran without): the help no longer says so
    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices.items()
               if a[0] == "study-init")[1]
    assert "with train/ and test/" not in " ".join(sub.description.split())


def test_a_small_folder_is_told_how_few_validation_images_its_choices_rest_on(tmp_path, capsys):
    from horkd.cli import main

    summary = _summary()
    for res in summary["finals"]:
        res["facts"] = {"0": {"val_images": 25}, "1": {"val_images": 25}}
    text = _page(tmp_path, summary)
    [line] = [ln for ln in text.splitlines() if "validation images" in ln and "rests on" in ln]
    assert "rests on 25 validation images" in line and "4.0 points" in line
    many = _summary()
    for res in many["finals"]:
        res["facts"] = {"0": {"val_images": 6000}}
    (tmp_path / "many").mkdir()
    assert "rests on" not in _page(tmp_path / "many", many)
    # study init says it before any run, on the terminal and in the file
    folder = _shapes(tmp_path / "shapes", per_class=40)  # ~96 training images once ~20% is test
    assert main(["study", "init", "--data", str(folder)]) == 0
    out = capsys.readouterr()
    said = re.search(r"rests on about (\d+) validation images \(10% of the (\d+) training", out.err)
    assert said and 80 <= int(said[2]) <= 112 and int(said[1]) == round(int(said[2]) / 10)
    assert "# Few: every choice of the study" in out.out


def test_a_cell_without_an_interval_says_why(tmp_path):
    """Before any baseline is recorded the cells say so, not 'another teacher'."""
    summary = _summary()
    summary["finals"] = [f for f in summary["finals"] if f["method"] == "horkd"]
    text = _page(tmp_path, summary)
    assert "vs best baseline (none yet, by val)" in text
    assert "no baseline recorded yet" in text
    assert "another teacher" not in text
    # no teacher is on the page: none is said to be timed above
    assert "(and teachers trained beforehand) is reused" in text


def test_the_labels_curve_draws_a_method_trained_only_where_labels_are_few(tmp_path, monkeypatch):
    """The semi-supervised student is not trained with every label: it is still drawn along the
    shares it has (a shorter line), and a method with a single share is not a line at all."""
    import horkd.report.figures as figures
    from horkd.study.document import labels_figure

    drawn = {}
    monkeypatch.setattr(figures, "label_curve",
                        lambda series, references, *rest: drawn.update(series=series,
                                                                      references=references))

    def final(regime: str, method: str, value: float) -> dict:
        return {"regime": regime, "method": method, "val": {"0": value},
                "rows": {"0": [{"method": method, "role": "student", "lr_top1": value}]}}
    shares = {"labels1": 0.01, "labels10": 0.1, "full": None}
    study = {"seeds": [0], "baselines": ["scratch", "semi_supervised", "fitnet"],
             "label_curve": list(shares), "base": {"data": {}},
             "regimes": {r: {"overrides": [f"data.label_fraction={f}"] if f else []}
                         for r, f in shares.items()}}
    finals = [final(r, "scratch", 10.0 + i) for i, r in enumerate(shares)]
    finals += [final(r, "semi_supervised", 11.0 + i) for i, r in enumerate(["labels1", "labels10"])]
    finals += [final("labels1", "fitnet", 5.0), final("full", "lr_oracle", 80.0)]
    labels_figure({"study": study, "finals": finals}, tmp_path)
    assert [x for x, _, _ in drawn["series"]["scratch"]] == [1.0, 10.0, 100.0]
    assert [x for x, _, _ in drawn["series"]["semi_supervised"]] == [1.0, 10.0]
    assert "fitnet" not in drawn["series"]
    assert drawn["references"] == {"LR oracle, every label": 80.0}


def test_the_setup_names_a_loss_setting_only_some_methods_search(tmp_path):
    """Hinton KD searches its temperature, HORKD distils at the base's: the page says so, with
    what the searcher chose, so a difference between them is not read as the method's alone."""
    summary = _summary()
    study = summary["study"]
    study["methods"] = ["scratch", "hinton_kd", "horkd"]
    study["base"]["distill"] = {"loss": {"temperature": 4.0, "distance_weight": 25.0}}
    study["search"]["candidates"] = {
        "scratch": [["train.student.optimizer.lr=0.1"], ["train.student.optimizer.lr=0.2"]],
        "hinton_kd": [["distill.loss.temperature=2"], ["distill.loss.temperature=8"]],
        "horkd": [["distill.loss.distance_weight=5"], ["distill.loss.distance_weight=25"]]}
    summary["choices"] = {"full": {"hinton_kd": {"tag": "c0", "overrides": [
        "distill.loss.temperature=2"]}}}
    text = " ".join(_page(tmp_path, summary).split())
    assert ("only some methods search (the others distil at the base's; a difference between a "
            "method that searched one and one that did not is partly the search's): temperature "
            "by hinton_kd (chose 2); distance_weight by horkd.") in text
    study["search"]["candidates"]["horkd"] = [["distill.loss.temperature=2"],
                                              ["distill.loss.temperature=4"]]
    study["search"]["candidates"]["scratch"] = [[], []]
    assert "only some methods search" not in _page(tmp_path, summary)  # every distiller does


def test_a_study_without_a_label_only_baseline_says_so_not_that_one_is_pending():
    """A follow-up that trains Hinton KD and HORKD only has no scratch to compare with: its
    column says there is none, not "no baseline recorded yet" (which a reader waits on)."""
    from horkd.study.document import regime_tables

    def final(method: str, values: list[float]) -> dict:
        return {"regime": "t2", "method": method, "val": {"0": 60.0, "1": 61.0},
                "rows": {str(s): [{"method": method, "role": "student", "lr_top1": v}]
                         for s, v in enumerate(values)}}
    study = {"seeds": [0, 1], "baselines": ["hinton_kd"], "methods": ["hinton_kd", "horkd"],
             "regimes": {"t2": {}}}
    summary = {"study": study, "choices": {}, "teachers": {},
               "finals": [final("hinton_kd", [70.0, 71.0]), final("horkd", [70.5, 71.0])]}
    table, _ = regime_tables(summary, "t2")
    rows = [line for line in table.splitlines() if line.startswith("| horkd |")]
    assert rows and "none in this study" in rows[0] and "recorded yet" not in table
