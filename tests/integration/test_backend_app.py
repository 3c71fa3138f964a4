"""The Flask app through its test client: protocol routes, the session cache's effect, errors, webhook, metrics,
Basic auth and the hot-swap holder. Images are served over HTTP from a temp folder (the ``http_dir`` fixture)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from adaptiveclick.backend.app import backend_of, create_app
from adaptiveclick.backend.settings import Settings
from adaptiveclick.evaluation import Clicker
from adaptiveclick.evaluation.datasets import GrabCutDataset
from adaptiveclick.labelstudio.label_config import recommended_config
from adaptiveclick.labelstudio.regions import region_mask
from adaptiveclick.labelstudio.rle import decode_rle
from adaptiveclick.labelstudio.settings import LabelStudioSettings, PolygonSettings
from adaptiveclick.model import GrabCutPredictor

CONFIG = recommended_config()


class CountingPredictor(GrabCutPredictor):
    """The baseline, counting network steps and set_image calls."""

    def __init__(self, version: str = "counting-v1") -> None:
        super().__init__()
        self.model_version = version
        self.steps = 0
        self.images = 0

    def _prepare_image(self, image):
        self.images += 1
        super()._prepare_image(image)

    def _step(self, clicks, prev_mask, prev_roi, box):
        self.steps += 1
        return super()._step(clicks, prev_mask, prev_roi, box)


@pytest.fixture(scope="module")
def samples(data_root):
    dataset = GrabCutDataset(data_root / "GrabCut")
    return [dataset[0], dataset[1]]


@pytest.fixture()
def images(serve_samples, samples):
    return serve_samples(samples)


LOOPBACK_IMAGES = LabelStudioSettings(allowed_hosts=("127.0.0.1",))  # the http_dir fixture serves on loopback


def make_client(predictor=None, **settings):
    settings.setdefault("label_studio", LOOPBACK_IMAGES)
    if "basic_auth_user" not in settings:  # anonymous clicks may use the backend's own media access here
        settings.setdefault("unsafe_anonymous", ("media",))
    app = create_app(Settings(**settings), predictor=predictor or CountingPredictor())
    return app, app.test_client()


def keypoint(y, x, shape, positive=True, label="Object"):
    h, w = shape
    return {
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "is_positive": positive,
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"x": (x + 0.5) * 100 / w, "y": (y + 0.5) * 100 / h, "width": 0.5, "keypointlabels": [label]},
    }


def predict_body(url, regions, task_id=1):
    return {
        "tasks": [{"id": task_id, "data": {"image": url}}],
        "project": "1.1700000000",
        "label_config": CONFIG,
        "params": {"login": None, "password": None, "context": {"result": regions}},
    }


def decode(response) -> np.ndarray:
    region = response.json["results"][0]["result"][0]
    return decode_rle(region["value"]["rle"], region["original_height"], region["original_width"])


def iou(a, b) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def run_clicks(client, url, sample, n):
    """NoC-style session through the API; returns the clicks and the mask after each."""
    clicker, regions, masks = Clicker(sample.gt), [], []
    pred = np.zeros_like(sample.mask)
    for _ in range(n):
        y, x, positive = clicker.make_next_click(pred)
        regions.append(keypoint(y, x, sample.mask.shape, positive))
        response = client.post("/predict", json=predict_body(url, regions))
        assert response.status_code == 200, response.json
        pred = decode(response)
        masks.append(pred)
    return regions, masks


def test_health_and_setup():
    _, client = make_client(replica_name="replica-a")
    for path in ("/", "/health"):
        reply = client.get(path)
        assert reply.json == {
            "status": "UP",
            "model_class": "AdaptiveClick",
            "model_version": "counting-v1",
            "replica": "replica-a",
        }
        assert reply.headers["X-AdaptiveClick-Replica"] == "replica-a"
    body = {
        "project": "3.1700000000",
        "schema": CONFIG,
        "hostname": "http://localhost:8080",
        "access_token": "x",
        "extra_params": None,
    }
    reply = client.post("/setup", json=body)
    assert reply.json == {"model_version": "counting-v1"} and reply.headers["X-AdaptiveClick-Replica"] == "replica-a"
    response = client.post("/setup", json={**body, "schema": "<View><Image name='i' value='$i'/></View>"})
    assert response.status_code == 400 and "BrushLabels" in response.json["error"]


def test_no_prompts_no_prediction(images):
    """Without prompts: an interactive request gets no prediction; Retrieve Predictions (no context) gets one entry
    per task, here ``[]`` for a task without rectangles (tests/test_backend_batch.py has the rest)."""
    (url, _), _ = images
    _, client = make_client()
    body = predict_body(url, [])
    del body["params"]["context"]
    assert client.post("/predict", json=body).json == {"results": [[]], "model_version": "counting-v1", "project": 1}
    assert client.post("/predict", json=predict_body(url, [])).json["results"] == []


def test_clicks_segment_and_run_the_network_once_per_click(images, samples):
    (url, _), _ = images
    predictor = CountingPredictor()
    _, client = make_client(predictor)
    regions, masks = run_clicks(client, url, samples[0], 4)
    assert iou(masks[-1], samples[0].mask) > 0.8
    assert predictor.steps == 4 and predictor.images == 1
    # the same request again: answered from the cache, no step at all
    again = client.post("/predict", json=predict_body(url, regions))
    assert predictor.steps == 4 and np.array_equal(decode(again), masks[-1])
    region = again.json["results"][0]["result"][0]
    assert region["value"]["brushlabels"] == ["Object"] and region["value"]["format"] == "rle"
    assert 0 < region["score"] <= 1 and again.json["results"][0]["model_version"] == "counting-v1"


def test_results_equal_the_bare_predictor_and_do_not_depend_on_the_cache(images, samples):
    (url, _), _ = images
    sample = samples[0]
    _, client = make_client()
    regions, masks = run_clicks(client, url, sample, 3)
    bare, probs = GrabCutPredictor(), None
    bare.set_image(sample.image)
    clicks = [
        (
            int(r["value"]["y"] * sample.mask.shape[0] / 100),
            int(r["value"]["x"] * sample.mask.shape[1] / 100),
            r["is_positive"],
        )
        for r in regions
    ]
    for k in range(3):
        probs = bare.predict(clicks[: k + 1], probs)
        assert np.array_equal(probs > 0.49, masks[k])
    # a moved second click: the backend replays from the first click, as a fresh backend would
    predictor = CountingPredictor()
    _, warm = make_client(predictor)
    for k in range(1, 4):
        warm.post("/predict", json=predict_body(url, regions[:k]))
    moved = [regions[0], keypoint(5, 5, sample.mask.shape, False), regions[2]]
    steps = predictor.steps
    answer = decode(warm.post("/predict", json=predict_body(url, moved)))
    assert predictor.steps == steps + 2
    _, cold = make_client()
    assert np.array_equal(answer, decode(cold.post("/predict", json=predict_body(url, moved))))
    # a removed click: the shorter prefix is cached, nothing runs
    steps = predictor.steps
    assert np.array_equal(decode(warm.post("/predict", json=predict_body(url, regions[:2]))), masks[1])
    assert predictor.steps == steps


POLYGON_ONLY = (
    '<View><Image name="image" value="$image"/>'
    '<PolygonLabels name="outline" toName="image"><Label value="Object"/></PolygonLabels>'
    '<KeyPointLabels name="click" toName="image" smart="true"><Label value="Object"/></KeyPointLabels></View>'
)


def test_polygon_answers(images, samples):
    """A polygon-only config gets polygonlabels regions alone; they decode (as Label Studio regions) to the mask
    the brush answers with: IoU >= 0.97 at the default tolerance, exactly with ADAPTIVECLICK_POLYGON_TOLERANCE=0.
    The shipped config gets both, the brush region first."""
    (url, _), _ = images
    sample = samples[0]
    h, w = sample.mask.shape
    regions = [keypoint(*np.argwhere(sample.mask).mean(axis=0).astype(int), (h, w))]
    _, client = make_client()
    both = client.post("/predict", json=predict_body(url, regions)).json["results"][0]["result"]
    assert both[0]["type"] == "brushlabels" and {r["type"] for r in both[1:]} == {"polygonlabels"}
    brush = decode_rle(both[0]["value"]["rle"], h, w)
    answers = {}
    for name, tolerance in (("default", None), ("exact", 0.0)):
        polygons = PolygonSettings() if tolerance is None else PolygonSettings(tolerance=tolerance)
        _, client = make_client(label_studio=LabelStudioSettings(polygons=polygons, allowed_hosts=("127.0.0.1",)))
        response = client.post("/predict", json={**predict_body(url, regions), "label_config": POLYGON_ONLY})
        assert response.status_code == 200, response.json
        result = response.json["results"][0]["result"]
        assert result and all(r["type"] == "polygonlabels" and r["from_name"] == "outline" for r in result)
        assert all(r["value"]["polygonlabels"] == ["Object"] and r["value"]["closed"] for r in result)
        answers[name] = np.logical_or.reduce([region_mask(r, h, w) for r in result])
    assert np.array_equal(answers["exact"], brush)
    assert iou(answers["default"], brush) >= 0.97 and iou(brush, sample.mask) > 0.5


def test_box_prompt(images, samples):
    (url, _), _ = images
    sample = samples[0]
    h, w = sample.mask.shape
    ys, xs = np.nonzero(sample.mask)
    box = {
        "type": "rectanglelabels",
        "from_name": "box",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "value": {
            "x": xs.min() * 100 / w,
            "y": ys.min() * 100 / h,
            "width": (xs.max() - xs.min() + 1) * 100 / w,
            "height": (ys.max() - ys.min() + 1) * 100 / h,
            "rotation": 0,
            "rectanglelabels": ["Object"],
        },
    }
    _, client = make_client()
    response = client.post("/predict", json=predict_body(url, [box]))
    mask = decode(response)
    assert iou(mask, sample.mask) > 0.5
    outside = np.ones_like(mask)
    outside[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = False
    assert not (mask & outside).any()


def test_bad_input_is_4xx_with_a_message_and_the_app_keeps_serving(images, samples):
    (url, _), base = images
    shape = samples[0].mask.shape
    _, client = make_client()
    click = [keypoint(100, 100, shape)]
    cases = [
        (client.post("/predict", data="{not json", content_type="application/json"), 400, "valid JSON"),
        (client.post("/predict", json=[1, 2]), 400, "JSON object"),
        (client.post("/predict", json={**predict_body(url, click), "label_config": "<View/>"}), 400, "Image"),
        (
            client.post(
                "/predict",
                json={
                    "tasks": [{"id": 1, "data": {}}],
                    "label_config": CONFIG,
                    "params": {"context": {"result": click}},
                },
            ),
            400,
            "no image",
        ),
        (client.post("/predict", json=predict_body(f"{base}/missing.jpg", click)), 404, "404"),
        (client.post("/predict", json=predict_body(f"{base}/broken.jpg", click)), 422, "not a readable image"),
        (client.post("/predict", json=predict_body("/data/upload/1/x.jpg", click)), 422, "LABEL_STUDIO_URL"),
        (
            client.post("/predict", json=predict_body(url, [{**click[0], "value": {**click[0]["value"], "x": 130}}])),
            400,
            "outside the image",
        ),
        (client.post("/predict", json=predict_body(url, [keypoint(5, 5, shape, label="Horse")])), 400, "Horse"),
        (
            client.post(
                "/predict", json={**predict_body(url, click), "tasks": [{"id": 1, "data": {"image": url}}] * 2}
            ),
            400,
            "exactly one task",
        ),
        (client.get("/predict"), 405, "not allowed"),
        (client.get("/nope"), 404, "not found"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (status, response.json)
        assert message.lower() in response.json["error"].lower()
    assert client.get("/health").status_code == 200
    assert client.post("/predict", json=predict_body(url, click)).status_code == 200


def test_basic_auth(images):
    _, client = make_client(basic_auth_user="ls", basic_auth_pass="s3cret")
    assert client.get("/health").status_code == 401
    response = client.get("/health", auth=("ls", "wrong"))
    assert response.status_code == 401 and "Basic" in response.headers["WWW-Authenticate"]
    assert "authentication" in response.json["error"]
    assert client.get("/health", auth=("ls", "s3cret")).status_code == 200


def test_webhook_events_are_counted_and_handed_to_the_handler():
    seen = []
    app = create_app(
        Settings(basic_auth_user="ls", basic_auth_pass="s3cret"),
        predictor=CountingPredictor(),
        webhook_handler=lambda event, counts: seen.append((event.action, counts.annotations)) or "ok",
    )
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Basic bHM6czNjcmV0"  # ls:s3cret, on every request
    project = {"id": 4, "label_config": CONFIG}
    # events count for projects Label Studio has set up (or with a registry line) only
    unknown = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 5}})
    assert unknown.status_code == 409 and "not set up" in unknown.json["error"]
    assert client.post("/setup", json={"project": "4.1"}).status_code == 200
    created = {"action": "ANNOTATION_CREATED", "annotation": {"id": 10}, "task": {"id": 2}, "project": project}
    for body in (
        created,
        {**created, "annotation": {"id": 11}},
        {**created, "action": "ANNOTATION_UPDATED"},
        {"action": "ANNOTATION_DELETED", "annotations": [{"id": 10}], "project": project},
        {"action": "START_TRAINING", "project": project},
    ):
        response = client.post("/webhook", json=body)
        assert response.status_code == 201 and response.json["status"] == "ok"
    assert seen == [
        ("ANNOTATION_CREATED", 1),
        ("ANNOTATION_CREATED", 2),
        ("ANNOTATION_UPDATED", 2),
        ("ANNOTATION_DELETED", 1),
        ("START_TRAINING", 1),
    ]
    # Label Studio sends every project action to the backend's webhook: others are acknowledged and ignored
    assert client.post("/webhook", json={"action": "TASKS_CREATED", "project": project}).json == {"status": "ignored"}
    for bad in (
        {"project": project},
        {"action": "ANNOTATION_CREATED", "project": project},
        {"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}, "project": project},
        {"action": "START_TRAINING"},
        {"action": "ANNOTATION_DELETED", "project": project},
    ):
        response = client.post("/webhook", json=bad)
        assert response.status_code == 400 and response.json["error"]
    metrics = client.get("/metrics").data.decode()
    assert 'adaptiveclick_project_annotations{kind="annotations",project="4"} 1.0' in metrics
    assert 'adaptiveclick_project_annotations{kind="created",project="4"} 2.0' in metrics
    assert backend_of(app).webhooks.counts(4).training_requests == 1


def test_metrics(images, samples):
    (url, _), _ = images
    _, client = make_client()
    run_clicks(client, url, samples[0], 2)
    client.post("/predict", data="x", content_type="application/json")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.data.decode()
    assert 'adaptiveclick_http_requests_total{endpoint="/predict",method="POST",status="2xx"} 2.0' in text
    assert 'adaptiveclick_http_requests_total{endpoint="/predict",method="POST",status="4xx"} 1.0' in text
    assert 'adaptiveclick_http_request_seconds_count{endpoint="/predict"} 3.0' in text
    assert 'adaptiveclick_model_info{line="configured",project="",version="counting-v1"} 1.0' in text
    assert "adaptiveclick_network_runs_total 2.0" in text and "adaptiveclick_cache_bytes" in text


def test_hot_swap_keeps_requests_consistent(images, samples):
    (url, _), _ = images
    app, client = make_client(CountingPredictor("v1"))
    holder = backend_of(app).holder
    regions, _ = run_clicks(client, url, samples[0], 2)
    new = CountingPredictor("v2")
    old = holder.swap(new)
    assert old.version == "v1" and holder.version == "v2"
    response = client.post("/predict", json=predict_body(url, regions))
    assert response.json["model_version"] == "v2" and response.json["results"][0]["model_version"] == "v2"
    assert new.steps == 2  # the cache is keyed by model version: v2 recomputes both clicks
    assert client.get("/health").json["model_version"] == "v2"
    assert (
        'adaptiveclick_model_info{line="configured",project="",version="v2"} 1.0'
        in client.get("/metrics").data.decode()
    )


def test_concurrent_sessions_on_two_images_match_sequential_answers(images, samples):
    (url_a, url_b), _ = images
    _, reference = make_client()
    sessions = {
        url_a: run_clicks(reference, url_a, samples[0], 3)[0],
        url_b: run_clicks(reference, url_b, samples[1], 3)[0],
    }
    expected = {
        url: decode(reference.post("/predict", json=predict_body(url, regions))) for url, regions in sessions.items()
    }
    app, _ = make_client()
    failures = []

    def annotate(url):
        client = app.test_client()
        for k in range(1, 4):
            response = client.post("/predict", json=predict_body(url, sessions[url][:k]))
            if response.status_code != 200:
                failures.append(response.json)
        if not np.array_equal(decode(response), expected[url]):
            failures.append(f"{url}: mask differs from the sequential answer")

    threads = [threading.Thread(target=annotate, args=(url,)) for url in (url_a, url_b, url_a, url_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_the_documented_predict_body_gets_a_mask(data_root):
    """The /predict body printed in docs/connect.md, served with LOCAL_FILES_DOCUMENT_ROOT at the datasets, as it
    says."""
    import json
    import re

    from adaptiveclick.model import GrabCutPredictor

    page = (Path(__file__).resolve().parents[2] / "docs" / "connect.md").read_text()
    body = json.loads(re.search(r"<<'BODY'\n(.*?)\nBODY\n", page, re.S).group(1))
    settings = Settings(
        label_studio=LabelStudioSettings(local_files_document_root=data_root),
        basic_auth_user="label-studio",
        basic_auth_pass="a-long-random-password-0123456789",
    )
    app = create_app(settings, predictor=GrabCutPredictor())
    assert "-u label-studio:" in page  # the page's curl sends the connection credential
    reply = app.test_client().post("/predict", json=body, auth=settings.basic_auth)
    assert reply.status_code == 200, reply.get_json()
    region = reply.get_json()["results"][0]["result"][0]
    mask = decode_rle(region["value"]["rle"], region["original_height"], region["original_width"])
    assert region["type"] == "brushlabels" and (region["original_width"], region["original_height"]) == (481, 321)
    assert mask[160, 240] and 0.02 < mask.mean() < 0.9  # the clicked pixel is in, the mask is an object


def test_the_openvino_engine_spec_serves_clicks(images, samples):
    """ADAPTIVECLICK_PREDICTOR with engine=openvino: the backend loads it like any spec and answers each click with
    the bare engine predictor's mask (the same spec loaded again, from the IR cache)."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from adaptiveclick.model.loading import load_predictor

    (url, _), _ = images
    sample = samples[0]
    spec = "random:tiny#engine=openvino,threads=1,mode=plain"
    app = create_app(Settings(predictor=spec, label_studio=LOOPBACK_IMAGES))
    regions, masks = run_clicks(app.test_client(), url, sample, 2)
    bare = load_predictor(spec)
    assert bare.runs_as.startswith("openvino fp32")
    bare.set_image(sample.image)
    h, w = sample.mask.shape
    clicks = [(int(r["value"]["y"] * h / 100), int(r["value"]["x"] * w / 100), r["is_positive"]) for r in regions]
    probs = None
    for k, mask in enumerate(masks):
        probs = bare.predict(clicks[: k + 1], probs)
        assert iou(probs > 0.49, mask) > 0.999
