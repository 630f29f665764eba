"""One student for a range of resolutions: the size drawn per batch, evaluation inside and
outside the trained range, the summary columns, and using such a model on images of any size."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from horkd.cli import main
from horkd.config import ConfigError, config_from_dict
from horkd.experiment import build_context, open_seed, run_experiment
from horkd.experiment.batches import batch_maker
from horkd.experiment.evaluation import sized_input
from horkd.methods import METHODS, MethodContext
from horkd.models import build_model
from tests.conftest import tiny_config_dict


def _sizes_config(tmp_path: Path, **changes) -> dict:
    raw = tiny_config_dict(tmp_path / "run", **changes)
    raw["degrade"] = {"lr_sizes": [3, 4, 6, 8]}
    raw["report"] = {"resolution_sizes": [16, 8, 6, 4, 3, 2]}
    return raw


@pytest.mark.parametrize(
    ("degrade", "needle"),
    [
        ({"lr_sizes": [4, 16]}, "degrade.lr_sizes: [16] not below data.hr_size (16)"),
        ({"lr_sizes": [4, 20, 8]}, "not below data.hr_size"),
        ({"lr_sizes": [4, 8], "factor": 2}, "lr_sizes or degrade.factor"),
        ({"lr_sizes": [4, 8], "lr_size": 8}, "the LR size is their smallest (4)"),
        ({"lr_sizes": [0, 8]}, "positive"),
        ({"lr_size": 4, "work_size": 6}, "degrade.work_size is for a native student trained "
                                         "across degrade.lr_sizes"),
        ({"lr_sizes": [4, 8], "work_size": 6, "student_input": "upsampled"},
         "student_input: native"),
        ({"lr_sizes": [4, 8], "work_size": 20}, "work_size (20) is larger than data.hr_size (16)"),
        ({"lr_sizes": [4, 8], "work_size": "half"}, "work_size: a side in pixels (2 or more), "
                                                     "auto or null, not 'half'"),
        ({"lr_sizes": [4, 8], "work_size": 1}, "a side in pixels (2 or more)"),
    ],
)
def test_size_range_errors_name_the_problem(tmp_path, degrade, needle):
    raw = tiny_config_dict(tmp_path / "run")
    raw["degrade"] = degrade
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)").replace("]", r"\]")):
        config_from_dict(raw)


def test_each_batch_draws_its_size_from_the_seeded_stream(tmp_path):
    ctx = build_context(config_from_dict(_sizes_config(tmp_path)), 0)
    assert ctx.lr_sizes == (3, 4, 6, 8) and ctx.lr_size == 3
    x, y, index = torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.long), torch.arange(8)
    maker = batch_maker(ctx, "students/scratch")
    state = maker.state_dict()
    sizes = [maker(x, y, index).lr.shape[-1] for _ in range(40)]
    assert set(sizes) == {3, 4, 6, 8}  # every size is drawn, the whole batch at one size
    replay = batch_maker(ctx, "students/scratch")
    replay.load_state_dict(state)
    assert [replay(x, y, index).lr.shape[-1] for _ in range(40)] == sizes
    teacher_batch = batch_maker(ctx, "teacher", degrade=False)(x, y, index)
    assert teacher_batch.lr.shape[-1] == 16  # the HR stages never see LR


def test_inside_the_range_a_native_student_takes_the_image_at_its_own_size(tmp_path):
    ctx = build_context(config_from_dict(_sizes_config(tmp_path)), 0)
    x = torch.rand(2, 1, 16, 16)
    assert sized_input(ctx, False, 6)(x).shape[-1] == 6  # inside the trained range
    assert sized_input(ctx, False, 5)(x).shape[-1] == 5  # between trained sizes: still its own
    assert sized_input(ctx, False, 2)(x).shape[-1] == 3  # below: the nearest trained size
    assert sized_input(ctx, False, 16)(x).shape[-1] == 8  # HR: the largest trained size
    assert sized_input(ctx, True, 6)(x).shape[-1] == 16  # an HR network: re-upsampled
    single = build_context(config_from_dict(tiny_config_dict(tmp_path / "one")), 0)
    assert sized_input(single, False, 8)(x).shape[-1] == 4  # one size: always its own


@pytest.mark.parametrize("size", [5, 21])
def test_a_batch_at_5_and_at_21_px_gives_finite_losses_and_gradients(size):
    torch.manual_seed(0)
    student = build_model("resnet8", 10, 1, embed_dim=16, width=4)
    teacher = build_model("resnet8", 10, 1, embed_dim=32, width=4).eval()
    cfg = config_from_dict({})

    def new_network(role):
        return student

    from horkd.losses.task import build_task_loss

    ctx = MethodContext(cfg.distill, new_network,
                        lambda n: build_task_loss("cross_entropy", 10, n.embed_dim),
                        teacher=teacher)
    from horkd.methods.base import Batch
    from horkd.models import ModelOutput

    method = METHODS.get("horkd_no_assistant").build(ctx)
    hr = torch.rand(16, 1, 28, 28)
    lr = torch.nn.functional.adaptive_avg_pool2d(hr, size)
    _, terms = method(Batch(hr=hr, lr=lr, target=torch.arange(16) % 10))
    loss = sum(terms.values())
    loss.backward()
    assert torch.isfinite(loss) and set(terms) >= {"order2_distance", "order3_angle"}
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert isinstance(method.student(lr), ModelOutput)


def test_a_run_across_sizes_resumes_bit_exact_and_reports_the_range(tmp_path, monkeypatch):
    from horkd.experiment.batches import PairedBatchMaker

    def config(name: str):
        raw = _sizes_config(tmp_path / name, deterministic=True, methods=["scratch", "rkd"])
        raw["train"]["student"] = {**raw["train"]["student"], "checkpoint_every_steps": 1,
                                   "select_on_val": False}
        return config_from_dict(raw)

    straight = run_experiment(config("straight"), progress=False)
    calls = {"n": 0}
    real_call = PairedBatchMaker.__call__

    def crash(self, *args):
        calls["n"] += 1
        if calls["n"] == 16:  # teacher 6 steps, scratch 3 + 1 of its second epoch
            raise RuntimeError("simulated crash")
        return real_call(self, *args)

    monkeypatch.setattr(PairedBatchMaker, "__call__", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(config("crashed"), progress=False)
    monkeypatch.undo()
    resumed = run_experiment(config("crashed"), progress=False)
    assert resumed.table == straight.table  # every number, the size draws included
    rows = {r["method"]: r for r in resumed.table}
    assert {"mean@2-16px", "worst@2-16px"} <= set(rows["scratch"])
    curve = json.loads((tmp_path / "crashed/run/seed0/resolution_curve.json").read_text())
    assert rows["rkd"]["worst@2-16px"] == min(curve["rkd"].values())
    meta = json.loads((tmp_path / "crashed/run/seed0/students/rkd/model.json").read_text())
    assert meta["input"]["lr_sizes"] == [3, 4, 6, 8]
    assert meta["model"]["norm_sizes"] == [3, 4, 6, 8]  # rebuilt with statistics per size


def test_predict_and_onnx_take_lr_images_at_their_own_size(tmp_path):
    raw = _sizes_config(tmp_path, methods=["scratch"])
    cfg = config_from_dict(raw)
    run_experiment(cfg, progress=False)
    model = tmp_path / "run/seed0/students/scratch"
    images = tmp_path / "lr"
    images.mkdir()
    for side in (2, 5, 8, 12):
        Image.new("L", (side, side), 90).save(images / f"side{side:02d}.png")
    from horkd import Recogniser

    api = Recogniser.load(model)
    seen = []
    api.network.register_forward_hook(
        lambda _m, inputs, _o: seen.append((inputs[0].shape[-1], inputs[0].shape[0])))
    api.predict(sorted(images.iterdir()), kind="lr")
    assert sorted(seen) == [(3, 1), (5, 1), (8, 2)]  # 5, 8 as they are; 2 -> 3, 12 -> 8
    assert main(["predict", str(model), str(images), "--input", "lr",
                 "--out", str(tmp_path / "p.csv")]) == 0
    assert len(list(csv.DictReader((tmp_path / "p.csv").open()))) == 4
    assert main(["export", str(model), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", str(tmp_path / "m.onnx"), str(images), "--input", "lr",
                 "--out", str(tmp_path / "o.csv")]) == 0
    ours = [r["label"] for r in csv.DictReader((tmp_path / "p.csv").open())]
    assert [r["label"] for r in csv.DictReader((tmp_path / "o.csv").open())] == ours
    yaml.safe_dump(raw)  # the config stays plain data
    from horkd.eval_checkpoint import evaluate_checkpoint

    table = evaluate_checkpoint(model / "model")  # by default: HR and every trained size
    assert [line.split()[0] for line in table[2:]] == ["16", "8", "6", "4", "3"]


def test_the_hr_network_and_a_context_are_unchanged_by_a_size_range(tmp_path):
    cfg = config_from_dict(_sizes_config(tmp_path, methods=["scratch"]))
    _, networks = open_seed(cfg, 0, progress=False)
    assert networks.meta("teacher", "teacher", "hr")["input"]["lr_sizes"] is None


def _trained_per_size(sizes=(4, 8)):
    """A tiny model whose statistics per size differ: the batches of each size are scaled
    differently, as features of 4 px and of 8 px images are."""
    from horkd.models.size_norm import SizeBatchNorm

    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1, embed_dim=8, width=4, norm_sizes=list(sizes))
    assert any(isinstance(m, SizeBatchNorm) for m in model.modules())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    model.train()
    with torch.no_grad():
        for _ in range(5):
            for scale, size in enumerate(sizes, start=1):
                model(torch.rand(8, 1, size, size) * 3 * scale)
    return model.eval()


def test_each_trained_size_keeps_its_own_batchnorm_statistics():
    from horkd.models.size_norm import SizeBatchNorm

    model = _trained_per_size()
    norms = [m for m in model.modules() if isinstance(m, SizeBatchNorm)]
    for norm in norms:
        assert norm.running_mean.shape[0] == 2 and norm.num_batches_tracked.tolist() == [5, 5]
    stem = norms[0]  # sees pixels scaled by 3 at 4 px and by 6 at 8 px: means differ
    assert not torch.allclose(stem.running_mean[0], stem.running_mean[1])
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        as_8 = model(x).logits
        for norm in norms:  # the 4 px statistics given to an 8 px image: another answer
            norm.running_mean[1], norm.running_var[1] = norm.running_mean[0], norm.running_var[0]
        assert not torch.allclose(model(x).logits, as_8)


def test_an_image_between_or_beyond_the_trained_sizes_uses_the_nearest_statistics():
    model = _trained_per_size()
    picked = {}
    for side in (2, 4, 5, 6, 7, 8, 16):
        with torch.no_grad():
            model(torch.rand(1, 1, side, side))
        picked[side] = model.size_slot.sizes[int(model.size_slot.current)]
    assert picked == {2: 4, 4: 4, 5: 4, 6: 4, 7: 8, 8: 8, 16: 8}  # a tie (6) goes to 4


def test_traced_onnx_and_copied_models_choose_the_statistics_from_the_input_side(tmp_path):
    import copy

    import onnxruntime

    from horkd.export import _TupleOutput

    model = _TupleOutput(_trained_per_size()).eval()
    inputs = {side: torch.rand(2, 1, side, side) for side in (3, 4, 6, 8, 12)}
    with torch.no_grad():
        eager = {side: model(x)[1] for side, x in inputs.items()}
        traced = torch.jit.trace(model, inputs[4])  # traced at 4 px, used at every side
        for side, x in inputs.items():
            torch.testing.assert_close(traced(x)[1], eager[side])
    side = torch.export.Dim("side", min=2, max=64)
    torch.onnx.export(model, (inputs[4],), str(tmp_path / "m.onnx"), input_names=["image"],
                      dynamic_shapes={"image": {2: side, 3: side}})
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                           providers=["CPUExecutionProvider"])
    for side, x in inputs.items():
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[1])
        torch.testing.assert_close(got, eager[side])
    twin = copy.deepcopy(model)  # after an export: its own slot, the same answers
    with torch.no_grad():
        torch.testing.assert_close(twin(inputs[8])[1], eager[8])
    assert twin.model.size_slot is not model.model.size_slot


def test_shared_statistics_and_single_size_students_keep_plain_batchnorm(tmp_path):
    from horkd.run_dir import student_fingerprint

    def networks(**degrade):
        raw = _sizes_config(tmp_path, methods=["scratch"])
        raw["degrade"].update(degrade)
        cfg = config_from_dict(raw)
        return cfg, open_seed(cfg, 0, progress=False)[1]

    per_size_cfg, per_size = networks()
    shared_cfg, shared = networks(size_statistics="shared")
    assert per_size.recipe("student")["norm_sizes"] == [3, 4, 6, 8]
    assert "norm_sizes" not in shared.recipe("student")
    assert "norm_sizes" not in per_size.recipe("teacher")  # HR networks see one size
    plain = shared.new_network("student")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    upsampled_cfg, upsampled = networks(student_input="upsampled")
    assert "norm_sizes" not in upsampled.recipe("student")  # one input side: nothing to pick

    def fingerprint(cfg):
        return student_fingerprint(cfg, 0, "scratch", teacher=False, assistant=False)

    # a run trained with shared statistics (before they were kept per size) is not reused
    assert fingerprint(per_size_cfg) != fingerprint(shared_cfg)


@pytest.mark.parametrize(
    ("degrade", "hr", "side"),
    [
        ({"lr_sizes": [5, 7, 10, 14, 21]}, 28, 14),  # half the HR side is a trained size
        ({"lr_sizes": [3, 4, 6, 8, 12]}, 16, 8),
        ({"lr_sizes": [4, 12]}, 16, 12),  # 8 lies halfway: the larger keeps more detail
        ({"lr_sizes": [3, 5]}, 32, 5),  # every size below half: the largest
        ({"lr_sizes": [4, 12], "work_size": 6}, 16, 6),  # as given
        ({"lr_sizes": [4, 12], "work_size": None}, 16, None),  # each size at its own side
        ({"lr_sizes": [4, 12], "student_input": "upsampled"}, 16, None),  # one side already
        ({"lr_size": 4}, 16, None),  # a single size: nothing to compute at
    ],
)
def test_the_work_size_by_default_is_the_trained_size_nearest_half_the_hr_side(degrade, hr,
                                                                               side):
    from horkd.config import DegradeConfig

    assert DegradeConfig(**degrade).resolved_work_size(hr) == side


def test_auto_work_size_reaches_the_network_and_its_fingerprint(tmp_path):
    """The side ``auto`` picks is what the student is built with, and its stage fingerprint: a
    run at ``auto`` shares its finished stages with one that names that side, and not with one
    that feeds every size at its own side (nor with a run trained before the setting existed)."""
    from horkd.run_dir import student_fingerprint

    def opened(**degrade):
        raw = _sizes_config(tmp_path, methods=["scratch"])
        raw["degrade"].update(degrade)
        cfg = config_from_dict(raw)
        return cfg, open_seed(cfg, 0, progress=False)[1]

    def fingerprint(cfg):
        return student_fingerprint(cfg, 0, "scratch", teacher=False, assistant=False)

    auto_cfg, auto = opened()
    assert auto.ctx.work_size == 8 and auto.recipe("student")["work_size"] == 8  # HR 16
    assert "work_size" not in auto.recipe("teacher")
    named_cfg, _ = opened(work_size=8)
    native_cfg, native = opened(work_size=None)
    assert "work_size" not in native.recipe("student")
    assert fingerprint(auto_cfg) == fingerprint(named_cfg) != fingerprint(native_cfg)
    single = tiny_config_dict(tmp_path / "single")
    single_null = tiny_config_dict(tmp_path / "single")
    single_null["degrade"] = {**single["degrade"], "work_size": None}
    assert fingerprint(config_from_dict(single)) == fingerprint(config_from_dict(single_null))

    # without data.hr_size the side is resolved against the images' own (digits: 8 px)
    raw = _sizes_config(tmp_path)
    raw["data"]["hr_size"] = None
    raw["degrade"]["lr_sizes"] = [2, 3, 5]
    assert build_context(config_from_dict(raw), 0).work_size == 5


def test_a_batchnorm_subclass_that_does_more_is_refused_with_the_way_out():
    from torch import nn

    from horkd.models.size_norm import keep_statistics_per_size

    class NormThenAct(nn.BatchNorm2d):  # as timm's BatchNormAct2d: BatchNorm, then activation
        def forward(self, x):
            return torch.relu(super().forward(x))

    model = nn.Sequential(nn.Conv2d(1, 4, 3), NormThenAct(4))
    with pytest.raises(ValueError, match=r"layer '1' is a NormThenAct.*size_statistics=shared"):
        keep_statistics_per_size(model, [4, 8])


def test_weights_with_one_set_of_statistics_load_into_every_size():
    """A warm start from the assistant (or a single-size student's weights) gives every trained
    size that network's statistics."""
    from horkd.methods.presets import warm_start

    torch.manual_seed(0)
    plain = build_model("resnet8", 10, 1, embed_dim=8, width=4)
    plain.train()
    with torch.no_grad():
        plain(torch.rand(8, 1, 8, 8) * 5)
    plain.eval()
    per_size = build_model("resnet8", 10, 1, embed_dim=8, width=4, norm_sizes=[4, 8]).eval()
    warm_start(per_size, plain)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(per_size(x).logits, plain(x).logits)
        x4 = torch.rand(2, 1, 4, 4)
        torch.testing.assert_close(per_size(x4).logits, plain(x4).logits)


def test_a_work_size_student_computes_at_one_side_with_the_statistics_of_the_images_own():
    """Every layer sees the work side whatever side the image came at, while BatchNorm keeps
    the statistics of the image's own size (picked before the resize)."""
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1, embed_dim=8, width=4, norm_sizes=[3, 4, 6, 8],
                        work_size=6)
    seen = []
    model.backbone.register_forward_pre_hook(
        lambda _m, args: seen.append((args[0].shape[-1], model.size_slot.current)))
    model.train()
    for side in (3, 8):
        model(torch.rand(4, 1, side, side))
    assert seen == [(6, 0), (6, 3)]  # at 6 px both times; statistics of 3 px, then of 8 px
    stats = model.backbone.stem[1].running_mean
    assert stats[0].abs().sum() > 0 and stats[3].abs().sum() > 0
    assert stats[1].abs().sum() == 0 and stats[2].abs().sum() == 0  # 4 and 6 px: untouched


