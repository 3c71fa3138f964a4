"""The attacks of issue 25 against a real ``adaptiveclick serve`` on loopback: a hostile 1 MB string beside a
``/health`` poll, what an anonymous caller is refused, 20 webhooks against the job cap, another project's upload,
the S3 bucket allow-list (a recording endpoint stands in for Label Studio and S3, and sees every request), ``data:``
URIs with junk, made-up HTTP methods, and what ``/jobs`` shows to whom. Traffic goes to loopback only."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer

import cv2
import numpy as np
import pytest
import requests

from adaptiveclick.benchmarks.http_backend import predict_body
from adaptiveclick.benchmarks.servers import BackendProcess, ImageServer

from quiet_http import QuietHandler

pytestmark = pytest.mark.timeout(900)

CONNECTION = ("label-studio", "connection-password-0123456789")
ADMIN_TOKEN = "operator-token-0123456789abcdef0123"
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
API_KEY = "ls-api-key-0123456789abcdef"
ALLOWED_BUCKET = "allowed-bucket"
SHAPE = (48, 64)
STALL_S = 25.0  # the recording Label Studio holds API calls this long: started jobs stay running meanwhile
HOSTILE = "gs://" * 200_000  # 1 MB: the old redaction's regex took minutes over this


def png() -> bytes:
    image = np.full((*SHAPE, 3), 230, np.uint8)
    image[12:36, 16:48] = 30
    return cv2.imencode(".png", image)[1].tobytes()


class Recorder:
    """Stands in for Label Studio and S3 on one loopback port and records every request: ``/data/upload/1/x.png``
    (with the API key) and ``/allowed-bucket/k.png`` (S3, signed) answer a picture; ``/api/...`` stalls for
    :data:`STALL_S`, then 500 (so fine-tune and annotate jobs stay running); anything else 404."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        recorder = self

        class Handler(QuietHandler):
            def _answer(self) -> None:
                recorder.requests.append((self.command, self.path, dict(self.headers)))
                if self.path.startswith("/api/"):
                    time.sleep(STALL_S)
                    return self.send_body(500, b"{}")
                if self.path == "/data/upload/1/x.png" and self.headers.get("Authorization") == f"Token {API_KEY}":
                    return self.send_body(200, png())
                if self.path.startswith(f"/{ALLOWED_BUCKET}/k.png") and "AWS4-HMAC-SHA256" in self.headers.get(
                    "Authorization", ""
                ):
                    return self.send_body(200, png())
                self.send_body(404, b"not found")

            do_GET = do_POST = do_HEAD = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]


@pytest.fixture(scope="module")
def recorder():
    server = Recorder()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    (folder / "picture.png").write_bytes(png())
    server = ImageServer(folder)
    yield server.url
    server.close()


def environment(recorder, models) -> dict[str, str]:
    return {
        "LABEL_STUDIO_URL": recorder.url,
        "LABEL_STUDIO_API_KEY": API_KEY,
        "AWS_ENDPOINT_URL": recorder.url,
        "AWS_ACCESS_KEY_ID": "backend-own-key",
        "AWS_SECRET_ACCESS_KEY": "backend-own-secret-0123456789",
        "AWS_DEFAULT_REGION": "us-east-1",
        "ADAPTIVECLICK_S3_BUCKETS": ALLOWED_BUCKET,
        "MODEL_DIR": str(models),
        "FINETUNE_ARGS": "--init random:tiny --steps 1",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="module")
def guarded(recorder, tmp_path_factory):
    """The backend as the compose set-up runs it: both credentials set."""
    env = environment(recorder, tmp_path_factory.mktemp("models"))
    env.update(BASIC_AUTH_USER=CONNECTION[0], BASIC_AUTH_PASS=CONNECTION[1], ADAPTIVECLICK_ADMIN_TOKEN=ADMIN_TOKEN)
    server = BackendProcess("baseline", env, auth=CONNECTION)
    server.models = env["MODEL_DIR"]
    yield server
    stop_jobs(server)
    server.close()


@pytest.fixture(scope="module")
def anonymous(recorder, tmp_path_factory):
    """The backend with its defaults: no connection credential, no operator token (but the keys of Label Studio
    and S3 set, which an anonymous caller must not get to use)."""
    env = environment(recorder, tmp_path_factory.mktemp("models-anonymous"))
    server = BackendProcess("baseline", env)
    server.models = env["MODEL_DIR"]
    yield server
    stop_jobs(server)
    server.close()


def stop_jobs(server: BackendProcess) -> None:
    """The job processes a test started (each in its own session): stopped, so none outlives the test."""
    for pid in job_pids(server):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def job_pids(server: BackendProcess) -> list[int]:
    pids = []
    for line in server.log_text().splitlines():
        if line.startswith("{") and ('"msg": "fine-tune started"' in line or '"msg": "annotate job started"' in line):
            pids.append(json.loads(line)["pid"])
    return pids


def click(image_url: str, project: int = 1, task: int | None = 7) -> dict:
    body = predict_body(image_url, task or 0, [(24, 32, True)], SHAPE, project=f"{project}.1700000000")
    if task is None:
        del body["tasks"][0]["id"]
    return body


