"""A mask as polygons: one polygon per connected part (none dropped), holes kept empty, simplified to a tolerance.

Label Studio's ``polygonlabels`` region is one closed ring of vertices without holes; a predicted mask may have
several parts, holes, and islands inside the holes. :func:`mask_polygons` turns a ``[H, W]`` bool mask into one
ring per part, in pixels: ``(x, y)`` with pixel ``(i, j)`` covering ``[j, j+1) x [i, i+1)``, the convention of
:func:`labelstudio.regions.polygon_mask`, which fills the pixels whose centre lies inside a polygon.

Tracing. ``cv2.findContours`` (``RETR_CCOMP``) finds every part (8-connected pixels) and every hole (4-connected
background enclosed by a part; an island inside a hole is a part of its own) as a chain of boundary pixel centres.
A ring through pixel centres would put the boundary pixels' centres on the polygon, where rasterisers disagree, so
each chain becomes the outline along pixel edges instead: at every boundary pixel of the chain, the edges facing
the background that the tracer swept between the previous and the next pixel of the chain, in order (one table
lookup per pixel, see :data:`_EMITTED`). The ring's vertices are the midpoints of those edges, not the pixel
corners: a pixel centre is never on such a ring, so rasterised back it gives exactly the part's pixels (the
tests check every 3 x 4 mask and random ones with holes and islands), and on a slanted edge the midpoints lie on
the edge's line where corners form a staircase half a pixel to either side, so simplifying them loses less of the
object per vertex.

Simplification. Douglas-Peucker (``cv2.approxPolyDP``) on each ring (outline and holes) at ``tolerance`` pixels:
no vertex of the exact ring is farther than that from the simplified one, whose vertices are some of the exact
ring's. A fixed tolerance costs a small or thin part a large share of its area (at 1 px a 1083-pixel camel with
thin legs in Berkeley would come back at IoU 0.94), so a ring whose simplification moves more than
:data:`MAX_AREA_LOSS` of its area is simplified again at half the tolerance, up to :data:`MAX_RETRIES` times, and
is kept exact after that: a single pixel comes back as the diamond of its four edge midpoints. ``tolerance=0``
keeps the exact rings (collinear vertices removed). At :data:`DEFAULT_TOLERANCE` every ground-truth object of
GrabCut and Berkeley comes back at IoU >= 0.98 (``adaptiveclick benchmark polygons`` prints the figures).

Holes (``holes=``):

* ``"seam"`` (default): every hole is cut into the ring of its part along a zero-width seam, a path from a vertex
  of the outline to a vertex of the hole and back along itself, and the hole is walked the opposite way round. The
  seam's two passes cancel for every point not on it, under the even-odd and the non-zero rule alike, and it runs
  along pixel edges (horizontal and vertical steps on integer coordinates) so no pixel centre is on it: the hole
  rasterises empty. Label Studio draws the seam as a line from the outline to the hole.
* ``"fill"``: the outline alone; holes come back filled (the islands inside them are still polygons of their own).

Limits. An answer is at most :data:`MAX_PARTS` parts and :data:`MAX_VERTICES` vertices (a noisy mask can have
thousands of specks, which Label Studio's editor cannot handle and tracing would pay for): :func:`mask_polygons`
with ``limits`` raises :class:`PolygonLimit` right after OpenCV's trace when the mask has more parts or boundary
pixels than that allows, before any per-ring work, and :func:`capped_polygons` gives the largest parts, holes
filled, within the limits (where no brush region can carry the mask instead, :mod:`labelstudio.predictions`).

OpenCV and the rasteriser are imported inside the functions that use them: :mod:`labelstudio.settings` reads this
module's defaults, and a command line's ``--help`` should not pay for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TOLERANCE = 1.0  # px
HOLE_MODES = ("seam", "fill")
DEFAULT_HOLES = "seam"
MAX_AREA_LOSS = 0.01  # at most this share of a ring's area may change in simplifying it
MAX_RETRIES = 4  # halvings of the tolerance for a ring that would lose more, before keeping it exact
MAX_PARTS = 100  # polygons in one answer
MAX_VERTICES = 20_000  # vertices of all its polygons together
MAX_TRACED_POINTS = 2_000_000  # boundary pixels traced for one answer (bounds the work before simplifying)


class PolygonLimit(ValueError):
    """The mask needs more polygon parts or vertices than one answer carries (:data:`MAX_PARTS`,
    :data:`MAX_VERTICES`)."""


@dataclass(frozen=True)
class PolygonLimits:
    parts: int = MAX_PARTS
    vertices: int = MAX_VERTICES
    traced_points: int = MAX_TRACED_POINTS


# The 8 neighbour directions (dx, dy) in the order the contour tracer sweeps them, image axes (y down).
_DIRECTIONS = np.array([(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)], np.int64)
_CODE = np.full(9, -1, np.int64)  # (dy + 1) * 3 + (dx + 1) -> index into _DIRECTIONS
_CODE[(_DIRECTIONS[:, 1] + 1) * 3 + _DIRECTIONS[:, 0] + 1] = np.arange(8)
_SINGLE = 64  # table row of a one-pixel chain (no previous or next pixel)


def _emission_table() -> tuple[np.ndarray, np.ndarray]:
    """``[65, 4]`` codes (``-1`` padded) and ``[65]`` counts: the edge midpoints one boundary pixel adds to a ring,
    indexed by ``8 * previous + next`` (the directions from the pixel to its neighbours in the chain).

    OpenCV follows a border keeping the background on one side: from the previous pixel it sweeps the
    neighbours in decreasing direction until it finds the next one, and every neighbour passed is background.
    The 4-neighbours among them (even codes) are the background across an edge of this pixel: the ring runs
    through those edges' midpoints, in sweep order. Coming back the way it came (a one-pixel-wide line) the sweep
    goes all the way round."""
    codes = np.full((_SINGLE + 1, 4), -1, np.int64)
    counts = np.zeros(_SINGLE + 1, np.int64)
    for previous in range(8):
        for following in range(8):
            sweep = (previous - following) % 8 or 8
            passed = [(previous - t) % 8 for t in range(1, sweep + 1)]
            edges = [u for u in passed if u % 2 == 0 and u != following]
            codes[8 * previous + following, : len(edges)] = edges
            counts[8 * previous + following] = len(edges)
    codes[_SINGLE] = [6, 4, 2, 0]  # an isolated pixel: all four edges
    counts[_SINGLE] = 4
    return codes, counts


_EMITTED, _EMITTED_COUNT = _emission_table()


@dataclass(frozen=True)
class Part:
    """One connected part of a mask: its outline and its holes, rings ``[N, 2]`` of ``(x, y)`` in pixels, and the
    area the traced rings enclose (px², outline minus holes; near the pixel count: a traced ring cuts an eighth of
    a pixel off every convex corner and adds one at every concave corner).

    The outline runs one way round and every hole the other, so the part is what the outline encloses minus the
    holes under both fill rules."""

    outline: np.ndarray
    holes: tuple[np.ndarray, ...]
    area: float


def trace_parts(mask: np.ndarray, limits: PolygonLimits | None = None) -> list[Part]:
    """The exact outlines of ``mask`` ``[H, W]`` (bool; nonzero is the object): every part with its holes,
    largest part first; :class:`PolygonLimit` when ``limits`` are given and the mask has more parts or boundary
    pixels than they allow (found from OpenCV's trace, before any other work)."""
    import cv2

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask [H, W], got shape {mask.shape}")
    if mask.size == 0:
        return []
    image = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)  # no copy for a bool mask
    contours, hierarchy = cv2.findContours(image, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    parents = hierarchy[0][:, 3]
    if limits is not None:
        outlines = int((parents < 0).sum())
        traced = int(np.fromiter((len(c) for c in contours), np.int64, len(contours)).sum())
        if outlines > limits.parts or traced > limits.traced_points:
            raise PolygonLimit(
                f"the mask has {outlines} parts and {traced} boundary pixels: more than one polygon answer carries "
                f"({limits.parts} parts, {limits.traced_points} boundary pixels)"
            )
    rings, areas = _pixel_edge_rings(contours)  # doubled coordinates: integers; twice the signed areas
    # outlines one way round (positive area, y down), holes the other
    rings = [ring[::-1] if (area < 0) == (parent < 0) else ring for ring, area, parent in zip(rings, areas, parents)]
    holes: dict[int, list[int]] = {}
    for index in np.flatnonzero(parents >= 0).tolist():
        holes.setdefault(int(parents[index]), []).append(index)
    parts = []
    for index in np.flatnonzero(parents < 0).tolist():
        inner = holes.get(index, [])
        area = (abs(areas[index]) - sum(abs(areas[k]) for k in inner)) / 8  # doubled: 4x the area, and twice it
        parts.append(Part(rings[index] / 2.0, tuple(rings[k] / 2.0 for k in inner), float(area)))
    parts.sort(key=lambda part: -part.area)  # stable: equal parts keep OpenCV's order
    return parts


def _pixel_edge_rings(contours) -> tuple[list[np.ndarray], np.ndarray]:
    """Each OpenCV chain of boundary pixels as the ring of its pixel-edge midpoints, ``[M, 2]`` int64 in doubled
    coordinates (a pixel centre ``(x + 0.5, y + 0.5)`` is ``(2x + 1, 2y + 1)``), collinear vertices removed, and
    twice each ring's signed area in those coordinates. Vectorised over all chains at once: one table lookup
    per boundary pixel."""
    lengths = np.fromiter((len(c) for c in contours), np.int64, len(contours))
    points = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.int64)
    previous, following = _ring_neighbours(lengths)
    to_previous = points[previous] - points
    to_following = points[following] - points
    code_previous = _CODE[(to_previous[:, 1] + 1) * 3 + to_previous[:, 0] + 1]
    code_following = _CODE[(to_following[:, 1] + 1) * 3 + to_following[:, 0] + 1]
    row = np.where(code_previous < 0, _SINGLE, 8 * code_previous + code_following)
    codes = _EMITTED[row]
    emitted = codes >= 0  # row-major: each pixel's midpoints in sweep order, pixel after pixel
    centres = 2 * points + 1
    vertices = np.repeat(centres, _EMITTED_COUNT[row], axis=0) + _DIRECTIONS[codes[emitted]]
    ring_lengths = np.add.reduceat(_EMITTED_COUNT[row], np.concatenate(([0], np.cumsum(lengths)[:-1])))
    vertices, ring_lengths = _drop_collinear(vertices, ring_lengths)
    _, following = _ring_neighbours(ring_lengths)
    crosses = vertices[:, 0] * vertices[following, 1] - vertices[following, 0] * vertices[:, 1]
    areas = np.bincount(np.repeat(np.arange(ring_lengths.size), ring_lengths), crosses, ring_lengths.size)
    return np.split(vertices, np.cumsum(ring_lengths)[:-1]), areas


