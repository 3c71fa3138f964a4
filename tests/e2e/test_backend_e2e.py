"""End to end against the real Label Studio (tests/ls_server.py): start this backend, connect them through Label
Studio's API and annotate a GrabCut image with keypoint clicks."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import requests

from adaptiveclick.backend.app import create_app
from adaptiveclick.backend.settings import Settings
from adaptiveclick.evaluation import Clicker
from adaptiveclick.labelstudio.label_config import recommended_config
from adaptiveclick.labelstudio.rle import decode_rle
from adaptiveclick.labelstudio.settings import LabelStudioSettings
from adaptiveclick.model import GrabCutPredictor

from ls_server import LEGACY_TOKEN, start_backend, stop

# the first test also installs Label Studio when its cached virtualenv is missing (a few minutes)
pytestmark = pytest.mark.timeout(1800)

BASIC_AUTH = ("label-studio", "backend-secret-0123456789")
PAT_AUTH = ("label-studio-pat", "another-backend-secret-0123456789")
IMAGE = "106024"


@pytest.fixture(scope="module")
def pat(label_studio) -> str:
    """A personal access token (JWT refresh token) created through the API."""
    return label_studio.api("POST", "/api/token/").json()["token"]


@pytest.fixture(scope="module")
def backends(tmp_path_factory, label_studio, pat):
    """Two backends, each with its connection credential: one with the legacy token, one with the PAT."""
    logs = tmp_path_factory.mktemp("backend")
    legacy = start_backend(logs / "legacy.log", label_studio, LEGACY_TOKEN, BASIC_AUTH)
    with_pat = start_backend(logs / "pat.log", label_studio, pat, PAT_AUTH)
    yield {"legacy": (legacy[1], BASIC_AUTH), "pat": (with_pat[1], PAT_AUTH)}
    for proc, _, log in (legacy, with_pat):
        stop(proc)
        text = log.read_text()
        assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def grabcut(data_root):
    folder = data_root / "GrabCut"
    image = next((folder / "data_GT").glob(IMAGE + ".*"))
    gt = cv2.imread(str(next((folder / "boundary_GT").glob(IMAGE + ".*"))), cv2.IMREAD_GRAYSCALE)
    return image, np.where(gt == 128, -1, gt > 128).astype(np.int8)


def keypoint(y, x, shape, positive):
    h, w = shape
    return {
        "id": f"k{y}-{x}",
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "origin": "manual",
        "is_positive": positive,
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"x": (x + 0.5) * 100 / w, "y": (y + 0.5) * 100 / h, "width": 0.6, "keypointlabels": ["Object"]},
    }


def metric(backend_url: str, auth, name: str) -> float:
    text = requests.get(backend_url + "/metrics", auth=auth, timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[-1]) if lines else 0.0


@pytest.mark.parametrize("key", ["legacy", "pat"])
def test_interactive_annotation_through_label_studio(label_studio, backends, grabcut, key):
    backend_url, auth = backends[key]
    image_path, gt = grabcut
    project = label_studio.create_project(f"AdaptiveClick e2e {key}")
    task = label_studio.upload(project, image_path)
    assert task["data"]["image"].startswith("/data/upload/")
    ml = label_studio.connect(project, backend_url, auth)  # Label Studio calls /health and /setup here
    assert ml["readable_state"] == "Connected", ml
    assert ml["model_version"] == GrabCutPredictor.model_version
    # a fresh backend (no registry version): Label Studio's model settings list the version that answers
    listed = label_studio.api("GET", f"/api/ml/{ml['id']}/versions").json()
    assert listed["versions"] == [GrabCutPredictor.model_version], listed
    assert (
        metric(backend_url, auth, 'adaptiveclick_http_requests_total{endpoint="/setup",method="POST",status="2xx"}')
        >= 1
    )

    runs_before = metric(backend_url, auth, "adaptiveclick_network_runs_total")
    clicker, regions, pred, ious = Clicker(gt), [], np.zeros(gt.shape, bool), []
    for _ in range(5):
        y, x, positive = clicker.make_next_click(pred)
        regions.append(keypoint(y, x, gt.shape, positive))
        answer = label_studio.interactive(ml["id"], task["id"], regions)
        assert "errors" not in answer, answer
        region = answer["data"]["result"][0]
        assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["Object"]
        assert (region["original_height"], region["original_width"]) == gt.shape
        assert answer["data"]["model_version"] == GrabCutPredictor.model_version
        pred = decode_rle(region["value"]["rle"], *gt.shape)
        valid = gt != -1
        ious.append((pred & (gt == 1) & valid).sum() / ((pred | (gt == 1)) & valid).sum())
    assert max(ious) > 0.85 and ious[-1] > 0.8, ious
    # every click ran the network once: the session cache held the earlier clicks
    assert metric(backend_url, auth, "adaptiveclick_network_runs_total") - runs_before == 5


def test_webhook_counts_annotations_made_in_label_studio(label_studio, backends, grabcut):
    backend_url, auth = backends["pat"]
    project = label_studio.create_project("AdaptiveClick e2e webhook")
    task = label_studio.upload(project, grabcut[0])
    label_studio.connect(project, backend_url, auth)  # registers the backend's /webhook for the project
    label_studio.authenticate_webhook(project, backend_url, auth)  # which Label Studio made without credentials
    h, w = grabcut[1].shape
    mask_result = {
        "from_name": "mask",
        "to_name": "image",
        "type": "brushlabels",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": [0, 0, 0, 4, 7, 17, 255, 255, 255, 0], "brushlabels": ["Object"]},
    }
    label_studio.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": [mask_result]})
    name = f'adaptiveclick_project_annotations{{kind="created",project="{project}"}}'
    deadline = time.monotonic() + 30
    while metric(backend_url, auth, name) < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metric(backend_url, auth, name) == 1


def test_bad_input_is_4xx_and_the_server_keeps_serving(label_studio, backends, grabcut, tmp_path):
    backend_url, auth = backends["legacy"]
    project = label_studio.create_project("AdaptiveClick e2e errors")
    task = label_studio.upload(project, grabcut[0])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a JPEG")
    corrupt_url = label_studio.upload(project, corrupt)["data"]["image"]
    shape = grabcut[1].shape
    config = recommended_config()

    def predict(regions, image=None, raw=None, auth_=auth):
        body = {
            "tasks": [{"id": task["id"], "data": {"image": image or task["data"]["image"]}}],
            "project": f"{project}.1",
            "label_config": config,
            "params": {"context": {"result": regions}},
        }
        if raw is not None:
            return requests.post(
                backend_url + "/predict", data=raw, auth=auth_, timeout=60, headers={"Content-Type": "application/json"}
            )
        return requests.post(backend_url + "/predict", json=body, auth=auth_, timeout=60)

    click = keypoint(150, 250, shape, True)
    outside = {**click, "value": {**click["value"], "x": 140.0}}
    unknown = {**click, "value": {**click["value"], "keypointlabels": ["Horse"]}}
    cases = [
        (predict([], raw="{broken"), 400, "valid JSON"),
        (predict([click], image=" "), 400, "no image"),
        (predict([click], image=f"/data/upload/{project}/does-not-exist.jpg"), 404, "no uploaded file"),
        (predict([click], image=corrupt_url), 422, "not a readable image"),
        (predict([outside]), 400, "outside the image"),
        (predict([unknown]), 400, "Horse"),
        (predict([click], auth_=("label-studio", "wrong")), 401, "authentication"),
        (predict([click], auth_=None), 401, "authentication"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (status, response.text)
        assert message.lower() in response.json()["error"].lower()
        assert requests.get(backend_url + "/health", auth=auth, timeout=10).status_code == 200
    assert predict([click]).status_code == 200

    # a wrong Label Studio key: the image fetch is refused, which the backend reports as 403
    app = create_app(
        Settings(
            label_studio=LabelStudioSettings(url=label_studio.url, api_key="wrong-key"),
            basic_auth_user=auth[0],
            basic_auth_pass=auth[1],
        ),
        predictor=GrabCutPredictor(),
    )
    response = app.test_client().post(
        "/predict",
        auth=auth,
        json={
            "tasks": [{"id": task["id"], "data": {"image": task["data"]["image"]}}],
            "project": f"{project}.1",
            "label_config": config,
            "params": {"context": {"result": [click]}},
        },
    )
    assert response.status_code == 403 and "LABEL_STUDIO_API_KEY" in response.json["error"]

    # through Label Studio the annotator sees the status (Label Studio shows no reply body), and the backend
    # goes on answering
    ml = label_studio.connect(project, backend_url, auth)
    answer = label_studio.interactive(ml["id"], task["id"], [outside])
    assert "errors" in answer and "400" in str(answer["errors"])
    assert "errors" not in label_studio.interactive(ml["id"], task["id"], [click])
