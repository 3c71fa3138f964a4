"""End to end against the real Label Studio: install it into its own virtualenv, start it on loopback, start this
backend under gunicorn, connect them through Label Studio's API and annotate a GrabCut image with keypoint clicks.

The Label Studio virtualenv is cached in ``$ADAPTIVECLICK_CACHE`` (default ``~/.cache/adaptiveclick``) under a
folder named after the version, so only the first run installs it (a few minutes).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from backend.app import create_app
from backend.settings import Settings
from evaluation import Clicker
from labelstudio.label_config import recommended_config
from labelstudio.rle import decode_rle
from labelstudio.settings import LabelStudioSettings
from model import GrabCutPredictor
from storage.paths import cache_dir

from conftest import REPO, free_port

# the first test also installs Label Studio when its cached virtualenv is missing (a few minutes)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

LABEL_STUDIO_VERSION = "1.23.2"
INSTALL_TIMEOUT_S = 1200
START_TIMEOUT_S = 300
ADMIN = ("admin@example.com", "e2e-password-123")
LEGACY_TOKEN = "e2elegacytoken0123456789abcdef"
BASIC_AUTH = ("label-studio", "backend-secret")
IMAGE = "106024"


def label_studio_venv() -> Path:
    """The cached virtualenv with label-studio installed (installed on first use, under a file lock)."""
    cache = cache_dir()
    venv = cache / f"label-studio-{LABEL_STUDIO_VERSION}"
    done = venv / ".installed"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"label-studio-{LABEL_STUDIO_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs wait for one install
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)  # a half-finished install from an interrupted run
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            result = subprocess.run(
                [
                    str(venv / "bin" / "pip"),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    f"label-studio=={LABEL_STUDIO_VERSION}",
                ],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
            if result.returncode != 0:
                pytest.fail(f"installing label-studio failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
            done.touch()
    return venv


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float, auth=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=2, auth=auth).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not come up within {timeout}s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LabelStudio:
    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.legacy = {"Authorization": f"Token {LEGACY_TOKEN}"}

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(method, self.url + path, headers=self.legacy, timeout=120, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response

    def create_project(self, title: str) -> int:
        body = {"title": title, "label_config": recommended_config()}
        return self.api("POST", "/api/projects", json=body).json()["id"]

    def upload(self, project: int, path: Path) -> dict:
        with path.open("rb") as f:
            self.api("POST", f"/api/projects/{project}/import", files={"file": (path.name, f, "image/jpeg")})
        tasks = self.api("GET", "/api/tasks", params={"project": project}).json()["tasks"]
        return max(tasks, key=lambda t: t["id"])

    def connect(self, project: int, backend_url: str, basic_auth=None) -> dict:
        body = {"project": project, "url": backend_url, "title": "AdaptiveClick", "is_interactive": True}
        if basic_auth:
            body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
        return self.api("POST", "/api/ml", json=body).json()

    def interactive(self, ml_id: int, task_id: int, regions: list[dict]) -> dict:
        return self.api(
            "POST", f"/api/ml/{ml_id}/interactive-annotating", json={"task": task_id, "context": {"result": regions}}
        ).json()


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    venv = label_studio_venv()
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": ADMIN[0],
        "LABEL_STUDIO_PASSWORD": ADMIN[1],
        "LABEL_STUDIO_USER_TOKEN": LEGACY_TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "SENTRY_RATE": "0",
        "FRONTEND_SENTRY_DSN": "",
        "FRONTEND_SENTRY_RATE": "0",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = data / "label-studio.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(venv / "bin" / "label-studio"),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "-p",
                str(port),
                "--data-dir",
                str(data),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", proc, log, START_TIMEOUT_S)
        yield LabelStudio(f"http://127.0.0.1:{port}", data)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def pat(label_studio) -> str:
    """A personal access token (JWT refresh token) created through the API."""
    return label_studio.api("POST", "/api/token/").json()["token"]


def start_backend(tmp_path_factory, label_studio, api_key: str, basic_auth=None):
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": api_key,
        "ADAPTIVECLICK_PREDICTOR": "baseline",
        "LOG_LEVEL": "INFO",
    }
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        env.pop(name, None)
    if basic_auth:
        env.update(BASIC_AUTH_USER=basic_auth[0], BASIC_AUTH_PASS=basic_auth[1])
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url + "/health", proc, log, 120, auth=basic_auth)
    return proc, url, log


@pytest.fixture(scope="module")
def backends(tmp_path_factory, label_studio, pat):
    """Two backends: one with the legacy token behind Basic auth, one with the PAT."""
    legacy = start_backend(tmp_path_factory, label_studio, LEGACY_TOKEN, BASIC_AUTH)
    with_pat = start_backend(tmp_path_factory, label_studio, pat)
    yield {"legacy": (legacy[1], BASIC_AUTH), "pat": (with_pat[1], None)}
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
    assert (
        metric(backend_url, auth, 'adaptiveclick_http_requests_total{endpoint="/setup",method="POST",status="200"}')
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
    label_studio.connect(project, backend_url)  # registers the backend's /webhook for the project
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
        Settings(label_studio=LabelStudioSettings(url=label_studio.url, api_key="wrong-key")),
        predictor=GrabCutPredictor(),
    )
    response = app.test_client().post(
        "/predict",
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
