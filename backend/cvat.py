"""CVAT's interactor protocol over the backend's predictor: plain functions and one class, no nuclio here.

CVAT posts, for every click the annotator makes on an object, the frame and all points so far::

    {"image": "<base64 JPEG/PNG>", "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],
     "obj_bbox": [[x1, y1], [x2, y2]]}          # obj_bbox optional; coordinates in frame pixels

and expects ``{"mask": [[0 | 255, ...] x W] x H, "points": [[x, y], ...]}``: the mask as CVAT's SAM function
returns it, and the outer polygon of the mask's largest part (through boundary pixel centres, as before) for CVAT
versions that only read ``points``. The reply adds ``"polygons": [[[x, y], ...], ...]``: every connected part of
the mask as one polygon, largest first, none dropped, in continuous pixel coordinates (the image's top-left corner
at ``(0, 0)``, pixel ``(x, y)`` covering ``[x, x+1) x [y, y+1)``), simplified and with holes as the polygon
settings say (``ADAPTIVECLICK_POLYGON_TOLERANCE``, ``ADAPTIVECLICK_POLYGON_HOLES``; :mod:`labelstudio.polygons`).

Click order. CVAT sends positive and negative points in two lists, so the order in which they were made is lost,
while AdaptiveClick runs click by click (each step sees the previous mask). The clicks are replayed as: the box
clicks (a positive click at the box centre, negative ones just outside its sides, as the Label Studio backend does),
then the positive points, then the negative points, each list in CVAT's order (the order they were added). This is
deterministic, and matches the usual session (find the object with positive clicks, then trim with negative ones).
Steps are cached per frame and model version (the backend's session cache), so a new negative point costs one
network run, and a new positive point re-runs the negative points after it.

Bounds, as for the Label Studio backend's ``/predict``: at most ``ADAPTIVECLICK_MAX_PROMPTS`` points (a box counts
as one; 400 beyond), and ``ADAPTIVECLICK_REQUEST_DEADLINE`` seconds of model time per request (503 beyond, the steps
done stay cached, so the next request goes on from there); the frame must be strict base64 within
``ADAPTIVECLICK_MAX_IMAGE_MB``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from adaptiveclick.labelstudio.decode import decode_image
from adaptiveclick.labelstudio.errors import BadRequest, ImageError, RequestError
from adaptiveclick.labelstudio.media import strict_base64
from adaptiveclick.labelstudio.polygons import PolygonLimit, PolygonLimits, capped_polygons, mask_polygons
from adaptiveclick.labelstudio.protocol import DEFAULT_MAX_PROMPTS
from adaptiveclick.labelstudio.settings import ImageLimits, PolygonSettings
from adaptiveclick.model.clicks import Click
from adaptiveclick.model.loading import load_predictor
from adaptiveclick.model.prediction import PROB_THRESHOLD
from adaptiveclick.model.predictor import Predictor
from adaptiveclick.model.prompts import Box, box_to_clicks, cut_to_box

from .cache import SessionCache
from .segmentation import run_clicks
from .served_model import ServedModel
from .settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InteractorRequest:
    """A parsed CVAT request; points are ``(x, y)`` in frame pixels, as sent (checked against the frame later)."""

    image_b64: str
    positives: tuple[tuple[float, float], ...]
    negatives: tuple[tuple[float, float], ...]
    box: tuple[tuple[float, float], tuple[float, float]] | None
    threshold: float | None


@dataclass(frozen=True)
class InteractorResult:
    mask: np.ndarray  # [H, W] bool
    polygon: list[list[int]]  # the largest part's outline through pixel centres, for old CVAT versions
    polygons: list[list[list[float]]]  # every part, [[x, y], ...] in continuous pixel coordinates
    model_version: str
    network_runs: int
    cached_clicks: int
    seconds_model: float


def event_json(body: Any) -> dict:
    """The event body as a dict: nuclio hands JSON bodies over decoded, other bodies as bytes or str."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("request body must be UTF-8 JSON") from None
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object with 'image', 'pos_points' and 'neg_points'")
    return body


