"""Simulated clicks for training, as the reference trains (RITM's ``MultiPointSampler`` and ``get_next_points``).

Before the forward pass each training sample gets a random set of clicks drawn from its masks:

* positives: ``1 + k`` points (``k`` geometric with ratio ``prob_gamma`` over ``0..max_points-1``) drawn uniformly
  from the object, eroded (3x3, 3 iterations) with probability 0.9 when enough of it survives;
* negatives: ``k`` points (``0..max_points``) each drawn from one of three regions chosen with probabilities 0.1 /
  0.4 / 0.5: the background, the other annotated objects, a band around the object (width ``0.1 sqrt(area)``);
* with probability ``merge_objects_prob`` two objects of the image are merged into one target.

Then 0..3 extra rounds run the network without gradient and add one corrective click each (:func:`next_clicks`):
inside the larger error region (false negatives vs false positives by distance transform), uniformly among pixels
farther than half the largest distance from the region's border.

Points are ``[2N, 3]`` rows ``(y, x, index)``: N positive then N negative slots, ``-1`` padding, as the network
takes them. Pixels marked *ignore* (e.g. GrabCut's unknown band) are never clicked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from adaptiveclick.model.prediction import PROB_THRESHOLD

PAD = (-1.0, -1.0, -1.0)
SAMPLED_CLICK_INDEX = 100  # the reference marks sampled (not first-center) clicks with index 100


def geometric_probs(count: int, ratio: float) -> np.ndarray:
    """``[count]`` probabilities proportional to ``ratio ** i``."""
    probs = ratio ** np.arange(count, dtype=np.float64)
    return probs / probs.sum()


@dataclass(frozen=True)
class ClickSamplerConfig:
    max_points: int = 24
    prob_gamma: float = 0.8
    merge_objects_prob: float = 0.15
    max_merged_objects: int = 2
    expand_ratio: float = 0.1
    positive_erode_prob: float = 0.9
    positive_erode_iters: int = 3
    negative_probs: tuple[float, float, float] = (0.1, 0.4, 0.5)  # background, other objects, border

    def __post_init__(self) -> None:
        if self.max_points < 1:
            raise ValueError("max_points must be at least 1")
        if not math.isclose(sum(self.negative_probs), 1.0):
            raise ValueError("negative_probs must sum to 1")


@dataclass
class SampledTarget:
    """``mask``: ``[H, W]`` float32 target (1 object); ``points``: ``[2N, 3]`` float32 clicks."""

    mask: np.ndarray
    points: np.ndarray


class ClickSampler:
    """Draws the target object and its initial clicks for one augmented sample."""

    def __init__(self, config: ClickSamplerConfig = ClickSamplerConfig()) -> None:
        self.config = config
        self.positive_probs = geometric_probs(config.max_points, config.prob_gamma)
        self.negative_count_probs = geometric_probs(config.max_points + 1, config.prob_gamma)

    def sample(
        self,
        objects: list[np.ndarray],
        ignore: np.ndarray | None,
        rng: np.random.Generator,
        shape: tuple[int, int] | None = None,
    ) -> SampledTarget:
        """
        Args:
            objects: ``[H, W]`` bool masks of the objects left in the crop (may be empty: a background sample).
            ignore: ``[H, W]`` bool pixels never clicked, or None.
            shape: ``(H, W)``, needed only when ``objects`` is empty and ``ignore`` is None.
        """
        cfg = self.config
        if shape is None:
            shape = (objects[0] if objects else ignore).shape
        clickable = np.ones(shape, bool) if ignore is None else ~ignore
        if not objects:
            background = clickable
            negatives = [(background, p) for p in cfg.negative_probs]
            points = self._pad([]) + self._pad(self._draw(negatives, self._negative_count(rng), rng))
            return SampledTarget(np.zeros(shape, np.float32), np.asarray(points, np.float32))

        chosen = self._choose_objects(len(objects), rng)
        gt = np.zeros(shape, bool)
        for i in chosen:
            gt |= objects[i]
        positive_regions = [self._maybe_erode(objects[i], rng) & clickable for i in chosen]

        background = ~gt & clickable
        if len(objects) <= len(chosen):
            others = background
        else:
            all_objects = np.zeros(shape, bool)
            for mask in objects:
                all_objects |= mask
            others = all_objects & ~gt & clickable
        border = self._border(gt) & clickable
        negatives = list(zip((background, others, border), cfg.negative_probs))

        positives = self._positive_points(positive_regions, rng)
        negative_points = self._draw(negatives, self._negative_count(rng), rng)
        points = self._pad(positives) + self._pad(negative_points)
        return SampledTarget(gt.astype(np.float32), np.asarray(points, np.float32))

    # -- the pieces ----------------------------------------------------------------------------------------------

    def _choose_objects(self, count: int, rng: np.random.Generator) -> list[int]:
        cfg = self.config
        if count > 1 and rng.random() < cfg.merge_objects_prob:
            most = min(count, cfg.max_merged_objects)
            merged = int(rng.integers(2, most + 1))
            return sorted(rng.choice(count, size=merged, replace=False).tolist())
        return [int(rng.integers(count))]

    def _maybe_erode(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        if rng.random() > cfg.positive_erode_prob:
            return mask
        eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=cfg.positive_erode_iters)
        return eroded.astype(bool) if eroded.sum() > 10 else mask

    def _border(self, mask: np.ndarray) -> np.ndarray:
        radius = int(np.ceil(self.config.expand_ratio * np.sqrt(mask.sum())))
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=radius).astype(bool)
        return grown & ~mask

    def _negative_count(self, rng: np.random.Generator) -> int:
        return int(rng.choice(self.config.max_points + 1, p=self.negative_count_probs))

    def _positive_points(self, regions: list[np.ndarray], rng: np.random.Generator) -> list[tuple]:
        """One object: ``1 + k`` points in it. Several (merged) objects: one point in each, then a negative-count
        of points drawn from the union (each object equally likely), as the reference's multi-mask sampling."""
        per_object = [
            self._draw([(r, 1.0)], 1 + int(rng.choice(self.config.max_points, p=self.positive_probs)), rng)
            for r in regions[: self.config.max_points]
        ]
        per_object = [pts for pts in per_object if pts]
        if len(per_object) <= 1:
            return per_object[0] if per_object else []
        points = [pts[0] for pts in per_object]
        union = self._draw([(r, 1.0 / len(regions)) for r in regions], self._negative_count(rng), rng)
        room = self.config.max_points - len(points)
        if len(union) > room:
            union = [union[i] for i in sorted(rng.choice(len(union), size=room, replace=False))]
        return points + union

    @staticmethod
    def _draw(regions: list[tuple[np.ndarray, float]], count: int, rng: np.random.Generator) -> list[tuple]:
        """``count`` uniform pixels, each from a region picked by its probability (empty regions give nothing)."""
        coords = [np.argwhere(mask) for mask, _ in regions]
        probs = np.array([p for _, p in regions], dtype=np.float64)
        probs /= probs.sum()
        points = []
        for _ in range(count):
            candidates = coords[int(rng.choice(len(coords), p=probs))] if len(coords) > 1 else coords[0]
            if len(candidates):
                y, x = candidates[int(rng.integers(len(candidates)))]
                points.append((float(y), float(x), float(SAMPLED_CLICK_INDEX)))
        return points

    def _pad(self, points: list[tuple]) -> list[tuple]:
        points = points[: self.config.max_points]
        return points + [PAD] * (self.config.max_points - len(points))


