"""Interactive segmentation for one ``/predict`` request, as plain functions and one small class.

Prompts arrive in percent of the image; they become pixel clicks ``(y, x, is_positive)`` in prompt order. A box
prompt (``RectangleLabels smart``) becomes clicks too, because AdaptiveClick is a click model: a positive click at
the box centre and a negative click just outside the middle of each side (those that fall inside the image); the
returned mask is then cut to the box, since the annotator said the object lies within it.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

from .cache import ClickKey, SessionCache, StepState
from .errors import BadRequest
from .images import ImageFetcher
from .model_holder import ModelHolder, ServedModel
from .protocol import (BoxPrompt, Interaction, PointPrompt, PredictRequest, brush_prediction, parse_interaction,
                       project_id, task_image_url)
from .rle import encode_rle

logger = logging.getLogger(__name__)

BOX_OUTSIDE_MARGIN = 0.05  # negative box clicks sit this fraction of the box side outside it (at least 2 px)


@dataclass(frozen=True)
class PredictOutcome:
    """The reply's ``results`` plus what the logs and metrics want to know."""

    results: list[dict]
    model_version: str
    network_runs: int = 0
    cached_clicks: int = 0
    clicks: int = 0
    image_cached: bool = False
    seconds_model: float = 0.0


def percent_to_pixel(value: float, size: int) -> int:
    """A coordinate in percent (0..100) to a pixel index in ``0..size-1``."""
    return min(size - 1, max(0, int(math.floor(value * size / 100.0))))


def prompts_to_clicks(prompts: Sequence[PointPrompt | BoxPrompt], height: int,
                      width: int) -> tuple[list[ClickKey], tuple[int, int, int, int] | None]:
    """Pixel clicks for the prompts, and the last box as ``(top, bottom, left, right)`` inclusive (or None)."""
    clicks: list[ClickKey] = []
    box = None
    for prompt in prompts:
        if isinstance(prompt, PointPrompt):
            clicks.append((percent_to_pixel(prompt.y, height), percent_to_pixel(prompt.x, width), prompt.is_positive))
            continue
        top, left = percent_to_pixel(prompt.y, height), percent_to_pixel(prompt.x, width)
        bottom = max(top, percent_to_pixel(prompt.y + prompt.height, height))
        right = max(left, percent_to_pixel(prompt.x + prompt.width, width))
        box = (top, bottom, left, right)
        clicks.extend(box_to_clicks(box, height, width))
    return clicks, box


def box_to_clicks(box: tuple[int, int, int, int], height: int, width: int) -> list[ClickKey]:
    """Clicks for a box ``(top, bottom, left, right)`` in pixels, inclusive: a positive one at its centre and a
    negative one just outside the middle of each side (those that fall inside the image)."""
    top, bottom, left, right = box
    cy, cx = (top + bottom) // 2, (left + right) // 2
    clicks: list[ClickKey] = [(cy, cx, True)]
    dy = max(2, round(BOX_OUTSIDE_MARGIN * (bottom - top + 1)))
    dx = max(2, round(BOX_OUTSIDE_MARGIN * (right - left + 1)))
    for y, x in ((top - dy, cx), (bottom + dy, cx), (cy, left - dx), (cy, right + dx)):
        if 0 <= y < height and 0 <= x < width:
            clicks.append((y, x, False))
    return clicks


def cut_to_box(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``mask`` ``[H, W]`` bool with everything outside the inclusive box ``(top, bottom, left, right)`` cleared."""
    top, bottom, left, right = box
    inside = np.zeros_like(mask)
    inside[top:bottom + 1, left:right + 1] = True
    return mask & inside


@dataclass(frozen=True)
class ClickRun:
    """The state after the last click, and how it was obtained."""

    state: StepState | None
    network_runs: int
    cached_clicks: int
    seconds: float


def run_clicks(served: ServedModel, cache: SessionCache, image_key: Hashable, image: np.ndarray,
               clicks: Sequence[ClickKey]) -> ClickRun:
    """Run ``served`` on ``clicks`` one step at a time, starting from the longest cached prefix, and cache every
    new step (keyed by the model version), so the answer never depends on what was cached."""
    cached, state = cache.longest_prefix(served.version, image_key, clicks)
    start = time.perf_counter()
    new_states = served.run_steps(image_key, image, clicks, cached, state)
    seconds = time.perf_counter() - start
    for k, new in enumerate(new_states, start=cached + 1):
        cache.put_step(served.version, image_key, clicks[:k], new)
    return ClickRun(new_states[-1] if new_states else state, len(new_states), cached, seconds)


def mask_score(probs: np.ndarray, mask: np.ndarray) -> float:
    """Mean probability over the mask (0 for an empty mask): how sure the model is of what it returns."""
    return round(float(probs[mask].mean()), 4) if mask.any() else 0.0


class SegmentationService:
    """Args:
        holder: the served model.
        cache: images and per-click states.
        fetcher: turns task image URLs into arrays.
        threshold: probability above which a pixel is in the mask.
    """

    def __init__(self, holder: ModelHolder, cache: SessionCache, fetcher: ImageFetcher,
                 threshold: float = 0.49) -> None:
        self.holder = holder
        self.cache = cache
        self.fetcher = fetcher
        self.threshold = threshold

    def predict(self, request: PredictRequest) -> PredictOutcome:
        served = self.holder.current()  # this request uses this model to the end, even if a swap happens
        interaction = parse_interaction(request.context, request.config) if request.context else None
        if interaction is None:
            return PredictOutcome([], served.version)  # plain pre-annotation: nothing to segment without clicks
        if len(request.tasks) != 1:
            raise BadRequest(f"interactive annotation takes exactly one task, got {len(request.tasks)}")
        task = request.tasks[0]
        url = task_image_url(task, request.config)
        image_key = (project_id(request.project), task.get("id"), url)
        image, image_cached = self._image(image_key, url, task.get("id"))
        height, width = image.shape[:2]
        _check_size(interaction, width, height)
        clicks, box = prompts_to_clicks(interaction.prompts, height, width)

        run = run_clicks(served, self.cache, image_key, image, clicks)
        final: StepState = run.state

        mask = final.probs > self.threshold
        if box is not None:
            mask = cut_to_box(mask, box)
        score = mask_score(final.probs, mask)
        result = brush_prediction(encode_rle(mask), interaction.label, request.config, width, height, score,
                                  served.version, interaction.image_rotation)
        return PredictOutcome([result], served.version, run.network_runs, run.cached_clicks, len(clicks),
                              image_cached, run.seconds)

    def _image(self, image_key: Hashable, url: str, task_id) -> tuple[np.ndarray, bool]:
        image = self.cache.get_image(image_key)
        if image is not None:
            return image, True
        image = self.fetcher.fetch(url, task_id)
        self.cache.put_image(image_key, image)
        return image, False


def _check_size(interaction: Interaction, width: int, height: int) -> None:
    """Prompts are in percent, so they stay right even when Label Studio's idea of the size differs from the file
    (a resized copy); the mask is returned at the file's size. A mismatch is worth a log line."""
    if interaction.original_size and interaction.original_size != (width, height):
        logger.warning("image size differs from the size Label Studio reports",
                       extra={"image_size": [width, height], "reported_size": list(interaction.original_size)})
