"""Report from a finished run, FLOPs against a hand count, ONNX/TorchScript round trips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from horkd.cli import main
from horkd.config import config_from_dict
from horkd.cost import count_flops
from horkd.experiment import run_ablation, run_experiment
from horkd.export import export_checkpoint
from horkd.models import build_model


def test_flops_equal_hand_count():
    # cnn_tiny, width 2, 1 channel, 7x7 input, embedding 4, 3 classes. A conv costs
    # 2 * Cin * Cout * 3 * 3 * Hout * Wout, a linear layer 2 * in * out (multiply + add).
    model = build_model("cnn_tiny", num_classes=3, in_channels=1, embed_dim=4, width=2)
    hand = (
        2 * 1 * 2 * 9 * 7 * 7  # stem 1 -> 2 at 7x7
        + 2 * 2 * 2 * 9 * 7 * 7  # stage 1, 2 -> 2 at 7x7
        + 2 * 2 * 4 * 9 * 4 * 4  # stage 2, stride 2 -> 4x4
        + 2 * 4 * 8 * 9 * 2 * 2  # stage 3, stride 2 -> 2x2
        + 2 * 8 * 4  # embedding
        + 2 * 4 * 3  # classifier
    )
    assert count_flops(model, (1, 7, 7)) == hand == 9988


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from conftest import tiny_config_dict

    out = tmp_path_factory.mktemp("report") / "run"
    raw = tiny_config_dict(out, methods=["teacher_lr", "scratch", "rkd", "horkd"])
    raw["seeds"] = [0, 1]
    raw["report"] = {"resolution_sizes": [16, 8, 6, 4], "latency_repeats": 2}
    raw["train"] = {s: {"epochs": 2, "batch_size": 32, "max_steps_per_epoch": 2}
                    for s in ("teacher", "assistant", "student")}
    cfg = config_from_dict(raw)
    run_experiment(cfg, progress=False)
    run_ablation(cfg, progress=False, resume=True)
    return Path(cfg.output_dir)


def test_every_stage_trained_once(finished_run):
    """The resolution curve and the ablation reuse networks; nothing is trained twice."""
    for log in finished_run.rglob("metrics.jsonl"):
        assert len(log.read_text().splitlines()) == 2, log


def test_report_from_run(finished_run):
    assert main(["report", str(finished_run)]) == 0
    report_dir = finished_run / "report"
    text = (report_dir / "report.md").read_text()
    for png in ("tiny_resolution.png", "tiny_orders.png", "tiny_training.png"):
        assert (report_dir / png).stat().st_size > 5000, png
        assert png in text
    # the table in the report holds the numbers of results.json (mean ± std over 2 seeds)
    table = json.loads((finished_run / "results.json").read_text())
    horkd = next(e for e in table if e["method"] == "horkd")
    assert f"{horkd['lr_top1']:.2f} ± {horkd['lr_top1_std']:.2f}" in text
    with (report_dir / "tiny_results.csv").open() as handle:
        rows = {r["method"]: r for r in csv.DictReader(handle)}
    assert float(rows["horkd"]["lr_top1"]) == pytest.approx(horkd["lr_top1"])
    # the guard's verdict on each seed's assistant, as the HORKD student's checkpoint records it
    for seed in (0, 1):
        v = json.loads((finished_run / f"seed{seed}/students/horkd/model.json").read_text())[
            "assistant_guard"]
        learned = "through the assistant" if v["trusted"] else "from the teacher"
        assert (f"seed{seed} (horkd): assistant {v['assistant']:.2f} on validation against the "
                f"teacher's {v['teacher']:.2f}; learned {learned}") in text
    # resolution curve: per seed values averaged; the student row exists at every size
    curves = [json.loads((finished_run / f"seed{s}/resolution_curve.json").read_text())
              for s in (0, 1)]
    with (report_dir / "tiny_resolution.csv").open() as handle:
        res = {r["network"]: r for r in csv.DictReader(handle)}
    mean8 = (curves[0]["horkd"]["8"] + curves[1]["horkd"]["8"]) / 2
    assert float(res["horkd"]["8px"]) == pytest.approx(mean8)
    ablation = json.loads((finished_run / "ablation.json").read_text())
    assert set(ablation["orders"]) == {"horkd"}  # the run's only method of group ours
    assert set(ablation["orders"]["horkd"]) == {"1", "2", "3", "1+2", "1+3", "2+3", "1+2+3"}
    assert all(len(v) == 2 for v in ablation["orders"]["horkd"].values())
    assert set(ablation["baselines"]) == {"scratch", "rkd"}  # the run's baselines, 2 seeds each
    assert all(len(v) == 2 for v in ablation["baselines"].values())
    orders_csv = (report_dir / "tiny_orders.csv").read_text()
    assert "rkd,baseline" in orders_csv and "horkd,1+2+3" in orders_csv
    with (report_dir / "tiny_cost.csv").open() as handle:
        cost = {r["network"]: r for r in csv.DictReader(handle)}
    assert set(cost) == {"teacher", "assistant", "student"}
    assert float(cost["student"]["mflops"]) < float(cost["teacher"]["mflops"])
    assert float(cost["teacher"]["params_vs_teacher"]) == 1.0


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_round_trip(finished_run, tmp_path, fmt):
    ckpt = finished_run / "seed0/students/horkd/model"
    out, diff = export_checkpoint(ckpt, fmt, tmp_path / "new" / "folder" / f"student.{fmt}")
    assert out.exists() and out.stat().st_size > 1000  # the folders are made as predict's are
    assert diff < 1e-4


def test_the_verdict_says_whether_its_difference_is_within_the_test_splits_noise(finished_run):
    """Paired over the same test images: the run keeps each student's hit per test image, which
    reproduce the table's scores, and the verdict (results.md and the report) judges on them."""
    import torch

    from horkd.paired import lead_noise
    from horkd.results import read_test_hits

    hits = read_test_hits(finished_run)
    # test_subset is drawn per seed here (no data.split_seed): each seed scored its own images
    assert hits is not None and hits.metric == "lr_top1" and not hits.same_images
    assert set(hits.hits) == {"scratch", "rkd", "horkd"}  # teacher_lr: a bound
    for seed in (0, 1):
        rows = json.loads((finished_run / f"seed{seed}/results.json").read_text())
        for row in rows:
            if row["method"] in hits.hits:
                per_image = hits.hits[row["method"]][seed]
                assert per_image.numel() == 100 and set(per_image.tolist()) <= {0.0, 1.0}
                assert 100 * float(per_image.mean()) == pytest.approx(row["lr_top1"]), row
    table = {e["method"]: e.get("lr_top1") for e in json.loads(
        (finished_run / "results.json").read_text())}
    best = max(("scratch", "rkd"), key=table.get)
    paired = lead_noise(hits.hits["horkd"], hits.hits[best], same_images=False)
    assert paired.mean == pytest.approx(table["horkd"] - table[best])
    side = "within" if paired.within_noise else "beyond"
    said = f"{side} the noise of each seed's 100 test images (12.71 standard errors: " \
           f"{paired.half_width:.2f} points)"  # two seeds: Student's t at 1 df
    assert main(["report", str(finished_run)]) == 0
    for page in (finished_run / "results.md", finished_run / "report" / "report.md"):
        text = page.read_text()
        assert said in text, page
        assert "the spread of 2 per-seed leads on each seed's own images" in text, page
        assert "sd of the per-seed leads over sqrt(S)" in text, page  # the rule, said once
    assert torch.equal(hits.hits["horkd"][0], read_test_hits(finished_run).hits["horkd"][0])


