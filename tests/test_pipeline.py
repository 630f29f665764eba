"""End to end on tiny real data: every stage runs, writes what it promises, freezes what it must."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from horkd.checkpoint import load_state
from horkd.config import config_from_dict
from horkd.methods import METHODS, MethodContext
from horkd.pipeline import RunDirError, SeedRun, load_splits, run_experiment

ALL_METHODS = [
    "teacher_lr", "scratch", "hinton_kd", "fitnet", "rkd", "horkd_no_assistant", "horkd",
    "horkd_joint",
]


def _finite_table(table):
    for entry in table:
        for key, value in entry.items():
            if isinstance(value, float):
                assert math.isfinite(value), (entry["method"], key)


@pytest.mark.parametrize("schedule", ["sequential", "joint"])
def test_full_pipeline(tiny_cfg, schedule):
    tiny_cfg["methods"] = ALL_METHODS
    cfg = config_from_dict(tiny_cfg, [f"schedule={schedule}"])
    run_dir, table = run_experiment(cfg, progress=False)
    seed_dir = Path(run_dir) / "seed0"
    for name in ["teacher", *[f"students/{m}" for m in ALL_METHODS if m != "teacher_lr"]]:
        stage = seed_dir / name
        assert (stage / "model.safetensors").exists(), name
        meta = json.loads((stage / "model.json").read_text())
        assert meta["model"]["arch"] and meta["git_sha"] is None or isinstance(meta["git_sha"], str)
        rows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(math.isfinite(r["train/loss"]) for r in rows)
        assert (stage / "metrics.csv").exists() and (stage / "tensorboard").is_dir()
    assert (seed_dir / "assistant" / "model.safetensors").exists() == (schedule == "sequential")
    assert (seed_dir / "students" / "horkd_joint" / "assistant.safetensors").exists()
    for ext in ("md", "csv", "json"):
        assert (Path(run_dir) / f"results.{ext}").exists()
    methods = [e["method"] for e in table]
    assert methods[0] == "teacher" and set(ALL_METHODS) <= set(methods)
    _finite_table(table)
    student_rows = [e for e in table if e["role"] == "student"]
    assert all(0 <= e["lr_top1"] <= 100 and "top1@8" in e for e in student_rows)
    assert all(0 <= e["hr_top1"] <= 100 for e in table if e["role"] != "student")
    assert "| horkd |" in (Path(run_dir) / "results.md").read_text()


def test_reference_frozen_and_warm_start(tiny_cfg):
    cfg = config_from_dict(tiny_cfg)
    run = SeedRun(cfg, 0, Path(cfg.output_dir), splits=load_splits(cfg, 0), progress=False)
    assistant = run.assistant()
    before = {k: v.clone() for k, v in assistant.state_dict().items()}
    ctx = MethodContext(
        cfg=cfg,
        new_student=lambda: run.new_model("student"),
        new_assistant=lambda: run.new_model("assistant"),
        new_criterion=run.new_criterion,
        teacher=run.teacher(),
        assistant=assistant,
    )
    method = METHODS.get("horkd").build(ctx)
    # Warm start: the new student begins exactly at the assistant's weights.
    for key, value in method.student.state_dict().items():
        assert torch.equal(value, before[key]), key
    run._train_stage("students/horkd", method, cfg.train.student, {}, fingerprint="test")
    after = assistant.state_dict()
    for key, value in before.items():  # running stats included: the reference stayed in eval
        assert torch.equal(value, after[key]), key
    trained = load_state(Path(cfg.output_dir) / "seed0/students/horkd/model")
    assert any(not torch.equal(trained[k], before[k]) for k in before)


def test_no_warm_start_when_disabled(tiny_cfg):
    cfg = config_from_dict(tiny_cfg, ["distill.warm_start=false"])
    run = SeedRun(cfg, 0, Path(cfg.output_dir), splits=load_splits(cfg, 0), progress=False)
    assistant = run.assistant()
    ctx = MethodContext(
        cfg, lambda: run.new_model("student"), lambda: None, run.new_criterion, run.teacher(),
        assistant,
    )
    student = METHODS.get("horkd").build(ctx).student
    assert not all(
        torch.equal(v, assistant.state_dict()[k]) for k, v in student.state_dict().items()
    )


@pytest.mark.parametrize("schedule", ["sequential", "joint"])
def test_student_logits_from_the_teacher(tiny_cfg, schedule):
    """With ``distill.student_logits_from: teacher`` the student's KD term targets the teacher's
    logits while its embedding and relational terms keep the assistant's embedding."""
    from horkd.losses import HintonKD
    from horkd.methods.base import Batch

    cfg = config_from_dict(
        tiny_cfg, [f"schedule={schedule}", "distill.student_logits_from=teacher"]
    )
    run = SeedRun(cfg, 0, Path(cfg.output_dir), splits=load_splits(cfg, 0), progress=False)
    teacher = run.teacher()
    assistant = run.assistant() if schedule == "sequential" else None
    ctx = MethodContext(
        cfg, lambda: run.new_model("student"), lambda: run.new_model("assistant"),
        run.new_criterion, teacher, assistant,
    )
    method = METHODS.get("horkd").build(ctx).eval()
    x = torch.rand(6, *run.splits.train[0][0].shape)
    lr = torch.nn.functional.interpolate(x, size=cfg.degrade.lr_size, mode="area")
    batch = Batch(hr=x, lr=lr, target=torch.arange(6) % 2)
    with torch.no_grad():
        out, terms = method(batch)
        t_out = teacher(x)
        helper = method.assistant if schedule == "joint" else assistant
        a_out = helper(x)
    kd = HintonKD(cfg.distill.loss.temperature)
    weight = cfg.distill.loss.logit_weight
    assert torch.allclose(terms["order1_logits"], weight * kd(out.logits, t_out.logits))
    assert not torch.allclose(terms["order1_logits"], weight * kd(out.logits, a_out.logits))
    if schedule == "sequential":
        ref = method.reference_output(batch)
        assert torch.equal(ref.embedding, a_out.embedding)
        assert torch.equal(ref.logits, t_out.logits)


