"""OAI-ZIB (SimpleClick's 2D knee MRI slices): femoral and tibial cartilage, one object per label value."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Annotation, PairedFolderDataset, read_gray


class OAIZIBDataset(PairedFolderDataset):
    """OAI-ZIB: ``test/image/<id>.png``, ``test/annotations/<id>.png``; each non-zero value of the mask's first
    channel is an instance (sorted by value), as SimpleClick's loader."""

    name = "OAIZIB"
    layout = "<split>/image/<id>.png and <split>/annotations/<id>.png"
    image_suffixes = (".png",)
    mask_suffixes = (".png",)
    single_object = False

    def __init__(self, root: str | Path, split: str = "test") -> None:
        self.images_dir = f"{split}/image"
        self.masks_dir = f"{split}/annotations"
        super().__init__(root)

    def read_annotation(self, image_id: str) -> Annotation:
        labels = read_gray(self.mask_path(image_id)).astype(np.int32)
        return Annotation(labels, [int(v) for v in np.unique(labels) if v != 0])
