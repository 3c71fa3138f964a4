"""Read a Label Studio label config: which Image the clicks refer to and which BrushLabels receives the mask.

Interactive segmentation needs an ``<Image>``, a ``<BrushLabels>`` bound to it (the output) and at least one
``<KeyPointLabels smart="true">`` bound to it (the clicks); a ``<RectangleLabels smart="true">`` may add box
prompts. The shipped config is ``labelstudio/label_config.xml``.
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


@dataclass(frozen=True)
class ControlTag:
    """One control tag (``BrushLabels``, ``KeyPointLabels``, ``RectangleLabels``) bound to the image."""

    tag: str
    name: str
    to_name: str
    labels: tuple[str, ...]
    smart: bool

    @property
    def result_type(self) -> str:
        """The ``type`` of the results it produces: ``keypointlabels``, ``brushlabels``, ..."""
        return self.tag.lower()


@dataclass(frozen=True)
class InteractiveConfig:
    """What :func:`parse_label_config` found. ``image_value`` is the task data key (``$image`` -> ``image``)."""

    image_name: str
    image_value: str
    brush: ControlTag
    keypoints: tuple[ControlTag, ...]
    rectangles: tuple[ControlTag, ...]

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
    controls = [_control(el) for el in root.iter() if el.tag in ("BrushLabels", "KeyPointLabels", "RectangleLabels")]
    for image in images:
        bound = [c for c in controls if c.to_name == image.get("name")]
        brushes = [c for c in bound if c.tag == "BrushLabels"]
        keypoints = tuple(c for c in bound if c.tag == "KeyPointLabels" and c.smart)
        rectangles = tuple(c for c in bound if c.tag == "RectangleLabels" and c.smart)
        if brushes and (keypoints or rectangles):
            name, value = image.get("name", ""), image.get("value", "")
            if not value.startswith("$") or len(value) < 2:
                raise LabelConfigError(f'<Image name="{name}"> needs value="$key", got {value!r}')
            return InteractiveConfig(name, value[1:], brushes[0], keypoints, rectangles)
    raise LabelConfigError(
        'label_config needs an <Image>, a <BrushLabels> bound to it (toName) and a <KeyPointLabels smart="true"> '
        "bound to it; see labelstudio/label_config.xml"
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
