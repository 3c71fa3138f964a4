"""The label-studio-ml 2.x protocol: parse ``/predict`` and ``/setup`` bodies, build brush results.

``POST /predict`` carries ``{"tasks": [...], "project": "<id>.<created_at>", "label_config": "<View>...",
"params": {"context": {"result": [...]}}}``. Interactive annotation sends one task and a context whose
``result`` holds the annotator's smart regions: ``keypointlabels`` (``value.x``/``value.y`` in percent of the
image, ``is_positive`` on the region, false for an Alt-click) and ``rectanglelabels`` (``x``, ``y``, ``width``,
``height`` in percent). The reply is ``{"results": [prediction, ...]}``, one prediction per task, where a
prediction is ``{"result": [region], "score": float, "model_version": str}``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequest
from .label_config import InteractiveConfig, parse_label_config


@dataclass(frozen=True)
class PointPrompt:
    """A click in percent of the image (0..100), as Label Studio sends it."""

    x: float
    y: float
    is_positive: bool


@dataclass(frozen=True)
class BoxPrompt:
    """An axis-aligned box in percent of the image."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Interaction:
    """The annotator's prompts for one object: ``prompts`` in the order they were made, and the chosen label."""

    prompts: tuple[PointPrompt | BoxPrompt, ...]
    label: str
    image_rotation: float = 0.0
    original_size: tuple[int, int] | None = None  # (width, height) that Label Studio reports, if any


@dataclass(frozen=True)
class PredictRequest:
    tasks: list[dict]
    project: str | None
    config: InteractiveConfig
    context: dict | None = field(default=None)


def require_object(body: Any, what: str = "request body") -> dict:
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return body


def parse_predict_request(body: Any) -> PredictRequest:
    body = require_object(body)
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise BadRequest("'tasks' must be a list of task objects")
    params = body.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise BadRequest("'params' must be an object")
    context = params.get("context")
    if context is not None and not isinstance(context, dict):
        raise BadRequest("'params.context' must be an object")
    config = parse_label_config(body.get("label_config"))
    project = body.get("project")
    return PredictRequest(tasks, None if project is None else str(project), config, context or None)


def project_id(project: Any) -> str | None:
    """``"12.1700000000"`` (id.created_at, as Label Studio sends it) -> ``"12"``."""
    return None if project in (None, "") else str(project).split(".", 1)[0]


def task_image_url(task: dict, config: InteractiveConfig) -> str:
    data = task.get("data")
    if not isinstance(data, dict):
        raise BadRequest(f"task {task.get('id')} has no 'data' object")
    url = data.get(config.image_value)
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"task {task.get('id')} has no image under data.{config.image_value}")
    return url.strip()


def parse_interaction(context: dict, config: InteractiveConfig) -> Interaction | None:
    """The prompts in ``context["result"]`` (None when there are none, e.g. plain pre-annotation)."""
    results = context.get("result")
    if results is None:
        return None
    if not isinstance(results, list):
        raise BadRequest("'context.result' must be a list of regions")
    prompts, labels, rotation, size = [], [], 0.0, None
    for region in results:
        if not isinstance(region, dict):
            raise BadRequest("every item of 'context.result' must be an object")
        kind = str(region.get("type", "")).lower()
        if kind not in ("keypointlabels", "rectanglelabels"):
            continue  # e.g. the brush region of the previous answer: not a prompt
        value = region.get("value")
        if not isinstance(value, dict):
            raise BadRequest(f"{kind} region has no 'value' object")
        prompts.append(_point(value, region) if kind == "keypointlabels" else _box(value))
        chosen = value.get(kind)
        if isinstance(chosen, list) and chosen:
            labels.append(str(chosen[0]))
        rotation = _number(region.get("image_rotation", 0) or 0, "image_rotation")
        if region.get("original_width") and region.get("original_height"):
            size = (int(_number(region["original_width"], "original_width")),
                    int(_number(region["original_height"], "original_height")))
    if not prompts:
        return None
    return Interaction(tuple(prompts), _resolve_label(labels, config), rotation, size)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"'{name}' must be a finite number, got {value!r}")
    return float(value)


def _percent(value: dict, name: str) -> float:
    if name not in value:
        raise BadRequest(f"a prompt region lacks value.{name}")
    number = _number(value[name], name)
    if not 0.0 <= number <= 100.0:
        raise BadRequest(f"prompt {name}={number:g}% lies outside the image (0..100%)")
    return number


def _point(value: dict, region: dict) -> PointPrompt:
    positive = region.get("is_positive", value.get("is_positive", True))
    if positive is None:
        positive = True
    if not isinstance(positive, bool):
        raise BadRequest(f"'is_positive' must be true or false, got {positive!r}")
    return PointPrompt(_percent(value, "x"), _percent(value, "y"), positive)


def _box(value: dict) -> BoxPrompt:
    x, y = _percent(value, "x"), _percent(value, "y")
    width, height = _number(value.get("width"), "width"), _number(value.get("height"), "height")
    if width <= 0 or height <= 0 or x + width > 100.0 + 1e-6 or y + height > 100.0 + 1e-6:
        raise BadRequest(f"box x={x:g}% y={y:g}% width={width:g}% height={height:g}% is empty or leaves the image")
    if _number(value.get("rotation", 0) or 0, "rotation") != 0:
        raise BadRequest("rotated boxes are not supported as prompts: draw the box without rotation")
    return BoxPrompt(x, y, width, height)


def _resolve_label(labels: list[str], config: InteractiveConfig) -> str:
    """The label of the most recent prompt, which must be one of the BrushLabels labels."""
    if not labels:
        if len(config.brush.labels) == 1:
            return config.brush.labels[0]
        raise BadRequest("no label selected: choose a label before clicking")
    label = labels[-1]
    if config.brush.labels and label not in config.brush.labels:
        raise BadRequest(f"label {label!r} is not one of the BrushLabels labels "
                         f"({', '.join(config.brush.labels)}): add it to <BrushLabels name=\"{config.brush.name}\">")
    return label


def brush_prediction(rle: list[int], label: str, config: InteractiveConfig, width: int, height: int,
                     score: float, model_version: str, image_rotation: float = 0.0) -> dict:
    """One prediction holding one brushlabels region, the shape Label Studio stores and displays."""
    region = {
        "from_name": config.brush.name,
        "to_name": config.image_name,
        "type": "brushlabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": image_rotation,
        "value": {"format": "rle", "rle": rle, "brushlabels": [label]},
        "score": score,
        "readonly": False,
    }
    return {"result": [region], "score": score, "model_version": model_version}


def parse_setup_request(body: Any) -> tuple[str | None, InteractiveConfig | None]:
    """``/setup`` body -> (project id, parsed config). A config that is not interactive is reported, not fatal:
    Label Studio also calls /setup while the user is still editing the config."""
    body = require_object(body)
    schema = body.get("schema")
    config = parse_label_config(schema) if schema else None
    return project_id(body.get("project")), config

