"""Declared comparisons: TOST, the minimum detectable difference and Holm's adjustment against
hand computations; the page's calls; a search choice at the grid's edge; confirmatory regimes."""

from __future__ import annotations

import math

import pytest
import yaml
from conftest import tiny_config_dict
from scipy.stats import t as student_t

from horkd.config import ConfigError
from horkd.study import load_study
from horkd.study.stats import (
    adjust,
    compare,
    holm,
    holm_demands,
    minimum_detectable_difference,
    paired_t_p,
    tost_p,
)

# five seeds: a - b = 0.3, -0.1, 0.2, 0.1, 0.0
A = [80.3, 81.0, 80.9, 81.6, 80.5]
B = [80.0, 81.1, 80.7, 81.5, 80.5]


def test_tost_the_t_test_and_the_detectable_difference_match_a_hand_computation():
    diffs = [a - b for a, b in zip(A, B, strict=True)]
    assert diffs == pytest.approx([0.3, -0.1, 0.2, 0.1, 0.0])
    # by hand: mean 0.1; squared deviations 0.04 + 0.04 + 0.01 + 0 + 0.01 = 0.10, variance
    # 0.10 / 4 = 0.025, standard error sqrt(0.025 / 5) = sqrt(0.005) = 0.0707107; 4 df
    se = math.sqrt(0.005)
    # lower test H0 mean <= -0.5: t = (0.1 + 0.5) / se = 8.485, p = P(T4 > 8.485)
    # upper test H0 mean >= +0.5: t = (0.1 - 0.5) / se = -5.657, p = P(T4 < -5.657)
    lower, upper = tost_p(diffs, 0.5)
    assert lower == pytest.approx(student_t.sf(0.6 / se, 4))
    assert upper == pytest.approx(student_t.cdf(-0.4 / se, 4))
    assert upper == pytest.approx(0.0024063, abs=1e-7)  # the larger: the TOST p
    # TOST at alpha 0.05 <=> the 90% interval inside the margin: 0.1 +- 2.131847 * se
    half = student_t.ppf(0.95, 4) * se
    assert (0.1 - half, 0.1 + half) == pytest.approx((-0.0507, 0.2507), abs=1e-4)
    assert max(tost_p(diffs, 0.5)) < 0.05 < max(tost_p(diffs, 0.2))  # 0.2507 > 0.2
    # the difference test: t = 0.1 / se = 1.414, two-sided p = 2 P(T4 > 1.414)
    assert paired_t_p(diffs) == pytest.approx(2 * student_t.sf(0.1 / se, 4))
    assert paired_t_p(diffs) == pytest.approx(0.2302, abs=1e-4)
    # 80% power, two-sided alpha 0.05: (t_0.975,4 + t_0.8,4) * sd / sqrt(n)
    #                                 = (2.776445 + 0.940965) * 0.0707107 = 0.26286
    mdd = minimum_detectable_difference(math.sqrt(0.025), 5)
    assert mdd == pytest.approx((2.776445 + 0.940965) * se, abs=1e-5)
    assert minimum_detectable_difference(1.0, 1) is None
    c = compare("r", "a", "b", A, B, margin=0.5)
    assert (c.p, c.p_tost, c.mdd) == pytest.approx((paired_t_p(diffs), upper, mdd))
    assert c.call() == "equivalent"  # alone: no adjustment
    assert compare("r", "a", "b", A, B, margin=0.2).call() == "inconclusive"
    alone = compare("r", "a", "b", A, B, margin=0.2)
    assert "detect only differences of 0.26 or more at 80% power" in alone.verdict()
    assert "Holm" not in alone.verdict()
    # in a family the detectable difference is still the raw alpha's: the words say so, for
    # every member, the one with the largest p too (whose Holm p can equal its raw p)
    noisy = [x + d for x, d in zip(B, (0.9, -0.8, 0.7, -0.6, 0.5), strict=True)]
    family = adjust([alone, compare("r", "c", "b", noisy, B, margin=0.2)])
    last = max(family, key=lambda c: c.p)
    assert last.p_holm == pytest.approx(last.p) and last.call() == "inconclusive"
    for member in family:
        assert "at 80% power at the raw alpha (more under Holm's)" in member.verdict()


def test_what_holm_asks_of_the_seeds_matches_a_hand_computation():
    """Five seeds, 38 comparisons (the glyph study): the first Holm step tests at 0.05 / 38, so a
    difference must reach t_{1-0.05/76, 4} = 8.01 standard errors, 8.01 / sqrt(5) = 3.58 paired
    sds; the last at 0.05 (t_{0.975, 4} = 2.776: 1.24 sds). TOST within +-0.5 at a true
    difference of 0 needs 0.5 / (sd / sqrt(5)) > t_{1-0.05/38, 4} = 6.67 (sd < 0.168), and at
    the last step > t_{0.95, 4} = 2.132 (sd < 0.524)."""
    demands = holm_demands(5, 38, 0.05, 0.5)
    assert demands.difference_sds == pytest.approx((8.0129 / math.sqrt(5), 2.7764 / math.sqrt(5)),
                                                   abs=1e-3)
    assert demands.equivalence_sd == pytest.approx((0.1677, 0.5244), abs=1e-3)
    assert holm_demands(5, 38).equivalence_sd is None and holm_demands(1, 38) is None


