"""Retrieve Predictions: masks for the rectangles of every task of a ``/predict`` without prompts.

Label Studio's data-manager action *Retrieve Predictions* (and its automatic pre-annotation) sends the selected
tasks that hold no prediction of the backend's model version yet, with their annotations and predictions,
``params.context: null``, in ONE request, and stores ``results[i]`` as task i's predictions: one entry per task, in
order, or nothing at all. So every task gets an entry here: for a task with boxes
(:func:`labelstudio.boxes.task_boxes`: the rectangles of its chosen annotation) ONE prediction with a brush and/or
polygon region set per box (its label), the model version and a score; for every other task an empty list ``[]``,
which Label Studio 1.23.2 accepts and stores nothing for (checked against the real server), so such a task is sent
again by the next Retrieve Predictions and nothing needs cleaning up. Each task's outcome is logged with why
it gave nothing (no annotation, no rectangles, image error, deadline).

Time. Each task may use the model for ``ADAPTIVECLICK_REQUEST_DEADLINE`` seconds (waiting included, as a click
may), which bounds how long an annotator's click waits behind a batch. The whole request stops starting tasks
after ``ADAPTIVECLICK_BATCH_DEADLINE`` (default 90 s, under Label Studio's 100 s ``ML_TIMEOUT_PREDICT``, past
which it drops the answer and stores nothing): the tasks left get ``[]`` and the next Retrieve Predictions goes on
with them. Selections larger than that are the ``adaptiveclick annotate`` job's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from adaptiveclick.labelstudio.boxes import task_boxes
from adaptiveclick.labelstudio.errors import ImageError, RequestError
from adaptiveclick.labelstudio.media import ImageFetcher, MediaScope
from adaptiveclick.labelstudio.predictions import LabelledMask, masks_prediction
from adaptiveclick.labelstudio.protocol import DEFAULT_MAX_PROMPTS, PreannotationRequest
from adaptiveclick.labelstudio.settings import PolygonSettings
from adaptiveclick.model.prediction import PROB_THRESHOLD

from .cache import image_key
from .model_holder import ModelHolder

logger = logging.getLogger(__name__)


@dataclass
class BatchAnswer:
    """The reply's ``results`` (one entry per task, in order) and counts for the request's log line."""

    results: list = field(default_factory=list)
    predicted: int = 0
    boxes: int = 0
    seconds_model: float = 0.0
    skipped: Counter = field(default_factory=Counter)  # why tasks gave no prediction
    model_version: str = ""

    def log_fields(self) -> dict:
        return {
            "tasks": len(self.results),
            "predicted": self.predicted,
            "boxes": self.boxes,
            "model_ms": round(self.seconds_model * 1e3, 1),
            "skipped": dict(self.skipped),
        }


class BoxPredictor:
    """Answers a :class:`~labelstudio.protocol.PreannotationRequest` from the tasks' rectangles.

    Args:
        holder: the served model (one version for the whole request).
        fetcher: task images.
        threshold: mask threshold (``ADAPTIVECLICK_THRESHOLD``).
        task_deadline_s: model time, waiting included, per task (``ADAPTIVECLICK_REQUEST_DEADLINE``).
        batch_deadline_s: time after which no further task is started (``ADAPTIVECLICK_BATCH_DEADLINE``).
        polygons: the polygon answers' settings.
        max_boxes: the most rectangles of one task segmented (``ADAPTIVECLICK_MAX_PROMPTS``, as for a click
            request; the rest are skipped with the reason).
    """

    def __init__(
        self,
        holder: ModelHolder,
        fetcher: ImageFetcher,
        threshold: float = PROB_THRESHOLD,
        task_deadline_s: float | None = 30.0,
        batch_deadline_s: float | None = 90.0,
        polygons: PolygonSettings = PolygonSettings(),
        max_boxes: int = DEFAULT_MAX_PROMPTS,
    ) -> None:
        self.max_boxes = max_boxes
        self.holder = holder
        self.fetcher = fetcher
        self.threshold = threshold
        self.task_deadline_s = task_deadline_s
        self.batch_deadline_s = batch_deadline_s
        self.polygons = polygons

    def answer(self, request: PreannotationRequest, scope: MediaScope | None = None) -> BatchAnswer:
        """One entry per task of ``request``, by the model of its project (one version for every task); images
        fetched within ``scope`` (per task: its own presign call only)."""
        served = self.holder.current(request.project)
        answer = BatchAnswer(model_version=served.version)
        scope = scope or MediaScope(request.project)
        began = time.monotonic()
        batch_end = None if self.batch_deadline_s is None else began + self.batch_deadline_s
        for task in request.tasks:
            entry, reason = self._task(request, task, served, batch_end, answer, scope)
            answer.results.append(entry)
            if reason:
                answer.skipped[reason] += 1
        return answer

    def _task(
        self,
        request: PreannotationRequest,
        task: dict,
        served,
        batch_end: float | None,
        answer: BatchAnswer,
        scope: MediaScope,
    ):
        """``(entry, reason)``: the task's prediction (a dict) or ``[]`` with why there is none."""
        found = task_boxes(task, request.config, max_boxes=self.max_boxes)
        log = {"project": request.project, "task": found.task_id, "rectangles_skipped": list(found.skipped)}
        if found.reason is not None or found.image_url is None:
            return self._none(log, found.reason or "no image")
        now = time.monotonic()
        if batch_end is not None and now >= batch_end:
            return self._none(log, "batch deadline passed (ADAPTIVECLICK_BATCH_DEADLINE): run it again for the rest")
        try:
            image = self.fetcher.fetch(found.image_url, found.task_id, scope)
        except ImageError as exc:
            return self._none(log, f"image {exc.status_code}", exc.message)
        height, width = image.shape[:2]
        deadline = None if self.task_deadline_s is None else time.monotonic() + self.task_deadline_s
        if batch_end is not None:
            deadline = batch_end if deadline is None else min(deadline, batch_end)
        model_began = time.perf_counter()
        try:
            masks = served.run_boxes(
                image_key(request.project, found.task_id, found.image_url),
                image,
                [b.box.pixels(height, width) for b in found.boxes],
                deadline,
                self.threshold,
            )
        except RequestError as exc:  # ModelBusy, DeadlineExceeded: 503s of a click, one task's loss here
            return self._none(log, "deadline", exc.message)
        finally:
            answer.seconds_model += time.perf_counter() - model_began
        kept = [LabelledMask(b.label, m.mask, m.score) for b, m in zip(found.boxes, masks) if m.mask.any()]
        log.update(boxes=len(found.boxes), empty_masks=len(found.boxes) - len(kept))
        if not kept:
            return self._none(log, "no mask in any box")
        answer.predicted += 1
        answer.boxes += len(found.boxes)
        prediction = masks_prediction(request.config, kept, served.version, self.polygons)
        logger.info("box prediction", extra={**log, "regions": len(prediction["result"])})
        return prediction, None

    @staticmethod
    def _none(log: dict, reason: str, detail: str | None = None):
        logger.info("no box prediction", extra={**log, "reason": reason, **({"detail": detail} if detail else {})})
        return [], reason
