"""What a predictor returns, and where its probabilities become a mask. Imports no torch (settings read it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .clicks import Click
from .prompts import Box

#: a pixel belongs to the object when its probability exceeds this (the reference evaluation's 0.49)
PROB_THRESHOLD = 0.49

Roi = tuple[int, int, int, int]  # (rmin, rmax, cmin, cmax), inclusive, in image pixels


@dataclass(frozen=True)
class Prediction:
    """``probs``: ``[H, W]`` float32 object probabilities; ``roi``: the region the model looked at (or None)."""

    probs: np.ndarray
    roi: Roi | None = None

    def mask(self, threshold: float = PROB_THRESHOLD) -> np.ndarray:
        return self.probs > threshold


@dataclass(frozen=True)
class StepInput:
    """One step to run: all clicks so far (pixels), the previous step's ``[H, W]`` probabilities and ROI, and the
    box the object lies in when the prompt had one (its clicks, :func:`model.prompts.box_to_clicks`, are among
    ``clicks``)."""

    clicks: Sequence[Click]
    prev_mask: np.ndarray | None = None
    prev_roi: Roi | None = None
    box: Box | None = None


def mask_score(probs: np.ndarray, mask: np.ndarray) -> float:
    """Mean probability over the mask (0 for an empty mask): how sure the model is of what it returns."""
    return round(float(probs[mask].mean()), 4) if mask.any() else 0.0