def test_a_constant_difference_is_certain_and_no_difference_at_all_is_not():
    assert paired_t_p([1.0, 1.0, 1.0]) == 0.0
    assert paired_t_p([0.0, 0.0, 0.0]) == 1.0
    assert max(tost_p([0.1, 0.1], 0.5)) == 0.0 and max(tost_p([0.6, 0.6], 0.5)) == 1.0
    assert compare("r", "a", "b", [80.0], [79.0], margin=0.5).call() == "inconclusive"


def test_holm_matches_a_hand_computed_step_down():
    # sorted 0.01, 0.03, 0.04: 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; 1 x 0.04 = 0.04 -> max 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # sorted 0.001, 0.02, 0.04, 0.5: 0.004, 0.06, 0.08, 0.5 (back in the order given)
    assert holm([0.5, 0.001, 0.02, 0.04]) == pytest.approx([0.5, 0.004, 0.06, 0.08])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, then kept monotone
    assert holm([]) == []
    # adjust: the difference tests and the TOST p's are two families; pending counts as p = 1
    from horkd.study.stats import pending

    first = compare("r", "a", "b", A, B, margin=0.5)
    second = compare("r", "c", "b", [a + 1 for a in A], B)  # no margin: not in the TOST family
    adjusted = adjust([first, second, pending("r", "d", "b", 0.5)])
    assert [c.p_holm for c in adjusted[:2]] == pytest.approx(holm([first.p, second.p, 1.0])[:2])
    assert adjusted[0].p_tost_holm == pytest.approx(holm([first.p_tost, 1.0])[0])
    assert adjusted[1].p_tost_holm is None and adjusted[2].p_holm is None


def _final(regime, method, values):
    return {"regime": regime, "method": method, "val": {str(s): 50.0 for s in range(len(values))},
            "rows": {str(s): [{"method": method, "role": "student", "lr_top1": v}]
                     for s, v in enumerate(values)}}


def _page_summary():
    base = [80.0, 81.0, 79.5, 80.5, 80.2]
    shift = lambda d: [b + x for b, x in zip(base, d, strict=True)]  # noqa: E731
    methods = ["scratch", "hinton_kd", "rkd", "horkd_no_assistant", "horkd", "embedding_regression"]
    finals = [
        _final("few", "hinton_kd", base),
        _final("few", "horkd", shift([1.0, 1.1, 0.9, 1.05, 0.95])),          # above
        _final("few", "rkd", shift([-2.0, -2.1, -1.9, -2.05, -1.95])),       # below
        _final("few", "horkd_no_assistant", shift([0.01, -0.02, 0.02, 0.0, -0.01])),  # equivalent
        _final("few", "scratch", shift([1.0, -1.2, 0.8, -0.9, 0.4])),        # inconclusive
        # raw p about 0.018 (its interval excludes 0), the third smallest of the page's six:
        # Holm multiplies it by 6 - 3 + 1 = 4
        _final("few", "embedding_regression", shift([0.5, 0.2, 0.6, 0.1, 0.4])),
    ]
    study = {"seeds": [0, 1, 2, 3, 4], "baselines": ["scratch", "hinton_kd", "rkd"],
             "methods": methods, "margin": 0.5,
             "comparisons": {"horkd": "hinton_kd", "rkd": "hinton_kd",
                             "horkd_no_assistant": "hinton_kd", "scratch": "hinton_kd",
                             "embedding_regression": "hinton_kd"},
             "regimes": {"few": {"overrides": [], "teacher": "t", "role": "confirmatory"},
                         "later": {"overrides": [], "teacher": "t",
                                   "comparisons": {"horkd": "scratch"}}}}
    return {"study": study, "finals": finals, "choices": {}}


