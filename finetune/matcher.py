"""Hungarian matching of the decoder's queries to the target masks (Mask2Former's ``HungarianMatcher``).

The cost of assigning query q to target t is ``2 * class + 5 * mask + 5 * dice`` where the class cost is
``-softmax(class logits)[q, label_t]``, the dice cost is the Dice loss of the pair, and the mask cost is the
reference's *batched* AFL: an approximation of the AFL of the pair built from pair-wise sums (mean ``p_t`` of the
pair instead of per-pixel ``p_t``), which is what the released models were trained with. The costs are computed
without gradient in float32 and solved with ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every (query, target) pair: logits ``[Q, P]``, targets ``[T, P]`` -> ``[Q, T]``."""
    prob = inputs.sigmoid()
    numerator = 2 * prob @ targets.T
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def batch_focal_cost(
    inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2
) -> torch.Tensor:
    """Focal loss of every (query, target) pair, mean over pixels: ``[Q, P]``, ``[T, P]`` -> ``[Q, T]``."""
    prob = inputs.sigmoid()
    pos = (1 - prob) ** gamma * F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = prob**gamma * F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    if alpha >= 0:
        pos, neg = pos * alpha, neg * (1 - alpha)
    return (pos @ targets.T + neg @ (1 - targets).T) / inputs.shape[1]


def batch_adaptive_focal_cost(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    epsilon: float = 0.5,
    gamma: float = 2,
    delta: float = 0.4,
    alpha: float = 1.0,
    eps: float = 1e-12,
) -> torch.Tensor:
    """The reference matcher's AFL cost of every (query, target) pair: ``[Q, P]``, ``[T, P]`` -> ``[Q, T]``.

    Per pair: ``p_t`` is the pair's mean pixel ``p_t``; the exponent is ``gamma + 1 - (sum of the query's
    probabilities over the target's foreground) / (foreground size)``; the rescaling normalises the modulation
    over the targets of each query; the additive term is ``epsilon * alpha * ((1 - p_t)^gamma_a + 1)``. These
    are the reference formulas (they differ from the loss's per-pixel ones) kept so that matching, and hence
    training, behaves like the reference's.
    """
    if targets.shape[0] == 0:
        return batch_focal_cost(inputs, targets)
    pixels = inputs.shape[1]
    prob = inputs.sigmoid()
    p_t = (prob @ targets.T + (1 - prob) @ (1 - targets).T) / pixels  # [Q, T]
    foreground_sum = prob @ targets.T  # [Q, T]
    foreground_count = (targets > 0.5).sum(-1, keepdim=True).T  # [1, T]
    gamma_a = gamma + (1 - foreground_sum / (foreground_count + eps))
    modulation = (1 - p_t) ** gamma_a
    rescale = p_t.shape[-1] / ((1 + delta * gamma_a) * modulation.sum(-1, keepdim=True) + eps)
    pos = epsilon * F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = (1 - epsilon) * F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    bce = pos @ targets.T + neg @ (1 - targets).T
    return rescale * modulation * bce / pixels + epsilon * alpha * (modulation + 1)


@dataclass(frozen=True)
class MatchCosts:
    """Weights of the matching cost terms (the reference config: class 2, mask 5, dice 5)."""

    cost_class: float = 2.0
    cost_mask: float = 5.0
    cost_dice: float = 5.0


@torch.no_grad()
def match_queries(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, targets: list[dict], costs: MatchCosts = MatchCosts()
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Optimal one-to-one assignment of queries to targets, per batch element.

    Args:
        class_logits: ``[B, Q, 2]``.
        mask_logits: ``[B, Q, h, w]``.
        targets: per batch element ``{"labels": [T] int64, "masks": [T, h, w] float}``.

    Returns:
        Per batch element ``(query_indices [K], target_indices [K])`` int64 CPU tensors, ``K = min(Q, T)``,
        ordered by query index.
    """
    indices = []
    for b, target in enumerate(targets):
        labels, masks = target["labels"], target["masks"]
        if labels.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            indices.append((empty, empty))
            continue
        probs = class_logits[b].float().softmax(-1)  # [Q, 2]
        cost_class = -probs[:, labels.to(probs.device)]  # [Q, T]
        out = mask_logits[b].float().flatten(1)
        tgt = masks.to(out).flatten(1)
        with torch.autocast(device_type=out.device.type, enabled=False):
            cost_mask = batch_adaptive_focal_cost(out, tgt)
            cost_dice = batch_dice_cost(out, tgt)
        total = costs.cost_mask * cost_mask + costs.cost_class * cost_class + costs.cost_dice * cost_dice
        if not torch.isfinite(total).all():
            raise FloatingPointError("non-finite matching cost: the network produced NaN/inf mask or class logits")
        rows, cols = linear_sum_assignment(total.cpu().numpy())
        indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return indices
