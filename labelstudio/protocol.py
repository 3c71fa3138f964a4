"""The label-studio-ml 2.x protocol: a ``/predict`` or ``/setup`` body parsed once into a typed request, and the
reply formatted once.

``POST /predict`` carries ``{"tasks": [...], "project": "<id>.<created_at>", "label_config": "<View>...",
"params": {"context": {"result": [...]}}}``. Interactive annotation sends one task and a context whose
``result`` holds the annotator's smart regions: ``keypointlabels`` (``value.x``/``value.y`` in percent of the
image, ``is_positive`` on the region, false for an Alt-click) and ``rectanglelabels`` (``x``, ``y``, ``width``,
``height`` in percent); :func:`parse_predict_request` turns that into a :class:`ClickRequest`. A body without
prompts is a :class:`PreannotationRequest`: Label Studio's *Retrieve Predictions* sends ``params.context: null``
and the tasks with their annotations and predictions, whose rectangles then say what to segment
(:mod:`labelstudio.boxes`). The reply is ``{"results": [prediction, ...]}``, one entry per task, where a prediction
is ``{"result": [region, ...], "score": float, "model_version": str}``: for a mask (:func:`mask_prediction`, or
several in one prediction, :func:`masks_prediction`) a ``brushlabels`` region with the mask and/or one
``polygonlabels`` region per connected part of it, as the label config's output tags ask.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .label_config import InteractiveConfig, parse_label_config

PixelBox = tuple[int, int, int, int]  # (top, bottom, left, right) in pixels, inclusive
DEFAULT_MAX_PROMPTS = 100
MAX_NUMBER = 10**15  # far beyond any coordinate; larger integers do not even convert to float exactly
MAX_IMAGE_SIDE = 1_000_000
MAX_ID_DIGITS = 18  # Label Studio's ids are 64-bit integers
UNPIN_WORD = "latest"  # extra_params {"model_version": "latest"}: back to the project's current version


def percent_to_pixel(value: float, size: int) -> int:
    """A coordinate in percent (0..100) to a pixel index in ``0..size-1``."""
    return min(size - 1, max(0, int(math.floor(value * size / 100.0))))


@dataclass(frozen=True)
class PointPrompt:
    """A click in percent of the image (0..100), as Label Studio sends it."""

    x: float
    y: float
    is_positive: bool

    def pixel(self, height: int, width: int) -> tuple[int, int]:
        """``(y, x)`` in pixels of a ``height`` x ``width`` image."""
        return percent_to_pixel(self.y, height), percent_to_pixel(self.x, width)


@dataclass(frozen=True)
class BoxPrompt:
    """An axis-aligned box in percent of the image."""

    x: float
    y: float
    width: float
    height: float

    def pixels(self, height: int, width: int) -> PixelBox:
        """``(top, bottom, left, right)`` in pixels, inclusive."""
        top, left = percent_to_pixel(self.y, height), percent_to_pixel(self.x, width)
        bottom = max(top, percent_to_pixel(self.y + self.height, height))
        right = max(left, percent_to_pixel(self.x + self.width, width))
        return top, bottom, left, right


Prompt = PointPrompt | BoxPrompt


@dataclass(frozen=True)
class ClickRequest:
    """One interactive ``/predict``: the annotator's prompts for one object on one task's image.

    Attributes:
        project: Label Studio's project id (``"12.1700000000"`` -> 12), None when the body names none.
        task_id: the task's id (an integer in Label Studio), None when the task has none.
        image_url: the task's image, as the task data names it.
        prompts: clicks and boxes in the order they were made, in percent of the image.
        label: the label of the most recent prompt; a label of the output tags it goes to
            (``config.outputs_for(label)``, never empty).
        config: the parts of the labelling config that matter here.
        image_rotation: as Label Studio reports it (the mask comes back with the same value).
        original_size: ``(width, height)`` that Label Studio reports, if any.
    """

    project: int | None
    task_id: int | None
    image_url: str
    prompts: tuple[Prompt, ...]
    label: str
    config: InteractiveConfig
    image_rotation: float = 0.0
    original_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class PreannotationRequest:
    """A ``/predict`` without prompts: the tasks (with their annotations and predictions, as Label Studio sends
    them) to pre-annotate from the rectangles they hold.

    Attributes:
        config: parsed with ``prompts_required=False`` (a config whose only prompts are plain rectangles will do).
        has_context: the body had a ``params.context`` (an interactive request that holds no prompt yet); Retrieve
            Predictions and automatic pre-annotation send none.
    """

    project: int | None
    tasks: tuple[dict, ...]
    config: InteractiveConfig
    has_context: bool = False


@dataclass(frozen=True)
class SetupRequest:
    """``/setup``: the project, its config, and what the Connect Model dialog's *extra params* ask of the model.

    ``model_version`` is the version ``extra_params`` pins the project to (``{"model_version": "ft-..."}``); it is
    None with ``unpin`` True for ``{"model_version": null}`` (or ``""`` / ``"latest"``), and None with ``unpin``
    False when ``extra_params`` names no model version.
    """

    project: int | None
    config: InteractiveConfig | None
    model_version: str | None = None
    unpin: bool = False


def require_object(body: Any, what: str = "request body") -> dict:
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return body


def parse_predict_request(body: Any, max_prompts: int = DEFAULT_MAX_PROMPTS) -> ClickRequest | PreannotationRequest:
    """The typed request in a ``/predict`` body; :class:`BadRequest` (400) says what is malformed.

    Args:
        max_prompts: the most clicks and boxes one request may carry (``ADAPTIVECLICK_MAX_PROMPTS``), so that one
            request cannot hold the model for long.
    """
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
    config = parse_label_config(body.get("label_config"), prompts_required=False)
    project = project_id(body.get("project"))
    prompts = _prompts(context.get("result") if context else None, config, max_prompts)
    if prompts is None:
        return PreannotationRequest(project, tuple(tasks), config, context is not None)
    if not config.interactive:  # clicks need a smart tool: the interactive parse says what the config lacks
        config = parse_label_config(body.get("label_config"))
    if len(tasks) != 1:
        raise BadRequest(f"interactive annotation takes exactly one task, got {len(tasks)}")
    task = tasks[0]
    return ClickRequest(
        project,
        task_id(task.get("id")),
        task_image_url(task, config),
        prompts.prompts,
        prompts.label,
        config,
        prompts.image_rotation,
        prompts.original_size,
    )


def parse_setup_request(body: Any) -> SetupRequest:
    """``/setup`` body -> project id and parsed config. A config that is not interactive is reported, not fatal:
    Label Studio also calls /setup while the user is still editing the config. A config whose only prompts are
    plain rectangles is accepted (Retrieve Predictions segments them)."""
    body = require_object(body)
    schema = body.get("schema")
    config = parse_label_config(schema, prompts_required=False) if schema else None
    extra = _extra_params(body.get("extra_params"))
    if "model_version" not in extra:
        return SetupRequest(project_id(body.get("project")), config)
    wanted = extra["model_version"]
    if wanted is not None and not isinstance(wanted, str):
        raise BadRequest(f"extra_params.model_version must be a version name or null, got {shown(wanted)}")
    name = (wanted or "").strip()
    unpin = name in ("", UNPIN_WORD)
    return SetupRequest(project_id(body.get("project")), config, None if unpin else name, unpin)


def _extra_params(value: Any) -> dict:
    """The Connect Model dialog's JSON field: Label Studio sends it as a JSON string from the UI, as an object when
    set through its API, or null."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise BadRequest('extra_params is not valid JSON: write e.g. {"model_version": "ft-..."}') from None
    if not isinstance(value, dict):
        raise BadRequest(f"extra_params must be a JSON object, got {shown(value)}")
    return value


