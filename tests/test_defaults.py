"""One table of defaults for the hybrid-order loss: the loss's constructor, the ``horkd`` method,
the config and the shipped configs agree, and the README's own loop trains what ``horkd run``
trains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from horkd.config import ExperimentConfig, LossConfig, load_config
from horkd.losses import HybridOrderLoss
from horkd.losses.defaults import (
    HYBRID_DEFAULTS,
    HYBRID_WEIGHTS,
    HYBRID_WEIGHTS_WITHOUT_LOGITS,
    METHOD_WEIGHTS,
    PUBLISHED_WEIGHTS,
)
from horkd.methods import METHODS, hybrid_loss

ROOT = Path(__file__).resolve().parents[1]
# the configs a user runs; configs/study/* are the study's own, with its searched settings
SHIPPED = sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "src" / "horkd" / "demo.yaml"]


def _settings(loss: HybridOrderLoss) -> dict[str, object]:
    return {
        "embedding_weight": loss.embedding_weight,
        "logit_weight": loss.logit_weight,
        "temperature": loss.kd.temperature,
        "distance_weight": loss.distance_weight,
        "angle_weight": loss.angle_weight,
        "huber_delta": loss.huber_delta,
        "bank": loss.bank is not None,
        "relations": loss.relations,
    }


def _networks() -> tuple[torch.nn.Module, torch.nn.Module]:
    student, teacher = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    student.embed_dim, teacher.embed_dim = 64, 128
    return student, teacher


def test_the_loss_the_horkd_method_and_the_config_read_one_table():
    """``HybridOrderLoss()`` is the loss the default config's ``horkd`` student trains with, and
    every one of its defaults is the table's."""
    cfg = ExperimentConfig()
    resolved = cfg.distill.loss.settled(METHODS.get("horkd").loss_defaults(uses_logits=True))
    assert {key: getattr(resolved, key) for key in HYBRID_DEFAULTS} == dict(HYBRID_DEFAULTS)
    student, teacher = _networks()
    constructed = HybridOrderLoss(64, 128)
    trained = hybrid_loss(cfg.distill.loss, student, teacher, METHODS.get("horkd").terms)
    assert _settings(constructed) == _settings(trained)
    assert {key: _settings(constructed)[key] for key in HYBRID_DEFAULTS} == dict(HYBRID_DEFAULTS)
    s, t = torch.randn(16, 64), torch.randn(16, 128)
    zs, zt = torch.randn(16, 10), torch.randn(16, 10)
    mine, run = constructed(s, zs, t, zt), trained(s, zs, t, zt)
    assert set(mine) == set(run) == {"order1_logits", "order2_distance", "order3_angle"}
    assert all(torch.equal(mine[k], run[k]) for k in mine)
    # the config's own defaults are the table's, where a key has one
    fields = LossConfig.model_fields
    for key, value in HYBRID_DEFAULTS.items():
        assert fields[key].get_default(call_default_factory=True) in (value, None), key


def test_each_method_takes_its_own_named_table():
    """The hybrid-order methods take HORKD's weights (the published ones without class logits);
    every baseline the published weights, which stay a table of their own."""
    for name in METHODS.names():
        spec = METHODS.get(name)
        if not spec.trains or spec.terms == ():  # learns from labels alone
            continue
        with_logits = dict(spec.loss_defaults(uses_logits=True))
        without = dict(spec.loss_defaults(uses_logits=False))
        if spec.follows_orders:
            assert with_logits == dict(HYBRID_WEIGHTS), name
            assert without == dict(HYBRID_WEIGHTS_WITHOUT_LOGITS), name
        else:
            published = {k: v for k, v in with_logits.items() if k in METHOD_WEIGHTS}
            assert published == dict(PUBLISHED_WEIGHTS), name
    assert dict(PUBLISHED_WEIGHTS) == {"embedding_weight": 1.0, "distance_weight": 25.0,
                                       "angle_weight": 50.0}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_configs_do_not_contradict_the_table(path):
    """A shipped config leaves each default of the table to it or spells the same value, and
    any weights its comments quote (embedding / distance / angle) are a table's."""
    cfg = load_config(path)
    for key, value in HYBRID_DEFAULTS.items():
        given = getattr(cfg.distill.loss, key)
        assert given is None or given == value, f"{path.name}: distill.loss.{key}={given}"
    rows = {tuple(table[k] for k in METHOD_WEIGHTS)
            for table in (HYBRID_WEIGHTS, HYBRID_WEIGHTS_WITHOUT_LOGITS, PUBLISHED_WEIGHTS)}
    quoted = re.findall(r"\((\d+(?:\.\d+)?) / (\d+(?:\.\d+)?) / (\d+(?:\.\d+)?)\)",
                        path.read_text())
    for triple in quoted:
        assert tuple(float(x) for x in triple) in rows, f"{path.name} quotes {triple}"


def test_the_readme_own_loop_takes_the_defaults():
    """The README's own-loop example builds the loss without weights: it trains what
    ``horkd run`` trains, whatever the table says."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The losses in your own loop", 1)[1].split("\n## ", 1)[0]
    calls = re.findall(r"HybridOrderLoss\(([^)]*)\)", section)
    assert calls and all("weight" not in c and "temperature" not in c for c in calls), calls
