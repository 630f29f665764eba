"""The experiment package end to end on tiny real data: every stage runs, writes what it
promises, freezes what it must; the context, networks and stage runner behave as documented."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from horkd.checkpoint import load_state
from horkd.config import config_from_dict
from horkd.experiment import RunDirError, open_seed, run_experiment
from horkd.methods import METHODS, MethodContext

ALL_METHODS = [
    "teacher_lr", "scratch", "hinton_kd", "fitnet", "rkd", "horkd_no_assistant", "horkd",
    "horkd_joint",
]


# Digits has ten classes: chance top-1 is 10. A stage that learnt beats it by LEARNT_MARGIN
# points. The full pipeline's settings (below) put every student at 37 or more on the 4-px
# test images over seeds 0-2 (rkd the lowest, 37-42), the assistant at 44-65 and the teacher at
# 74-83 on HR; with training disabled (every optimiser step a no-op, or epochs=0) every row is
# at 6-11.
CHANCE_TOP1 = 100 / 10
LEARNT_MARGIN = 15.0


def _finite_table(table):
    for entry in table:
        for key, value in entry.items():
            if isinstance(value, float):
                assert math.isfinite(value), (entry["method"], key)


def test_full_pipeline(tiny_cfg):
    """Every method trains, writes what it promises and learns: two whole epochs of batches of
    16 (15 steps each; the tiny default of 3 steps leaves rkd at chance) put every row above
    chance by LEARNT_MARGIN."""
    tiny_cfg["methods"] = ALL_METHODS
    budget = {**tiny_cfg["train"]["student"], "batch_size": 16, "max_steps_per_epoch": None}
    tiny_cfg["train"] = {"teacher": budget, "assistant": budget, "student": budget}
    cfg = config_from_dict(tiny_cfg)
    outcome = run_experiment(cfg, progress=False)
    run_dir, table = outcome.run_dir, outcome.table
    seed_dir = Path(run_dir) / "seed0"
    for name in ["teacher", "assistant", *[f"students/{m}" for m in ALL_METHODS[1:]]]:
        stage = seed_dir / name
        assert (stage / "model.safetensors").exists(), name
        meta = json.loads((stage / "model.json").read_text())
        assert meta["model"]["arch"] == ("cnn_small" if name == "teacher" else "cnn_tiny"), name
        assert meta["git_sha"] is None or re.fullmatch("[0-9a-f]{40}", meta["git_sha"]), name
        rows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(math.isfinite(r["train/loss"]) for r in rows)
        assert (stage / "metrics.csv").exists() and (stage / "tensorboard").is_dir()
        done = json.loads((stage / "done.json").read_text())
        assert done["best_epoch"] in (1, 2) and done["score_key"] == "top1"
    assert (seed_dir / "students" / "horkd_joint" / "assistant.safetensors").exists()
    for ext in ("md", "csv", "json"):
        assert (Path(run_dir) / f"results.{ext}").exists()
    methods = [e["method"] for e in table]
    assert methods[0] == "teacher" and set(ALL_METHODS) <= set(methods)
    _finite_table(table)
    learnt = CHANCE_TOP1 + LEARNT_MARGIN
    student_rows = [e for e in table if e["role"] == "student"]
    assert all("top1@8" in e for e in student_rows)
    below = {e["method"]: e["lr_top1"] for e in student_rows if e["lr_top1"] <= learnt}
    assert not below, f"students at {learnt} or below on LR (chance {CHANCE_TOP1}): {below}"
    below = {e["method"]: e["hr_top1"] for e in table
             if e["role"] != "student" and e["hr_top1"] <= learnt}  # teacher, assistant on HR
    assert not below, f"HR networks at {learnt} or below (chance {CHANCE_TOP1}): {below}"
    text = (Path(run_dir) / "results.md").read_text()
    # an assistant that failed its guard is named on horkd's row (at this budget it trails the
    # teacher by more than the guard, 63 against 83 at seed 0)
    guard = json.loads((seed_dir / "students/horkd/model.json").read_text())["assistant_guard"]
    horkd = next(e for e in table if e["method"] == "horkd")
    assert horkd.get("fallback_seeds", 0) == (0 if guard["trusted"] else 1)
    cell = "horkd" + ("" if guard["trusted"] else " [fell back to teacher -> student, as "
                                                  "horkd_no_assistant: the assistant failed "
                                                  "distill.assistant_guard]")
    assert f"| {cell} | ours | student |" in text and "| rkd | baseline | student |" in text
    assert "| teacher_lr | reference | teacher |" in text
    assert [r.method for r in outcome.seeds[0].rows] == methods  # one seed: rows = table


def test_joint_schedule_is_its_own_method(tiny_cfg):
    """``schedule: joint`` used to turn ``horkd`` into ``horkd_joint`` silently; it is refused
    with the way out, while the old ``schedule: sequential`` of earlier run directories loads."""
    from horkd.config import ConfigError

    with pytest.raises(ConfigError, match="list it in methods"):
        config_from_dict(tiny_cfg, ["schedule=joint"])
    assert config_from_dict(tiny_cfg, ["schedule=sequential"]) == config_from_dict(tiny_cfg)
    with pytest.raises(ConfigError, match="'assistant' is a stage"):
        config_from_dict(tiny_cfg, ["methods=[scratch,assistant]"])


def _method_context(networks, cfg, teacher=True, assistant=True) -> MethodContext:
    return MethodContext(
        distill=cfg.distill,
        new_network=networks.new_network,
        new_criterion=networks.new_criterion,
        teacher=networks.teacher() if teacher else None,
        assistant=networks.assistant() if assistant else None,
    )


def test_reference_frozen_and_warm_start(tiny_cfg):
    cfg = config_from_dict(tiny_cfg, ["distill.warm_start=true", "distill.assistant_guard=null"])
    ctx, networks = open_seed(cfg, 0, progress=False)
    assistant = networks.assistant()
    before = {k: v.clone() for k, v in assistant.state_dict().items()}
    method = METHODS.get("horkd").build(_method_context(networks, cfg))
    # Warm start: the new student begins exactly at the assistant's weights.
    for key, value in method.student.state_dict().items():
        assert torch.equal(value, before[key]), key
    outcome = networks.stages.train("students/horkd", method, cfg.train.student, {}, "test")
    after = assistant.state_dict()
    for key, value in before.items():  # running stats included: the reference stayed in eval
        assert torch.equal(value, after[key]), key
    trained = load_state(Path(cfg.output_dir) / "seed0/students/horkd/model")
    assert any(not torch.equal(trained[k], before[k]) for k in before)
    # the runner returns what it wrote: the record equals done.json, the network the checkpoint
    done = json.loads((Path(cfg.output_dir) / "seed0/students/horkd/done.json").read_text())
    assert outcome.record == done and outcome.best_score == done["best_score"]
    for key, value in outcome.model.state_dict().items():
        assert torch.equal(value.cpu(), trained[key]), key


def test_no_warm_start_by_default(tiny_cfg):
    cfg = config_from_dict(tiny_cfg)
    assert cfg.distill.warm_start is False
    _, networks = open_seed(cfg, 0, progress=False)
    assistant = networks.assistant()
    student = METHODS.get("horkd").build(_method_context(networks, cfg)).student
    assert not all(
        torch.equal(v, assistant.state_dict()[k]) for k, v in student.state_dict().items()
    )


@pytest.mark.parametrize("method_name", ["horkd", "horkd_joint"])
def test_student_logits_from_the_teacher(tiny_cfg, method_name):
    """With ``distill.student_logits_from: teacher`` the student's KD term targets the teacher's
    logits while its embedding and relational terms keep the assistant's embedding."""
    from horkd.losses import HintonKD
    from horkd.methods.base import Batch

    cfg = config_from_dict(tiny_cfg, ["distill.student_logits_from=teacher"])
    ctx, networks = open_seed(cfg, 0, progress=False)
    sequential = method_name == "horkd"
    method_ctx = _method_context(networks, cfg, assistant=sequential)
    method = METHODS.get(method_name).build(method_ctx).eval()
    x = torch.rand(6, *ctx.splits.train[0][0].shape)
    lr = torch.nn.functional.interpolate(x, size=cfg.degrade.lr_size, mode="area")
    batch = Batch(hr=x, lr=lr, target=torch.arange(6) % 2)
    with torch.no_grad():
        out, terms = method(batch)
        t_out = method_ctx.teacher(x)
        helper = method_ctx.assistant if sequential else method.assistant
        a_out = helper(x)
    kd = HintonKD(cfg.distill.loss.temperature)
    weight = cfg.distill.loss.logit_weight
    assert torch.allclose(terms["order1_logits"], weight * kd(out.logits, t_out.logits))
    assert not torch.allclose(terms["order1_logits"], weight * kd(out.logits, a_out.logits))
    if sequential:
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
    table = run_experiment(again, progress=False).table
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
    # torchvision backbone weights from a local file (as users hold them): the teacher the run
    # scores starts from them. Zero epochs, so that the network scored is the file's, weight for
    # weight (its score is that of random weights: no claim on learning here; fine-tuning is any
    # stage's training, which test_full_pipeline checks learns).
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
            "train.teacher.epochs=0",
            f"output_dir={tmp_path / 'd'}",
        ],
    )
    table = run_experiment(tv, progress=False).table
    assert table[0]["params"] > 11_000_000 and "hr_top1" in table[0]
    scored = load_state(tmp_path / "d/seed0/teacher/model")
    loaded = source.backbone.net.state_dict()
    assert all(torch.equal(scored[f"backbone.net.{k}"], v) for k, v in loaded.items())
    fresh = build_model("tv_resnet18", 10, 1).backbone.net.state_dict()  # not by chance
    assert not torch.equal(fresh["conv1.weight"], loaded["conv1.weight"])


