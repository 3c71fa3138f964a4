"""Malformed requests get a 4xx JSON error with a message, never a 500: the cases found by hand, and property-based
fuzzing of the request parsers and of the routes themselves (hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptiveclick.backend.app import create_app
from adaptiveclick.backend.settings import Settings
from adaptiveclick.backend.webhook import parse_webhook
from adaptiveclick.labelstudio.errors import RequestError
from adaptiveclick.labelstudio.label_config import recommended_config
from adaptiveclick.labelstudio.protocol import parse_predict_request, parse_setup_request
from adaptiveclick.labelstudio.settings import LabelStudioSettings
from adaptiveclick.model import GrabCutPredictor

CONFIG = recommended_config()
FUZZ_EXAMPLES = 300  # per strategy; each example is one request (the closing note counts them)


def keypoint(**value) -> dict:
    return {
        "type": "keypointlabels",
        "is_positive": True,
        "original_width": 10,
        "original_height": 10,
        "value": {"x": 50, "y": 50, "keypointlabels": ["Object"], **value},
    }


def predict_body(task=None, regions=None, **extra) -> dict:
    task = {"id": 1, "data": {"image": "/data/local-files/?d=a.png"}} if task is None else task
    return {
        "tasks": [task],
        "project": "1.1",
        "label_config": CONFIG,
        "params": {"context": {"result": [keypoint()] if regions is None else regions}},
        **extra,
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    app = create_app(
        Settings(label_studio=LabelStudioSettings(local_files_document_root=root), model_dir=root / "models"),
        predictor=GrabCutPredictor(),
    )
    return app.test_client()


MALFORMED = {
    "task id object": predict_body(task={"id": {"a": 1}, "data": {"image": "x.png"}}),
    "task id list": predict_body(task={"id": [1], "data": {"image": "x.png"}}),
    "task id with path": predict_body(task={"id": "1/../../api", "data": {"image": "x.png"}}),
    "label_config list": {**predict_body(), "label_config": ["<View/>"]},
    "label_config object": {**predict_body(), "label_config": {"xml": CONFIG}},
    "huge integer coordinate": predict_body(regions=[keypoint(x=10**300)]),
    "huge integer size": predict_body(regions=[{**keypoint(), "original_width": 10**300}]),
    "huge box width": predict_body(
        regions=[{"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 10**400, "height": 1}}]
    ),
    "NUL in a local-files path": predict_body(task={"id": 1, "data": {"image": "/data/local-files/?d=a\x00b.png"}}),
    "project object": {**predict_body(), "project": {"id": 1}},
    "too many prompts": predict_body(regions=[keypoint()] * 101),
    "tasks not a list": {**predict_body(), "tasks": {"id": 1}},
    "image url not a string": predict_body(task={"id": 1, "data": {"image": ["a.png"]}}),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_hand_found_cases_are_4xx_with_a_message(client, name):
    reply = client.post("/predict", json=MALFORMED[name])
    assert 400 <= reply.status_code < 500, (name, reply.get_json())
    assert reply.get_json()["error"]


@pytest.mark.parametrize("schema", [["<View/>"], {"x": 1}, 12, True])
def test_setup_schema_of_the_wrong_type_is_400(client, schema):
    reply = client.post("/setup", json={"project": "1.1", "schema": schema})
    assert reply.status_code == 400 and "label_config" in reply.get_json()["error"]


def test_deeply_nested_json_is_400(client):
    body = "[" * 100_000 + "]" * 100_000
    reply = client.post("/predict", data=body, content_type="application/json")
    assert reply.status_code == 400 and "nested too deeply" in reply.get_json()["error"]


def test_prompt_cap_names_the_setting(client):
    reply = client.post("/predict", json=MALFORMED["too many prompts"])
    assert reply.status_code == 400 and "ADAPTIVECLICK_MAX_PROMPTS" in reply.get_json()["error"]


def test_unknown_routes_and_methods_are_json(client):
    for method, path, status in (("get", "/nope", 404), ("get", "/predict", 405), ("put", "/setup", 405)):
        reply = getattr(client, method)(path)
        assert reply.status_code == status and reply.get_json()["error"]


# -- property-based fuzzing --------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**15, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "keypointlabels",
            "rectanglelabels",
            "brushlabels",
            CONFIG,
            "1.1",
            "1",
            "/data/upload/1/a.png",
            "/data/local-files/?d=a.png",
            "s3://b/k",
            "Object",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "data",
                    "image",
                    "x",
                    "y",
                    "width",
                    "height",
                    "value",
                    "type",
                    "is_positive",
                    "keypointlabels",
                    "rectanglelabels",
                    "rotation",
                    "original_width",
                    "original_height",
                    "image_rotation",
                    "result",
                    "context",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)
regions = st.lists(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["keypointlabels", "rectanglelabels", "KeyPointLabels"]),
                "value": st.dictionaries(
                    st.sampled_from(["x", "y", "width", "height", "rotation", "keypointlabels", "rectanglelabels"]),
                    scalars,
                    max_size=6,
                ),
                "is_positive": scalars,
                "original_width": scalars,
                "original_height": scalars,
                "image_rotation": scalars,
            }
        ),
    ),
    max_size=6,
)
bodies = st.fixed_dictionaries(
    {
        "tasks": st.one_of(
            json_values, st.lists(st.dictionaries(st.sampled_from(["id", "data"]), json_values), max_size=2)
        ),
        "project": scalars,
        "label_config": st.one_of(st.just(CONFIG), scalars, json_values),
        "params": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"context": st.one_of(json_values, st.fixed_dictionaries({"result": st.one_of(regions, json_values)}))}
            ),
        ),
    }
)
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@FUZZ
@given(st.one_of(bodies, json_values))
def test_the_predict_parser_raises_only_request_errors(body):
    try:
        parse_predict_request(body)
    except RequestError as exc:
        assert 400 <= exc.status_code < 500 and exc.message


@FUZZ
@given(st.one_of(json_values, st.fixed_dictionaries({"project": scalars, "schema": st.one_of(scalars, json_values)})))
def test_the_setup_and_webhook_parsers_raise_only_request_errors(body):
    for parse in (parse_setup_request, parse_webhook):
        try:
            parse(body)
        except RequestError as exc:
            assert 400 <= exc.status_code < 500 and exc.message


@FUZZ
@given(st.one_of(bodies, json_values), st.sampled_from(["/predict", "/setup", "/webhook"]))
def test_no_body_makes_a_route_answer_500(client, body, route):
    reply = client.post(route, data=json.dumps(body), content_type="application/json")
    assert reply.status_code < 500 or reply.status_code in (502, 503), (route, body, reply.get_json())
    if reply.status_code >= 400:
        assert reply.get_json()["error"]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_no_bytes_make_a_route_answer_500(client, data):
    for route in ("/predict", "/setup", "/webhook"):
        reply = client.post(route, data=data, content_type="application/json")
        assert reply.status_code < 500 and reply.get_json()["error"]
