"""One loaded model as the backend serves it: the predictor, the version replies report, and the lock and image it
holds while a request uses it.

A predictor holds per-image state after ``set_image``, so a :class:`ServedModel` serialises its use with a lock and
remembers which image it holds: consecutive clicks on the same image skip ``set_image``; a request for another image
pays for one ``set_image``. On a CPU box with a few cores the network already uses every core, so running two
predictions in parallel would not finish either sooner.

Every request has a deadline (``ADAPTIVECLICK_REQUEST_DEADLINE``) for waiting for the model and using it: a step is
not started when the steps so far say it would end past the deadline, and a step that can be stopped (the
baseline's GrabCut) gets the time left as its limit. Each step's result is handed on as soon as it exists, so a
request that ends at its deadline leaves its finished steps in the session cache for the next click.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from adaptiveclick.model.box_segmenter import BoxMask, segment_boxes
from adaptiveclick.model.clicks import Click
from adaptiveclick.model.prediction import PROB_THRESHOLD, Roi
from adaptiveclick.model.predictor import Predictor, StepTimeout
from adaptiveclick.model.prompts import Box

from .cache import StepState
from .errors import DEADLINE_SETTING, DeadlineExceeded, ModelBusy

StepDone = Callable[[int, StepState], None]  # (clicks the state answers, state)
STEP_TIME_SMOOTHING = 0.3  # weight of the newest step in the running estimate of a step's time


CONFIGURED_LINE = "configured"  # the key's line of the configured predictor (ADAPTIVECLICK_PREDICTOR)


@dataclass(frozen=True)
class StepsRun:
    """What :meth:`ServedModel.run_steps` leaves: the state after the last click (the one it started from when no
    step ran) and the number of steps run."""

    last: StepState | None
    steps: int


@dataclass
class ServedModel:
    """One loaded model: ``version`` is what replies report; ``key`` (``line/version``) names it uniquely, for the
    session cache and the pool."""

    predictor: Predictor
    version: str
    line: str = CONFIGURED_LINE
    memory_bytes: int = 0
    key: str = ""  # default: line/version
    loaded_at: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _image_key: Hashable | None = field(default=None, repr=False)
    _step_seconds: float = field(default=0.0, repr=False)  # running estimate of one step's time

    def __post_init__(self) -> None:
        self.key = self.key or f"{self.line}/{self.version}"

    def run_steps(
        self,
        image_key: Hashable,
        image: np.ndarray,
        clicks: Sequence[Click],
        start: int,
        state: StepState | None,
        deadline: float | None = None,
        on_step: StepDone | None = None,
        box: Box | None = None,
    ) -> StepsRun:
        """Run the steps for ``clicks[start:]`` one click at a time, from ``state`` (the output after
        ``clicks[:start]``, None when ``start`` is 0). Returns the last state and how many steps ran: only the last
        step's full-size map is held by the request (``on_step`` hands each to the session cache, which charges
        and bounds them), so 100 clicks on a 50 MP image hold one map, not 100.

        Args:
            deadline: ``time.monotonic()`` by which the model must be free again (None: no limit). Waiting for the
                model counts: :class:`ModelBusy` when it is not free in time; :class:`DeadlineExceeded` when the
                next step would end past it.
            on_step: called with each new state as soon as it exists (the session cache keeps them).
            box: the box prompt whose clicks are among ``clicks`` (:meth:`model.predictor.Predictor.step`).
        """
        began = time.monotonic()
        self._acquire(deadline, began)
        last, done = state, 0
        try:
            self._hold_image(image_key, image)
            probs, roi = (None, None) if state is None else (state.probs, state.roi)
            for k in range(start, len(clicks)):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and (left <= 0 or (done and self._step_seconds > left)):
                    raise self._stopped(done, len(clicks) - start, began)
                step_began = time.monotonic()
                try:
                    step = self.predictor.step(clicks[: k + 1], probs, roi, time_limit=left, box=box)
                except StepTimeout as exc:
                    raise DeadlineExceeded(f"{exc}: no answer within the request's {DEADLINE_SETTING}") from None
                self._remember_step_time(time.monotonic() - step_began)
                probs, roi = step.probs, step.roi
                last, done = StepState(np.asarray(probs, dtype=np.float32), _as_roi(roi)), done + 1
                if on_step is not None:
                    on_step(k + 1, last)
        finally:
            self.lock.release()
        return StepsRun(last, done)

    def run_boxes(
        self,
        image_key: Hashable,
        image: np.ndarray,
        boxes: Sequence[Box],
        deadline: float | None = None,
        threshold: float = PROB_THRESHOLD,
    ) -> list[BoxMask]:
        """Segment every box of one image (:func:`model.box_segmenter.segment_boxes`: each box's clicks step by
        step, the boxes batched per forward pass where the predictor can) under the model's lock, with the
        deadline of :meth:`run_steps` (:class:`ModelBusy`, :class:`DeadlineExceeded`)."""
        began = time.monotonic()
        self._acquire(deadline, began)
        try:
            self._hold_image(image_key, image)
            return segment_boxes(self.predictor, boxes, threshold, deadline=deadline)
        except StepTimeout as exc:
            raise DeadlineExceeded(f"{exc}: no answer within the request's {DEADLINE_SETTING}") from None
        finally:
            self.lock.release()

    def _acquire(self, deadline: float | None, began: float) -> None:
        if not self.lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - began)):
            raise ModelBusy(
                f"the model is busy with other requests: it was not free within "
                f"{time.monotonic() - began:.1f} s ({DEADLINE_SETTING}); retry the click"
            )

    def _hold_image(self, image_key: Hashable, image: np.ndarray) -> None:
        """The predictor holds ``image`` (``set_image`` only when it held another)."""
        if self._image_key != image_key:
            self._image_key = None  # a failing set_image must not leave a stale key behind
            self.predictor.set_image(image)
            self._image_key = image_key

    def _remember_step_time(self, seconds: float) -> None:
        weight = STEP_TIME_SMOOTHING if self._step_seconds else 1.0
        self._step_seconds = (1 - weight) * self._step_seconds + weight * seconds

    def _stopped(self, done: int, wanted: int, began: float) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"stopped after {done} of {wanted} new clicks: {time.monotonic() - began:.1f} s of model time, about "
            f"{self._step_seconds:.1f} s per click, would pass the request's deadline ({DEADLINE_SETTING}); the "
            "clicks done are kept, so the next request goes on from there"
        )


def _as_roi(roi) -> Roi | None:
    if roi is None:
        return None
    rmin, rmax, cmin, cmax = (int(v) for v in roi)
    return rmin, rmax, cmin, cmax