def test_stage_fingerprints_follow_what_each_stage_depends_on(tiny_cfg):
    from horkd.run_dir import assistant_fingerprint, student_fingerprint, teacher_fingerprint

    def prints(*overrides: str) -> tuple[str, str, str]:
        cfg = config_from_dict(tiny_cfg, list(overrides))
        return (teacher_fingerprint(cfg, 0), assistant_fingerprint(cfg, 0),
                student_fingerprint(cfg, 0, "horkd", teacher=False, assistant=True))

    base = prints()
    assert prints("data.num_workers=2") == base  # speed settings change nothing learnt
    assert prints("report.latency_repeats=3", "methods=[horkd]") == base
    t, a, s = prints("distill.warm_start=true")  # a student-only setting
    assert (t, a) == base[:2] and s != base[2]
    t, a, s = prints("degrade.lr_size=8")
    assert (t, a) == base[:2] and s != base[2]
    t, a, s = prints("distill.loss.angle_weight=5")  # the assistant distils too
    assert t == base[0] and a != base[1] and s != base[2]
    t, a, s = prints("train.teacher.epochs=3")  # everything downstream of the teacher
    assert t != base[0] and a != base[1] and s != base[2]
    assert prints("seeds=[1]") == base  # the seed is an argument, not read from the list
    t, a, s = prints("data.label_fraction=0.1")  # the teacher sees every label: not its business
    assert t == base[0] and a != base[1] and s != base[2]
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


