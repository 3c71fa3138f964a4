"""The annotate job: masks for every task of a project (or of a shard of it) from the rectangles it holds,
written to Label Studio as predictions.

1. load the predictor (its model version names every prediction), read the project's label config;
2. list the tasks (``--tasks`` ids, or all) with their annotations and predictions, keep those of the shard, and
   plan the ones not in the journal that have boxes (:func:`labelstudio.boxes.task_boxes`); a task that already
   holds a prediction of this model version is journaled as ``found``, not done again;
3. per planned task: check its predictions afresh (another process may have made one), fetch the image, segment
   every box (:func:`model.box_segmenter.segment_boxes`, boxes batched per forward pass on a GPU), POST one
   prediction with a region set per box (:func:`labelstudio.protocol.masks_prediction`), then journal it.

So a job killed at any moment and started again does no task twice and loses none: a task is either in the
journal, or its prediction is found by the listing or the fresh check, or it is done. Every Label Studio call
(and image download) goes through one rate limit. ``OUT/job.json`` pins the project, shard and model version of
the journal's entries; ``OUT/job.lock`` keeps a second process off the same folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from adaptiveclick.labelstudio.api import LabelStudioAPI, LabelStudioError
from adaptiveclick.labelstudio.boxes import TaskBoxes, task_boxes
from adaptiveclick.labelstudio.errors import ImageError, LabelConfigError
from adaptiveclick.labelstudio.label_config import InteractiveConfig, parse_label_config
from adaptiveclick.labelstudio.media import ImageFetcher, MediaScope
from adaptiveclick.labelstudio.predictions import LabelledMask, masks_prediction
from adaptiveclick.labelstudio.ratelimit import RateLimit
from adaptiveclick.labelstudio.selection import Shard
from adaptiveclick.labelstudio.settings import LabelStudioSettings
from adaptiveclick.model.prediction import PROB_THRESHOLD

from .journal import JOURNAL_FILE, Journal
from .progress import STATUS_FILE, Progress

log = logging.getLogger("adaptiveclick.annotate")

JOB_FILE = "job.json"
LOCK_FILE = "job.lock"
POST_ATTEMPTS = 4  # a POST that failed transiently is tried again (after a fresh check) this many times in all
POST_BACKOFF_S = 2.0
PINNED = ("project", "shard", "model_version")  # what a journal's entries are valid for


class JobError(RuntimeError):
    """The job cannot start: bad options, an output folder in use or made for another job, a config without boxes."""


@dataclass
class AnnotateOptions:
    """What ``adaptiveclick annotate`` was asked to do (see annotate.cli for each option)."""

    project: int
    output: Path
    settings: LabelStudioSettings = field(default_factory=LabelStudioSettings)
    source: str = "annotations"
    tasks: frozenset[int] | None = None
    shard: Shard = field(default_factory=Shard)
    predictor: str = "baseline"
    device: str | None = None
    batch: int | None = None
    rate: float | None = 10.0
    threshold: float = PROB_THRESHOLD
    box_deadline: float | None = None  # seconds of model time per box (a task gets its boxes' sum); None: no limit
    progress: bool = True


def run_annotate(opts: AnnotateOptions) -> dict:
    """Run the job to its end; returns the summary (also in ``OUT/status.json``). JobError on bad input,
    LabelStudioError when Label Studio cannot be read."""
    opts.output.mkdir(parents=True, exist_ok=True)
    lock = _lock(opts.output)
    identity = {"project": opts.project, "shard": str(opts.shard), "source": opts.source, "output": str(opts.output)}
    progress = Progress(opts.output / STATUS_FILE, identity)
    try:
        progress.write("loading")
        from adaptiveclick.model.loading import load_predictor

        predictor = load_predictor(opts.predictor, opts.device)
        identity["model_version"] = predictor.model_version
        _pin(opts.output / JOB_FILE, identity)
        journal = Journal(opts.output / JOURNAL_FILE)
        api = LabelStudioAPI(opts.settings.url or "", opts.settings.api_key or "", rate=_rate_limit(opts.rate))
        config = _config(api, opts.project)
        progress.write("listing")
        plan = list(_plan(api, opts, config, journal, predictor.model_version, progress))
        progress.planned = len(plan)
        log.info("annotate plan", extra={**progress.snapshot(), "state": "running"})
        progress.write("running")
        progress.begin_work()
        worker = _Worker(opts, api, config, journal, predictor, progress)
        for item in _bar(plan, opts.progress):
            worker.run(item)
            progress.worked += 1
            progress.write()
        summary = progress.write("finished", force=True)
        summary["rate_limit_waited_s"] = round(api.rate.waited_s, 2)
        summary["label_studio_calls"] = api.calls
        return summary
    except BaseException as exc:
        progress.error = f"{type(exc).__name__}: {exc}"
        progress.write("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", force=True)
        raise
    finally:
        os.close(lock)


def _rate_limit(per_second: float | None) -> RateLimit:
    """``per_second`` on average, in bursts of up to a second's worth: a task's few calls (check, image, POST)
    come together, then the model works for a while, so a bucket of one would slow the job without sparing
    Label Studio anything."""
    return RateLimit(per_second, burst=max(1, int(per_second or 1)))


def _lock(output: Path) -> int:
    fd = os.open(output / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JobError(
            f"another annotate run is working in {output}: wait for it, or choose another --output"
        ) from None
    return fd


def _pin(path: Path, identity: dict) -> None:
    """Refuse a folder whose journal belongs to another project, shard or model version."""
    if path.exists():
        saved = json.loads(path.read_text())
        differs = [k for k in PINNED if saved.get(k) != identity.get(k)]
        if differs:
            was = ", ".join(f"{k}={saved.get(k)!r}" for k in differs)
            raise JobError(f"{path.parent} holds a job with {was}: choose another --output for this one")
        return
    path.write_text(json.dumps({**identity, "created_at": datetime.now(timezone.utc).isoformat()}, indent=1))


def _config(api: LabelStudioAPI, project: int) -> InteractiveConfig:
    try:
        return parse_label_config(api.project(project)["label_config"], prompts_required=False)
    except LabelConfigError as exc:
        raise JobError(f"project {project}'s labelling config: {exc}") from None


def _plan(
    api: LabelStudioAPI, opts: AnnotateOptions, config: InteractiveConfig, journal: Journal, version: str, progress
) -> Iterator[TaskBoxes]:
    """The tasks to segment, in id order; the others are counted (journaled, skipped with reason, found)."""
    for task in api.tasks(opts.project, opts.tasks):
        tid = task.get("id")
        if not isinstance(tid, int) or not opts.shard.holds(tid):
            continue
        progress.total += 1
        if tid in journal:
            progress.done_before += 1
            continue
        found = task_boxes(task, config, opts.source)
        progress.rectangles_skipped.update(found.skipped)
        if found.reason is not None:
            progress.skipped[found.reason] += 1
            continue
        existing = _ours(task.get("predictions") or [], version)
        if existing is not None:  # e.g. posted by a run killed before its journal line, or by Retrieve Predictions
            journal.append(_entry(tid, "found", existing, version))
            progress.found += 1
            continue
        yield found


class _Worker:
    """Does one planned task: fresh check, image, boxes, POST, journal."""

    def __init__(self, opts: AnnotateOptions, api: LabelStudioAPI, config, journal: Journal, predictor, progress):
        self.opts, self.api, self.config, self.journal = opts, api, config, journal
        self.predictor, self.progress = predictor, progress
        self.version = predictor.model_version
        self.fetcher = ImageFetcher.from_settings(opts.settings)

    def run(self, item: TaskBoxes) -> None:
        from adaptiveclick.model.box_segmenter import segment_boxes
        from adaptiveclick.model.predictor import StepTimeout

        tid = item.task_id
        assert tid is not None and item.image_url is not None  # the plan holds only tasks with boxes
        if self._found(tid):
            return
        self.api.rate.wait()  # an image download is a call to Label Studio as often as not
        try:
            image = self.fetcher.fetch(item.image_url, tid, MediaScope(self.opts.project))
        except ImageError as exc:
            return self._skip(tid, f"image {exc.status_code}", exc.message)
        height, width = image.shape[:2]
        boxes = [b.box.pixels(height, width) for b in item.boxes]
        limit = self.opts.box_deadline
        deadline = None if limit is None else time.monotonic() + limit * len(boxes)
        try:
            self.predictor.set_image(image)
            masks = segment_boxes(self.predictor, boxes, self.opts.threshold, self.opts.batch, deadline)
        except ValueError as exc:  # the model refuses this image (its size, its kind): the task, not the job
            return self._skip(tid, "model refused the image", str(exc))
        except StepTimeout as exc:  # e.g. GrabCut on a flat image: the task is tried again by the next run
            return self._skip(tid, "deadline", f"{exc} (--box-deadline {limit:g} s per box)")
        kept = [LabelledMask(b.label, m.mask, m.score) for b, m in zip(item.boxes, masks) if m.mask.any()]
        if not kept:
            return self._skip(tid, "no mask in any box")
        prediction = masks_prediction(self.config, kept, self.version, self.opts.settings.polygons)
        created = self._post(tid, prediction)
        if created is None:
            return
        self.journal.append(
            _entry(tid, "predicted", created, self.version, boxes=len(item.boxes), regions=len(prediction["result"]))
        )
        self.progress.predicted += 1
        self.progress.boxes += len(item.boxes)
        self.progress.regions += len(prediction["result"])

    def _found(self, tid: int) -> bool:
        """The task holds a prediction of this version already (journaled as found)."""
        existing = _ours(self.api.task_predictions(tid), self.version)
        if existing is None:
            return False
        self.journal.append(_entry(tid, "found", existing, self.version))
        self.progress.found += 1
        return True

    def _post(self, tid: int, prediction: dict) -> dict | None:
        """POST the prediction; after a transient failure check whether it was stored anyway, then try again."""
        delay = POST_BACKOFF_S
        for attempt in range(1, POST_ATTEMPTS + 1):
            try:
                return self.api.create_prediction(tid, prediction["result"], prediction["score"], self.version)
            except LabelStudioError as exc:
                if not exc.transient or attempt == POST_ATTEMPTS:
                    why = f"Label Studio answered {exc.status}" if exc.status else "Label Studio unreachable"
                    self.progress.failed[why] += 1
                    log.error("prediction not stored", extra={"task": tid, "error": str(exc)})
                    return None
                log.warning("posting the prediction failed, retrying", extra={"task": tid, "error": str(exc)})
            time.sleep(delay)
            delay *= 2
            if self._found(tid):  # the failed POST was stored after all
                return None
        return None

    def _skip(self, tid: int, reason: str, detail: str | None = None) -> None:
        self.progress.skipped[reason] += 1
        log.warning("task skipped", extra={"task": tid, "reason": reason, **({"detail": detail} if detail else {})})


def _ours(predictions: list, version: str) -> dict | None:
    return next((p for p in predictions if isinstance(p, dict) and p.get("model_version") == version), None)


def _entry(tid: int, outcome: str, prediction: dict, version: str, **extra) -> dict:
    return {
        "task": tid,
        "outcome": outcome,
        "prediction": prediction.get("id"),
        "model_version": version,
        **extra,
        "at": datetime.now(timezone.utc).isoformat(),
    }


def _bar(plan: list, enabled: bool):
    from tqdm import tqdm

    return tqdm(plan, total=len(plan), unit="task", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
