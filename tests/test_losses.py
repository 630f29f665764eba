"""Losses against direct per-pair / per-triplet formulations, gradients, invariances, edge cases."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from horkd.losses import (
    AngleLoss,
    DistanceLoss,
    EmbeddingRegression,
    HintonKD,
    HybridOrderLoss,
    angle_loss,
    cpu_kernels,
    distance_loss,
)
from horkd.losses.defaults import HYBRID_DEFAULTS

FIXTURE = Path(__file__).parent / "fixtures" / "loss_values.json"


@pytest.fixture(autouse=True, params=["eager", "cpu_kernels"])
def backend(request):
    """Every test here runs on both implementations of the relational terms."""
    if request.param == "cpu_kernels" and not cpu_kernels.installed():
        pytest.skip("numba is not installed")
    with cpu_kernels.use_kernels(request.param == "cpu_kernels"):
        yield request.param


def _pair(n: int = 7, d: int = 5, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=g, dtype=dtype)
    t = torch.randn(n, d, generator=g, dtype=dtype)
    return s, t


def _huber(x: float, delta: float = 1.0) -> float:
    return 0.5 * x * x if abs(x) < delta else delta * (abs(x) - 0.5 * delta)


def reference_distance(s: torch.Tensor, t: torch.Tensor, delta: float = 1.0) -> float:
    n = s.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]

    def normed(e):
        d = {p: float((e[p[0]] - e[p[1]]).norm()) for p in pairs}
        mean = sum(d.values()) / len(d)
        return {p: v / mean for p, v in d.items()}

    ds, dt = normed(s), normed(t)
    return sum(_huber(ds[p] - dt[p], delta) for p in pairs) / len(pairs)


def reference_angle(s: torch.Tensor, t: torch.Tensor, delta: float = 1.0) -> float:
    def cos(e, i, j, k):
        a, b = e[j] - e[i], e[k] - e[i]
        return float(a @ b / (a.norm() * b.norm()))

    triplets = list(itertools.permutations(range(s.shape[0]), 3))
    total = sum(_huber(cos(s, *tr) - cos(t, *tr), delta) for tr in triplets)
    return total / len(triplets)


@pytest.mark.parametrize("delta", [1.0, 0.05])
def test_distance_matches_direct_formulation(delta):
    s, t = _pair()
    assert abs(float(distance_loss(s, t, delta)) - reference_distance(s, t, delta)) < 1e-6


@pytest.mark.parametrize("delta", [1.0, 0.05])
@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_angle_matches_direct_formulation(delta, chunk):
    s, t = _pair(n=6)
    value = float(angle_loss(s, t, delta, chunk_size=chunk))
    assert abs(value - reference_angle(s, t, delta)) < 1e-6


def test_first_order_match_direct_formulations():
    s, t = _pair(n=5, d=4)
    reg = EmbeddingRegression(4, 4)
    direct = sum(float(((s[i] - t[i]) ** 2).sum()) / 4 for i in range(5)) / 5
    assert abs(float(reg(s, t)) - direct) < 1e-9
    tau = 3.0
    kd = HintonKD(tau)
    direct_kd = 0.0
    for i in range(5):
        p = torch.softmax(t[i] / tau, 0)
        q = torch.softmax(s[i] / tau, 0)
        direct_kd += float((p * (p.log() - q.log())).sum())
    assert abs(float(kd(s, t)) - direct_kd / 5 * tau * tau) < 1e-9


def test_gradcheck_float64():
    s, t = _pair(n=6, d=4)
    s.requires_grad_(True)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: distance_loss(a, b), (s, t))
    assert torch.autograd.gradcheck(lambda a, b: angle_loss(a, b, chunk_size=4), (s, t))
    assert torch.autograd.gradcheck(lambda a, b: angle_loss(a, b, 0.05), (s, t))
    assert torch.autograd.gradcheck(lambda a, b: HintonKD(2.0)(a, b), (s, t))
    reg = EmbeddingRegression(4, 3).double()
    t3 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: reg(a, b), (s, t3))


def test_gradcheck_sampled_anchors_and_the_hybrid_loss_sharing_its_gram_matrices():
    """The closed-form gradients (made in forward, buffers reused in place) on the paths the
    trainer takes: random anchors in chunks, and both relational terms from one Gram matrix."""
    s, t = _pair(n=7, d=4)
    s.requires_grad_(True)
    t.requires_grad_(True)

    def sampled(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(3)  # the same anchors on every evaluation
        return angle_loss(a, b, anchors=3, chunk_size=2)

    assert torch.autograd.gradcheck(sampled, (s, t))
    relational = HybridOrderLoss(4, 4, embedding_weight=0.0).double()
    assert torch.autograd.gradcheck(lambda a, b: sum(relational(a, None, b, None).values()), (s, t))
    student_only = s.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: sampled(a, t.detach()), (student_only,))


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


@pytest.mark.parametrize("fn", [distance_loss, angle_loss])
def test_invariant_to_rotation_translation_scaling(fn):
    s, t = _pair(n=8, d=5)
    base = float(fn(s, t))
    r = _orthogonal(5, 1)
    shift_s, shift_t = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    assert abs(float(fn(s @ r, t @ r)) - base) < 1e-9
    assert abs(float(fn(s + shift_s, t + shift_t)) - base) < 1e-9
    assert abs(float(fn(3.7 * s, 3.7 * t)) - base) < 1e-9
    # scaling each side by its own factor: distances are normalised, angles scale-free
    assert abs(float(fn(0.2 * s, 5.0 * t)) - base) < 1e-9


def test_zero_when_student_equals_teacher():
    s, _ = _pair()
    assert float(distance_loss(s, s.clone())) == pytest.approx(0.0, abs=1e-12)
    assert float(angle_loss(s, s.clone())) == pytest.approx(0.0, abs=1e-12)
    assert float(EmbeddingRegression(5, 5)(s, s.clone())) == 0.0
    assert float(HintonKD()(s, s.clone())) == pytest.approx(0.0, abs=1e-12)
    hybrid = HybridOrderLoss(5, 5, logit_weight=1.0).double()
    assert all(float(v) == pytest.approx(0.0, abs=1e-9) for v in hybrid(s, s, s, s).values())


def _edge_inputs():
    for n in (1, 2, 3):
        yield f"n={n}", torch.randn(n, 4), torch.randn(n, 4)
    yield "collapsed student", torch.ones(5, 4), torch.randn(5, 4)
    yield "collapsed both", torch.ones(5, 4), torch.ones(5, 4)
    duplicate = torch.randn(5, 4)
    duplicate[1] = duplicate[0]
    yield "duplicated rows", duplicate, torch.randn(5, 4)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("case", list(_edge_inputs()), ids=lambda c: c[0])
def test_degenerate_inputs_finite(case, autocast):
    _, s, t = case
    dtype = torch.bfloat16 if autocast else torch.float32
    s = s.detach().clone().to(dtype).requires_grad_(True)
    t = t.detach().clone().to(dtype)
    hybrid = HybridOrderLoss(4, 4, logit_weight=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        terms = {
            "distance": distance_loss(s, t),
            "angle": angle_loss(s, t),
            **hybrid(s, s, t, t),
        }
        total = sum(terms.values())
    for name, value in terms.items():
        assert torch.isfinite(value), name
        assert value.dtype in (torch.float32, torch.float64), name  # fp32 island under autocast
    total.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_hybrid_switches_and_weights():
    s, _ = _pair(n=6, d=4, dtype=torch.float32)
    t8 = torch.randn(6, 8)
    s_logits, t_logits = torch.randn(6, 3), torch.randn(6, 3)
    full = HybridOrderLoss(4, 8, embedding_weight=2.0, logit_weight=0.5, temperature=2.0)
    terms = full(s, s_logits, t8, t_logits)
    assert set(terms) == {"order1_embedding", "order1_logits", "order2_distance", "order3_angle"}
    distance, angle = HYBRID_DEFAULTS["distance_weight"], HYBRID_DEFAULTS["angle_weight"]
    assert torch.allclose(terms["order2_distance"], distance * DistanceLoss()(s, t8))
    assert torch.allclose(terms["order3_angle"], angle * AngleLoss()(s, t8))
    assert torch.allclose(terms["order1_logits"], 0.5 * HintonKD(2.0)(s_logits, t_logits))
    assert torch.allclose(terms["order1_embedding"], 2.0 * full.embedding(s, t8))
    only_23 = HybridOrderLoss(4, 8, orders=[2, 3])
    assert set(only_23(s, s_logits, t8, t_logits)) == {"order2_distance", "order3_angle"}
    no_angle = HybridOrderLoss(4, 8, angle_weight=0.0)
    assert "order3_angle" not in no_angle(s, None, t8, None)
    assert "order1_logits" not in HybridOrderLoss(4, 8, logit_weight=1.0)(s, None, t8, None)
    # the learned projector receives gradients
    sum(full(s.requires_grad_(True), s_logits, t8, t_logits).values()).backward()
    assert full.embedding.projector.weight.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"distance_weight": -1.0}, "distance_weight"), ({"orders": [1, 4]}, "orders")],
)
def test_hybrid_rejects_bad_settings(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        HybridOrderLoss(4, 4, **kwargs)


def test_config_keys_reach_the_loss_and_the_order_switch_applies_once():
    """The one way to choose terms: ``distill.loss`` weights and orders through the method's
    terms. A method that follows the orders takes exactly the configured orders' terms; a
    baseline keeps its own terms whatever the orders say; a task without logits drops them."""
    from horkd.config import LossConfig
    from horkd.methods import hybrid_loss

    student, teacher = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    student.embed_dim, teacher.embed_dim = 4, 6
    s, t = torch.randn(8, 4), torch.randn(8, 6)
    zs, zt = torch.randn(8, 3), torch.randn(8, 3)

    def terms(loss_cfg: LossConfig, method_terms=None, uses_logits=True) -> set[str]:
        loss = hybrid_loss(loss_cfg, student, teacher, method_terms, uses_logits)
        return set(loss(s, zs, t, zt))

    everything = {"order1_embedding", "order1_logits", "order2_distance", "order3_angle"}
    given = LossConfig(embedding_weight=1.0)
    assert terms(given) == everything
    assert terms(LossConfig(orders=[2, 3])) == {"order2_distance", "order3_angle"}
    assert terms(LossConfig(orders=[1], logit_weight=0.0, embedding_weight=1.0)) == {
        "order1_embedding"}
    assert terms(LossConfig(orders=[2, 3]), ("logits",)) == {"order1_logits"}  # hinton_kd
    assert terms(given, None, uses_logits=False) == everything - {"order1_logits"}
    value = hybrid_loss(LossConfig(angle_weight=3.0), student, teacher)(s, zs, t, zt)
    assert torch.allclose(value["order3_angle"], 3.0 * angle_loss(s, t))


def test_a_weight_left_null_takes_the_methods_own_default():
    """Baselines keep their published weights (embedding regression at 1, RKD's 25 / 50) and
    no bank; the hybrid-order methods take the study's choice (no embedding term, 5 / 10; the
    published weights where a task has no class logits); a weight given in the config applies
    to every method alike."""
    from horkd.config import ExperimentConfig, LossConfig
    from horkd.methods import METHODS, hybrid_loss
    from horkd.run_dir import student_fingerprint

    student, teacher = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    student.embed_dim, teacher.embed_dim = 4, 6
    loss_cfg = LossConfig(bank_size=16)
    rkd = hybrid_loss(loss_cfg, student, teacher, METHODS.get("rkd").terms)
    regression = hybrid_loss(loss_cfg, student, teacher, ("embedding",))  # its terms alone
    hybrid = hybrid_loss(loss_cfg, student, teacher, METHODS.get("horkd").terms)
    assert (rkd.distance_weight, rkd.angle_weight, rkd.bank) == (25.0, 50.0, None)
    assert regression.embedding_weight == 1.0
    assert (hybrid.embedding_weight, hybrid.distance_weight, hybrid.angle_weight) == (0, 5, 10)
    assert hybrid.bank is not None
    metric = hybrid_loss(loss_cfg, student, teacher, None, uses_logits=False)  # retrieval, faces
    assert (metric.embedding_weight, metric.distance_weight, metric.angle_weight) == (1, 25, 50)
    chosen = hybrid_loss(LossConfig(distance_weight=2.0), student, teacher, ("distance",))
    assert chosen.distance_weight == 2.0
    # what a stage trains with is its fingerprint: the same weights spelt out, the same stage
    implicit, spelt = ExperimentConfig(), ExperimentConfig.model_validate(
        {"distill": {"loss": {"embedding_weight": 0, "distance_weight": 5, "angle_weight": 10}}})
    def key(cfg: ExperimentConfig, method: str) -> str:
        return student_fingerprint(cfg, 0, method, teacher=True, assistant=False)
    assert key(implicit, "horkd_no_assistant") == key(spelt, "horkd_no_assistant")
    assert key(implicit, "rkd") != key(spelt, "rkd")


def test_stored_values():
    """Regression guard: the numbers tests/fixtures/make_loss_values.py stored still come out."""
    stored = json.loads(FIXTURE.read_text())
    spec = importlib.util.spec_from_file_location("make_loss_values", FIXTURE.with_name(
        "make_loss_values.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    computed = module.compute()
    assert set(stored) == set(computed)
    for key, value in stored.items():
        assert math.isclose(computed[key], value, rel_tol=1e-9, abs_tol=1e-12), key


def test_direct_formulation_agrees_with_rkd_reference_on_distinct_triplets():
    """The RKD-style dense computation, restricted to distinct triplets, gives our value."""
    s, t = _pair(n=6)

    def dense(e):
        td = e.unsqueeze(0) - e.unsqueeze(1)
        td = F.normalize(td, p=2, dim=2)
        return torch.bmm(td, td.transpose(1, 2))

    n = 6
    i, j, k = torch.meshgrid(torch.arange(n), torch.arange(n), torch.arange(n), indexing="ij")
    distinct = (i != j) & (i != k) & (j != k)
    ref = F.smooth_l1_loss(dense(s)[distinct], dense(t)[distinct])
    assert abs(float(ref) - float(angle_loss(s, t))) < 1e-9


def _rkd_reference(s: torch.Tensor, t: torch.Tensor) -> tuple[float, float]:
    """RKD's distance and angle losses as its reference code computes them (Park et al., CVPR
    2019, lenscloth/RKD): smooth L1 averaged over every entry of the N x N distance and the
    N x N x N angle tensors, diagonals included."""

    def distances(e: torch.Tensor) -> torch.Tensor:  # its pdist: the diagonal set to 0
        gram = e @ e.t()
        d = (gram.diag().unsqueeze(1) + gram.diag().unsqueeze(0) - 2 * gram).clamp(min=1e-12)
        d = d.sqrt() * (1 - torch.eye(len(e), dtype=e.dtype))
        return d / d[d > 0].mean()

    def angles(e: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(unit, unit.transpose(1, 2))

    return (float(F.smooth_l1_loss(distances(s), distances(t))),
            float(F.smooth_l1_loss(angles(s), angles(t))))


@pytest.mark.parametrize("n", [5, 16, 128])
def test_relational_terms_are_rkds_over_distinct_pairs_and_triplets(n):
    """What the docstrings and docs/config.md state: the distance term is RKD's divided by
    (N-1)/N, the angle term RKD's divided by (N-1)(N-2)/N^2 (0.82 at N = 16, 0.98 at 128)."""
    s, t = _pair(n=n, d=6, seed=n)
    rkd_distance, rkd_angle = _rkd_reference(s, t)
    assert math.isclose(float(distance_loss(s, t)) * (n - 1) / n, rkd_distance, rel_tol=1e-9)
    factor = (n - 1) * (n - 2) / n**2
    assert math.isclose(float(angle_loss(s, t)) * factor, rkd_angle, rel_tol=1e-9)
    assert {16: 0.82, 128: 0.98}.get(n, round(factor, 2)) == round(factor, 2)