def test_a_new_method_is_one_registration_and_reaches_the_table_and_verdict(tiny_cfg, tmp_path,
                                                                            capsys):
    """Adding a distillation method touches one file: this test registers one (softened logits
    and distances from the teacher) and ``horkd run`` trains it beside the baselines; the table
    shows its group and the verdict weighs it against the best baseline."""
    from horkd.cli import main
    from horkd.methods import register_method
    from horkd.methods.presets import distill

    @register_method("throwaway_kd", "logits + distances from the teacher (a test's method)",
                     group="ours", terms=("logits", "distance"))
    def _throwaway(ctx: MethodContext):
        return distill(ctx, ctx.new_network("student"), ctx.teacher, ("logits", "distance"))

    try:
        tiny_cfg["methods"] = ["scratch", "rkd", "throwaway_kd"]
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(tiny_cfg))
        assert main(["run", str(path), "--no-progress", "--no-report"]) == 0
    finally:
        METHODS.unregister("throwaway_kd")
    out = capsys.readouterr().out
    assert "| throwaway_kd | ours | student |" in out
    assert "throwaway_kd (" in out and "the best baseline" in out
    done = json.loads((Path(tiny_cfg["output_dir"]) / "seed0/students/throwaway_kd/done.json")
                      .read_text())
    metrics = (Path(tiny_cfg["output_dir"]) / "seed0/students/throwaway_kd/metrics.jsonl")
    assert "train/order1_logits" in metrics.read_text()
    assert "train/order2_distance" in metrics.read_text() and done["best_epoch"] >= 1
    assert "throwaway_kd" not in METHODS


