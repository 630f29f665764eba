"""Issue 38 items 1 and 2: a study run records the teacher weights it learnt from; a regime never
pairs runs that learnt from different teachers (it retrains what learnt from another where its
own teacher is on disk, and pairs within a teacher where that one is gone); several teachers as
a factor, the final seeds spread over them round-robin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config_dict, tiny_study_base

from horkd.checkpoint import save_checkpoint
from horkd.cli import main
from horkd.study.config import load_study
from horkd.study.document import page_comparisons
from horkd.study.runner import Study
from horkd.study.teacher_identity import (
    UNKNOWN,
    paired_seeds,
    regime_teacher,
    teacher_note,
    weights_digest,
)


def test_the_digest_is_of_the_tensors_not_the_file(tmp_path):
    net = torch.nn.Linear(3, 2)
    meta = {"model": {"arch": "x", "num_classes": 2}}
    save_checkpoint(tmp_path / "a" / "model", net, meta)
    save_checkpoint(tmp_path / "b" / "model", net, {**meta, "seed": 7})  # other metadata
    first = weights_digest(tmp_path / "a" / "model")
    assert first is not None and len(first) == 16
    assert weights_digest(tmp_path / "b" / "model.safetensors") == first
    with torch.no_grad():
        net.bias[0] += 1e-6  # one weight changed a little: another teacher
    save_checkpoint(tmp_path / "a" / "model", net, meta)
    assert weights_digest(tmp_path / "a" / "model") != first
    assert weights_digest(tmp_path / "missing" / "model") is None


def test_a_regimes_teacher_is_the_one_most_of_its_runs_learnt_from():
    assert regime_teacher(["a", "a", "b"], on_disk="b") == "a"
    assert regime_teacher(["a", "b"], on_disk="b") == "b"  # a tie goes to the one on disk
    assert regime_teacher([UNKNOWN, UNKNOWN, "b"], on_disk=None) == "b"
    assert regime_teacher([UNKNOWN], on_disk="b") is None
    # None: a method that learns from no teacher pairs with any
    assert paired_seeds([0, 1, 2], {0: "a", 1: "a", 2: "b"}, {0: "a", 1: None, 2: "a"}) == (
        [0, 1], [2])


def _summary(weights: dict[str, dict[int, str | None]]) -> dict:
    """A study summary of one regime: three methods, five seeds, HORKD declared against
    Hinton KD within +-0.5."""
    values = {"scratch": [70.0, 71, 70.5, 70.2, 70.9], "hinton_kd": [80.0, 80.5, 79.8, 80.1, 80.4],
              "horkd": [80.3, 80.6, 80.2, 80.4, 80.2]}
    finals = [{"regime": "r", "method": m, "val": {str(s): v[s] for s in range(5)},
               "rows": {str(s): [{"method": m, "role": "student", "lr_top1": v[s]}]
                        for s in range(5)},
               "weights": {str(s): weights[m][s] for s in range(5)}} for m, v in values.items()]
    study = {"seeds": [0, 1, 2, 3, 4], "methods": list(values), "baselines": ["scratch",
             "hinton_kd"], "comparisons": {"horkd": "hinton_kd"}, "margin": 0.5,
             "regimes": {"r": {"teacher": "cls", "overrides": []}}}
    return {"study": study, "finals": finals, "choices": {}, "teachers": {}}


def test_the_page_pairs_runs_only_within_a_teacher():
    one = {"scratch": dict.fromkeys(range(5)), "hinton_kd": dict.fromkeys(range(5), "t1"),
           "horkd": dict.fromkeys(range(5), "t1")}
    whole = page_comparisons(_summary(one))[0]
    assert whole.n == 5 and whole.apart == ()
    one["horkd"][4] = "t2"  # HORKD's seed 4 learnt from a teacher trained again
    mixed = page_comparisons(_summary(one))[0]
    assert mixed.n == 4 and mixed.apart == (4,)
    diffs = [80.3 - 80.0, 80.6 - 80.5, 80.2 - 79.8, 80.4 - 80.1]
    assert mixed.mean == pytest.approx(sum(diffs) / 4)
    one["horkd"] = dict.fromkeys(range(5), "t2")
    apart = page_comparisons(_summary(one))[0]
    assert apart.n == 0 and apart.apart == (0, 1, 2, 3, 4) and apart.p is None
    note = "\n".join(teacher_note({m: one[m] for m in one}, list(range(5))))
    assert "not paired: hinton_kd / horkd (seeds 0, 1, 2, 3, 4)" in note


def _study(tmp_path: Path, **regime) -> Path:
    """Digits at 16 px: scratch, Hinton KD and RKD, one candidate each, two final seeds; RKD
    declared against Hinton KD."""
    base = tiny_study_base(tmp_path)
    teacher = tiny_config_dict(tmp_path / "unused", methods=["scratch"])
    teacher["train"]["teacher"] = {**teacher["train"]["teacher"], "epochs": 1}
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    candidates = {"scratch": [["train.student.optimizer.lr=0.05"]],
                  "hinton_kd": [["distill.loss.logit_weight=1"]],
                  "rkd": [["distill.loss.distance_weight=1"]]}
    study = {
        "name": "teachers", "output_dir": str(tmp_path / "study"), "records": "records",
        "seeds": [0, 1], "teachers": {"cls": "teacher.yaml"}, "base": base,
        "methods": list(candidates), "baselines": ["scratch"], "main_regime": "lr4",
        "regimes": {"lr4": {"teacher": "cls", **regime}},
        "search": {"seed": 5, "candidates": candidates},
        "comparisons": {"rkd": "hinton_kd"}, "margin": 1.0, "ablation_seeds": [],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _set_weights(path: Path, weights: str) -> None:
    record = json.loads(path.read_text())
    record["teacher"]["weights"] = weights
    path.write_text(json.dumps(record))


def test_a_run_that_learnt_from_another_teacher_is_retrained_or_left_unpaired(tmp_path, capsys):
    path = _study(tmp_path)
    assert main(["study", str(path), "--threads", "1"]) == 0
    records = tmp_path / "records" / "lr4"
    disk = weights_digest(tmp_path / "study/teachers/cls/seed0/teacher/model")
    made = {p: json.loads(p.read_text()) for p in records.rglob("*-seed*.json")}
    assert len(made) == 3 + 3 * 2
    assert {r["teacher"]["weights"] for r in made.values()} == {disk}  # scratch's too
    teacher = json.loads((tmp_path / "records/teachers/cls-seed0.json").read_text())
    assert teacher["weights"] == disk

    # a run recorded from another teacher while the regime's is on disk: pending, retrained
    stray = records / "hinton_kd" / "c0" / "final-seed1.json"
    _set_weights(stray, "0123456789abcdef")
    capsys.readouterr()
    assert main(["study", str(path), "--status"]) == 0
    status = capsys.readouterr().out
    assert "9 runs - 8 recorded" in status, status
    assert "learnt from another teacher" in status and "final lr4/hinton_kd/c0 seed 1" in status
    assert main(["study", str(path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    # the run alone: its teacher is on disk and only loads (not a task)
    assert "1 task to train (1 run; 8 of 9 runs recorded)" in out, out
    assert "final lr4/hinton_kd/c0 seed 1: learnt from another teacher" in out
    assert json.loads(stray.read_text())["teacher"]["weights"] == disk
    assert json.loads(stray.read_text())["rows"] == made[stray]["rows"]  # the same teacher again

    # the regime's teacher is gone (every run learnt from one not on disk), RKD's seed 1 from a
    # third: nothing is retrained, the pair of seed 1 is left out and named
    for record in records.rglob("*-seed*.json"):
        if "scratch" not in record.parts:
            _set_weights(record, "unhashed@1.00")
    _set_weights(records / "rkd" / "c0" / "final-seed1.json", "unhashed@2.00")
    assert main(["study", str(path), "--status"]) == 0
    assert "9 runs - 9 recorded" in capsys.readouterr().out
    doc = tmp_path / "RESULTS.md"
    assert main(["study", str(path), "--no-train", "--doc", str(doc)]) == 0
    page = doc.read_text()
    assert "rkd - hinton_kd" in page and "seed 1 left out" in page, page
    assert "not paired: hinton_kd / rkd (seed 1)" in page
    assert "the teacher of best val 2.00 (weights not kept): rkd 1" in page

    # a run trained now (its record gone) learns from the teacher on disk and the log says so
    (records / "rkd" / "c0" / "final-seed1.json").unlink()
    assert main(["study", str(path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "[lr4] its recorded runs learnt from the teacher of best val 1.00" in out, out
    assert json.loads((records / "rkd/c0/final-seed1.json").read_text())[
        "teacher"]["weights"] == disk


def test_teachers_as_a_factor_spread_the_final_seeds_round_robin(tmp_path):
    path = _study(tmp_path, teacher_seeds=[0, 1], seeds=[0, 1, 2])
    study, root = load_study(path)
    runner = Study(study, root)
    assert [runner.teachers.slot("lr4", s) for s in (0, 1, 2)] == [("cls", 0), ("cls", 1),
                                                                   ("cls", 0)]
    assert runner.teachers.slot("lr4", 5) == ("cls", 0)  # the search seed: the first teacher
    jobs = {j.seeds[0]: j for j in runner.final_jobs("lr4", {"hinton_kd": {
        "tag": "c0", "overrides": []}})}
    checkpoints = {s: j.config["teacher"]["checkpoint"] for s, j in jobs.items()}
    assert checkpoints[0] == str(tmp_path / "study/teachers/cls/seed0/teacher/model")
    assert checkpoints[1] == str(tmp_path / "study/teachers/cls-seed1/seed1/teacher/model")
    assert checkpoints[2] == checkpoints[0]
    prints = {s: j.teacher[str(s)]["fingerprint"] for s, j in jobs.items()}
    assert prints[0] == prints[2] != prints[1]
    raw = yaml.safe_load(path.read_text())
    raw["regimes"]["lr4"]["teacher_per_seed"] = True
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match="teacher_per_seed trains a teacher per run seed"):
        load_study(path)


def test_a_teacher_record_tells_teachers_apart_by_their_weights():
    from horkd.study.jobs import teacher_record

    first = {"name": "cls", "seed": 0, "fingerprint": "f", "val": 94.0, "weights": "a" * 16}
    assert teacher_record(first, dict(first)) == first  # loaded again: the same teacher
    # trained again to the same score but other weights: another teacher, listed as such
    again = teacher_record(first, {**first, "weights": "b" * 16})
    assert again["weights"] == "a" * 16 and [r["weights"] for r in again["retrained"]] == [
        "b" * 16]
    assert teacher_record(again, {**first, "weights": "b" * 16}) == again  # listed once
    # a record from before the digest: the same score reads as the same teacher, adopting it
    legacy = {k: v for k, v in first.items() if k != "weights"}
    assert teacher_record(legacy, first)["weights"] == "a" * 16