def _angle_at_anchors(s: torch.Tensor, t: torch.Tensor, anchors: list[int]) -> float:
    """The direct per-triplet formulation restricted to the given anchors i."""

    def cos(e: torch.Tensor, i: int, j: int, k: int) -> float:
        return float(F.cosine_similarity(e[j] - e[i], e[k] - e[i], dim=0))

    n = s.shape[0]
    terms = [_huber(cos(s, i, j, k) - cos(t, i, j, k))
             for i in anchors for j in range(n) for k in range(n) if len({i, j, k}) == 3]
    return sum(terms) / len(terms)


def test_angle_on_random_anchors_is_the_mean_over_those_anchors_and_unbiased():
    s, t = _pair(n=8, d=4)
    assert torch.allclose(angle_loss(s, t, anchors=8), angle_loss(s, t), atol=1e-12)
    torch.manual_seed(5)
    chosen = torch.randperm(8)[:3].sort().values.tolist()
    torch.manual_seed(5)
    sampled = angle_loss(s, t, anchors=3)
    assert math.isclose(float(sampled), _angle_at_anchors(s, t, chosen), abs_tol=1e-9)
    student = s.clone().requires_grad_()
    angle_loss(student, t, anchors=3).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    draws = torch.stack([angle_loss(s, t, anchors=2) for _ in range(3000)])
    exact = float(angle_loss(s, t))
    assert abs(float(draws.mean()) - exact) < 4 * float(draws.std()) / math.sqrt(3000)