def parse_request(body: dict, max_prompts: int = DEFAULT_MAX_PROMPTS) -> InteractorRequest:
    """Check the shape of a CVAT body (image size and point bounds are checked once the image is decoded); at most
    ``max_prompts`` points and boxes (``ADAPTIVECLICK_MAX_PROMPTS``)."""
    image = body.get("image")
    if not isinstance(image, str) or not image.strip():
        raise BadRequest("'image' must be the frame as a base64 string (JPEG or PNG)")
    for name in ("pos_points", "neg_points"):  # counted before they are read: a huge list costs nothing
        value = body.get(name)
        if isinstance(value, list) and len(value) > max_prompts:
            raise BadRequest(f"too many points ({len(value)} {name}; at most {max_prompts}, ADAPTIVECLICK_MAX_PROMPTS)")
    positives = _points(body, "pos_points")
    negatives = _points(body, "neg_points")
    box = body.get("obj_bbox")
    prompts = len(positives) + len(negatives) + (box not in (None, []))
    if prompts > max_prompts:
        raise BadRequest(
            f"too many points and boxes ({prompts}; at most {max_prompts}, ADAPTIVECLICK_MAX_PROMPTS): start a new "
            "object"
        )
    if box in (None, []):
        box = None
    else:
        pairs = _number_pairs(box, "obj_bbox")
        if len(pairs) != 2:
            raise BadRequest("'obj_bbox' must be [[x1, y1], [x2, y2]]")
        box = (pairs[0], pairs[1])
    if not positives and box is None:  # a box alone is enough: its centre is a positive click
        raise BadRequest("at least one positive point (or an 'obj_bbox') is needed; 'pos_points' is empty")
    threshold = body.get("threshold")
    if threshold is not None:
        if not _is_number(threshold) or not 0.0 < threshold < 1.0:
            raise BadRequest("'threshold' must be a number strictly between 0 and 1")
        threshold = float(threshold)
    return InteractorRequest(image.strip(), positives, negatives, box, threshold)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_pairs(value: Any, name: str) -> list[tuple[float, float]]:
    if not isinstance(value, list):
        raise BadRequest(f"'{name}' must be a list of [x, y] pairs")
    pairs = []
    for item in value:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(_is_number(v) for v in item)):
            raise BadRequest(f"'{name}' must be a list of [x, y] pairs of numbers, got {item!r}")
        pairs.append((float(item[0]), float(item[1])))
    return pairs


def _points(body: dict, name: str) -> tuple[tuple[float, float], ...]:
    value = body.get(name)
    if value is None:
        return ()
    return tuple(_number_pairs(value, name))


def decode_frame(image_b64: str, limits: ImageLimits) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB from base64 (a ``data:`` URI prefix is accepted), EXIF orientation applied."""
    payload = image_b64.split(",", 1)[1] if image_b64.startswith("data:") else image_b64
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise BadRequest(f"image is larger than {limits.max_bytes >> 20} MiB (ADAPTIVECLICK_MAX_IMAGE_MB)", 413)
    try:
        data = strict_base64(payload, "'image'")
        return decode_image(data, limits, source="image")
    except ImageError as exc:
        raise BadRequest(exc.message, 413 if exc.status_code == 413 else 400) from None


def pixel_index(value: float, size: int, what: str) -> int:
    """A CVAT coordinate (pixels, may be fractional, the far edge included) as a pixel index."""
    if not 0.0 <= value <= size:
        raise BadRequest(f"{what} lies outside the {size}-pixel image")
    return min(size - 1, int(math.floor(value)))


def clicks_for(request: InteractorRequest, height: int, width: int) -> tuple[list[Click], Box | None]:
    """Pixel clicks in replay order (see the module docstring) and the box, if any."""
    clicks: list[Click] = []
    box = None
    if request.box is not None:
        (x1, y1), (x2, y2) = request.box
        left, right = sorted((pixel_index(x1, width, "obj_bbox x"), pixel_index(x2, width, "obj_bbox x")))
        top, bottom = sorted((pixel_index(y1, height, "obj_bbox y"), pixel_index(y2, height, "obj_bbox y")))
        box = (top, bottom, left, right)
        clicks.extend(box_to_clicks(box, height, width))
    for points, positive in ((request.positives, True), (request.negatives, False)):
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


def outer_polygon(mask: np.ndarray) -> list[list[int]]:
    """The outline ``[[x, y], ...]`` of the largest connected part of ``mask`` ``[H, W]`` (``[]`` when there is
    no part with an area)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    largest = max(contours, key=cv2.contourArea)
    if len(largest) < 3:
        return []
    return largest.reshape(-1, 2).astype(int).tolist()