def test_batch_maker_degrades_the_augmented_hr_it_returns(tiny_cfg):
    """Augment once, then degrade that same tensor: the LR view is the degradation of the very
    HR view the batch carries; a stage's draws repeat with its seed and differ between stages."""
    from horkd.degrade import Degrader
    from horkd.experiment import build_context
    from horkd.experiment.batches import batch_maker

    raw = {**tiny_cfg, "degrade": {"lr_size": 4, "noise_std": 0.05}}
    raw["data"] = {**raw["data"], "augment": {"crop_padding": 2, "hflip": True}}
    ctx = build_context(config_from_dict(raw), 0)
    x, y, index = torch.rand(16, 1, 16, 16), torch.zeros(16, dtype=torch.long), torch.arange(16)
    maker = batch_maker(ctx, "students/horkd")
    state = maker.state_dict()
    batch = maker(x, y, index)
    assert batch.hr.shape == x.shape and batch.lr.shape == (16, 1, 4, 4)
    assert not torch.equal(batch.hr, x)  # crops and flips happened
    replay = batch_maker(ctx, "students/horkd")
    replay.load_state_dict(state)
    again = replay(x, y, index)
    assert torch.equal(again.hr, batch.hr) and torch.equal(again.lr, batch.lr)
    # the LR view continues the same stream right after the augmentation draws
    generator = torch.Generator().manual_seed(0)
    generator.set_state(state["generator"])
    from horkd.data.augment import augment_batch_with_flips

    hr, _ = augment_batch_with_flips(x, ctx.augment, generator)
    lr = Degrader(16, ctx.degrade_spec(4, upsample=False))(hr, generator=generator)
    assert torch.equal(hr, batch.hr) and torch.equal(lr, batch.lr)
    other = batch_maker(ctx, "students/rkd")(x, y, index)
    assert not torch.equal(other.lr, batch.lr)


def test_context_inputs_and_a_face_task_per_context(tiny_cfg):
    from horkd.experiment import build_context

    cfg = config_from_dict(tiny_cfg)
    ctx = build_context(cfg, 0)
    x = torch.rand(3, 1, 16, 16)
    assert ctx.inputs("hr")(x) is x
    assert ctx.inputs("lr")(x).shape == (3, 1, 4, 4)
    assert ctx.inputs("lr", size=8)(x).shape == (3, 1, 4, 4)  # a native student's own size
    assert ctx.inputs("lr", size=8, upsample=True)(x).shape == (3, 1, 16, 16)
    assert build_context(cfg, 0).task is not ctx.task  # tasks keep per-run state per context
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.seed = 1  # type: ignore[misc]


def test_a_poor_assistant_is_bypassed_by_validation(tiny_cfg):
    """distill.assistant_guard: an assistant whose validation score trails the teacher's by more
    than the guard is not a bridge worth learning from; HORKD then learns from the teacher."""
    tiny_cfg["train"]["assistant"] = {**tiny_cfg["train"]["assistant"], "epochs": 0}
    cfg = config_from_dict(tiny_cfg, ["distill.warm_start=true", "distill.assistant_guard=0",
                                      "methods=[horkd]", "train.teacher.epochs=4"])
    _, networks = open_seed(cfg, 0, progress=False)
    verdict = networks.assistant_verdict()
    assert verdict["assistant"] < verdict["teacher"] and verdict["trusted"] is False
    untrusted = dataclasses.replace(_method_context(networks, cfg), assistant_trusted=False)
    method = METHODS.get("horkd").build(untrusted)
    assert method.reference is networks.teacher()  # every order from the teacher, no warm start
    weights, start = networks.assistant().state_dict(), method.student.state_dict()
    assert not all(torch.equal(start[k], v) for k, v in weights.items())
    student = networks.student("horkd")
    meta = json.loads((Path(cfg.output_dir) / "seed0/students/horkd/model.json").read_text())
    assert meta["assistant_guard"]["trusted"] is False and student.best_score is not None
    trusting = config_from_dict(tiny_cfg, ["distill.assistant_guard=null", "methods=[horkd]",
                                           f"output_dir={cfg.output_dir}_b"])
    assert open_seed(trusting, 0, progress=False)[1].assistant_verdict()["trusted"] is True


