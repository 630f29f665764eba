"""Metrics on hand-made embeddings whose answers are known, and retrieval in bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from horkd.metrics import (
    kfold_verification_accuracy,
    rank1_identification,
    recall_at_k,
    tar_at_far,
    verification_metrics,
)


def test_recall_at_k_known_answer():
    # Four queries on a circle; gallery points placed so the nearest same-label item is at rank
    # 1, 2, 3 and never (within 4) respectively.
    angles = torch.tensor([0.0, 10.0, 20.0, 30.0, 40.0]) * torch.pi / 180
    gallery = torch.stack([angles.cos(), angles.sin()], 1)
    gallery_labels = torch.tensor([0, 1, 2, 3, 4])
    queries = gallery[:1].repeat(4, 1)  # all at angle 0
    query_labels = torch.tensor([0, 1, 2, 9])
    r = recall_at_k(queries, query_labels, gallery, gallery_labels, ks=(1, 2, 4))
    assert r == {1: 25.0, 2: 50.0, 4: 75.0}


def test_recall_excludes_own_index():
    e = torch.eye(3)
    labels = torch.tensor([0, 0, 1])
    # Without exclusion every query finds itself; with it, only the two label-0 items match.
    assert recall_at_k(e, labels, e, labels, ks=(1,))[1] == 100.0
    r = recall_at_k(e + 0.01, labels, e, labels, ks=(1, 2), exclude_same_index=True)
    assert r[2] == pytest.approx(200 / 3)


def test_blocked_equals_unblocked():
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(300, 16, generator=g), torch.randn(500, 16, generator=g)
    ql, gl = torch.randint(0, 7, (300,), generator=g), torch.randint(0, 7, (500,), generator=g)
    assert recall_at_k(q, ql, gal, gl, block=1000) == recall_at_k(q, ql, gal, gl, block=37)


def _peak_growth_mib(fn) -> float:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    with open("/proc/self/status") as handle:
        base = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    fn()
    with open("/proc/self/status") as handle:
        peak = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    return (peak - base) / 1024


def test_fifty_thousand_in_bounded_memory():
    """N = 50,000: an N x N float matrix would be 9.3 GiB; blocked search stays small."""
    g = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(50_000, 32, generator=g), dim=1)
    labels = torch.randint(0, 100, (50_000,), generator=g)
    result = {}
    try:
        growth = _peak_growth_mib(
            lambda: result.update(recall_at_k(emb, labels, emb, labels, ks=(1, 8), block=512,
                                              exclude_same_index=True))
        )
    except OSError:
        pytest.skip("needs Linux /proc peak-RSS reset")
    assert growth < 600, growth
    assert 0 < result[1] < result[8] < 100


def test_verification_matches_sklearn_and_threshold_protocol():
    rng = np.random.default_rng(0)
    same = np.repeat([True, False], 500)
    scores = np.where(same, rng.normal(0.6, 0.15, 1000), rng.normal(0.2, 0.15, 1000))
    folds = np.arange(1000) % 10
    fpr, tpr, _ = roc_curve(same.astype(int), scores)
    for far in (1e-2, 1e-3):
        expected = 100 * tpr[fpr <= far].max()
        assert tar_at_far(scores, same, far) == pytest.approx(expected)
    acc, std = kfold_verification_accuracy(scores, same, folds)
    best_possible = 100 * max(np.mean((scores >= t) == same) for t in np.unique(scores))
    assert 80 < acc <= best_possible and std >= 0
    metrics = verification_metrics(scores, same, folds)
    assert set(metrics) >= {"acc", "auc", "tar@far=0.01", "tar@far=0.001"}


def test_perfectly_separable_pairs():
    same = np.array([True, False] * 10)
    scores = np.where(same, 0.9, 0.1)
    folds = np.arange(20) % 10
    assert kfold_verification_accuracy(scores, same, folds)[0] == 100.0
    assert tar_at_far(scores, same, 1e-3) == 100.0


def test_rank1():
    gallery = torch.eye(3)
    probes = torch.tensor([[1.0, 0.1, 0], [0, 0.2, 1.0], [0.9, 1.0, 0]])
    assert rank1_identification(probes, torch.tensor([0, 2, 0]), gallery,
                                torch.tensor([0, 1, 2])) == pytest.approx(200 / 3)