def post(server: BackendProcess, path: str, body, auth=CONNECTION, **kwargs) -> requests.Response:
    return requests.post(server.url + path, json=body, auth=auth, timeout=120, **kwargs)


# -- 1. a hostile string costs the worker nothing ---------------------------------------------------------------


def test_a_hostile_megabyte_beside_a_health_poll(guarded, images):
    """Each hostile request is answered 4xx at once, /health stays fast meanwhile, and every log line is valid
    JSON of bounded size (the old regex held the GIL for minutes on these)."""
    hostile_path = "/" + "gs://" * 12_000  # 60 KB: under the 64 KiB header limit, logged even for a 401
    attacks = [
        ("path, anonymous", lambda: requests.get(guarded.url + hostile_path, timeout=120), 401),
        ("path", lambda: requests.get(guarded.url + hostile_path, auth=CONNECTION, timeout=120), 404),
        (
            "setup model_version",
            lambda: post(guarded, "/setup", {"project": "1.1", "extra_params": {"model_version": HOSTILE}}),
            400,
        ),
        ("image URL", lambda: post(guarded, "/predict", click("https://example.com/" + HOSTILE)), 414),
        ("data: URI", lambda: post(guarded, "/predict", click("data:image/png;base64," + HOSTILE)), 400),
        ("webhook action", lambda: post(guarded, "/webhook", {"action": HOSTILE, "project": {"id": 1}}), 200),
        (
            "label config",
            lambda: post(guarded, "/predict", {**click(f"{images}/picture.png"), "label_config": HOSTILE}),
            400,
        ),
    ]
    health, answered, stop = [], [], threading.Event()

    def attack() -> None:
        for _ in range(3):
            for name, send, status in attacks:
                start = time.perf_counter()
                reply = send()
                answered.append((name, reply.status_code, status, time.perf_counter() - start))
        stop.set()

    attacker = threading.Thread(target=attack)
    attacker.start()
    while not stop.is_set():
        start = time.perf_counter()
        assert requests.get(guarded.url + "/health", auth=CONNECTION, timeout=30).status_code == 200
        health.append(time.perf_counter() - start)
        time.sleep(0.02)
    attacker.join()
    wrong = [(name, got, want) for name, got, want, _ in answered if got != want]
    assert not wrong, wrong
    slowest = max(seconds for *_, seconds in answered)
    assert max(health) < 1.0 and slowest < 10.0, (max(health), slowest)  # measured: ~10 ms and ~0.1 s
    lines = guarded.log_text().splitlines()
    for line in lines:
        if line.startswith("{"):
            assert len(line) < 16_000 and json.loads(line), line[:200]
    assert HOSTILE[:2000] not in guarded.log_text()
    print(
        f"\n1 MB hostile strings x {len(answered)}: /health p50 {sorted(health)[len(health) // 2] * 1e3:.1f} ms, "
        f"max {max(health) * 1e3:.1f} ms over {len(health)} polls; slowest hostile request {slowest * 1e3:.0f} ms"
    )


# -- 2. anonymous means read-only ----------------------------------------------------------------------------------


def test_anonymous_callers_get_clicks_and_reads_and_nothing_else(anonymous, images, recorder):
    assert requests.get(anonymous.url + "/health", timeout=30).status_code == 200
    assert post(anonymous, "/predict", click(f"{images}/picture.png"), auth=None).status_code == 200
    before = len(recorder.requests)
    refusals = [
        ("/predict", click("/data/upload/1/x.png"), 403, "anonymous"),
        ("/predict", click(f"s3://{ALLOWED_BUCKET}/k.png", task=None), 403, "anonymous"),
        ("/predict", click("/data/local-files/?d=a.png"), 403, "anonymous"),
        ("/setup", {"project": "1.1", "extra_params": {"model_version": "v1"}}, 403, "BASIC_AUTH_USER"),
        ("/webhook", {"action": "START_TRAINING", "project": {"id": 1}}, 403, "BASIC_AUTH_USER"),
        ("/versions/1", {"version": "v1"}, 403, "ADAPTIVECLICK_ADMIN_TOKEN"),
        ("/jobs/1/annotate", {}, 403, "ADAPTIVECLICK_ADMIN_TOKEN"),
    ]
    for path, body, status, setting in refusals:
        reply = post(anonymous, path, body, auth=None)
        assert reply.status_code == status and setting in reply.json()["error"], (path, reply.text[:300])
    # none of the backend's credentials was used: nothing reached Label Studio or S3
    assert recorder.requests[before:] == []
    # annotation events are acknowledged, not counted (they could start a fine-tune)
    event = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "project": {"id": 1}}
    assert post(anonymous, "/webhook", event, auth=None).json()["status"] == "ignored"
    # reads stay open, without paths
    jobs = requests.get(anonymous.url + "/jobs", timeout=30)
    assert jobs.status_code == 200 and anonymous.models not in jobs.text


# -- 3. caps on work that outlives a request ----------------------------------------------------------------------