def test_the_guard_says_whether_the_teacher_never_saw_the_validation_images(tiny_cfg, capsys):
    """A teacher loaded from a checkpoint is held out only when it carved this run's validation
    split: the same split settings and seed, or data.val_from_subset naming this run's subset."""
    from horkd.experiment.bridge import teacher_held_out
    from horkd.experiment.context import build_context

    def teacher(name: str, data: dict) -> str:
        raw = {**tiny_cfg, "output_dir": str(Path(tiny_cfg["output_dir"]).parent / name),
               "data": {**tiny_cfg["data"], **data}, "methods": ["scratch"]}
        _, networks = open_seed(config_from_dict(raw), 0, progress=False)
        networks.teacher()
        return str(Path(raw["output_dir"]) / "seed0" / "teacher" / "model")

    own = config_from_dict(tiny_cfg)  # trains its teacher on its own training split
    assert teacher_held_out(build_context(own, 0)) is True
    whole = teacher("whole", {"train_subset": None})  # every training image: the run's val too
    carved = teacher("carved", {"train_subset": None, "val_from_subset": 300, "split_seed": 0})
    students = {**tiny_cfg, "data": {**tiny_cfg["data"], "split_seed": 0}}
    for path, expected in ((whole, False), (carved, True)):
        cfg = config_from_dict(students, [f"teacher.checkpoint={path}"])
        assert teacher_held_out(build_context(cfg, 0)) is expected, path
    cfg = config_from_dict(students, [f"teacher.checkpoint={whole}", "methods=[horkd]",
                                      f"output_dir={tiny_cfg['output_dir']}_guard"])
    verdict = open_seed(cfg, 0, progress=False)[1].assistant_verdict()
    assert verdict["teacher_held_out"] is False
    assert "may have trained on images this run validates on" in capsys.readouterr().out


def test_an_assistant_on_lr_learns_and_is_looked_at_on_the_students_lr_view(tiny_cfg):
    """``distill.assistant_input: lr``: the assistant (here the teacher's architecture) trains
    on LR re-upsampled to HR from the teacher on HR, its checkpoint says so, its row is scored
    on LR, and the HORKD student's reference degrades the HR batch before the assistant looks."""
    from horkd.degrade import Degrader

    tiny_cfg["assistant"] = dict(tiny_cfg["teacher"])
    tiny_cfg["distill"] = {"assistant_input": "lr", "student_logits_from": "assistant"}
    # whole epochs of 16 (as test_full_pipeline): the assistant's LR top-1 is 58-69 and the
    # student's 45-60 over seeds 0-2; 7-11 with training disabled
    budget = {**tiny_cfg["train"]["student"], "batch_size": 16, "max_steps_per_epoch": None}
    tiny_cfg["train"] = {"teacher": budget, "assistant": budget, "student": budget}
    cfg = config_from_dict(tiny_cfg)
    result = run_experiment(cfg, progress=False)
    rows = {row["method"]: row for row in result.table}
    learnt = CHANCE_TOP1 + LEARNT_MARGIN
    assert rows["assistant"]["lr_top1"] > learnt and rows["horkd"]["lr_top1"] > learnt, rows
    run = Path(cfg.output_dir) / "seed0"
    meta = json.loads((run / "assistant" / "model.json").read_text())
    assert meta["input"]["view"] == "lr" and meta["input"]["upsampled"] is True
    from horkd.eval_checkpoint import evaluate_checkpoint  # scored as it learnt: re-upsampled

    lines = evaluate_checkpoint(run / "assistant", sizes=[cfg.degrade.lr_size])
    assert float(lines[-1].split()[-1]) == pytest.approx(rows["assistant"]["lr_top1"], abs=0.01)
    ctx, networks = open_seed(cfg, 0, progress=False)
    reference = networks.assistant_reference().eval()
    x = torch.rand(5, *ctx.splits.train[0][0].shape)
    lr = Degrader(ctx.hr_size, ctx.degrade_spec(ctx.lr_size, True))(x)
    with torch.no_grad():
        assert torch.equal(reference(x).logits, networks.assistant()(lr).logits)
    # the guard holds it to the teacher on the same LR input, not on HR
    on_lr = ctx.task.validate(ctx, networks.teacher(), ctx.inputs("lr", upsample=True))
    assert networks.assistant_verdict()["teacher"] == on_lr[ctx.task.score_key]
    # an HR assistant keeps the fingerprint it had; the LR one is another stage
    from horkd.run_dir import assistant_fingerprint

    hr = config_from_dict(tiny_cfg, ["distill.assistant_input=hr"])
    assert assistant_fingerprint(hr, 0) != assistant_fingerprint(cfg, 0)
    with pytest.raises(ValueError, match="assistant_input"):
        config_from_dict(tiny_cfg, ["degrade.lr_size=null", "degrade.lr_sizes=[4,8]"])


