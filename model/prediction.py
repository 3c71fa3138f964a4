"""What a predictor returns, and where its probabilities become a mask. Imports no torch (settings read it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
