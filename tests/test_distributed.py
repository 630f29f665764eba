"""Several processes: torchrun with gloo on CPU, global-batch relations, per-rank data order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

from horkd.data import BatchLoader
from horkd.data.augment import FlipViews
from horkd.data.memory import TensorImageDataset
from horkd.losses import HybridOrderLoss
from tests.conftest import tiny_config_dict
from tests.gloo_port import free_port

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    return free_port()


def _problem(seed: int = 0):
    """A linear student on 12 samples, a fixed teacher embedding, the relational terms only."""
    torch.manual_seed(seed)
    student = nn.Linear(5, 6)
    x, teacher = torch.randn(12, 5), torch.randn(12, 8)
    return student, x, teacher


def _loss(relations: str) -> HybridOrderLoss:
    return HybridOrderLoss(6, 8, embedding_weight=0.0, distance_weight=25.0, angle_weight=50.0,
                           relations=relations)


def _worker(rank: int, world: int, port: int, relations: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        student, x, teacher = _problem()
        part = slice(rank * 12 // world, (rank + 1) * 12 // world)
        ddp = nn.parallel.DistributedDataParallel(student)
        terms = _loss(relations)(ddp(x[part]), None, teacher[part], None)
        sum(terms.values()).backward()
        if rank == 0:
            torch.save(
                {"terms": {k: v.detach() for k, v in terms.items()},
                 "grads": [p.grad.clone() for p in student.parameters()]},
                out,
            )
        dist.barrier()  # both ranks done: neither tears its gloo pairs down under the other
    finally:
        dist.destroy_process_group()


def _two_processes(tmp_path: Path, relations: str) -> dict:
    out = tmp_path / f"{relations}.pt"
    mp.spawn(_worker, args=(2, _free_port(), relations, str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def test_global_relations_equal_one_process_on_the_concatenated_batch(tmp_path):
    student, x, teacher = _problem()
    terms = _loss("global")(student(x), None, teacher, None)
    sum(terms.values()).backward()
    single = {"terms": terms, "grads": [p.grad for p in student.parameters()]}

    two = _two_processes(tmp_path, "global")
    assert set(two["terms"]) == {"order2_distance", "order3_angle"}
    for name, value in single["terms"].items():
        assert torch.allclose(two["terms"][name], value.detach(), atol=1e-6, rtol=0), name
    for mine, theirs in zip(two["grads"], single["grads"], strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6, rtol=0)

    # Per-rank relations are a different method: the check above can fail.
    local = _two_processes(tmp_path, "local")
    assert not torch.allclose(local["terms"]["order2_distance"],
                              single["terms"]["order2_distance"].detach(), atol=1e-6)


class _TwoSides(nn.Module):
    """A student and a trained reference (the joint method's assistant): both sides' gathers
    carry gradients back. DDP takes it as the trainer takes a method (static graph, no search
    for unused parameters, no buffers sent per step)."""

    static_graph = True
    leaves_parameters_unused = False

    def __init__(self) -> None:
        super().__init__()
        self.student, self.teacher = nn.Linear(5, 6), nn.Linear(4, 8)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.student(x), self.teacher(z)


def _sharded_problem(kernels: bool, anchors: int | None, samples: int):
    from horkd.losses.cpu_kernels import use_kernels

    torch.manual_seed(0)
    model = _TwoSides().double()
    x = torch.randn(samples, 5, dtype=torch.float64)
    z = torch.randn(samples, 4, dtype=torch.float64)
    loss = HybridOrderLoss(6, 8, embedding_weight=0.0, distance_weight=25.0, angle_weight=50.0,
                           angle_anchors=anchors)
    return model, x, z, loss, use_kernels(kernels)


def _train_steps(model, forward, x, z, loss, switch, seed: int = 1) -> dict:
    """Three steps of SGD on the same batch, the middle one skipped after its forward (as the
    trainer skips a non-finite step): the first step's terms and gradients, the end weights.
    ``seed``: the process's own generator, which draws the random anchors; each rank's differs
    (as under torchrun), and the ranks must still compute shares of rank 0's draw."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(seed)
    out: dict = {}
    with switch:
        for step in range(3):
            optimizer.zero_grad()
            s, t = forward(x, z)
            terms = loss(s, None, t, None)
            if step == 1:
                continue
            sum(terms.values()).backward()
            if step == 0:
                out["terms"] = {k: v.detach() for k, v in terms.items()}
                out["grads"] = [p.grad.clone() for p in model.parameters()]
            optimizer.step()
    out["weights"] = [p.detach().clone() for p in model.parameters()]
    return out


def _sharded_worker(rank: int, world: int, port: int, kernels: bool, anchors: int | None,
                    equal: bool, out: str) -> None:
    from contextlib import nullcontext

    from horkd import distributed
    from horkd.trainer import wrap_for_processes

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, x, z, loss, switch = _sharded_problem(kernels, anchors, 14 if equal else 13)
        if equal:  # as a training step declares them: 7 rows each, at most 8 (padded)
            part, rows = slice(7 * rank, 7 * rank + 7), distributed.equal_rows(8)
        else:  # uneven shares: the counts are exchanged at each gather
            part, rows = (slice(0, 6) if rank == 0 else slice(6, 13)), nullcontext()
        ddp = wrap_for_processes(model, torch.device("cpu"))
        with rows:
            steps = _train_steps(model, ddp, x[part], z[part], loss, switch, seed=1 + rank)
        torch.save(steps, f"{out}.{rank}")
        dist.barrier()  # both ranks done: neither tears its gloo pairs down under the other
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("kernels", "anchors", "equal"), [(True, None, False), (False, 7, True)],
                         ids=["kernels-uneven", "eager-equal-rows"])
