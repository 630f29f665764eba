"""The relation bank takes only what a step may keep: a diverged batch never reaches it.

A batch with one NaN embedding gives a NaN loss, which a loop skips. Were its rows banked, every
later distance term that spans the bank would be NaN as well, for as many steps as the rows stay
there (with a bank of 20 batches, long enough for the trainer to stop the stage as diverged).
"""

from __future__ import annotations

import pytest
import torch
from toy_nets import CrossEntropy, LinearNet

from horkd.config import StageConfig
from horkd.losses import HybridOrderLoss
from horkd.losses.bank import RelationBank
from horkd.methods.base import Batch
from horkd.methods.distill import DistillMethod
from horkd.methods.supervised import SupervisedMethod
from horkd.trainer import Trainer

BATCH, BANK = 16, 64  # the bank holds four batches


def _batches(count: int, nan_at: int | None, dim: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(BATCH, dim, generator=g) for _ in range(count)]
    if nan_at is not None:
        out[nan_at][3, 1] = float("nan")
    return out


def test_one_nan_batch_leaves_the_next_losses_finite():
    """One batch with a NaN row, then finite batches: their distance terms are finite at once,
    and equal to those of a run that never saw the bad batch."""
    torch.manual_seed(0)
    loss_fn = HybridOrderLoss(4, 6, embedding_weight=0, angle_weight=0, bank_size=BANK).train()
    clean_fn = HybridOrderLoss(4, 6, embedding_weight=0, angle_weight=0, bank_size=BANK).train()
    project = torch.randn(6, 4)
    teachers = _batches(5, nan_at=1)
    students = [t @ project + 0.1 * torch.randn(BATCH, 4) for t in teachers]
    terms = [loss_fn(s, None, t, None)["order2_distance"]
             for s, t in zip(students, teachers, strict=True)]
    assert torch.isfinite(terms[0]) and torch.isnan(terms[1])
    assert all(torch.isfinite(term) for term in terms[2:]), terms
    assert int(loss_fn.bank.filled) == 4 * BATCH  # the bad batch took no slot
    clean_fn(students[0], None, teachers[0], None)
    for s, t, term in zip(students[2:], teachers[2:], terms[2:], strict=True):
        assert torch.equal(clean_fn(s, None, t, None)["order2_distance"], term)
    assert torch.equal(loss_fn.bank.student, clean_fn.bank.student)


def test_the_bank_keeps_finite_rows_in_order_and_nothing_of_a_refused_batch():
    bank = RelationBank(5, 2, 3)
    student = torch.arange(8.0).repeat(2, 1).t()  # rows 0..7, row r = (r, r)
    teacher = torch.arange(8.0).repeat(3, 1).t()
    student[1, 0], teacher[2, 2] = float("nan"), float("inf")
    bank.push(student[:4], teacher[:4])  # rows 1 and 2 are not finite: 0 and 3 enter
    assert (int(bank.filled), int(bank.pointer)) == (2, 2)
    assert bank.contents()[0][:, 0].tolist() == [0.0, 3.0]
    bank.push(student[4:], teacher[4:], accept=torch.tensor(False))  # refused whole
    assert (int(bank.filled), int(bank.pointer)) == (2, 2)
    bank.push(student[4:], teacher[4:])  # 4 finite rows: the bank is full, the oldest goes
    kept_s, kept_t = bank.contents()
    assert (int(bank.filled), int(bank.pointer)) == (5, 1)
    assert sorted(kept_s[:, 0].tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert torch.isfinite(kept_s).all() and torch.isfinite(kept_t).all()
    assert torch.equal(kept_s[:, 0], kept_t[:, 0])  # rows stay paired


def _one_epoch(method, batches, out_dir):
    """One epoch of the trainer over ``batches`` (the HR view is the LR view), skipping at most
    one non-finite step in a row."""
    return Trainer(
        method,
        StageConfig(epochs=1, batch_size=BATCH, max_nonfinite_steps=1, scheduler="none"),
        train_batches=batches,
        make_batch=lambda x, y, index: Batch(hr=x, lr=x, target=y, index=index),
        validate=None,
        score_key="top1",
        device=torch.device("cpu"),
        out_dir=out_dir,
        meta={"student": {"model": {}}},
        progress=False,
    ).fit()


def test_the_trainer_skips_the_bad_step_and_goes_on(tmp_path):
    """The trainer skips the NaN batch's step and no other: the bank spans four batches, and
    with max_nonfinite_steps=1 a poisoned bank would stop the stage as diverged."""
    torch.manual_seed(0)
    images = _batches(8, nan_at=2, dim=10)
    batches = [(x, torch.randint(0, 3, (BATCH,)), torch.arange(BATCH)) for x in images]
    student, teacher = LinearNet(10, 4), LinearNet(10, 6)  # no BatchNorm: a NaN spoils its row
    loss = HybridOrderLoss(4, 6, embedding_weight=0, angle_weight=0, bank_size=BANK)
    method = DistillMethod(student, CrossEntropy(), teacher, loss, student_view="hr")
    result = _one_epoch(method, batches, tmp_path)
    assert result.skipped_steps == 1
    assert int(loss.bank.filled) == BANK and torch.isfinite(loss.bank.student).all()
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_a_skipped_step_leaves_batchnorm_statistics_as_they_were(tmp_path):
    """The forward of a NaN batch writes NaN into BatchNorm's running statistics before its loss
    is known; the skipped step puts them back, so validation after it is not poisoned."""
    torch.manual_seed(0)
    images = _batches(4, nan_at=2, dim=10)
    batches = [(x, torch.randint(0, 3, (BATCH,)), torch.arange(BATCH)) for x in images]
    student = LinearNet(10, 4, norm=True)
    result = _one_epoch(SupervisedMethod(student, CrossEntropy()), batches, tmp_path)
    assert result.skipped_steps == 1
    norm = student.norm
    assert torch.isfinite(norm.running_mean).all() and torch.isfinite(norm.running_var).all()
    assert int(norm.num_batches_tracked) == 3  # the three finite batches, not the skipped one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_pushing_waits_for_no_host_sync_on_a_gpu():
    """The bank decides on the device: a push with a refused batch and NaN rows syncs nothing."""
    bank = RelationBank(64, 4, 6).cuda()
    student, teacher = torch.randn(16, 4, device="cuda"), torch.randn(16, 6, device="cuda")
    student[3] = float("nan")
    torch.cuda.set_sync_debug_mode("error")
    try:
        bank.push(student, teacher, accept=torch.isfinite(student.sum()))
        bank.push(student.nan_to_num(), teacher)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(bank.filled) == 16
