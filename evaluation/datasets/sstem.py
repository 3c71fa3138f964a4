"""ssTEM (Drosophila ventral nerve cord EM stack, mitochondria): every connected mitochondrion is one object."""

from __future__ import annotations

import cv2
import numpy as np

from .base import Annotation, PairedFolderDataset, read_gray


class SSTEMDataset(PairedFolderDataset):
    """ssTEM ``stack1``: ``raw/<id>.tif`` (grey), ``mitochondria/<id>.png``.

    As SimpleClick: the mask's first channel is split into connected components of non-zero pixels, each an
    instance (labelled 1..n in OpenCV's scan order). The components are 8-connected: SimpleClick asks for 4 but
    passes it where ``cv2.connectedComponentsWithStats`` takes its output array, so OpenCV's default of 8 is what
    every published ssTEM figure used.
    """

    name = "ssTEM"
    layout = "raw/<id>.tif and mitochondria/<id>.png"
    images_dir = "raw"
    masks_dir = "mitochondria"
    image_suffixes = (".tif", ".tiff")
    mask_suffixes = (".png",)
    single_object = False

    def read_annotation(self, image_id: str) -> Annotation:
        mask = read_gray(self.mask_path(image_id)).astype(np.uint8)
        count, labels = cv2.connectedComponents(mask, connectivity=8)
        return Annotation(labels.astype(np.int32), list(range(1, count)))