def test_sharded_relations_equal_one_process_in_float64(tmp_path, kernels, anchors, equal):
    """Each of two processes computes half the anchor rows (both sides trained); loss and
    every gradient equal one process's on all the samples to 1e-10, with the fused CPU kernels
    on uneven shares (6 and 7 samples, counts exchanged) and with the eager operations (7
    random anchors) on the training step's equal shares (7 each, padded to the declared 8, no
    counts read), and two trained steps around a skipped one end at the same weights."""
    model, x, z, loss, switch = _sharded_problem(kernels, anchors, 14 if equal else 13)
    single = _train_steps(model, model, x, z, loss, switch)
    out = str(tmp_path / "sharded")
    mp.spawn(_sharded_worker, args=(2, _free_port(), kernels, anchors, equal, out), nprocs=2,
             join=True)
    for rank in (0, 1):
        two = torch.load(f"{out}.{rank}", weights_only=True)
        assert set(two["terms"]) == {"order2_distance", "order3_angle"}
        for name, value in single["terms"].items():
            assert abs(float(two["terms"][name]) - float(value)) < 1e-10, name
        for key in ("grads", "weights"):
            for mine, theirs in zip(two[key], single[key], strict=True):
                assert (mine - theirs).abs().max() < 1e-10, key
    # the weights' gradients are there to compare (the biases' are 0: relations ignore shifts)
    assert min(float(g.abs().max()) for g in (single["grads"][0], single["grads"][2])) > 1e-3


def _unequal_rows_worker(rank: int, world: int, port: int, out: str) -> None:
    from horkd import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = 3 + rank  # a loader that broke the rule: 3 rows on rank 0, 4 on rank 1
        with distributed.equal_rows(4):
            gathered = distributed.gather_summing_grad(torch.ones(rows, 2))
        try:
            distributed.step_agreement(torch.tensor(True), False, rows)
            message = "no error"
        except RuntimeError as exc:
            message = str(exc)
        Path(f"{out}.{rank}").write_text(f"{gathered.shape[0]}|{message}")
        dist.barrier()  # both ranks done: neither tears its gloo pairs down under the other
    finally:
        dist.destroy_process_group()


