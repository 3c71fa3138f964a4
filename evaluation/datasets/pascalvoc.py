"""PASCAL VOC 2012 instance annotations (``SegmentationObject``), the val split, one sample per object."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .base import Annotation, DatasetError, InstanceDataset, read_color_mask, require_dir

#: grey level of VOC's "void" colour (224, 224, 192) (object borders and difficult regions): ignored
VOID_GRAY = 220


class PascalVocDataset(InstanceDataset):
    """PASCAL VOC: ``JPEGImages/<id>.jpg``, ``SegmentationObject/<id>.png``, the image ids in
    ``ImageSets/Segmentation/<split>.txt``.

    Decoded exactly as RITM's loader: the palette PNG is read as colour and converted to grey, each grey level
    other than 0 (background) and 220 (void, ignored) is an object, in increasing grey order. Two palette colours
    share a grey level (instances 1 and 16), so in the rare image with 16+ objects those two count as one object,
    as in every published PascalVOC NoC figure.
    """

    name = "PascalVOC"
    layout = "JPEGImages/<id>.jpg, SegmentationObject/<id>.png, ImageSets/Segmentation/<split>.txt"
    single_object = False

    def __init__(self, root: str | Path, split: str = "val") -> None:
        super().__init__(root)
        self.images = require_dir(self.root / "JPEGImages", self.name, self.layout)
        self.masks = require_dir(self.root / "SegmentationObject", self.name, self.layout)
        list_path = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_path.is_file():
            raise DatasetError(f"{self.name}: no split list {list_path} (expected layout: {self.layout})")
        self.image_ids = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        self.require_images()
        missing = [
            i
            for i in self.image_ids
            if not (self.images / f"{i}.jpg").is_file() or not (self.masks / f"{i}.png").is_file()
        ]
        if missing:
            raise DatasetError(
                f"{self.name}: {len(missing)} image(s) of {list_path.name} lack JPEGImages/<id>.jpg "
                f"or SegmentationObject/<id>.png, e.g. {', '.join(missing[:3])}"
            )

    def image_path(self, image_id: str) -> Path:
        return self.images / f"{image_id}.jpg"

    def read_annotation(self, image_id: str) -> Annotation:
        gray = cv2.cvtColor(read_color_mask(self.masks / f"{image_id}.png"), cv2.COLOR_BGR2GRAY).astype(np.int32)
        objects = [int(v) for v in np.unique(gray) if v not in (0, VOID_GRAY)]
        return Annotation(gray, objects, gray == VOID_GRAY)
