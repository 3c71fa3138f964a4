"""finetune.matcher: the pair-wise costs follow their formulas and the assignment is optimal."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from adaptiveclick.finetune.matcher import (
    MatchCosts,
    batch_adaptive_focal_cost,
    batch_dice_cost,
    batch_focal_cost,
    match_queries,
)


def pairs(seed: int, queries: int = 6, targets: int = 3, pixels: int = 200):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(queries, pixels, generator=gen, dtype=torch.float64)
    masks = (torch.rand(targets, pixels, generator=gen, dtype=torch.float64) < 0.4).double()
    return logits, masks


def reference_afl_cost_of_pair(x, t, epsilon=0.5, gamma=2.0, delta=0.4, alpha=1.0, eps=1e-12):
    """The matcher's AFL cost of one query against all targets, in numpy, term by term."""
    p = 1 / (1 + np.exp(-x))
    pixels = len(x)
    costs = []
    p_t = np.array([(p * tj + (1 - p) * (1 - tj)).sum() / pixels for tj in t])
    g = np.array([gamma + 1 - (p * tj).sum() / ((tj > 0.5).sum() + eps) for tj in t])
    beta = (1 - p_t) ** g
    m = len(t) / ((1 + delta * g) * beta.sum() + eps)
    for j, tj in enumerate(t):
        bce = -(epsilon * tj * np.log(p) + (1 - epsilon) * (1 - tj) * np.log(1 - p)).sum()
        costs.append(m[j] * beta[j] * bce / pixels + epsilon * alpha * (beta[j] + 1))
    return np.array(costs)


def test_adaptive_focal_cost_matches_its_pairwise_formula():
    logits, masks = pairs(0)
    cost = batch_adaptive_focal_cost(logits, masks).numpy()
    expected = np.stack([reference_afl_cost_of_pair(row, masks.numpy()) for row in logits.numpy()])
    np.testing.assert_allclose(cost, expected, rtol=1e-10)


def test_dice_and_focal_costs_equal_the_per_pair_losses():
    logits, masks = pairs(1)
    prob = logits.sigmoid()
    for q in range(logits.shape[0]):
        for t in range(masks.shape[0]):
            inter = (prob[q] * masks[t]).sum()
            dice = 1 - (2 * inter + 1) / (prob[q].sum() + masks[t].sum() + 1)
            assert batch_dice_cost(logits, masks)[q, t].item() == pytest.approx(dice.item(), rel=1e-10)
            p_t = prob[q] * masks[t] + (1 - prob[q]) * (1 - masks[t])
            a_t = 0.25 * masks[t] + 0.75 * (1 - masks[t])
            focal = (-a_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
            assert batch_focal_cost(logits, masks)[q, t].item() == pytest.approx(focal.item(), rel=1e-8)


def test_assignment_is_optimal_against_brute_force():
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        class_logits = torch.randn(1, 5, 2, generator=gen)
        mask_logits = 2 * torch.randn(1, 5, 8, 8, generator=gen)
        masks = (torch.rand(3, 8, 8, generator=gen) > 0.5).float()
        labels = torch.tensor([1, 0, 1])
        ((rows, cols),) = match_queries(class_logits, mask_logits, [{"labels": labels, "masks": masks}])
        probs = class_logits[0].softmax(-1)
        flat, tgt = mask_logits[0].flatten(1), masks.flatten(1)
        cost = 5 * batch_adaptive_focal_cost(flat, tgt) - 2 * probs[:, labels] + 5 * batch_dice_cost(flat, tgt)
        best = min(itertools.permutations(range(5), 3), key=lambda qs: sum(cost[q, t] for t, q in enumerate(qs)))
        found = {int(c): int(r) for r, c in zip(rows, cols)}
        assert tuple(found[t] for t in range(3)) == best
        assert rows.tolist() == sorted(rows.tolist())


def test_the_query_predicting_the_target_is_matched():
    masks = torch.zeros(1, 16, 16)
    masks[0, 4:12, 3:9] = 1
    mask_logits = -6 * torch.ones(2, 4, 16, 16)
    mask_logits[0, 2] = 12 * masks[0] - 6
    mask_logits[1, 0] = 12 * masks[0] - 6
    class_logits = torch.zeros(2, 4, 2)
    targets = [{"labels": torch.tensor([1]), "masks": masks}] * 2
    result = match_queries(class_logits, mask_logits, targets)
    assert [(r.tolist(), c.tolist()) for r, c in result] == [([2], [0]), ([0], [0])]


def test_no_targets_and_non_finite_costs():
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 4, 4)}
    ((rows, cols),) = match_queries(torch.zeros(1, 3, 2), torch.zeros(1, 3, 4, 4), [empty])
    assert rows.numel() == 0 and cols.numel() == 0
    broken = torch.zeros(1, 3, 4, 4)
    broken[0, 1, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        match_queries(torch.zeros(1, 3, 2), broken, [{"labels": torch.tensor([1]), "masks": torch.ones(1, 4, 4)}])


def test_cost_weights_change_the_assignment():
    masks = torch.zeros(1, 8, 8)
    masks[0, :4] = 1
    mask_logits = torch.stack([12 * masks[0] - 6, -12 * masks[0] + 6])[None]  # query 0 fits the mask
    class_logits = torch.tensor([[[5.0, -5.0], [-5.0, 5.0]]])  # query 1 is confident foreground
    target = [{"labels": torch.tensor([1]), "masks": masks}]
    ((rows, _),) = match_queries(class_logits, mask_logits, target)
    assert rows.tolist() == [0]
    ((rows, _),) = match_queries(class_logits, mask_logits, target, MatchCosts(cost_class=100.0))
    assert rows.tolist() == [1]
