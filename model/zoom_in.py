"""Zoom-in of the reference "cvpr" evaluation mode (RITM's ``ZoomIn`` with ``skip_clicks=-1``), as pure functions.

A region of interest (ROI) is ``(rmin, rmax, cmin, cmax)``, inclusive, in image pixels. After the first click the
network sees the predicted object's box expanded 1.4x (at least 200 px), resized to the network input size; the
ROI is kept while it still holds every positive click and overlaps the new candidate box by IoU >= 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .clicks import Click
from .prediction import Roi

EXPANSION_RATIO = 1.4
MIN_CROP_SIZE = 200
RECOMPUTE_IOU = 0.5
ROI_PROB_THRESH = 0.5


def whole_image_roi(height: int, width: int) -> Roi:
    return 0, height - 1, 0, width - 1


def mask_bbox(mask: np.ndarray) -> Roi:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def expand_bbox(bbox: Roi, ratio: float, min_size: float) -> Roi:
    rmin, rmax, cmin, cmax = bbox
    rc, cc = 0.5 * (rmin + rmax), 0.5 * (cmin + cmax)
    height = max(ratio * (rmax - rmin + 1), min_size)
    width = max(ratio * (cmax - cmin + 1), min_size)
    return (
        int(round(rc - 0.5 * height)),
        int(round(rc + 0.5 * height)),
        int(round(cc - 0.5 * width)),
        int(round(cc + 0.5 * width)),
    )


def clamp_bbox(bbox: Roi, height: int, width: int) -> Roi:
    return max(0, bbox[0]), min(height - 1, bbox[1]), max(0, bbox[2]), min(width - 1, bbox[3])


def bbox_iou(a: Roi, b: Roi) -> float:
    def segment_iou(s1, s2):
        inter = max(0, min(s1[1], s2[1]) - max(s1[0], s2[0]) + 1)
        union = max(1e-6, max(s1[1], s2[1]) - min(s1[0], s2[0]) + 1)
        return inter / union

    return segment_iou(a[:2], b[:2]) * segment_iou(a[2:], b[2:])


def object_roi(pred_mask: np.ndarray, clicks: Sequence[Click]) -> Roi:
    """The predicted object's box (positive clicks included), expanded and clamped to the image."""
    mask = pred_mask.copy()
    for click in clicks:
        if click.is_positive:
            mask[int(click.y), int(click.x)] = True
    h, w = mask.shape
    return clamp_bbox(expand_bbox(mask_bbox(mask), EXPANSION_RATIO, MIN_CROP_SIZE), h, w)


def roi_holds_positive_clicks(roi: Roi, clicks: Sequence[Click]) -> bool:
    return all(roi[0] <= c.y < roi[1] and roi[2] <= c.x < roi[3] for c in clicks if c.is_positive)


def next_roi(
    prev_probs: np.ndarray | None, clicks: Sequence[Click], prev_roi: Roi | None, image_shape: tuple[int, int]
) -> Roi:
    """The ROI the network sees for this click.

    Args:
        prev_probs: ``[H, W]`` probabilities of the previous step, or None at the first click.
        clicks: all clicks so far, in image pixels.
        prev_roi: the ROI of the previous step; None means the whole image (what the first click used).
        image_shape: ``(H, W)``.
    """
    whole = whole_image_roi(*image_shape)
    if prev_probs is None:
        return whole
    pred_mask = prev_probs > ROI_PROB_THRESH
    candidate = object_roi(pred_mask, clicks) if pred_mask.any() else whole
    current = whole if prev_roi is None else prev_roi
    if not roi_holds_positive_clicks(current, clicks) or bbox_iou(candidate, current) < RECOMPUTE_IOU:
        return candidate
    return current


def clicks_to_roi_frame(clicks: Sequence[Click], roi: Roi, size: tuple[int, int]) -> list[Click]:
    """Map image-pixel clicks into a ROI resized to ``size`` (``(h, w)``), as the reference does."""
    rmin, rmax, cmin, cmax = roi
    h, w = size
    return [c.moved(h * (c.y - rmin) / (rmax - rmin + 1), w * (c.x - cmin) / (cmax - cmin + 1)) for c in clicks]
