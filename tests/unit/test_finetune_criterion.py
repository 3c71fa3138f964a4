"""finetune.criterion: targets, deep supervision and the 0.3/0.3/0.4 mix, pinned to the reference."""

from __future__ import annotations

import pytest
import torch

from adaptiveclick.finetune.criterion import AdaptiveClickCriterion, LossWeights, build_targets, resize_target
from adaptiveclick.finetune.losses import class_cross_entropy, dice_loss, sigmoid_adaptive_focal_loss


def golden_inputs():
    """10 decoder outputs for a batch of 2 with 16x16 masks, and 64x64 instance masks."""
    gen = torch.Generator().manual_seed(7)
    outputs = [
        {
            "pred_logits": torch.randn(2, 10, 2, generator=gen),
            "pred_masks": 3 * torch.randn(2, 10, 16, 16, generator=gen),
        }
        for _ in range(10)
    ]
    instances = torch.zeros(2, 1, 64, 64)
    instances[0, :, 10:41, 5:30] = 1
    instances[1, :, 30:62, 33:61] = 1
    return {**outputs[-1], "aux_outputs": outputs[:-1]}, instances


def test_total_matches_the_reference_implementation():
    """Values computed by lab206/AdaptiveClick's ``SetCriterion`` (HungarianMatcher with costs 2/5/5, eos 0.1,
    deep supervision over 10 outputs) and ``loss_inference`` on the same inputs, the target resized as its
    trainer does."""
    predictions, instances = golden_inputs()
    losses = AdaptiveClickCriterion(torch.tensor([1.0, 0.1]))(predictions, instances)
    assert losses["loss"].item() == pytest.approx(29.792953491210938, rel=1e-5)
    assert losses["loss_ce"].item() == pytest.approx(15.035454750061035, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(25.061744689941406, rel=1e-5)
    assert losses["loss_mask"].item() == pytest.approx(44.40948486328125, rel=1e-5)


def test_reference_targets_follow_the_resized_values():
    mask = torch.tensor([[[0.0, 0.25, 1.0], [0.5, 1.0, 1.0]]])
    (target,) = build_targets(mask, "reference")
    # distinct values 0, .25, .5, 1 -> labels of all but the smallest: 0, 0, 1
    assert target["labels"].tolist() == [0, 0, 1]
    object_mask = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert torch.equal(target["masks"][2], object_mask)
    assert torch.equal(target["masks"][0], 1 - object_mask)
    (exact,) = build_targets(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), "reference")
    assert exact["labels"].tolist() == [1]
    (empty,) = build_targets(torch.zeros(1, 2, 2), "reference")
    assert empty["labels"].numel() == 0 and empty["masks"].shape == (0, 2, 2)


def test_binary_targets_threshold_at_half():
    masks = torch.tensor([[[0.0, 0.5], [0.75, 0.25]], [[0.0, 0.0], [0.0, 0.25]]])
    first, second = build_targets(masks, "binary")
    assert first["labels"].tolist() == [1]
    assert first["masks"].tolist() == [[[0.0, 1.0], [1.0, 0.0]]]
    assert second["labels"].numel() == 0 and second["masks"].shape == (0, 2, 2)
    with pytest.raises(ValueError, match="target mode"):
        build_targets(masks, "soft")


def test_resize_target_averages_blocks():
    instances = torch.zeros(1, 1, 8, 8)
    instances[0, 0, :4, :4] = 1
    instances[0, 0, 4:6, 4:6] = 1
    assert resize_target(instances, (2, 2)).tolist() == [[[1.0, 0.0], [0.0, 0.25]]]


def test_total_is_the_weighted_mix_of_the_terms_of_a_single_output():
    """One output, binary targets: recompute the terms with finetune.losses and mix them by hand."""
    predictions, instances = golden_inputs()
    single = {"pred_logits": predictions["pred_logits"], "pred_masks": predictions["pred_masks"]}
    criterion = AdaptiveClickCriterion(torch.tensor([1.0, 0.1]), target_mode="binary")
    losses = criterion(single, instances)
    targets = build_targets(resize_target(instances, (16, 16)), "binary")
    from adaptiveclick.finetune.matcher import match_queries

    indices = match_queries(single["pred_logits"], single["pred_masks"], targets)
    classes = torch.zeros(2, 10, dtype=torch.int64)
    for b, (q, _) in enumerate(indices):
        classes[b, q] = 1
    ce = class_cross_entropy(single["pred_logits"], classes, torch.tensor([1.0, 0.1]))
    pred = torch.stack([single["pred_masks"][b, q[0]] for b, (q, _) in enumerate(indices)]).flatten(1)
    tgt = torch.stack([t["masks"][0] for t in targets]).flatten(1)
    afl, dice = sigmoid_adaptive_focal_loss(pred, tgt, 2.0), dice_loss(pred, tgt, 2.0)
    expected = 0.3 * 2 * ce + 0.3 * 5 * dice + 0.4 * 5 * afl
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    other = AdaptiveClickCriterion(
        torch.tensor([1.0, 0.1]), weights=LossWeights(mix_ce=1, mix_dice=0, mix_mask=0), target_mode="binary"
    )(single, instances)
    assert other["loss"].item() == pytest.approx(2 * ce.item(), rel=1e-6)


def test_every_decoder_output_is_supervised():
    predictions, instances = golden_inputs()
    leaves = [predictions["pred_masks"].requires_grad_()] + [
        aux["pred_logits"].requires_grad_() for aux in predictions["aux_outputs"]
    ]
    loss = AdaptiveClickCriterion(torch.tensor([1.0, 0.1]))(predictions, instances)["loss"]
    grads = torch.autograd.grad(loss, leaves)
    assert all(g.abs().sum() > 0 for g in grads)


def test_better_predictions_cost_less():
    _, instances = golden_inputs()
    target = resize_target(instances, (16, 16))
    good_masks = torch.full((2, 10, 16, 16), -8.0)
    good_masks[:, 0] = 16 * (target >= 0.5).float() - 8
    logits = torch.zeros(2, 10, 2)
    logits[:, :, 0] = 4.0
    logits[:, 0] = torch.tensor([-4.0, 4.0])
    criterion = AdaptiveClickCriterion(torch.tensor([1.0, 0.1]), target_mode="binary")
    good = criterion({"pred_logits": logits, "pred_masks": good_masks}, instances)["loss"]
    bad = criterion({"pred_logits": -logits, "pred_masks": -good_masks}, instances)["loss"]
    assert good < 0.5 * bad


def test_empty_targets_give_a_finite_loss():
    predictions, _ = golden_inputs()
    leaf = predictions["pred_logits"].requires_grad_()
    loss = AdaptiveClickCriterion(torch.tensor([1.0, 0.1]))(predictions, torch.zeros(2, 1, 64, 64))["loss"]
    (grad,) = torch.autograd.grad(loss, leaf)
    assert torch.isfinite(loss) and grad.abs().sum() > 0