def test_a_work_size_run_keeps_its_resize_through_checkpoint_trace_and_onnx(tmp_path):
    import onnxruntime

    from horkd import Recogniser
    from horkd.run_dir import student_fingerprint

    raw = _sizes_config(tmp_path, methods=["scratch"])
    raw["degrade"]["work_size"] = 6
    cfg = config_from_dict(raw)
    run_experiment(cfg, progress=False)
    stage = tmp_path / "run/seed0/students/scratch"
    network = Recogniser.load(stage).network.eval()
    assert network.work_size == 6 and network.size_slot.sizes == [3, 4, 6, 8]
    inputs = {side: torch.rand(2, 1, side, side) for side in (3, 5, 8)}
    with torch.no_grad():
        eager = {side: network(x).logits for side, x in inputs.items()}
    assert main(["export", str(stage), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                           providers=["CPUExecutionProvider"])
    for side, x in inputs.items():  # one graph, every side: the resize is part of it
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[1])
        torch.testing.assert_close(got, eager[side], rtol=1e-4, atol=1e-4)
    plain = config_from_dict(_sizes_config(tmp_path, methods=["scratch"]))
    assert student_fingerprint(cfg, 0, "scratch", teacher=False, assistant=False) != \
        student_fingerprint(plain, 0, "scratch", teacher=False, assistant=False)


