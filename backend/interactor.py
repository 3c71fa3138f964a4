"""CVAT's interactor, however CVAT reaches it: the nuclio function (:mod:`backend.cvat`, self-hosted CVAT) or CVAT's
agent (:mod:`backend.cvat_agent`, CVAT Online and Enterprise). Both hand it a decoded :class:`Frame` and an
:class:`InteractorPrompt`, and get the same answer for the same prompt.

CVAT's prompt, for every click the annotator makes on an object: all positive and all negative points so far, in
frame pixels (``(x, y)``, may be fractional, the far edge included), and an optional box (two corners, any order).

Click order. CVAT sends positive and negative points in two lists, so the order in which they were made is lost,
while AdaptiveClick runs click by click (each step sees the previous mask). The clicks are replayed as: the box
clicks (a positive click at the box centre, negative ones just outside its sides, as the Label Studio backend does;
the predictor gets the box beside them, so the baseline starts GrabCut from the rectangle), then the positive
points, then the negative points, each list in CVAT's order (the order they were added). This is deterministic, and
matches the usual session (find the object with positive clicks, then trim with negative ones). The mask is cut to
the box.

Steps are cached per frame, box and model version (the backend's :class:`~backend.cache.SessionCache`), so a new
negative point costs one network run, and a new positive point re-runs the negative points after it. A prompt may
carry at most ``ADAPTIVECLICK_MAX_PROMPTS`` points and box, and may use the model for
``ADAPTIVECLICK_REQUEST_DEADLINE`` seconds (waiting for it included); a request stopped at its deadline leaves the
steps it made in the cache, so the next click goes on from there.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np

from adaptiveclick.labelstudio.errors import BadRequest
from adaptiveclick.labelstudio.settings import ImageLimits, PolygonSettings
from adaptiveclick.model.clicks import Click
from adaptiveclick.model.loading import load_predictor
from adaptiveclick.model.prediction import PROB_THRESHOLD, mask_score
from adaptiveclick.model.predictor import Predictor
from adaptiveclick.model.prompts import Box, box_to_clicks, cut_to_box

from .cache import SessionCache
from .segmentation import run_clicks
from .served_model import ServedModel
from .settings import Settings

Point = tuple[float, float]  # (x, y) in frame pixels


@dataclass(frozen=True)
class InteractorPrompt:
    """One CVAT prompt: points ``(x, y)`` in frame pixels as sent (checked against the frame when it is known),
    the box's two corners or None, and a threshold that overrides the configured one (or None)."""

    positives: tuple[Point, ...]
    negatives: tuple[Point, ...]
    box: tuple[Point, Point] | None = None
    threshold: float | None = None

    @property
    def size(self) -> int:
        """Points and box, as ``ADAPTIVECLICK_MAX_PROMPTS`` counts them."""
        return len(self.positives) + len(self.negatives) + (self.box is not None)


@dataclass(frozen=True)
class Frame:
    """A decoded frame as the predictor takes it: ``image`` ``[H, W, 3]`` uint8 RGB, read-only (EXIF orientation
    applied, within the image limits), and ``key``, which names it in the session cache."""

    key: str
    image: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray, key: str | None = None) -> Frame:
        """``image`` as a frame; without ``key``, its pixels' sha256 names it (the same frame decoded twice shares
        its cached clicks)."""
        image.setflags(write=False)
        if key is None:
            digest = hashlib.sha256(repr(image.shape).encode())
            digest.update(np.ascontiguousarray(image).data)
            key = digest.hexdigest()
        return cls(key, image)


@dataclass(frozen=True)
class InteractorResult:
    """The answer to one prompt: ``mask`` ``[H, W]`` bool (cut to the box), ``score`` (mean probability over the
    mask, 0 when it is empty), the version that produced it, and what the run did."""

    mask: np.ndarray
    score: float
    model_version: str
    network_runs: int
    cached_clicks: int
    seconds_model: float


def pixel_index(value: float, size: int, what: str) -> int:
    """A CVAT coordinate (pixels, may be fractional, the far edge included) as a pixel index."""
    if not (math.isfinite(value) and 0.0 <= value <= size):
        raise BadRequest(f"{what} lies outside the {size}-pixel image")
    return min(size - 1, int(math.floor(value)))