def _ring_neighbours(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of every vertex's previous and next vertex within its ring, for rings stored one after another."""
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    offset = np.arange(lengths.sum()) - starts
    sizes = np.repeat(lengths, lengths)
    return starts + (offset - 1) % sizes, starts + (offset + 1) % sizes


def _drop_collinear(vertices: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the vertices that lie on a straight run between their neighbours (rings stored one after another)."""
    previous, following = _ring_neighbours(lengths)
    into = vertices - vertices[previous]
    out = vertices[following] - vertices
    straight = (into[:, 0] * out[:, 1] == into[:, 1] * out[:, 0]) & ((into * out).sum(axis=1) > 0)
    ring = np.repeat(np.arange(lengths.size), lengths)
    return vertices[~straight], np.bincount(ring[~straight], minlength=lengths.size)


def simplify_ring(ring: np.ndarray, tolerance: float, max_loss: float = MAX_AREA_LOSS) -> np.ndarray:
    """Douglas-Peucker on a closed ring ``[N, 2]`` of pixel-edge vertices (multiples of 0.5 px) at ``tolerance``
    px; a subset of its vertices in ring order. Where that would cost more than ``max_loss`` of the ring's area
    (thin or small rings), the ring is simplified again at half the tolerance, and so on, down to the exact ring."""
    import cv2

    check_tolerance(tolerance)
    if tolerance == 0 or len(ring) <= 3:
        return ring
    doubled = np.rint(ring * 2).astype(np.int64)  # the vertices are multiples of 0.5 px: exact integers
    x, y = doubled[:, 0], doubled[:, 1]
    crosses = x * np.append(y[1:], y[0]) - np.append(x[1:], x[0]) * y
    prefix = np.concatenate(([0], np.cumsum(crosses)))
    area = abs(int(prefix[-1]))
    if max_loss * area < 1:
        # dropping a vertex cuts off a cap whose (doubled) shoelace sum is a non-zero integer: nothing can go,
        # so a speck (under 12.5 px² at 1%) skips the attempts
        return ring
    # the vertices of a pixel-edge ring are distinct (each is the midpoint of its own edge), so a kept vertex's
    # place in the ring is found by its coordinates
    keys = x * (1 << 32) + y
    order = np.argsort(keys)
    sorted_keys = keys[order]
    points = doubled.astype(np.int32).reshape(-1, 1, 2)
    for attempt in range(MAX_RETRIES + 1):
        kept = cv2.approxPolyDP(points, 2 * tolerance / 2**attempt, True).reshape(-1, 2).astype(np.int64)
        index = np.sort(order[np.searchsorted(sorted_keys, kept[:, 0] * (1 << 32) + kept[:, 1])])
        if len(index) >= 3 and _lost_area(doubled, prefix, index) <= max_loss * area:
            return ring[index]
    return ring


def check_tolerance(tolerance: float) -> None:
    number = isinstance(tolerance, (int, float, np.integer, np.floating)) and not isinstance(tolerance, bool)
    if not number or not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number of pixels >= 0, got {tolerance!r}")


def _lost_area(ring: np.ndarray, prefix: np.ndarray, index: np.ndarray) -> int:
    """Twice the area between a ring and its simplification (the kept vertices ``index``, increasing): the sum over
    the dropped stretches of the area between the stretch and its chord (``prefix``: cumulative shoelace terms)."""
    start, end = index, np.append(index[1:], index[0])
    along = prefix[end] - prefix[start]
    along[-1] = prefix[-1] - prefix[start[-1]] + prefix[end[-1]]  # the stretch that wraps round the ring's start
    a, b = ring[start], ring[end]
    chord_back = b[:, 0] * a[:, 1] - a[:, 0] * b[:, 1]
    return int(np.abs(along + chord_back).sum())


def simplify_part(part: Part, tolerance: float) -> Part:
    """The part with every ring simplified at ``tolerance`` px (``area`` stays the traced one)."""
    if tolerance == 0:
        return part
    outline = simplify_ring(part.outline, tolerance)
    return Part(outline, tuple(simplify_ring(h, tolerance) for h in part.holes), part.area)


def mask_polygons(
    mask: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    holes: str = DEFAULT_HOLES,
    limits: PolygonLimits | None = None,
) -> list[np.ndarray]:
    """One closed ring ``[N, 2]`` of ``(x, y)`` in pixels (float) per connected part of ``mask`` ``[H, W]``,
    largest part first; holes cut in along a seam or filled (``holes``: ``"seam"`` or ``"fill"``, see the module
    docstring). An empty mask has no polygon. With ``limits``, :class:`PolygonLimit` when the answer would hold
    more parts or vertices than they allow."""
    check_tolerance(tolerance)
    if holes not in HOLE_MODES:
        raise ValueError(f"holes must be one of {', '.join(HOLE_MODES)}, got {holes!r}")
    parts = trace_parts(mask, limits)
    if holes == "fill":
        rings = [simplify_ring(part.outline, tolerance) for part in parts]  # the holes need no simplifying
    else:
        rings = [seamed_ring(simplify_part(part, tolerance)) for part in parts]
    vertices = sum(len(ring) for ring in rings)
    if limits is not None and vertices > limits.vertices:
        raise PolygonLimit(f"the polygons have {vertices} vertices, more than the {limits.vertices} of one answer")
    return rings


def capped_polygons(
    mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, limits: PolygonLimits = PolygonLimits()
) -> list[np.ndarray]:
    """The largest parts of ``mask`` as polygons within ``limits``, holes filled: at most ``limits.parts`` parts
    (the largest by pixels), then as many of them, largest first, as fit in ``limits.vertices``."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(mask, dtype=bool).view(np.uint8), connectivity=8
    )
    if count <= 1:
        return []
    largest = np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")[: limits.parts] + 1
    kept = np.isin(labels, largest).astype(np.uint8)
    outlines, _ = cv2.findContours(kept, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(kept)
    cv2.drawContours(filled, outlines, -1, 1, thickness=cv2.FILLED)  # holes filled: outlines only
    rings, total = [], 0
    for ring in mask_polygons(filled.astype(bool), tolerance, "fill"):
        if total + len(ring) > limits.vertices:
            break
        rings.append(ring)
        total += len(ring)
    return rings


def seamed_ring(part: Part) -> np.ndarray:
    """The part as one ring: each hole entered from the outline vertex nearest to the hole's leftmost vertex,
    along a seam of horizontal and vertical steps on pixel edges, walked round, and left along the same seam."""
    if not part.holes:
        return part.outline
    outline = np.rint(part.outline * 2).astype(np.int64)  # doubled coordinates, as traced: integers
    detours: dict[int, list[np.ndarray]] = {}
    for hole in part.holes:
        ring = np.rint(hole * 2).astype(np.int64)
        start = int(np.lexsort((ring[:, 1], ring[:, 0]))[0])
        nearest = int(((outline - ring[start]) ** 2).sum(axis=1).argmin())
        seam = _seam(outline[nearest], ring[start])  # after the outline vertex, up to the hole's vertex
        back = seam[-2::-1] + [tuple(outline[nearest])]
        detours.setdefault(nearest, []).extend(
            (np.array(seam, np.int64), ring[start + 1 :], ring[: start + 1], np.array(back, np.int64))
        )
    pieces, begin = [], 0
    for index in sorted(detours):
        pieces.append(outline[begin : index + 1])
        pieces.extend(detours[index])  # each detour ends back on the outline vertex it left
        begin = index + 1
    pieces.append(outline[begin:])
    return np.concatenate(pieces) / 2.0


def _seam(start: np.ndarray, end: np.ndarray) -> list[tuple[int, int]]:
    """Vertices after ``start`` up to ``end`` (doubled coordinates, never both odd): to a pixel corner, then
    vertically and horizontally along pixel edges, then to ``end``. A pixel centre has both coordinates odd; every
    step runs along an even coordinate line, so none lies on the seam."""
    a, b = (int(start[0]), int(start[1])), (int(end[0]), int(end[1]))
    first, last = _to_corner(a, b), _to_corner(b, a)
    path = [a, first, (first[0], last[1]), last, b]  # vertical from the outline, then sideways into the hole
    return [p for previous, p in zip(path, path[1:]) if p != previous]


def _to_corner(point: tuple[int, int], toward: tuple[int, int]) -> tuple[int, int]:
    """The pixel corner next to an edge midpoint, along that edge, on the side of ``toward``."""
    x, y = point
    if x % 2:
        return x + (1 if toward[0] > x else -1), y
    if y % 2:
        return x, y + (1 if toward[1] > y else -1)
    return point


def polygons_mask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """``[height, width]`` bool: the union of the polygons rasterised as Label Studio regions are decoded
    (:func:`labelstudio.regions.polygon_mask`, pixel centres inside)."""
    from .regions import polygon_mask

    mask = np.zeros((height, width), bool)
    for ring in polygons:
        mask |= polygon_mask(ring[:, 0], ring[:, 1], height, width)
    return mask
