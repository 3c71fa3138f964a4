"""Masks for boxes: every box of one image segmented as the interactive path segments a box prompt.

A box becomes its clicks (:func:`model.prompts.box_to_clicks`: one positive click at its centre, up to four negative
ones just outside its sides), which run step by step with the box beside them, each step fed the previous step's
probabilities and zoom-in region, exactly as ``/predict`` runs a rectangle prompt; the last step's mask is cut to
the box (:func:`model.prompts.cut_to_box`). AdaptiveClick goes by the clicks; the baseline answers them from the box
(GrabCut's rectangle initialisation, :mod:`model.baseline`). ``as_clicks=True`` withholds the box, so every predictor
goes by the clicks alone (``adaptiveclick benchmark boxes`` compares the two). The same click index of every box is
one :meth:`Predictor.step_many` call, in chunks of ``batch_size`` (the predictor's ``max_batch`` by default:
AdaptiveClick on a GPU takes several boxes per forward pass; on a CPU and for the GrabCut baseline one box at a
time).

What batching promises: the masks that boxes one at a time give, except pixels whose probability is within
:data:`BATCH_PROB_TOLERANCE` of the threshold, and scores within :data:`BATCH_SCORE_TOLERANCE`. Not bit-identical
results: a batch is other matrix shapes for the CPU's BLAS or the GPU's kernels, which sum in another order.

The predictor must hold the image already (``set_image``). With a ``deadline`` (``time.monotonic()``) no step is
started that the steps so far say would end past it, and each step gets the time left as its limit;
:class:`BoxesStopped` says how far it got.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .clicks import Click
from .prediction import PROB_THRESHOLD, Roi, StepInput, mask_score
from .predictor import Predictor, StepTimeout
from .prompts import Box, box_to_clicks, cut_to_box

#: how far a batched box's probabilities may be from the same box's alone: float rounding of other kernel shapes
#: (and of a BLAS whose sums depend on the buffers' alignment), carried through the box's steps. A pixel this close
#: to the threshold may land on either side
BATCH_PROB_TOLERANCE = 1e-3
#: how far a batched box's score may be from the same box's alone
BATCH_SCORE_TOLERANCE = 1e-3


class BoxesStopped(StepTimeout):
    """The deadline came before every box was segmented."""


@dataclass(frozen=True)
class BoxMask:
    """One box's answer: ``mask`` ``[H, W]`` bool (cut to the box), ``score`` (mean probability over the mask, 0 when
    empty) and the predictor steps it took (its clicks)."""

    mask: np.ndarray
    score: float
    steps: int


def segment_boxes(
    predictor: Predictor,
    boxes: Sequence[Box],
    threshold: float = PROB_THRESHOLD,
    batch_size: int | None = None,
    deadline: float | None = None,
    as_clicks: bool = False,
) -> list[BoxMask]:
    """One :class:`BoxMask` per box ``(top, bottom, left, right)`` (pixels, inclusive) of the predictor's image;
    ``as_clicks``: the box's clicks without the box (see the module docstring)."""
    height, width = predictor.image_shape
    clicks = [_indexed(box_to_clicks(box, height, width)) for box in boxes]
    probs: list[np.ndarray | None] = [None] * len(boxes)
    rois: list[Roi | None] = [None] * len(boxes)
    size = max(1, batch_size or predictor.max_batch)
    total = sum(len(c) for c in clicks)
    done, step_s = 0, 0.0
    for k in range(max((len(c) for c in clicks), default=0)):
        active = [i for i, c in enumerate(clicks) if len(c) > k]
        for start in range(0, len(active), size):
            chunk = active[start : start + size]
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and (left <= 0 or (done and step_s * len(chunk) > left)):
                raise BoxesStopped(f"stopped after {done} of {total} box clicks at the deadline")
            began = time.monotonic()
            answers = predictor.step_many(
                [StepInput(clicks[i][: k + 1], probs[i], rois[i], None if as_clicks else boxes[i]) for i in chunk],
                time_limit=left,
            )
            step_s = (time.monotonic() - began) / len(chunk)
            for i, answer in zip(chunk, answers):
                probs[i], rois[i] = answer.probs, answer.roi
            done += len(chunk)
    results = []
    for box, p, c in zip(boxes, probs, clicks):
        if p is None:  # unreachable: every box has its positive click
            raise AssertionError("a box without clicks")
        mask = cut_to_box(p > threshold, box)
        results.append(BoxMask(mask, mask_score(p, mask), len(c)))
    return results


def _indexed(clicks: list[Click]) -> list[Click]:
    """Each click's index is its position, as the interactive path numbers a prompt's clicks."""
    return [Click(c.y, c.x, c.is_positive, k) for k, c in enumerate(clicks)]
