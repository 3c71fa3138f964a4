"""Dataset loaders for the IIS benchmarks, in their published (RITM) layouts.

Every loader is a sequence of :class:`Sample` (one per object instance): the RGB image, the instance mask and the
ignore mask (pixels that count neither as object nor as background, e.g. GrabCut's 128 "unknown" band).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np


@dataclass(frozen=True)
class Sample:
    """One object instance: ``image [H, W, 3]`` uint8 RGB, ``mask``/``ignore`` ``[H, W]`` bool."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    ignore: np.ndarray

    @property
    def gt(self) -> np.ndarray:
        """``[H, W]`` int8: 1 object, 0 background, -1 ignore (the Clicker's convention)."""
        gt = self.mask.astype(np.int8)
        gt[self.ignore] = -1
        return gt


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return np.ascontiguousarray(image[:, :, ::-1])


def read_gray(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError(f"cannot read mask {path}")
    return mask if mask.ndim == 2 else mask[:, :, 0]


class FolderDataset:
    """Images in ``images_dir`` with one mask per image in ``masks_dir`` (same stem)."""

    name = "folder"
    images_dir = "images"
    masks_dir = "masks"
    mask_suffix = ".png"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        images = self.root / self.images_dir
        if not images.is_dir():
            raise FileNotFoundError(f"{self.name}: no {self.images_dir}/ folder under {self.root}")
        self.image_paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        if not self.image_paths:
            raise FileNotFoundError(f"{self.name}: no images in {images}")

    def __len__(self) -> int:
        return len(self.image_paths)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> Sample:
        path = self.image_paths[index]
        raw = read_gray(self.root / self.masks_dir / (path.stem + self.mask_suffix))
        mask, ignore = self.decode_mask(raw)
        return Sample(path.stem, read_rgb(path), mask, ignore)

    @staticmethod
    def decode_mask(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return raw > 128, raw == 128


class GrabCutDataset(FolderDataset):
    """GrabCut: ``data_GT/<id>.{jpg,bmp}``, ``boundary_GT/<id>.bmp`` (255 object, 128 unknown, 0 background)."""

    name = "GrabCut"
    images_dir = "data_GT"
    masks_dir = "boundary_GT"
    mask_suffix = ".bmp"


class BerkeleyDataset(FolderDataset):
    """Berkeley: ``images/<id>.jpg``, ``masks/<id>.png`` (> 128 object, 128 ignore, as RITM reads them)."""

    name = "Berkeley"
