"""The defaults of the hybrid-order loss: one table, read by the loss, the methods and the config.

:data:`~horkd.losses.defaults.HYBRID_DEFAULTS` is what :class:`~horkd.losses.HybridOrderLoss`
takes for an argument left out, what the hybrid-order methods (``horkd``,
``horkd_no_assistant``, ``horkd_joint`` and the assistant stage) train with where
``distill.loss`` leaves a weight null, and the default of each ``distill.loss`` key of the same
name. So ``HybridOrderLoss(s_dim, t_dim)`` in a loop of one's own trains with the weights
``horkd run`` gives HORKD. Its weights are what the accuracy study chose for HORKD in both its
few-label and its full-label classification search (docs/RESULTS.md): no embedding term (the
teacher's softened logits carry the class knowledge), distance 5, angle 10.

The other tables name other choices, so a change to one never moves another:

- :data:`~horkd.losses.defaults.HYBRID_WEIGHTS_WITHOUT_LOGITS`: the hybrid-order methods on a
  task whose logits mean nothing (retrieval, faces), where the embedding and the relations
  carry everything the teacher gives; the study's retrieval search chose RKD's published
  weights there.
- :data:`~horkd.losses.defaults.PUBLISHED_WEIGHTS`: the baselines as published: embedding
  regression at 1, RKD's distance 25 and angle 50 (Park et al., CVPR 2019). The relational
  terms here average over distinct pairs and triplets, RKD over every entry:
  :func:`~horkd.losses.distance_loss` and :func:`~horkd.losses.angle_loss` say what that does
  to these weights at small batches.

A contributor who changes a default changes it here, and tests/test_defaults.py checks that the
loss, the ``horkd`` method, the config and the shipped configs still agree. A stage's fingerprint
and a study record's key hold the values it trains with, so a changed default retrains every
stage, and re-records every study run, that leaves the key unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: The weights a method may leave null in ``distill.loss`` and take from its own table.
METHOD_WEIGHTS = ("embedding_weight", "distance_weight", "angle_weight")

#: The hybrid-order loss's defaults on a task with class logits (classification).
HYBRID_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {
        "embedding_weight": 0.0,  # alpha, embeddings
        "logit_weight": 1.0,  # alpha, softened logits (Hinton KD's term: KL x T^2)
        "temperature": 4.0,
        "distance_weight": 5.0,  # beta, second order
        "angle_weight": 10.0,  # gamma, third order
        "huber_delta": 1.0,  # both relational terms, as RKD's smooth L1
    }
)

#: The hybrid-order methods' weights with class logits, as
#: :data:`~horkd.losses.defaults.HYBRID_DEFAULTS` holds them.
HYBRID_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {key: HYBRID_DEFAULTS[key] for key in METHOD_WEIGHTS}
)

#: The hybrid-order methods' weights on a task without class logits (retrieval, faces).
HYBRID_WEIGHTS_WITHOUT_LOGITS: Mapping[str, float] = MappingProxyType(
    {"embedding_weight": 1.0, "distance_weight": 25.0, "angle_weight": 50.0}
)

#: The weights the baselines were published with (embedding regression 1; RKD distance 25,
#: angle 50).
PUBLISHED_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"embedding_weight": 1.0, "distance_weight": 25.0, "angle_weight": 50.0}
)

#: The weight of FitNet's hint (``distill.loss.hint_weight``) in mdistiller's single-stage FitNet
#: on CIFAR-100, the published recipe this project's ``fitnet`` follows (methods/fitnet.py).
PUBLISHED_HINT_WEIGHT = 100.0
