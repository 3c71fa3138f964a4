"""Tiny datasets in each benchmark's published on-disk layout, written the way the real ones are stored.

Each writer fills ``root`` and returns what a loader must give back: ``{instance name: (mask, ignore)}`` in the
expected iteration order, plus the images by image id for checking colours.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import scipy.sparse
from PIL import Image
from scipy.io import savemat

H, W = 36, 48
Expected = dict[str, tuple[np.ndarray, np.ndarray]]


def rgb_image(seed: int, height: int = H, width: int = W) -> np.ndarray:
    """A random RGB image whose top-left pixel is pure red (to catch BGR/RGB mix-ups in lossless formats)."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 0)
    return image


def write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]))


def write_gray(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(array))


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def no_ignore() -> np.ndarray:
    return np.zeros((H, W), bool)


def write_grabcut(root: Path) -> Expected:
    """``data_GT/{a.jpg,b.bmp}``, ``boundary_GT/<id>.bmp``: 255 object, 128 unknown band, 0 background."""
    expected: Expected = {}
    for index, (name, ext) in enumerate([("a", ".jpg"), ("b", ".bmp")]):
        obj, band = box(8, 20, 10, 30), box(6, 22, 8, 32) & ~box(8, 20, 10, 30)
        obj = obj if index == 0 else np.roll(obj, 5, axis=1)
        band = band if index == 0 else np.roll(band, 5, axis=1)
        raw = np.where(obj, 255, np.where(band, 128, 0)).astype(np.uint8)
        write_rgb(root / "data_GT" / f"{name}{ext}", rgb_image(index))
        write_gray(root / "boundary_GT" / f"{name}.bmp", raw)
        expected[name] = (obj, band)
    return expected


def write_berkeley(root: Path) -> Expected:
    """``images/<id>.jpg``, ``masks/<id>.png`` with anti-aliased object values (197, 243, 255) and a 128 band."""
    obj = box(5, 25, 5, 20)
    raw = np.zeros((H, W), np.uint8)
    raw[obj] = 255
    raw[5, 5:20] = 197
    raw[24, 5:20] = 243
    raw[30, :] = 128
    raw[31, :] = 100  # below the threshold: background
    write_rgb(root / "images" / "101.jpg", rgb_image(3))
    write_gray(root / "masks" / "101.png", raw)
    return {"101": (obj, raw == 128)}


def write_davis(root: Path) -> Expected:
    """``img/<id>.jpg``, ``gt/<id>.png`` as a colour PNG: any non-zero channel is the object."""
    expected: Expected = {}
    for index, name in enumerate(["bear_00001", "camel_00010"]):
        obj = box(4 + index, 30, 6, 40 - index)
        colour = np.zeros((H, W, 3), np.uint8)
        colour[obj] = (0, 0, 255) if index == 0 else (0, 3, 0)  # red, and a faint green: both the object
        write_rgb(root / "img" / f"{name}.jpg", rgb_image(10 + index))
        write_rgb(root / "gt" / f"{name}.png", colour)
        expected[name] = (obj, no_ignore())
    return expected