def test_unset_curve_sizes_score_a_size_range_over_its_trained_sizes_and_hr(tmp_path):
    raw = _sizes_config(tmp_path)
    del raw["report"]
    assert build_context(config_from_dict(raw), 0).curve_sizes == (16, 8, 6, 4, 3)
    raw["report"] = {"resolution_sizes": []}  # an explicit empty list still means no curve
    assert build_context(config_from_dict(raw), 0).curve_sizes == ()
    raw["report"] = {"resolution_sizes": [32, 16, 8]}  # above the HR side (16): not a resolution
    assert build_context(config_from_dict(raw), 0).curve_sizes == (16, 8)
    single = tiny_config_dict(tmp_path / "single")
    assert build_context(config_from_dict(single), 0).curve_sizes == ()


def test_recomputed_statistics_are_each_sizes_average_and_change_nothing_else():
    from horkd.models.size_norm import SizeBatchNorm, recompute_size_statistics

    model = _trained_per_size()
    model.train()
    stem = next(m for m in model.modules() if isinstance(m, SizeBatchNorm))
    weights = {k: v.clone() for k, v in model.named_parameters()}
    images = [torch.rand(8, 1, 8, 8) for _ in range(3)]
    by_size = [lambda x: torch.nn.functional.interpolate(x, size=4) * 10, lambda x: x]
    recompute_size_statistics(model, lambda: iter(images), by_size)
    assert model.training and stem.training  # put back as it was
    assert stem.momentum == 0.1 and stem.num_batches_tracked.tolist() == [5, 5]
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())
    # the first layer's statistics: the average over the three batches of what that layer
    # receives at each size (the stem convolution's output)
    conv = model.backbone.stem[0]
    with torch.no_grad():
        for slot, to_input in enumerate(by_size):
            means = [conv(to_input(x)).mean(dim=(0, 2, 3)) for x in images]
            torch.testing.assert_close(stem.running_mean[slot], torch.stack(means).mean(0),
                                       rtol=1e-4, atol=1e-5)
    assert not torch.allclose(stem.running_mean[0], stem.running_mean[1])


