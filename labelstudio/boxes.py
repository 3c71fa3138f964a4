"""A task's rectangles as box prompts: where they are taken from, which of them can be segmented, and why the
others cannot.

Label Studio stores a rectangle as a ``rectanglelabels`` region: ``value.x``/``y``/``width``/``height`` in percent
of the image, ``value.rotation`` in degrees, ``value.rectanglelabels`` its label. :func:`task_boxes` reads those of
the task's chosen annotation (:func:`labelstudio.regions.choose_annotation`: the ground truth, else the latest one
not cancelled; ``source="annotations"``) or of its latest prediction that holds rectangles (a detector's;
``source="predictions"``), and keeps the rectangles that are bound to the config's Image, not rotated, not empty
(clamped to the image) and labelled with a label an output tag takes (a rectangle without a label takes the only
output label when there is just one). Every other rectangle is skipped with a reason, and a task that gives no box
says why (:attr:`TaskBoxes.reason`), so that jobs can report what they left out and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from .errors import BadRequest
from .label_config import InteractiveConfig
from .protocol import BoxPrompt, shown, task_id, task_image_url
from .regions import choose_annotation, recency, records

SOURCES = ("annotations", "predictions")
RECTANGLE = "rectanglelabels"


@dataclass(frozen=True)
class LabelledBox:
    """A rectangle to segment: the box in percent of the image and the label its mask gets."""

    box: BoxPrompt
    label: str


@dataclass(frozen=True)
class TaskBoxes:
    """What one task offers to segment.

    Attributes:
        task_id: the task's id (None when it has none).
        image_url: the task's image (None when the data names none).
        boxes: the rectangles to segment, in the order of the regions.
        skipped: one reason per rectangle that is not segmented (rotated, on another image, label without output...).
        reason: why the task gives no box at all (no annotation, no rectangles, no image, ...), None when it gives some.
    """

    task_id: int | None
    image_url: str | None
    boxes: tuple[LabelledBox, ...] = ()
    skipped: tuple[str, ...] = ()
    reason: str | None = None


def task_boxes(
    task: dict, config: InteractiveConfig, source: str = "annotations", max_boxes: int | None = None
) -> TaskBoxes:
    """The boxes of ``task`` (a task as Label Studio's API or ``/predict`` carries it) to segment; see the module
    docstring for which rectangles count. With ``max_boxes`` (``ADAPTIVECLICK_MAX_PROMPTS`` in the backend) the
    first that many usable rectangles are kept and the rest skipped with one reason."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    try:
        tid = task_id(task.get("id"))
    except BadRequest as exc:
        return TaskBoxes(None, None, reason=str(exc))
    regions, reason = _source_regions(task, source)
    if regions is None:
        return TaskBoxes(tid, None, reason=reason)
    rectangles = [r for r in regions if isinstance(r, dict) and str(r.get("type", "")).lower() == RECTANGLE]
    if not rectangles:
        return TaskBoxes(tid, None, reason=f"no rectangles in the {source[:-1]}")
    try:
        url = task_image_url(task, config)
    except BadRequest:
        return TaskBoxes(tid, None, reason=f"no image under data.{config.image_value}")
    boxes: list[LabelledBox] = []
    skipped: list[str] = []
    for k, region in enumerate(rectangles):
        if max_boxes is not None and len(boxes) >= max_boxes:
            skipped.append(
                f"{len(rectangles) - k} rectangles beyond the first {max_boxes} boxes of the task "
                "(ADAPTIVECLICK_MAX_PROMPTS)"
            )
            break
        box, why = rectangle_box(region, config)
        if box is None:
            skipped.append(why)
        else:
            boxes.append(box)
    return TaskBoxes(tid, url, tuple(boxes), tuple(skipped), None if boxes else "no usable rectangles")


def _source_regions(task: dict, source: str) -> tuple[list | None, str]:
    """The regions of the annotation or prediction that boxes come from, or ``(None, reason)``."""
    if source == "annotations":
        annotation, reason = choose_annotation(task)
        if annotation is None:
            return None, reason
        result = annotation.get("result")
        return (result, "") if isinstance(result, list) else (None, "annotation without a result list")
    predictions = [p for p in records(task, "predictions") if _has_rectangles(p)]
    if not predictions:
        return None, "no predictions with rectangles"
    latest = max(predictions, key=recency)
    return latest["result"], ""


def _has_rectangles(prediction: dict) -> bool:
    result = prediction.get("result")
    return isinstance(result, list) and any(
        isinstance(r, dict) and str(r.get("type", "")).lower() == RECTANGLE for r in result
    )


def rectangle_box(region: dict, config: InteractiveConfig) -> tuple[LabelledBox | None, str]:
    """The box of one ``rectanglelabels`` region, or ``(None, reason)``."""
    if region.get("to_name") not in (None, config.image_name):
        return None, f"rectangle on another image ({shown(region.get('to_name'), 40)})"
    if not _is_zero(region.get("image_rotation")):
        return None, "image rotated in the editor"
    value = region.get("value")
    if not isinstance(value, dict):
        return None, "rectangle without a value"
    if not _is_zero(value.get("rotation")):
        return None, "rotated rectangle"
    numbers = [float(n) for n in (value.get(k) for k in ("x", "y", "width", "height")) if _finite(n)]
    if len(numbers) != 4:
        return None, "rectangle without finite x, y, width, height"
    x, y, width, height = numbers
    # clamped to the image: imported boxes may overhang it by rounding
    left, top = max(0.0, x), max(0.0, y)
    right, bottom = min(100.0, x + width), min(100.0, y + height)
    if right <= left or bottom <= top:
        return None, "rectangle empty or outside the image"
    label = _label(value.get(RECTANGLE), config)
    if label is None:
        return None, "rectangle without a label (several output labels to choose from)"
    if not config.outputs_for(label):
        return None, f"label {shown(label, 40)} is in no output tag ({', '.join(t.tag for t in config.outputs)})"
    return LabelledBox(BoxPrompt(left, top, right - left, bottom - top), label), ""


def _label(labels: Any, config: InteractiveConfig) -> str | None:
    if isinstance(labels, list) and labels and isinstance(labels[0], str):
        return labels[0]
    return config.output_labels[0] if len(config.output_labels) == 1 else None


def _finite(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_zero(value: Any) -> bool:
    """Absent, null or a number equal to 0 (a rotation of 360 is not taken to be none)."""
    return value is None or (_finite(value) and float(value) == 0.0)