def test_a_verdict_on_a_small_test_split_calls_a_few_images_noise():
    from horkd.results import SplitHits, verdict

    def hits(right: int) -> list:
        import torch
        return [torch.tensor([1.0] * right + [0.0] * (24 - right))]

    table = [{"method": "hinton_kd", "role": "student", "lr_top1": 100 * 20 / 24},
             {"method": "horkd", "role": "student", "lr_top1": 100 * 18 / 24}]
    close = verdict(table, SplitHits("lr_top1", {"hinton_kd": hits(20), "horkd": hits(18)}))
    assert "horkd (75.00) trails by 8.33 points the best baseline hinton_kd (on test: no " \
           "validation scores; 83.33 on test), within the noise of these 24 test images" in close
    assert "one seed: seed-to-seed spread not included" in close
    table[1]["lr_top1"] = 100 * 4 / 24  # 16 images apart out of 24: no noise makes that
    far = verdict(table, SplitHits("lr_top1", {"hinton_kd": hits(20), "horkd": hits(4)}))
    assert "beyond the noise of these 24 test images" in far
    assert "noise" not in verdict(table)  # an older run without per-image hits: no call


def test_export_rejects_unknown_format(finished_run):
    with pytest.raises(ValueError, match="onnx, torchscript"):
        export_checkpoint(finished_run / "seed0/teacher/model", "tflite")