def clicks_for(prompt: InteractorPrompt, height: int, width: int) -> tuple[list[Click], Box | None]:
    """Pixel clicks in replay order (see the module docstring) and the box ``(top, bottom, left, right)``, if any."""
    clicks: list[Click] = []
    box = None
    if prompt.box is not None:
        (x1, y1), (x2, y2) = prompt.box
        left, right = sorted((pixel_index(x1, width, "box x"), pixel_index(x2, width, "box x")))
        top, bottom = sorted((pixel_index(y1, height, "box y"), pixel_index(y2, height, "box y")))
        box = (top, bottom, left, right)
        clicks.extend(box_to_clicks(box, height, width))
    for points, positive in ((prompt.positives, True), (prompt.negatives, False)):
        kind = "positive" if positive else "negative"
        for x, y in points:
            clicks.append(
                Click(
                    pixel_index(y, height, f"{kind} point y={y:g}"),
                    pixel_index(x, width, f"{kind} point x={x:g}"),
                    positive,
                )
            )
    return [Click(c.y, c.x, c.is_positive, k) for k, c in enumerate(clicks)], box


class Interactor:
    """One predictor answering CVAT prompts, with the backend's per-frame session cache.

    Args:
        predictor: what :func:`model.load_predictor` returns.
        threshold: probability above which a pixel is in the mask (a prompt may override it).
        cache_bytes: session cache budget (decoded frames and per-click outputs).
        limits: the largest frame accepted (413 beyond).
        polygons: the simplification tolerance and holes mode of polygon answers (the nuclio reply's).
        max_prompts: points and box one prompt may carry.
        deadline_s: model time, waiting for it included, one prompt may take (None: no limit).
    """

    def __init__(
        self,
        predictor: Predictor,
        threshold: float = PROB_THRESHOLD,
        cache_bytes: int = 2048 << 20,
        limits: ImageLimits = ImageLimits(),
        polygons: PolygonSettings = PolygonSettings(),
        max_prompts: int = 100,
        deadline_s: float | None = 30.0,
    ) -> None:
        self.served = ServedModel(predictor, predictor.model_version)
        self.cache = SessionCache(cache_bytes)
        self.threshold = threshold
        self.limits = limits
        self.polygons = polygons
        self.max_prompts = max_prompts
        self.deadline_s = deadline_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Interactor:
        """The predictor, limits, prompt cap and deadline the backend's settings name (``ADAPTIVECLICK_PREDICTOR``,
        ``DEVICE``, ``ADAPTIVECLICK_MAX_PROMPTS``, ``ADAPTIVECLICK_REQUEST_DEADLINE``, ...)."""
        device = None if settings.device == "auto" else settings.device
        return cls(
            load_predictor(settings.predictor, device=device),
            settings.threshold,
            settings.cache_bytes,
            settings.label_studio.limits,
            settings.label_studio.polygons,
            settings.max_prompts,
            settings.request_deadline,
        )

    @property
    def model_version(self) -> str:
        return self.served.version

    def check(self, prompt: InteractorPrompt) -> None:
        """What can be said of ``prompt`` before its frame is decoded: :class:`BadRequest` when it cannot be
        answered."""
        if prompt.size > self.max_prompts:
            raise BadRequest(
                f"too many points ({prompt.size} points and box; at most {self.max_prompts}, "
                "ADAPTIVECLICK_MAX_PROMPTS): start a new object"
            )
        if not prompt.positives and prompt.box is None:  # a box alone is enough: its centre is a positive click
            raise BadRequest("at least one positive point (or a box) is needed; there is none")
        if prompt.threshold is not None and not 0.0 < prompt.threshold < 1.0:
            raise BadRequest("the threshold must be a number strictly between 0 and 1")

    def segment(self, frame: Frame, prompt: InteractorPrompt) -> InteractorResult:
        """The mask for ``prompt`` on ``frame``; :class:`~labelstudio.errors.RequestError` when the prompt cannot
        be answered (bad prompt 400, model busy or past the deadline 503)."""
        self.check(prompt)
        height, width = frame.image.shape[:2]
        clicks, box = clicks_for(prompt, height, width)
        deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s
        run = run_clicks(self.served, self.cache, frame.key, frame.image, clicks, deadline, box)
        mask = run.state.probs > (prompt.threshold or self.threshold)
        if box is not None:
            mask = cut_to_box(mask, box)
        return InteractorResult(
            mask,
            mask_score(run.state.probs, mask),
            self.served.version,
            run.network_runs,
            run.cached_clicks,
            run.seconds,
        )