def next_clicks(
    probs: torch.Tensor,
    gt: torch.Tensor,
    points: torch.Tensor,
    click_index: int,
    rng: np.random.Generator,
    valid: torch.Tensor | None = None,
    threshold: float = PROB_THRESHOLD,
) -> torch.Tensor:
    """Add one corrective click per sample (the reference's ``get_next_points``).

    Args:
        probs: ``[B, 1, H, W]`` predicted probabilities.
        gt: ``[B, 1, H, W]`` target masks (object where > 0.5).
        points: ``[B, 2N, 3]`` current clicks; not modified.
        click_index: 1 for the first extra round, 2 for the second, ...; the click goes to slot ``N - click_index``
            (positive) or ``2N - click_index`` (negative), replacing what was there, and carries that index.
        valid: ``[B, 1, H, W]`` pixels that may be clicked (default all).

    Returns:
        The new ``[B, 2N, 3]`` points.
    """
    if click_index < 1:
        raise ValueError("click_index starts at 1")
    pred = probs.detach().float().cpu().numpy()[:, 0]
    target = gt.detach().cpu().numpy()[:, 0] > 0.5
    allowed = np.ones_like(target) if valid is None else valid.detach().cpu().numpy()[:, 0] > 0.5
    points = points.clone()
    n = points.shape[1] // 2
    for b in range(pred.shape[0]):
        fn = np.pad(target[b] & (pred[b] < threshold) & allowed[b], 1).astype(np.uint8)
        fp = np.pad(~target[b] & (pred[b] > threshold) & allowed[b], 1).astype(np.uint8)
        fn_dt = cv2.distanceTransform(fn, cv2.DIST_L2, 5)[1:-1, 1:-1]
        fp_dt = cv2.distanceTransform(fp, cv2.DIST_L2, 5)[1:-1, 1:-1]
        fn_max, fp_max = float(fn_dt.max()), float(fp_dt.max())
        positive = fn_max > fp_max
        dt = fn_dt if positive else fp_dt
        candidates = np.argwhere(dt > max(fn_max, fp_max) / 2.0)
        if len(candidates):
            y, x = candidates[int(rng.integers(len(candidates)))]
            slot = n - click_index if positive else 2 * n - click_index
            points[b, slot] = torch.tensor([float(y), float(x), float(click_index)], dtype=points.dtype)
    return points
