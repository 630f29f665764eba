"""The study runner end to end on digits, its statistics, few-label masks and shared splits."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config_dict

from horkd.cli import main
from horkd.config import ConfigError, config_from_dict, load_config
from horkd.data import labels_of
from horkd.data.split import labeled_mask
from horkd.experiment import build_context
from horkd.experiment.batches import batch_maker
from horkd.methods import Batch, task_loss
from horkd.models import ModelOutput, build_model
from horkd.study import load_study
from horkd.study.stats import paired_difference, summarize


def test_paired_difference_matches_a_hand_computed_t_interval():
    a, b = [80.0, 82.0, 81.0], [79.0, 80.0, 81.0]
    d = paired_difference(a, b)
    # diffs 1, 2, 0: mean 1, sd 1, t(0.975, 2) = 4.302653
    assert d.mean == pytest.approx(1.0)
    assert d.low == pytest.approx(1.0 - 4.302653 / 3**0.5, abs=1e-5)
    assert d.high == pytest.approx(1.0 + 4.302653 / 3**0.5, abs=1e-5)
    assert not d.above_zero
    assert paired_difference([3.0, 3.1, 3.2], [1.0, 1.05, 1.1]).above_zero
    assert paired_difference([1.0], [0.0]).low is None
    assert summarize([1.0, 3.0]).std == pytest.approx(2**0.5)
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_labeled_mask_is_stratified_and_fixed_by_its_seed():
    labels = torch.arange(10).repeat(20)
    mask = labeled_mask(labels, 0.1, seed=3)
    assert int(mask.sum()) == 20
    assert torch.bincount(labels[mask], minlength=10).tolist() == [2] * 10
    assert torch.equal(mask, labeled_mask(labels, 0.1, seed=3))
    assert not torch.equal(mask, labeled_mask(labels, 0.1, seed=4))


def test_task_loss_sees_only_the_labelled_batch():
    """Few labels: the task term of every method is computed on the labelled batch drawn beside
    the main one; scratch trains on the labelled batch alone; the student runs on both in one
    pass (one set of batch-norm statistics)."""
    from horkd.methods import DistillMethod, SupervisedMethod, forward_both
    from horkd.methods.presets import hybrid_loss

    torch.manual_seed(0)
    student = build_model("cnn_tiny", 3, 1, embed_dim=4, width=2).eval()
    teacher = build_model("cnn_tiny", 3, 1, embed_dim=4, width=2).eval()
    x, xl = torch.rand(6, 1, 8, 8), torch.rand(4, 1, 8, 8)
    labeled = Batch(hr=xl, lr=xl, target=torch.tensor([0, 1, 2, 0]))
    batch = Batch(hr=x, lr=x, target=torch.tensor([2, 2, 2, 2, 2, 2]), labeled=labeled)
    out, out_l = forward_both(student, batch, "lr")
    assert torch.allclose(out.logits, student(x).logits, atol=1e-6)
    assert torch.allclose(out_l.logits, student(xl).logits, atol=1e-6)

    def criterion(out: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(out.logits, target)

    expected = criterion(student(xl), labeled.target)
    assert torch.allclose(task_loss(criterion, out, out_l, batch), expected, atol=1e-6)
    scratch = SupervisedMethod(student, criterion).eval()
    assert torch.allclose(scratch(batch)[1]["task"], expected, atol=1e-6)
    distill = DistillMethod(student, criterion, teacher,
                            hybrid_loss(config_from_dict({}).distill.loss, student, teacher)).eval()
    assert torch.allclose(distill(batch)[1]["task"], expected, atol=1e-6)


def test_few_labels_stream_and_split_seed_shares_the_split(tmp_path):
    raw = tiny_config_dict(tmp_path / "run")
    raw["data"] = {**raw["data"], "label_fraction": 0.25, "split_seed": 7, "labeled_batch_size": 5}
    cfg = config_from_dict(raw)
    runs = [build_context(cfg, s) for s in (0, 1)]
    assert runs[0].splits.val.indices == runs[1].splits.val.indices  # one split for all seeds
    labeled = runs[0].labeled_indices
    assert torch.equal(labeled, runs[1].labeled_indices)
    assert len(labeled) == round(0.25 * len(runs[0].splits.train))
    maker = batch_maker(runs[0], "students/scratch")
    train_labels = labels_of(runs[0].splits.train)
    seen = []
    for _ in range(2 * len(labeled) // 5 + 1):  # more than two passes over the labelled images
        batch = maker(torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.long), torch.arange(8))
        assert batch.labeled.hr.shape == (5, 1, 16, 16) and batch.labeled.lr.shape[-1] == 4
        assert set(batch.labeled.index.tolist()) <= set(labeled.tolist())
        assert torch.equal(batch.labeled.target, train_labels[batch.labeled.index])
        seen += batch.labeled.index.tolist()
    assert len(set(seen)) >= len(labeled) - 4  # each pass covers the labelled set (drop_last)
    state = maker.state_dict()
    replay = batch_maker(runs[0], "students/scratch")
    replay.load_state_dict(state)
    a = maker(torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.long), torch.arange(8))
    b = replay(torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.long), torch.arange(8))
    assert torch.equal(a.labeled.index, b.labeled.index) and torch.equal(a.labeled.lr, b.labeled.lr)
    teacher = batch_maker(runs[0], "teacher", degrade=False, few_labels=False)
    assert teacher(torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.long),
                   torch.arange(8)).labeled is None  # the teacher learns from every label
    other = config_from_dict(tiny_config_dict(tmp_path / "other"))
    assert build_context(other, 0).labeled_indices is None


def _study_file(tmp_path: Path) -> Path:
    base = tiny_config_dict(tmp_path / "unused")
    for key in ("name", "output_dir", "seeds", "methods"):
        base.pop(key)
    base["data"] = {**base["data"], "split_seed": 0, "augment": {"hflip": True}}
    one_epoch = {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 3}
    base["train"] = {"assistant": one_epoch, "student": one_epoch}
    base["distill"] = {"cache_reference": True}
    teacher = tiny_config_dict(tmp_path / "unused")
    teacher["methods"] = ["scratch"]
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    (tmp_path / "notes.md").write_text("## What helped\n\nhand-written notes")
    study = {
        "name": "tiny_study",
        "output_dir": str(tmp_path / "study"),
        "workers": 1,
        "seeds": [0, 1],
        "teachers": {"cls": "teacher.yaml"},
        "base": base,
        "methods": ["teacher_lr", "scratch", "fitnet", "horkd"],
        "baselines": ["scratch", "fitnet"],
        "main_regime": "lr4",
        "regimes": {
            "lr4": {"teacher": "cls", "description": "main"},
            "few": {"teacher": "cls", "overrides": ["data.label_fraction=0.2"],
                    "methods": ["scratch", "horkd"], "choices_from": "lr4", "seeds": [1]},
        },
        "search": {
            "seed": 5,
            "candidates": {
                "scratch": [["train.student.optimizer.lr=0.05"], ["train.student.optimizer.lr=0.1"]],
                "fitnet": [["distill.loss.hint_weight=1"],  # the second one diverges at once
                           ["distill.loss.hint_weight=1e39",
                            "train.student.max_nonfinite_steps=0"]],
                "horkd": [["distill.warm_start=true"], ["distill.warm_start=false"]],
            },
        },
        "curve_sizes": [16, 4],
        "discussion": "notes.md",
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_study_end_to_end_search_on_val_finals_on_test_document(tmp_path, capsys, monkeypatch):
    import horkd.study.dispatch as dispatch
    import horkd.study.jobs as jobs

    path = _study_file(tmp_path)
    doc = tmp_path / "docs" / "RESULTS.md"
    batches, train_jobs = [], dispatch.train_jobs
    # a wait inside each run (as a SIGSTOP or a lock would be): wall time, not CPU
    history = jobs._validation_history
    monkeypatch.setattr(jobs, "_validation_history",
                        lambda *a: (__import__("time").sleep(0.3), history(*a))[1])
    monkeypatch.setattr(dispatch, "train_jobs", lambda study, jobs: batches.append(
        {(j.kind, j.regime) for j in jobs}) or train_jobs(study, jobs))
    assert main(["study", str(path), "--doc", str(doc)]) == 0
    # every search in one batch, then every final whose settings are chosen in one more: the
    # regime that takes its choices from lr4 does not wait for lr4's last final
    assert [b for b in batches if b] == [{("search", "lr4")}, {("final", "lr4"), ("final", "few")}]
    summary = json.loads((tmp_path / "study" / "study.json").read_text())
    # search: 3 methods x 2 candidates, search seed 5 only (not a final seed), validation only
    assert len(summary["search"]) == 6
    assert all(r["rows"] == {} and list(r["val"]) == ["5"] for r in summary["search"])
    for method, entry in summary["choices"]["lr4"].items():
        finite = [v for v in entry["scores"].values() if v == v]
        assert entry["val"] == max(finite), method
    diverged = [r for r in summary["search"] if r["error"]]
    assert [(r["method"], r["tag"]) for r in diverged] == [("fitnet", "c1")]
    assert "non-finite" in diverged[0]["error"]
    assert summary["choices"]["lr4"]["fitnet"]["tag"] == "c0"
    assert summary["choices"]["few"] == {m: summary["choices"]["lr4"][m] for m in ("scratch",
                                                                                 "horkd")}
    # finals: every method of each regime with both seeds, teacher rows only in scratch's job
    finals = {(r["regime"], r["method"]): r for r in summary["finals"]}
    assert set(finals) == {("lr4", "scratch"), ("lr4", "fitnet"), ("lr4", "horkd"),
                           ("few", "scratch"), ("few", "horkd")}
    for (regime, method), res in finals.items():
        seeds = ["1"] if regime == "few" else ["0", "1"]
        assert sorted(res["rows"]) == seeds
        for seed in seeds:  # the shared teacher is scored once: with the regime's first seed
            networks = {row["method"] for row in res["rows"][seed]} - {"assistant"}
            expected = {method}
            if method == "scratch" and seed == seeds[0]:
                expected |= {"teacher"} | ({"teacher_lr"} if regime == "lr4" else set())
            assert networks == expected, (regime, method, seed, networks)
    # the finals of a method run a job per seed (workers share them), in directories of their own
    chosen = summary["choices"]["lr4"]["fitnet"]["tag"]
    assert (tmp_path / f"study/runs/lr4/fitnet/{chosen}-seed1/seed1/students/fitnet").is_dir()
    assert finals[("lr4", "horkd")]["curve"]["0"]["horkd"].keys() == {"16", "4"}
    assert set(summary["ablation"]["orders"]) == {"horkd"}  # the study's method of group ours
    assert summary["ablation"]["orders"]["horkd"]["1+2+3"]
    text = doc.read_text()
    for needle in ("## Regime `lr4`", "## Regime `few`", "vs best baseline", "hand-written notes",
                   "| diverged |",
                   "## Search (validation split only)", "resolution_curve.png", "orders_ablation.png",
                   "horkd study"):
        assert needle in text, needle
    assert (doc.parent / "RESULTS-figures" / "resolution_curve.png").stat().st_size > 0
    # a rerun reuses every finished stage: nothing is trained again
    before = {p: p.stat().st_mtime for p in (tmp_path / "study").rglob("model.safetensors")}
    assert main(["study", str(path), "--doc", str(doc)]) == 0
    after = {p: p.stat().st_mtime for p in (tmp_path / "study").rglob("model.safetensors")}
    assert before == after
    records = tmp_path / "records"
    assert len(list(records.rglob("final-seed*.json"))) == 3 * 2 + 2 * 1  # every final seed
    assert len(list(records.rglob("search-seed5.json"))) == 6
    assert len(list((records / "teachers").glob("*.json"))) == 1
    made = json.loads(next(records.rglob("final-seed0.json")).read_text())
    assert made["environment"]["cpu_capability"]  # where the bits came from
    # its cost is the CPU the run used, not its wall time: the 0.3 s wait is not in it
    assert 0 < made["cpu_seconds"] < made["seconds"] - 0.25
    # a fresh clone holds the records but no run directory: the page is rebuilt, nothing trains
    text_before = doc.read_text()
    import shutil

    shutil.rmtree(tmp_path / "study")
    assert main(["study", str(path), "--doc", str(doc)]) == 0
    assert not list((tmp_path / "study").rglob("model.safetensors"))  # no teacher, no student
    strip = lambda t: t.split("## Reproduce")[0]  # noqa: E731  (wall times differ)
    assert strip(doc.read_text()) == strip(text_before)
    # one recorded run trained again from its settings gives the recorded scores, to the bit
    record = records / "lr4" / "fitnet" / "c0" / "final-seed0.json"
    capsys.readouterr()
    assert main(["study", str(path), "--reproduce", str(record)]) == 0
    assert "reproduced: identical scores" in capsys.readouterr().out


def test_only_trains_the_named_regime_and_method_with_the_search_it_depends_on(
    tmp_path, capsys
):
    path = _study_file(tmp_path)
    doc = tmp_path / "RESULTS.md"
    assert main(["study", str(path), "--only", "few/rkd"]) != 0
    assert "regime 'few' has no method 'rkd' (methods: scratch, horkd)" in capsys.readouterr().err
    assert main(["study", str(path), "--only", "lr7"]) != 0
    assert "no regime 'lr7' in the study (regimes: few, lr4)" in capsys.readouterr().err
    assert main(["study", str(path), "--only", "few/horkd", "--doc", str(doc)]) == 0
    said = capsys.readouterr().out
    # N of the [k/N] lines: the tasks this invocation runs (not few/scratch's waiting finals)
    counts = re.findall(r"^\[(\d+)/(\d+)\] (?!started)", said, re.M)
    planned = int(re.search(r"(\d+) tasks? to train", said).group(1))
    assert counts and {int(n) for _, n in counts} == {planned} == {len(counts)}, said
    summary = json.loads((tmp_path / "study" / "study.json").read_text())
    assert len(summary["search"]) == 6  # few takes lr4's choices: lr4's search is trained
    trained = {(r["regime"], r["method"]) for r in summary["finals"] if r["seeds"]}
    assert trained == {("few", "horkd")}
    assert summary["ablation"] is None  # the main regime was not named
    records = tmp_path / "records"
    assert [p.parent.parent.name for p in records.rglob("final-seed*.json")] == ["horkd"]
    text = doc.read_text()
    assert "| scratch | train.student.optimizer.lr=0.05 | - | pending (0 of 1 seeds) |" in text
    assert "vs the best baseline (none recorded yet)" in text
    assert "Pending: no final run of this regime is recorded yet." in text
    # the page's "regenerates everything" command is the one that trains everything
    from horkd.cli import _training_args

    argv = ["study", "s.yaml", "--only", "lr4", "--no-train", "--only=few/horkd", "--doc", "d.md"]
    assert _training_args(argv) == ["study", "s.yaml", "--doc", "d.md"]


def test_shipped_study_files_validate_with_every_regime():
    # load_study checks every regime's overrides against the base; the teachers are checked here.
    root = Path(__file__).parents[1] / "configs" / "study"
    studies = [p for p in sorted(root.glob("*.yaml")) if "regimes" in yaml.safe_load(p.read_text())]
    assert studies
    for path in studies:
        study, folder = load_study(path)
        for teacher in study.teachers.values():
            load_config(folder / teacher)


def test_study_file_errors_name_the_problem(tmp_path):
    path = _study_file(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["search"]["candidates"]["scratch"].append(["train.student.optimizer.lr=0.2"])
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="same number of search candidates"):
        load_study(path)
    raw["search"]["candidates"]["scratch"].pop()
    raw["regimes"]["few"]["choices_from"] = "nowhere"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="must be a regime that searches"):
        load_study(path)
    raw["regimes"]["few"]["choices_from"] = "lr4"
    raw["regimes"]["few"]["methods"] = ["scratch", "rkd"]  # rkd: not searched in lr4
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"methods \['rkd'\] are not searched in 'lr4'"):
        load_study(path)
    raw["regimes"]["few"]["methods"] = ["teacher_lr", "scratch", "horkd"]  # a reference may
    path.write_text(yaml.safe_dump(raw))
    assert load_study(path)[0].regime_methods("few")[0] == "teacher_lr"
    overrides = raw["regimes"]["few"].get("overrides", [])
    raw["regimes"]["few"]["overrides"] = [*overrides, "degrade.lr_sise=4"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="(?s)regimes.few.overrides: .*degrade.lr_sise: unknown key"):
        load_study(path)
    raw["regimes"]["few"]["overrides"] = overrides
    raw["wokers"] = 2
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="wokers: unknown key .allowed: name, title, output_dir"):
        load_study(path)


def test_reference_caches_are_shared_across_loads_and_processes(tmp_path):
    """One store shares a teacher's cache between loads of the same images; with a directory a
    second store (another worker process, a rerun) loads it from disk, equal to the bit."""
    from horkd.data.augment import FlipViews
    from horkd.experiment import load_splits
    from horkd.models import build_model
    from horkd.reference_cache import ReferenceCache, ReferenceCaches

    cfg = config_from_dict(tiny_config_dict(tmp_path / "run"))
    torch.manual_seed(0)
    teacher = build_model("cnn_tiny", 10, 1, embed_dim=8, width=4).eval()
    copy = build_model("cnn_tiny", 10, 1, embed_dim=8, width=4).eval()
    copy.load_state_dict(teacher.state_dict())
    train_a, train_b = load_splits(cfg, 0).train, load_splits(cfg, 0).train  # two loads
    device = torch.device("cpu")
    store = ReferenceCaches(tmp_path / "caches")
    first = store.get(teacher, train_a, device, views=FlipViews(True))
    assert store.get(copy, train_b, device, views=FlipViews(True)) is first
    fresh = ReferenceCache.build(teacher, train_a, device, views=FlipViews(True))
    assert torch.equal(first.embedding, fresh.embedding)
    assert len(list((tmp_path / "caches").glob("*.safetensors"))) == 1
    from_disk = ReferenceCaches(tmp_path / "caches").get(copy, train_b, device, views=FlipViews(True))
    assert torch.equal(from_disk.embedding, first.embedding)
    assert torch.equal(from_disk.logits, first.logits)
    other_split = load_splits(cfg, 1).train  # another seed: other images
    assert store.get(teacher, other_split, device, views=FlipViews(True)) is not first
    with torch.no_grad():
        copy.classifier.bias.add_(1.0)
    changed = store.get(copy, train_b, device, views=FlipViews(True))
    assert changed is not first and not torch.equal(changed.logits, first.logits)


def test_the_page_gives_every_protocol_and_says_how_queries_reach_the_teachers_space():
    from horkd.study.document import _map_note, regime_metrics, regime_tables

    def row(method, r1, teacher_r1, fitted):
        return {"method": method, "role": "student", "params": 1, "flops": 1, "R@1 LR->HR": r1,
                "R@1 LR->HR teacher": teacher_r1, "teacher map fitted": fitted}

    finals = [
        {"regime": "ret", "method": m, "val": {"0": 50.0, "1": 51.0},
         "rows": {str(s): [row(m, 40.0 + s + i, 30.0 + 2 * s + i, f)] for s in (0, 1)}}
        for i, (m, f) in enumerate([("scratch", 1.0), ("fitnet", 0.0)])
    ]
    study = {"seeds": [0, 1], "baselines": ["scratch", "fitnet"], "methods": ["scratch", "fitnet"],
             "regimes": {"ret": {"seeds": [0, 1], "methods": ["scratch", "fitnet"]}}}
    summary = {"study": study, "finals": finals, "choices": {}}
    assert regime_metrics(finals, "ret") == ["R@1 LR->HR", "R@1 LR->HR teacher"]
    # a metric only a reused method's runs report (the LR oracle's curve from another regime)
    # gets no table where every student of the regime would read 'pending'
    assert regime_metrics(finals, "ret", reused={"fitnet"}) == ["R@1 LR->HR",
                                                                "R@1 LR->HR teacher"]
    curve_only_reused = copy.deepcopy(finals)
    for rows in curve_only_reused[0]["rows"].values():
        del rows[0]["R@1 LR->HR teacher"]
    assert regime_metrics(curve_only_reused, "ret", reused={"fitnet"}) == ["R@1 LR->HR"]
    assert regime_metrics(curve_only_reused, "ret") == ["R@1 LR->HR", "R@1 LR->HR teacher"]
    table, facts = regime_tables(summary, "ret", "R@1 LR->HR teacher")
    assert facts["metric"] == "R@1 LR->HR teacher"
    assert facts["methods"]["fitnet"]["values"] == [31.0, 33.0]
    assert "+1.00 [+1.00, +1.00]" in table  # fitnet vs scratch, paired by seed
    note = _map_note(finals, "ret")
    assert "fitnet: their embedding term's projector" in note and "scratch: a least-squares" in note


def test_findings_call_a_difference_only_where_the_interval_says_so(tmp_path):
    from horkd.study.document import _regimes, findings

    def final(method, values):
        return {"regime": "few", "method": method, "val": {str(s): values[0] for s in range(3)},
                "rows": {str(s): [{"method": method, "role": "student", "lr_top1": v}]
                         for s, v in enumerate(values)}}

    finals = [final("scratch", [70.0, 71.0, 72.0]), final("hinton_kd", [80.0, 81.0, 82.0]),
              final("horkd", [80.5, 80.0, 82.6]), final("horkd_no_assistant", [70.0])]
    study = {"seeds": [0, 1, 2], "baselines": ["scratch", "hinton_kd"],
             "methods": ["scratch", "hinton_kd", "horkd", "horkd_no_assistant"],
             "regimes": {"few": {"overrides": [], "teacher": "t"},
                         "later": {"overrides": [], "teacher": "t"}}}
    summary = {"study": study, "finals": finals, "choices": {}}
    _, facts = _regimes(summary, tmp_path)
    text = "\n".join(findings(summary, facts))
    assert "`few`, horkd: 81.03 lr_top1" in text
    assert "vs the best baseline (hinton_kd) +0.03" in text and "level" in text
    assert "vs the label-only student +10.03" in text and "above" in text
    assert "`few`, horkd_no_assistant" not in text  # one seed of three: pending, not a finding
    assert "Not every seed recorded yet: `few` horkd_no_assistant, `later` horkd, " in text


def test_across_sizes_students_are_set_beside_the_specialists_at_their_own_sizes(tmp_path):
    from horkd.study.across_sizes import comparison

    sizes = (5, 7, 10, 14, 21, 28)

    def final(regime, method, curve):  # curve: size -> score for seed 0; +1 per seed
        return {"regime": regime, "method": method, "val": {},
                "rows": {str(s): [{"method": method, "role": "student", "lr_top1": 0.0}]
                         for s in range(3)},
                "curve": {str(s): {method: {str(z): curve(z) + s for z in sizes}}
                          for s in range(3)}}

    finals = [
        final("full", "horkd", lambda z: 80.0 if z == 7 else 60.0),          # 7-px specialist
        final("lr14", "horkd", lambda z: 88.0 if z >= 14 else 50.0),         # 14-px specialist
        final("sizes", "horkd", lambda z: 79.5 if z == 7 else 87.0 if z == 14 else 70.0),
        final("full", "scratch", lambda z: 75.0),                            # flat: most robust
    ]
    study = {"seeds": [0, 1, 2], "base": {"degrade": {"lr_size": 7}}, "regimes": {
        "full": {"overrides": []},
        "lr14": {"overrides": ["degrade.lr_size=14"]},
        "sizes": {"overrides": ["degrade.lr_sizes=[5,7,10,14,21]", "degrade.lr_size=null"],
                  "specialists": ["full", "lr14"]}}}
    text = "\n".join(comparison({"study": study, "finals": finals}, "sizes", tmp_path))
    assert "at 7 px: across vs `full`" in text and "at 14 px: across vs `lr14`" in text
    row = next(line for line in text.splitlines() if line.startswith("| horkd"))
    assert "80.50 vs 81.00: -0.50" in row  # at 7 px: 79.5 + mean seed offset 1
    assert "88.00 vs 89.00: -1.00" in row  # at 14 px
    assert "71.00 vs 76.00 (scratch @7px): -5.00" in row and "below" in row
    assert (tmp_path / "across_sizes_sizes.png").stat().st_size > 0
    assert comparison({"study": study, "finals": finals[:2]}, "sizes", tmp_path) == []


_ORPHAN_SCRIPT = """
import os, signal, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from horkd.study.executors.local import follow_parent

