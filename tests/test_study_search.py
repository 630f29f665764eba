"""Issue 38 item 5: searches that bracket their choice - several search seeds per candidate (its
score their mean), a one-knob numeric grid extended beyond the end it chose - and Hinton KD's
own knobs (temperature, the weight of its term) reaching the methods that use them."""

from __future__ import annotations

import json
import math

import yaml
from conftest import tiny_config_dict, tiny_study_base

from horkd.cli import main
from horkd.study.search_rounds import extension, next_step, one_knob


def test_the_next_step_continues_a_one_knob_grid_beyond_the_end_it_chose():
    kd = [["distill.loss.temperature=4", "distill.loss.logit_weight=1"],
          ["distill.loss.temperature=2", "distill.loss.logit_weight=1"],
          ["distill.loss.temperature=8", "distill.loss.logit_weight=1"]]
    assert one_knob(kd) == "distill.loss.temperature"
    assert next_step(kd, 2) == ["distill.loss.temperature=16", "distill.loss.logit_weight=1"]
    assert next_step(kd, 1) == ["distill.loss.temperature=1", "distill.loss.logit_weight=1"]
    assert next_step(kd, 0) is None  # 4 is interior
    lr = [["train.student.optimizer.lr=0.05"], ["train.student.optimizer.lr=0.1"]]
    assert next_step(lr, 1) == ["train.student.optimizer.lr=0.2"]
    assert next_step(lr, 0) == ["train.student.optimizer.lr=0.025"]
    # a value at or below zero: continued by the last step, not geometrically
    assert next_step([["a=0"], ["a=1"]], 0) == ["a=-1"]
    # two knobs varied together, a missing key, a value that is not a number: no grid to extend
    assert one_knob([["a=1", "b=2"], ["a=2", "b=4"]]) is None
    assert one_knob([["a=1"], ["a=2", "b=1"]]) is None
    assert one_knob([["orders=[1,2]"], ["orders=[2,3]"]]) is None
    # bounded: no steps left, or the step already searched
    assert extension(lr, 1, 0) is None
    assert extension(lr + [["train.student.optimizer.lr=0.2"]], 1, 2) is None


def test_hinton_kds_temperature_and_weight_reach_hinton_kd_and_kd_rkd(tmp_path):
    from horkd.config import config_from_dict
    from horkd.methods.presets import hybrid_loss
    from horkd.run_dir import student_fingerprint

    raw = tiny_config_dict(tmp_path)
    cfg = config_from_dict(raw, ["distill.loss.logit_weight=3", "distill.loss.temperature=2"])
    student = reference = type("Net", (), {"embed_dim": 8})()
    for terms in (("logits",), ("logits", "distance", "angle")):
        loss = hybrid_loss(cfg.distill.loss, student, reference, terms)
        assert (loss.logit_weight, loss.kd.temperature) == (3.0, 2.0), terms
    other = config_from_dict(raw, ["distill.loss.logit_weight=1", "distill.loss.temperature=2"])
    for method in ("hinton_kd", "kd_rkd"):  # a candidate of another weight trains its own run
        assert (student_fingerprint(cfg, 0, method, teacher="t", assistant=False)
                != student_fingerprint(other, 0, method, teacher="t", assistant=False))


def test_a_search_scores_candidates_over_its_seeds_and_extends_an_edge_choice(tmp_path,
                                                                              capsys):
    base = tiny_study_base(tmp_path)
    teacher = tiny_config_dict(tmp_path / "unused", methods=["scratch"])
    teacher["train"]["teacher"] = {**teacher["train"]["teacher"], "epochs": 1}
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    study = {
        "name": "search", "output_dir": str(tmp_path / "study"), "records": "records",
        "seeds": [0], "teachers": {"cls": "teacher.yaml"}, "base": base,
        "methods": ["scratch"], "baselines": ["scratch"], "main_regime": "lr4",
        "regimes": {"lr4": {"teacher": "cls"}}, "ablation_seeds": [],
        # two candidates: whichever is chosen sits at an end of the grid
        "search": {"seeds": [5, 6], "extend": 1, "candidates": {"scratch": [
            ["train.student.optimizer.lr=0.05"], ["train.student.optimizer.lr=0.1"]]}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    doc = tmp_path / "RESULTS.md"
    assert main(["study", str(path), "--threads", "1", "--doc", str(doc)]) == 0
    out = capsys.readouterr().out
    assert "[lr4] scratch: chose an end of its grid" in out, out
    records = tmp_path / "records" / "lr4" / "scratch"
    found = sorted(str(p.relative_to(records)) for p in records.rglob("search-*.json"))
    assert found == [f"c{i}/search-seed{s}.json" for i in range(3) for s in (5, 6)]
    summary = json.loads((tmp_path / "study" / "study.json").read_text())
    added = summary["extended"]["lr4"]["scratch"]
    assert added in ([["train.student.optimizer.lr=0.2"]], [["train.student.optimizer.lr=0.025"]])
    chosen = summary["choices"]["lr4"]["scratch"]
    vals = {t: [json.loads((records / t / f"search-seed{s}.json").read_text())["val"]
                for s in (5, 6)] for t in ("c0", "c1", "c2")}
    means = {t: sum(v) / 2 for t, v in vals.items()}
    assert math.isclose(chosen["val"], max(means.values()))
    assert chosen["tag"] == max(means, key=lambda t: (means[t], -int(t[1:])))
    page = doc.read_text()
    assert "(added: the grid extended)" in page and "(mean of 2 seeds)" in page
    assert "Extended beyond their declared grid (search.extend = 1 steps at most): `lr4` " \
           "scratch (1 step)" in page
    assert "search seeds [5, 6]" in page
    # the rounds are found again from the records: nothing pending, the same choice
    assert main(["study", str(path), "--status"]) == 0
    assert "7 runs - 7 recorded" in capsys.readouterr().out
    assert main(["study", str(path), "--no-train", "--doc", str(doc)]) == 0
    again = json.loads((tmp_path / "study" / "study.json").read_text())
    assert again["choices"] == summary["choices"] and again["extended"] == summary["extended"]


def test_the_extended_searches_are_listed_in_the_study_order_not_the_runs_order():
    """Two invocations of one study record its extensions in whichever order the runs ended:
    the page lists them by regime and method as the study file declares them, so a rebuilt
    page does not change."""
    from horkd.study.document import search_table

    study = {"regimes": {"a": {}, "b": {}}, "methods": ["scratch", "hinton_kd"],
             "search": {"candidates": {}, "extend": 1}}
    one = [["distill.loss.temperature=1"]]
    summary = {"study": study, "search": [], "choices": {},
               "extended": {"b": {"hinton_kd": one, "scratch": one}, "a": {"hinton_kd": one}}}
    assert "`a` hinton_kd (1 step), `b` scratch (1 step), `b` hinton_kd (1 step)." \
        in search_table(summary)
