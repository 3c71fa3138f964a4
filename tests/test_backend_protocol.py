"""Parsing of label configs and of the label-studio-ml /predict and /setup bodies; the brush result shape."""
from __future__ import annotations

import pytest

from backend.errors import BadRequest, LabelConfigError
from backend.label_config import parse_label_config, recommended_config
from backend.protocol import (BoxPrompt, PointPrompt, brush_prediction, parse_interaction, parse_predict_request,
                              parse_setup_request, project_id, task_image_url)
from backend.service import percent_to_pixel, prompts_to_clicks

CONFIG = recommended_config()
TWO_LABELS = """<View><Image name="img" value="$photo"/>
  <BrushLabels name="brush" toName="img"><Label value="Cat"/><Label value="Dog"/></BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="Cat"/><Label value="Dog"/></KeyPointLabels>
</View>"""


def keypoint(x, y, positive=True, label="Object", **extra):
    region = {"type": "keypointlabels", "from_name": "click", "to_name": "image", "original_width": 200,
              "original_height": 100, "image_rotation": 0,
              "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]}, **extra}
    if positive is not None:
        region["is_positive"] = positive
    return region


def test_recommended_config():
    config = parse_label_config(CONFIG)
    assert (config.image_name, config.image_value) == ("image", "image")
    assert config.brush.name == "mask" and config.brush.labels == ("Object",)
    assert [t.name for t in config.keypoints] == ["click"] and [t.name for t in config.rectangles] == ["box"]


@pytest.mark.parametrize("xml, message", [
    ("", "missing"),
    ("<View><Image", "not valid XML"),
    ("<View><Text name='t' value='$t'/></View>", "no <Image"),
    ("<View><Image name='i' value='$i'/><BrushLabels name='b' toName='i'/></View>", "KeyPointLabels"),
    ("<View><Image name='i' value='$i'/><KeyPointLabels name='k' toName='i' smart='true'/></View>", "BrushLabels"),
    ("<View><Image name='i' value='$i'/><BrushLabels name='b' toName='i'/>"
     "<KeyPointLabels name='k' toName='i'/></View>", "smart"),  # not smart: not a prompt tool
    ("<View><Image name='i' value='i'/><BrushLabels name='b' toName='i'/>"
     "<KeyPointLabels name='k' toName='i' smart='true'/></View>", "value="),
])
def test_config_errors(xml, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


def test_predict_request_parsing():
    body = {"tasks": [{"id": 3, "data": {"image": "/data/upload/1/a.jpg"}}], "project": "7.1700000000",
            "label_config": CONFIG, "params": {"login": None, "password": None, "context": {"result": []}}}
    request = parse_predict_request(body)
    assert request.project == "7.1700000000" and project_id(request.project) == "7"
    assert task_image_url(request.tasks[0], request.config) == "/data/upload/1/a.jpg"
    assert parse_interaction(request.context or {}, request.config) is None


@pytest.mark.parametrize("body, message", [
    ([], "JSON object"),
    ({"tasks": "x", "label_config": CONFIG}, "'tasks'"),
    ({"tasks": [1], "label_config": CONFIG}, "'tasks'"),
    ({"tasks": [], "label_config": CONFIG, "params": []}, "'params'"),
    ({"tasks": [], "label_config": CONFIG, "params": {"context": "x"}}, "context"),
    ({"tasks": []}, "label_config is missing"),
])
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
    config = parse_label_config(TWO_LABELS)
    context = {"result": [keypoint(10, 20, True, "Dog"), keypoint(50.5, 60, False, "Dog"),
                          keypoint(1, 2, None, "Dog"),
                          {"type": "brushlabels", "value": {"rle": [1], "brushlabels": ["Dog"]}}]}
    interaction = parse_interaction(context, config)
    assert interaction.prompts == (PointPrompt(10, 20, True), PointPrompt(50.5, 60, False), PointPrompt(1, 2, True))
    assert interaction.label == "Dog" and interaction.original_size == (200, 100)


@pytest.mark.parametrize("region, message", [
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
])
def test_interaction_errors(region, message):
    with pytest.raises(BadRequest, match=message):
        parse_interaction({"result": [region]}, parse_label_config(TWO_LABELS))


def test_missing_label_uses_the_only_brush_label():
    config = parse_label_config(CONFIG)
    region = keypoint(10, 10)
    del region["value"]["keypointlabels"]
    assert parse_interaction({"result": [region]}, config).label == "Object"
    with pytest.raises(BadRequest, match="no label selected"):
        parse_interaction({"result": [region]}, parse_label_config(TWO_LABELS))


def test_percent_to_pixel_and_box_clicks():
    assert percent_to_pixel(0, 100) == 0 and percent_to_pixel(100, 100) == 99 and percent_to_pixel(50, 101) == 50
    clicks, box = prompts_to_clicks([BoxPrompt(20, 10, 40, 50), PointPrompt(50, 50, False)], height=100, width=200)
    assert box == (10, 60, 40, 120)
    assert clicks[0] == (35, 80, True)  # centre
    assert {c for c in clicks[1:-1]} == {(7, 80, False), (63, 80, False), (35, 36, False), (35, 124, False)}
    assert clicks[-1] == (50, 100, False)
    # a box touching the border gets no negative click outside the image
    clicks, _ = prompts_to_clicks([BoxPrompt(0, 0, 100, 100)], height=50, width=50)
    assert clicks == [(24, 24, True)]


def test_brush_prediction_shape():
    config = parse_label_config(CONFIG)
    prediction = brush_prediction([1, 2, 3], "Object", config, 640, 480, 0.9, "v1", 90)
    region = prediction["result"][0]
    assert prediction["model_version"] == "v1" and prediction["score"] == 0.9
    assert region["type"] == "brushlabels" and region["from_name"] == "mask" and region["to_name"] == "image"
    assert region["value"] == {"format": "rle", "rle": [1, 2, 3], "brushlabels": ["Object"]}
    assert (region["original_width"], region["original_height"], region["image_rotation"]) == (640, 480, 90)


def test_setup_request():
    assert parse_setup_request({"project": "3.17", "schema": CONFIG})[0] == "3"
    with pytest.raises(LabelConfigError):
        parse_setup_request({"project": "3.17", "schema": "<View/>"})
    with pytest.raises(BadRequest):
        parse_setup_request("nope")
