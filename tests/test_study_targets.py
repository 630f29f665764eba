"""The Targets table: each target the study file sets, met or not and by how much, from the same
paired differences, Holm-adjusted calls and gap as the page's findings."""

import pytest

from horkd.study.stats import adjust, compare, pending
from horkd.study.targets import evaluate, targets_section

ABOVE = {"claim": "HORKD over Hinton KD by 1.0", "regime": "r", "method": "horkd",
         "comparator": "hinton_kd", "at_least": 1.0, "calls": ["above"]}


def _comparison(diffs, margin=0.5):
    base = [80.0, 81.0, 79.5, 80.5, 80.2]
    return adjust([compare("r", "horkd", "hinton_kd", [b + d for b, d in zip(base, diffs, strict=True)],
                           base, margin)])[0]


def test_a_target_above_by_enough_is_met_and_one_short_says_by_how_much():
    met = _comparison([1.4, 1.6, 1.5, 1.3, 1.7])  # mean +1.50, every seed above: called above
    assert evaluate(ABOVE, met, {}) == ("+1.50 [+1.30, +1.70], above", "met")
    # judged as shown: +0.996 shows as +1.00 and meets +1.00
    assert evaluate(ABOVE, _comparison([0.896, 1.096, 0.996, 0.946, 1.046]), {})[1] == "met"
    short = _comparison([0.6, 0.7, 0.8, 0.5, 0.9])  # above, but 0.30 short of +1.00
    measured, verdict = evaluate(ABOVE, short, {})
    assert measured.startswith("+0.70 [") and measured.endswith(", above")
    assert verdict == "not met: 0.30 short of +1.00"
    noise = _comparison([0.9, -0.8, 1.2, -1.0, 0.2])  # mean +0.10, wide: inconclusive
    assert evaluate(ABOVE, noise, {})[1] == ("not met: 0.90 short of +1.00; called "
                                             "inconclusive, not above")


def test_an_equivalence_target_and_a_gap_to_close():
    target = {"claim": "c", "regime": "r", "method": "horkd", "comparator": "hinton_kd",
              "calls": ["equivalent", "above"]}
    same = _comparison([0.05, -0.05, 0.1, -0.1, 0.0])  # within +-0.5: equivalent
    assert evaluate(target, same, {})[1] == "met"
    gap = {"claim": "c", "regime": "r", "method": "horkd", "gap_closed": 30}
    # scratch 80, oracle 90: HORKD at 82.5 closes 25% of the gap, 5 points short of 30%
    def facts(**means):
        return {"label_only": "scratch", "methods": {m: {"mean": v} for m, v in means.items()}}

    means = {"scratch": 80.0, "lr_oracle": 90.0, "horkd": 82.5}
    assert evaluate(gap, None, facts(**means)) == (
        "25% of the gap closed (scratch 80.00, LR oracle 90.00)",
        "not met: 5 points of the gap short of 30%")
    assert evaluate(gap, None, facts(**{**means, "horkd": 84.0}))[1] == "met"  # 40%
    assert evaluate(gap, None, facts(**{**means, "horkd": 82.96}))[1] == "met"  # 29.6%: 30%
    # the page's label-only student, whichever it is
    other = {"label_only": "semi", "methods": {"semi": {"mean": 70.0},
                                               "lr_oracle": {"mean": 90.0}, "horkd": {"mean": 76.0}}}
    assert evaluate(gap, None, other)[0].startswith("30% of the gap closed (semi 70.00")
    assert evaluate(gap, None, facts(scratch=80.0)) == ("pending", "pending")


def test_a_report_only_target_and_a_pending_one():
    report = {"claim": "teacher's worth", "regime": "r", "method": "horkd",
              "comparator": "hinton_kd"}
    assert evaluate(report, _comparison([1.4, 1.6, 1.5, 1.3, 1.7]), {})[1] == (
        "reported (no threshold)")
    assert evaluate(ABOVE, pending("r", "horkd", "hinton_kd", 0.5), {}) == ("pending", "pending")


def test_the_budget_row_waits_for_the_last_run_unless_already_over():
    family = [_comparison([1.4, 1.6, 1.5, 1.3, 1.7])]
    regimes = {"r": {"methods": ["scratch", "horkd"]}}
    done = {"r": {"lr_top1": {"methods": {"scratch": {"mean": 1.0}, "horkd": {"mean": 2.0}}}}}
    summary = {"study": {"targets": [], "budget_cpu_hours": 12, "regimes": regimes},
               "compute_seconds": 10 * 3600.0,
               "teachers": {"t/seed0": {"fingerprint": "f", "train_seconds": 1800.0,
                                        "threads": 2}}}
    assert "| 11.0 CPU-hours recorded | **met: 1.0 h to spare** |" in "\n".join(
        targets_section(summary, family, done))
    # a method still missing a seed (whether or not a comparison names it): not met yet
    assert "**pending (runs still to come)**" in "\n".join(targets_section(summary, [], {}))
    over = {**summary, "compute_seconds": 13 * 3600.0}
    assert "**not met: 2.0 h over**" in "\n".join(targets_section(over, [], {}))
    assert targets_section({"study": {}}, family, {}) == []


@pytest.mark.parametrize("target, message", [
    ({"regime": "nope"}, "targets[0].regime: 'nope' is not one of the regimes"),
    ({"regime": "free"}, "targets[0].regime: 'free' is exploratory; a target is fixed"),
    ({"comparator": None, "at_least": None}, "targets[0]: measures nothing"),
    ({"method": "rkd"}, "targets[0].method: 'rkd' is not trained in 'lr4'"),
    ({"comparator": None}, "at_least and calls are on a comparison: name its comparator"),
    ({"comparator": "fitnet"}, "'horkd' - 'fitnet' is not a comparison 'lr4' declares"),
    ({"comparator": None, "at_least": None, "calls": None, "gap_closed": 30},
     "targets[0].gap_closed: 'lr4' trains no label-only baseline"),
])
def test_a_target_that_names_what_the_study_does_not_declare_is_refused(target, message):
    from horkd.study.config import StudyConfig

    raw = {"teachers": {"t": "t.yaml"}, "base": {"data": {"dataset": "digits"}},
           "methods": ["scratch", "fitnet", "horkd"], "main_regime": "lr4",
           "regimes": {"lr4": {"teacher": "t", "role": "confirmatory"},
                       "free": {"teacher": "t"}},
           "search": {"candidates": {m: [[]] for m in ("scratch", "fitnet", "horkd")}},
           "comparisons": {"horkd": "scratch"}, "margin": 0.5,
           "targets": [{"claim": "c", "regime": "lr4", "method": "horkd",
                        "comparator": "scratch", "at_least": 1.0, **target}]}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        StudyConfig.model_validate(raw)


def test_a_teachers_cost_is_its_measured_cpu_and_an_older_records_wall_times_threads():
    from horkd.study.compute import teacher_cpu_seconds

    teachers = {"a": {"fingerprint": "a", "train_seconds": 3600.0, "threads": 2,
                      "train_cpu_seconds": 900.0},  # paused for most of its wall hour
                "b": {"fingerprint": "b", "train_seconds": 100.0, "threads": 2}}
    assert teacher_cpu_seconds(teachers) == {"a": 900.0, "b": 200.0}
