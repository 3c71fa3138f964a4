"""GrabCut and Berkeley (RITM layout): one object per image, 128 in the mask marks pixels to ignore."""

from __future__ import annotations

import numpy as np

from .base import Annotation, PairedFolderDataset, read_gray


class GrabCutDataset(PairedFolderDataset):
    """GrabCut: ``data_GT/<id>.{jpg,bmp}``, ``boundary_GT/<id>.bmp`` (255 object, 128 unknown band, 0 background).

    As RITM's loader: the mask's first channel, 128 ignored, values above 128 the object.
    """

    name = "GrabCut"
    layout = "data_GT/<id>.jpg|bmp and boundary_GT/<id>.bmp"
    images_dir = "data_GT"
    masks_dir = "boundary_GT"

    def read_annotation(self, image_id: str) -> Annotation:
        raw = read_gray(self.mask_path(image_id))
        return Annotation((raw > 128).astype(np.int32), [1], raw == 128)


class BerkeleyDataset(GrabCutDataset):
    """Berkeley: ``images/<id>.jpg``, ``masks/<id>.png``, decoded as GrabCut's masks."""

    name = "Berkeley"
    layout = "images/<id>.jpg and masks/<id>.png"
    images_dir = "images"
    masks_dir = "masks"