def test_recomputed_statistics_keep_training_as_it_was_and_fix_the_lag(tmp_path):
    """The weights of the last epoch are those of a run that keeps running averages (the
    recomputation reads no random number and no batch of training); only the statistics
    differ, and they are the ones a fresh estimate gives."""
    from horkd.models.size_norm import SizeBatchNorm

    def trained(statistics: str):
        raw = _sizes_config(tmp_path / statistics, methods=["scratch"])
        raw["degrade"]["size_statistics"] = statistics
        raw["degrade"]["statistics_images"] = 48
        raw["train"]["student"] = {**raw["train"]["student"], "select_on_val": False}
        cfg = config_from_dict(raw)
        run_experiment(cfg, progress=False)
        return open_seed(cfg, 0, progress=False)

    ctx, recomputed = trained("recomputed")
    _, running = trained("per_size")
    a, b = recomputed.student("scratch").model, running.student("scratch").model
    params = dict(b.named_parameters())
    assert all(torch.equal(v, params[k]) for k, v in a.named_parameters())
    norms = [m for m in a.modules() if isinstance(m, SizeBatchNorm)]
    assert not torch.allclose(norms[0].running_mean, next(
        m for m in b.modules() if isinstance(m, SizeBatchNorm)).running_mean)
    saved = [n.running_mean.clone() for n in norms]
    from horkd.experiment.stages import statistics_refresher

    refresh = statistics_refresher(ctx, "lr", None, ctx.cfg.train.student, 1)
    refresh(a)  # the saved model already holds what a fresh estimate gives
    for norm, mean in zip(norms, saved, strict=True):
        torch.testing.assert_close(norm.running_mean, mean)