def test_the_page_calls_each_declared_comparison_on_holm_adjusted_p(tmp_path):
    from horkd.study.document import _regimes, findings, page_comparisons

    summary = _page_summary()
    family = {(c.regime, c.method): c for c in page_comparisons(summary)}
    assert len(family) == 6  # five in `few`, one pending in `later`: p = 1 in the family
    calls = {m: c.call() for (r, m), c in family.items() if r == "few"}
    assert calls == {"horkd": "above", "rkd": "below", "horkd_no_assistant": "equivalent",
                     "scratch": "inconclusive", "embedding_regression": "inconclusive"}
    raw = [family[k].p for k in family if family[k].p is not None]
    assert [family[k].p_holm for k in family if family[k].p is not None] == pytest.approx(
        holm(raw + [1.0])[:-1])
    late = family[("few", "embedding_regression")]
    assert late.low > 0 and late.p < 0.05 < late.p_holm  # raw "above", adjusted inconclusive
    assert late.p_holm == pytest.approx(4 * late.p)
    assert late.verdict().startswith("inconclusive: above by its raw p, not after Holm's")
    parts, facts = _regimes(summary, tmp_path)
    page = "\n".join(parts)
    assert "## Regime `few` (confirmatory)" in page and "## Regime `later` (exploratory)" in page
    assert "| horkd - hinton_kd | +1.00 [+0.90, +1.10] |" in page
    assert "| horkd_no_assistant - hinton_kd | +0.00 [-0.02, +0.02] |" in page
    assert facts["few"]["lr_top1"]["comparisons"][0]["call"] == "above"
    text = "\n".join(findings(summary, facts))
    assert "Confirmatory regimes (design, comparator and margin declared before their first " \
           "run): 1 above, 1 below, 1 equivalent, 2 inconclusive." in text
    assert "Exploratory regimes (hypothesis-generating: a claim here is for a confirmatory " \
           "round to test): nothing recorded yet." in text
    assert "- `few` (confirmatory), horkd - hinton_kd: +1.00 [+0.90, +1.10], p <0.001 " in text
    assert "**equivalent within ±0.5**" in text
    assert "`later` (exploratory), horkd - scratch: pending" in text
    # what Holm over the 6 asks of the 5 seeds most have: t_{1-0.05/12, 4} / sqrt(5) = 4.85 / 2.24
    assert "With 5 seeds, Holm over 6 asks a difference of 2.2 paired sds" in text
    # a method with a declared comparison gets no undeclared best-baseline line
    assert "`few`, horkd:" not in text and "Not declared in the study file" not in text
    print(text)


def test_a_choice_at_an_end_of_a_numeric_grid_is_flagged():
    from horkd.study.document import grid_edges, search_table

    hinton = [["distill.loss.temperature=4", "distill.loss.logit_weight=1"],
              ["distill.loss.temperature=2", "distill.loss.logit_weight=1"],
              ["distill.loss.temperature=8", "distill.loss.logit_weight=1"]]
    assert grid_edges(hinton, 2) == "distill.loss.temperature=8, the highest of 2 / 4 / 8"
    assert grid_edges(hinton, 1) == "distill.loss.temperature=2, the lowest of 2 / 4 / 8"
    assert grid_edges(hinton, 0) == ""  # interior; the constant weight is no grid
    # a candidate that leaves a key at its default takes the config's value
    banks = [["distill.loss.orders=[2,3]"], ["distill.loss.bank_size=1024"],
             ["distill.loss.bank_size=256"]]
    config = {"distill": {"loss": {"bank_size": 0}}}
    # the candidate that differs by its orders is no step of the bank-size grid
    assert grid_edges(banks, 1, config) == \
        "distill.loss.bank_size=1024, the highest of 256 / 1024"
    assert grid_edges(banks, 2, config) == "distill.loss.bank_size=256, the lowest of 256 / 1024"
    assert grid_edges(banks, 0, config) == ""
    assert grid_edges(banks, 1) == "distill.loss.bank_size=1024, the highest of 256 / 1024"
    lrs = [["train.student.optimizer.lr=0.05"], ["train.student.optimizer.lr=0.1"],
           ["train.student.optimizer.lr=0.2"]]
    relations = [["distill.loss.distance_weight=1", "distill.loss.angle_weight=2"],
                 ["distill.loss.distance_weight=5", "distill.loss.angle_weight=10"],
                 ["distill.loss.distance_weight=25", "distill.loss.angle_weight=50"]]
    study = {"regimes": {"few": {}}, "methods": ["scratch", "hinton_kd", "kd_rkd"],
             "search": {"candidates": {"hinton_kd": hinton, "scratch": lrs,
                                       "kd_rkd": relations}}}
    search = [{"regime": "few", "method": m, "tag": f"c{i}", "val": {"100": 70.0 + i},
               "error": None} for m in ("hinton_kd", "scratch", "kd_rkd") for i in range(3)]
    choices = {"few": {"hinton_kd": {"tag": "c2"}, "scratch": {"tag": "c1"},
                       "kd_rkd": {"tag": "c2"}}}
    table = search_table({"study": study, "search": search, "choices": choices})
    assert "| few | hinton_kd | c2 (chosen, at the grid's edge: distill.loss.temperature=8, " \
           "the highest of 2 / 4 / 8) |" in table
    assert "| few | scratch | c1 (chosen) |" in table
    assert "2 of 3 searches chose a candidate at an end of a numeric grid (`few` hinton_kd, " \
           "`few` kd_rkd)" in table
    # two settings move together: no extension grows that grid, and the page says so
    assert "in 1 of them (`few` kd_rkd) the candidates vary more than one setting, a grid no " \
           "extension grows" in table
    # rows in the study's method order, whatever order the results came in
    assert table.index("| few | scratch | c0") < table.index("| few | hinton_kd | c0") \
        < table.index("| few | kd_rkd | c0")


