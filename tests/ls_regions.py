"""Label Studio regions and tasks as Label Studio stores them, for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from label_studio_sdk.converter.brush import encode_rle

H, W = 40, 60


def brush_region(mask: np.ndarray, label="Object", **extra) -> dict:
    """A brushlabels region as Label Studio stores it (RLE of the RGBA bytes, alpha = the mask)."""
    rgba = np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 4, axis=2)
    return {
        "id": "b",
        "type": "brushlabels",
        "from_name": "mask",
        "to_name": "image",
        "original_width": mask.shape[1],
        "original_height": mask.shape[0],
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_rle(rgba.flatten()), "brushlabels": [label]},
        **extra,
    }


def rectangle_region(box, shape, label="Object", name="box", **extra) -> dict:
    """A rectanglelabels region around the pixel box ``(top, bottom, left, right)`` (inclusive) of an image of
    ``shape`` ``(H, W)``, in percent as Label Studio stores it."""
    (top, bottom, left, right), (h, w) = box, shape
    value = {
        "x": left * 100 / w,
        "y": top * 100 / h,
        "width": (right - left + 1) * 100 / w,
        "height": (bottom - top + 1) * 100 / h,
        "rotation": 0,
        "rectanglelabels": [label],
    }
    return {"type": "rectanglelabels", "from_name": name, "to_name": "image", "value": value, **extra}


def polygon_region(points_percent, label="Object") -> dict:
    return {
        "id": "p",
        "type": "polygonlabels",
        "original_width": W,
        "original_height": H,
        "value": {"points": points_percent, "polygonlabels": [label]},
    }


def keypoint_region(x, y, positive=True, width=1.0) -> dict:
    return {
        "id": "k",
        "type": "keypointlabels",
        "original_width": W,
        "original_height": H,
        "is_positive": positive,
        "value": {"x": x, "y": y, "width": width, "keypointlabels": ["Object"]},
    }


def task(task_id, image, *annotations) -> dict:
    return {"id": task_id, "data": {"image": image}, "annotations": list(annotations)}


def click_request(image_name: str) -> dict:
    """An interactive /predict body: one positive click on a 481x321 local-files image (a GrabCut image)."""
    return {
        "tasks": [{"id": 1, "data": {"image": f"/data/local-files/?d={image_name}"}}],
        "label_config": (Path(__file__).parent.parent / "labelstudio" / "label_config.xml").read_text(),
        "params": {
            "context": {
                "result": [
                    {
                        "type": "keypointlabels",
                        "from_name": "click",
                        "to_name": "image",
                        "original_width": 481,
                        "original_height": 321,
                        "is_positive": True,
                        "id": "k1",
                        "value": {"x": 48.0, "y": 65.0, "width": 0.5, "keypointlabels": ["Object"]},
                    }
                ]
            }
        },
    }
