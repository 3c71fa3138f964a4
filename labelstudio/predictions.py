"""The reply to a ``/predict``, formatted once: masks as Label Studio prediction regions.

A prediction is ``{"result": [region, ...], "score": float, "model_version": str}``. One mask becomes a
``brushlabels`` region (Label Studio's RLE) and/or one ``polygonlabels`` region per connected part of it
(:mod:`labelstudio.polygons`), as the label config's output tags for its label ask: :func:`mask_regions`. A mask
whose polygons would pass the limits of one answer (:data:`labelstudio.polygons.MAX_PARTS` parts,
:data:`~labelstudio.polygons.MAX_VERTICES` vertices) is answered by its brush region alone where the label goes to
a brush tag too, otherwise by its largest parts within the limits (:func:`labelstudio.polygons.capped_polygons`). An
interactive answer is one mask (:func:`mask_prediction`); pre-annotation from boxes puts every box's mask of a task
into one prediction (:func:`masks_prediction`). :mod:`labelstudio.protocol` re-exports these names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .label_config import ControlTag, InteractiveConfig
from .polygons import PolygonLimit, PolygonLimits, capped_polygons, mask_polygons
from .rle import encode_rle
from .settings import PolygonSettings

if TYPE_CHECKING:
    from .protocol import ClickRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledMask:
    """One object's mask ``[H, W]`` bool for a prediction, its label (a label of the output tags) and score."""

    label: str
    mask: np.ndarray
    score: float


def mask_prediction(
    request: ClickRequest,
    mask: np.ndarray,
    score: float,
    model_version: str,
    polygons: PolygonSettings = PolygonSettings(),
) -> dict:
    """The prediction answering ``request`` with ``mask`` ``[H, W]`` bool, in the output tags its label goes to:
    a brushlabels region holding the mask, and/or one polygonlabels region per connected part of it (simplified
    and with holes as ``polygons`` says; :mod:`labelstudio.polygons`), the shapes Label Studio stores and displays.
    The brush region comes first."""
    regions = mask_regions(request.config, request.label, mask, score, polygons, request.image_rotation)
    return {"result": regions, "score": score, "model_version": model_version}


def masks_prediction(
    config: InteractiveConfig,
    masks: list[LabelledMask],
    model_version: str,
    polygons: PolygonSettings = PolygonSettings(),
) -> dict:
    """ONE prediction holding every mask of a task (one per box), each as :func:`mask_regions` makes them, in
    order; its score is the mean of the masks' scores (0 for none)."""
    regions = [r for m in masks for r in mask_regions(config, m.label, m.mask, m.score, polygons)]
    score = round(sum(m.score for m in masks) / len(masks), 4) if masks else 0.0
    return {"result": regions, "score": score, "model_version": model_version}


def mask_regions(
    config: InteractiveConfig,
    label: str,
    mask: np.ndarray,
    score: float,
    polygons: PolygonSettings = PolygonSettings(),
    image_rotation: float = 0.0,
) -> list[dict]:
    """The regions of one mask ``[H, W]`` bool labelled ``label``, in the output tags that label goes to: a
    brushlabels region, and/or one polygonlabels region per connected part (brush first)."""
    regions: list[dict] = []
    tags = config.outputs_for(label)
    brush_too = any(tag.tag == "BrushLabels" for tag in tags)
    for tag in tags:
        if tag.tag == "BrushLabels":
            value = {"format": "rle", "rle": encode_rle(mask), "brushlabels": [label]}
            regions.append(_region(config, tag, mask, score, value, image_rotation))
        else:
            regions.extend(_polygon_regions(config, tag, label, mask, score, polygons, image_rotation, brush_too))
    return regions


def _region(
    config: InteractiveConfig, tag: ControlTag, mask: np.ndarray, score: float, value: dict, image_rotation: float
) -> dict:
    height, width = mask.shape
    return {
        "from_name": tag.name,
        "to_name": config.image_name,
        "type": tag.result_type,
        "original_width": width,
        "original_height": height,
        "image_rotation": image_rotation,
        "value": value,
        "score": score,
        "readonly": False,
    }


def _polygon_regions(
    config: InteractiveConfig,
    tag: ControlTag,
    label: str,
    mask: np.ndarray,
    score: float,
    settings: PolygonSettings,
    image_rotation: float,
    brush_too: bool = False,
) -> list[dict]:
    """One region per polygon, vertices ``[x, y]`` in percent of the image (``x = column / width * 100``); within
    the limits of one answer (see the module docstring)."""
    height, width = mask.shape
    scale = np.array([100.0 / width, 100.0 / height])
    try:
        rings = mask_polygons(mask, settings.tolerance, settings.holes, PolygonLimits())
    except PolygonLimit as exc:
        logger.warning(
            "polygon answer over its limits",
            extra={"reason": str(exc), "answer": "the brush region" if brush_too else "the largest parts"},
        )
        rings = [] if brush_too else capped_polygons(mask, settings.tolerance)
    return [
        _region(
            config,
            tag,
            mask,
            score,
            {"points": (ring * scale).tolist(), "closed": True, "polygonlabels": [label]},
            image_rotation,
        )
        for ring in rings
    ]