def test_ranks_with_unequal_batches_stop_at_the_step_agreement(tmp_path):
    """Gathers that take the ranks' rows to be equal pad to the declared size, so a rank with
    fewer rows neither hangs nor corrupts the collective; the step's one read sees the
    difference and every rank stops with the same message, before any backward."""
    out = str(tmp_path / "rows")
    mp.spawn(_unequal_rows_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    for rank in (0, 1):
        shape, message = Path(f"{out}.{rank}").read_text().split("|")
        assert shape == str(2 * (3 + rank))  # what this rank took the others to have
        assert "batches of 3 to 4 rows" in message, message


def _gathered_rows_worker(rank: int, world: int, port: int, out: str) -> None:
    from datetime import timedelta

    from horkd import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a rank left waiting by the other fails in seconds instead of hanging the test
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=20))
    messages = []
    try:
        # both ranks' batches have 4 rows; a plug-in gathers a subset of 3 + rank of them, then
        # (second step) rank 1 gathers 5 rows, over the capacity of 4
        for extra in (0, 1):
            try:
                with distributed.equal_rows(4) as gathers:
                    distributed.gather_summing_grad(torch.ones(4, 2))
                    distributed.gather_summing_grad(torch.ones(3 + rank * (1 + extra), 2))
                distributed.step_agreement(torch.tensor(True), False, 4, gathers)
                messages.append("no error")
            except (RuntimeError, ValueError) as exc:
                messages.append(str(exc))
        Path(f"{out}.{rank}").write_text("|".join(messages))
        dist.barrier()  # both ranks done: neither tears its gloo pairs down under the other
    finally:
        dist.destroy_process_group()


def test_ranks_whose_gathers_differ_stop_together_at_the_step_agreement(tmp_path):
    """Equal batches, but a gather of 3 rows on one rank and 4 on the other: the gathers took
    the rows on trust, so the step's one collective compares what they took, and every rank
    stops with the one message naming the rule; a gather over the capacity stops every rank
    in the same step too (not one rank, leaving the other waiting)."""
    out = str(tmp_path / "gathers")
    mp.spawn(_gathered_rows_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    for rank in (0, 1):
        subset, over = Path(f"{out}.{rank}").read_text().split("|")
        assert "gathers in one training step brought 3 and 4 rows" in subset, subset
        assert "a gather of 5 rows in a training step, over the 4" in over, over


def _evaluation_problem():
    """A tiny classifier, 50 noisy-LR test images (7 batches of 8: uneven shares, a short last
    batch) and 600 pair images (3 chunks of 256)."""
    from horkd.degrade import DegradeSpec
    from horkd.evaluate import lr_input_fn
    from horkd.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn_tiny", 5, 1, embed_dim=6).eval()
    data = TensorImageDataset(torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8),
                              torch.arange(50) % 5)
    pairs = torch.rand(600, 1, 8, 8)
    to_input = lr_input_fn(8, DegradeSpec(lr_size=4, noise_std=0.1, upsample=True),
                           torch.device("cpu"))
    return model, data, pairs, to_input


def _evaluate(model, data, pairs, to_input) -> dict:
    from horkd.reference_cache import ReferenceCache
    from horkd.tasks import TASKS
    from horkd.tasks.base import embed
    from horkd.tasks.face import _embed_tensor

    cpu = torch.device("cpu")
    images = []
    model.register_forward_hook(lambda _m, inputs, _o: images.append(inputs[0].shape[0]))
    out = {
        "classification": TASKS.get("classification")().score_split(model, data, cpu, to_input),
        "retrieval": TASKS.get("retrieval")().score_split(model, data, cpu, to_input),
        "embed": embed(model, data, cpu, to_input),
        "pairs": _embed_tensor(model, pairs, cpu, to_input),
    }
    out["images_forwarded"] = sum(images)
    cache = ReferenceCache.build(model, data, cpu, views=FlipViews(True), batch_size=8)
    out["cache"] = (cache.embedding, cache.logits)
    out["cache_images_forwarded"] = sum(images) - out["images_forwarded"]
    return out


def _evaluation_worker(rank: int, world: int, port: int, out: str) -> None:
    import horkd.tasks.base

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        horkd.tasks.base.EVAL_BATCH = 8
        torch.save(_evaluate(*_evaluation_problem()), f"{out}.{rank}")
        dist.barrier()  # both ranks done: neither tears its gloo pairs down under the other
    finally:
        dist.destroy_process_group()


