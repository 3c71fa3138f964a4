"""Retrieve Predictions through the Flask test client (backend.batch): one entry per task in order, a prediction
with a region set per rectangle, ``[]`` (with the reason logged) for the others, the same mask as the interactive
rectangle prompt, and the batch deadline. Images come over HTTP from a temp folder (the ``http_dir`` fixture)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from adaptiveclick.backend.app import create_app
from adaptiveclick.backend.settings import Settings
from adaptiveclick.evaluation.datasets import GrabCutDataset
from adaptiveclick.labelstudio.label_config import recommended_config
from adaptiveclick.labelstudio.regions import region_mask
from adaptiveclick.labelstudio.rle import decode_rle
from adaptiveclick.labelstudio.settings import LabelStudioSettings
from adaptiveclick.model import GrabCutPredictor
from adaptiveclick.model.zoom_in import mask_bbox

from ls_regions import rectangle_region

CONFIG = recommended_config()  # brush + polygon outputs, a smart RectangleLabels "box"
LOOPBACK_IMAGES = LabelStudioSettings(allowed_hosts=("127.0.0.1",))


@pytest.fixture(scope="module")
def samples(data_root):
    dataset = GrabCutDataset(data_root / "GrabCut")
    return [dataset[0], dataset[1]]  # images where the baseline finds the object from its box


@pytest.fixture()
def urls(serve_samples, samples):
    found, base = serve_samples(samples)
    return found, f"{base}/broken.jpg"


def task(task_id, url, *regions):
    annotations = [{"id": task_id, "result": list(regions)}] if regions else []
    return {"id": task_id, "project": 1, "data": {"image": url}, "annotations": annotations, "predictions": []}


def retrieve_body(*tasks):
    return {
        "tasks": list(tasks),
        "project": "1.1700000000",
        "label_config": CONFIG,
        "params": {"login": None, "password": None, "context": None},
    }


def make_client(**settings):
    settings.setdefault("label_studio", LOOPBACK_IMAGES)
    return create_app(Settings(**settings), predictor=GrabCutPredictor()).test_client()


def iou(a, b, valid):
    return (a & b & valid).sum() / max(1, ((a | b) & valid).sum())


def test_one_entry_per_task_in_order(urls, samples, caplog):
    (first, second), broken = urls
    client = make_client()
    box0, box1 = mask_bbox(samples[0].mask), mask_bbox(samples[1].mask)
    shape0, shape1 = samples[0].mask.shape, samples[1].mask.shape
    half = (box0[0], (box0[0] + box0[1]) // 2, box0[2], box0[3])  # a second box on the same image
    body = retrieve_body(
        task(11, first, rectangle_region(box0, shape0), rectangle_region(half, shape0)),
        task(12, first),  # no annotation
        task(13, broken, rectangle_region(box0, shape0)),  # the image cannot be decoded
        task(14, second, rectangle_region(box1, shape1, label="Horse")),  # a label no output tag lists
        task(15, second, rectangle_region(box1, shape1)),
    )
    with caplog.at_level(logging.INFO, logger="adaptiveclick.backend.batch"):
        response = client.post("/predict", json=body)
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert len(results) == 5 and results[1] == [] and results[2] == [] and results[3] == []
    for prediction, sample, boxes in ((results[0], samples[0], 2), (results[4], samples[1], 1)):
        assert prediction["model_version"] == GrabCutPredictor.model_version and 0 < prediction["score"] <= 1
        brushes = [r for r in prediction["result"] if r["type"] == "brushlabels"]
        polygons = [r for r in prediction["result"] if r["type"] == "polygonlabels"]
        assert len(brushes) == boxes and polygons and {r["value"]["brushlabels"][0] for r in brushes} == {"Object"}
        h, w = sample.mask.shape
        mask = decode_rle(brushes[0]["value"]["rle"], h, w)
        assert iou(mask, sample.mask, ~sample.ignore) > 0.75
        filled = np.zeros((h, w), bool)
        for region in polygons[: len(polygons)]:
            filled |= region_mask(region, h, w)
        assert iou(filled, mask | decode_rle(brushes[-1]["value"]["rle"], h, w), np.ones((h, w), bool)) > 0.95
    reasons = {r.reason for r in caplog.records if r.msg == "no box prediction"}
    assert reasons == {"no annotations", "image 422", "no usable rectangles"}


def test_a_box_gives_the_mask_of_the_interactive_rectangle_prompt(urls, samples):
    (first, _), _ = urls
    client = make_client()
    box, shape = mask_bbox(samples[0].mask), samples[0].mask.shape
    region = rectangle_region(box, shape)
    batch = client.post("/predict", json=retrieve_body(task(21, first, region))).json["results"][0]
    interactive_body = {**retrieve_body(task(21, first)), "params": {"context": {"result": [region]}}}
    interactive = client.post("/predict", json=interactive_body).json["results"][0]
    assert batch["result"] == interactive["result"] and batch["score"] == interactive["score"]


def test_the_batch_deadline_leaves_the_rest_for_the_next_run(urls, samples):
    (first, second), _ = urls
    client = make_client(batch_deadline=0.001)
    region = rectangle_region(mask_bbox(samples[0].mask), samples[0].mask.shape)
    results = client.post("/predict", json=retrieve_body(task(31, first, region), task(32, second, region))).json
    assert results["results"] == [[], []]  # nothing stored, so Label Studio sends them again next time


def test_hostile_tasks_never_make_a_500():
    """Retrieve Predictions bodies whose annotations and predictions hold anything: every task still gets an entry
    (the images are unreachable, so this is about reading the tasks)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
    anything = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(
                st.sampled_from(
                    ["id", "type", "to_name", "value", "result", "updated_at", "ground_truth", "was_cancelled"]
                ),
                inner,
                max_size=4,
            ),
        ),
        max_leaves=12,
    )
    value = st.dictionaries(
        st.sampled_from(["x", "y", "width", "height", "rotation", "rectanglelabels"]),
        st.one_of(scalars, st.lists(scalars, max_size=2)),
        max_size=6,
    )
    region = st.one_of(
        anything,
        st.fixed_dictionaries(
            {
                "type": st.just("rectanglelabels"),
                "to_name": st.one_of(st.just("image"), scalars),
                "value": value,
                "image_rotation": scalars,
            }
        ),
    )
    record = st.fixed_dictionaries(
        {
            "id": st.one_of(st.integers(), scalars),
            "result": st.lists(region, max_size=3),
            "updated_at": scalars,
            "ground_truth": scalars,
            "was_cancelled": scalars,
        }
    )
    tasks = st.lists(
        st.fixed_dictionaries(
            {
                "id": st.one_of(st.integers(0, 10**6), scalars),
                "data": st.one_of(st.just({"image": "/data/upload/1/x.jpg"}), anything),
                "annotations": st.one_of(st.lists(st.one_of(record, anything), max_size=3), anything),
                "predictions": st.one_of(st.lists(st.one_of(record, anything), max_size=3), anything),
            }
        ),
        min_size=1,
        max_size=3,
    )
    client = create_app(Settings(), predictor=GrabCutPredictor()).test_client()
    mixed_ids = [{"id": "a", "result": [rectangle_region((1, 5, 1, 5), (9, 9))]}, {"id": 1, "result": []}]
    for key in ("annotations", "predictions"):
        task = {
            "id": 1,
            "data": {"image": "/data/upload/1/x.jpg"},
            "annotations": [],
            "predictions": [],
            key: mixed_ids,
        }
        assert client.post("/predict", json=retrieve_body(task)).get_json()["results"] == [[]]

    @settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(tasks)
    def check(items):
        reply = client.post("/predict", json=retrieve_body(*items))
        assert reply.status_code < 500, (items, reply.get_json())
        if reply.status_code == 200:
            assert reply.get_json()["results"] == [[] for _ in items]

    check()