def test_recomputation_reads_each_batch_once_and_leaves_out_a_batch_of_one():
    from horkd.models.size_norm import SizeBatchNorm, recompute_size_statistics

    model = _trained_per_size()
    stem = next(m for m in model.modules() if isinstance(m, SizeBatchNorm))
    images = [torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]
    reads = {"n": 0}

    def batches():
        reads["n"] += 1
        yield from [*images, torch.rand(1, 1, 8, 8)]  # the lone image cannot be normalised

    by_size = [lambda x: torch.nn.functional.interpolate(x, size=4), lambda x: x]
    recompute_size_statistics(model, batches, by_size)
    assert reads["n"] == 1  # an image folder decodes its sample once, not once per size
    conv = model.backbone.stem[0]
    with torch.no_grad():
        expected = torch.stack([conv(x).mean(dim=(0, 2, 3)) for x in images]).mean(0)
    torch.testing.assert_close(stem.running_mean[1], expected, rtol=1e-4, atol=1e-5)


def test_a_compiled_student_updates_the_statistics_of_the_size_it_sees():
    from horkd.models.size_norm import SizeBatchNorm

    model = _trained_per_size()
    stem = next(m for m in model.modules() if isinstance(m, SizeBatchNorm))
    before = stem.running_mean.clone()
    compiled = torch.compile(model, backend="eager")
    model.train()
    with torch.no_grad():
        compiled(torch.rand(8, 1, 4, 4) * 50)
    assert not torch.allclose(stem.running_mean[0], before[0])  # the 4 px set moved
    torch.testing.assert_close(stem.running_mean[1], before[1])  # the 8 px set did not


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.hr_size=3"], "data.hr_size: 3 px is no image to recognise: at least 4"),
        (["degrade.lr_size=1"], "degrade.lr_size: 1 px leaves nothing to recognise: at least 2"),
        (["data.hr_size=8", "degrade.factor=8"],
         "degrade.factor=8 leaves a 1-px LR side of data.hr_size=8: at least 2 px"),
        (["data.hr_size=8", "degrade.lr_size=8"], "degrade.lr_size (8) must be smaller than "
                                                  "data.hr_size (8)"),
        (["degrade.lr_size=null", "degrade.lr_sizes=[1,4]"], "at least 2, got [1, 4]"),
    ],
)
def test_impossible_sides_are_one_line_config_errors(tmp_path, overrides, needle):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(tiny_config_dict(tmp_path / "run"), overrides)
    problem = str(caught.value).splitlines()
    assert len(problem) == 2 and needle in problem[1]  # "invalid config:" and one line