def test_run_dir_continues_same_config_and_guards_a_different_one(tiny_cfg):
    cfg = config_from_dict(tiny_cfg, ["methods=[scratch]"])
    run_experiment(cfg, progress=False)
    root = Path(cfg.output_dir) / "seed0"
    teacher_file, student_file = root / "teacher/model.safetensors", root / "students/scratch/model.json"
    stamps = teacher_file.stat().st_mtime_ns, student_file.stat().st_mtime_ns
    run_experiment(cfg, progress=False)  # the same command again continues: nothing retrains
    assert (teacher_file.stat().st_mtime_ns, student_file.stat().st_mtime_ns) == stamps

    other = config_from_dict(tiny_cfg, ["methods=[scratch]", "train.student.epochs=1"])
    with pytest.raises(RunDirError, match=r"different config \(changed: train\.student\.epochs\)"):
        run_experiment(other, progress=False)
    # --resume keeps the stages whose own settings did not change: only the student retrains.
    run_experiment(other, progress=False, resume=True)
    assert teacher_file.stat().st_mtime_ns == stamps[0]
    assert student_file.stat().st_mtime_ns != stamps[1]
    assert (Path(cfg.output_dir) / "config.previous.yaml").exists()
    run_experiment(other, progress=False, overwrite=True)
    assert teacher_file.stat().st_mtime_ns != stamps[0]


def test_refuses_to_overwrite_a_folder_that_is_not_a_run(tiny_cfg, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"not yours to delete")
    cfg = config_from_dict(tiny_cfg, ["methods=[scratch]", f"output_dir={folder}"])
    with pytest.raises(RunDirError, match="does not hold a horkd run"):
        run_experiment(cfg, progress=False, overwrite=True)
    assert (folder / "holiday.jpg").exists()


