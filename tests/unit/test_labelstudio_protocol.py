"""Parsing of label configs (brush, polygon or both outputs, label routing) and of the label-studio-ml /predict and
/setup bodies; the brush and polygon result shapes."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from adaptiveclick.labelstudio.errors import BadRequest, LabelConfigError
from adaptiveclick.labelstudio.label_config import parse_label_config, recommended_config
from adaptiveclick.labelstudio.predictions import mask_prediction
from adaptiveclick.labelstudio.protocol import (
    BoxPrompt,
    ClickRequest,
    PointPrompt,
    PreannotationRequest,
    parse_predict_request,
    parse_setup_request,
    percent_to_pixel,
    project_id,
    task_image_url,
)
from adaptiveclick.labelstudio.regions import region_mask
from adaptiveclick.labelstudio.rle import decode_rle
from adaptiveclick.labelstudio.settings import PolygonSettings

CONFIG = recommended_config()
TWO_LABELS = """<View><Image name="img" value="$photo"/>
  <BrushLabels name="brush" toName="img"><Label value="Cat"/><Label value="Dog"/></BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="Cat"/><Label value="Dog"/></KeyPointLabels>
</View>"""
KEYPOINTS = '<KeyPointLabels name="click" toName="image" smart="true"><Label value="Object"/></KeyPointLabels>'
BRUSH = '<BrushLabels name="mask" toName="image"><Label value="Object"/></BrushLabels>'
POLYGON = '<PolygonLabels name="outline" toName="image"><Label value="Object"/></PolygonLabels>'
POLYGON_ONLY = f'<View><Image name="image" value="$image"/>{POLYGON}{KEYPOINTS}</View>'
BRUSH_ONLY = f'<View><Image name="image" value="$image"/>{BRUSH}{KEYPOINTS}</View>'
ROUTED = """<View><Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels>
  <PolygonLabels name="outline" toName="image"><Label value="Dog"/><Label value="Bird"/></PolygonLabels>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="Cat"/><Label value="Dog"/><Label value="Bird"/><Label value="Horse"/>
  </KeyPointLabels>
</View>"""


def keypoint(x, y, positive=True, label="Object", **extra):
    region = {
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": 200,
        "original_height": 100,
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]},
        **extra,
    }
    if positive is not None:
        region["is_positive"] = positive
    return region


def test_recommended_config():
    config = parse_label_config(CONFIG)
    assert (config.image_name, config.image_value) == ("image", "image")
    assert config.brush.name == "mask" and config.brush.labels == ("Object",)
    assert config.polygon.name == "polygon" and config.polygon.labels == ("Object",)
    assert config.outputs == (config.brush, config.polygon) and config.output_labels == ("Object",)
    assert [t.name for t in config.keypoints] == ["click"] and [t.name for t in config.rectangles] == ["box"]


def test_the_documented_configs():
    """docs/connect.md shows the shipped config (brush and polygons), then brush only, then polygons only."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "connect.md").read_text()
    section = page[page.index("## Connect to Label Studio") :]
    configs = [textwrap.dedent(block) for block in re.findall(r"```xml\n(.*?)```", section, re.S)[:3]]
    outputs = [[t.tag for t in parse_label_config(xml).outputs] for xml in configs]
    assert outputs == [["BrushLabels", "PolygonLabels"], ["BrushLabels"], ["PolygonLabels"]]
    assert parse_label_config(configs[0]) == parse_label_config(CONFIG)


