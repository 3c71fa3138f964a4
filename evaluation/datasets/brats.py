"""BraTS (SimpleClick's 2D slices of BraTS 2020): one tumour mask per slice."""

from __future__ import annotations

import numpy as np

from .base import Annotation, PairedFolderDataset, read_gray


class BraTSDataset(PairedFolderDataset):
    """BraTS: ``image/<id>.png``, ``annotation/<id>.png``; non-zero is the object (first channel), as SimpleClick."""

    name = "BraTS"
    layout = "image/<id>.png and annotation/<id>.png"
    images_dir = "image"
    masks_dir = "annotation"
    image_suffixes = (".png",)
    mask_suffixes = (".png",)

    def read_annotation(self, image_id: str) -> Annotation:
        return Annotation((read_gray(self.mask_path(image_id)) > 0).astype(np.int32), [1])