def test_odd_sides_warn_once_a_run_knows_them_and_plausible_ones_do_not(tmp_path, capsys):
    open_seed(config_from_dict(tiny_config_dict(tmp_path / "run")), 0)  # HR 16, LR 4
    assert "warning" not in capsys.readouterr().out
    raw = tiny_config_dict(tmp_path / "run")
    raw["data"]["hr_size"], raw["degrade"] = 12, {"factor": 4}
    open_seed(config_from_dict(raw), 0)  # where a network is about to train on them
    said = capsys.readouterr().out
    assert "warning: the HR side is 12 px" in said and "warning: the LR side is 3 px" in said
    build_context(config_from_dict(raw), 0)  # (`horkd eval` of a trained model: nothing to say)
    assert "warning" not in capsys.readouterr().out


def test_eval_sizes_are_lr_sides_checked_like_lr_sizes():
    """``degrade.eval_sizes=[0]`` once scored the LR side under a ``@0`` column, ``[1]`` passed
    below the smallest legal LR side, and a size at or above HR was skipped in silence."""
    import pytest
    from pydantic import ValidationError

    from horkd.config import DegradeConfig, config_from_dict

    for bad in ([0], [-3], [1]):
        with pytest.raises(ValidationError, match="eval_sizes"):
            DegradeConfig(lr_size=4, eval_sizes=bad)
    with pytest.raises(ValueError, match=r"degrade.eval_sizes: \[16\] not below data.hr_size"):
        config_from_dict({"data": {"dataset": "digits", "hr_size": 16},
                          "degrade": {"lr_size": 4, "eval_sizes": [8, 16]}})
    assert DegradeConfig(lr_size=4, eval_sizes=[8, 2]).eval_sizes == [8, 2]
