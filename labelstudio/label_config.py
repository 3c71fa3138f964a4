"""Read a Label Studio label config: which Image the clicks refer to and which tags receive the answer.

Interactive segmentation needs an ``<Image>``, an output bound to it (a ``<BrushLabels>``: the mask as a brush
region; a ``<PolygonLabels>``: one polygon per connected part of the mask; or both) and at least one
``<KeyPointLabels smart="true">`` bound to it (the clicks); a ``<RectangleLabels smart="true">`` may add box
prompts. A clicked label goes to the output tags that list it (a tag without labels takes any), so with both
tags a label that only one of them lists is answered in that one alone. The shipped config is
``labelstudio/label_config.xml``.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LabelConfigError

RECOMMENDED_CONFIG = Path(__file__).with_name("label_config.xml")
TRUE_WORDS = ("true", "1", "yes")
OUTPUT_TAGS = ("BrushLabels", "PolygonLabels")
PROMPT_TAGS = ("KeyPointLabels", "RectangleLabels")


@dataclass(frozen=True)
class ControlTag:
    """One control tag (``BrushLabels``, ``PolygonLabels``, ``KeyPointLabels``, ``RectangleLabels``) bound to
    the image."""

    tag: str
    name: str
    to_name: str
    labels: tuple[str, ...]
    smart: bool

    @property
    def result_type(self) -> str:
        """The ``type`` of the results it produces: ``keypointlabels``, ``brushlabels``, ``polygonlabels``, ..."""
        return self.tag.lower()


@dataclass(frozen=True)
class InteractiveConfig:
    """What :func:`parse_label_config` found. ``image_value`` is the task data key (``$image`` -> ``image``);
    ``brush`` and ``polygon`` are the output tags, at least one of them set."""

    image_name: str
    image_value: str
    brush: ControlTag | None
    polygon: ControlTag | None
    keypoints: tuple[ControlTag, ...]
    rectangles: tuple[ControlTag, ...]

    @property
    def outputs(self) -> tuple[ControlTag, ...]:
        """The output tags that exist: the brush tag, then the polygon tag."""
        return tuple(tag for tag in (self.brush, self.polygon) if tag is not None)

    @property
    def output_labels(self) -> tuple[str, ...]:
        """Every label of the output tags, once each, in the config's order."""
        return tuple(dict.fromkeys(label for tag in self.outputs for label in tag.labels))

    def outputs_for(self, label: str) -> tuple[ControlTag, ...]:
        """The output tags an answer labelled ``label`` goes to: those that list it (a tag without labels takes
        any label); empty when none does."""
        return tuple(tag for tag in self.outputs if not tag.labels or label in tag.labels)

    def prompt_tag(self, name: str) -> ControlTag | None:
        return next((t for t in self.keypoints + self.rectangles if t.name == name), None)


def recommended_config() -> str:
    return RECOMMENDED_CONFIG.read_text()


def parse_label_config(xml: Any) -> InteractiveConfig:
    """Parse ``xml``; a :class:`LabelConfigError` (400) says what is missing or malformed."""
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("label_config is missing or not a string: send the project's label config (XML)")
    return _parse(xml)


@functools.lru_cache(maxsize=64)  # every request of a project carries the same config
def _parse(xml: str) -> InteractiveConfig:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"label_config is not valid XML: {exc}") from None
    images = [el for el in root.iter() if el.tag == "Image" and el.get("name")]
    if not images:
        raise LabelConfigError('label_config has no <Image name=... value="$..."> tag')
    controls = [_control(el) for el in root.iter() if el.tag in OUTPUT_TAGS + PROMPT_TAGS]
    for image in images:
        bound = [c for c in controls if c.to_name == image.get("name")]
        brush = next((c for c in bound if c.tag == "BrushLabels"), None)
        polygon = next((c for c in bound if c.tag == "PolygonLabels"), None)
        keypoints = tuple(c for c in bound if c.tag == "KeyPointLabels" and c.smart)
        rectangles = tuple(c for c in bound if c.tag == "RectangleLabels" and c.smart)
        if (brush or polygon) and (keypoints or rectangles):
            name, value = image.get("name", ""), image.get("value", "")
            if not value.startswith("$") or len(value) < 2:
                raise LabelConfigError(f'<Image name="{name}"> needs value="$key", got {value!r}')
            return InteractiveConfig(name, value[1:], brush, polygon, keypoints, rectangles)
    raise LabelConfigError(
        "label_config needs an <Image>, a <BrushLabels> or <PolygonLabels> bound to it (toName) for the answer "
        'and a <KeyPointLabels smart="true"> bound to it for the clicks; see labelstudio/label_config.xml'
    )


def _control(el: ET.Element) -> ControlTag:
    labels = tuple(child.get("value", "") for child in el.iter("Label") if child.get("value") is not None)
    return ControlTag(
        tag=el.tag,
        name=el.get("name", ""),
        to_name=el.get("toName", ""),
        labels=labels,
        smart=el.get("smart", "").lower() in TRUE_WORDS,
    )
