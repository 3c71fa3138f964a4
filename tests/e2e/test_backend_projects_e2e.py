"""Two Label Studio projects on one backend, end to end: the real Label Studio, the registry on the local S3 server
(moto), a pool of one model. Each project is fine-tuned (tiny network) from its own export through Label Studio's
*Start Training*, each is served its own version while annotators of both click through Label Studio, and one is
rolled back through ``extra_params`` and through the API; a second backend process (a restart, a replica) sees the
pin. Prints the swap and rollback timings and the requests served."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from adaptiveclick.evaluation.datasets import open_dataset
from adaptiveclick.finetune.network import save_weights
from adaptiveclick.model import build_adaptiveclick
from adaptiveclick.model.build import TINY_CONFIG

from ls_regions import brush_region
from ls_server import LEGACY_TOKEN, start_backend, stop

pytestmark = pytest.mark.timeout(1800)

AUTH = ("label-studio", "backend-secret-0123456789")  # the connection credential Label Studio holds
ADMIN_TOKEN = "e2e-operator-token-0123456789abcdef"
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # pins through the API are the operator's
IMAGES_PER_PROJECT = 6
CLIENTS = 4
FINETUNE_ARGS = (
    "--steps 2 --batch-size 1 --input-size 96 --val-clicks 2 --val-fraction 0.3 --val-max-images 1 "
    "--device cpu --workers 0 --force"
)


def click_region(shape) -> dict:
    h, w = shape
    return {
        "id": "c1",
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "origin": "manual",
        "is_positive": True,
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"x": 50.0, "y": 50.0, "width": 0.6, "keypointlabels": ["Object"]},
    }


class Annotators:
    """Threads clicking through Label Studio's interactive annotation on every project, recording each answer."""

    def __init__(self, label_studio, ml_ids: dict[int, int], tasks: dict[int, list[tuple[int, tuple]]]) -> None:
        self.label_studio, self.ml_ids, self.tasks = label_studio, ml_ids, tasks
        self.answers: list[tuple[float, int, str]] = []  # (time, project, model_version)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(CLIENTS)]

    def __enter__(self) -> Annotators:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=300)

    def _run(self, index: int) -> None:
        projects = sorted(self.ml_ids)
        turn = index
        while not self._stop.is_set():
            project = projects[turn % len(projects)]
            task_id, shape = self.tasks[project][turn % len(self.tasks[project])]
            turn += 1
            try:
                answer = self.label_studio.interactive(self.ml_ids[project], task_id, [click_region(shape)])
            except (AssertionError, requests.RequestException) as exc:
                self.failures.append(f"project {project}: {exc}")
                continue
            if "errors" in answer or not answer.get("data", {}).get("result"):
                self.failures.append(f"project {project}: {answer}")
                continue
            self.answers.append((time.time(), project, answer["data"]["model_version"]))

    def versions_seen(self, project: int, since: float = 0.0) -> set[str]:
        return {version for at, p, version in list(self.answers) if p == project and at >= since}

    def first_answer(self, project: int, version: str, since: float = 0.0, timeout: float = 120.0) -> float:
        """When ``project`` was first answered by ``version`` after ``since`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [at for at, p, v in list(self.answers) if p == project and v == version and at >= since]
            if hits:
                return min(hits)
            time.sleep(0.2)
        raise AssertionError(f"project {project} was never answered by {version}: {self.versions_seen(project)}")


def wait_json(url: str, check, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(url, auth=AUTH, timeout=30).json()
        if check(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"{url}: {body}")


def fine_tune(label_studio, backend: str, ml_id: int, project: int) -> str:
    """Start Training in Label Studio (its webhook starts the job) and wait for the published version."""
    jobs_before = requests.get(f"{backend}/jobs/{project}", auth=AUTH, timeout=30).json().get("started_at")
    label_studio.api("POST", f"/api/ml/{ml_id}/train", json={})
    status = wait_json(
        f"{backend}/jobs/{project}",
        lambda s: s.get("started_at") != jobs_before and s["state"] in ("succeeded", "failed", "interrupted"),
    )
    assert status["state"] == "succeeded", status
    assert status["published"]["line"] == f"project-{project}", status
    return status["published"]["version"]


def created_at(registry_uri: str, project: int, version: str) -> float:
    from adaptiveclick.storage.registry import open_registry

    info = open_registry(registry_uri).line(f"project-{project}").read_version(version)
    return datetime.fromisoformat(info.created_at.replace("Z", "+00:00")).timestamp()


def test_two_projects_each_get_their_own_model(label_studio, data_root, s3_bucket, tmp_path):
    dataset = open_dataset("GrabCut", data_root)
    served = save_weights(build_adaptiveclick(TINY_CONFIG), tmp_path / "served-tiny.pth")
    registry = f"s3://{s3_bucket}/registry"
    env = {
        "ADAPTIVECLICK_PREDICTOR": str(served),
        "MODEL_REGISTRY": registry,
        "MODEL_REGISTRY_POLL_SECONDS": "0.5",
        "ADAPTIVECLICK_MODEL_CACHE": "1",
        "MODEL_DIR": str(tmp_path / "models"),
        "FINETUNE_ARGS": FINETUNE_ARGS,
        "ADAPTIVECLICK_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    backend_proc, backend, log = start_backend(tmp_path / "backend.log", label_studio, LEGACY_TOKEN, AUTH, **env)
    replica = None
    try:
        projects, ml_ids, tasks = [], {}, {}
        for index in range(2):
            project = label_studio.create_project(f"AdaptiveClick projects {index}")
            ids = dataset.image_ids[index * IMAGES_PER_PROJECT : (index + 1) * IMAGES_PER_PROJECT]
            tasks[project] = []
            for image_id in ids:
                task = label_studio.upload(project, Path(dataset.image_path(image_id)))
                mask = dataset.read_annotation(image_id).labels > 0
                label_studio.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": [brush_region(mask)]})
                tasks[project].append((task["id"], mask.shape))
            ml = label_studio.connect(project, f"{backend}/projects/{project}", AUTH)
            assert ml["readable_state"] == "Connected", ml
            projects.append(project)
            ml_ids[project] = ml["id"]
        a, b = projects
        configured = requests.get(f"{backend}/health", auth=AUTH, timeout=10).json()["model_version"]

        with Annotators(label_studio, ml_ids, tasks) as annotators:
            annotators.first_answer(a, configured)
            annotators.first_answer(b, configured)

            a1 = fine_tune(label_studio, backend, ml_ids[a], a)
            swap_a1 = annotators.first_answer(a, a1) - created_at(registry, a, a1)
            b1 = fine_tune(label_studio, backend, ml_ids[b], b)
            swap_b1 = annotators.first_answer(b, b1) - created_at(registry, b, b1)
            after_b1 = time.time()
            a2 = fine_tune(label_studio, backend, ml_ids[a], a)  # starts from a1 (--init registry)
            swap_a2 = annotators.first_answer(a, a2) - created_at(registry, a, a2)
            time.sleep(2)
            assert annotators.versions_seen(b, since=after_b1 + 1) == {b1}  # B keeps its own through A's swaps

            listed = label_studio.api("GET", f"/api/ml/{ml_ids[a]}/versions").json()["versions"]
            assert listed == [a1, a2], listed  # the project's line (no base-line versions in this registry)
            jobs = requests.get(f"{backend}/jobs", auth=AUTH, timeout=10).json()
            assert {j["project"]: j["published"]["version"] for j in jobs["jobs"]} == {a: a2, b: b1}
            assert len(jobs["loaded_models"]) == 1  # the pool bound

            # rollback through the Connect Model dialog's extra_params (Label Studio sends them with /setup)
            began = time.time()
            connection = (ml_ids[a], a, f"{backend}/projects/{a}", AUTH)
            label_studio.edit_connection(*connection, extra_params=f'{{"model_version": "{a1}"}}')
            rollback_extra = annotators.first_answer(a, a1, since=began, timeout=60) - began
            assert requests.get(f"{backend}/projects/{a}/health", auth=AUTH, timeout=10).json()["model_version"] == a1
            label_studio.edit_connection(*connection, extra_params="")  # the field emptied: unpinned
            wait_json(f"{backend}/projects/{a}/health", lambda h: h["model_version"] == a2, 60)
            # rollback through the API, which a second backend process (a restart, a replica) then also serves
            began = time.time()
            pinned = requests.post(
                f"{backend}/versions/{a}", json={"version": a1}, headers=OPERATOR, timeout=120
            ).json()
            assert pinned == {"project": a, "pinned": f"project-{a}/{a1}", "served": a1}
            replied = time.time()  # answers ending before this may come from requests started on the old pin
            rollback_api = annotators.first_answer(a, a1, since=replied, timeout=60) - began
            replica = start_backend(tmp_path / "replica.log", label_studio, LEGACY_TOKEN, AUTH, **env)
            assert (
                requests.get(f"{replica[1]}/projects/{a}/health", auth=AUTH, timeout=60).json()["model_version"] == a1
            )
            assert (
                requests.get(f"{replica[1]}/projects/{b}/health", auth=AUTH, timeout=60).json()["model_version"] == b1
            )
            requests.post(f"{backend}/versions/{a}", json={"version": None}, headers=OPERATOR, timeout=120)
            wait_json(f"{backend}/projects/{a}/health", lambda h: h["model_version"] == a2, 60)
            time.sleep(2)

        assert not annotators.failures, annotators.failures[:5]
        seen_a, seen_b = annotators.versions_seen(a), annotators.versions_seen(b)
        assert seen_a == {configured, a1, a2} and seen_b == {configured, b1}  # nothing crossed projects
        log_text = log.read_text()
        assert "Traceback" not in log_text, log_text[-4000:]
        predict_lines = [line for line in log_text.splitlines() if '"path": "/predict"' in line]
        assert predict_lines and all('"project"' in line and '"model_version"' in line for line in predict_lines)
        print(
            f"\ntwo projects through Label Studio: {len(annotators.answers)} interactive requests served, "
            f"{len(annotators.failures)} failed ({CLIENTS} clients, pool of 1 model)\n"
            f"swap (published -> first answer): A {swap_a1:.1f} s, B {swap_b1:.1f} s, A again {swap_a2:.1f} s\n"
            f"rollback (request -> first answer by the pinned version): extra_params {rollback_extra:.1f} s, "
            f"API {rollback_api:.1f} s (its reply {replied - began:.1f} s: it loads the version first)"
        )
    finally:
        for proc in (backend_proc, replica[0] if replica else None):
            if proc is not None:
                stop(proc)