def mask_rows_json(mask: np.ndarray) -> bytes:
    """``mask`` ``[H, W]`` bool as the JSON array of rows of 0/255 that CVAT reads.

    ``json.dumps(mask.tolist())`` takes 0.6-1 s for a 4K frame on the 2-core dev box; writing every value with the
    same width (``"  0,"`` or ``"255,"``; JSON allows the spaces) lets numpy lay out the whole text at once, 3-6x
    faster, for a text about 1.6x longer (4 bytes per pixel).
    """
    height, width = mask.shape
    if height == 0 or width == 0:
        return b"[]"
    table = np.frombuffer(b"  0,255,", np.uint8).reshape(2, 4)
    text = np.empty((height, width * 4 + 2), np.uint8)
    text[:, 0] = ord("[")
    text[:, 1:-1] = table[mask.astype(bool).view(np.uint8)].reshape(height, width * 4)
    text[:, -2] = ord("]")  # over the last value's comma
    text[:, -1] = ord(",")
    text[-1, -1] = ord("]")
    return b"[" + text.tobytes()


def response_json(result: InteractorResult) -> bytes:
    return (
        b'{"mask":'
        + mask_rows_json(result.mask)
        + b',"points":'
        + json.dumps(result.polygon).encode()
        + b',"polygons":'
        + json.dumps(result.polygons).encode()
        + b',"model_version":'
        + json.dumps(result.model_version).encode()
        + b"}"
    )


class Interactor:
    """One predictor answering CVAT requests, with the backend's per-frame session cache.

    Args:
        predictor: what :func:`model.load_predictor` returns.
        threshold: probability above which a pixel is in the mask (a request may override it).
        cache_bytes: session cache budget (decoded frames and per-click outputs).
        limits: the largest frame accepted (413 beyond).
        polygons: the simplification tolerance and the holes mode of the reply's ``polygons``.
        max_prompts: points and boxes one request may carry (``ADAPTIVECLICK_MAX_PROMPTS``; 400 beyond).
        deadline_s: model time, waiting included, one request may take (``ADAPTIVECLICK_REQUEST_DEADLINE``; 503
            beyond); None: no limit.
    """

    def __init__(
        self,
        predictor: Predictor,
        threshold: float = PROB_THRESHOLD,
        cache_bytes: int = 2048 << 20,
        limits: ImageLimits = ImageLimits(),
        polygons: PolygonSettings = PolygonSettings(),
        max_prompts: int = DEFAULT_MAX_PROMPTS,
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
        """The predictor, limits and polygon settings the backend's settings name (``ADAPTIVECLICK_PREDICTOR``,
        ``DEVICE``, ...)."""
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

    def segment(self, request: InteractorRequest) -> InteractorResult:
        image_key = hashlib.sha256(request.image_b64.encode()).hexdigest()
        image = self.cache.get_image(image_key)
        if image is None:
            image = decode_frame(request.image_b64, self.limits)
            self.cache.put_image(image_key, image)
        height, width = image.shape[:2]
        clicks, box = clicks_for(request, height, width)
        deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s
        run = run_clicks(self.served, self.cache, image_key, image, clicks, deadline)
        mask = run.state.probs > (request.threshold or self.threshold)
        if box is not None:
            mask = cut_to_box(mask, box)
        try:
            rings = mask_polygons(mask, self.polygons.tolerance, self.polygons.holes, PolygonLimits())
        except PolygonLimit:  # a noisy mask: its largest parts (the mask itself carries everything)
            rings = capped_polygons(mask, self.polygons.tolerance)
        polygons = [ring.tolist() for ring in rings]
        return InteractorResult(
            mask, outer_polygon(mask), polygons, self.served.version, run.network_runs, run.cached_clicks, run.seconds
        )

    def handle(self, body: Any) -> tuple[int, bytes, InteractorResult | None]:
        """``(status, JSON body, result)`` for an event body; errors give ``{"error": message}`` and no result."""
        try:
            result = self.segment(parse_request(event_json(body), self.max_prompts))
        except RequestError as exc:
            return exc.status_code, json.dumps({"error": exc.message}).encode(), None
        return 200, response_json(result), result
