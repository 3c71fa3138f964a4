"""The embedded default predictor: OpenCV GrabCut seeded by the clicks and the previous mask, or started from a box.

It needs no weights, so the backend and the NoC evaluation give real results on a fresh machine. It is a classical
method and much weaker than a trained AdaptiveClick; its model version says so.

Each click step runs GrabCut (deterministic: OpenCV's RNG is re-seeded before every call) on the image scaled to at
most ``work_size`` pixels on its longer side, with:

* positive click disks as sure foreground, negative click disks as sure background;
* the previous mask (when given) as probable foreground, everything else as probable background;
* at the first click, a box around each positive click as probable foreground, its size a fraction of the image;

then keeps the connected components that hold a positive click.

A box prompt (``takes_box``) is GrabCut's own use case: the box's clicks (:func:`model.prompts.box_to_clicks`) are
answered by OpenCV's rectangle initialisation (``cv2.grabCut(..., rect, ..., 5, cv2.GC_INIT_WITH_RECT)``: outside
the box background, inside it probable foreground) on the image scaled to at most ``box_work_size``: the first of
them runs it, a step whose new click is another of the box's keeps the mask it has. The other clicks refine that
mask as above, with everything outside the box sure background, the box's own clicks not used as seeds (its centre
may miss the object) and every part of the object kept. A box that leaves no pixel outside it gives GrabCut no
background to learn from; it is answered by its clicks instead.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import grabcut_worker
from .clicks import Click
from .prediction import PROB_THRESHOLD, Prediction, Roi
from .predictor import Predictor, StepTimeout
from .prompts import Box, box_to_clicks

BASELINE_VERSION = "baseline-grabcut-v2"  # v2: boxes start from GrabCut's rectangle initialisation
FOREGROUND = (cv2.GC_FGD, cv2.GC_PR_FGD)
BACKGROUND = (cv2.GC_BGD, cv2.GC_PR_BGD)


class GrabCutPredictor(Predictor):
    """Click-seeded (or box-started) GrabCut behind the :class:`~model.predictor.Predictor` interface.

    Args:
        work_size: longer side of the image a click's GrabCut runs on (speed vs. detail).
        iterations: GrabCut iterations per click.
        seed_radius: radius of the sure-label disk around a click, in work-image pixels (a box's clicks get the same
            disk in the image on the box work image).
        first_click_extent: side of the probable-foreground square around a first positive click, as a fraction of
            the shorter image side.
        box_work_size: longer side of the image a box's rectangle initialisation runs on: its colour models learn
            from the whole box, and lose detail at the click steps' size (``adaptiveclick benchmark boxes``).
        box_iterations: GrabCut iterations of the rectangle initialisation.
    """

    model_version = BASELINE_VERSION
    takes_box = True

    def __init__(
        self,
        work_size: int = 256,
        iterations: int = 3,
        seed_radius: int = 4,
        first_click_extent: float = 0.3,
        box_work_size: int = 640,
        box_iterations: int = 5,
    ) -> None:
        super().__init__()
        self.work_size = work_size
        self.iterations = iterations
        self.seed_radius = seed_radius
        self.first_click_extent = first_click_extent
        self.box_work_size = box_work_size
        self.box_iterations = box_iterations
        self._work_image: np.ndarray | None = None
        self._scale = 1.0
        self._box_image: np.ndarray | None = None
        self._box_scale = 1.0

    def _prepare_image(self, image: np.ndarray) -> None:
        self._work_image, self._scale = _scaled(image, self.work_size)
        self._box_image, self._box_scale = _scaled(image, self.box_work_size)

    def _step(
        self, clicks: list[Click], prev_mask: np.ndarray | None, prev_roi: Roi | None, box: Box | None
    ) -> Prediction:
        if box is None:
            return self._click_step(clicks, prev_mask, None)
        h, w = self.image_shape
        own = {(c.y, c.x, c.is_positive) for c in box_to_clicks(box, h, w)}
        newest = clicks[-1]
        if prev_mask is not None and (newest.y, newest.x, newest.is_positive) in own:
            return Prediction(prev_mask, None)  # a click of the box's: the box has answered it already
        added = [c for c in clicks if (c.y, c.x, c.is_positive) not in own]
        if added:
            return self._click_step(added, prev_mask, box)
        return self._box_step(box, clicks)

    def _click_step(self, clicks: list[Click], prev_mask: np.ndarray | None, box: Box | None) -> Prediction:
        """GrabCut from the clicks' seeds and the previous mask; with a box, on the box work image (the detail its
        mask was found at), everything outside the box background and every part kept."""
        image, scale = (self._work_image, self._scale) if box is None else (self._box_image, self._box_scale)
        seeds = self._seed_labels(clicks, prev_mask, image, scale)
        if box is not None:
            top, bottom, left, right = (int(v * scale) for v in box)
            inside = np.zeros(seeds.shape, bool)
            inside[top : bottom + 1, left : right + 1] = True
            seeds[~inside] = cv2.GC_BGD
        mask = self._grabcut(image, seeds, self.iterations)
        if box is None:
            mask = _components_with_clicks(mask, [_to_work(c, image, scale) for c in clicks if c.is_positive])
        return Prediction(self._full_size(mask), None)

    def _box_step(self, box: Box, clicks: list[Click]) -> Prediction:
        """GrabCut's rectangle initialisation for ``box`` on the box work image."""
        image = self._box_image
        bh, bw = image.shape[:2]
        top, bottom, left, right = (int(v * self._box_scale) for v in box)
        bottom, right = min(bottom, bh - 1), min(right, bw - 1)
        if top == 0 and left == 0 and bottom == bh - 1 and right == bw - 1:  # no background to learn from
            return self._click_step(clicks, None, None)
        labels = np.zeros((bh, bw), np.uint8)
        rect = (left, top, right - left + 1, bottom - top + 1)
        return Prediction(self._full_size(self._grabcut(image, labels, self.box_iterations, rect)), None)

    def _full_size(self, mask: np.ndarray) -> np.ndarray:
        """``[H, W]`` float32 probabilities of the image from a work image's binary mask."""
        h, w = self.image_shape
        return cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)

    def _seed_labels(
        self, clicks: list[Click], prev_mask: np.ndarray | None, image: np.ndarray, scale: float
    ) -> np.ndarray:
        """GrabCut's initial labels on ``image`` (the image at ``scale``) from the clicks and the previous mask."""
        wh, ww = image.shape[:2]
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
            y, x = _to_work(click, image, scale)
            if click.is_positive and (first or not prev[y, x]):
                half, label = max(2, int(extent if first else extent / 2)), cv2.GC_PR_FGD
            elif not click.is_positive and prev[y, x]:
                half, label = max(2, int(extent / 4)), cv2.GC_PR_BGD
            else:
                continue
            seeds[max(0, y - half) : y + half + 1, max(0, x - half) : x + half + 1] = label
        radius = max(1, round(self.seed_radius * scale / self._scale))  # the same disk in the image on either view
        for click in clicks:
            y, x = _to_work(click, image, scale)
            label = cv2.GC_FGD if click.is_positive else cv2.GC_BGD
            cv2.circle(seeds, (x, y), radius, int(label), thickness=-1)
        return seeds

    def _grabcut(
        self, image: np.ndarray, labels: np.ndarray, iterations: int, rect: grabcut_worker.Rect | None = None
    ) -> np.ndarray:
        """Binary foreground of GrabCut on ``image`` from ``labels`` (a copy is refined) or from ``rect``. With a
        time limit the call runs in a helper process that is stopped at the limit (one GrabCut call cannot be
        interrupted in place). Seed labels without both a foreground and a background are their own answer."""
        if rect is None and not (np.isin(labels, FOREGROUND).any() and np.isin(labels, BACKGROUND).any()):
            return np.isin(labels, FOREGROUND)
        limit = self._time_limit
        if limit is None:
            labels = grabcut_worker.grabcut(image, labels, iterations, rect)
        else:
            try:
                labels = grabcut_worker.WORKER.run(image, labels, iterations, max(limit, 0.01), rect)
            except TimeoutError as exc:
                raise StepTimeout(f"the baseline's {exc} on this image") from None
        return np.isin(labels, FOREGROUND)


def _to_work(click: Click, image: np.ndarray, scale: float) -> tuple[int, int]:
    """``(y, x)`` of ``click`` in ``image``, the image at ``scale``."""
    wh, ww = image.shape[:2]
    return min(wh - 1, int(click.y * scale)), min(ww - 1, int(click.x * scale))


def _scaled(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``image`` scaled to at most ``size`` pixels on its longer side, BGR (GrabCut's colour models do not care,
    BGR by habit), and the scale."""
    h, w = image.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale < 1:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image[:, :, ::-1]), scale


def _components_with_clicks(mask: np.ndarray, positive: list[tuple[int, int]]) -> np.ndarray:
    """Keep the 8-connected components of ``mask`` that contain a positive click (all of it if none does)."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = {labels[y, x] for y, x in positive if labels[y, x] > 0}
    if count <= 2 or not keep:
        return mask
    return np.isin(labels, list(keep))
