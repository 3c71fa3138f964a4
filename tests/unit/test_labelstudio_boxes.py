"""The pure parts of masks from boxes: a task's rectangles (and why some are skipped), box-only label configs,
several masks in one prediction, task-id lists, shards and the rate limit."""

from __future__ import annotations

import numpy as np
import pytest

from adaptiveclick.labelstudio.boxes import LabelledBox, task_boxes
from adaptiveclick.labelstudio.errors import LabelConfigError
from adaptiveclick.labelstudio.label_config import parse_label_config
from adaptiveclick.labelstudio.predictions import LabelledMask, masks_prediction
from adaptiveclick.labelstudio.protocol import (
    BoxPrompt,
    PreannotationRequest,
    parse_predict_request,
    parse_setup_request,
)
from adaptiveclick.labelstudio.ratelimit import RateLimit
from adaptiveclick.labelstudio.regions import region_mask
from adaptiveclick.labelstudio.rle import decode_rle
from adaptiveclick.labelstudio.selection import Shard, parse_shard, parse_task_ids

BOX_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="bbox" toName="image">
    <Label value="Cat"/><Label value="Dog"/><Label value="Car"/>
  </RectangleLabels>
  <BrushLabels name="mask" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels>
  <PolygonLabels name="polygon" toName="image"><Label value="Cat"/></PolygonLabels>