def test_a_short_epoch_recomputes_batchnorm_statistics_and_trains_the_same(tiny_cfg, tmp_path):
    """Three steps an epoch: the running averages still hold the initial statistics, so by
    default ('auto') they are recomputed at each epoch end; the weights are those of a run that
    keeps the running averages, only the statistics (and what validation makes of them) differ."""
    from horkd.experiment.stages import SHORT_EPOCH, statistics_refresher

    def teacher(statistics: str, where: str):
        stage = {**tiny_cfg["train"]["teacher"], "batchnorm_statistics": statistics,
                 "select_on_val": False}
        raw = {**tiny_cfg, "output_dir": str(tmp_path / where), "methods": ["scratch"],
               "train": {**tiny_cfg["train"], "teacher": stage}}
        cfg = config_from_dict(raw)
        ctx, networks = open_seed(cfg, 0, progress=False)
        return ctx, cfg, networks.teacher()

    ctx, cfg, auto = teacher("auto", "auto")
    _, _, running = teacher("running", "running")
    a, b = auto, running
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    means = [(m.running_mean, n.running_mean) for m, n in zip(a.modules(), b.modules(),
                                                              strict=True)
             if isinstance(m, torch.nn.BatchNorm2d)]
    assert means and not any(torch.allclose(x, y) for x, y in means)
    refresh = statistics_refresher(ctx, "hr", None, cfg.train.teacher, 3)
    saved = [x.clone() for x, _ in means]
    refresh(a)  # the saved model already holds a fresh estimate
    for (x, _), before in zip(means, saved, strict=True):
        torch.testing.assert_close(x, before)
    assert statistics_refresher(ctx, "hr", None, cfg.train.teacher, SHORT_EPOCH) is None


def test_a_teacher_near_chance_says_so_after_training_and_each_epoch_reaches_a_log(tiny_cfg,
                                                                                   capsys):
    """Output going to a file (no bar: stderr is not a terminal) gets a line per epoch, and a
    teacher that learned nothing is named at once with what to try, not an hour of students
    later; a teacher a quarter of the way from chance to 100, or another task's score, is not."""
    from horkd.experiment.stages import chance_note

    cfg = config_from_dict(tiny_cfg, ["train.teacher.epochs=1", "train.teacher.optimizer.lr=1e-7",
                                      "train.teacher.max_steps_per_epoch=1", "methods=[scratch]"])
    _, networks = open_seed(cfg, 0, progress=True)
    networks.teacher()
    out = capsys.readouterr().out
    classes = networks.ctx.info.num_classes
    assert "[teacher] epoch 1/1" in out
    assert f"with {classes} classes (chance {100 / classes:.2f})" in out
    assert "train.teacher.optimizer.name=adam" in out
    assert chance_note({"score_key": "top1", "best_score": 49.9}, 3) is not None
    assert chance_note({"score_key": "top1", "best_score": 50.1}, 3) is None
    assert chance_note({"score_key": "recall@1", "best_score": 1.0}, 3) is None
