"""Parsing of label configs and of the label-studio-ml /predict and /setup bodies; the brush result shape."""

from __future__ import annotations

import numpy as np
import pytest

from labelstudio.errors import BadRequest, LabelConfigError
from labelstudio.label_config import parse_label_config, recommended_config
from labelstudio.protocol import (
    BoxPrompt,
    ClickRequest,
    PointPrompt,
    PreannotationRequest,
    mask_prediction,
    parse_predict_request,
    parse_setup_request,
    percent_to_pixel,
    project_id,
    task_image_url,
)
from labelstudio.rle import decode_rle

CONFIG = recommended_config()
TWO_LABELS = """<View><Image name="img" value="$photo"/>
  <BrushLabels name="brush" toName="img"><Label value="Cat"/><Label value="Dog"/></BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="Cat"/><Label value="Dog"/></KeyPointLabels>
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
    assert [t.name for t in config.keypoints] == ["click"] and [t.name for t in config.rectangles] == ["box"]


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "missing"),
        ("<View><Image", "not valid XML"),
        ("<View><Text name='t' value='$t'/></View>", "no <Image"),
        ("<View><Image name='i' value='$i'/><BrushLabels name='b' toName='i'/></View>", "KeyPointLabels"),
        ("<View><Image name='i' value='$i'/><KeyPointLabels name='k' toName='i' smart='true'/></View>", "BrushLabels"),
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
    assert parse_click([region]).label == "Object"
    with pytest.raises(BadRequest, match="no label selected"):
        parse_click([region], TWO_LABELS)


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


def test_setup_request():
    assert parse_setup_request({"project": "3.17", "schema": CONFIG}).project == 3
    with pytest.raises(LabelConfigError):
        parse_setup_request({"project": "3.17", "schema": "<View/>"})
    with pytest.raises(BadRequest):
        parse_setup_request("nope")
