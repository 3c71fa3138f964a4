"""Per-mask losses of AdaptiveClick: the Adaptive Focal Loss (AFL), Dice, BCE and the 2-way class cross-entropy.

Mask losses take flattened logits ``[N, P]`` (N matched query masks, P pixels) and binary targets of the same
shape, and return ``sum over masks of the per-mask loss / num_masks`` as the Mask2Former criterion does, so that
the normalisation by the number of target masks happens in one place (the caller passes ``num_masks``).

AFL (paper Sec. III-D, ``sigmoid_adaptive_focal_loss`` in the seed README): focal loss whose exponent adapts to
how well the mask's foreground is already predicted, ``gamma_a = gamma + (1 - mean p_t over foreground pixels)``
(adaptive difficulty adjustment), rescaled per mask so that the modulated weights sum to the pixel count divided
by ``1 + delta * gamma_a`` (adaptive gradient representation), plus a poly term ``alpha * (1 - p_t)^(gamma_a + 1)``,
all balanced by ``epsilon_t``. ``gamma_a`` and the rescaling factor are statistics of the prediction, computed
without gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_adaptive_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    num_masks: float,
    epsilon: float = 0.5,
    gamma: float = 2,
    delta: float = 0.4,
    alpha: float = 1.0,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Adaptive Focal Loss.

    Args:
        inputs: ``[N, P]`` mask logits.
        targets: ``[N, P]`` binary targets (1 object, 0 background).
        num_masks: normaliser (number of target masks in the batch, averaged over processes).
        epsilon: class balance: foreground pixels weigh ``epsilon``, background ``1 - epsilon``; < 0 disables it.
        gamma: base focusing exponent; the exponent used is ``gamma + 1 - mean foreground p_t`` per mask.
        delta: how much the per-mask rescaling shrinks with the exponent (``1 + delta * gamma_a``).
        alpha: weight of the poly term ``(1 - p_t)^(gamma_a + 1)``.
        eps: keeps the divisions finite for masks without foreground.

    Returns:
        Scalar: ``sum_n mean_p loss[n, p] / num_masks``.
    """
    prob = inputs.sigmoid()
    bce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    with torch.no_grad():
        foreground = targets > 0.5
        foreground_p_t = torch.where(foreground, p_t, torch.zeros_like(p_t)).sum(-1, keepdim=True)
        foreground_count = foreground.sum(-1, keepdim=True)
        gamma_a = gamma + (1 - foreground_p_t / (foreground_count + eps))  # [N, 1]
    modulation = (1 - p_t) ** gamma_a
    with torch.no_grad():
        pixels = p_t.shape[-1]
        rescale = pixels / ((1 + delta * gamma_a) * modulation.sum(-1, keepdim=True) + eps)  # [N, 1]
    loss = rescale * bce * modulation + alpha * (1 - p_t) ** (gamma_a + 1)
    if epsilon >= 0:
        loss = (epsilon * targets + (1 - epsilon) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """``1 - (2|X∩Y| + 1) / (|X| + |Y| + 1)`` on sigmoid probabilities, summed over ``[N, P]`` masks / num_masks."""
    prob = inputs.sigmoid().flatten(1)
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_bce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy, mean over pixels, summed over ``[N, P]`` masks / num_masks."""
    return F.binary_cross_entropy_with_logits(inputs, targets, reduction="none").mean(1).sum() / num_masks


def sigmoid_focal_loss(
    inputs: torch.Tensor, targets: torch.Tensor, num_masks: float, alpha: float = 0.25, gamma: float = 2
) -> torch.Tensor:
    """RetinaNet focal loss ``alpha_t (1 - p_t)^gamma BCE``, mean over pixels, summed over masks / num_masks."""
    prob = inputs.sigmoid()
    bce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def class_cross_entropy(
    class_logits: torch.Tensor, target_classes: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """Weighted cross-entropy over queries.

    Args:
        class_logits: ``[B, Q, 2]``.
        target_classes: ``[B, Q]`` int64 class per query (unmatched queries carry class 0).
        class_weights: ``[2]``, the network's ``criterion.empty_weight`` (``[1, 0.1]``).

    Returns:
        Scalar: ``sum w_c * nll / sum w_c`` over all queries (PyTorch's weighted mean).
    """
    return F.cross_entropy(
        class_logits.float().transpose(1, 2), target_classes, class_weights.to(class_logits.device, torch.float32)
    )
