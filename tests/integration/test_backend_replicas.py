"""Replicas on one machine, as on a cluster: nginx from Debian (the shipped ``deploy/nginx`` configuration) in front of
three ``adaptiveclick serve`` replicas on loopback, the model registry on moto's S3 server, the tiny network.

Four annotators click objects of six projects through ``/projects/<id>/predict``, every request carrying all clicks
of its object so far, as Label Studio sends them. Checked: each project's requests land on one replica; a version
published for one project of each replica is served by that replica within the poll interval (and loaded there
only); ``kill -9`` of a replica while objects of its projects are in progress moves its projects (only those) to
the other replicas, whose next answer for such an object replays its clicks and equals an uninterrupted run; no
request fails more than once, no click is lost, and every mask of the session equals an uninterrupted run's.

Then the whole-project annotate job of ``deploy/kubernetes/overlays/gpu/annotate-job.yaml`` (its own shell
command, ``--shard`` from ``JOB_COMPLETION_INDEX``) in three shards against a fake Label Studio: one shard killed
and restarted in its folder (a container restart), one killed and restarted in a fresh folder (a pod replaced):
every task is done exactly once. Bounded in count and time; all traffic stays on loopback. Prints the figures.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
import torch
import yaml

from adaptiveclick.benchmarks.http_backend import predict_body
from adaptiveclick.benchmarks.load import sessions
from adaptiveclick.benchmarks.servers import BackendProcess, ImageServer
from adaptiveclick.finetune.network import save_weights
from adaptiveclick.model import build_adaptiveclick
from adaptiveclick.model.build import TINY_CONFIG
from adaptiveclick.storage.registry import open_registry, project_line

from conftest import REPO
from ls_fake import FakeLabelStudio
from nginx_proxy import NginxProxy

pytestmark = pytest.mark.timeout(900)

PROJECTS = (11, 12, 13, 14, 15, 16)
REFERENCE_PROJECT = 99  # never published to: served the base line, for the reference runs of its version
CLIENTS = 4
CLICKS = 5
OBJECTS_PER_PHASE = 2  # objects each annotator finishes before the publish, and again before the kill
POLL_S = 1.0
SWAP_MARGIN_S = 20.0  # on top of the poll interval: download, load and the one-click check, on a busy 2-core box
HEADER = "X-AdaptiveClick-Replica"


def tiny_weights(path: Path, seed: int) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return save_weights(build_adaptiveclick(TINY_CONFIG), path)


@dataclass
class Answer:
    at: float
    client: int
    project: int
    task: int
    image: int
    clicks: int
    attempt: int
    status: int | str
    seconds: float
    replica: str | None = None
    version: str | None = None
    done_at: float = 0.0
    rle: tuple[int, ...] | None = None


@dataclass
class Annotator:
    """One annotator: objects one after another, round the projects, a fresh task per object; a failed request is
    sent again once (as an annotator clicks again), and a second failure is recorded as such."""

    index: int
    url: str
    image_url: str
    replay: list
    answers: list[Answer]
    lock: threading.Lock
    stop: threading.Event
    done_objects: int = 0
    current: tuple[int, int, int] | None = None  # (project, task, clicks answered) of the object in progress
    failed_twice: list[str] = field(default_factory=list)

    def run(self) -> None:
        session = requests.Session()
        turn = 0
        while not self.stop.is_set():
            project = PROJECTS[(self.index * len(PROJECTS) // CLIENTS + turn) % len(PROJECTS)]  # all six by turn 2
            image = (self.index + turn) % len(self.replay)
            task = 1000 * (self.index + 1) + turn
            self.object(session, project, image, task)
            turn += 1
            self.done_objects += 1

    def object(self, session: requests.Session, project: int, image: int, task: int) -> None:
        name, shape, clicks = self.replay[image]
        for k in range(1, CLICKS + 1):
            self.current = (project, task, k - 1)
            body = predict_body(f"{self.image_url}/{name}", task, clicks[:k], shape, f"{project}.1700000000")
            for attempt in (1, 2):
                answer = self.click(session, project, task, image, k, attempt, body)
                if answer.status == 200:
                    break
            else:
                self.failed_twice.append(f"project {project} task {task} click {k}: {answer.status}")
        self.current = None

    def click(self, session, project, task, image, k, attempt, body) -> Answer:
        start = time.perf_counter()
        answer = Answer(time.time(), self.index, project, task, image, k, attempt, "", 0.0)
        try:
            reply = session.post(f"{self.url}/projects/{project}/predict", json=body, timeout=120)
            answer.status = reply.status_code
            answer.replica = reply.headers.get(HEADER)
            if reply.status_code == 200:
                result = reply.json()["results"][0]
                answer.version = result["model_version"]
                brush = next(r for r in result["result"] if r["type"] == "brushlabels")
                answer.rle = tuple(brush["value"]["rle"])
        except requests.RequestException as exc:
            answer.status = type(exc).__name__
        answer.seconds = time.perf_counter() - start
        answer.done_at = time.time()
        with self.lock:
            self.answers.append(answer)
        return answer


class Session:
    """The four annotators, in threads, over one list of answers."""

    def __init__(self, url: str, image_url: str, replay: list) -> None:
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.annotators = [
            Annotator(i, url, image_url, replay, self.answers, self.lock, self.stop) for i in range(CLIENTS)
        ]
        self.threads = [threading.Thread(target=a.run, daemon=True) for a in self.annotators]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wait_objects(self, count: int, timeout: float = 300.0) -> None:
        """Until every annotator has finished ``count`` objects."""
        deadline = time.monotonic() + timeout
        while min(a.done_objects for a in self.annotators) < count:
            assert time.monotonic() < deadline, [a.done_objects for a in self.annotators]
            assert all(thread.is_alive() for thread in self.threads), "an annotator thread died"
            time.sleep(0.05)

    def finish(self, timeout: float = 300.0) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), "an annotator did not finish its object"

    def ok(self) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.status == 200]


def replica_of_projects(answers: list[Answer]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = defaultdict(set)
    for answer in answers:
        found[answer.project].add(answer.replica or "?")
    return dict(found)


def kill_replica(replica: BackendProcess) -> None:
    """``kill -9`` of the whole replica: its worker and gunicorn's master, at once."""
    worker = replica.worker_pid()
    os.kill(replica.proc.pid, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    replica.proc.wait(timeout=30)


def reference_masks(url: str, image_url: str, replay: list, project: int, image: int, task: int) -> list[tuple]:
    """The brush RLE after each click of an object, one replica, one uninterrupted run."""
    name, shape, clicks = replay[image]
    masks = []
    for k in range(1, CLICKS + 1):
        body = predict_body(f"{image_url}/{name}", task, clicks[:k], shape, f"{project}.1700000000")
        reply = requests.post(f"{url}/projects/{project}/predict", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        result = reply.json()["results"][0]
        masks.append(
            (
                result["model_version"],
                tuple(next(r for r in result["result"] if r["type"] == "brushlabels")["value"]["rle"]),
            )
        )
    return masks


@pytest.fixture(scope="module")
def images(tmp_path_factory, data_root):
    folder = tmp_path_factory.mktemp("replica-images")
    replay = sessions(data_root, images=3, clicks=CLICKS)
    for name, _, _ in replay:
        shutil.copy(data_root / "GrabCut" / "data_GT" / name, folder / name)
    server = ImageServer(folder)
    yield replay, server.url
    server.close()


def test_three_replicas_behind_nginx(images, s3_bucket, tmp_path):
    replay, image_url = images
    registry_uri = f"s3://{s3_bucket}/registry"
    registry = open_registry(registry_uri)
    registry.publish(tiny_weights(tmp_path / "base.pth", 1), version="base-v1")
    served = tiny_weights(tmp_path / "configured.pth", 0)
    env = {
        "MODEL_REGISTRY": registry_uri,
        "MODEL_REGISTRY_POLL_SECONDS": str(POLL_S),
        "ADAPTIVECLICK_MODEL_CACHE": "4",
        "ADAPTIVECLICK_THREADS": "8",
        "OMP_NUM_THREADS": "1",  # the same arithmetic in every replica and run, and a fair share of 2 cores
        "LOG_LEVEL": "INFO",
    }
    names = [f"replica-{k}" for k in range(3)]
    replicas: list[BackendProcess] = []
    proxy = None
    try:
        for name in names:
            replicas.append(
                BackendProcess(
                    f"{served}#device=cpu",
                    {**env, "ADAPTIVECLICK_REPLICA_NAME": name, "MODEL_DIR": str(tmp_path / name)},
                    wait=False,
                )
            )
        started = [replica.wait_ready() for replica in replicas]
        by_name = dict(zip(names, replicas))
        proxy = NginxProxy(tmp_path / "nginx", [f"127.0.0.1:{r.port}" for r in replicas])
        schema = (REPO / "labelstudio" / "label_config.xml").read_text()
        for project in PROJECTS:  # Label Studio connects each project (its /setup goes to the project's replica)
            setup = {"project": f"{project}.1700000000", "schema": schema}
            assert requests.post(f"{proxy.url}/projects/{project}/setup", json=setup, timeout=30).status_code == 200
        session = Session(proxy.url, image_url, replay)
        session.start()

        # 1. affinity: each project's requests land on one replica
        session.wait_objects(OBJECTS_PER_PHASE)
        placed = replica_of_projects(session.ok())
        assert set(placed) == set(PROJECTS) and all(len(r) == 1 for r in placed.values()), placed
        owner = {project: next(iter(r)) for project, r in placed.items()}
        projects_of = {name: sorted(p for p in PROJECTS if owner[p] == name) for name in names}

        # 2. a new version for one project of each replica that has one: served by that replica within the poll
        # interval (it polls the registry itself), loaded there and nowhere else
        published = {projects[0]: name for name, projects in projects_of.items() if projects}
        swaps = {}
        for k, (project, name) in enumerate(sorted(published.items())):
            version = f"p{project}-v2"
            registry.line(project_line(project)).publish(
                tiny_weights(tmp_path / f"{version}.pth", 10 + k), version=version
            )
            began = time.monotonic()
            while True:
                health = requests.get(f"{proxy.url}/projects/{project}/health", timeout=30)
                assert health.headers[HEADER] == name, (project, health.headers[HEADER], name)
                if health.json()["model_version"] == version:
                    break
                assert time.monotonic() - began < POLL_S + SWAP_MARGIN_S, health.json()
                time.sleep(0.05)
            swaps[name] = (project, time.monotonic() - began)
        for name, replica in by_name.items():
            loaded = requests.get(f"{replica.url}/jobs", timeout=30).json()["loaded_models"]
            lines = {key.split("/")[0] for key in loaded if key.startswith("project-")}
            assert lines == {f"project-{p}" for p, n in published.items() if n == name}, (name, loaded)
        for project in PROJECTS:  # the projects not published to keep the base line's version
            if project not in published:
                assert (
                    requests.get(f"{proxy.url}/projects/{project}/health", timeout=30).json()["model_version"]
                    == "base-v1"
                )

        # 3. kill -9 of the replica holding the most projects, while an object of one of its projects is in progress
        session.wait_objects(2 * OBJECTS_PER_PHASE)
        victim = max(names, key=lambda n: len(projects_of[n]))
        deadline = time.monotonic() + 120
        while True:
            current = [(a.index, a.current) for a in session.annotators]
            in_progress = [(i, c) for i, c in current if c and owner[c[0]] == victim and c[2] >= 1]
            if in_progress:
                break
            assert time.monotonic() < deadline, "no object of the victim's projects came to be in progress"
            time.sleep(0.01)
        killed_at = time.time()
        kill_replica(by_name[victim])
        survivors = [n for n in names if n != victim]
        session.wait_objects(3 * OBJECTS_PER_PHASE)
        session.finish()

        # every click answered exactly once, none failed twice
        assert not [f for a in session.annotators for f in a.failed_twice], [a.failed_twice for a in session.annotators]
        ok = session.ok()
        failures = [a for a in session.answers if a.status != 200]
        sent = {(a.client, a.task, a.clicks) for a in session.answers}
        answered = Counter((a.client, a.task, a.clicks) for a in ok)
        assert set(answered) == sent and set(answered.values()) == {1}, failures[:5]

        # placement after the kill: the victim's projects moved (each to one survivor), the others stayed
        after = replica_of_projects([a for a in ok if a.at > killed_at + 0.5])
        for project in PROJECTS:
            if project not in after:
                continue
            assert len(after[project]) == 1, (project, after[project])
            (now,) = after[project]
            if owner[project] == victim:
                assert now in survivors, (project, now)
            else:
                assert now == owner[project], (project, owner[project], now)

        # the objects in progress on the victim: the next answer (the click in flight, or the next one) came back
        # from another replica, which replayed the object's clicks (its mask is checked below with the others)
        replays = []
        for client, (_, task, clicks_done) in in_progress:
            following = [a for a in ok if a.client == client and a.task == task and a.done_at > killed_at]
            first = min(following, key=lambda a: a.done_at)
            assert first.replica in survivors and first.clicks > clicks_done, first
            replays.append(first)

        # every mask equals an uninterrupted run's (one survivor, fresh tasks, every click in turn)
        reference_url = by_name[survivors[0]].url
        project_for_version = {"base-v1": REFERENCE_PROJECT} | {f"p{p}-v2": p for p in published}
        reference = {}
        for version, project in project_for_version.items():
            for image in range(len(replay)):
                masks = reference_masks(
                    reference_url, image_url, replay, project, image, 900_000 + 10 * project + image
                )
                assert all(v == version for v, _ in masks), (version, [v for v, _ in masks])
                reference[(version, image)] = [rle for _, rle in masks]
        wrong = [a for a in ok if reference[(a.version, a.image)][a.clicks - 1] != a.rle]
        assert not wrong, wrong[:3]
        assert {a.version for a in ok} <= set(project_for_version)

        log = proxy.log_lines()
        retried = [line for line in log if "," in line["upstream"]]
        predicts = [line for line in log if line["uri"].endswith("/predict")]
        assert len(predicts) == len(session.answers)  # nginx logged every click (nothing bypassed it)
        for replica in (by_name[n] for n in survivors):
            text = replica.log_text()
            assert "Traceback" not in text, text[-3000:]
        per_replica = Counter(a.replica for a in ok)
        print(
            f"\nthree replicas behind nginx ({CLIENTS} annotators, {len(PROJECTS)} projects, {CLICKS} clicks per "
            f"object, tiny network, OMP_NUM_THREADS=1): replicas ready in "
            f"{', '.join(f'{s:.1f}' for s in started)} s\n"
            f"requests: {len(session.answers)} sent, {len(ok)} answered 200 "
            f"({', '.join(f'{n}: {per_replica[n]}' for n in names)}); failed: {len(failures)} "
            f"({Counter(str(f.status) for f in failures)}), failed twice: 0; nginx retried {len(retried)} on "
            f"another replica\n"
            f"projects per replica before the kill: {projects_of}; after: "
            f"{ {p: sorted(r)[0] for p, r in after.items()} }\n"
            f"swap (published -> its replica serves it): "
            f"{', '.join(f'{n}: project {p} {s:.2f} s' for n, (p, s) in sorted(swaps.items()))} "
            f"(poll interval {POLL_S:g} s)\n"
            f"kill -9 of {victim} ({len(projects_of[victim])} projects): first answer of the objects in progress "
            f"after the kill: {', '.join(f'{a.seconds:.2f} s ({a.clicks} clicks on {a.replica})' for a in replays)}; "
            f"median click latency before {statistics.median(a.seconds for a in ok if a.at < killed_at):.2f} s"
        )
    finally:
        if proxy is not None:
            proxy.close()
        for replica in replicas:
            replica.close()


# -- the whole-project job in three shards ----------------------------------------------------------------------

ANNOTATE_JOB = REPO / "deploy" / "kubernetes" / "overlays" / "gpu" / "annotate-job.yaml"
BOXES_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="bbox" toName="image"><Label value="Object"/></RectangleLabels>
  <BrushLabels name="mask" toName="image"><Label value="Object"/></BrushLabels>
</View>"""
TASKS = 30


def boxed_task(task_id: int) -> dict:
    """A task whose image (a data: URI) holds a bright ellipse, with an annotation holding the ellipse's box."""
    rng = np.random.default_rng(task_id)
    image = rng.integers(0, 50, (60, 80, 3), dtype=np.uint8)
    cy, cx = 30 + task_id % 5, 40 - task_id % 7
    cv2.ellipse(image, (cx, cy), (18, 12), 0, 0, 360, (220, 200, 40), -1)
    png = cv2.imencode(".png", image)[1].tobytes()
    value = {"x": (cx - 19) * 1.25, "y": (cy - 13) * 100 / 60, "width": 47.5, "height": 2600 / 60, "rotation": 0}
    region = {"type": "rectanglelabels", "from_name": "bbox", "to_name": "image",
              "value": {**value, "rectanglelabels": ["Object"]}}  # fmt: skip
    return {
        "id": task_id,
        "data": {"image": "data:image/png;base64," + base64.b64encode(png).decode()},
        "annotations": [{"id": 1000 + task_id, "result": [region]}],
        "predictions": [],
    }


class Shard:
    """One pod of the Indexed Job: the manifest's own shell command, with JOB_COMPLETION_INDEX as Kubernetes sets it
    and the manifest's environment, in a folder standing for the pod's working directory (an emptyDir)."""

    def __init__(self, job: dict, index: int, workdir: Path, label_studio: FakeLabelStudio, extra: str = "") -> None:
        (spec,) = job["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item.get("value", "") for item in spec["env"]}
        env.update(
            JOB_COMPLETION_INDEX=str(index),
            ADAPTIVECLICK_ANNOTATE_PROJECT="3",  # what `kubectl set env --local` sets
            ADAPTIVECLICK_ANNOTATE_ARGS=extra,
            LABEL_STUDIO_URL=label_studio.url,
            LABEL_STUDIO_API_KEY="legacy-key",
            HOME=str(workdir),
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # `adaptiveclick` as in the image
        )
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.output = workdir / f"shard-{index}"
        self.proc = subprocess.Popen(
            spec["command"], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def journaled(self) -> list[int]:
        path = self.output / "journal.jsonl"
        if not path.exists():
            return []
        return [json.loads(line)["task"] for line in path.read_text().splitlines() if line.endswith("}")]

    def wait(self) -> dict:
        stdout, stderr = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0, stderr[-3000:]
        return json.loads(stdout)


def test_annotate_job_in_three_shards_with_one_killed(tmp_path):
    job = yaml.safe_load(ANNOTATE_JOB.read_text())
    shards = job["spec"]["completions"]
    assert shards == 3
    label_studio = FakeLabelStudio([boxed_task(t) for t in range(1, TASKS + 1)], BOXES_CONFIG)
    try:
        started = time.monotonic()
        # shards 1 and 2 slowed down (--rate) so that they can be killed mid-run; shard 0 runs as shipped
        pods = [Shard(job, k, tmp_path / f"pod-{k}", label_studio, "" if k == 0 else "--rate 4") for k in range(shards)]
        for victim in pods[1:]:
            deadline = time.monotonic() + 120
            while len(victim.journaled()) < 2:
                assert victim.proc.poll() is None, victim.proc.communicate()
                assert time.monotonic() < deadline, "the shard journaled nothing"
                time.sleep(0.02)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
        killed = [len(p.journaled()) for p in pods[1:]]
        assert all(0 < n < TASKS // shards for n in killed), killed
        # shard 1: its container restarts in the same pod (the journal is kept); shard 2: a new pod (no journal)
        pods[1] = Shard(job, 1, tmp_path / "pod-1", label_studio)
        pods[2] = Shard(job, 2, tmp_path / "pod-2-again", label_studio)
        summaries = [pod.wait() for pod in pods]
        seconds = time.monotonic() - started
    finally:
        label_studio.close()
    ids = set(range(1, TASKS + 1))
    posted = Counter(p["task"] for p in label_studio.predictions)
    assert posted == {task: 1 for task in ids}, posted  # every task once: none twice, none lost
    for index, summary in enumerate(summaries):
        assert summary["total"] == summary["done"] == len([t for t in ids if t % shards == index]), summary
        assert not summary["failed"]
    resumed = summaries[1]
    assert resumed["done"] - resumed["predicted"] - resumed["found"] == killed[0]  # skipped through its journal
    assert summaries[2]["found"] >= killed[1]  # a fresh pod: what the killed one posted is found in Label Studio
    print(
        f"\nannotate job, {shards} shards of {TASKS} tasks: shards 2 and 3 killed after {killed} tasks, restarted "
        f"(same folder / fresh pod): every task predicted once, {len(label_studio.predictions)} predictions, "
        f"{seconds:.1f} s"
    )