def project_id(project: Any) -> int | None:
    """``"12.1700000000"`` (id.created_at, as Label Studio sends it), ``"12"`` or ``12`` -> 12."""
    if project is None or project == "":
        return None
    text = str(project).split(".", 1)[0] if isinstance(project, (str, int)) and not isinstance(project, bool) else ""
    if not is_id_text(text):
        raise BadRequest(f"'project' must be a Label Studio project id such as \"12.1700000000\", got {shown(project)}")
    return int(text)


def is_id_text(text: str) -> bool:
    """ASCII digits, at most :data:`MAX_ID_DIGITS` of them (``"²"`` is a digit to ``str.isdigit`` but no number)."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS


def task_id(value: Any) -> int | None:
    """A task's ``id``: an integer (or a string of digits), None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not is_id_text(str(value)):
        raise BadRequest(f"task 'id' must be an integer, got {shown(value)}")
    return int(value)


def task_image_url(task: dict, config: InteractiveConfig) -> str:
    data = task.get("data")
    if not isinstance(data, dict):
        raise BadRequest(f"task {shown(task.get('id'))} has no 'data' object")
    url = data.get(config.image_value)
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"task {shown(task.get('id'))} has no image under data.{config.image_value}")
    return url.strip()


@dataclass(frozen=True)
class _Prompts:
    prompts: tuple[Prompt, ...]
    label: str
    image_rotation: float
    original_size: tuple[int, int] | None


