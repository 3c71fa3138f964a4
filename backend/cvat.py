"""CVAT's nuclio interactor protocol (self-hosted CVAT, ``deploy/cvat``) over :class:`backend.interactor.Interactor`:
plain functions, no nuclio here.

CVAT posts, for every click the annotator makes on an object, the frame and all points so far::

    {"image": "<base64 JPEG/PNG>", "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],
     "obj_bbox": [[x1, y1], [x2, y2]]}          # obj_bbox optional; coordinates in frame pixels

and expects ``{"mask": [[0 | 255, ...] x W] x H, "points": [[x, y], ...]}``: the mask as CVAT's SAM function
returns it, and the outer polygon of the mask's largest part (through boundary pixel centres, as before) for CVAT
versions that only read ``points``. The reply adds ``"polygons": [[[x, y], ...], ...]``: every connected part of
the mask as one polygon, largest first, none dropped, in continuous pixel coordinates (the image's top-left corner
at ``(0, 0)``, pixel ``(x, y)`` covering ``[x, x+1) x [y, y+1)``), simplified and with holes as the polygon
settings say (``ADAPTIVECLICK_POLYGON_TOLERANCE``, ``ADAPTIVECLICK_POLYGON_HOLES``; :mod:`labelstudio.polygons`).

How the points are replayed, cached, capped and timed is the interactor's (:mod:`backend.interactor`); decoded
frames are cached by the sha256 of their base64 text, so a click on the same frame decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from adaptiveclick.labelstudio.decode import decode_image
from adaptiveclick.labelstudio.errors import BadRequest, ImageError, RequestError
from adaptiveclick.labelstudio.media import strict_base64
from adaptiveclick.labelstudio.polygons import PolygonLimit, PolygonLimits, capped_polygons, mask_polygons
from adaptiveclick.labelstudio.settings import ImageLimits

from .interactor import Frame, Interactor, InteractorPrompt, InteractorResult


@dataclass(frozen=True)
class NuclioRequest:
    """A parsed CVAT body: the frame as base64 and the prompt."""

    image_b64: str
    prompt: InteractorPrompt


@dataclass(frozen=True)
class NuclioReply:
    """The interactor's answer and the polygons the reply adds to its mask."""

    result: InteractorResult
    polygon: list[list[int]]  # the largest part's outline through pixel centres, for old CVAT versions
    polygons: list[list[list[float]]]  # every part, [[x, y], ...] in continuous pixel coordinates


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


def parse_request(body: dict) -> NuclioRequest:
    """Check the shape of a CVAT body (the prompt cap by :meth:`Interactor.check`, image size and point bounds once
    the image is decoded)."""
    image = body.get("image")
    if not isinstance(image, str) or not image.strip():
        raise BadRequest("'image' must be the frame as a base64 string (JPEG or PNG)")
    positives = _points(body, "pos_points")
    negatives = _points(body, "neg_points")
    box = body.get("obj_bbox")
    if box in (None, []):
        box = None
    else:
        pairs = _number_pairs(box, "obj_bbox")
        if len(pairs) != 2:
            raise BadRequest("'obj_bbox' must be [[x1, y1], [x2, y2]]")
        box = (pairs[0], pairs[1])
    threshold = body.get("threshold")
    if threshold is not None:
        if not _is_number(threshold) or not 0.0 < threshold < 1.0:
            raise BadRequest("'threshold' must be a number strictly between 0 and 1")
        threshold = float(threshold)
    return NuclioRequest(image.strip(), InteractorPrompt(positives, negatives, box, threshold))


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


def response_json(reply: NuclioReply) -> bytes:
    return (
        b'{"mask":'
        + mask_rows_json(reply.result.mask)
        + b',"points":'
        + json.dumps(reply.polygon).encode()
        + b',"polygons":'
        + json.dumps(reply.polygons).encode()
        + b',"model_version":'
        + json.dumps(reply.result.model_version).encode()
        + b"}"
    )


def frame_of(interactor: Interactor, image_b64: str) -> Frame:
    """The decoded frame (from the session cache when this base64 text was decoded before)."""
    key = hashlib.sha256(image_b64.encode()).hexdigest()
    image = interactor.cache.get_image(key)
    if image is None:
        image = decode_frame(image_b64, interactor.limits)
        interactor.cache.put_image(key, image)
    return Frame(key, image)


def answer(interactor: Interactor, request: NuclioRequest) -> NuclioReply:
    """The interactor's mask for ``request`` with the reply's polygons."""
    interactor.check(request.prompt)  # before the frame is decoded
    result = interactor.segment(frame_of(interactor, request.image_b64), request.prompt)
    settings = interactor.polygons
    try:
        rings = mask_polygons(result.mask, settings.tolerance, settings.holes, PolygonLimits())
    except PolygonLimit:  # a noisy mask: its largest parts (the mask itself carries everything)
        rings = capped_polygons(result.mask, settings.tolerance)
    polygons = [ring.tolist() for ring in rings]
    return NuclioReply(result, outer_polygon(result.mask), polygons)


def handle(interactor: Interactor, body: Any) -> tuple[int, bytes, InteractorResult | None]:
    """``(status, JSON body, result)`` for a nuclio event body; errors give ``{"error": message}`` and no
    result."""
    try:
        reply = answer(interactor, parse_request(event_json(body)))
    except RequestError as exc:
        return exc.status_code, json.dumps({"error": exc.message}).encode(), None
    return 200, response_json(reply), reply.result
