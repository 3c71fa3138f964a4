"""Box prompts for a click model: AdaptiveClick takes clicks, so a box becomes clicks and cuts the mask.

A box ``(top, bottom, left, right)`` (pixels, inclusive) becomes a positive click at its centre and a negative click
just outside the middle of each side (those that fall inside the image); the answer is then cut to the box, since
the annotator said the object lies within it. The Label Studio backend (``RectangleLabels smart``) and the CVAT
interactor (``obj_bbox``) both use this.
"""

from __future__ import annotations

import numpy as np

from .clicks import Click

Box = tuple[int, int, int, int]  # (top, bottom, left, right) in pixels, inclusive
BOX_OUTSIDE_MARGIN = 0.05  # negative box clicks sit this fraction of the box side outside it (at least 2 px)


def box_to_clicks(box: Box, height: int, width: int) -> list[Click]:
    """Clicks for ``box`` in a ``height`` x ``width`` image: a positive one at its centre and a negative one just
    outside the middle of each side (those that fall inside the image)."""
    top, bottom, left, right = box
    cy, cx = (top + bottom) // 2, (left + right) // 2
    clicks = [Click(cy, cx, True)]
    dy = max(2, round(BOX_OUTSIDE_MARGIN * (bottom - top + 1)))
    dx = max(2, round(BOX_OUTSIDE_MARGIN * (right - left + 1)))
    for y, x in ((top - dy, cx), (bottom + dy, cx), (cy, left - dx), (cy, right + dx)):
        if 0 <= y < height and 0 <= x < width:
            clicks.append(Click(y, x, False))
    return clicks


def cut_to_box(mask: np.ndarray, box: Box) -> np.ndarray:
    """``mask`` ``[H, W]`` bool with everything outside the inclusive ``box`` cleared."""
    top, bottom, left, right = box
    inside = np.zeros_like(mask)
    inside[top : bottom + 1, left : right + 1] = True
    return mask & inside