def test_the_verdict_picks_the_best_baseline_on_validation_never_on_test(tmp_path):
    """The test split scores; it never chooses. A baseline best on test but not on validation
    is not the one ours is held against (a new user saw 'best baseline scratch' beside
    'Deploy hinton_kd ... validation')."""
    import json

    from horkd.results import read_validation, verdict

    table = [{"method": "scratch", "role": "student", "lr_top1": 70.0},
             {"method": "hinton_kd", "role": "student", "lr_top1": 65.0},
             {"method": "horkd", "role": "student", "lr_top1": 66.0}]
    (tmp_path / "ship.json").write_text(json.dumps(
        {"validation": {"hinton_kd": 60.0, "scratch": 48.0, "horkd": 44.0}}))
    said = verdict(table, validation=read_validation(tmp_path))
    assert "beats by 1.00 points the best baseline hinton_kd (on validation; 65.00 on test)" \
        in said
    assert "scratch" not in said
    assert "best baseline scratch (on test: no validation scores" in verdict(table)
    (tmp_path / "ship.json").write_text("{not json")
    assert read_validation(tmp_path) == {}


def test_the_verdict_warns_when_the_teacher_is_no_better_than_its_students():
    from horkd.results import verdict

    rows = [{"method": "teacher", "role": "teacher", "hr_top1": 44.0},
            {"method": "scratch", "role": "student", "lr_top1": 45.0},
            {"method": "horkd", "role": "student", "lr_top1": 43.0}]
    text = verdict(rows)
    assert text.startswith("On lr_top1: horkd (43.00) trails by 2.00 points")
    assert "The HR teacher (44.00 at HR) is no better than scratch (45.00 at LR)" in text
    rows[0]["hr_top1"] = 90.0
    assert "HR teacher" not in verdict(rows)


def test_the_legend_explains_the_methods_and_columns_the_table_shows():
    from horkd.results import legend

    rows = [{"method": "teacher_lr", "role": "teacher", "lr_top1": 60.0},
            {"method": "horkd", "role": "student", "lr_top1": 80.0, "lr_top1_std": 0.5,
             "mean@7-14px": 81.0, "worst@7-14px": 75.0, "seeds": 2}]
    text = legend(rows)
    assert "`teacher_lr`: the HR teacher applied to LR input" in text
    assert "`horkd`:" in text and "mean@: a student's mean" in text and "worst@:" in text
    assert "standard deviation over seeds" in text
    plain = legend([{"method": "scratch", "role": "student", "lr_top1": 70.0}])
    assert "mean@:" not in plain and "standard deviation" not in plain
    # one seed: the table shows no ±, so the legend does not explain one (a std of 0 is stored)
    one = legend([{"method": "scratch", "role": "student", "lr_top1": 70.0, "lr_top1_std": 0.0,
                   "seeds": 1}])
    assert "standard deviation" not in one