@pytest.mark.parametrize("fn", [distance_loss, angle_loss])
def test_a_diverged_student_gives_a_nan_loss_which_the_trainer_skips(fn):
    s, t = _pair(n=12)
    s[3, 1] = float("nan")
    assert torch.isnan(fn(s, t))


def test_bank_distances_look_beyond_the_batch():
    """Second order over the batch and a bank of earlier samples: with an empty bank it is the
    in-batch distance loss; gradients reach the batch only; the bank is first in, first out."""
    from horkd.losses.bank import RelationBank
    from horkd.losses.second_order import bank_distance_loss

    torch.manual_seed(0)
    s, t = torch.randn(12, 4, dtype=torch.float64), torch.randn(12, 6, dtype=torch.float64)
    empty_s, empty_t = torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 6, dtype=torch.float64)
    assert torch.allclose(bank_distance_loss(s, t, empty_s, empty_t), distance_loss(s, t))
    bank = RelationBank(5, 4, 6)
    bank.push(torch.ones(3, 4), torch.ones(3, 6))
    bank.push(2 * torch.ones(4, 4), 2 * torch.ones(4, 6))
    kept, _ = bank.contents()
    assert kept.shape == (5, 4) and sorted(kept[:, 0].tolist()) == [1, 2, 2, 2, 2]  # 2 oldest out
    student = s.clone().requires_grad_(True)
    bank_s = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    loss = bank_distance_loss(student, t, bank_s.detach(), torch.randn(8, 6, dtype=torch.float64))
    loss.backward()
    assert torch.isfinite(loss) and student.grad.abs().sum() > 0 and bank_s.grad is None
    loss_fn = HybridOrderLoss(4, 6, embedding_weight=0, angle_weight=0, bank_size=16)
    terms = loss_fn(s.float(), None, t.float(), None)  # a training step fills the bank
    assert "order2_distance" in terms and int(loss_fn.bank.filled) == 12
