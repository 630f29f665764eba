"""Issue 38 item 7: a confirmatory regime's design (resolved overrides, methods, candidates,
seeds, teachers, comparisons, margin) is registered at its first run, beside its records; a
later change of it with runs recorded is refused in one line naming what changed, unless a new
registration is started explicitly."""

from __future__ import annotations

import json

import yaml
from conftest import tiny_config_dict, tiny_study_base

from horkd.cli import main


def _study(tmp_path, **regime):
    base = tiny_study_base(tmp_path)
    teacher = tiny_config_dict(tmp_path / "unused", methods=["scratch"])
    teacher["train"]["teacher"] = {**teacher["train"]["teacher"], "epochs": 1}
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    study = {
        "name": "registered", "output_dir": str(tmp_path / "study"), "records": "records",
        "seeds": [0], "teachers": {"cls": "teacher.yaml"}, "base": base,
        "methods": ["scratch", "hinton_kd"], "baselines": ["scratch"], "main_regime": "lr4",
        "regimes": {"lr4": {"teacher": "cls", "role": "confirmatory",
                            "comparisons": {"hinton_kd": "scratch"}, "margin": 1.0, **regime}},
        "search": {"seed": 5, "candidates": {"scratch": [["train.student.optimizer.lr=0.05"]],
                                            "hinton_kd": [["distill.loss.temperature=4"]]}},
        "ablation_seeds": [],
        "targets": [{"claim": "KD over scratch by 1", "regime": "lr4", "method": "hinton_kd",
                     "comparator": "scratch", "at_least": 1.0}],
        "budget_cpu_hours": 1.0,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path, study


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("horkd: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_confirmatory_design_is_registered_at_its_first_run_and_then_fixed(tmp_path, capsys):
    path, study = _study(tmp_path)
    registration = tmp_path / "records" / "lr4" / "registration.json"
    assert main(["study", str(path), "--no-train"]) == 0
    assert not registration.exists()  # a page from the records registers nothing
    doc = tmp_path / "RESULTS.md"
    assert main(["study", str(path), "--threads", "1", "--doc", str(doc)]) == 0
    entry = json.loads(registration.read_text())
    assert len(entry["digest"]) == 16 and entry["date"] and "git_commit" in entry
    design = entry["design"]
    assert design["methods"] == ["scratch", "hinton_kd"] and design["seeds"] == [0]
    assert design["comparisons"] == [["hinton_kd", "scratch"]] and design["margin"] == 1.0
    assert design["candidates"]["hinton_kd"] == [["distill.loss.temperature=4"]]
    assert design["experiment"]["data"]["split_seed"] == 0 and "cls/seed0" in design["teachers"]
    assert design["targets"]["0"]["at_least"] == 1.0 and design["budget_cpu_hours"] == 1.0
    assert "claim" not in design["targets"]["0"]  # its words may be mended, not its numbers
    page = doc.read_text()
    assert f"## Regime `lr4` (confirmatory, design registered {entry['date']}" in page
    assert entry["digest"] in page
    # the targets set before the first run, each with a verdict, and the budget beside them
    assert "## Targets" in page and "| KD over scratch by 1 | `lr4` | " in page
    assert "| at most 1 CPU-hours, teachers included | all | " in page

    # a changed candidate, margin and target after runs are recorded: refused, named, nothing
    # trains (a target lowered once the scores are in is the forking path registration stops)
    study["search"]["candidates"]["hinton_kd"] = [["distill.loss.temperature=8"]]
    study["regimes"]["lr4"]["margin"] = 0.5
    study["targets"][0]["at_least"] = 0.5
    path.write_text(yaml.safe_dump(study))
    for args in (["--threads", "1"], ["--no-train"], ["--status"]):
        assert main(["study", str(path), *args]) == 2
        line = _error(capsys)
        assert "regimes.lr4 is confirmatory and registered on" in line, line
        assert "candidates.hinton_kd, margin, targets.0.at_least did" in line, line
        assert "--register lr4" in line, line
    assert json.loads(registration.read_text()) == entry

    # a new registration, asked for explicitly: the former one kept beside it
    assert main(["study", str(path), "--no-train", "--register", "lr4"]) == 0
    assert json.loads((registration.parent / "registration-1.json").read_text()) == entry
    again = json.loads(registration.read_text())
    assert again["design"]["margin"] == 0.5 and again["digest"] != entry["digest"]


def test_a_confirmatory_regime_with_runs_but_no_registration_is_refused(tmp_path, capsys):
    path, _ = _study(tmp_path)
    record = tmp_path / "records" / "lr4" / "scratch" / "c0" / "final-seed0.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}")  # a run recorded before the regime was called confirmatory
    assert main(["study", str(path), "--no-train"]) == 2
    line = _error(capsys)
    assert "regimes.lr4 is confirmatory but its recorded runs have no registration" in line


def test_a_changed_default_is_a_changed_design_a_setting_added_later_is_not(tmp_path, capsys):
    """The registration holds every setting, defaults included: a later horkd whose default
    differs from the registered value changes the experiment and is refused; a setting that
    did not exist when the design was registered is not a change."""
    path, _ = _study(tmp_path)
    registration = tmp_path / "records" / "lr4" / "registration.json"
    assert main(["study", str(path), "--threads", "1", "--doc", str(tmp_path / "R.md")]) == 0
    entry = json.loads(registration.read_text())
    experiment = entry["design"]["experiment"]
    assert experiment["degrade"]["interpolation"]  # a default, registered all the same

    # as if the design had been registered by a horkd without distill.loss.temperature
    older = json.loads(json.dumps(entry))
    del older["design"]["experiment"]["distill"]["loss"]["temperature"]
    registration.write_text(json.dumps(older))
    assert main(["study", str(path), "--status"]) == 0
    capsys.readouterr()

    # as if registered when degrade.interpolation's default was another one
    changed = json.loads(json.dumps(entry))
    other = "bicubic" if experiment["degrade"]["interpolation"] != "bicubic" else "bilinear"
    changed["design"]["experiment"]["degrade"]["interpolation"] = other
    registration.write_text(json.dumps(changed))
    assert main(["study", str(path), "--status"]) == 2
    assert "experiment.degrade.interpolation did" in _error(capsys)


def test_a_target_added_to_a_design_registered_before_targets_were_kept_is_a_change():
    """A setting a later horkd adds is no change to a registered design, but a target or a
    budget set after the scores are in is exactly the change registration must refuse."""
    from horkd.study.registration import _changes

    before = {"margin": 0.5, "comparisons": [["horkd", "hinton_kd"]]}  # no targets key at all
    assert _changes(before, {**before, "targets": {}, "budget_cpu_hours": None}) == []
    added = {**before, "targets": {"0": {"regime": "r", "method": "horkd", "at_least": 1.0}},
             "budget_cpu_hours": 12}
    assert _changes(before, added) == ["budget_cpu_hours", "targets.0.at_least",
                                       "targets.0.method", "targets.0.regime"]
    # a design registered with its targets: a field a later horkd adds to them is no change
    later = {**added, "targets": {"0": {**added["targets"]["0"], "new_field": 3}}}
    assert _changes(added, later) == []
