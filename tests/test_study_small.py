"""A study of a small folder of one's own: the page's figures beside it under its own name, its
times in units that show, and the names and counts a new user relies on (issue 40)."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert (tmp_path / "small_results" / "resolution_curve.png").stat().st_size > 0
    assert "](small_results/resolution_curve.png)" in text
    assert not (tmp_path / "results").exists()  # no generic folder beside a page of another name


def test_a_few_minutes_of_training_are_not_said_as_0_0_h(tmp_path):
    text = _page(tmp_path, _summary(compute_seconds=124.0))
    assert "took 2 min of training and scoring" in text and "0.0 h" not in text
    assert "0.0 min of wall time" not in text  # the invocation's 0.8 s
