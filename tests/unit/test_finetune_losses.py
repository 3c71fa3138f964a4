"""finetune.losses: AFL pinned to the seed formula, its BCE/focal special cases, Dice and the class CE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptiveclick.finetune.losses import (
    class_cross_entropy,
    dice_loss,
    sigmoid_adaptive_focal_loss,
    sigmoid_bce_loss,
    sigmoid_focal_loss,
)


def random_masks(seed: int, n: int = 5, pixels: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits ``[n, pixels]`` over a wide range and binary targets; row 1 has no foreground."""
    gen = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(n, pixels, generator=gen, dtype=torch.float64)
    targets = (torch.rand(n, pixels, generator=gen, dtype=torch.float64) < 0.3).double()
    targets[1] = 0
    return logits, targets


def seed_afl_numpy(x, y, num_masks, epsilon=0.5, gamma=2.0, delta=0.4, alpha=1.0, eps=1e-12):
    """The seed README's AFL written out element by element in float64, with its analytic gradient.

    Per mask: ``gamma_a = gamma + 1 - mean(p_t over foreground)``, ``beta = (1 - p_t)^gamma_a``,
    ``m = P / ((1 + delta gamma_a) sum(beta) + eps)`` (gamma_a and m are constants for the gradient),
    ``l = eps_t (m beta BCE + alpha (1 - p_t)^(gamma_a + 1))``; the loss is ``sum_n mean_p l / num_masks``.
    ``gamma``/``delta`` may be per-mask arrays ``[N]``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, pixels = x.shape
    gamma = np.broadcast_to(np.asarray(gamma, np.float64), (n,))
    delta = np.broadcast_to(np.asarray(delta, np.float64), (n,))
    total, grad = 0.0, np.zeros_like(x)
    for row in range(n):
        p = 1.0 / (1.0 + np.exp(-x[row]))
        t = y[row]
        p_t = p * t + (1 - p) * (1 - t)
        bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        fg = t > 0.5
        g = gamma[row] + (1 - p_t[fg].sum() / (fg.sum() + eps))
        beta = (1 - p_t) ** g
        m = pixels / ((1 + delta[row] * g) * beta.sum() + eps)
        w = epsilon * t + (1 - epsilon) * (1 - t) if epsilon >= 0 else np.ones_like(t)
        total += (w * (m * beta * bce + alpha * (1 - p_t) ** (g + 1))).mean()
        dpt = (2 * t - 1) * p * (1 - p)
        dbeta = -g * (1 - p_t) ** (g - 1) * dpt if g != 0 else np.zeros_like(p)
        dpoly = -(g + 1) * (1 - p_t) ** g * dpt
        grad[row] = w * (m * (dbeta * bce + beta * (p - t)) + alpha * dpoly) / pixels
    return total / num_masks, grad / num_masks


def afl_with_grad(x, y, num_masks, **kwargs):
    x = x.clone().requires_grad_()
    loss = sigmoid_adaptive_focal_loss(x, y, num_masks, **kwargs)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.item(), grad.numpy()


def foreground_mean_p_t(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[N, 1]`` mean p_t over each mask's foreground (0 for masks without foreground)."""
    p_t = x.sigmoid() * y + (1 - x.sigmoid()) * (1 - y)
    return (p_t * y).sum(-1, keepdim=True) / (y.sum(-1, keepdim=True) + 1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"epsilon": 0.25, "gamma": 1.5, "delta": 0.1, "alpha": 0.5},
        {"epsilon": -1, "gamma": 3.0, "delta": 0.0, "alpha": 0.0},
    ],
)
def test_afl_matches_the_seed_formula_in_value_and_gradient(seed, params):
    x, y = random_masks(seed)
    expected, expected_grad = seed_afl_numpy(x.numpy(), y.numpy(), 2.5, **params)
    value, grad = afl_with_grad(x, y, 2.5, **params)
    assert value == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-8, atol=1e-14)


def test_afl_defaults_are_the_papers():
    x, y = random_masks(3)
    explicit = sigmoid_adaptive_focal_loss(x, y, 1.0, epsilon=0.5, gamma=2, delta=0.4, alpha=1.0, eps=1e-12)
    assert sigmoid_adaptive_focal_loss(x, y, 1.0).item() == explicit.item()


