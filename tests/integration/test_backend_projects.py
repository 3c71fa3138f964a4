"""One backend, many Label Studio projects: per-project model lines, the model pool, /projects/<id> connection
URLs, GET /versions, and pinning (rollback) through extra_params and POST /versions."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from test_backend_app import LOOPBACK_IMAGES, keypoint, predict_body
from test_backend_hot_swap import tiny_weights

from adaptiveclick.backend.app import backend_of
from adaptiveclick.backend.model_pool import ModelPool, PoolLimit
from adaptiveclick.backend.served_model import ServedModel
from adaptiveclick.backend.settings import Settings
from adaptiveclick.model import GrabCutPredictor
from adaptiveclick.storage.lines import read_state
from adaptiveclick.storage.registry import BASE_LINE, open_registry, project_line

AUTH = ("admin", "s3cret")
ADMIN_TOKEN = "operator-token-0123456789abcdef"
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SHAPE = (120, 160)


def served(name: str, nbytes: int = 0) -> ServedModel:
    return ServedModel(GrabCutPredictor(), name, "test", nbytes)


# -- the pool -------------------------------------------------------------------------------------------------------


def test_pool_limit_parses_counts_and_sizes():
    assert PoolLimit.parse("3") == PoolLimit(models=3)
    assert PoolLimit.parse("3GB") == PoolLimit(models=None, bytes=3 << 30)
    assert PoolLimit.parse("1500MB").bytes == 1500 << 20 and PoolLimit.parse("2GiB").bytes == 2 << 30
    assert PoolLimit.parse("0.5g").bytes == 1 << 29
    for bad in ("0", "-1", "lots", "3 apples", "GB", ""):
        with pytest.raises(ValueError, match="ADAPTIVECLICK_MODEL_CACHE"):
            PoolLimit.parse(bad)


def test_pool_evicts_the_least_recently_used_by_count():
    pool = ModelPool(PoolLimit(models=2))
    a, b, c = served("a"), served("b"), served("c")
    pool.get("a", lambda: a)
    pool.get("b", lambda: b)
    assert pool.get("a", lambda: pytest.fail("a is loaded")) is a  # a is now the most recent
    pool.get("c", lambda: c)
    assert pool.keys() == ["a", "c"] and pool.evictions == 1 and pool.loads == 3
    assert pool.peek("b") is None and pool.peek("a") is a


def test_pool_bounded_by_bytes_keeps_the_model_asked_for():
    pool = ModelPool(PoolLimit(models=None, bytes=100))
    pool.get("a", lambda: served("a", 60))
    pool.get("b", lambda: served("b", 30))
    assert pool.keys() == ["a", "b"] and pool.nbytes() == 90
    pool.get("c", lambda: served("c", 50))
    assert pool.keys() == ["b", "c"] and pool.nbytes() == 80
    pool.get("huge", lambda: served("huge", 500))  # larger than the bound: it alone stays
    assert pool.keys() == ["huge"]


def test_pool_loads_a_key_once_for_concurrent_requests_and_keeps_no_failures():
    pool = ModelPool(PoolLimit(models=2))
    calls = []

    def slow_load():
        calls.append(1)
        time.sleep(0.2)
        return served("x")

    results = []
    threads = [threading.Thread(target=lambda: results.append(pool.get("x", slow_load))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 6 and all(r is results[0] for r in results)

    def failing():
        raise OSError("disk gone")

    with pytest.raises(OSError):
        pool.get("y", failing)
    assert pool.keys() == ["x"]
    assert pool.get("y", lambda: served("y")).version == "y"  # the next request tries again


# -- the app over a registry with project lines ------------------------------------------------------------------


@pytest.fixture()
def registry(tmp_path):
    registry = open_registry(tmp_path / "registry")
    registry.publish(tiny_weights(tmp_path / "b1.pth", 1), version="b1")
    registry.line(project_line(1)).publish(
        tiny_weights(tmp_path / "p1.pth", 2), version="p1", parent="b1", parent_line=BASE_LINE
    )
    return registry


@pytest.fixture()
def image_url(http_dir):
    """A small picture over HTTP (the tiny network's time grows with the image)."""
    root, base = http_dir
    picture = np.random.default_rng(0).integers(0, 255, (SHAPE[0], SHAPE[1], 3), dtype=np.uint8)
    cv2.imwrite(str(root / "picture.png"), picture)
    return f"{base}/picture.png"


def projects_client(registry, tmp_path, auth=None, **settings):
    """An app over ``registry``; with ``auth`` (user, password) it is the connection credential, sent with every
    request of the client."""
    import base64

    from adaptiveclick.backend.app import create_app

    settings.setdefault("label_studio", LOOPBACK_IMAGES)
    if auth:
        settings.update(basic_auth_user=auth[0], basic_auth_pass=auth[1])
    settings = Settings(
        model_dir=tmp_path / "models",
        model_registry=str(registry.uri),
        registry_poll_seconds=0,
        predictor="random:tiny",
        **settings,
    )
    app = create_app(settings)
    client = app.test_client()
    if auth:
        client.environ_base["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    return app, client


def click_body(url, project):
    body = predict_body(url, [keypoint(SHAPE[0] // 2, SHAPE[1] // 2, SHAPE)])
    body["project"] = f"{project}.1700000000"
    return body


def test_each_project_gets_its_line_or_the_base_line(registry, tmp_path, image_url):
    url = image_url
    app, client = projects_client(registry, tmp_path)
    for project, version in ((1, "p1"), (2, "b1"), (1, "p1")):
        reply = client.post("/predict", json=click_body(url, project)).json
        assert reply["model_version"] == version and reply["project"] == project
        assert reply["results"][0]["model_version"] == version
    assert client.get("/health").json["model_version"] == "b1"
    assert client.get("/projects/1/health").json == {
        "status": "UP",
        "model_class": "AdaptiveClick",
        "model_version": "p1",
        "replica": backend_of(app).settings.replica_name,
        "project": 1,
    }
    # the connection URL names the project: its /predict goes there, and a body for another project is refused
    assert client.post("/projects/1/predict", json=click_body(url, 1)).json["model_version"] == "p1"
    body = click_body(url, 2)
    reply = client.post("/projects/1/predict", json=body)
    assert reply.status_code == 400 and "connection URL is for project 1" in reply.json["error"]
    del body["project"]
    assert client.post("/projects/1/predict", json=body).json["model_version"] == "p1"
    assert client.get("/projects/x1/health").status_code == 404
    jobs = client.get("/jobs").json
    # project 2 has no line and was never set up: nothing is kept for it (made-up ids cannot grow the worker)
    assert jobs["served"] == {"None": "base/b1", "1": "project-1/p1"}
    assert sorted(jobs["loaded_models"]) == ["base/b1", "project-1/p1"]
    metrics = client.get("/metrics").data.decode()
    assert 'adaptiveclick_model_info{line="project-1",project="1",version="p1"} 1.0' in metrics
    assert "adaptiveclick_models_loaded 2.0" in metrics


def test_a_pool_of_one_model_still_serves_every_project_right(registry, tmp_path, image_url):
    url = image_url
    app, client = projects_client(registry, tmp_path, model_cache="1")
    pool = backend_of(app).holder.pool
    for _ in range(3):
        for project, version in ((1, "p1"), (2, "b1")):
            reply = client.post("/predict", json=click_body(url, project))
            assert reply.status_code == 200 and reply.json["model_version"] == version
            assert len(pool.keys()) == 1
    assert pool.evictions >= 5


def test_new_project_versions_are_picked_up_by_the_watcher(registry, tmp_path, image_url):
    url = image_url
    app, client = projects_client(registry, tmp_path)
    parts = backend_of(app)
    assert client.post("/setup", json={"project": "2.1"}).status_code == 200  # Label Studio connects project 2
    assert client.post("/predict", json=click_body(url, 2)).json["model_version"] == "b1"
    registry.line(project_line(2)).publish(tiny_weights(tmp_path / "p2.pth", 3), version="p2")
    assert parts.watcher.poll_once() == "swapped"
    assert "project-2/p2" in parts.holder.pool.keys()  # loaded before it is served
    assert client.post("/predict", json=click_body(url, 2)).json["model_version"] == "p2"
    assert client.post("/predict", json=click_body(url, 1)).json["model_version"] == "p1"


def test_versions_lists_the_projects_line_and_the_base_line(registry, tmp_path):
    _, client = projects_client(registry, tmp_path)
    listing = client.get("/projects/1/versions").json
    assert listing["versions"] == ["p1", "base/b1"] and listing["line"] == "project-1"
    assert listing["served"] == {"version": "p1", "why": "the project's line"} and listing["pinned"] is None
    p1, b1 = listing["details"]
    assert p1["current"] and p1["served"] and p1["parent"] == "base/b1" and not b1["served"]
    assert set(p1) >= {"created", "noc85_before", "noc90_before", "noc85_after", "noc90_after"}
    assert client.get("/versions").json["versions"] == ["b1"]
    assert client.get("/projects/5/versions").json["served"]["version"] == "b1"


def setup_body(project, extra_params):
    return {
        "project": f"{project}.1700000000",
        "schema": predict_body("", [])["label_config"],
        "extra_params": extra_params,
    }


def test_extra_params_pin_and_unpin_a_project(registry, tmp_path, image_url):
    url = image_url
    # without a connection credential a pin is refused (it changes what is served)
    _, anonymous = projects_client(registry, tmp_path)
    reply = anonymous.post("/setup", json=setup_body(1, '{"model_version": "base/b1"}'))
    assert reply.status_code == 403 and "BASIC_AUTH_USER" in reply.json["error"]
    assert anonymous.post("/setup", json=setup_body(1, None)).json == {"model_version": "p1"}  # no pin: fine
    assert 1 not in read_state(registry).projects or read_state(registry).projects[1].pin is None
    app, client = projects_client(registry, tmp_path, auth=AUTH)
    watcher = backend_of(app).watcher
    # the Connect Model dialog sends its JSON field as a string; /setup answers at once with the pinned version,
    # which loads in the background (the watcher's poll, awaited here)
    reply = client.post("/setup", json=setup_body(1, '{"model_version": "base/b1"}'))
    assert reply.status_code == 200 and reply.json == {"model_version": "b1"}
    watcher.poll_once()
    assert client.post("/predict", json=click_body(url, 1)).json["model_version"] == "b1"
    pin = read_state(registry).projects[1].pin
    assert pin.ref.key == "base/b1" and pin.source == "extra_params"
    assert client.get("/projects/1/versions").json["pinned"] == "base/b1"
    # the field emptied: the pin it made goes
    assert client.post("/setup", json=setup_body(1, "")).json == {"model_version": "p1"}
    assert read_state(registry).projects[1].pin is None
    watcher.poll_once()
    assert client.post("/predict", json=click_body(url, 1)).json["model_version"] == "p1"
    # an object (Label Studio's API) and the explicit unpin words
    assert client.post("/setup", json=setup_body(1, {"model_version": "b1"})).json == {"model_version": "b1"}
    assert client.post("/setup", json=setup_body(1, {"model_version": "latest"})).json == {"model_version": "p1"}
    for bad, message in (
        ("{nope", "not valid JSON"),
        ('{"model_version": 3}', "version name or null"),
        ('{"model_version": "missing"}', "no version 'missing'"),
    ):
        reply = client.post("/setup", json=setup_body(1, bad))
        assert reply.status_code == 400 and message in reply.json["error"], bad


def test_pinning_through_the_api_needs_the_operator_token_and_survives_setup(registry, tmp_path, image_url):
    url = image_url
    _, open_client = projects_client(registry, tmp_path, auth=AUTH)
    reply = open_client.post("/versions/1", json={"version": "b1"})  # operator routes are off without a token
    assert reply.status_code == 403 and "ADAPTIVECLICK_ADMIN_TOKEN" in reply.json["error"]

    _, client = projects_client(registry, tmp_path, admin_token=ADMIN_TOKEN, basic_auth_user="x", basic_auth_pass="y")
    assert client.post("/versions/1", json={"version": "b1"}).status_code == 401
    basic = client.post("/versions/1", json={"version": "b1"}, auth=("x", "y"))  # the connection credential
    assert basic.status_code == 401 and "Bearer" in basic.headers["WWW-Authenticate"]
    auth = {"headers": OPERATOR}
    reply = client.post("/versions/1", json={"version": "b1"}, **auth)
    assert reply.json == {"project": 1, "pinned": "base/b1", "served": "b1"}
    assert client.post("/predict", json=click_body(url, 1), **auth).json["model_version"] == "b1"
    # a /setup without extra_params leaves an API pin alone; an explicit unpin in extra_params drops it
    assert client.post("/setup", json=setup_body(1, None), **auth).json == {"model_version": "b1"}
    assert client.post("/setup", json=setup_body(1, '{"model_version": null}'), **auth).json == {"model_version": "p1"}
    # the base line and the URL form
    assert client.post("/versions/base", json={"version": "b1"}, **auth).json["pinned"] == "base/b1"
    assert client.post("/projects/1/versions", json={"version": "p1"}, **auth).json["pinned"] == "project-1/p1"
    assert client.post("/projects/1/versions", json={"version": None}, **auth).json["pinned"] is None
    for path, body, status in (
        ("/versions/1", {"version": "nope"}, 400),
        ("/versions/1", {"wrong": 1}, 400),
        ("/versions/1", {"version": 5}, 400),
        ("/versions/one", {"version": "b1"}, 400),
        ("/versions/99999999999999999999", {"version": "b1"}, 400),
    ):
        reply = client.post(path, json=body, **auth)
        assert reply.status_code == status and reply.json["error"], (path, body)


def test_a_version_that_does_not_load_is_never_pinned(registry, tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"not weights")
    registry.line(project_line(1)).publish(tmp_path / "broken.pth", version="broken", make_current=False)
    _, client = projects_client(registry, tmp_path, admin_token=ADMIN_TOKEN)
    reply = client.post("/versions/1", json={"version": "broken"}, headers=OPERATOR)
    assert reply.status_code == 422 and "does not load" in reply.json["error"]
    assert read_state(registry).projects[1].pin is None
    assert client.get("/jobs").json["rejected_versions"].keys() == {"project-1/broken"}
    again = client.post("/versions/1", json={"version": "broken"}, headers=OPERATOR)
    assert again.status_code == 422 and "rejected" in again.json["error"]
    assert client.get("/projects/1/health").json["model_version"] == "p1"


def test_a_setup_pin_that_does_not_load_is_rejected_and_the_project_keeps_its_model(registry, tmp_path, image_url):
    (tmp_path / "broken.pth").write_bytes(b"not weights")
    registry.line(project_line(1)).publish(tmp_path / "broken.pth", version="broken", make_current=False)
    app, client = projects_client(registry, tmp_path, auth=AUTH)
    assert client.post("/predict", json=click_body(image_url, 1)).json["model_version"] == "p1"
    # /setup cannot wait for a load (Label Studio gives it 3 s): the pin is written, the load fails in the background
    assert client.post("/setup", json=setup_body(1, {"model_version": "broken"})).json == {"model_version": "broken"}
    backend_of(app).watcher.poll_once()
    assert "project-1/broken" in client.get("/jobs").json["rejected_versions"]
    assert client.post("/predict", json=click_body(image_url, 1)).json["model_version"] == "p1"
    assert client.get("/projects/1/health").json["model_version"] == "p1"
    listing = client.get("/projects/1/versions").json  # what answers: p1, though the pin names broken
    details = {d["version"]: d for d in listing["details"]}
    assert listing["served"]["version"] == "p1" and "rejected" in listing["served"]["why"]
    assert details["p1"]["served"] and not details["broken"]["served"] and not details["broken"]["pinnable"]
    assert details["broken"]["pinned"] and all(d["source"] == "registry" for d in details.values())
    reply = client.post("/setup", json=setup_body(1, {"model_version": "broken"}))
    assert reply.status_code == 422 and "rejected" in reply.json["error"]
    assert client.post("/setup", json=setup_body(1, None)).json == {"model_version": "p1"}  # the field emptied
