"""Masks as polygons (labelstudio.polygons): exact round trips at tolerance 0 on synthetic masks (parts, single
pixels, holes, islands in holes, the image border), the seam and fill modes under both fill rules, and the
round trip of every GrabCut and Berkeley object at the default tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from adaptiveclick.evaluation.datasets import BerkeleyDataset, GrabCutDataset
from adaptiveclick.labelstudio.polygons import (
    DEFAULT_TOLERANCE,
    mask_polygons,
    polygons_mask,
    simplify_ring,
    trace_parts,
)
from adaptiveclick.labelstudio.regions import polygon_mask

EIGHT = np.ones((3, 3), bool)  # 8-connectivity, as OpenCV sees parts


def synthetic() -> np.ndarray:
    """``[24, 30]``: a ring with a hole and an island in it, a part with two holes, single pixels (one in a corner
    of the image, two touching diagonally), a one-pixel line, and a part running off the image border."""
    mask = np.zeros((24, 30), bool)
    mask[2:12, 2:12] = True
    mask[4:10, 4:10] = False  # the hole
    mask[6:8, 6:8] = True  # the island inside it
    mask[14:22, 2:14] = True
    mask[16:18, 4:6] = False
    mask[16:20, 9:12] = False
    mask[0, 29] = True  # a single pixel in the image's corner
    mask[5, 20] = mask[6, 21] = True  # two pixels touching diagonally: one part
    mask[9, 15:27] = True  # a one-pixel line
    mask[12:24, 24:30] = True  # off the bottom-right border
    mask[15, 26] = False  # a one-pixel hole
    return mask


def components(mask: np.ndarray) -> list[np.ndarray]:
    labels, count = ndimage.label(mask, structure=EIGHT)
    return [labels == k for k in range(1, count + 1)]


def winding_inside(ring: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[height, width]``: pixel centres with a non-zero winding number (the rule browsers fill polygons with),
    beside :func:`polygon_mask`'s crossing test."""
    yy, xx = np.mgrid[:height, :width]
    px, py = xx.ravel()[:, None] + 0.5, yy.ravel()[:, None] + 0.5
    a, b = ring, np.roll(ring, -1, axis=0)
    side = (b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (px - a[:, 0]) * (b[:, 1] - a[:, 1])
    up = (a[:, 1] <= py) & (py < b[:, 1]) & (side > 0)
    down = (b[:, 1] <= py) & (py < a[:, 1]) & (side < 0)
    return (up.sum(axis=1) - down.sum(axis=1) != 0).reshape(height, width)


def test_every_small_mask_round_trips_exactly():
    """All 4096 masks of 3 x 4 pixels (every part touches the border) and random masks up to 24 x 24 with
    holes and islands: at tolerance 0 the polygons rasterise back to the mask, one polygon per part."""
    masks = [((bits >> np.arange(12)) & 1).astype(bool).reshape(3, 4) for bits in range(1 << 12)]
    rng = np.random.default_rng(0)
    masks += [rng.random(rng.integers(1, 25, 2)) < rng.uniform(0.2, 0.9) for _ in range(150)]
    for mask in masks:
        polygons = mask_polygons(mask, 0)
        assert len(polygons) == len(components(mask))
        assert np.array_equal(polygons_mask(polygons, *mask.shape), mask), mask.astype(int)


def test_synthetic_parts_holes_islands_and_border():
    mask = synthetic()
    parts = components(mask)
    assert len(parts) == 7
    seam = mask_polygons(mask, 0, "seam")
    assert len(seam) == len(parts) and all(len(p) >= 3 for p in seam)
    # each polygon is exactly one part, its holes empty under both fill rules; the largest part comes first
    remaining = list(parts)
    for polygon in seam:
        alone = polygon_mask(polygon[:, 0], polygon[:, 1], *mask.shape)
        assert np.array_equal(winding_inside(polygon, *mask.shape), alone)
        match = [k for k, part in enumerate(remaining) if np.array_equal(alone, part)]
        assert len(match) == 1
        remaining.pop(match[0])
    sizes = [polygon_mask(p[:, 0], p[:, 1], *mask.shape).sum() for p in seam]
    assert sizes == sorted(sizes, reverse=True)
    back = polygons_mask(seam, *mask.shape)
    assert not back[4:10, 4:6].any() and not back[15, 26]  # holes stay empty, beside the island
    # fill: every part's outline with its holes filled; the island is still a polygon of its own
    fill = mask_polygons(mask, 0, "fill")
    assert len(fill) == len(parts)
    assert np.array_equal(polygons_mask(fill, *mask.shape), ndimage.binary_fill_holes(mask))
    assert sum(polygon_mask(p[:, 0], p[:, 1], *mask.shape)[6:8, 6:8].all() for p in fill) == 2  # ring and island


def test_rings_run_opposite_ways_and_islands_are_parts():
    mask = synthetic()
    ring_part = next(p for p in trace_parts(mask) if len(p.holes) == 1 and p.outline[:, 0].max() <= 12)
    (hole,) = ring_part.holes

    def signed(ring):
        x, y = ring[:, 0], ring[:, 1]
        return (x * np.roll(y, -1) - np.roll(x, -1) * y).sum()

    assert signed(ring_part.outline) > 0 > signed(hole)
    island = [p for p in trace_parts(mask) if 6 <= p.outline[:, 0].min() and p.outline[:, 0].max() <= 8]
    assert len(island) == 1 and island[0].area == pytest.approx(4 - 4 / 8)  # a 2 x 2 square, corners cut


@pytest.mark.parametrize("tolerance", [DEFAULT_TOLERANCE, 3.0, 20.0])
def test_nothing_is_dropped_at_any_tolerance(tolerance):
    """Single pixels, a diagonal pair, a one-pixel line: every part still comes back as a polygon of >= 3
    vertices that covers pixels of that part and of no other."""
    mask = synthetic()
    polygons = mask_polygons(mask, tolerance)
    assert len(polygons) == len(components(mask))
    parts = components(mask)
    for polygon in polygons:
        assert len(polygon) >= 3
        covered = polygon_mask(polygon[:, 0], polygon[:, 1], *mask.shape)
        assert any((covered & part).any() for part in parts)
    back = polygons_mask(polygons, *mask.shape)
    assert all((back & part).any() for part in parts)  # every part, even a single pixel, is covered
    single = np.zeros((5, 5), bool)
    single[2, 2] = True
    (diamond,) = mask_polygons(single, tolerance)
    assert len(diamond) == 4 and np.array_equal(polygons_mask([diamond], 5, 5), single)


def test_simplification_keeps_vertices_of_the_exact_ring_and_its_orientation():
    yy, xx = np.mgrid[:200, :300]
    mask = (yy - 100) ** 2 / 80**2 + (xx - 150) ** 2 / 120**2 < 1
    (part,) = trace_parts(mask)
    simplified = simplify_ring(part.outline, DEFAULT_TOLERANCE)
    assert 8 < len(simplified) < len(part.outline) / 4
    exact = {tuple(v) for v in part.outline}
    assert all(tuple(v) in exact for v in simplified)
    positions = [next(k for k, v in enumerate(part.outline) if tuple(v) == tuple(s)) for s in simplified]
    assert positions == sorted(positions)  # in ring order, the same way round
    iou = _iou(polygons_mask([simplified], *mask.shape), mask)
    assert iou > 0.99
    assert np.array_equal(simplify_ring(part.outline, 0), part.outline)


def test_seam_keeps_holes_empty_after_simplification():
    yy, xx = np.mgrid[:120, :160]
    mask = (yy - 60) ** 2 + (xx - 80) ** 2 < 55**2
    for cy, cx, r in ((60, 50, 12), (40, 100, 10), (85, 95, 14)):
        mask &= (yy - cy) ** 2 + (xx - cx) ** 2 >= r**2
    mask[60, 50] = True  # a one-pixel island in a hole
    seam = mask_polygons(mask, DEFAULT_TOLERANCE, "seam")
    assert len(seam) == 2
    back = polygons_mask(seam, *mask.shape)
    assert _iou(back, mask) > 0.97
    # (a simplified chord may pass exactly through a pixel centre, which the two rules can settle differently:
    # compare them inside the holes, where the seams are)
    winding = winding_inside(seam[0], *mask.shape)
    for cy, cx in ((60, 44), (40, 100), (85, 95)):
        assert not back[cy - 3 : cy + 3, cx - 3 : cx + 3].any() and not winding[cy - 3 : cy + 3, cx - 3 : cx + 3].any()
    assert back[60, 50] and winding[30, 80]  # the island; the part
    fill = mask_polygons(mask, DEFAULT_TOLERANCE, "fill")
    assert polygons_mask(fill, *mask.shape)[40, 100] and len(fill) == 2
    assert len(seam[0]) > len(fill[0])  # the holes and their seams


def test_empty_and_bad_input():
    assert mask_polygons(np.zeros((4, 5), bool)) == [] and mask_polygons(np.zeros((0, 5), bool)) == []
    with pytest.raises(ValueError, match="holes must be one of seam, fill"):
        mask_polygons(np.ones((3, 3), bool), holes="separate")
    with pytest.raises(ValueError, match="tolerance"):
        mask_polygons(np.ones((3, 3), bool), -1)
    with pytest.raises(ValueError, match="tolerance"):
        mask_polygons(np.ones((3, 3), bool), float("nan"))
    with pytest.raises(ValueError, match="2-D"):
        mask_polygons(np.ones((3, 3, 1), bool))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


MAX_VERTICES = 1000  # per object; measured: 308 (GrabCut), 708 (Berkeley)
MEAN_VERTICES = 200  # per dataset; measured: 110 (GrabCut), 149 (Berkeley)
EXACT_CHECKED = 10


@pytest.mark.parametrize("dataset", [GrabCutDataset, BerkeleyDataset], ids=["GrabCut", "Berkeley"])
def test_ground_truth_objects_round_trip(data_root, dataset):
    """Every object, rasterised back as Label Studio decodes polygons: IoU >= 0.97 at the default with at most
    MAX_VERTICES vertices (MEAN_VERTICES on average), and exact at tolerance 0 (checked on the first
    EXACT_CHECKED objects: exact rings have hundreds of vertices, slow to rasterise with matplotlib)."""
    samples = list(dataset(data_root / dataset.name))
    vertices, ious = [], []
    for k, sample in enumerate(samples):
        polygons = mask_polygons(sample.mask)
        assert len(polygons) == len(components(sample.mask)), sample.name  # one polygon per part, none dropped
        if k < EXACT_CHECKED:
            exact = mask_polygons(sample.mask, 0)
            assert np.array_equal(polygons_mask(exact, *sample.mask.shape), sample.mask), sample.name
        ious.append(_iou(polygons_mask(polygons, *sample.mask.shape), sample.mask))
        vertices.append(sum(len(p) for p in polygons))
    worst = int(np.argmin(ious))
    assert ious[worst] >= 0.97, (samples[worst].name, ious[worst])
    assert max(vertices) <= MAX_VERTICES and np.mean(vertices) <= MEAN_VERTICES, (max(vertices), np.mean(vertices))


def test_polygon_answers_are_capped_with_a_brush_fallback():
    """A noisy mask (thousands of specks) is answered by its brush region where the label has one, else by its
    largest parts within the limits; the trace is refused before any per-ring work."""
    import time

    from adaptiveclick.labelstudio.label_config import parse_label_config, recommended_config
    from adaptiveclick.labelstudio.polygons import MAX_PARTS, PolygonLimit, PolygonLimits, capped_polygons
    from adaptiveclick.labelstudio.predictions import mask_regions

    rng = np.random.default_rng(0)
    noise = rng.random((1000, 1500)) > 0.7
    noise[100:400, 100:600] = True  # one large part among the specks
    start = time.perf_counter()
    with pytest.raises(PolygonLimit, match="parts"):
        mask_polygons(noise, 1.0, "seam", PolygonLimits())
    assert time.perf_counter() - start < 5
    capped = capped_polygons(noise, 1.0)
    assert 1 <= len(capped) <= MAX_PARTS and sum(len(r) for r in capped) <= PolygonLimits().vertices
    big = polygons_mask([capped[0]], *noise.shape)
    assert big[200, 300] and big.sum() >= 300 * 500  # the largest part comes first, holes filled
    both = parse_label_config(recommended_config())
    regions = mask_regions(both, "Object", noise, 0.5)
    kinds = [r["type"] for r in regions]
    assert kinds.count("brushlabels") == 1 and "polygonlabels" not in kinds  # the brush region carries it
    polygon_only = parse_label_config(
        '<View><Image name="image" value="$image"/><PolygonLabels name="p" toName="image"><Label value="Object"/>'
        '</PolygonLabels><KeyPointLabels name="k" toName="image" smart="true"><Label value="Object"/>'
        "</KeyPointLabels></View>"
    )
    regions = mask_regions(polygon_only, "Object", noise, 0.5)
    assert 1 <= len(regions) <= MAX_PARTS and all(r["type"] == "polygonlabels" for r in regions)
    small = np.zeros((40, 60), bool)
    small[5:20, 5:30] = True
    assert len(mask_polygons(small, 1.0, "seam", PolygonLimits())) == 1  # ordinary masks are untouched