def test_afl_is_bce_when_the_adaptive_exponent_is_zero():
    """BCE as a special case: with ``gamma_a = 0`` the modulation ``(1 - p_t)^0`` is 1 for every pixel, so the
    rescaling ``P / ((1 + delta * 0) * P)`` is 1 whatever delta is; with ``alpha = 0`` (no poly term) and
    ``epsilon < 0`` (no class balance) AFL is exactly the mean BCE; ``epsilon = e`` gives the e-balanced BCE.

    The seed adapts the exponent, ``gamma_a = gamma + 1 - mean foreground p_t``, so ``gamma_a = 0`` is the
    parameter setting ``gamma = mean foreground p_t - 1`` per mask (passed as an ``[N, 1]`` tensor); for a mask
    without foreground the mean is 0 and the plain float ``gamma = -1`` does it.
    """
    x, y = random_masks(4)
    gamma = foreground_mean_p_t(x, y) - 1
    afl, afl_grad = afl_with_grad(x, y, 3.0, epsilon=-1, gamma=gamma, delta=0.4, alpha=0.0)
    bce, bce_grad = afl_with_grad_of(sigmoid_bce_loss, x, y, 3.0)
    assert afl == pytest.approx(bce, rel=1e-10)
    np.testing.assert_allclose(afl_grad, bce_grad, rtol=1e-8, atol=1e-15)

    balanced, _ = afl_with_grad(x, y, 3.0, epsilon=0.25, gamma=gamma, alpha=0.0)
    weights = 0.25 * y + 0.75 * (1 - y)
    expected = (weights * F.binary_cross_entropy_with_logits(x, y, reduction="none")).mean(1).sum() / 3.0
    assert balanced == pytest.approx(expected.item(), rel=1e-10)

    background = torch.zeros_like(y[:2])
    afl_bg, _ = afl_with_grad(x[:2], background, 1.0, epsilon=-1, gamma=-1.0, alpha=0.0)
    assert afl_bg == pytest.approx(sigmoid_bce_loss(x[:2], background, 1.0).item(), rel=1e-10)


def afl_with_grad_of(loss_fn, x, y, num_masks, **kwargs):
    x = x.clone().requires_grad_()
    loss = loss_fn(x, y, num_masks, **kwargs)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.item(), grad.numpy()


def test_afl_is_the_normalised_focal_loss_without_gradient_representation_and_poly_terms():
    """Focal loss as a special case: with ``gamma_a = g`` (``gamma = g - 1 + mean foreground p_t`` per mask),
    ``delta = 0`` (no adaptive gradient representation), ``alpha = 0`` (no poly term) and ``epsilon = a``
    (focal loss's alpha), AFL is RetinaNet's ``a_t (1 - p_t)^g BCE`` multiplied per mask by the constant
    ``m = P / sum_p (1 - p_t)^g`` (RITM's normalised focal loss). ``m`` carries no gradient, so the gradient is
    focal loss's gradient scaled per mask by ``m``: the same descent direction for every mask.
    """
    x, y = random_masks(5)
    g, a = 2.0, 0.25
    gamma = foreground_mean_p_t(x, y) + g - 1
    afl, afl_grad = afl_with_grad(x, y, 1.0, epsilon=a, gamma=gamma, delta=0.0, alpha=0.0)

    p_t = x.sigmoid() * y + (1 - x.sigmoid()) * (1 - y)
    m = (x.shape[1] / ((1 - p_t) ** g).sum(-1, keepdim=True)).numpy()  # [N, 1]
    per_mask = torch.stack(
        [sigmoid_focal_loss(x[i : i + 1], y[i : i + 1], 1.0, alpha=a, gamma=g) for i in range(x.shape[0])]
    ).numpy()
    assert afl == pytest.approx(float((m[:, 0] * per_mask).sum()), rel=1e-10)
    _, focal_grad = afl_with_grad_of(sigmoid_focal_loss, x, y, 1.0, alpha=a, gamma=g)
    np.testing.assert_allclose(afl_grad, m * focal_grad, rtol=1e-8, atol=1e-15)


def test_afl_focuses_on_hard_pixels_and_is_finite_at_the_extremes():
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    x = torch.tensor([[8.0, -2.0, -8.0, 2.0]], requires_grad=True)  # easy fg, hard fg, easy bg, hard bg
    sigmoid_adaptive_focal_loss(x, y, 1.0).backward()
    grad = x.grad.abs()[0]
    assert grad[1] > 10 * grad[0] and grad[3] > 10 * grad[2]
    extreme = torch.tensor([[60.0, -60.0, 0.0]], requires_grad=True)
    loss = sigmoid_adaptive_focal_loss(extreme, torch.tensor([[1.0, 0.0, 1.0]]), 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(extreme.grad).all()


def test_afl_of_no_masks_is_zero_with_a_gradient():
    x = torch.zeros(0, 16, requires_grad=True)
    loss = sigmoid_adaptive_focal_loss(x, torch.zeros(0, 16), 1.0)
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == (0, 16)


def test_dice_loss_values():
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    perfect = torch.tensor([[30.0, 30.0, -30.0, -30.0]])
    assert dice_loss(perfect, targets, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    zero = torch.zeros(1, 4)  # p = 0.5 everywhere: 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert dice_loss(zero, targets, 1.0).item() == pytest.approx(1 - 3 / 5)
    assert dice_loss(torch.cat([zero, zero]), torch.cat([targets, targets]), 2.0).item() == pytest.approx(0.4)


def test_class_cross_entropy_uses_the_weighted_mean():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]]])
    classes = torch.tensor([[0, 0, 1]])
    weights = torch.tensor([1.0, 0.1])
    nll = -torch.log_softmax(logits, -1)[0, torch.arange(3), classes[0]]
    w = weights[classes[0]]
    expected = (w * nll).sum() / w.sum()
    assert class_cross_entropy(logits, classes, weights).item() == pytest.approx(expected.item(), rel=1e-6)
    assert class_cross_entropy(logits.half(), classes, weights).dtype == torch.float32