def voc_palette() -> np.ndarray:
    """``[256, 3]`` the PASCAL VOC colour map (bit-interleaved index)."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        c, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
        palette[index] = rgb
    return palette


def write_palette_png(path: Path, indices: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().flatten().tolist())
    image.save(path)


def write_pascalvoc(root: Path) -> Expected:
    """``JPEGImages``, ``SegmentationObject`` palette PNGs (instance index, 255 void border), ``ImageSets``."""
    expected: Expected = {}
    split = {"val": ["2007_000033", "2008_000123"], "train": ["2007_000999"]}
    for index, image_id in enumerate(split["val"] + split["train"]):
        objects = [box(2, 14, 2, 20), box(18, 34, 24, 46)] if index == 0 else [box(5, 30, 5, 40)]
        indices = np.zeros((H, W), np.uint8)
        void = np.zeros((H, W), bool)
        for number, obj in enumerate(objects, start=1):
            ring = cv2.dilate(obj.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~obj
            void |= ring
            indices[obj] = number
        indices[void] = 255
        write_rgb(root / "JPEGImages" / f"{image_id}.jpg", rgb_image(20 + index))
        write_palette_png(root / "SegmentationObject" / f"{image_id}.png", indices)
        if image_id in split["val"]:
            # RITM's decoding orders objects by grey level: index 1 (dark red, 38) before index 2 (dark green, 75)
            for number, obj in enumerate(objects, start=1):
                grey = {1: 38, 2: 75}[number]
                expected[f"{image_id}#{grey}"] = (obj, void)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for name, ids in split.items():
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return expected


def write_sbd_mat(path: Path, segmentation: np.ndarray, categories: list[int]) -> None:
    """An SBD ``inst/*.mat``: struct ``GTinst`` with ``Segmentation``, ``Boundaries`` (a cell of sparse matrices)
    and ``Categories``."""
    ids = [i for i in np.unique(segmentation) if i != 0]
    boundaries = np.empty((len(ids), 1), dtype=object)
    for row, obj in enumerate(ids):
        mask = (segmentation == obj).astype(np.uint8)
        edge = mask - cv2.erode(mask, np.ones((3, 3), np.uint8))
        boundaries[row, 0] = scipy.sparse.csc_matrix(edge.astype(bool))
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(
        str(path),
        {
            "GTinst": {
                "Segmentation": segmentation.astype(np.uint8),
                "Boundaries": boundaries,
                "Categories": np.array(categories, np.uint8).reshape(-1, 1),
            }
        },
    )


def write_sbd(root: Path) -> Expected:
    """``img/<id>.jpg``, ``inst/<id>.mat``, ``train.txt``/``val.txt``."""
    expected: Expected = {}
    layouts = {
        "2008_000202": [box(3, 15, 3, 15), box(3, 15, 20, 44), box(20, 34, 10, 30)],
        "2008_000219": [box(10, 30, 10, 30)],
        "2008_000001": [box(0, 10, 0, 10)],
    }  # train
    for index, (image_id, objects) in enumerate(layouts.items()):
        segmentation = np.zeros((H, W), np.uint8)
        for number, obj in enumerate(objects, start=1):
            segmentation[obj] = number
        write_rgb(root / "img" / f"{image_id}.jpg", rgb_image(30 + index))
        write_sbd_mat(root / "inst" / f"{image_id}.mat", segmentation, [15] * len(objects))
        if image_id != "2008_000001":
            for number, obj in enumerate(objects, start=1):
                expected[f"{image_id}#{number}"] = (obj, no_ignore())
    (root / "val.txt").write_text("2008_000202\n2008_000219\n")
    (root / "train.txt").write_text("2008_000001\n")
    return expected


def write_sstem(root: Path) -> Expected:
    """``raw/<id>.tif`` (grey), ``mitochondria/<id>.png`` (0/255); 8-connected components are the objects."""
    first = box(2, 10, 2, 10)
    corner = box(10, 16, 10, 16)  # touches the first only at a corner: the same object with 8-connectivity
    right = box(20, 30, 30, 44)
    left = box(20, 30, 2, 12)
    mask = first | corner | right | left
    grey = np.random.default_rng(40).integers(0, 256, (H, W), dtype=np.uint8)
    write_gray(root / "raw" / "00.tif", grey)
    write_gray(root / "mitochondria" / "00.png", np.where(mask, 255, 0).astype(np.uint8))
    # OpenCV labels components in raster order of their first pixel: the left one (20, 2) before the right (20, 30)
    return {"00#1": (first | corner, no_ignore()), "00#2": (left, no_ignore()), "00#3": (right, no_ignore())}


def write_brats(root: Path) -> Expected:
    """``image/<id>.png``, ``annotation/<id>.png`` with tumour sub-region labels 1, 2, 4: all one object."""
    labels = np.zeros((H, W), np.uint8)
    labels[5:25, 5:25] = 2
    labels[10:20, 10:20] = 1
    labels[12:15, 12:15] = 4
    write_rgb(root / "image" / "BraTS20_001_slice_070.png", rgb_image(50))
    write_gray(root / "annotation" / "BraTS20_001_slice_070.png", labels)
    return {"BraTS20_001_slice_070": (labels > 0, no_ignore())}


def write_oai_zib(root: Path) -> Expected:
    """``test/image/<id>.png``, ``test/annotations/<id>.png`` with 1 femoral, 2 tibial cartilage (and a train
    split that must not be read)."""
    labels = np.zeros((H, W), np.uint8)
    labels[5:12, 4:40] = 1
    labels[20:26, 6:42] = 2
    for split in ("test", "train"):
        write_rgb(root / split / "image" / "9001104_080.png", rgb_image(60))
        write_gray(root / split / "annotations" / "9001104_080.png", labels)
    write_rgb(root / "train" / "image" / "9002116_050.png", rgb_image(61))
    write_gray(root / "train" / "annotations" / "9002116_050.png", labels)
    return {"9001104_080#1": (labels == 1, no_ignore()), "9001104_080#2": (labels == 2, no_ignore())}


WRITERS = {
    "GrabCut": write_grabcut,
    "Berkeley": write_berkeley,
    "DAVIS": write_davis,
    "PascalVOC": write_pascalvoc,
    "SBD": write_sbd,
    "ssTEM": write_sstem,
    "BraTS": write_brats,
    "OAIZIB": write_oai_zib,
}