def test_a_chain_that_fell_back_to_the_teacher_is_named_in_the_table_and_the_verdict():
    from horkd.results import format_table, verdict

    table = [
        {"method": "hinton_kd", "role": "student", "params": 1, "flops": 1, "lr_top1": 80.0,
         "seeds": 2},
        {"method": "horkd", "role": "student", "params": 1, "flops": 1, "lr_top1": 81.0,
         "seeds": 2, "fallback_seeds": 2},
    ]
    shown = "horkd [fell back to teacher -> student in 2 of 2 seeds, as horkd_no_assistant"
    assert shown in format_table(table)
    assert shown in verdict(table)
    assert "fallback_seeds" not in format_table(table)  # not shown as a metric column


def test_a_fallback_runs_report_explains_the_chain_that_ran_not_the_one_it_names(tmp_path):
    """A run whose guard dropped the assistant: the report's legend says teacher -> student and
    why, and that the assistant taught no one; never the full chain as what ran."""
    import yaml

    from horkd.methods import METHODS
    from horkd.report import build_report
    from horkd.results import legend

    chain = METHODS.get("horkd").description  # "... T -> A on HR, then A -> S on LR"
    table = [
        {"method": "assistant", "role": "assistant", "params": 1, "flops": 1, "hr_top1": 20.0,
         "seeds": 2},
        {"method": "horkd", "role": "student", "params": 1, "flops": 1, "lr_top1": 81.0,
         "seeds": 2, "fallback_seeds": 2},
    ]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"name": "fb", "task": "classification", "data": {"dataset": "digits"}, "seeds": [0, 1]}))
    (tmp_path / "results.json").write_text(json.dumps(table))
    text = build_report([tmp_path]).read_text()
    horkd = next(line for line in text.splitlines() if line.startswith("- `horkd`:"))
    assert horkd.startswith("- `horkd`: ran teacher -> student"), horkd
    assert "the assistant was dropped because its validation score was more than " \
           "distill.assistant_guard points below the teacher's" in horkd
    assert f"The chain it is named for ({chain}) did not run" in horkd
    assistant = next(line for line in text.splitlines() if line.startswith("- `assistant`:"))
    assert "it taught no student here" in assistant
    # one seed of two fell back: the chain as designed, and the seed that ran otherwise
    table[1]["fallback_seeds"] = 1
    some = legend(table)
    assert f"- `horkd`: {chain}; in 1 of 2 seeds it ran teacher -> student instead" in some
    assert "taught no student in 1 of 2 seeds" in some
    table[1].pop("fallback_seeds")  # no fallback: the registry's line alone
    assert f"- `horkd`: {chain}\n" in legend(table) and "taught no" not in legend(table)


def test_the_report_gives_each_students_training_compute_with_its_shares(tmp_path):
    from horkd.report.compute import training_compute

    seed = tmp_path / "seed0"
    for stage, seconds in [("teacher", 100.0), ("assistant", 40.0), ("students/scratch", 10.0),
                           ("students/hinton_kd", 10.0), ("students/horkd", 20.0)]:
        (seed / stage).mkdir(parents=True)
        (seed / stage / "done.json").write_text(json.dumps({"seconds": seconds, "threads": 2}))
    ordered = training_compute(seed, ["scratch", "hinton_kd", "horkd"])
    assert [r["method"] for r in ordered] == ["scratch", "hinton_kd", "horkd"]  # the run's order
    rows = {r["method"]: r for r in ordered}
    assert rows["scratch"]["total_cpu_s"] == rows["scratch"]["alone_cpu_s"] == 20.0
    assert rows["hinton_kd"]["teacher_share_cpu_s"] == 100.0  # 200 CPU-s over 2 students
    assert rows["hinton_kd"]["alone_cpu_s"] == 20.0 + 200.0  # the whole teacher
    assert rows["horkd"]["assistant_cpu_s"] == 80.0
    assert rows["horkd"]["total_cpu_s"] == 40.0 + 80.0 + 100.0
    assert rows["horkd"]["alone_cpu_s"] == 40.0 + 80.0 + 200.0
    (seed / "teacher" / "done.json").unlink()  # a teacher from a checkpoint: not trained here
    assert training_compute(seed)[0]["teacher_share_cpu_s"] is None