def test_the_grid_edge_names_a_setting_the_chosen_candidate_was_searched_along():
    """The shipped horkd grid: c2 differs from c0 by its orders, not by its bank size; a
    choice of c2 is at no edge of the bank-size grid (the page once said it was)."""
    from horkd.study.document import grid_edges
    from horkd.study.template import CANDIDATES

    horkd = [list(c) for c in CANDIDATES["horkd"]]
    config = {"distill": {"loss": {"bank_size": 0, "orders": [1, 2, 3]}}}
    assert grid_edges(horkd, 2, config) == ""
    assert grid_edges(horkd, 2) == ""
    # c0 against c1 is a step of the bank-size grid, but c0's bank of 0 is off: no step lies
    # below it, so it is no edge; c1's 1024 is the grid's top, and one could go beyond it
    assert grid_edges(horkd, 0, config) == ""
    assert grid_edges(horkd, 1, config) == "distill.loss.bank_size=1024, the highest of 0 / 1024"


def _study(tmp_path, **regime):
    base = tiny_config_dict(tmp_path / "unused")
    for key in ("name", "output_dir", "seeds", "methods"):
        base.pop(key)
    study = {"teachers": {"cls": "teacher.yaml"}, "base": base, "seeds": [0, 1],
             "methods": ["scratch", "hinton_kd", "horkd"], "baselines": ["scratch", "hinton_kd"],
             "main_regime": "few",
             "regimes": {"few": {"teacher": "cls", **regime}},
             "search": {"candidates": {m: [[]] for m in ("scratch", "hinton_kd", "horkd")}}}
    teacher = tiny_config_dict(tmp_path / "unused")  # the study checks its teacher files too
    teacher["methods"] = ["scratch"]
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path, study


def test_a_confirmatory_regime_must_declare_its_comparator_and_margin(tmp_path):
    path, study = _study(tmp_path)
    assert load_study(path)[0].regimes["few"].role == "exploratory"  # the default
    path, study = _study(tmp_path, role="confirmatory")
    with pytest.raises(ConfigError, match="regimes.few: a confirmatory regime must declare a "
                       r"comparator \(comparisons\) and an equivalence margin"):
        load_study(path)
    path, study = _study(tmp_path, role="confirmatory", comparisons={"horkd": "hinton_kd"})
    with pytest.raises(ConfigError, match="regimes.few: a confirmatory regime must declare an "
                       "equivalence margin"):
        load_study(path)
    study["margin"] = 0.5  # the study's margin serves every regime
    path.write_text(yaml.safe_dump(study))
    loaded = load_study(path)[0]
    assert loaded.margin == 0.5 and loaded.regimes["few"].comparisons == {"horkd": "hinton_kd"}
    study["regimes"]["few"]["comparisons"] = {"horkd": "rkd"}  # not one of the regime's methods
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError, match="regimes.few.comparisons: 'rkd' is not one of"):
        load_study(path)
    study["regimes"]["few"]["comparisons"] = None
    study["comparisons"] = {"horkd": ["hinton_kd", "scratch"]}  # the study's, in every regime
    path.write_text(yaml.safe_dump(study))
    assert load_study(path)[0].regimes["few"].role == "confirmatory"
    study["margin"] = -1
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError, match="margin"):
        load_study(path)


def test_a_search_candidate_whose_chain_fell_back_to_the_teacher_says_so():
    """A HORKD candidate whose assistant failed its guard was scored as teacher -> student:
    the search table must not show its score as the chain's."""
    from horkd.study.document import search_table

    study = {"regimes": {"few": {}}, "search": {"candidates": {"horkd": [[], []]}}}
    search = [{"regime": "few", "method": "horkd", "tag": f"c{i}", "val": {"100": 80.0 + i},
               "error": None, "facts": {"100": {"assistant_guard": {"trusted": bool(i)}}}}
              for i in range(2)]
    table = search_table({"study": study, "search": search,
                          "choices": {"few": {"horkd": {"tag": "c1"}}}})
    assert "| c0 | defaults | 80.00 (fell back to teacher -> student: the assistant failed its " \
           "guard) |" in table
    assert "| c1 (chosen) | defaults | 81.00 |" in table