def test_twenty_webhooks_start_one_fine_tune(guarded):
    projects = range(101, 121)
    for project in projects:  # Label Studio connects each project (/setup) before it can start training
        assert post(guarded, "/setup", {"project": f"{project}.1"}).status_code == 200
    before = len(job_pids(guarded))

    def start(project: int) -> requests.Response:
        return post(guarded, "/webhook", {"action": "START_TRAINING", "project": {"id": project}})

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(start, projects))
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [201] + [429] * 19, [(r.status_code, r.text[:200]) for r in replies]
    limited = next(r for r in replies if r.status_code == 429)
    assert "ADAPTIVECLICK_MAX_FINETUNES=1" in limited.json()["error"] and limited.headers["Retry-After"]
    time.sleep(0.5)
    assert len(job_pids(guarded)) - before == 1  # one process, not twenty
    jobs = requests.get(guarded.url + "/jobs", headers=OPERATOR, timeout=30).json()
    assert jobs["running"]["finetune"] == 1
    # annotate jobs: at most ADAPTIVECLICK_MAX_ANNOTATE_JOBS (2) across projects
    with ThreadPoolExecutor(5) as pool:
        replies = list(
            pool.map(lambda p: post(guarded, f"/jobs/{p}/annotate", {}, auth=None, headers=OPERATOR), range(201, 206))
        )
    assert sorted(r.status_code for r in replies) == [202, 202, 429, 429, 429], [r.text[:200] for r in replies]
    stop_jobs(guarded)


def test_job_details_only_for_the_operator(guarded):
    """/jobs shows state to the connection credential; folders and log tails only with the operator token."""
    listing = requests.get(guarded.url + "/jobs", auth=CONNECTION, timeout=30).json()
    assert listing["jobs"], "the previous test started jobs"
    assert all("folder" not in job and "log_tail" not in job and job["job"] for job in listing["jobs"])
    assert guarded.models not in json.dumps(listing)
    detailed = requests.get(guarded.url + "/jobs", headers=OPERATOR, timeout=30).json()
    assert all(job["folder"].startswith(guarded.models) for job in detailed["jobs"])
    assert API_KEY not in json.dumps(detailed)


# -- 4. the backend's keys serve only the project that asked -----------------------------------------------------


def test_another_projects_upload_and_the_s3_allow_list(guarded, recorder):
    recorder.requests.clear()
    assert post(guarded, "/predict", click("/data/upload/1/x.png", project=1)).status_code == 200
    assert recorder.paths() == ["/data/upload/1/x.png"]
    recorder.requests.clear()
    answers = set()
    for image in ("/data/upload/2/x.png", "/data/upload/2/missing.png"):  # exists or not: the same answer
        reply = post(guarded, "/predict", click(image, project=1))
        assert reply.status_code == 403
        answers.add(reply.json()["error"].split("'", 2)[-1])
    assert len(answers) == 1 and recorder.requests == []
    # s3:// with the backend's own credentials: only the allowed bucket, the others refused before any call
    for bucket in ("other-bucket", "no-such-bucket"):
        reply = post(guarded, "/predict", click(f"s3://{bucket}/k.png", task=None))
        assert reply.status_code == 403 and "ADAPTIVECLICK_S3_BUCKETS" in reply.json()["error"]
    assert recorder.requests == []
    assert post(guarded, "/predict", click(f"s3://{ALLOWED_BUCKET}/k.png", task=None)).status_code == 200
    assert [path.split("?")[0] for path in recorder.paths()] == [f"/{ALLOWED_BUCKET}/k.png"]
    assert "AWS4-HMAC-SHA256" in recorder.requests[0][2]["Authorization"]


# -- 5. memory charged, labels bounded ------------------------------------------------------------------------------


def test_data_uri_junk_and_made_up_methods_cost_nothing(guarded, images):
    valid = "data:image/png;base64," + __import__("base64").b64encode(png()).decode()
    assert post(guarded, "/predict", click(valid)).status_code == 200
    rss = guarded.worker_rss_mb()
    for _ in range(20):
        reply = post(guarded, "/predict", click(valid + "!" * (2 << 20)))
        assert reply.status_code == 400 and "not valid base64" in reply.json()["error"]
    grown = guarded.worker_rss_mb() - rss
    metrics = requests.get(guarded.url + "/metrics", auth=CONNECTION, timeout=30).text
    for k in range(300):
        requests.request(f"BREW{k}", guarded.url + "/health", auth=CONNECTION, timeout=30)
    requests.request("BREW0", guarded.url + "/health", auth=CONNECTION, timeout=30)
    after = requests.get(guarded.url + "/metrics", auth=CONNECTION, timeout=30).text
    series = re.findall(r'method="([^"]+)"', after)
    assert set(series) <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert len(after) - len(metrics) < 4_000, len(after) - len(metrics)  # one "other" series set, not 300
    assert grown < 60, grown  # 40 MB of junk went nowhere
    print(
        f"\n20 data: URIs with 2 MB of junk: 400 each, worker RSS +{grown:.0f} MB; 300 made-up methods: "
        f"/metrics +{len(after) - len(metrics)} bytes"
    )
