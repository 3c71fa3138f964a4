"""The simulated annotator's session: one generator that every NoC loop, benchmark and parity check runs.

``simulate(predictor, sample, n_clicks)`` sets the image, then for each click lets the :class:`Clicker` place the
next click on the current error (the first on the whole object), predicts with the previous step's probabilities
and zoom-in region, and yields a :class:`SimulatedStep`: the clicks so far, the step's input state, the prediction,
its mask (``probs > threshold``), its IoU with the ground truth and the predictor's time. As RITM's
``isegm.inference.evaluation`` (used unchanged by SimpleClick and AdaptiveClick).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from adaptiveclick.model.clicks import Click
from adaptiveclick.model.prediction import PROB_THRESHOLD, Prediction, Roi

from .clicker import Clicker
from .datasets.base import Sample
from .metrics import iou

if TYPE_CHECKING:  # the loop needs no torch itself; the predictor brings its own
    from adaptiveclick.model.predictor import Predictor


@dataclass(frozen=True)
class SimulatedStep:
    """One click of a simulated session.

    Attributes:
        index: 0 for the first click.
        clicks: every click so far, the new one last.
        previous: what the step started from (the previous prediction), None at the first click.
        prediction: the predictor's answer.
        mask: ``[H, W]`` bool, ``prediction.probs > threshold``.
        iou: of ``mask`` with the sample's ground truth (ignored pixels left out).
        seconds: the predictor's time for this step (``set_image`` included in the first).
    """

    index: int
    clicks: list[Click]
    previous: Prediction | None
    prediction: Prediction
    mask: np.ndarray
    iou: float
    seconds: float

    @property
    def previous_probs(self) -> np.ndarray | None:
        """The probabilities the step was given (None at the first click)."""
        return None if self.previous is None else self.previous.probs

    @property
    def previous_roi(self) -> Roi | None:
        """The zoom-in region the step was given (None at the first click: the whole image)."""
        return None if self.previous is None else self.previous.roi


def simulate(
    predictor: Predictor, sample: Sample, n_clicks: int, threshold: float = PROB_THRESHOLD
) -> Iterator[SimulatedStep]:
    """Yield ``n_clicks`` steps of the NoC annotator on ``sample`` (see the module docstring)."""
    gt = sample.gt
    clicker = Clicker(gt)
    start = time.perf_counter()
    predictor.set_image(sample.image)
    setup = time.perf_counter() - start
    mask = np.zeros(gt.shape, dtype=bool)
    previous: Prediction | None = None  # the first click sees no previous mask and the whole image
    for k in range(n_clicks):
        clicker.make_next_click(mask)
        clicks = clicker.get_clicks()
        start = time.perf_counter()
        prediction = predictor.step(
            clicks, None if previous is None else previous.probs, None if previous is None else previous.roi
        )
        seconds = time.perf_counter() - start + (setup if k == 0 else 0.0)
        mask = prediction.mask(threshold)
        yield SimulatedStep(k, clicks, previous, prediction, mask, iou(gt, mask), seconds)
        previous = prediction