def test_evaluation_and_reference_cache_are_split_between_processes(tmp_path, monkeypatch):
    import horkd.tasks.base

    monkeypatch.setattr(horkd.tasks.base, "EVAL_BATCH", 8)
    single = _evaluate(*_evaluation_problem())
    out = str(tmp_path / "eval.pt")
    mp.spawn(_evaluation_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in (0, 1)]
    for two in ranks:  # every process ends with the whole split's numbers
        assert two["classification"] == single["classification"]
        assert two["retrieval"] == single["retrieval"]
        for mine, theirs in zip(two["embed"], single["embed"], strict=True):
            assert mine.shape == theirs.shape
            assert torch.allclose(mine, theirs, atol=1e-6, rtol=0)
        assert torch.allclose(two["pairs"], single["pairs"], atol=1e-6, rtol=0)
    # three passes over the 50 images and one over the 600 pair images, split between ranks:
    # rank 0 takes batches 0-2 (24 images) and chunk 0, rank 1 batches 3-6 (26) and chunks 1-2
    assert single["images_forwarded"] == 3 * 50 + 600
    assert [two["images_forwarded"] for two in ranks] == [3 * 24 + 256, 3 * 26 + 344]
    # the reference cache (both flips, batches of 8) is built the same way
    for two in ranks:
        for mine, theirs in zip(two["cache"], single["cache"], strict=True):
            assert mine.shape == theirs.shape == (2, 50, mine.shape[-1])
            assert torch.allclose(mine, theirs, atol=1e-6, rtol=0)
    assert single["cache_images_forwarded"] == 2 * 50
    assert [two["cache_images_forwarded"] for two in ranks] == [2 * 24, 2 * 26]


def test_ranks_split_each_epoch_disjointly_and_epochs_differ():
    data = TensorImageDataset(torch.zeros(40, 1, 4, 4, dtype=torch.uint8), torch.arange(40) % 4)

    def epoch(rank: int, number: int) -> list[int]:
        loader = BatchLoader(data, 4, shuffle=True, seed=3, drop_last=True, rank=rank,
                             world_size=2)
        loader.set_epoch(number)
        return [int(i) for _, _, index in loader for i in index]

    for number in (0, 1):
        first, second = epoch(0, number), epoch(1, number)
        assert len(first) == len(second) == 20
        assert not set(first) & set(second) and len(set(first) | set(second)) == 40
    assert epoch(0, 0) != epoch(0, 1) and epoch(1, 0) != epoch(1, 1)


