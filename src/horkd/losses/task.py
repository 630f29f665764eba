"""Task losses: what a network learns from labels, by task.

Classification uses cross-entropy on the logits; metric learning a triplet loss with semi-hard
mining or Proxy-Anchor on the embedding; face recognition an angular-margin head (ArcFace,
CosFace) on the embedding. Each takes ``(ModelOutput, targets)``; heads with weights (proxies,
class centres) are modules, so their parameters train with the network.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from horkd.models import ModelOutput
from horkd.registry import Registry

TASK_LOSSES: Registry = Registry("task loss")


def build_task_loss(name: str, num_classes: int, embed_dim: int, **kwargs: Any) -> nn.Module:
    return TASK_LOSSES.get(name)(num_classes=num_classes, embed_dim=embed_dim, **kwargs)


@TASK_LOSSES.register("cross_entropy")
class CrossEntropy(nn.Module):
    """Softmax cross-entropy on the logits (classification). YAML: ``task_loss: {name: cross_entropy}``."""

    def __init__(self, num_classes: int = 0, embed_dim: int = 0, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, out: ModelOutput, target: Tensor) -> Tensor:
        return F.cross_entropy(out.logits, target, label_smoothing=self.label_smoothing)


def _pairwise_distances(e: Tensor) -> Tensor:
    sq = (e * e).sum(1)
    return (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * e @ e.t()).clamp_min(1e-12).sqrt()


@TASK_LOSSES.register("triplet")
class SemiHardTriplet(nn.Module):
    """Triplet margin loss on L2-normalised embeddings, semi-hard negatives (FaceNet).

    For every anchor-positive pair, the negative is the closest one farther than the positive
    (semi-hard); where none exists, the farthest negative. YAML:
    ``task_loss: {name: triplet, margin: 0.2}``.
    """

    def __init__(self, num_classes: int = 0, embed_dim: int = 0, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, out: ModelOutput, target: Tensor) -> Tensor:
        e = F.normalize(out.embedding.float(), dim=1)
        d = _pairwise_distances(e)
        same = target.unsqueeze(0) == target.unsqueeze(1)
        eye = torch.eye(len(target), dtype=torch.bool, device=e.device)
        positive = same & ~eye  # [a, p]
        negative = ~same  # [a, n]
        if not bool(positive.any()) or not bool(negative.any()):
            return out.embedding.sum() * 0.0
        d_ap = d.unsqueeze(2)  # [a, p, 1]
        d_an = d.unsqueeze(1)  # [a, 1, n]
        semi = negative.unsqueeze(1) & (d_an > d_ap)  # [a, p, n]
        inf = torch.finfo(d.dtype).max
        semi_hard = torch.where(semi, d_an.expand_as(semi), torch.full_like(semi, inf, dtype=d.dtype))
        closest_semi = semi_hard.min(dim=2).values  # [a, p]
        farthest = torch.where(negative, d, torch.zeros_like(d)).max(dim=1).values  # [a]
        chosen = torch.where(
            closest_semi < inf, closest_semi, farthest.unsqueeze(1).expand_as(closest_semi)
        )
        losses = F.relu(d - chosen + self.margin)[positive]
        return losses.mean()


@TASK_LOSSES.register("proxy_anchor")
class ProxyAnchor(nn.Module):
    """Proxy-Anchor loss (Kim et al., CVPR 2020): one learned proxy per class, each proxy an
    anchor pulling its class's samples and pushing the rest. YAML:
    ``task_loss: {name: proxy_anchor, alpha: 32, delta: 0.1}``.
    """

    def __init__(self, num_classes: int, embed_dim: int, alpha: float = 32.0, delta: float = 0.1):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(num_classes, embed_dim) / math.sqrt(embed_dim))
        self.alpha, self.delta = alpha, delta

    def forward(self, out: ModelOutput, target: Tensor) -> Tensor:
        sim = F.normalize(out.embedding.float(), dim=1) @ F.normalize(self.proxies, dim=1).t()
        one_hot = F.one_hot(target, self.proxies.shape[0]).bool()  # [B, C]
        pos = torch.where(one_hot, torch.exp(-self.alpha * (sim - self.delta)), 0.0)
        neg = torch.where(~one_hot, torch.exp(self.alpha * (sim + self.delta)), 0.0)
        with_pos = one_hot.any(0)
        pos_term = torch.log1p(pos.sum(0))[with_pos].sum() / with_pos.sum().clamp_min(1)
        neg_term = torch.log1p(neg.sum(0)).sum() / self.proxies.shape[0]
        return pos_term + neg_term


class _MarginHead(nn.Module):
    """Normalised class centres W; logits s * cos(theta) with a margin on the target class."""

    def __init__(self, num_classes: int, embed_dim: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embed_dim) / math.sqrt(embed_dim))
        self.scale, self.margin = scale, margin

    def cosine(self, embedding: Tensor) -> Tensor:
        return F.normalize(embedding.float(), dim=1) @ F.normalize(self.weight, dim=1).t()

    def target_logit(self, cos: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, out: ModelOutput, target: Tensor) -> Tensor:
        cos = self.cosine(out.embedding)
        one_hot = F.one_hot(target, cos.shape[1]).bool()
        logits = torch.where(one_hot, self.target_logit(cos), cos) * self.scale
        return F.cross_entropy(logits, target)


@TASK_LOSSES.register("arcface")
class ArcFace(_MarginHead):
    """Additive angular margin (Deng et al., CVPR 2019): cos(theta + m) on the target class.
    YAML: ``task_loss: {name: arcface, scale: 32, margin: 0.5}``."""

    def __init__(self, num_classes: int, embed_dim: int, scale: float = 32.0, margin: float = 0.5):
        super().__init__(num_classes, embed_dim, scale, margin)

    def target_logit(self, cos: Tensor) -> Tensor:
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        # Past pi - m, cos(theta + m) stops decreasing; use the usual linear fallback there.
        fallback = cos - math.sin(math.pi - self.margin) * self.margin
        return torch.where(theta + self.margin < math.pi, torch.cos(theta + self.margin), fallback)


@TASK_LOSSES.register("cosface")
class CosFace(_MarginHead):
    """Additive cosine margin (Wang et al., CVPR 2018): cos(theta) - m on the target class.
    YAML: ``task_loss: {name: cosface, scale: 32, margin: 0.35}``."""

    def __init__(self, num_classes: int, embed_dim: int, scale: float = 32.0, margin: float = 0.35):
        super().__init__(num_classes, embed_dim, scale, margin)

    def target_logit(self, cos: Tensor) -> Tensor:
        return cos - self.margin
