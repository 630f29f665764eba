"""The hybrid-order loss: first, second and third order, each weighted and switchable.

L_distill = alpha * L1 + beta * L2 + gamma * L3, with alpha split between embeddings
(``embedding_weight``) and softened logits (``logit_weight``), beta = ``distance_weight``,
gamma = ``angle_weight``. The task loss is added by the method. The defaults are one table,
:data:`~horkd.losses.defaults.HYBRID_DEFAULTS`, which the config and the methods read too. YAML,
with those defaults written out::

    distill:
      loss: {embedding_weight: 0, logit_weight: 1, temperature: 4,
             distance_weight: 5, angle_weight: 10, orders: [1, 2, 3], relations: global}
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import Literal

import torch
from torch import Tensor, nn

from horkd import distributed
from horkd.losses.bank import RelationBank
from horkd.losses.defaults import HYBRID_DEFAULTS
from horkd.losses.first_order import EmbeddingRegression, HintonKD
from horkd.losses.numerics import relation_grams
from horkd.losses.second_order import DistanceLoss, bank_distance_loss
from horkd.losses.third_order import AngleLoss

ORDERS = (1, 2, 3)
# The distillation terms and the order each belongs to: what a method may ask the loss for.
TERM_ORDER = MappingProxyType({"embedding": 1, "logits": 1, "distance": 2, "angle": 3})


class HybridOrderLoss(nn.Module):
    """Returns a dict of weighted terms; a term is absent when switched off or weighted 0.

    The terms are :class:`~horkd.losses.first_order.EmbeddingRegression` and
    :class:`~horkd.losses.first_order.HintonKD` (first order),
    :class:`~horkd.losses.second_order.DistanceLoss` (second) and
    :class:`~horkd.losses.third_order.AngleLoss` (third). Both relational terms start from one
    pair of Gram matrices per call (:func:`~horkd.losses.numerics.relation_grams`), so asking
    for both costs little more than asking for one.

    Every argument left out takes :data:`~horkd.losses.defaults.HYBRID_DEFAULTS`, the table the
    hybrid-order methods and ``distill.loss`` read: ``HybridOrderLoss(s_dim, t_dim)`` weighs
    the terms as ``horkd run`` weighs HORKD's (softened logits 1 at temperature 4, distance 5,
    angle 10, no embedding term). On a task without class logits (retrieval, faces) HORKD takes
    :data:`~horkd.losses.defaults.HYBRID_WEIGHTS_WITHOUT_LOGITS` instead: pass them as keywords.

    The relational terms average over distinct pairs and triplets, not over every entry as RKD's
    reference code does, so at a batch of N a weight here counts N/(N-1) (distance) and
    N^2/((N-1)(N-2)) (angle) times RKD's: see :func:`~horkd.losses.distance_loss`
    and :func:`~horkd.losses.angle_loss`.

    While training, :meth:`~horkd.losses.HybridOrderLoss.forward` adds the batch to the bank
    (``bank_size`` > 0) once the batch's own distance term is computed, and only what a step
    may keep: nothing of a batch whose distance term is not finite, and of any batch only the
    rows whose student and reference embeddings are both finite. A diverged batch (a NaN or an
    overflow in its embeddings) leaves the bank as it was, and the batches after it are scored
    as if it had never come; a loop of one's own that skips non-finite steps, as the trainer
    does, needs no extra call. A step skipped for a term the bank does not see (the task loss,
    the logits) still banks its finite embeddings, which are real samples'. The bank decides on
    the device: filling it never waits for the host.

    Args:
        student_dim: Width of the student's embedding.
        teacher_dim: Width of the reference's (teacher's or assistant's) embedding.
        embedding_weight: Weight of the embedding regression (alpha's embedding part).
        logit_weight: Weight of the softened-logit KL (alpha's logit part); needs both sides'
            logits at call time.
        temperature: Softmax temperature of the logit term (> 0, even when it is weighted 0).
        distance_weight: Weight of the pairwise-distance term (beta).
        angle_weight: Weight of the triplet-angle term (gamma).
        huber_delta: Where the Huber penalty of both relational terms turns from quadratic to
            linear, in units of the normalised distance or of the cosine.
        orders: Which orders are on; a term of an order left out is never computed, whatever
            its weight.
        projector: Whether the embedding term learns a linear map from the student's width to
            the teacher's; ``None``: only when the widths differ.
        angle_chunk_size: Anchors per chunk of the angle term, which bounds its memory
            (``None``: :func:`~horkd.losses.third_order.default_chunk`).
        angle_anchors: Estimate the angle term from this many random anchors instead of all N
            (``None``: exact).
        relations: ``"global"``: under torchrun the relational terms span the batch of every
            process, so the method does not change with the process count; ``"local"``: each
            process's own batch.
        bank_size: While training, the distance term also spans the last ``bank_size``
            finite samples of earlier steps ("look more"); 0 turns the bank off.

    Raises:
        ValueError: ``relations`` is not ``"global"`` or ``"local"``; a weight is negative;
            ``orders`` holds something other than 1, 2 or 3; ``temperature`` is not positive;
            ``angle_anchors`` is below 1; or ``projector=False`` with different widths.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        *,
        embedding_weight: float = HYBRID_DEFAULTS["embedding_weight"],
        logit_weight: float = HYBRID_DEFAULTS["logit_weight"],
        temperature: float = HYBRID_DEFAULTS["temperature"],
        distance_weight: float = HYBRID_DEFAULTS["distance_weight"],
        angle_weight: float = HYBRID_DEFAULTS["angle_weight"],
        huber_delta: float = HYBRID_DEFAULTS["huber_delta"],
        orders: Iterable[int] = ORDERS,
        projector: bool | None = None,
        angle_chunk_size: int | None = None,
        angle_anchors: int | None = None,
        relations: Literal["global", "local"] = "global",
        bank_size: int = 0,
    ) -> None:
        super().__init__()
        if relations not in ("global", "local"):
            raise ValueError(f"relations must be 'global' or 'local', got {relations!r}")
        self.relations = relations
        weights = {
            "embedding_weight": embedding_weight,
            "logit_weight": logit_weight,
            "distance_weight": distance_weight,
            "angle_weight": angle_weight,
        }
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        orders = tuple(orders)
        bad = [o for o in orders if o not in ORDERS]
        if bad:
            raise ValueError(f"orders must be drawn from {list(ORDERS)}, got {bad}")
        on = set(orders)
        self.embedding_weight = embedding_weight if 1 in on else 0.0
        self.logit_weight = logit_weight if 1 in on else 0.0
        self.distance_weight = distance_weight if 2 in on else 0.0
        self.angle_weight = angle_weight if 3 in on else 0.0
        self.embedding = (
            EmbeddingRegression(student_dim, teacher_dim, projector)
            if self.embedding_weight > 0
            else None
        )
        self.kd = HintonKD(temperature)
        self.distance = DistanceLoss(huber_delta)
        self.angle = AngleLoss(huber_delta, angle_chunk_size, angle_anchors)
        self.huber_delta = huber_delta
        # "look more": the second order also spans the last bank_size samples of earlier steps
        self.bank = (
            RelationBank(bank_size, student_dim, teacher_dim)
            if bank_size > 0 and self.distance_weight > 0
            else None
        )

    def forward(
        self,
        student_embedding: Tensor,
        student_logits: Tensor | None,
        teacher_embedding: Tensor,
        teacher_logits: Tensor | None,
    ) -> dict[str, Tensor]:
        """The weighted distillation terms of one batch.

        Args:
            student_embedding: The student's embeddings ``[N, student_dim]``.
            student_logits: The student's logits ``[N, K]``, or ``None`` (no logit term).
            teacher_embedding: The reference's embeddings ``[N, teacher_dim]`` of the same
                images, row for row.
            teacher_logits: The reference's logits ``[N, K]``, or ``None`` (no logit term).

        Returns:
            Scalar terms, already weighted, keyed ``order1_embedding``, ``order1_logits``,
            ``order2_distance`` and ``order3_angle``; a term switched off or weighted 0 is
            absent, so the dict may be empty. The distance term is 0 (still in the graph) when
            there is no pair (N < 2 and an empty bank), the angle term when N < 3.
        """
        terms: dict[str, Tensor] = {}
        if self.embedding is not None:
            terms["order1_embedding"] = self.embedding_weight * self.embedding(
                student_embedding, teacher_embedding
            )
        if self.logit_weight > 0 and student_logits is not None and teacher_logits is not None:
            terms["order1_logits"] = self.logit_weight * self.kd(student_logits, teacher_logits)
        if self.distance_weight > 0 or self.angle_weight > 0:
            terms.update(self._relations(student_embedding, teacher_embedding))
        return terms

    def _relations(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        """Second and third order; with ``relations="global"`` under torchrun, over the global
        batch, so the method does not change with the number of processes."""
        if self.relations == "global" and distributed.active():
            return self._sharded_relations(student, teacher)
        terms: dict[str, Tensor] = {}
        gram_s, gram_t = relation_grams(student, teacher)  # one per side for both terms
        if self.distance_weight > 0 and self.bank is not None and self.training:
            terms["order2_distance"] = self.distance_weight * self._bank_distance(student, teacher)
        elif self.distance_weight > 0:
            distance = self.distance.from_gram(gram_s, gram_t)
            terms["order2_distance"] = self.distance_weight * distance
        if self.angle_weight > 0:
            angle = self.angle.from_gram(gram_s, gram_t)
            terms["order3_angle"] = self.angle_weight * angle
        return terms

    def _bank_distance(self, student: Tensor, teacher: Tensor) -> Tensor:
        bank_s, bank_t, filled = self.bank.buffers_and_filled()
        distance = bank_distance_loss(student, teacher, bank_s, bank_t, self.huber_delta, filled)
        # a non-finite term means a diverged batch: it stays out of the bank
        self.bank.push(student, teacher, accept=torch.isfinite(distance))
        return distance

    def share_of_relations(self, gram_s: Tensor, gram_t: Tensor,
                           distance: bool = True) -> dict[str, Tensor]:
        """This process's share of the relational terms (unweighted): the distance rows and the
        angle anchors :func:`~horkd.distributed.my_share` gives it, from the Gram matrices of
        the whole (gathered) batch; the shares of all processes sum to the terms. One process:
        the whole terms. ``distance=False`` leaves the distance term out (the bank's is made
        apart)."""
        n = gram_s.shape[0]
        share: dict[str, Tensor] = {}
        if distance and self.distance_weight > 0:
            share["order2_distance"] = self.distance.from_gram(gram_s, gram_t,
                                                               distributed.my_share(n))
        if self.angle_weight > 0:
            anchors = distributed.my_share(self.angle.anchor_count(n))
            share["order3_angle"] = self.angle.from_gram(gram_s, gram_t, anchors)
        return share

    def _sharded_relations(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        """The global batch's relations, each process computing its share of the anchor rows:
        the embeddings are gathered (backward sums the processes' gradients of each sample),
        every process makes the global Gram matrices (N^2 d, and the normalisers, the mean
        distance above all, are global quantities read from them), computes the distance
        rows and the angle anchors of its share, and one all-reduce adds the shares. A rank's
        cost of the N^3 angle term falls as 1 / processes."""
        student = distributed.gather_summing_grad(student)
        teacher = distributed.gather_summing_grad(teacher)
        gram_s, gram_t = relation_grams(student, teacher)
        banked = self.distance_weight > 0 and self.bank is not None and self.training
        share = self.share_of_relations(gram_s, gram_t, distance=not banked)
        if banked:
            # the bank's term is computed whole by every process (the bank is the same on
            # all): each takes 1 / processes of it, so the sum is the term once
            share = {"order2_distance": self._bank_distance(student, teacher)
                     / distributed.world_size(), **share}
        names, parts = list(share), list(share.values())
        if not parts:
            return {}
        weights = {"order2_distance": self.distance_weight, "order3_angle": self.angle_weight}
        totals = distributed.sharded_relation_loss(torch.stack(parts))
        return {name: weights[name] * totals[i] for i, name in enumerate(names)}