def test_torchrun_two_cpu_processes_write_one_run(tmp_path):
    """Two processes write one run, and what they train learns: with two whole epochs in
    batches of 16 the teacher scores 71-73 on HR, scratch 59-67 and HORKD 51-52 on LR over
    seeds 0-2 (every row 10 with epochs=0); ten classes, chance 10, stated margin 15."""
    cfg = tiny_config_dict(tmp_path / "run", methods=["scratch", "horkd"])
    budget = {**cfg["train"]["student"], "batch_size": 16, "max_steps_per_epoch": None}
    cfg["train"] = {"teacher": budget, "assistant": budget, "student": budget}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={_free_port()}", "-m", "horkd", "run", str(path), "--no-progress",
         "--no-report"],
        env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["processes"] == 2
    epochs = cfg["train"]["student"]["epochs"]
    for stage in ("teacher", "assistant", "students/scratch", "students/horkd"):
        stage_dir = run / "seed0" / stage
        rows = (stage_dir / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == epochs, stage  # one writer: no doubled rows
        assert sorted(p.name for p in stage_dir.glob("model.*")) == ["model.json",
                                                                     "model.safetensors"]
    assert not list(run.rglob(".*.tmp*")) and not list(run.rglob(f".{'model'}*"))
    # the table is printed once, by rank 0 (horkd's row names a guard fallback when there is one)
    lines = proc.stdout.splitlines()
    assert sum(line.startswith(("| horkd |", "| horkd [")) for line in lines) == 1
    rows = {row["method"]: row for row in json.loads((run / "results.json").read_text())}
    chance, margin = 100 / 10, 15.0
    scores = {"teacher": rows["teacher"]["hr_top1"], "scratch": rows["scratch"]["lr_top1"],
              "horkd": rows["horkd"]["lr_top1"]}
    assert all(score > chance + margin for score in scores.values()), scores


def test_cached_reference_equals_the_live_reference_with_flips(tmp_path):
    from horkd.config import config_from_dict
    from horkd.experiment import open_seed
    from horkd.experiment.batches import batch_maker, train_batches
    from horkd.methods import METHODS, MethodContext
    from horkd.reference_cache import ReferenceCache

    raw = tiny_config_dict(tmp_path / "run", methods=["horkd_no_assistant"])
    raw["data"]["augment"] = {"crop_padding": 0, "hflip": True}
    cfg = config_from_dict(raw, ["distill.cache_reference=true"])
    ctx, networks = open_seed(cfg, 0, progress=False)
    teacher = networks.teacher()
    cache = ReferenceCache.build(teacher, ctx.splits.train, ctx.device, views=FlipViews(True))
    make = batch_maker(ctx, "students/horkd_no_assistant")
    loader = train_batches(ctx, cfg.train.student)
    x, y, index = next(iter(loader))
    batch = make(x, y, index)
    assert batch.view_id is not None and 0 < int(batch.view_id.sum()) < len(index)
    live = teacher(batch.hr)
    cached = cache.lookup(batch.index, batch.view_id)
    assert torch.allclose(cached.embedding, live.embedding, atol=1e-5)
    assert torch.allclose(cached.logits, live.logits, atol=1e-5)

    method_ctx = MethodContext(distill=cfg.distill, new_network=networks.new_network,
                               new_criterion=networks.new_criterion, teacher=teacher)
    method = METHODS.get("horkd_no_assistant").build(method_ctx)
    method.reference_cache = cache
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    method(batch)
    assert calls == []  # the step never ran the reference


def test_cache_reference_refuses_random_crops(tiny_cfg):
    from horkd.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="crop_padding"):
        config_from_dict(tiny_cfg, ["distill.cache_reference=true"])


def test_bf16_autocast_stage_trains_on_cpu(tiny_cfg):
    """A bf16, channels-last stage learns: two whole epochs in batches of 16 put the scratch
    student at 65-73 LR top-1 over seeds 0-2 (10 with epochs=0, 7 with training disabled);
    ten classes, so chance is 10 and the stated margin 15 points."""
    from horkd.config import config_from_dict
    from horkd.experiment import run_experiment

    cfg = config_from_dict(tiny_cfg, ["methods=[scratch]", "train.student.precision=bf16",
                                      "train.student.channels_last=true",
                                      "train.student.batch_size=16",
                                      "train.student.max_steps_per_epoch=null"])
    table = run_experiment(cfg, progress=False).table
    scratch = next(row for row in table if row["method"] == "scratch")
    chance, margin = 100 / 10, 15.0
    assert scratch["lr_top1"] > chance + margin, scratch


def test_a_method_says_when_ddp_must_search_for_unused_parameters():
    """Without a task loss the criterion's parameters (here a learnt scale) get no gradient: DDP
    must search for them (find_unused_parameters); with one, every parameter takes part."""
    from toy_nets import LinearNet

    from horkd.methods.base import Batch
    from horkd.methods.distill import DistillMethod

    class ScaledCE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, out, target):
            return nn.functional.cross_entropy(out.logits * self.scale, target)

    torch.manual_seed(0)
    x = torch.randn(8, 5)
    batch = Batch(hr=x, lr=x, target=torch.arange(8) % 3)
    for task_weight in (1.0, 0.0):
        loss = HybridOrderLoss(4, 4, logit_weight=0.0)
        method = DistillMethod(LinearNet(5, 4), ScaledCE(), LinearNet(5, 4), loss,
                               student_view="hr", task_weight=task_weight)
        sum(method(batch)[1].values()).backward()
        unused = [n for n, p in method.named_parameters()
                  if p.requires_grad and not n.startswith("reference.") and p.grad is None]
        assert method.leaves_parameters_unused == bool(unused), (task_weight, unused)
        assert method.static_graph
