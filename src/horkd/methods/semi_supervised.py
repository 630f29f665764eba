"""A teacher-free semi-supervised student: what the unlabelled images are worth without a teacher.

In a few-label run (``data.label_fraction``) the distilled students see every training image
(the batch) and take the task loss on a labelled batch drawn beside it, while ``scratch`` sees
the labelled images alone. So "the teacher's knowledge" measured as distilled student minus
scratch mixes two things: the teacher, and using the unlabelled images at all. This student
uses exactly the unlabelled images the distilled students see, with the same budget (the
student's network, epochs, batches and labelled batches), and no teacher; a distilled student
above it owes the difference to the teacher.

It learns by **pseudo-labelling with a confidence threshold** (Lee, "Pseudo-Label: The Simple
and Efficient Semi-Supervised Learning Method for Deep Neural Networks", ICML 2013 workshop;
the threshold is FixMatch's rule, Sohn et al., "FixMatch: Simplifying Consistency and
Confidence in Semi-Supervised Learning", NeurIPS 2020). For each unlabelled image the
student's own prediction on its LR view, detached, becomes its target where the prediction's
largest softmax probability reaches ``threshold``::

    p_i = softmax(z_i).detach(),  y_i = argmax p_i,  m_i = [max p_i >= threshold]
    L = L_task(labelled batch) + weight * (1/N) sum_i m_i * CE(z_i, y_i)

averaged over the whole unlabelled batch (masked rows count as zero), as FixMatch averages its
unlabelled term. Defaults are FixMatch's: threshold 0.95, weight (its lambda_u) 1. FixMatch
trains for a million steps; on a short run few predictions reach 0.95 (digits at 4 px, 3% of the
labels, 5 epochs: the term stays below 0.0005 an epoch and the student scores as with weight 0,
while at 0.5 it scores 2.5 to 12.5 points above scratch over seeds 0-2), so a study searches the
threshold (``distill.pseudo_label.threshold``).

Why not FixMatch itself: FixMatch takes the pseudo-label from a weakly augmented view and
trains on a strongly augmented one (RandAugment, Cutout) of the same image. The batches here
are the run's: one augmentation of the HR images and its LR degradation, shared by every
method, with fixed cached views where ``data.augment.views`` is set; there is no strong view
to pair, and adding one would give this baseline an augmentation no distilled student gets.
Pseudo-labelling on the same view needs nothing the other students lack: the same unlabelled
images, the same augmentation, the same budget; what differs is only the source of the targets
for the unlabelled images (the student itself, not a teacher). It is FixMatch with the strong
augmentation taken out, which is Lee's pseudo-label with FixMatch's confidence mask.

The pseudo-labels come from the same training forward as the loss (one pass over unlabelled
and labelled images together, as the distilled students make it), so a step costs what
scratch's costs on both batches. The step never waits for the host: the mask stays a tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from horkd.methods.base import Batch, Method, forward_both, task_loss
from horkd.models import ModelOutput

#: FixMatch's confidence threshold (Sohn et al. 2020, tau = 0.95).
PSEUDO_THRESHOLD = 0.95
#: FixMatch's weight of the unlabelled term (lambda_u = 1).
PSEUDO_WEIGHT = 1.0

NEEDS_UNLABELLED = (
    "semi_supervised learns from the training images whose labels the task loss does not see: "
    "it needs a few-label run (set data.label_fraction)"
)


def pseudo_label_loss(logits: Tensor, threshold: float) -> Tensor:
    """The unlabelled term: cross-entropy on the confident rows' own predicted classes.

    Args:
        logits: The student's logits on the unlabelled images ``[N, K]``.
        threshold: The smallest largest-softmax-probability a row needs to take part.

    Returns:
        ``(1/N) sum_i m_i CE(z_i, argmax z_i)``, a scalar; no gradient flows through the
        pseudo-labels or the mask, only through the logits the loss is taken on. 0 (in the
        graph) for an empty batch.
    """
    return masked_pseudo_label_loss(logits, *confident_predictions(logits, threshold))


def masked_pseudo_label_loss(logits: Tensor, pseudo: Tensor, mask: Tensor) -> Tensor:
    """:func:`pseudo_label_loss` given its pseudo-labels and mask (computed once a step)."""
    rows = F.cross_entropy(logits.float(), pseudo, reduction="none")
    return (rows * mask).sum() / max(logits.shape[0], 1)


@torch.no_grad()
def confident_predictions(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Each row's predicted class, and 1.0 where its largest softmax probability reaches
    ``threshold`` (0.0 elsewhere): the pseudo-labels and the mask of the unlabelled term."""
    confidence, pseudo = torch.softmax(logits.float(), dim=1).max(dim=1)
    return pseudo, (confidence >= threshold).float()


class PseudoLabelMethod(Method):
    """Task loss on the labelled batch + ``weight`` x the pseudo-label term on the batch.

    Args:
        student: The network it trains (on LR).
        criterion: The task loss, on the labelled batch.
        threshold: The confidence a prediction needs to become a target, in (0, 1].
        weight: The weight of the pseudo-label term (0: the student learns from the labelled
            batches alone, as ``scratch``, but with one batch-norm pass over both batches).
        task_weight: The weight of the task loss.
    """

    def __init__(
        self,
        student: nn.Module,
        criterion: nn.Module,
        *,
        threshold: float = PSEUDO_THRESHOLD,
        weight: float = PSEUDO_WEIGHT,
        task_weight: float = 1.0,
    ) -> None:
        super().__init__(student, criterion, None, task_weight=task_weight)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.threshold = threshold
        self.weight = weight
        self._passed: Tensor | None = None

    def forward(self, batch: Batch) -> tuple[ModelOutput, dict[str, Tensor]]:
        if batch.labeled is None:
            raise ValueError(NEEDS_UNLABELLED)
        out, labeled_out = forward_both(self.student, batch, self.student_view)
        terms = {"task": self.task_weight * task_loss(self.criterion, out, labeled_out, batch)}
        pseudo, mask = confident_predictions(out.logits, self.threshold)
        if self.weight > 0:
            terms["pseudo_label"] = self.weight * masked_pseudo_label_loss(out.logits, pseudo, mask)
        self._passed = mask.mean()
        return out, terms

    def observed(self) -> dict[str, Tensor]:
        """The share of the step's images whose prediction passed the threshold: how much of
        the unlabelled data the term learnt from (FixMatch reports it as the mask rate)."""
        return {} if self._passed is None else {"pseudo_label_share": self._passed}
