"""The served predictor behind a small thread-safe holder, ready for hot swaps.

Each request takes the current :class:`ServedModel` once (:meth:`ModelHolder.current`) and uses it to the end, so
a :meth:`ModelHolder.swap` never changes the model under a running request: in-flight requests finish on the old
model, new ones get the new one, and every response names the version that produced it.

A predictor holds per-image state after ``set_image``, so one :class:`ServedModel` serialises its use with a lock
and remembers which image it holds: consecutive clicks on the same image skip ``set_image``; a request for another
image pays for one ``set_image`` (measured by ``adaptiveclick benchmark http``). On a CPU box with a few cores the
network already uses every core, so running two predictions in parallel would not finish either sooner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from model.clicks import Click
from model.prediction import Roi
from model.predictor import Predictor

from .cache import StepState


@dataclass
class ServedModel:
    predictor: Predictor
    version: str
    loaded_at: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _image_key: Hashable | None = field(default=None, repr=False)

    def run_steps(
        self, image_key: Hashable, image: np.ndarray, clicks: Sequence[Click], start: int, state: StepState | None
    ) -> list[StepState]:
        """Run the steps for ``clicks[start:]`` one click at a time, from ``state`` (the output after
        ``clicks[:start]``, None when ``start`` is 0). Returns one :class:`StepState` per step run."""
        states = []
        with self.lock:
            if self._image_key != image_key:
                self._image_key = None  # a failing set_image must not leave a stale key behind
                self.predictor.set_image(image)
                self._image_key = image_key
            probs, roi = (None, None) if state is None else (state.probs, state.roi)
            for k in range(start, len(clicks)):
                step = self.predictor.step(clicks[: k + 1], probs, roi)
                probs, roi = step.probs, step.roi
                states.append(StepState(np.asarray(probs, dtype=np.float32), _as_roi(roi)))
        return states


def _as_roi(roi) -> Roi | None:
    if roi is None:
        return None
    rmin, rmax, cmin, cmax = (int(v) for v in roi)
    return rmin, rmax, cmin, cmax


class ModelHolder:
    """Holds the current :class:`ServedModel`; ``current()`` and ``swap()`` are safe from any thread."""

    def __init__(self, predictor: Predictor, version: str | None = None) -> None:
        self._lock = threading.Lock()
        self._served = ServedModel(predictor, version or predictor.model_version)

    def current(self) -> ServedModel:
        with self._lock:
            return self._served

    @property
    def version(self) -> str:
        return self.current().version

    def swap(self, predictor: Predictor, version: str | None = None) -> ServedModel:
        """Serve ``predictor`` from now on; returns the previous model (still usable by requests holding it)."""
        new = ServedModel(predictor, version or predictor.model_version)
        with self._lock:
            old, self._served = self._served, new
        return old
