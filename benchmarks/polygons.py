"""Masks as Label Studio polygons: round-trip IoU, vertices per object and time per mask, on GrabCut and Berkeley.

Every ground-truth object becomes polygons (:func:`labelstudio.polygons.mask_polygons`) at a few tolerances and is
rasterised back as Label Studio's polygon regions are decoded (:func:`labelstudio.regions.polygon_mask`, pixel
centres inside). One Markdown table per dataset: IoU with the mask (mean, min), vertices per object (all its
polygons, seams included: mean, median, max) and milliseconds per mask for ``mask_polygons`` (median over the
objects of the best of ``--repeats`` runs). Then the time for masks of 3840 x 2160: GrabCut's masks scaled up,
and a speckled one, where the per-ring work dominates.

    adaptiveclick benchmark polygons
    adaptiveclick benchmark polygons --tolerances 0,1,2 --holes fill --repeats 5
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from adaptiveclick.evaluation.datasets import BerkeleyDataset, GrabCutDataset
from adaptiveclick.labelstudio.polygons import (
    DEFAULT_HOLES,
    DEFAULT_TOLERANCE,
    HOLE_MODES,
    mask_polygons,
    polygons_mask,
)

DATASETS = (GrabCutDataset, BerkeleyDataset)
SIZE_4K = (3840, 2160)  # (width, height)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--tolerances",
        default=f"0,0.5,{DEFAULT_TOLERANCE:g},2,4",
        help=f"comma-separated tolerances in px (default 0,0.5,{DEFAULT_TOLERANCE:g},2,4; the default is "
        f"{DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument("--holes", choices=HOLE_MODES, default=DEFAULT_HOLES, help="holes mode (default seam)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mask, the best counts (default 3)")


def main(args) -> int:
    from .common import print_table  # (the shared table printer; its module imports torch)

    tolerances = [float(t) for t in args.tolerances.split(",") if t.strip()]
    headers = ["tolerance, px", "objects", "IoU mean", "IoU min", "vertices mean", "median", "max", "ms per mask"]
    big_masks = []
    for dataset_class in DATASETS:
        masks = _masks(dataset_class, args.data_root)
        if dataset_class is GrabCutDataset:
            big_masks = [cv2.resize(m.view(np.uint8), SIZE_4K, interpolation=cv2.INTER_NEAREST) > 0 for m in masks]
        rows = [_row(masks, tolerance, args.holes, args.repeats) for tolerance in tolerances]
        print_table(headers, rows, f"{dataset_class.name}, holes={args.holes}")
    rows = []
    speckled = _speckled()
    for tolerance in tolerances:
        ms = np.array([_best_ms(mask, tolerance, args.holes, args.repeats) for mask in big_masks])
        worst = _best_ms(speckled, tolerance, args.holes, args.repeats)
        rows.append([_tolerance(tolerance), f"{np.median(ms):.1f}", f"{ms.max():.1f}", f"{worst:.0f}"])
    headers = ["tolerance, px", f"{len(big_masks)} GrabCut masks scaled up: ms median", "max", "speckled mask: ms"]
    title = (
        f"{SIZE_4K[0]}x{SIZE_4K[1]} masks, holes={args.holes}; the speckled one is an ellipse with 0.05% of its "
        f"pixels flipped ({len(mask_polygons(speckled, 0, 'fill'))} parts, many one-pixel holes)"
    )
    print_table(headers, rows, title)
    return 0


def _speckled() -> np.ndarray:
    """``[2160, 3840]``: a large ellipse with scattered single pixels flipped (noise a threshold can leave)."""
    width, height = SIZE_4K
    yy, xx = np.mgrid[:height, :width]
    mask = (yy - height / 2) ** 2 / (0.4 * height) ** 2 + (xx - width / 2) ** 2 / (0.4 * width) ** 2 < 1
    mask ^= np.random.default_rng(0).random(mask.shape) < 0.0005
    return mask


def _masks(dataset_class, data_root: Path) -> list[np.ndarray]:
    return [sample.mask for sample in dataset_class(Path(data_root) / dataset_class.name)]


def _row(masks: list[np.ndarray], tolerance: float, holes: str, repeats: int) -> list:
    ious, vertices, ms = [], [], []
    for mask in masks:
        ms.append(_best_ms(mask, tolerance, holes, repeats))
        polygons = mask_polygons(mask, tolerance, holes)
        back = polygons_mask(polygons, *mask.shape)
        ious.append((back & mask).sum() / max(1, (back | mask).sum()))
        vertices.append(sum(len(p) for p in polygons))
    return [
        _tolerance(tolerance),
        len(masks),
        f"{np.mean(ious):.4f}",
        f"{np.min(ious):.4f}",
        f"{np.mean(vertices):.0f}",
        f"{np.median(vertices):.0f}",
        max(vertices),
        f"{np.median(ms):.2f}",
    ]


def _tolerance(tolerance: float) -> str:
    return f"{tolerance:g} (default)" if tolerance == DEFAULT_TOLERANCE else f"{tolerance:g}"


def _best_ms(mask: np.ndarray, tolerance: float, holes: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        mask_polygons(mask, tolerance, holes)
        best = min(best, time.perf_counter() - start)
    return best * 1e3
