"""Baselines that isolate HORKD's parts (issue 38, item 6).

``kd_rkd``: Hinton KD + RKD's distance and angle, teacher -> student, with the relation bank as
the hybrid-order methods take it: HORKD's loss without the assistant, the embedding term or
the orders switch. ``semi_supervised``: no teacher; the student pseudo-labels the unlabelled
training images every distilled student sees (Lee 2013, with FixMatch's confidence threshold).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from horkd.config import ConfigError, ExperimentConfig, config_from_dict
from horkd.experiment import run_experiment
from horkd.methods import METHODS, MethodContext
from horkd.methods.base import Batch
from horkd.methods.semi_supervised import (
    PSEUDO_THRESHOLD,
    PSEUDO_WEIGHT,
    PseudoLabelMethod,
    pseudo_label_loss,
)
from horkd.models import build_model
from horkd.run_dir import student_fingerprint
from tests.conftest import tiny_config_dict

CHANCE_TOP1 = 100 / 10  # digits: ten classes


class _CE(torch.nn.Module):
    def forward(self, out, target):
        return F.cross_entropy(out.logits, target)


def _context(cfg: ExperimentConfig, teacher: torch.nn.Module | None) -> MethodContext:
    def new_network(role: str) -> torch.nn.Module:
        torch.manual_seed(1)  # every student starts from the same weights
        return build_model("cnn_tiny", num_classes=10, in_channels=1, embed_dim=8, width=4)

    return MethodContext(distill=cfg.distill, new_network=new_network,
                         new_criterion=lambda network: _CE(), teacher=teacher)


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn_small", num_classes=10, in_channels=1, embed_dim=16, width=4)


def _batch(n: int = 12, labelled: int | None = None, seed: int = 2) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 1, 16, 16, generator=generator)
    target = torch.randint(0, 10, (n,), generator=generator)
    batch = Batch(hr, F.interpolate(hr, size=4, mode="area"), target)
    if labelled is not None:
        batch.labeled = _batch(labelled, seed=seed + 1)
    return batch


def _terms(name: str, cfg: ExperimentConfig, batch: Batch, teacher=None) -> dict[str, torch.Tensor]:
    method = METHODS.get(name).build(_context(cfg, teacher if teacher is not None else _teacher()))
    method.train()
    return method(batch)[1]


# ---------------------------------------------------------------- kd_rkd
def test_kd_rkd_is_hinton_kds_term_plus_rkds_terms_on_the_same_batch():
    """Same student weights, same teacher, same batch, same weights: kd_rkd's terms are
    hinton_kd's softened-logit term and rkd's distance and angle terms, at RKD's published 25
    and 50 from the one table of defaults."""
    spec = METHODS.get("kd_rkd")
    assert spec.group == "baseline" and spec.needs == ("teacher",) and not spec.follows_orders
    assert spec.loss_defaults()["distance_weight"] == 25.0
    assert spec.loss_defaults()["angle_weight"] == 50.0
    cfg, teacher = ExperimentConfig(), _teacher()
    for batch in (_batch(), _batch(12, labelled=6)):  # every label, and a few-label batch
        kd_rkd = _terms("kd_rkd", cfg, batch, teacher)
        hinton = _terms("hinton_kd", cfg, batch, teacher)
        rkd = _terms("rkd", cfg, batch, teacher)
        assert set(kd_rkd) == {"task", "order1_logits", "order2_distance", "order3_angle"}
        expected = {**rkd, **hinton}
        for key, value in kd_rkd.items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
        assert float(kd_rkd["order2_distance"].detach()) > 0
        assert float(kd_rkd["order3_angle"].detach()) > 0
    # its orders are fixed: the orders switch (what the ablation varies) leaves it whole
    no_relations = config_from_dict({}, ["distill.loss.orders=[1]"])
    assert set(_terms("kd_rkd", no_relations, _batch(), teacher)) == set(kd_rkd)


def test_kd_rkd_at_horkds_weights_is_horkds_loss_without_the_assistant():
    """Given HORKD's weights (and a bank), kd_rkd's loss is horkd_no_assistant's term for term:
    what separates them is the assistant, the orders switch and the default weights only."""
    cfg = config_from_dict({}, ["distill.loss.distance_weight=5", "distill.loss.angle_weight=10",
                                "distill.loss.bank_size=16"])
    teacher = _teacher()
    for batch in (_batch(), _batch(12, labelled=6)):
        kd_rkd = _terms("kd_rkd", cfg, batch, teacher)
        hybrid = _terms("horkd_no_assistant", cfg, batch, teacher)
        assert set(kd_rkd) == set(hybrid)
        for key, value in kd_rkd.items():
            torch.testing.assert_close(value, hybrid[key], rtol=0, atol=0, msg=key)


def test_the_bank_is_kd_rkds_as_the_hybrid_methods_and_not_the_published_baselines():
    cfg = config_from_dict({}, ["distill.loss.bank_size=32"])
    teacher = _teacher()
    built = {name: METHODS.get(name).build(_context(cfg, teacher))
             for name in ("kd_rkd", "rkd", "hinton_kd", "horkd_no_assistant")}
    assert built["kd_rkd"].distill_loss.bank is not None
    assert built["horkd_no_assistant"].distill_loss.bank is not None  # as before
    assert built["rkd"].distill_loss.bank is None and built["hinton_kd"].distill_loss.bank is None
    without = METHODS.get("kd_rkd").build(_context(ExperimentConfig(), teacher))
    assert without.distill_loss.bank is None  # bank_size 0: no bank
    # used: after one step the second batch's distance also spans the first batch's samples
    method = built["kd_rkd"].train()
    method(_batch(seed=5))
    assert int(method.distill_loss.bank.filled) == 12
    second = _batch(seed=6)
    banked = method(second)[1]["order2_distance"]
    without.load_state_dict(method.state_dict(), strict=False)
    alone = without.train()(second)[1]["order2_distance"]
    assert not torch.allclose(banked, alone)


# ---------------------------------------------------------------- semi_supervised
def test_pseudo_labels_mask_unconfident_rows_and_carry_no_gradient():
    logits = torch.tensor([[9.0, 0.0, 0.0],  # confident, class 0 (p = 0.9998)
                           [0.2, 0.1, 0.0],  # unsure (p = 0.37): left out
                           [0.0, 0.0, 8.0],  # confident, class 2 (p = 0.9993)
                           [2.0, 0.0, 0.0]],  # p = 0.79: below 0.95, left out
                          requires_grad=True)
    loss = pseudo_label_loss(logits, threshold=0.95)
    ce = F.cross_entropy(logits.detach(), torch.tensor([0, 0, 2, 0]), reduction="none")
    torch.testing.assert_close(loss, (ce[0] + ce[2]) / 4)  # averaged over every row (FixMatch)
    loss.backward()
    # the gradient is the CE's with the pseudo-label held fixed, (softmax - one_hot) / N on
    # the rows kept: none flows through the targets or the mask
    expected = (torch.softmax(logits.detach(), 1) - F.one_hot(torch.tensor([0, 0, 2, 0]), 3)) / 4
    expected[[1, 3]] = 0.0
    torch.testing.assert_close(logits.grad, expected)
    assert float(pseudo_label_loss(logits.detach(), 0.5)) > float(loss.detach())  # keeps more
    nobody = pseudo_label_loss(torch.zeros(3, 4, requires_grad=True), 0.95)
    assert float(nobody.detach()) == 0.0 and nobody.requires_grad  # uniform predictions: no target


def test_the_semi_supervised_student_adds_its_pseudo_labels_to_the_labelled_task_loss():
    cfg = config_from_dict({}, ["distill.pseudo_label.threshold=0.1",
                                "distill.pseudo_label.weight=0.5"])
    spec = METHODS.get("semi_supervised")
    assert spec.group == "baseline" and spec.needs == () and spec.unlabelled
    method = spec.build(_context(cfg, None))
    assert isinstance(method, PseudoLabelMethod) and method.reference is None
    assert (method.threshold, method.weight) == (0.1, 0.5)
    method.train()
    batch = _batch(12, labelled=6)
    out, terms = method(batch)
    assert set(terms) == {"task", "pseudo_label"} and out.logits.shape == (12, 10)
    # the task loss is on the labelled batch, the pseudo term on the unlabelled one (one pass)
    both = method.student(torch.cat([batch.lr, batch.labeled.lr]))
    torch.testing.assert_close(terms["task"], F.cross_entropy(both.logits[12:],
                                                              batch.labeled.target))
    torch.testing.assert_close(terms["pseudo_label"],
                               0.5 * pseudo_label_loss(both.logits[:12], 0.1))
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in method.trainable_parameters())
    # what share of the unlabelled rows passed the threshold: observed, not a loss term
    confidence = torch.softmax(both.logits[:12].detach(), dim=1).max(dim=1).values
    share = method.observed()["pseudo_label_share"]
    assert float(share) == pytest.approx(float((confidence >= 0.1).float().mean()))
    with pytest.raises(ValueError, match="data.label_fraction"):
        method(_batch(12))  # every label: no unlabelled images
    scratch_like = spec.build(_context(config_from_dict({}, ["distill.pseudo_label.weight=0"]),
                                       None))
    assert set(scratch_like.train()(batch)[1]) == {"task"}


def test_the_config_refuses_semi_supervised_without_unlabelled_images(tmp_path):
    raw = tiny_config_dict(tmp_path / "run", methods=["scratch", "semi_supervised"])
    with pytest.raises(ConfigError, match="data.label_fraction") as caught:
        config_from_dict(raw)
    assert len(str(caught.value).splitlines()) == 2  # 'invalid config:' and one line
    assert config_from_dict(raw, ["data.label_fraction=0.1"]).methods[-1] == "semi_supervised"
    with pytest.raises(ConfigError, match="class logits"):
        config_from_dict(raw, ["data.label_fraction=0.1", "task=retrieval"])
    for bad in ("distill.pseudo_label.threshold=0", "distill.pseudo_label.threshold=1.5",
                "distill.pseudo_label.weight=-1"):
        with pytest.raises(ConfigError, match="pseudo_label"):
            config_from_dict(raw, ["data.label_fraction=0.1", bad])


def test_the_new_settings_at_their_defaults_leave_every_fingerprint_alone():
    """Fields at their default are left out of the fingerprints, so no stage retrains."""
    cfg = ExperimentConfig()
    assert (cfg.distill.pseudo_label.threshold, cfg.distill.pseudo_label.weight) == (
        PSEUDO_THRESHOLD, PSEUDO_WEIGHT) == (0.95, 1.0)  # FixMatch's tau and lambda_u
    assert "pseudo_label" not in cfg.distill.model_dump(mode="json", exclude_defaults=True)
    spelt = config_from_dict({}, ["distill.pseudo_label.threshold=0.95",
                                  "distill.pseudo_label.weight=1.0"])
    for method in ("hinton_kd", "rkd", "horkd_no_assistant", "kd_rkd"):
        assert (student_fingerprint(cfg, 0, method, teacher=True, assistant=False)
                == student_fingerprint(spelt, 0, method, teacher=True, assistant=False))


def test_the_semi_supervised_students_fingerprint_holds_its_settings():
    def key(*overrides: str) -> str:
        cfg = config_from_dict({}, ["data.label_fraction=0.1", *overrides])
        return student_fingerprint(cfg, 0, "semi_supervised", teacher=False, assistant=False)

    assert key() != key("distill.pseudo_label.threshold=0.8")
    assert key() == key("distill.loss.distance_weight=3")  # no distillation setting applies


def test_a_few_label_run_trains_scratch_semi_supervised_and_kd_rkd_end_to_end(tmp_path):
    """Digits, 20% of 240 training labels, 4-px students, four whole epochs of batches of 32
    (Adam): each student learns. Measured LR test top-1 over seeds 0-2: scratch 60/45/48,
    semi_supervised 64/46/49, kd_rkd 34/39/31 (RKD's 25/50 weigh heavily on so short a run);
    the teacher 83-85 on HR. The threshold is lowered to 0.5 so that the pseudo-labels take part
    in so short a run (at FixMatch's 0.95 no prediction is that confident here and the term
    stays 0); the test checks that they do, not that they help (on this toy they move top-1 by
    under a point)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        raw = tiny_config_dict(tmp_path / "run", methods=["scratch", "semi_supervised", "kd_rkd"])
        raw["data"]["label_fraction"] = 0.2
        raw["distill"] = {"loss": {"bank_size": 64}, "pseudo_label": {"threshold": 0.5}}
        budget = {**raw["train"]["student"], "epochs": 4, "max_steps_per_epoch": None,
                  "optimizer": {"name": "adam", "lr": 0.003, "weight_decay": 0.0}}
        raw["train"] = {"teacher": budget, "assistant": budget, "student": budget}
        outcome = run_experiment(config_from_dict(raw), progress=False)
    finally:
        torch.set_num_threads(threads)
    rows = {row["method"]: row for row in outcome.table}
    margins = {"scratch": 25, "semi_supervised": 25, "kd_rkd": 15}  # smallest measured: 35, 21
    for method, margin in margins.items():
        assert rows[method]["lr_top1"] > CHANCE_TOP1 + margin, (method, rows[method]["lr_top1"])
    text = (Path(outcome.run_dir) / "results.md").read_text()
    assert "| semi_supervised | baseline | student |" in text
    assert "| kd_rkd | baseline | student |" in text
    stage = Path(outcome.run_dir) / "seed0" / "students" / "semi_supervised"
    logged = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert all("train/pseudo_label" in row and "train/task" in row for row in logged)
    assert max(row["train/pseudo_label"] for row in logged) > 0  # confident rows were taught
    # the share that passed the threshold is logged beside the terms, and grows as it learns
    shares = [row["train/pseudo_label_share"] for row in logged]
    assert all(0.0 <= v <= 1.0 for v in shares) and shares[-1] > shares[0]
    assert not (Path(outcome.run_dir) / "seed0" / "assistant").exists()  # nothing needs it
