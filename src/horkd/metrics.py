"""Retrieval and verification metrics of the field, computed in bounded memory.

Recall@K and rank-1 search the gallery a block of queries at a time (never an N x N matrix);
verification follows the LFW protocol (10-fold accuracy with the threshold picked on the other
nine folds) and reads TAR at a given FAR off scikit-learn's ROC curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def nearest_labels(
    queries: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    k: int,
    exclude_same_index: bool = False,
    block: int = 1024,
) -> Tensor:
    """Labels of the ``k`` nearest gallery items (cosine) for every query: ``[Q, k]``.

    With ``exclude_same_index`` the gallery item at the query's own index is skipped (the same
    image, e.g. its HR version when LR queries search an HR gallery of the same set).
    """
    q = F.normalize(queries.float(), dim=1)
    g = F.normalize(gallery.float(), dim=1)
    k = min(k, g.shape[0] - int(exclude_same_index))
    out = []
    for start in range(0, q.shape[0], block):
        sims = q[start : start + block] @ g.t()
        if exclude_same_index:
            rows = torch.arange(sims.shape[0], device=sims.device)
            sims[rows, rows + start] = -float("inf")
        out.append(gallery_labels[sims.topk(k, dim=1).indices])
    return torch.cat(out)


def recall_at_k(
    queries: Tensor,
    query_labels: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    ks: Sequence[int] = (1, 2, 4, 8),
    exclude_same_index: bool = False,
    block: int = 1024,
) -> dict[int, float]:
    """Percentage of queries with a same-label item among their K nearest gallery items."""
    neighbours = nearest_labels(
        queries, gallery, gallery_labels, max(ks), exclude_same_index, block
    )
    hits = neighbours == query_labels.view(-1, 1)
    return {k: 100.0 * float(hits[:, :k].any(dim=1).float().mean()) for k in ks}


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The score threshold (same pair when score >= it) with the best accuracy on these pairs,
    and that accuracy in [0, 1]; ties go to the lower threshold."""
    candidates = np.unique(scores)
    accuracy = [float(np.mean((scores >= t) == same)) for t in candidates]
    best = int(np.argmax(accuracy))
    return float(candidates[best]), accuracy[best]


def kfold_verification_accuracy(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray
) -> tuple[float, float]:
    """Mean and std (%) over folds; each fold's threshold maximises accuracy on the others."""
    accuracies = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        candidates = np.unique(scores[train])
        best = max(candidates, key=lambda t: np.mean((scores[train] >= t) == same[train]))
        accuracies.append(np.mean((scores[test] >= best) == same[test]))
    return 100.0 * float(np.mean(accuracies)), 100.0 * float(np.std(accuracies))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """True accept rate (%) at the largest threshold-achievable false accept rate <= ``far``."""
    from sklearn.metrics import roc_curve  # seconds to import: only where faces are verified

    fpr, tpr, _ = roc_curve(same.astype(int), scores)
    allowed = fpr <= far
    return 100.0 * float(tpr[allowed].max()) if allowed.any() else 0.0


def verification_metrics(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray, fars: Sequence[float] = (1e-2, 1e-3)
) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    acc, std = kfold_verification_accuracy(scores, same, folds)
    metrics = {"acc": acc, "acc_std": std, "auc": 100.0 * float(roc_auc_score(same, scores))}
    for far in fars:
        metrics[f"tar@far={far:g}"] = tar_at_far(scores, same, far)
    return metrics


def rank1_identification(
    probes: Tensor, probe_labels: Tensor, gallery: Tensor, gallery_labels: Tensor
) -> float:
    """Percentage of probes whose nearest gallery identity is their own."""
    nearest = nearest_labels(probes, gallery, gallery_labels, 1)[:, 0]
    return 100.0 * float((nearest == probe_labels).float().mean())
