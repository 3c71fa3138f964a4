"""Annotation regions as masks: which annotation of a task counts, and brush, polygon and keypoint regions
decoded to ``[H, W]`` bool masks.

* ``brushlabels`` with RLE, decoded at the region's original size (resized when the image file differs);
* ``polygonlabels``: vertices in percent of the image, filled (pixel centres inside the polygon);
* ``keypointlabels``: a disk of the keypoint's drawn size, at least ``KEYPOINT_MIN_RADIUS`` px.
"""

from __future__ import annotations

import cv2
import numpy as np

from .rle import decode_rle

KEYPOINT_MIN_RADIUS = 5  # px; a keypoint-only object must survive the training crops
MASK_TYPES = ("brushlabels", "polygonlabels")


def records(task: dict, key: str) -> list[dict]:
    """The objects of a task's ``annotations`` or ``predictions`` list (anything else in a hostile task: none)."""
    found = task.get(key)
    return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []


def choose_annotation(task: dict) -> tuple[dict | None, str]:
    """The annotation to train on, or ``(None, reason)``."""
    annotations = records(task, "annotations")
    if not annotations:
        return None, "no annotations"
    usable = [a for a in annotations if not a.get("was_cancelled")]
    if not usable:
        return None, "annotation cancelled"
    truth = [a for a in usable if a.get("ground_truth")]
    pool = truth or usable
    return max(pool, key=recency), ""


def recency(record: dict) -> tuple:
    """Sort key of annotations and predictions, latest last: the time Label Studio stamped, then the id (ids of
    any JSON type compare, a hostile task cannot make the comparison fail)."""
    stamp = str(record.get("updated_at") or record.get("created_at") or "")
    ident = record.get("id")
    numeric = isinstance(ident, int) and not isinstance(ident, bool)
    return stamp, (1, ident, "") if numeric else (0, 0, str(ident))


def is_positive(region: dict) -> bool:
    value = region.get("value") or {}
    flag = region.get("is_positive", value.get("is_positive", True))
    return flag is not False


def region_mask(region: dict, height: int, width: int) -> np.ndarray:
    """``[height, width]`` bool mask of a brush or polygon region; ValueError says why it cannot be made."""
    kind = str(region.get("type", "")).lower()
    value = region.get("value") or {}
    if float(region.get("image_rotation") or 0) != 0:
        raise ValueError(f"image_rotation {region.get('image_rotation')} is not supported")
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
            raise ValueError(f"brush format {value.get('format')!r} is not RLE")
        h, w = int(region.get("original_height") or height), int(region.get("original_width") or width)
        mask = decode_rle(value["rle"], h, w)
        if (h, w) != (height, width):
            if abs(h / w - height / width) > 0.01:
                raise ValueError(f"brush mask is {w}x{h} but the image is {width}x{height}")
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        return mask
    if kind == "polygonlabels":
        points = np.asarray(value.get("points") or [], dtype=np.float64)
        if points.ndim != 2 or points.shape[0] < 3 or points.shape[1] != 2:
            raise ValueError("polygon has fewer than 3 points")
        return polygon_mask(points[:, 0] * width / 100, points[:, 1] * height / 100, height, width)
    raise ValueError(f"unsupported region type {kind or 'unknown'}")


def polygon_mask(xs: np.ndarray, ys: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (vertices in continuous image coordinates, pixel (i, j)
    covering ``[j, j+1) x [i, i+1)``), tested only within the polygon's bounding box."""
    from matplotlib.path import Path as Polygon  # a heavy import, needed only where polygons are decoded

    mask = np.zeros((height, width), bool)
    x0, x1 = max(0, int(np.floor(xs.min()))), min(width, int(np.ceil(xs.max())) + 1)
    y0, y1 = max(0, int(np.floor(ys.min()))), min(height, int(np.ceil(ys.max())) + 1)
    if x0 >= x1 or y0 >= y1:
        return mask
    yy, xx = np.mgrid[y0:y1, x0:x1]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    inside = Polygon(np.stack([xs, ys], axis=1)).contains_points(centres)
    mask[y0:y1, x0:x1] = inside.reshape(yy.shape)
    return mask


def keypoint_disk(region: dict, height: int, width: int) -> np.ndarray:
    value = region.get("value") or {}
    x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
    radius = max(KEYPOINT_MIN_RADIUS, float(value.get("width") or 0) * width / 200)
    yy, xx = np.mgrid[:height, :width]
    return (yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2 <= radius**2
