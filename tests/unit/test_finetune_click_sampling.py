"""finetune.click_sampling: sampled clicks land where the reference sampler puts them; corrective clicks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveclick.finetune.click_sampling import ClickSampler, ClickSamplerConfig, geometric_probs, next_clicks


def square(shape=(64, 64), top=16, left=16, size=24) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


def split_points(points: np.ndarray, n: int):
    positives, negatives = points[:n], points[n:]
    return positives[positives[:, 0] >= 0], negatives[negatives[:, 0] >= 0]


def test_geometric_probs():
    probs = geometric_probs(4, 0.5)
    assert probs.sum() == pytest.approx(1.0)
    assert probs.tolist() == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])


def test_points_layout_and_regions():
    sampler = ClickSampler(ClickSamplerConfig(max_points=6))
    obj = square()
    other = square(top=48, left=48, size=10)
    for seed in range(30):
        target = sampler.sample([obj, other], None, np.random.default_rng(seed))
        assert target.points.shape == (12, 3) and target.points.dtype == np.float32
        gt = target.mask.astype(bool)
        assert gt.sum() in (obj.sum(), other.sum(), obj.sum() + other.sum())
        positives, negatives = split_points(target.points, 6)
        assert 1 <= len(positives) <= 6
        assert all(gt[int(y), int(x)] for y, x, _ in positives)
        assert not any(gt[int(y), int(x)] for y, x, _ in negatives)
        padding = target.points[target.points[:, 0] < 0]
        assert (padding == -1).all()


def test_number_of_positive_clicks_follows_the_geometric_law():
    sampler = ClickSampler(ClickSamplerConfig(max_points=24, prob_gamma=0.8, merge_objects_prob=0.0))
    counts = [
        len(split_points(sampler.sample([square()], None, np.random.default_rng(s)).points, 24)[0]) for s in range(600)
    ]
    expected = 1 + (np.arange(24) * geometric_probs(24, 0.8)).sum()
    assert np.mean(counts) == pytest.approx(expected, rel=0.1)
    assert min(counts) == 1 and max(counts) > 10


def test_negative_strategies_use_their_regions():
    obj = square(shape=(80, 80), top=30, left=30, size=20)
    other = square(shape=(80, 80), top=2, left=2, size=8)
    border_only = ClickSampler(ClickSamplerConfig(negative_probs=(0.0, 0.0, 1.0), merge_objects_prob=0.0))
    others_only = ClickSampler(ClickSamplerConfig(negative_probs=(0.0, 1.0, 0.0), merge_objects_prob=0.0))
    band = 2  # ceil(0.1 * sqrt(400))
    near = np.zeros_like(obj)
    near[30 - band : 50 + band, 30 - band : 50 + band] = True
    for seed in range(20):
        rng = np.random.default_rng(seed)
        target = border_only.sample([obj], None, rng)
        if target.mask.sum() == obj.sum():
            _, negatives = split_points(target.points, 24)
            assert all(near[int(y), int(x)] and not obj[int(y), int(x)] for y, x, _ in negatives)
        target = others_only.sample([obj, other], None, np.random.default_rng(seed))
        if target.mask.sum() == obj.sum():
            _, negatives = split_points(target.points, 24)
            assert all(other[int(y), int(x)] for y, x, _ in negatives)


def test_merged_objects_make_one_target():
    sampler = ClickSampler(ClickSamplerConfig(merge_objects_prob=1.0))
    a, b = square(top=2, left=2, size=12), square(top=40, left=40, size=12)
    target = sampler.sample([a, b], None, np.random.default_rng(0))
    assert (target.mask.astype(bool) == (a | b)).all()
    positives, _ = split_points(target.points, 24)
    assert any(a[int(y), int(x)] for y, x, _ in positives) and any(b[int(y), int(x)] for y, x, _ in positives)


def test_ignored_pixels_are_never_clicked():
    obj = square()
    ignore = np.zeros_like(obj)
    ignore[:, :40] = True  # covers most of the object and the background
    sampler = ClickSampler()
    for seed in range(20):
        target = sampler.sample([obj], ignore, np.random.default_rng(seed))
        clicks = target.points[target.points[:, 0] >= 0]
        assert not any(ignore[int(y), int(x)] for y, x, _ in clicks)


def test_background_sample_has_no_positive_clicks():
    target = ClickSampler().sample([], None, np.random.default_rng(1), shape=(32, 32))
    assert target.mask.sum() == 0 and (target.points[:24] == -1).all()


def test_config_is_validated():
    with pytest.raises(ValueError):
        ClickSamplerConfig(max_points=0)
    with pytest.raises(ValueError):
        ClickSamplerConfig(negative_probs=(0.5, 0.5, 0.5))


def corrective_setup():
    gt = torch.zeros(2, 1, 40, 40)
    gt[:, :, 10:30, 10:30] = 1
    probs = torch.zeros(2, 1, 40, 40)
    probs[0, :, 10:30, 10:20] = 1  # sample 0 misses the right half: a positive click there
    probs[1] = gt[1]
    probs[1, :, 0:20, 30:40] = 1  # sample 1 spills over: a negative click there
    points = torch.full((2, 8, 3), -1.0)
    points[:, 0] = torch.tensor([15.0, 15.0, 100.0])
    return gt, probs, points


def test_next_clicks_go_to_the_middle_of_the_largest_error():
    gt, probs, points = corrective_setup()
    new = next_clicks(probs, gt, points, 1, np.random.default_rng(0))
    assert torch.equal(points[:, 0], new[:, 0]) and (points[0, 1:] == -1).all()  # input untouched
    y, x, index = new[0, 3].tolist()  # positive: slot N - 1
    assert 10 <= y < 30 and 20 <= x < 30 and index == 1
    assert 12 <= x <= 28  # farther than half the largest distance from the error's border
    y, x, index = new[1, 7].tolist()  # negative: slot 2N - 1
    assert 0 <= y < 20 and 30 <= x < 40 and index == 1
    second = next_clicks(probs, gt, new, 2, np.random.default_rng(0))
    assert second[0, 2, 2].item() == 2 and torch.equal(second[0, 3], new[0, 3])


def test_next_clicks_respect_valid_pixels_and_perfect_predictions():
    gt, probs, points = corrective_setup()
    valid = torch.ones_like(gt)
    valid[0, :, :, 20:] = 0
    new = next_clicks(probs, gt, points, 1, np.random.default_rng(0), valid=valid)
    assert (new[0, 1:] == -1).all()  # the only error is outside the valid pixels: nothing added
    assert torch.equal(next_clicks(gt.clone(), gt, points, 1, np.random.default_rng(0)), points)
    with pytest.raises(ValueError):
        next_clicks(probs, gt, points, 0, np.random.default_rng(0))
