"""Faults a reliability engineer throws at horkd (issue 39): damaged study records, outputs cut by
an interruption or a failure, a full disk and unwritable places, damaged files of a finished
stage, hand-edited model.json files, images far below the model's size, config errors in a
study file. Each ends in one clear line (or a note) and nothing a rerun trusts is left broken.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config_dict, tiny_study_base
from PIL import Image

from horkd.cli import main


def _one_line_error(err: str) -> str:
    """The ``horkd: error:`` line of stderr, asserting there is no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("horkd: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------------------------- a trained run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run of the LR scratch student on digits (16 px HR, 4 px LR), its config
    beside it as ``cfg.yaml``: copied by each test that damages it."""
    tmp = tmp_path_factory.mktemp("faults_run")
    raw = tiny_config_dict(tmp / "run", methods=["scratch"])
    raw["train"]["student"] = {**raw["train"]["student"], "epochs": 1}
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp / "cfg.yaml"), "--no-progress", "--no-report"]) == 0
    return tmp


def _copy_run(tiny_run: Path, tmp_path: Path) -> list[str]:
    """The finished run copied under ``tmp_path``; the command that continues it."""
    shutil.copytree(tiny_run / "run", tmp_path / "run")
    cfg = tmp_path / "cfg.yaml"
    for path in (tmp_path / "run/config.yaml", cfg):  # the same run, in its new place
        raw = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
        path.write_text(yaml.safe_dump({**raw, "output_dir": str(tmp_path / "run")}))
    return ["run", str(cfg), "--no-progress", "--no-report"]


def _images(folder: Path, count: int = 6, side: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("L", (side, side), 20 * i).save(folder / f"{i}.png")
    return folder


# ----------------------------------------------------------------------------- item 2: records
def _record(kind: str = "final", **changes):
    from horkd.study.records import RunRecord

    rows = [{"method": "scratch", "role": "student", "lr_top1": 50.0}] if kind == "final" else []
    record = RunRecord("k" * 16, kind, "lr4", "scratch", "c0", 0, {"seeds": [0]},
                       {"name": "cls", "fingerprint": "f"}, 61.5, rows=rows, numerics_version=1)
    for key, value in changes.items():
        setattr(record, key, value)
    return record


DAMAGE = {
    "truncated": lambda text: text[:120],
    "a list": lambda text: "[]",
    "an extra key": lambda text: json.dumps({**json.loads(text), "surprise": 1}),
    "no val": lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "val"}),
    "a string val": lambda text: json.dumps({**json.loads(text), "val": "61.5"}),
    "a final without rows": lambda text: json.dumps({**json.loads(text), "rows": []}),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_record_is_moved_aside_named_in_one_line_and_its_run_pending(
    tmp_path, capsys, damage
):
    """Before: a truncated record stopped every study command with a bare JSON error, `[]`,
    an extra key or no val gave a traceback, a string val or a final without rows counted as
    recorded."""
    from horkd.study.records import RecordBook, read_record

    book = RecordBook(tmp_path / "records")
    path = book.save(_record())
    key = _record().key
    assert book.load("final", "lr4", "scratch", "c0", 0, key) is not None
    path.write_text(DAMAGE[damage](path.read_text()))
    capsys.readouterr()
    assert book.load("final", "lr4", "scratch", "c0", 0, key) is None  # pending: trains again
    aside = path.with_name(path.name + ".damaged")
    assert aside.is_file() and not path.exists()
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(path) in err and "moved aside" in err, err
    assert book.damaged() == [aside]
    assert book.load("final", "lr4", "scratch", "c0", 0, key) is None  # named once
    assert capsys.readouterr().err == ""
    shutil.copy(aside, path)
    with pytest.raises(ValueError, match="is not a horkd run record"):
        read_record(path)


def test_records_old_and_new_are_read_and_written_atomically(tmp_path, monkeypatch):
    """A record made before numerics_version (or environment) existed is still a record; a
    search run that diverged keeps its NaN score; a save goes through a temporary file."""
    import horkd.checkpoint as checkpoint
    from horkd.study.records import RecordBook

    book = RecordBook(tmp_path / "records")
    path = book.save(_record())
    old = {k: v for k, v in json.loads(path.read_text()).items()
           if k not in ("numerics_version", "environment")}
    path.write_text(json.dumps(old))
    loaded = book.load("final", "lr4", "scratch", "c0", 0, _record().key)
    assert loaded is not None and loaded.numerics_version == 0
    diverged = book.save(_record("search", val=math.nan, error="non-finite loss"))
    assert math.isnan(book.load("search", "lr4", "scratch", "c0", 0, _record().key).val)
    written = []
    real = checkpoint.atomic_write
    monkeypatch.setattr(checkpoint, "atomic_write",
                        lambda p, write, what=None: written.append(p) or real(p, write, what))
    book.save(_record("search"))
    assert written == [diverged]


def _tiny_study(tmp_path: Path, methods: tuple[str, ...] = ("scratch", "hinton_kd")) -> Path:
    """Digits at 16 px, one candidate per method, two final seeds."""
    base = tiny_study_base(tmp_path)
    teacher = tiny_config_dict(tmp_path / "unused", methods=["scratch"])
    teacher["train"]["teacher"] = {**teacher["train"]["teacher"], "epochs": 1}
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    candidates = {"scratch": [["train.student.optimizer.lr=0.05"]],
                  "hinton_kd": [["distill.loss.logit_weight=1"]]}
    study = {
        "name": "faults", "output_dir": str(tmp_path / "study"), "records": "records",
        "seeds": [0, 1], "teachers": {"cls": "teacher.yaml"}, "base": base,
        "methods": list(methods), "baselines": ["scratch"], "main_regime": "lr4",
        "regimes": {"lr4": {"teacher": "cls"}},
        "search": {"seed": 5, "candidates": {m: candidates[m] for m in methods}},
        "ablation_seeds": [],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_study_with_one_truncated_record_finishes_names_it_and_retrains_only_that_run(
    tmp_path, capsys
):
    """Before: `horkd study` stopped with `horkd: error: Unterminated string ...`, naming no
    file, and trained nothing."""
    path = _tiny_study(tmp_path)
    assert main(["study", str(path), "--threads", "1"]) == 0
    records = tmp_path / "records"
    made = {p: p.read_bytes() for p in records.rglob("*-seed*.json")
            if p.parent.name != "teachers"}
    assert len(made) == 2 + 2 * 2  # a search run per method, two final seeds of each
    damaged = records / "lr4" / "hinton_kd" / "c0" / "final-seed1.json"
    whole = json.loads(damaged.read_text())
    damaged.write_bytes(damaged.read_bytes()[:1000])
    shutil.rmtree(tmp_path / "study")  # a fresh clone: records only, every run would train
    capsys.readouterr()
    assert main(["study", str(path), "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    named = [line for line in err.splitlines() if str(damaged) in line]
    assert len(named) == 1 and "moved aside" in named[0], err
    assert "2 tasks to train (1 run, 1 teacher; 5 of 6 runs recorded)" in out, out
    assert "final lr4/hinton_kd/c0 seed 1" in out
    assert damaged.with_name(damaged.name + ".damaged").is_file()
    again = json.loads(damaged.read_text())  # recorded again, the same numbers to the bit
    assert (again["val"], again["rows"]) == (whole["val"], whole["rows"])
    for other, data in made.items():
        if other != damaged:
            assert other.read_bytes() == data, other  # reused, not written again
    trained = {p.relative_to(tmp_path / "study/runs") for p in
               (tmp_path / "study/runs").rglob("model.safetensors")}
    assert {p.parts[:3] for p in trained} == {("lr4", "hinton_kd", "c0-seed1")}
    assert main(["study", str(path), "--status"]) == 0
    status = capsys.readouterr().out
    assert "damaged records" in status and f"{damaged}.damaged" in status
    assert "6 runs - 6 recorded" in status


def test_a_damaged_teacher_record_is_named_moved_aside_and_recorded_again(tmp_path, capsys):
    """Before: a truncated teacher record stopped `horkd study`, `--status` and `--no-train` with
    a bare JSON error naming no file, and the study never recovered."""
    path = _tiny_study(tmp_path)
    assert main(["study", str(path), "--threads", "1"]) == 0
    teacher = next((tmp_path / "records" / "teachers").glob("*.json"))
    whole = json.loads(teacher.read_text())
    teacher.write_bytes(teacher.read_bytes()[:200])
    capsys.readouterr()
    assert main(["study", str(path), "--status"]) == 0  # names it, moves it aside
    err = capsys.readouterr().err
    assert str(teacher) in err and "moved aside" in err, err
    assert teacher.with_name(teacher.name + ".damaged").is_file()
    assert main(["study", str(path), "--no-train"]) == 0  # the page is written without it
    # the next run that needs the teacher records it again (here from its finished stage)
    (tmp_path / "records" / "lr4" / "scratch" / "c0" / "final-seed1.json").unlink()
    assert main(["study", str(path), "--threads", "1"]) == 0
    again = json.loads(teacher.read_text())
    assert (again["fingerprint"], again["val"]) == (whole["fingerprint"], whole["val"])
    teacher.write_text("[]")
    assert main(["study", str(path), "--no-train"]) == 0
    assert "a teacher record is a JSON object" in capsys.readouterr().err


# ------------------------------------------------------------------- item 3: atomic outputs
def test_predict_interrupted_or_failing_leaves_the_previous_csv_whole(tiny_run, tmp_path,
                                                                     monkeypatch, capsys):
    """Before: the CSV was opened for writing at once, so an interrupted predict left it cut
    short (the rows so far) and a failure after loading left its header only."""
    from horkd.inference.recogniser import Recogniser

    model = tiny_run / "run/seed0/students/scratch"
    images = _images(tmp_path / "images")
    out = tmp_path / "labels.csv"
    argv = ["predict", str(model), str(images), "--out", str(out), "--batch-size", "2",
            "--workers", "0"]
    assert main(argv) == 0
    good = out.read_bytes()
    assert len(good.splitlines()) == 7
    stream = Recogniser.stream

    def stopped_after_one_batch(self, *args, **kwargs):
        for i, item in enumerate(stream(self, *args, **kwargs)):
            if i == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(Recogniser, "stream", stopped_after_one_batch)
    assert main(argv) == 130
    assert out.read_bytes() == good
    assert not out.with_name("labels.csv.partial").exists()

    def fails(self, *args, **kwargs):
        raise RuntimeError("the model failed")
        yield

    monkeypatch.setattr(Recogniser, "stream", fails)
    with pytest.raises(RuntimeError):
        main(argv)
    assert out.read_bytes() == good
    assert not out.with_name("labels.csv.partial").exists()


def test_results_interrupted_while_written_leave_the_previous_files_whole(tiny_run, tmp_path,
                                                                         monkeypatch):
    """Before: results.csv, .md and .json were written in place: an interruption mid-write
    left them cut short."""
    from horkd.config import load_config
    from horkd.results import write_results

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    before = {name: (run / name).read_bytes() for name in
              ("results.csv", "results.md", "results.json")}
    table = json.loads(before["results.json"])
    cfg = load_config(tiny_run / "cfg.yaml")

    def interrupted(self, rows):
        self.writer.writerow({k: "partial" for k in self.fieldnames})
        raise KeyboardInterrupt

    monkeypatch.setattr(csv.DictWriter, "writerows", interrupted)
    table[0]["method"] = "changed"
    with pytest.raises(KeyboardInterrupt):
        write_results(run, table, cfg)
    assert (run / "results.csv").read_bytes() == before["results.csv"]
    assert (run / "results.md").read_bytes() == before["results.md"]
    assert not list(run.glob(".results.*"))  # no temporary file left beside them


# --------------------------------------------------------------- item 4: full disk, bad place
def test_a_full_disk_is_one_line_naming_the_file_and_the_rerun_finishes(tiny_run, tmp_path,
                                                                      monkeypatch, capsys):
    """Before: `horkd run` on a full disk ended in safetensors' SafetensorError traceback."""
    from safetensors import SafetensorError

    import horkd.train_state

    argv = _copy_run(tiny_run, tmp_path)
    shutil.rmtree(tmp_path / "run/seed0/students/scratch")  # this stage trains again
    real = horkd.train_state.save_file

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    monkeypatch.setattr(horkd.train_state, "save_file", full)
    assert main(argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    state = tmp_path / "run/seed0/students/scratch/train_state.safetensors"
    assert f"cannot write {state}" in line and "no space left on the device" in line, line
    assert not list(state.parent.glob(".train_state*"))  # nothing half-written kept
    monkeypatch.setattr(horkd.train_state, "save_file", real)  # space freed: the rerun finishes
    assert main(argv) == 0
    assert (state.parent / "model.safetensors").is_file()


def test_a_full_records_folder_or_a_read_only_place_is_one_line_naming_the_path(
    tmp_path, monkeypatch, tiny_run, capsys
):
    """Before: `[Errno 28] No space left on device` with no path; a file where the output's
    folder should be said `[Errno 17] File exists` naming neither the output nor its role."""
    import os
    import tempfile

    from horkd.checkpoint import OutputError
    from horkd.study.records import RecordBook

    book = RecordBook(tmp_path / "records")
    path = book.save(_record())
    before = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", no_space)
        with pytest.raises(OutputError, match=re.escape(
                f"cannot write {path} (a study record): no space left on the device")):
            book.save(_record(val=70.0))
    assert path.read_bytes() == before and not list(path.parent.glob(".final-seed0*"))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", read_only)
        with pytest.raises(OutputError, match="the filesystem is read-only"):
            book.save(_record(val=70.0))
    assert path.read_bytes() == before
    # a file where the output's folder should be (root writes anywhere: no chmod test)
    (tmp_path / "blocker").write_text("a file")
    images = _images(tmp_path / "images", count=2)
    model = tiny_run / "run/seed0/students/scratch"
    capsys.readouterr()
    assert main(["predict", str(model), str(images), "--out",
                 str(tmp_path / "blocker/labels.csv"), "--workers", "0"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"cannot write {tmp_path / 'blocker/labels.csv'} (the predictions): " in line, line
    assert f"{tmp_path / 'blocker'} is a file where a folder should be" in line, line


# --------------------------------------------------------- item 5: damaged finished stages
def test_a_finished_stage_with_unreadable_weights_or_state_trains_again(tiny_run, tmp_path,
                                                                       capsys):
    """Before: a truncated model.safetensors of a finished stage stopped every rerun with
    `cannot read checkpoint weights ...: invalid header length` until done.json was deleted
    by hand; a truncated train_state.safetensors stopped it with `cannot read training
    state`."""
    argv = _copy_run(tiny_run, tmp_path)
    stage = tmp_path / "run/seed0/students/scratch"
    weights = stage / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    named = [line for line in out.splitlines() if str(weights) in line]
    assert len(named) == 1 and "training it again" in named[0], out
    assert "invalid header length" in named[0]
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert results == json.loads((tiny_run / "run/results.json").read_text())  # same numbers
    # an interrupted stage whose saved state is cut short starts over
    (stage / "done.json").unlink()
    state = stage / "train_state.safetensors"
    state.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    assert main(argv) == 0
    out = capsys.readouterr().out
    named = [line for line in out.splitlines() if str(state) in line]
    assert len(named) == 1 and "starts over" in named[0], out
    assert (stage / "train_state.safetensors.damaged").is_file()
    assert json.loads((tmp_path / "run/results.json").read_text()) == results


# ------------------------------------------------------------------- item 6: model.json
def _edited(meta: dict, edit: str) -> object:
    meta = json.loads(json.dumps(meta))
    if edit == "a list":
        return [1, 2]
    if edit == "hr_size null":
        meta["input"]["hr_size"] = None
    elif edit == "no model":
        del meta["model"]
    elif edit == "one class too many":
        meta["classes"] = [f"c{i}" for i in range(meta["model"]["num_classes"] + 1)]
    elif edit == "lr_size 0":
        meta["input"]["lr_size"] = 0
    elif edit == "a negative channel count":
        meta["model"]["in_channels"] = -1
    return meta


@pytest.mark.parametrize(("edit", "needle"), [
    ("a list", "must hold a JSON object"),
    ("hr_size null", "input.hr_size: Input should be a valid integer"),
    ("no model", "model: Field required"),
    ("one class too many", "classes: 11 class names for a head of 10 outputs"),
    ("lr_size 0", "input.lr_size: Input should be greater than or equal to 1"),
    ("a negative channel count", "model.in_channels: Input should be greater than or equal"),
])
def test_a_hand_edited_model_json_is_refused_one_line_per_problem(tiny_run, tmp_path, capsys,
                                                                  edit, needle):
    """Before: `[1,2]`, a null hr_size or no model gave tracebacks; one class name too many
    relabelled every prediction with exit 0; lr_size 0 silently changed the predictions."""
    model = tmp_path / "model"
    shutil.copytree(tiny_run / "run/seed0/students/scratch", model)
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps(_edited(meta, edit)))
    images = _images(tmp_path / "images", count=2)
    out = tmp_path / "labels.csv"
    assert main(["predict", str(model), str(images), "--out", str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("horkd: error:"), err
    assert str(model / "model.json") in err.splitlines()[0]
    assert needle in err, err
    assert not out.exists()


def test_an_image_far_below_the_model_size_gets_a_note_in_the_csv(tiny_run, tmp_path):
    """Before: a 2x2 image was enlarged to the 16-px HR size and labelled with no word."""
    model = tiny_run / "run/seed0/students/scratch"
    images = _images(tmp_path / "images", count=2)
    Image.new("L", (2, 2), 90).save(images / "tiny.png")
    out = tmp_path / "labels.csv"
    assert main(["predict", str(model), str(images), "--out", str(out), "--workers", "0"]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert rows["tiny.png"]["label"]  # still predicted
    assert "image 2x2 px is far below the model's HR size 16 px" in rows["tiny.png"]["note"]
    assert "--input lr" in rows["tiny.png"]["note"]
    assert rows["0.png"]["note"] == ""  # 16 px: the model's own size
    assert main(["predict", str(model), str(images), "--out", str(out), "--workers", "0",
                 "--input", "lr"]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert rows["tiny.png"]["note"] == "" and rows["0.png"]["note"] == ""  # 2 px is LR size-ish


def test_the_python_api_warns_of_an_image_far_below_the_model_size_as_predict_notes(tiny_run):
    """Before: `Recogniser.predict` enlarged a 2x2 image to 16 px and answered with no word,
    where `horkd predict` writes a note."""
    import warnings

    from horkd import Recogniser
    from horkd.inference.recogniser import SmallImageWarning

    model = Recogniser.load(tiny_run / "run/seed0/students/scratch")
    tiny, fine = Image.new("L", (2, 2), 90), Image.new("L", (16, 16), 90)
    with pytest.warns(SmallImageWarning) as said:
        assert model.predict([fine, tiny, tiny])[1][0][0] in model.classes  # still predicted
    assert len(said) == 1
    text = str(said[0].message)
    assert text.startswith("images[1]: image 2x2 px is far below the model's HR size 16 px")
    assert 'kind="lr"' in text and "--input" not in text and "(and 1 more of the 3)" in text
    assert said[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict([fine])  # the model's own size: nothing to say
        model.embed([Image.new("L", (8, 8))])  # half its side: still nothing
        model.predict([tiny], kind="lr")  # a 2-px capture for a 4-px network: near its size


def test_a_recognisers_repr_says_which_network_what_it_takes_and_names(tiny_run):
    from horkd import Recogniser

    stage = tiny_run / "run/seed0/students/scratch"
    said = repr(Recogniser.load(stage))
    assert said.startswith("Recogniser(student 'scratch', seed 0: cnn_tiny width 4, ")
    assert "1-channel HR 16 px -> LR 4 px; 10 classes (0, 1, 2, 3, ...)" in said
    assert f"from {stage / 'model'}; on cpu)" in said


# ------------------------------------------------------------- item 8: errors name the place
def test_study_file_errors_name_the_file_and_the_key_path(tmp_path, capsys):
    """Before: a typo under base read `regimes.lr4.overrides: invalid config: train.studnet`,
    a bad candidate or teacher file only `invalid config:`, naming no file."""
    path = _tiny_study(tmp_path)
    study = yaml.safe_load(path.read_text())

    def error_of(changed: dict) -> str:
        path.write_text(yaml.safe_dump(changed))
        assert main(["study", str(path), "--status"]) == 2
        return capsys.readouterr().err

    typo = json.loads(json.dumps(study))
    typo["base"]["train"]["studnet"] = {"epochs": 2}
    err = error_of(typo)
    assert f"invalid study {path}:" in err and "  base.train.studnet: unknown key" in err, err
    assert "regimes" not in err
    candidate = json.loads(json.dumps(study))
    candidate["search"]["candidates"]["hinton_kd"].append(["distill.loss.logit_wieght=2"])
    candidate["search"]["candidates"]["scratch"].append(["train.student.optimizer.lr=0.1"])
    err = error_of(candidate)
    assert (f"invalid study {path}:" in err and "search.candidates.hinton_kd[1]: "
            "distill.loss.logit_wieght: unknown key" in err), err
    teacher = yaml.safe_load((tmp_path / "teacher.yaml").read_text())
    teacher["train"]["teachr"] = {"epochs": 1}
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    err = error_of(study)
    assert f"teachers.cls ({tmp_path / 'teacher.yaml'}): train.teachr: unknown key" in err, err
    # a plain config file names itself, and a key an override set names the override
    cfg = tmp_path / "teacher.yaml"
    assert main(["run", str(cfg), "train.studnet.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert f"invalid config {cfg}:" in err and "train.teachr: unknown key" in err
    assert "train.studnet: unknown key" in err and "(the override train.studnet.epochs=1)" in err


def test_a_run_killed_while_writing_its_config_continues_in_its_folder(tmp_path, tiny_cfg):
    """SIGKILL during the atomic write of config.yaml leaves only the writer's temporary file;
    the retry (a study worker's) must continue there, not refuse the folder as someone else's."""
    from horkd.config import config_from_dict
    from horkd.run_dir import prepare_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".config.yaml.k1ll3d").write_text("name: half")
    prepare_run_dir(config_from_dict(tiny_cfg), run_dir)
    assert (run_dir / "config.yaml").is_file()
    assert not list(run_dir.glob(".config.yaml.*"))  # the torn temporary is gone


def test_a_full_disk_while_logging_names_the_log(tmp_path, monkeypatch):
    """Before: `[Errno 28] No space left on device` with no path, from the metrics log."""
    import errno

    import pytest

    from horkd.checkpoint import OutputError
    from horkd.logger import MetricsLogger

    logger = MetricsLogger(tmp_path / "stage", tensorboard=False)
    real_open = Path.open

    def full(self, *args, **kwargs):
        if self.name == "metrics.jsonl":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(OutputError, match="metrics.jsonl"):
        logger.log({"epoch": 1, "train/loss": 1.0})


def test_a_record_whose_rows_the_page_cannot_read_is_damage_and_a_nan_val_is_shown(tmp_path):
    """Before: `rows: [{}]` passed the check and crashed the page (KeyError: 'role'); a final
    with a NaN validation score crashed it in statistics.stdev."""
    import math

    import pytest

    from horkd.study.records import DamagedRecord, _check
    from horkd.study.stats import summarize

    record = {"key": "k", "kind": "final", "regime": "r", "method": "scratch", "tag": "c0",
              "seed": 0, "config": {}, "teacher": {}, "val": 50.0,
              "rows": [{"method": "scratch", "role": "student", "lr_top1": 70.0}]}
    assert _check(record).rows[0]["lr_top1"] == 70.0
    for rows, why in (([{}], "no 'method' or 'role'"),
                      ([{"method": "scratch", "role": "student", "lr_top1": "70"}],
                       "is not a number")):
        with pytest.raises(DamagedRecord, match=why):
            _check({**record, "rows": rows})
    assert math.isnan(summarize([50.0, math.nan]).mean)  # shown as nan, not a traceback