def test_teacher_from_checkpoint_and_from_torchvision_weights(tiny_cfg, tmp_path):
    cfg = config_from_dict(tiny_cfg, ["methods=[teacher_lr]"])
    run_experiment(cfg, progress=False)
    ckpt = Path(cfg.output_dir) / "seed0/teacher/model"
    # A horkd checkpoint as the teacher: nothing is trained again, the numbers are the same.
    again = config_from_dict(
        tiny_cfg,
        ["methods=[teacher_lr]", f"teacher.checkpoint={ckpt}", f"output_dir={tmp_path / 'b'}"],
    )
    _, table = run_experiment(again, progress=False)
    assert not (tmp_path / "b/seed0/teacher").exists()
    first = json.loads((Path(cfg.output_dir) / "results.json").read_text())
    assert table[0]["hr_top1"] == first[0]["hr_top1"]
    # A checkpoint of another architecture is refused with both names.
    wrong = config_from_dict(
        tiny_cfg,
        ["teacher.arch=resnet8", f"teacher.checkpoint={ckpt}", f"output_dir={tmp_path / 'c'}"],
    )
    with pytest.raises(ValueError, match="arch='cnn_small'.*arch='resnet8'"):
        run_experiment(wrong, progress=False)
    # torchvision backbone weights from a local file (as users hold them), then fine-tuned here.
    from horkd.models import build_model

    source = build_model("tv_resnet18", 10, 1)
    torch.save(source.backbone.net.state_dict(), tmp_path / "r18.pth")
    tv = config_from_dict(
        tiny_cfg,
        [
            "methods=[teacher_lr]",
            "teacher.arch=tv_resnet18",
            "teacher.width=null",
            f"teacher.weights={tmp_path / 'r18.pth'}",
            "train.teacher.epochs=1",
            "train.teacher.max_steps_per_epoch=1",
            f"output_dir={tmp_path / 'd'}",
        ],
    )
    _, table = run_experiment(tv, progress=False)
    assert table[0]["params"] > 11_000_000 and 0 <= table[0]["hr_top1"] <= 100


def test_stage_fingerprints_follow_what_each_stage_depends_on(tiny_cfg):
    from horkd.run_dir import assistant_fingerprint, student_fingerprint, teacher_fingerprint

    def prints(*overrides: str) -> tuple[str, str, str]:
        cfg = config_from_dict(tiny_cfg, list(overrides))
        return (teacher_fingerprint(cfg, 0), assistant_fingerprint(cfg, 0),
                student_fingerprint(cfg, 0, "horkd", teacher=False, assistant=True))

    base = prints()
    assert prints("data.num_workers=2") == base  # speed settings change nothing learnt
    assert prints("report.latency_repeats=3", "methods=[horkd]") == base
    t, a, s = prints("distill.warm_start=false")  # a student-only setting
    assert (t, a) == base[:2] and s != base[2]
    t, a, s = prints("degrade.lr_size=8")
    assert (t, a) == base[:2] and s != base[2]
    t, a, s = prints("distill.loss.angle_weight=5")  # the assistant distils too
    assert t == base[0] and a != base[1] and s != base[2]
    t, a, s = prints("train.teacher.epochs=3")  # everything downstream of the teacher
    assert t != base[0] and a != base[1] and s != base[2]
    assert prints("seeds=[1]") == base  # the seed is an argument, not read from the list
    scratch = config_from_dict(tiny_cfg, ["distill.warm_start=false"])
    assert student_fingerprint(scratch, 0, "scratch", teacher=False, assistant=False) == (
        student_fingerprint(config_from_dict(tiny_cfg), 0, "scratch", teacher=False,
                            assistant=False)
    )  # labels only: the distillation settings are not its business


def test_ablation_students_follow_the_runs_assistant(tiny_cfg):
    """An ablation student distils from the run's assistant: its fingerprint follows that
    assistant's settings, not the ablation's own orders copy."""
    from horkd.run_dir import student_fingerprint

    def ablation_print(*overrides: str) -> str:
        run_cfg = config_from_dict(tiny_cfg, list(overrides))
        ablation_cfg = run_cfg.model_copy(deep=True)
        ablation_cfg.distill.loss.orders = [1]
        return student_fingerprint(ablation_cfg, 0, "horkd", teacher=False, assistant=True,
                                   upstream=run_cfg)

    assert ablation_print() != ablation_print("distill.loss.orders=[2,3]")
