"""``Clicker``: the simulated annotator of the NoC protocol (RITM's ``isegm.inference.clicker``).

The next click goes to the point of the larger error region that is farthest from that region's boundary
(L2 distance transform of the zero-padded false-negative and false-positive maps), positive when the largest
false-negative distance exceeds the largest false-positive one, at the first maximum in row-major order.
Pixels already clicked are never chosen again.
"""

from __future__ import annotations

import cv2
import numpy as np

from adaptiveclick.model.clicks import Click

from .datasets.base import IGNORE_LABEL


class Clicker:
    """Args:
    gt_mask: ``[H, W]`` with 1 = object, 0 = background, -1 = ignore (never clicked, not counted).
    """

    def __init__(self, gt_mask: np.ndarray, ignore_label: int = IGNORE_LABEL) -> None:
        gt_mask = np.asarray(gt_mask)
        if gt_mask.ndim != 2:
            raise ValueError(f"gt_mask must be 2-D, got shape {gt_mask.shape}")
        self.gt_mask = gt_mask == 1
        self.not_ignore_mask = gt_mask != ignore_label
        self.not_clicked_map = np.ones_like(self.gt_mask, dtype=bool)
        self.clicks: list[Click] = []

    def make_next_click(self, pred_mask: np.ndarray) -> tuple[int, int, bool]:
        """Add the next click for the binary prediction ``pred_mask`` and return it as ``(y, x, is_positive)``."""
        y, x, positive = self.next_click(pred_mask)
        self.add_click(Click(y, x, positive, len(self.clicks)))
        return y, x, positive

    def next_click(self, pred_mask: np.ndarray) -> tuple[int, int, bool]:
        pred_mask = np.asarray(pred_mask, dtype=bool)
        if pred_mask.shape != self.gt_mask.shape:
            raise ValueError(f"pred_mask has shape {pred_mask.shape}, gt_mask {self.gt_mask.shape}")
        fn = self.gt_mask & ~pred_mask & self.not_ignore_mask
        fp = ~self.gt_mask & pred_mask & self.not_ignore_mask
        fn_dt = _inner_distance(fn) * self.not_clicked_map
        fp_dt = _inner_distance(fp) * self.not_clicked_map
        fn_max, fp_max = fn_dt.max(), fp_dt.max()
        positive = bool(fn_max > fp_max)
        dt, best = (fn_dt, fn_max) if positive else (fp_dt, fp_max)
        ys, xs = np.nonzero(dt == best)  # row-major: the first is the reference's choice
        return int(ys[0]), int(xs[0]), positive

    def add_click(self, click: Click) -> None:
        self.clicks.append(click)
        self.not_clicked_map[int(click.y), int(click.x)] = False

    def get_clicks(self) -> list[Click]:
        return list(self.clicks)

    def __len__(self) -> int:
        return len(self.clicks)


def _inner_distance(region: np.ndarray) -> np.ndarray:
    """Distance to the region's boundary, with the image border counting as boundary (1-pixel zero padding)."""
    padded = np.pad(region, 1, mode="constant").astype(np.uint8)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]
