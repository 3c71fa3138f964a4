"""Interactive segmentation of one :class:`~labelstudio.protocol.ClickRequest`, as plain functions and one class.

The request's prompts (percent of the image) become :class:`~model.clicks.Click` objects in pixels once the image
is known, in prompt order; a box prompt becomes clicks too (:func:`model.prompts.box_to_clicks`), goes to the
predictor beside them (the baseline answers them from the box: GrabCut's rectangle initialisation) and cuts the
mask. The service returns the mask, its score and what the run did; the route formats the reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from adaptiveclick.labelstudio.media import ImageFetcher, MediaScope
from adaptiveclick.labelstudio.protocol import BoxPrompt, ClickRequest, Prompt
from adaptiveclick.model.clicks import Click
from adaptiveclick.model.prediction import PROB_THRESHOLD, mask_score
from adaptiveclick.model.prompts import Box, box_to_clicks, cut_to_box

from .cache import SessionCache, StepState, image_key
from .model_holder import ModelHolder
from .served_model import ServedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segmentation:
    """The answer to one click request, and what the logs and metrics want to know about it.

    Attributes:
        mask: ``[H, W]`` bool at the image file's size.
        score: mean probability over the mask (0 for an empty mask).
        model_version: the version that produced it.
        model_line: its registry line (``base``, ``project-<id>``; ``configured`` for the configured predictor).
        network_runs: predictor steps run for this request (the others came from the session cache).
        cached_clicks: clicks answered from the session cache.
        clicks: clicks in the request (a box counts as its clicks).
        image_cached: the decoded image came from the session cache.
        seconds_model: time spent in the predictor.
    """

    mask: np.ndarray
    score: float
    model_version: str
    model_line: str = ""
    network_runs: int = 0
    cached_clicks: int = 0
    clicks: int = 0
    image_cached: bool = False
    seconds_model: float = 0.0


def prompts_to_clicks(prompts: Sequence[Prompt], height: int, width: int) -> tuple[list[Click], Box | None]:
    """Pixel clicks for the prompts, in order, and the last box (or None)."""
    clicks: list[Click] = []
    box = None
    for prompt in prompts:
        if isinstance(prompt, BoxPrompt):
            box = prompt.pixels(height, width)
            clicks.extend(box_to_clicks(box, height, width))
        else:
            y, x = prompt.pixel(height, width)
            clicks.append(Click(y, x, prompt.is_positive))
    return [Click(c.y, c.x, c.is_positive, k) for k, c in enumerate(clicks)], box


@dataclass(frozen=True)
class ClickRun:
    """The state after the last click, and how it was obtained."""

    state: StepState
    network_runs: int
    cached_clicks: int
    seconds: float


def run_clicks(
    served: ServedModel,
    cache: SessionCache,
    image_key: Hashable,
    image: np.ndarray,
    clicks: Sequence[Click],
    deadline: float | None = None,
    box: Box | None = None,
) -> ClickRun:
    """Run ``served`` on ``clicks`` (with the ``box`` whose clicks are among them, if any) one step at a time,
    starting from the longest cached prefix, and cache every new step as it is made (keyed by the model's registry
    key, the image and the box), so the answer never depends on what was cached and a request stopped at its
    ``deadline`` (``time.monotonic()``) leaves its steps for the next one."""
    session = (image_key, box)
    cached, state = cache.longest_prefix(served.key, session, clicks)
    start = time.perf_counter()

    def keep(done: int, new: StepState) -> None:
        cache.put_step(served.key, session, clicks[:done], new)

    run = served.run_steps(image_key, image, clicks, cached, state, deadline, keep, box)
    seconds = time.perf_counter() - start
    if run.last is None:
        raise ValueError("run_clicks needs at least one click")
    return ClickRun(run.last, run.steps, cached, seconds)


class SegmentationService:
    """Args:
    holder: the served model.
    cache: images and per-click states.
    fetcher: turns task image URLs into arrays.
    threshold: probability above which a pixel is in the mask.
    deadline_s: model time (waiting for the model included) one request may take; None: no limit.
    """

    def __init__(
        self,
        holder: ModelHolder,
        cache: SessionCache,
        fetcher: ImageFetcher,
        threshold: float = PROB_THRESHOLD,
        deadline_s: float | None = None,
    ) -> None:
        self.holder = holder
        self.cache = cache
        self.fetcher = fetcher
        self.threshold = threshold
        self.deadline_s = deadline_s

    def segment(self, request: ClickRequest, scope: MediaScope | None = None) -> Segmentation:
        """Answer ``request`` with the model of its project (resolved at the edge: :mod:`backend.projects`), its
        image fetched within ``scope`` (the credentials the caller may use; default: the request's project and
        task with every credential)."""
        served = self.holder.current(request.project)  # this request uses this model to the end, even if a swap happens
        key = image_key(request.project, request.task_id, request.image_url)
        scope = scope or MediaScope(request.project, request.task_id)
        image, image_cached = self._image(key, request.image_url, request.task_id, scope)
        height, width = image.shape[:2]
        _check_size(request, width, height)
        clicks, box = prompts_to_clicks(request.prompts, height, width)

        deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s  # from the model's start
        run = run_clicks(served, self.cache, key, image, clicks, deadline, box)
        mask = run.state.probs > self.threshold
        if box is not None:
            mask = cut_to_box(mask, box)
        return Segmentation(
            mask,
            mask_score(run.state.probs, mask),
            served.version,
            served.line,
            run.network_runs,
            run.cached_clicks,
            len(clicks),
            image_cached,
            run.seconds,
        )

    def _image(self, key: Hashable, url: str, task_id: int | None, scope: MediaScope) -> tuple[np.ndarray, bool]:
        image = self.cache.get_image(key)
        if image is not None:
            return image, True
        image = self.fetcher.fetch(url, task_id, scope)
        self.cache.put_image(key, image)
        return image, False


def _check_size(request: ClickRequest, width: int, height: int) -> None:
    """Prompts are in percent, so they stay right even when Label Studio's idea of the size differs from the file
    (a resized copy); the mask is returned at the file's size. A mismatch is worth a log line."""
    if request.original_size and request.original_size != (width, height):
        logger.warning(
            "image size differs from the size Label Studio reports",
            extra={"image_size": [width, height], "reported_size": list(request.original_size)},
        )