def _prompts(results: Any, config: InteractiveConfig, max_prompts: int) -> _Prompts | None:
    """The prompts in ``context.result`` (None when there are none, e.g. plain pre-annotation)."""
    if results is None:
        return None
    if not isinstance(results, list):
        raise BadRequest("'context.result' must be a list of regions")
    prompts: list[Prompt] = []
    labels: list[str] = []
    rotation, size = 0.0, None
    for region in results:
        if not isinstance(region, dict):
            raise BadRequest("every item of 'context.result' must be an object")
        kind = str(region.get("type", "")).lower()
        if kind not in ("keypointlabels", "rectanglelabels"):
            continue  # e.g. the brush region of the previous answer: not a prompt
        if len(prompts) == max_prompts:
            raise BadRequest(
                f"more than {max_prompts} clicks and boxes in one request: at most {max_prompts} "
                "(ADAPTIVECLICK_MAX_PROMPTS); start a new region for another object",
                400,
            )
        value = region.get("value")
        if not isinstance(value, dict):
            raise BadRequest(f"{kind} region has no 'value' object")
        prompts.append(_point(value, region) if kind == "keypointlabels" else _box(value))
        chosen = value.get(kind)
        if isinstance(chosen, list) and chosen:
            labels.append(str(chosen[0]))
        rotation = _number(region.get("image_rotation", 0) or 0, "image_rotation")
        if region.get("original_width") and region.get("original_height"):
            size = (
                _size(region["original_width"], "original_width"),
                _size(region["original_height"], "original_height"),
            )
    if not prompts:
        return None
    return _Prompts(tuple(prompts), _resolve_label(labels, config), rotation, size)


def _number(value: Any, name: str) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        raise BadRequest(f"'{name}' must be a number of sensible size, got an integer of {len(str(value))} digits")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"'{name}' must be a finite number, got {shown(value)}")
    return float(value)


def _size(value: Any, name: str) -> int:
    number = _number(value, name)
    if not 0 < number <= MAX_IMAGE_SIDE:
        raise BadRequest(f"'{name}' must be an image size in pixels (1..{MAX_IMAGE_SIDE}), got {shown(value)}")
    return int(number)


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile value must not flood the reply or the log)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


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
        raise BadRequest(f"'is_positive' must be true or false, got {shown(positive)}")
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
    """The label of the most recent prompt, which must be a label of an output tag (BrushLabels, PolygonLabels)."""
    if not labels:
        if len(config.output_labels) == 1:
            return config.output_labels[0]
        raise BadRequest("no label selected: choose a label before clicking")
    label = labels[-1]
    if not config.outputs_for(label):
        kinds = " or ".join(tag.tag for tag in config.outputs)
        tags = " or ".join(f'<{tag.tag} name="{tag.name}">' for tag in config.outputs)
        raise BadRequest(
            f"label {shown(label)} is not one of the {kinds} labels ({', '.join(config.output_labels)}): "
            f"add it to {tags}"
        )
    return label