</View>"""


def rectangle(x, y, w, h, label="Cat", **extra):
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}
    value.update(extra.pop("value", {}))
    return {"type": "rectanglelabels", "from_name": "bbox", "to_name": "image", "value": value, **extra}


def task(*results, predictions=(), tid=5, **annotation):
    return {
        "id": tid,
        "data": {"image": "/data/upload/1/a.jpg"},
        "annotations": [{"id": 1, "result": list(results), **annotation}] if results or annotation else [],
        "predictions": list(predictions),
    }


def test_box_only_configs_parse_without_prompts_but_not_for_clicks():
    config = parse_label_config(BOX_CONFIG, prompts_required=False)
    assert not config.interactive and [t.name for t in config.boxes] == ["bbox"]
    assert [t.tag for t in config.outputs] == ["BrushLabels", "PolygonLabels"]
    with pytest.raises(LabelConfigError, match="KeyPointLabels"):
        parse_label_config(BOX_CONFIG)
    with pytest.raises(LabelConfigError, match="RectangleLabels"):
        parse_label_config("<View><Image name='i' value='$i'/><BrushLabels name='b' toName='i'/></View>", False)
    assert parse_setup_request({"project": "3.1", "schema": BOX_CONFIG}).config == config
    body = {"tasks": [task()], "project": "3.1", "label_config": BOX_CONFIG, "params": {"context": None}}
    parsed = parse_predict_request(body)
    assert isinstance(parsed, PreannotationRequest) and not parsed.has_context and parsed.tasks[0]["id"] == 5
    body["params"] = {"context": {"result": []}}
    assert parse_predict_request(body).has_context
    click = {"type": "keypointlabels", "is_positive": True, "value": {"x": 5, "y": 5, "keypointlabels": ["Cat"]}}
    body["params"] = {"context": {"result": [click]}}
    with pytest.raises(LabelConfigError, match='KeyPointLabels smart="true"'):
        parse_predict_request(body)


def test_rectangles_of_the_chosen_annotation():
    config = parse_label_config(BOX_CONFIG, False)
    found = task_boxes(
        task(
            rectangle(10, 20, 30, 40),
            rectangle(50, 50, 10, 10, "Dog"),
            rectangle(0, 0, 5, 5, "Car"),  # no output tag lists Car
            rectangle(0, 0, 5, 5, value={"rotation": 30}),
            rectangle(0, 0, 5, 5, to_name="other"),
            rectangle(95, 95, 10, 10),  # overhangs the image: clamped
            rectangle(100, 10, 5, 5),  # outside
            rectangle(1, 1, "x", 5),
            {"type": "brushlabels", "value": {}},  # not a rectangle: not a box, not a skip
        ),
        config,
    )
    assert found.task_id == 5 and found.image_url == "/data/upload/1/a.jpg" and found.reason is None
    assert found.boxes == (
        LabelledBox(BoxPrompt(10, 20, 30, 40), "Cat"),
        LabelledBox(BoxPrompt(50, 50, 10, 10), "Dog"),
        LabelledBox(BoxPrompt(95, 95, 5, 5), "Cat"),
    )
    assert found.skipped == (
        "label 'Car' is in no output tag (BrushLabels, PolygonLabels)",
        "rotated rectangle",
        "rectangle on another image ('other')",
        "rectangle empty or outside the image",
        "rectangle without finite x, y, width, height",
    )
    assert found.boxes[0].box.pixels(100, 200) == (20, 60, 20, 80)


def test_tasks_without_boxes_say_why():
    config = parse_label_config(BOX_CONFIG, False)
    cases = [
        (task(), "no annotations"),
        (task(rectangle(1, 1, 5, 5), was_cancelled=True), "annotation cancelled"),
        (task({"type": "brushlabels", "value": {}}), "no rectangles in the annotation"),
        (task(rectangle(0, 0, 5, 5, "Car")), "no usable rectangles"),
        ({**task(rectangle(1, 1, 5, 5)), "data": {}}, "no image under data.image"),
        ({"id": "x1"}, "task 'id' must be an integer"),
    ]
    for item, reason in cases:
        assert reason in task_boxes(item, config).reason
    # the ground truth wins over a later annotation; a label-less rectangle takes the only output label
    single = parse_label_config(BOX_CONFIG.replace('<Label value="Dog"/>', ""), False)
    assert single.output_labels == ("Cat",)
    truth = {"id": 9, "result": [rectangle(1, 1, 5, 5, value={"rectanglelabels": []})], "ground_truth": True}
    later = {"id": 10, "result": [], "updated_at": "2099"}
    item = {"id": 1, "data": {"image": "u"}, "annotations": [later, truth]}
    assert task_boxes(item, single).boxes == (LabelledBox(BoxPrompt(1, 1, 5, 5), "Cat"),)
    assert "without a label" in task_boxes(item, config).skipped[0]


def test_rectangles_of_the_latest_prediction():
    config = parse_label_config(BOX_CONFIG, False)
    old = {"id": 1, "created_at": "2024-01-01", "result": [rectangle(1, 1, 5, 5)]}
    new = {"id": 2, "created_at": "2024-02-01", "result": [rectangle(2, 2, 5, 5, "Dog")]}
    ours = {"id": 3, "created_at": "2024-03-01", "result": [{"type": "brushlabels", "value": {}}]}
    found = task_boxes(task(rectangle(9, 9, 1, 1), predictions=[old, new, ours]), config, "predictions")
    assert found.boxes == (LabelledBox(BoxPrompt(2, 2, 5, 5), "Dog"),)  # masks (ours) hold no rectangles: passed over
    assert task_boxes(task(), config, "predictions").reason == "no predictions with rectangles"
    mixed = [{"id": "x", "result": [rectangle(1, 1, 5, 5)]}, {"id": 7, "result": [rectangle(2, 2, 5, 5)]}]
    assert task_boxes(task(predictions=mixed), config, "predictions").boxes[0].box.x == 2  # ids of any type compare
    with pytest.raises(ValueError, match="source"):
        task_boxes(task(), config, "drafts")


def test_several_masks_in_one_prediction():
    config = parse_label_config(BOX_CONFIG, False)
    cat = np.zeros((40, 60), bool)
    cat[5:15, 5:20] = True
    dog = np.zeros((40, 60), bool)
    dog[20:35, 30:55] = True
    prediction = masks_prediction(config, [LabelledMask("Cat", cat, 0.9), LabelledMask("Dog", dog, 0.5)], "v7")
    assert prediction["model_version"] == "v7" and prediction["score"] == 0.7
    result = prediction["result"]
    kinds = [(r["type"], r["value"].get("brushlabels") or r["value"].get("polygonlabels")) for r in result]
    assert kinds == [("brushlabels", ["Cat"]), ("polygonlabels", ["Cat"]), ("brushlabels", ["Dog"])]  # Dog: brush only
    brush, polygon, dog_brush = prediction["result"]
    assert np.array_equal(decode_rle(brush["value"]["rle"], 40, 60), cat)
    assert np.array_equal(region_mask(polygon, 40, 60), cat)
    assert np.array_equal(decode_rle(dog_brush["value"]["rle"], 40, 60), dog)
    assert {r["score"] for r in prediction["result"]} == {0.9, 0.5} and brush["to_name"] == "image"
    assert masks_prediction(config, [], "v7") == {"result": [], "score": 0.0, "model_version": "v7"}


def test_task_ids_and_shards():
    assert parse_task_ids("1, 2,5-9") == {1, 2, 5, 6, 7, 8, 9}
    for bad, message in [("", "no task"), ("1,a", "neither"), ("9-5", "backwards"), ("1-99999999999", "more than")]:
        with pytest.raises(ValueError, match=message):
            parse_task_ids(bad)
    assert parse_shard("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"
    for bad in ("0/4", "5/4", "2", "a/b", "1/0"):
        with pytest.raises(ValueError, match="K"):
            parse_shard(bad)
    shards = [Shard(k, 3) for k in (1, 2, 3)]
    for tid in range(1, 200):
        assert sum(s.holds(tid) for s in shards) == 1  # every task in exactly one shard
    assert all(Shard().holds(t) for t in range(10))


def test_rate_limit_spaces_calls():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limit = RateLimit(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limit.wait()
    assert slept == [0.25, 0.25, 0.25, 0.25] and now[0] == 1.0 and limit.waited_s == 1.0
    now[0] += 10  # idle time saves up at most `burst` calls
    limit.wait()
    limit.wait()
    assert slept[-1] == 0.25
    assert RateLimit(None).wait() == 0.0 and RateLimit(0).wait() == 0.0
    with pytest.raises(ValueError):
        RateLimit(-1)


def test_boxes_per_task_are_capped():
    """A task with 100,000 rectangles gets the first ``max_boxes`` segmented and one reason for the rest."""
    config = parse_label_config(BOX_CONFIG, False)
    many = task(*[rectangle(k % 90, 1, 5, 5) for k in range(100_000)])
    found = task_boxes(many, config, max_boxes=100)
    assert len(found.boxes) == 100 and found.skipped == (
        "99900 rectangles beyond the first 100 boxes of the task (ADAPTIVECLICK_MAX_PROMPTS)",
    )
    assert len(task_boxes(task(rectangle(1, 1, 5, 5)), config, max_boxes=100).boxes) == 1


def test_label_configs_are_capped_and_cached_by_digest():
    from adaptiveclick.labelstudio import label_config

    with pytest.raises(LabelConfigError, match="more than the 262144 accepted"):
        parse_label_config(BOX_CONFIG + " " * (300 << 10), False)
    for k in range(200):  # many different configs: the cache keeps 64 digests, never the texts
        parse_label_config(BOX_CONFIG.replace("Dog", f"Dog{k}"), False)
    assert len(label_config._cache) == label_config.CACHED_CONFIGS
    assert all(isinstance(digest, bytes) and len(digest) == 32 for digest, _ in label_config._cache)
    assert parse_label_config(BOX_CONFIG, False) is parse_label_config(BOX_CONFIG, False)
