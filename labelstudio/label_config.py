"""Read a Label Studio label config: which Image the clicks refer to and which tags receive the answer.

Interactive segmentation needs an ``<Image>``, an output bound to it (a ``<BrushLabels>``: the mask as a brush
region; a ``<PolygonLabels>``: one polygon per connected part of the mask; or both) and at least one
``<KeyPointLabels smart="true">`` bound to it (the clicks); a ``<RectangleLabels smart="true">`` may add box
prompts. A clicked label goes to the output tags that list it (a tag without labels takes any), so with both
tags a label that only one of them lists is answered in that one alone. The shipped config is
``labelstudio/label_config.xml``.

Masks from the rectangles a project already holds (Retrieve Predictions, ``adaptiveclick annotate``) need no smart
tool: ``parse_label_config(xml, prompts_required=False)`` also takes an Image with an output tag and any
``<RectangleLabels>`` bound to it (:attr:`InteractiveConfig.boxes`).
"""

from __future__ import annotations

import hashlib
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import LabelConfigError

RECOMMENDED_CONFIG = Path(__file__).with_name("label_config.xml")
#: the longest label config accepted (Label Studio's configs are a few KB; one with hundreds of labels ~50 KB)
MAX_CONFIG_CHARS = 256 << 10
CACHED_CONFIGS = 64
_cache: OrderedDict[tuple[bytes, bool], InteractiveConfig] = OrderedDict()
_cache_lock = threading.Lock()
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
    #: every ``RectangleLabels`` bound to the image, smart or not: where annotators' (or a detector's) boxes live
    boxes: tuple[ControlTag, ...] = ()

    @property
    def interactive(self) -> bool:
        """It has a smart prompt tool (keypoints or rectangles), so clicks can be answered."""
        return bool(self.keypoints or self.rectangles)

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


def parse_label_config(xml: Any, prompts_required: bool = True) -> InteractiveConfig:
    """Parse ``xml``; a :class:`LabelConfigError` (400) says what is missing or malformed.

    Args:
        prompts_required: the config must have a smart prompt tool (clicks are to be answered); False also
            accepts an Image whose only prompts are the ``<RectangleLabels>`` regions already in the tasks.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("label_config is missing or not a string: send the project's label config (XML)")
    if len(xml) > MAX_CONFIG_CHARS:
        raise LabelConfigError(
            f"label_config has {len(xml)} characters, more than the {MAX_CONFIG_CHARS} accepted: an interactive "
            "config needs an Image, its output tags and the prompt tools (labelstudio/label_config.xml)"
        )
    return _parsed(hashlib.sha256(xml.encode("utf-8", "surrogatepass")).digest(), xml, prompts_required)


def _parsed(digest: bytes, xml: str, prompts_required: bool) -> InteractiveConfig:
    """:func:`_parse`, remembered for the :data:`CACHED_CONFIGS` latest configs by their digest (every request of
    a project carries the same config; the cache holds the parsed tags, never the text)."""
    key = (digest, prompts_required)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    parsed = _parse(xml, prompts_required)  # a LabelConfigError is not remembered: it is cheap to find again
    with _cache_lock:
        _cache[key] = parsed
        while len(_cache) > CACHED_CONFIGS:
            _cache.popitem(last=False)
    return parsed


def _parse(xml: str, prompts_required: bool) -> InteractiveConfig:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"label_config is not valid XML: {exc}") from None
    images = [el for el in root.iter() if el.tag == "Image" and el.get("name")]
    if not images:
        raise LabelConfigError('label_config has no <Image name=... value="$..."> tag')
    controls = [_control(el) for el in root.iter() if el.tag in OUTPUT_TAGS + PROMPT_TAGS]
    configs = [_image_config(image, controls) for image in images]
    # an image with a smart prompt tool first, so both kinds of parse pick the same image when both can
    found = next((c for c in configs if c.outputs and c.interactive), None)
    if found is None and not prompts_required:
        found = next((c for c in configs if c.outputs and c.boxes), None)
    if found is not None:
        if not found.image_value.startswith("$") or len(found.image_value) < 2:
            raise LabelConfigError(f'<Image name="{found.image_name}"> needs value="$key", got {found.image_value!r}')
        return replace(found, image_value=found.image_value[1:])
    if not prompts_required:
        raise LabelConfigError(
            "label_config needs an <Image>, a <BrushLabels> or <PolygonLabels> bound to it (toName) for the answer "
            'and a <RectangleLabels> (the boxes) or a <KeyPointLabels smart="true"> (the clicks) bound to it; see '
            "labelstudio/label_config.xml"
        )
    raise LabelConfigError(
        "label_config needs an <Image>, a <BrushLabels> or <PolygonLabels> bound to it (toName) for the answer "
        'and a <KeyPointLabels smart="true"> bound to it for the clicks; see labelstudio/label_config.xml'
    )


def _image_config(image: ET.Element, controls: list[ControlTag]) -> InteractiveConfig:
    """The tags bound to ``image`` (``image_value`` still with its ``$``)."""
    bound = [c for c in controls if c.to_name == image.get("name")]
    return InteractiveConfig(
        image.get("name", ""),
        image.get("value", ""),
        next((c for c in bound if c.tag == "BrushLabels"), None),
        next((c for c in bound if c.tag == "PolygonLabels"), None),
        tuple(c for c in bound if c.tag == "KeyPointLabels" and c.smart),
        tuple(c for c in bound if c.tag == "RectangleLabels" and c.smart),
        tuple(c for c in bound if c.tag == "RectangleLabels"),
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
