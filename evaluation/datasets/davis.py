"""DAVIS (the 345-frame interactive-segmentation subset of RITM) and COCO MVal, which share its layout."""

from __future__ import annotations

import numpy as np

from .base import Annotation, PairedFolderDataset, read_color_mask


class DavisDataset(PairedFolderDataset):
    """DAVIS: ``img/<id>.jpg``, ``gt/<id>.png``; any non-zero pixel (in any channel) is the object, as in RITM."""

    name = "DAVIS"
    layout = "img/<id>.jpg and gt/<id>.png"
    images_dir = "img"
    masks_dir = "gt"

    def read_annotation(self, image_id: str) -> Annotation:
        labels = read_color_mask(self.mask_path(image_id)).max(axis=2)
        return Annotation((labels > 0).astype(np.int32), [1])


class CocoMValDataset(DavisDataset):
    """COCO MVal (800 instances): the DAVIS layout (``img/``, ``gt/``)."""

    name = "COCO_MVal"