def hang(path, ignore_term):
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)

if __name__ == "__main__":
    grace = float(sys.argv[3])
    pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=follow_parent,
                               initargs=(os.getpid(), grace, 0.2))
    pool.submit(hang, sys.argv[1], sys.argv[2] == "1")
    time.sleep(600)
"""


def _running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("ignore_term", [False, True])
def test_a_worker_stops_when_the_study_process_is_killed(tmp_path, ignore_term):
    """Killing the study (even with SIGKILL) must not leave workers training on unseen: they
    get SIGTERM (a run saves at its step boundary) and exit after the grace period anyway."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script, pid_file = tmp_path / "study_like.py", tmp_path / "worker.pid"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file),
                               "1" if ignore_term else "0", "1.0" if ignore_term else "600"])
    worker = None
    try:
        deadline = time.time() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _running(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 20
        while _running(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not _running(worker)
    finally:
        parent.kill()
        if worker is not None and _running(worker):  # a failed check leaves no orphan behind
            os.kill(worker, signal.SIGKILL)


def test_a_teacher_trained_again_elsewhere_keeps_the_record_the_earlier_runs_learnt_from():
    from horkd.study.jobs import describe_teacher, teacher_record

    first = {"name": "cls", "seed": 0, "fingerprint": "f", "val": 93.95, "train_seconds": 10.0}
    assert teacher_record(None, first) == first
    assert teacher_record(first, dict(first)) == first  # loaded again: nothing to add
    again = {**first, "val": 94.03, "train_seconds": 8.0}
    kept = teacher_record(first, again)
    assert kept["val"] == 93.95 and [r["val"] for r in kept["retrained"]] == [94.03]
    assert teacher_record(kept, again)["retrained"] == kept["retrained"]  # listed once
    other = {**again, "fingerprint": "g"}  # other settings: a new teacher, a new record
    assert teacher_record(kept, other) == other
    # loaded on another machine with the original's score: where it was trained is kept, and so
    # is the list of the teachers trained again
    placed = {**kept, "environment": {"cpu_capability": "AVX2"}}
    loaded = teacher_record(placed, {**first, "environment": {"cpu_capability": "AVX512"}})
    assert loaded["environment"] == {"cpu_capability": "AVX2"}
    assert loaded["retrained"] == kept["retrained"]
    # the line a person reads gives this machine's score and time, not the recorded teacher's
    line = describe_teacher({**kept, "arch": "resnet20", "val_here": 94.03, "seconds_here": 8.0})
    assert line.endswith("best val 94.03 (recorded 93.95: trained again) (8 s)")
    # loaded here in a second: not the seconds it once took, as if it had trained now
    line = describe_teacher({**kept, "arch": "resnet20", "val_here": 94.03, "seconds_here": 8.0,
                             "trained_here": False})
    assert line.endswith("best val 94.03 (recorded 93.95: the checkpoint here was trained "
                         "again), loaded from its checkpoint")


def test_a_run_that_does_not_reproduce_says_what_differs_besides_its_settings():
    from horkd.study.records import RunRecord, environment
    from horkd.study.runner import why_not_reproduced

    here = environment()
    assert here["torch"] and here["cpu_capability"] and here["cpu"]
    record = RunRecord("k", "final", "full", "scratch", "c0", 0, {}, {}, 80.0)
    same_teacher = {"val": 93.95, "val_here": 93.95}
    old = why_not_reproduced(record, same_teacher, "ckpt")
    assert len(old) == 1 and "does not say which CPU" in old[0]
    record.environment = dict(here)
    assert "reproducibility bug" in why_not_reproduced(record, same_teacher, "ckpt")[0]
    record.environment = {**here, "cpu_capability": "NOT-" + here["cpu_capability"]}
    (line,) = why_not_reproduced(record, same_teacher, "ckpt")
    assert f"cpu_capability NOT-{here['cpu_capability']} there" in line
    record.environment = {**here, "gpu": "Some GPU"}
    on_gpu = why_not_reproduced(record, same_teacher, "ckpt")
    assert "trained on a GPU (Some GPU)" in on_gpu[0]
    record.environment = {**here, "cpu_capability": "NOT-" + here["cpu_capability"]}
    retrained = why_not_reproduced(record, {"val": 93.95, "val_here": 94.03}, "runs/t/model")
    assert "trained again here (best val 94.03, recorded 93.95)" in retrained[0]
    assert "runs/t/model" in retrained[0] and len(retrained) == 2


def test_a_records_cost_is_its_cpu_time_and_an_older_records_is_wall_times_threads():
    """A run paused by SIGSTOP for an hour used no CPU meanwhile: its cost is the CPU time kept
    in the record; a record made before that was kept falls back to wall time x threads."""
    from horkd.study.records import RunRecord

    paused = RunRecord("k", "final", "full", "scratch", "c0", 0, {}, {}, 80.0, seconds=3620.0,
                       threads=2, cpu_seconds=41.5)
    assert paused.cost() == 41.5
    older = RunRecord("k", "final", "full", "scratch", "c0", 0, {}, {}, 80.0, seconds=20.0,
                      threads=2)
    assert older.cost() == 40.0


def test_the_guard_note_says_what_the_assistant_was_compared_with():
    from horkd.study.document import _guard_note

    def final(verdicts):
        return {"regime": "r", "method": "horkd",
                "facts": {str(i): {"assistant_guard": v} for i, v in enumerate(verdicts)}}

    held = {"trusted": True, "guard": 10.0, "teacher": 94.2, "teacher_held_out": True}
    text = "\n".join(_guard_note([final([{**held, "assistant": 91.0},
                                         {**held, "assistant": 92.0}])], "r"))
    assert "within the guard in 2 of 2 seeds (91.50 on validation on average against the " \
           "teacher's 94.20 on the same images, which it never trained on)" in text
    seen = {**held, "teacher_held_out": False, "trusted": False, "assistant": 84.0}
    text = "\n".join(_guard_note([final([seen, {**held, "assistant": 91.0}])], "r"))
    assert "in 1 of 2 seeds the teacher had trained on the validation images" in text
    assert "trailed the teacher's by 10.2 points" in text and "within the guard" not in text
    assert "in 1 of 2 seeds (0) the assistant's validation score trailed" in text  # which seed
    # teachers as a factor: their mean, not the first seed's teacher
    two = [{**held, "assistant": 91.0}, {**held, "teacher": 95.2, "assistant": 92.0}]
    assert "against the teacher's 94.70 on the same images" in "\n".join(
        _guard_note([final(two)], "r"))
    assert _guard_note([final([{"trusted": True, "guard": 10.0, "teacher": 95.0,
                                "assistant": 90.0}])], "r") == []


def test_the_page_says_when_the_teacher_is_near_chance():
    from horkd.study.document import _near_chance

    assert "**Near chance** (33.33 with 3 classes)" in _near_chance({"val": 36.0, "classes": 3})
    assert _near_chance({"val": 60.0, "classes": 3}) == ""  # past a quarter of the way to 100
    assert _near_chance({"val": 12.0}) == ""  # a retrieval teacher, or a record from before


def test_the_page_marks_older_numerics_a_guard_fallback_and_gives_each_methods_compute():
    """A row measured by an older NUMERICS_VERSION, and a chain whose assistant failed its guard
    in some seeds, say so in the method cell; every method shows its CPU cost, the teacher's
    share included for the methods that learnt from it."""
    from horkd.numerics_version import NUMERICS_VERSION
    from horkd.study.document import regime_tables

    def final(method, values, numerics, fallback=()):
        rows = {str(s): [{"method": method, "role": "student", "lr_top1": v,
                          **({"fallback": "teacher"} if s in fallback else {})}]
                for s, v in enumerate(values)}
        return {"regime": "few", "method": method, "val": {str(s): 50.0 for s in range(2)},
                "rows": rows, "numerics": {str(s): numerics for s in range(2)},
                "cpu_seconds": {str(s): 120.0 for s in range(2)},
                "teacher": {str(s): "tfp" for s in range(2)}}

    finals = [final("scratch", [70.0, 71.0], NUMERICS_VERSION),
              final("hinton_kd", [80.0, 81.0], NUMERICS_VERSION - 1),
              final("horkd", [80.5, 81.5], NUMERICS_VERSION, fallback=(1,))]
    study = {"seeds": [0, 1], "baselines": ["scratch", "hinton_kd"],
             "methods": ["scratch", "hinton_kd", "horkd"],
             "regimes": {"few": {"seeds": [0, 1]}}}
    teachers = {"t/seed0": {"fingerprint": "tfp", "train_seconds": 600.0, "threads": 2}}
    summary = {"study": study, "finals": finals, "choices": {}, "teachers": teachers}
    table, facts = regime_tables(summary, "few")
    lines = {line.split(" |")[0].strip("| "): line for line in table.splitlines()}
    assert "hinton_kd (older numerics)" in lines
    assert "horkd [fell back to teacher -> student in 1 of 2 seeds, as horkd_no_assistant: the " \
           "assistant failed distill.assistant_guard]" in lines
    # 1,200 teacher CPU-s shared by the 4 final runs that learnt from it: 300 s = 5 min each
    assert lines["scratch"].endswith("| 2.0 |")
    assert lines["hinton_kd (older numerics)"].endswith("| 2.0 + 5.0 |")
    assert facts["methods"]["hinton_kd"]["numerics_version"] == NUMERICS_VERSION - 1
    # a worker's first run also loads the data: the cell is the median run, not the mean
    finals[0]["cpu_seconds"] = {"0": 900.0, "1": 120.0, "2": 120.0}  # mean 380 s: 6.3 min
    table, _ = regime_tables(summary, "few")
    assert next(line for line in table.splitlines()
                if line.startswith("| scratch |")).endswith("| 2.0 |")


def test_a_methods_finals_wait_only_for_its_own_search(tmp_path):
    """A method added to a finished study (a new baseline) must not hold back every other
    method's finals, in its regime and in those that take their choices from it."""
    from types import SimpleNamespace

    from horkd.study.runner import Study, load_study

    study = Study(*load_study(_study_file(tmp_path)), log=lambda _: None)
    seed = study.study.search.seed

    def result(method, tag, val):
        records = {seed: SimpleNamespace(val=val)} if val is not None else {}
        return SimpleNamespace(job=SimpleNamespace(regime="lr4", method=method, tag=tag),
                               records=records)

    found = [result("scratch", "c0", 50.0), result("scratch", "c1", 60.0),
             result("horkd", "c0", 70.0), result("horkd", "c1", 65.0),
             result("fitnet", "c0", 40.0), result("fitnet", "c1", None)]  # fitnet: unfinished
    chosen = study._choices("lr4", found, {})
    assert chosen["scratch"]["tag"] == "c1" and chosen["horkd"]["tag"] == "c0"
    assert "fitnet" not in chosen
    assert [j.method for j in study.final_jobs("lr4", chosen)].count("fitnet") == 0
    few = study._choices("few", found, {"lr4": chosen})  # takes its choices from lr4
    assert set(few) == {"scratch", "horkd"}
