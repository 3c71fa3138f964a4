"""What every dataset loader shares: the :class:`Sample`, image/mask readers and the instance-dataset base class.

A loader lists the images of a dataset in its published on-disk layout and decodes each image's annotation into a
*label map* (an integer per pixel), the ids of the objects in it and an ignore mask. Every object becomes one
:class:`Sample`, so multi-object datasets (PascalVOC, SBD, ssTEM, OAI-ZIB) yield several samples per image, as RITM's
``evaluate_dataset`` iterates ``sample.objects_ids``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: the value of "unknown" pixels in a ground-truth map (never clicked, not counted in IoU)
IGNORE_LABEL = -1


class DatasetError(ValueError):
    """A dataset folder that does not have the expected layout, or a file in it that cannot be read."""


@dataclass(frozen=True)
class Sample:
    """One object instance: ``image [H, W, 3]`` uint8 RGB, ``mask``/``ignore`` ``[H, W]`` bool."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    ignore: np.ndarray

    @property
    def gt(self) -> np.ndarray:
        """``[H, W]`` int8: 1 object, 0 background, :data:`IGNORE_LABEL` ignore (the Clicker's convention)."""
        gt = self.mask.astype(np.int8)
        gt[self.ignore] = IGNORE_LABEL
        return gt


@dataclass(frozen=True)
class Annotation:
    """An image's decoded annotation: ``labels [H, W]`` int, the object ids in it, ``ignore [H, W]`` bool."""

    labels: np.ndarray
    object_ids: list[int]
    ignore: np.ndarray | None = None


def read_rgb(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB; grey-level files are replicated to three channels, as ``cv2.imread`` does."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return np.ascontiguousarray(image[:, :, ::-1])


def read_color_mask(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 BGR, decoded as the reference loaders' ``cv2.imread(path)`` does (palette expanded,
    16-bit scaled to 8, alpha dropped), so that the masks mean exactly what they mean there."""
    mask = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if mask is None:
        raise DatasetError(f"cannot read mask {path}")
    return mask


def read_gray(path: Path) -> np.ndarray:
    """``[H, W]`` uint8: the first channel of :func:`read_color_mask` (RITM's ``cv2.imread(path)[:, :, 0]``)."""
    return np.ascontiguousarray(read_color_mask(path)[:, :, 0])


def files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder`` whose suffix (case-insensitive) is in ``suffixes``."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in suffixes}


def require_dir(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{dataset}: no folder {path} (expected layout: {layout})")
    return path


class InstanceDataset:
    """A sequence of :class:`Sample`, one per object instance, in a stable order (images sorted by name).

    Subclasses set ``name``/``layout``, fill ``self.image_ids`` in ``__init__`` and implement :meth:`image_path`
    and :meth:`read_annotation`. Iterating reads each image once for all its objects; ``len()`` and indexing need
    the object ids of every image, which multi-object datasets find by reading all annotations once (cached).
    """

    name = "dataset"
    layout = ""
    #: True where every image holds exactly one object (id 1): no need to read annotations to count instances
    single_object = True

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.name}: dataset folder {self.root} does not exist (expected layout: {self.layout})"
            )
        self.image_ids: list[str] = []

    def image_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def read_annotation(self, image_id: str) -> Annotation:
        raise NotImplementedError

    def require_images(self) -> None:
        if not self.image_ids:
            raise DatasetError(f"{self.name}: no images under {self.root} (expected layout: {self.layout})")

    def samples_of(self, image_id: str) -> list[Sample]:
        """All object instances of one image."""
        image = read_rgb(self.image_path(image_id))
        annotation = self.read_annotation(image_id)
        if annotation.labels.shape != image.shape[:2]:
            raise DatasetError(
                f"{self.name}: annotation of {image_id} is {annotation.labels.shape[::-1]} pixels, "
                f"its image {image.shape[1::-1]}"
            )
        ignore = np.zeros(image.shape[:2], bool) if annotation.ignore is None else annotation.ignore
        return [
            Sample(self.instance_name(image_id, obj), image, annotation.labels == obj, ignore)
            for obj in annotation.object_ids
        ]

    def instance_name(self, image_id: str, object_id: int) -> str:
        return image_id if self.single_object else f"{image_id}#{object_id}"

    @cached_property
    def instances(self) -> list[tuple[str, int]]:
        """``(image_id, object_id)`` of every instance, in iteration order."""
        if self.single_object:
            return [(image_id, 1) for image_id in self.image_ids]
        return [(image_id, obj) for image_id in self.image_ids for obj in self.read_annotation(image_id).object_ids]

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int) -> Sample:
        image_id, obj = self.instances[index]
        for sample in self.samples_of(image_id):
            if sample.name == self.instance_name(image_id, obj):
                return sample
        raise DatasetError(f"{self.name}: object {obj} of {image_id} disappeared while reading")  # file changed

    def __iter__(self) -> Iterator[Sample]:
        for image_id in self.image_ids:
            yield from self.samples_of(image_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self.image_ids)} images)"


class PairedFolderDataset(InstanceDataset):
    """Images in ``root/images_dir`` with one annotation per image in ``root/masks_dir`` (same file stem).

    Every image must have its annotation; that is checked when the dataset is opened, not an hour into a run.
    """

    images_dir = "images"
    masks_dir = "masks"
    image_suffixes: tuple[str, ...] = IMAGE_SUFFIXES
    mask_suffixes: tuple[str, ...] = IMAGE_SUFFIXES

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        images = require_dir(self.root / self.images_dir, self.name, self.layout)
        masks = require_dir(self.root / self.masks_dir, self.name, self.layout)
        self._images = files_by_stem(images, self.image_suffixes)
        self._masks = files_by_stem(masks, self.mask_suffixes)
        self.image_ids = sorted(self._images)
        self.require_images()
        missing = [stem for stem in self.image_ids if stem not in self._masks]
        if missing:
            raise DatasetError(
                f"{self.name}: {len(missing)} image(s) without annotation in {masks}, e.g. "
                f"{', '.join(missing[:3])} (expected layout: {self.layout})"
            )

    def image_path(self, image_id: str) -> Path:
        return self._images[image_id]

    def mask_path(self, image_id: str) -> Path:
        return self._masks[image_id]
