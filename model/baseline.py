"""The embedded default predictor: OpenCV GrabCut seeded by the clicks and the previous mask.

It needs no weights, so the backend and the NoC evaluation give real results on a fresh machine. It is a classical
method and much weaker than a trained AdaptiveClick; its model version says so.

Each step runs GrabCut (deterministic: OpenCV's RNG is re-seeded before every call) on the image scaled to at most
``work_size`` pixels on its longer side, with:

* positive click disks as sure foreground, negative click disks as sure background;
* the previous mask (when given) as probable foreground, everything else as probable background;
* at the first click, a box around each positive click as probable foreground, its size a fraction of the image;

then keeps the connected components that hold a positive click.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import grabcut_worker
from .clicks import Click
from .prediction import PROB_THRESHOLD, Prediction, Roi
from .predictor import Predictor, StepTimeout

BASELINE_VERSION = "baseline-grabcut-v1"


class GrabCutPredictor(Predictor):
    """Click-seeded GrabCut behind the :class:`~model.predictor.Predictor` interface.

    Args:
        work_size: longer side of the image GrabCut runs on (speed vs. detail).
        iterations: GrabCut iterations per click.
        seed_radius: radius of the sure-label disk around a click, in work-image pixels.
        first_click_extent: side of the probable-foreground square around a first positive click, as a fraction of
            the shorter image side.
    """

    model_version = BASELINE_VERSION

    def __init__(
        self, work_size: int = 256, iterations: int = 3, seed_radius: int = 4, first_click_extent: float = 0.3
    ) -> None:
        super().__init__()
        self.work_size = work_size
        self.iterations = iterations
        self.seed_radius = seed_radius
        self.first_click_extent = first_click_extent
        self._work_image: np.ndarray | None = None
        self._scale = 1.0

    def _prepare_image(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        self._scale = min(1.0, self.work_size / max(h, w))
        size = (max(1, round(w * self._scale)), max(1, round(h * self._scale)))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if self._scale < 1 else image
        self._work_image = np.ascontiguousarray(work[:, :, ::-1])  # GrabCut's colour models do not care, BGR by habit

    def _step(self, clicks: list[Click], prev_mask: np.ndarray | None, prev_roi: Roi | None) -> Prediction:
        h, w = self.image_shape
        seeds = self._seed_labels(clicks, prev_mask)
        mask = self._grabcut(seeds)
        mask = _components_with_clicks(mask, [self._to_work(c) for c in clicks if c.is_positive])
        probs = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        return Prediction(probs, None)

    def _to_work(self, click: Click) -> tuple[int, int]:
        wh, ww = self._work_image.shape[:2]
        return min(wh - 1, int(click.y * self._scale)), min(ww - 1, int(click.x * self._scale))

    def _seed_labels(self, clicks: list[Click], prev_mask: np.ndarray | None) -> np.ndarray:
        wh, ww = self._work_image.shape[:2]
        if prev_mask is not None and (prev_mask > PROB_THRESHOLD).any():
            prev = cv2.resize(prev_mask.astype(np.float32), (ww, wh), interpolation=cv2.INTER_AREA) > PROB_THRESHOLD
            first = False
        else:
            prev, first = np.zeros((wh, ww), bool), True
        seeds = np.where(prev, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        # a positive click outside the current object (or the first one) claims a square around it as probable
        # foreground, a negative click inside the object a smaller square as probable background: GrabCut then
        # re-learns its colour models from those regions instead of from the seed disk alone.
        extent = self.first_click_extent * min(wh, ww) / 2
        for click in clicks:
            y, x = self._to_work(click)
            if click.is_positive and (first or not prev[y, x]):
                half, label = max(2, int(extent if first else extent / 2)), cv2.GC_PR_FGD
            elif not click.is_positive and prev[y, x]:
                half, label = max(2, int(extent / 4)), cv2.GC_PR_BGD
            else:
                continue
            seeds[max(0, y - half) : y + half + 1, max(0, x - half) : x + half + 1] = label
        for click in clicks:
            y, x = self._to_work(click)
            label = cv2.GC_FGD if click.is_positive else cv2.GC_BGD
            cv2.circle(seeds, (x, y), self.seed_radius, int(label), thickness=-1)
        return seeds

    def _grabcut(self, seeds: np.ndarray) -> np.ndarray:
        """Binary foreground of GrabCut initialised with ``seeds`` (a copy is refined). With a time limit the call
        runs in a helper process that is stopped at the limit (one GrabCut call cannot be interrupted in place)."""
        labels = seeds
        has_fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
        has_bg = np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any()
        if has_fg and has_bg:
            limit = self._time_limit
            if limit is None:
                labels = grabcut_worker.grabcut(self._work_image, seeds, self.iterations)
            else:
                try:
                    labels = grabcut_worker.WORKER.run(self._work_image, seeds, self.iterations, max(limit, 0.01))
                except TimeoutError as exc:
                    raise StepTimeout(f"the baseline's {exc} on this image") from None
        return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def _components_with_clicks(mask: np.ndarray, positive: list[tuple[int, int]]) -> np.ndarray:
    """Keep the 8-connected components of ``mask`` that contain a positive click (all of it if none does)."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = {labels[y, x] for y, x in positive if labels[y, x] > 0}
    if count <= 2 or not keep:
        return mask
    return np.isin(labels, list(keep))
