"""The AdaptiveClick training loss: matching plus deep supervision over the decoder's outputs.

For each of the 10 decoder outputs (the final one and the 9 in ``aux_outputs``) the queries are matched to the
targets, then three terms are computed: the class cross-entropy over all queries (unmatched queries are class 0,
class weights ``criterion.empty_weight = [1, 0.1]``), the AFL and the Dice loss of the matched masks. Each term is
weighted (class 2, mask 5, dice 5) and the total is ``0.3 * sum(CE) + 0.3 * sum(Dice) + 0.4 * sum(AFL)``, as the
reference ``loss_inference``.

Targets: the instance mask ``[B, 1, H, W]`` is resized bilinearly to the mask-prediction size ``[h, w]`` (H/4) as
the reference trainer does. In ``"reference"`` mode the targets are then built exactly like the reference's
``SetCriterion._get_targets``: pixel classes are the integer part of the resized mask (so only pixels whose whole
neighbourhood is object count as object), and there is one target per distinct resized value above the smallest,
labelled with the integer part of that value. Besides the object (label 1) this yields background-mask targets
labelled 0 wherever the resize produced fractional values, which is how the released models were trained.
``"binary"`` mode uses one target per sample: the resized mask thresholded at 0.5, labelled 1 (none if empty).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .losses import class_cross_entropy, dice_loss, sigmoid_adaptive_focal_loss
from .matcher import MatchCosts, match_queries

TARGET_MODES = ("reference", "binary")


@dataclass(frozen=True)
class LossWeights:
    """Per-term weights (the reference config) and the final mix of the summed terms."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    mix_ce: float = 0.3
    mix_dice: float = 0.3
    mix_mask: float = 0.4


def resize_target(instances: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, 1, H, W]`` object masks to ``[B, h, w]`` (bilinear, ``align_corners=False``, as the reference)."""
    return F.interpolate(instances.float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def build_targets(masks: torch.Tensor, mode: str = "reference") -> list[dict]:
    """Per batch element ``{"labels": [T] int64, "masks": [T, h, w] float}`` from resized masks ``[B, h, w]``."""
    if mode not in TARGET_MODES:
        raise ValueError(f"unknown target mode {mode!r}; expected one of {', '.join(TARGET_MODES)}")
    targets = []
    for mask in masks:
        if mode == "binary":
            binary = (mask >= 0.5).float()
            has_object = bool(binary.any())
            labels = torch.ones(int(has_object), dtype=torch.int64, device=mask.device)
            targets.append({"labels": labels, "masks": binary[None] if has_object else binary[None][:0]})
            continue
        pixel_class = mask.long().clamp(0, 1)  # integer part of values in [0, 1]
        one_hot = torch.stack([pixel_class == 0, pixel_class == 1]).float()  # [2, h, w]
        labels = torch.unique(mask).long()[1:]
        targets.append({"labels": labels, "masks": one_hot[labels]})
    return targets


def average_num_masks(targets: list[dict], device: torch.device) -> float:
    """Number of target masks in the batch, averaged over processes, at least 1 (the loss normaliser)."""
    num = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        world = dist.get_world_size()
    return max(num.item() / world, 1.0)


class AdaptiveClickCriterion:
    """Computes the training loss from the network's ``predictions`` and the instance masks.

    Args:
        class_weights: ``[2]`` cross-entropy class weights (the network's ``criterion.empty_weight``).
        target_mode: ``"reference"`` or ``"binary"`` (see the module docstring).
    """

    def __init__(
        self,
        class_weights: torch.Tensor,
        costs: MatchCosts = MatchCosts(),
        weights: LossWeights = LossWeights(),
        target_mode: str = "reference",
    ) -> None:
        if target_mode not in TARGET_MODES:
            raise ValueError(f"unknown target mode {target_mode!r}; expected one of {', '.join(TARGET_MODES)}")
        self.class_weights = class_weights.detach().float()
        self.costs = costs
        self.weights = weights
        self.target_mode = target_mode

    def __call__(self, predictions: dict, instances: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            predictions: ``{"pred_logits": [B, Q, 2], "pred_masks": [B, Q, h, w], "aux_outputs": [...]}``.
            instances: ``[B, 1, H, W]`` object masks (1 object, 0 background) at network-input resolution.

        Returns:
            ``{"loss": total, "loss_ce": .., "loss_dice": .., "loss_mask": ..}``, each term already weighted and
            summed over the decoder outputs (``loss`` = 0.3 ce + 0.3 dice + 0.4 mask).
        """
        size = predictions["pred_masks"].shape[-2:]
        targets = build_targets(resize_target(instances, size), self.target_mode)
        num_masks = average_num_masks(targets, instances.device)
        outputs = [predictions] + list(predictions.get("aux_outputs", []))
        w = self.weights
        sums = {"loss_ce": 0.0, "loss_dice": 0.0, "loss_mask": 0.0}
        for output in outputs:
            indices = match_queries(output["pred_logits"], output["pred_masks"], targets, self.costs)
            ce, afl, dice = self.output_losses(output, targets, indices, num_masks)
            sums["loss_ce"] = sums["loss_ce"] + w.class_weight * ce
            sums["loss_mask"] = sums["loss_mask"] + w.mask_weight * afl
            sums["loss_dice"] = sums["loss_dice"] + w.dice_weight * dice
        total = w.mix_ce * sums["loss_ce"] + w.mix_dice * sums["loss_dice"] + w.mix_mask * sums["loss_mask"]
        return {"loss": total, **sums}

    def output_losses(self, output: dict, targets: list[dict], indices: list, num_masks: float):
        """Class CE, AFL and Dice of one decoder output given its matching."""
        class_logits = output["pred_logits"].float()
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)])
        query_idx = torch.cat([q for q, _ in indices])
        device = class_logits.device
        target_classes = torch.zeros(class_logits.shape[:2], dtype=torch.int64, device=device)
        matched_labels = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)])
        target_classes[batch_idx.to(device), query_idx.to(device)] = matched_labels.to(device)
        ce = class_cross_entropy(class_logits, target_classes, self.class_weights)

        pred_masks = output["pred_masks"][batch_idx.to(device), query_idx.to(device)].float().flatten(1)
        target_masks = torch.cat([t["masks"][j.to(t["masks"].device)] for t, (_, j) in zip(targets, indices)])
        target_masks = target_masks.to(pred_masks).flatten(1)
        afl = sigmoid_adaptive_focal_loss(pred_masks, target_masks, num_masks)
        dice = dice_loss(pred_masks, target_masks, num_masks)
        return ce, afl, dice