def test_output_tags_brush_polygon_or_both():
    polygon_only = parse_label_config(POLYGON_ONLY)
    assert polygon_only.brush is None and polygon_only.polygon.name == "outline"
    assert polygon_only.outputs == (polygon_only.polygon,) and polygon_only.polygon.result_type == "polygonlabels"
    brush_only = parse_label_config(BRUSH_ONLY)
    assert brush_only.polygon is None and brush_only.outputs == (brush_only.brush,)
    routed = parse_label_config(ROUTED)
    assert routed.output_labels == ("Cat", "Dog", "Bird")
    assert [t.name for t in routed.outputs_for("Cat")] == ["mask"]
    assert [t.name for t in routed.outputs_for("Dog")] == ["mask", "outline"]
    assert [t.name for t in routed.outputs_for("Bird")] == ["outline"]
    assert routed.outputs_for("Horse") == ()
    # a tag without labels takes any label
    anything = parse_label_config(POLYGON_ONLY.replace('<Label value="Object"/></PolygonLabels>', "</PolygonLabels>"))
    assert [t.name for t in anything.outputs_for("Zebra")] == ["outline"]


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "missing"),
        ("<View><Image", "not valid XML"),
        ("<View><Text name='t' value='$t'/></View>", "no <Image"),
        ("<View><Image name='i' value='$i'/><BrushLabels name='b' toName='i'/></View>", "KeyPointLabels"),
        ("<View><Image name='i' value='$i'/><KeyPointLabels name='k' toName='i' smart='true'/></View>", "BrushLabels"),
        (
            "<View><Image name='i' value='$i'/><KeyPointLabels name='k' toName='i' smart='true'/></View>",
            "<BrushLabels> or <PolygonLabels> bound to it",
        ),
        ("<View><Image name='i' value='$i'/><PolygonLabels name='p' toName='i'/></View>", "KeyPointLabels"),
        (
            "<View><Image name='i' value='$i'/><Image name='j' value='$j'/><PolygonLabels name='p' toName='j'/>"
            "<KeyPointLabels name='k' toName='i' smart='true'/></View>",
            "PolygonLabels",
        ),  # output and clicks on different images
        (
            "<View><Image name='i' value='$i'/><BrushLabels name='b' toName='i'/>"
            "<KeyPointLabels name='k' toName='i'/></View>",
            "smart",
        ),  # not smart: not a prompt tool
        (
            "<View><Image name='i' value='i'/><BrushLabels name='b' toName='i'/>"
            "<KeyPointLabels name='k' toName='i' smart='true'/></View>",
            "value=",
        ),
    ],
)
def test_config_errors(xml, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


def body_with(regions, config=CONFIG, task=None):
    task = task or {"id": 3, "data": {"image": "/data/upload/1/a.jpg", "photo": "/data/upload/1/a.jpg"}}
    return {
        "tasks": [task],
        "project": "7.1700000000",
        "label_config": config,
        "params": {"login": None, "password": None, "context": {"result": regions}},
    }


def parse_click(regions, config=CONFIG) -> ClickRequest:
    request = parse_predict_request(body_with(regions, config))
    assert isinstance(request, ClickRequest)
    return request


def test_predict_request_parsing():
    request = parse_predict_request(body_with([]))
    assert isinstance(request, PreannotationRequest) and request.project == 7 and len(request.tasks) == 1
    assert task_image_url(request.tasks[0], request.config) == "/data/upload/1/a.jpg"
    click = parse_click([keypoint(10, 20)])
    assert (click.project, click.task_id, click.image_url) == (7, 3, "/data/upload/1/a.jpg")
    assert click.prompts == (PointPrompt(10, 20, True),) and click.label == "Object"


def test_project_and_task_ids():
    assert project_id("12.1700000000") == 12 and project_id("12") == 12 and project_id(12) == 12
    assert project_id(None) is None and project_id("") is None
    for bad in ("abc", {"id": 1}, [1], True, "-3.1"):
        with pytest.raises(BadRequest, match="project"):
            project_id(bad)
    for bad in ({"id": 1}, [1], True, "../1", 1.5):
        with pytest.raises(BadRequest, match="task 'id'"):
            parse_predict_request(body_with([keypoint(10, 20)], task={"id": bad, "data": {"image": "x.png"}}))


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "JSON object"),
        ({"tasks": "x", "label_config": CONFIG}, "'tasks'"),
        ({"tasks": [1], "label_config": CONFIG}, "'tasks'"),
        ({"tasks": [], "label_config": CONFIG, "params": []}, "'params'"),
        ({"tasks": [], "label_config": CONFIG, "params": {"context": "x"}}, "context"),
        ({"tasks": []}, "label_config is missing"),
        (
            {
                "tasks": [{"id": 1, "data": {"image": "a"}}] * 2,
                "label_config": CONFIG,
                "params": {"context": {"result": [keypoint(1, 1)]}},
            },
            "exactly one task",
        ),
    ],
)
def test_predict_request_errors(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_predict_request(body)


def test_task_without_image():
    config = parse_label_config(CONFIG)
    with pytest.raises(BadRequest, match="no image under data.image"):
        task_image_url({"id": 1, "data": {"text": "x"}}, config)
    with pytest.raises(BadRequest, match="no 'data'"):
        task_image_url({"id": 1}, config)


def test_interaction_keypoints_and_label():
    context = {
        "result": [
            keypoint(10, 20, True, "Dog"),
            keypoint(50.5, 60, False, "Dog"),
            keypoint(1, 2, None, "Dog"),
            {"type": "brushlabels", "value": {"rle": [1], "brushlabels": ["Dog"]}},
        ]
    }
    interaction = parse_click(context["result"], TWO_LABELS)
    assert interaction.prompts == (PointPrompt(10, 20, True), PointPrompt(50.5, 60, False), PointPrompt(1, 2, True))
    assert interaction.label == "Dog" and interaction.original_size == (200, 100)


@pytest.mark.parametrize(
    "region, message",
    [
        (keypoint(101, 20), "outside the image"),
        (keypoint(-0.1, 20), "outside the image"),
        (keypoint(10, float("nan")), "finite number"),
        (keypoint("10", 20), "finite number"),
        (keypoint(10, 20, "yes"), "is_positive"),
        ({"type": "keypointlabels", "value": {"y": 3}}, "value.x"),
        ({"type": "keypointlabels"}, "'value'"),
        (keypoint(10, 20, label="Horse"), "not one of the BrushLabels"),
        ({"type": "rectanglelabels", "value": {"x": 10, "y": 10, "width": 95, "height": 5}}, "leaves the image"),
        ({"type": "rectanglelabels", "value": {"x": 10, "y": 10, "width": 5, "height": 5, "rotation": 30}}, "rotated"),
    ],
)
def test_interaction_errors(region, message):
    with pytest.raises(BadRequest, match=message):
        parse_click([region], TWO_LABELS)


def test_missing_label_uses_the_only_brush_label():
    region = keypoint(10, 10)
    del region["value"]["keypointlabels"]
    assert parse_click([region]).label == "Object"  # brush and polygon share their one label
    assert parse_click([region], POLYGON_ONLY).label == "Object"
    with pytest.raises(BadRequest, match="no label selected"):
        parse_click([region], TWO_LABELS)
    with pytest.raises(BadRequest, match="no label selected"):
        parse_click([region], ROUTED)


def test_labels_must_belong_to_an_output_tag():
    assert parse_click([keypoint(10, 20, label="Bird")], ROUTED).label == "Bird"
    with pytest.raises(BadRequest, match="not one of the PolygonLabels labels") as error:
        parse_click([keypoint(10, 20, label="Horse")], POLYGON_ONLY)
    assert '<PolygonLabels name="outline">' in str(error.value.message)
    with pytest.raises(BadRequest, match="not one of the BrushLabels or PolygonLabels labels") as error:
        parse_click([keypoint(10, 20, label="Horse")], ROUTED)
    assert 'add it to <BrushLabels name="mask"> or <PolygonLabels name="outline">' in error.value.message
    assert "(Cat, Dog, Bird)" in error.value.message


def test_percent_to_pixel_and_prompts_in_pixels():
    assert percent_to_pixel(0, 100) == 0 and percent_to_pixel(100, 100) == 99 and percent_to_pixel(50, 101) == 50
    assert BoxPrompt(20, 10, 40, 50).pixels(height=100, width=200) == (10, 60, 40, 120)
    assert PointPrompt(50, 50, False).pixel(height=100, width=200) == (50, 100)


def test_mask_prediction_shape():
    request = parse_click([keypoint(10, 20, image_rotation=90)])
    mask = np.zeros((480, 640), bool)
    mask[10:20, 30:50] = True
    prediction = mask_prediction(request, mask, 0.9, "v1")
    region = prediction["result"][0]
    assert prediction["model_version"] == "v1" and prediction["score"] == 0.9
    assert region["type"] == "brushlabels" and region["from_name"] == "mask" and region["to_name"] == "image"
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["Object"]
    assert np.array_equal(decode_rle(region["value"]["rle"], 480, 640), mask)
    assert (region["original_width"], region["original_height"], region["image_rotation"]) == (640, 480, 90)


def two_parts_with_a_hole() -> np.ndarray:
    """``[100, 200]``: a square with a square hole, and a disk touching the right border."""
    mask = np.zeros((100, 200), bool)
    mask[10:60, 10:60] = True
    mask[25:45, 25:45] = False
    yy, xx = np.mgrid[:100, :200]
    mask |= (yy - 50) ** 2 + (xx - 185) ** 2 < 30**2
    return mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_mask_prediction_with_both_outputs():
    """The brush region exactly as before, then one polygon region per part, in percent, decoding back to the
    mask as Label Studio's regions do."""
    request = parse_click([keypoint(10, 20)])
    mask = two_parts_with_a_hole()
    prediction = mask_prediction(request, mask, 0.8, "v2")
    brush, *polygons = prediction["result"]
    assert brush == {
        "from_name": "mask",
        "to_name": "image",
        "type": "brushlabels",
        "original_width": 200,
        "original_height": 100,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": brush["value"]["rle"], "brushlabels": ["Object"]},
        "score": 0.8,
        "readonly": False,
    }
    assert len(polygons) == 2 and prediction["score"] == 0.8 and prediction["model_version"] == "v2"
    decoded = np.zeros_like(mask)
    for region in polygons:
        assert set(region) == set(brush) and region["type"] == "polygonlabels"
        assert (region["from_name"], region["to_name"], region["score"]) == ("polygon", "image", 0.8)
        assert (region["original_width"], region["original_height"], region["image_rotation"]) == (200, 100, 0)
        value = region["value"]
        assert set(value) == {"points", "closed", "polygonlabels"}
        assert value["closed"] is True and value["polygonlabels"] == ["Object"]
        points = np.asarray(value["points"])
        assert points.ndim == 2 and points.shape[1] == 2 and len(points) >= 3
        assert points.min() >= 0 and points.max() <= 100
        decoded |= region_mask(region, 100, 200)
    assert iou(decoded, mask) >= 0.97
    assert not decoded[30:40, 30:40].any()  # the hole stays empty (seam, the default)


def test_mask_prediction_polygon_only_and_settings():
    request = parse_click([keypoint(10, 20)], POLYGON_ONLY)
    mask = two_parts_with_a_hole()
    regions = mask_prediction(request, mask, 0.5, "v")["result"]
    assert [r["type"] for r in regions] == ["polygonlabels", "polygonlabels"]
    assert all(r["from_name"] == "outline" for r in regions)
    exact = mask_prediction(request, mask, 0.5, "v", PolygonSettings(tolerance=0))["result"]
    decoded = np.logical_or.reduce([region_mask(r, 100, 200) for r in exact])
    assert np.array_equal(decoded, mask)  # through percent and back: exact at tolerance 0
    filled = mask_prediction(request, mask, 0.5, "v", PolygonSettings(holes="fill"))["result"]
    assert any(region_mask(r, 100, 200)[30:40, 30:40].all() for r in filled)  # the square, its hole filled
    vertices = [sum(len(r["value"]["points"]) for r in result) for result in (exact, regions)]
    assert vertices[0] > vertices[1]  # the default tolerance simplifies
    assert mask_prediction(request, np.zeros((100, 200), bool), 0.5, "v")["result"] == []  # no part, no polygon


def test_mask_prediction_routes_the_label():
    mask = two_parts_with_a_hole()
    kinds = {
        label: [
            r["type"]
            for r in mask_prediction(parse_click([keypoint(10, 20, label=label)], ROUTED), mask, 1, "v")["result"]
        ]
        for label in ("Cat", "Dog", "Bird")
    }
    assert kinds == {
        "Cat": ["brushlabels"],
        "Dog": ["brushlabels", "polygonlabels", "polygonlabels"],
        "Bird": ["polygonlabels", "polygonlabels"],
    }
    region = mask_prediction(parse_click([keypoint(10, 20, label="Bird")], ROUTED), mask, 1, "v")["result"][0]
    assert region["value"]["polygonlabels"] == ["Bird"]
    brush_only = mask_prediction(parse_click([keypoint(10, 20)], BRUSH_ONLY), mask, 1, "v")["result"]
    assert [r["type"] for r in brush_only] == ["brushlabels"]


def test_setup_request():
    assert parse_setup_request({"project": "3.17", "schema": CONFIG}).project == 3
    with pytest.raises(LabelConfigError):
        parse_setup_request({"project": "3.17", "schema": "<View/>"})
    with pytest.raises(BadRequest):
        parse_setup_request("nope")
