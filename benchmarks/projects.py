"""Many Label Studio projects on one backend: what a project model costs and how fast versions change.

One ``adaptiveclick serve`` (the GrabCut baseline as its configured predictor, so it starts with no network) over a
local registry with a line per project, each a freshly initialised AdaptiveClick of ``--size``. Printed:

* the worker's RSS with 0, 1 and 2 project models loaded (each loaded by a project's first click);
* the swap: a new version published to project 1's line while a client keeps clicking there, from the publish to
  the first answer by the new version (``MODEL_REGISTRY_POLL_SECONDS`` plus loading it), and the slowest click in
  that window against the clicks before it;
* the rollback: ``POST /versions/1`` to the previous version, the reply's time (it loads the version first when the
  pool no longer holds it) and the time to the first answer by it;
* per-click latency of two projects clicked in turn with a pool of 2 models against a pool of 1 (every switch
  reloads a model: still right, just slower).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import requests

from .common import machine_line, percentiles, print_table
from .http_backend import predict_body
from .servers import BackendProcess, ImageServer

AUTH = ("bench", "bench-secret")


def publish_random(registry, project: int, version: str, size: str, seed: int, folder: Path) -> None:
    import torch

    from adaptiveclick.finetune.network import save_weights
    from adaptiveclick.model import build_adaptiveclick
    from adaptiveclick.storage.registry import project_line

    torch.manual_seed(seed)
    path = save_weights(build_adaptiveclick(size), folder / f"{project}-{version}.pth")
    registry.line(project_line(project)).publish(path, version=version)
    path.unlink()


class Clicker:
    """Clicks on one project's image, a new task each time (so the model runs; the image stays cached)."""

    def __init__(self, backend: BackendProcess, image_url: str, shape: tuple[int, int]) -> None:
        self.backend, self.image_url, self.shape = backend, image_url, shape
        self.http = requests.Session()
        self.http.auth = AUTH
        self.task = 0
        self.answers: list[tuple[float, float, int, str]] = []  # (end time, seconds, project, version)
        self.errors: list[str] = []

    def click(self, project: int) -> str:
        self.task += 1
        h, w = self.shape
        body = predict_body(self.image_url, self.task, [(h // 2, w // 2, True)], self.shape, project=f"{project}.1")
        start = time.perf_counter()
        reply = self.http.post(f"{self.backend.url}/predict", json=body, timeout=600)
        seconds = time.perf_counter() - start
        if reply.status_code != 200:
            self.errors.append(f"{reply.status_code}: {reply.text[:200]}")
            return ""
        version = reply.json()["model_version"]
        self.answers.append((time.time(), seconds, project, version))
        return version

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [s for at, s, _, _ in self.answers if since <= at <= until]


def start_backend(registry_root: Path, pool: str) -> BackendProcess:
    env = {
        "MODEL_REGISTRY": str(registry_root),
        "MODEL_REGISTRY_POLL_SECONDS": "0.5",
        "ADAPTIVECLICK_MODEL_CACHE": pool,
        "BASIC_AUTH_USER": AUTH[0],
        "BASIC_AUTH_PASS": AUTH[1],
    }
    return BackendProcess("baseline", env, auth=AUTH)


def memory_and_versions(registry, registry_root: Path, image_url: str, shape, size: str, folder: Path) -> dict:
    backend = start_backend(registry_root, "3")
    try:
        clicker = Clicker(backend, image_url, shape)
        rss = [backend.worker_rss_mb()]
        for project in (1, 2):
            clicker.click(project)
            rss.append(backend.worker_rss_mb())
        steady_from = time.time()  # the clicks above loaded the models
        for _ in range(3):
            clicker.click(1)
        steady = percentiles(clicker.latencies(since=steady_from))["p50"]

        stop = threading.Event()

        def keep_clicking() -> None:
            while not stop.is_set():
                clicker.click(1)

        thread = threading.Thread(target=keep_clicking, daemon=True)
        thread.start()
        time.sleep(1.0)
        publish_random(registry, 1, "v2", size, 12, folder)
        published = time.time()  # the version is complete and current from here
        swap = _first_answer(clicker, 1, "v2", published) - published
        window = clicker.latencies(since=published, until=published + swap + 5.0)

        began = time.time()
        reply = requests.post(f"{backend.url}/versions/1", json={"version": "v1"}, auth=AUTH, timeout=600)
        pin_reply = time.time() - began
        if reply.status_code != 200:
            raise RuntimeError(f"pin failed: {reply.status_code} {reply.text[:300]}")
        rollback = _first_answer(clicker, 1, "v1", began) - began
        stop.set()
        thread.join(timeout=600)
        if clicker.errors:
            raise RuntimeError(f"requests failed: {clicker.errors[:3]}")
        return {
            "rss": rss,
            "steady_p50": steady,
            "swap": swap,
            "swap_window_max": max(window),
            "before_max": max(clicker.latencies(since=steady_from, until=published)),
            "pin_reply": pin_reply,
            "rollback": rollback,
            "requests": len(clicker.answers),
        }
    finally:
        backend.close()


def _first_answer(clicker: Clicker, project: int, version: str, since: float, timeout: float = 600.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [at for at, _, p, v in list(clicker.answers) if p == project and v == version and at >= since]
        if hits:
            return min(hits)
        time.sleep(0.05)
    raise RuntimeError(f"project {project} was never answered by {version}")


def alternating(registry_root: Path, image_url: str, shape, pool: str, rounds: int) -> tuple[dict, int]:
    backend = start_backend(registry_root, pool)
    try:
        clicker = Clicker(backend, image_url, shape)
        for project in (1, 2):  # both loaded once (with pool 1, the second evicts the first)
            clicker.click(project)
        clicker.answers.clear()
        for k in range(rounds * 2):
            clicker.click(1 + k % 2)
        if clicker.errors:
            raise RuntimeError(f"requests failed: {clicker.errors[:3]}")
        return percentiles(clicker.latencies()), len(clicker.answers)
    finally:
        backend.close()


def run(data_root: Path, size: str, rounds: int) -> int:
    from adaptiveclick.evaluation.datasets import GrabCutDataset
    from adaptiveclick.storage.registry import open_registry

    sample = GrabCutDataset(data_root / "GrabCut")[0]
    file = next((data_root / "GrabCut" / "data_GT").glob(sample.name + ".*"))
    folder = Path(tempfile.mkdtemp(prefix="adaptiveclick-projects-"))
    (folder / "www").mkdir()
    shutil.copy(file, folder / "www" / file.name)
    registry_root = folder / "registry"
    registry = open_registry(registry_root)
    images = ImageServer(folder / "www")
    try:
        publish_random(registry, 1, "v1", size, 1, folder)
        publish_random(registry, 2, "v1", size, 2, folder)
        image_url, shape = f"{images.url}/{file.name}", sample.mask.shape
        figures = memory_and_versions(registry, registry_root, image_url, shape, size, folder)
        two, served_two = alternating(registry_root, image_url, shape, "2", rounds)
        one, served_one = alternating(registry_root, image_url, shape, "1", rounds)
    finally:
        images.close()
        shutil.rmtree(folder, ignore_errors=True)

    rss = figures["rss"]
    print(f"machine: {machine_line()}")
    print_table(
        ["project models loaded", "worker RSS (MB)", "added (MB)"],
        [[n, f"{rss[n]:.0f}", f"{rss[n] - rss[n - 1]:.0f}" if n else ""] for n in range(3)],
        title=f"memory per project model (AdaptiveClick {size}, fp32 weights; the first one also brings in torch)",
    )
    print_table(
        ["what", "seconds"],
        [
            ["click, steady (p50)", f"{figures['steady_p50']:.2f}"],
            ["swap: publish -> first answer by the new version", f"{figures['swap']:.2f}"],
            ["slowest click before the swap", f"{figures['before_max']:.2f}"],
            ["slowest click during the swap", f"{figures['swap_window_max']:.2f}"],
            ["rollback: POST /versions reply (the version still in the pool)", f"{figures['pin_reply']:.2f}"],
            ["rollback: request -> first answer by the pinned version", f"{figures['rollback']:.2f}"],
        ],
        title=f"versions changing under a clicking client ({figures['requests']} requests, all answered)",
    )
    print_table(
        ["pool", "requests", "p50 (s)", "p95 (s)"],
        [
            ["2 models", served_two, f"{two['p50']:.2f}", f"{two['p95']:.2f}"],
            ["1 model", served_one, f"{one['p50']:.2f}", f"{one['p95']:.2f}"],
        ],
        title="two projects clicked in turn (ADAPTIVECLICK_MODEL_CACHE)",
    )
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--size", default="base", choices=("tiny", "base", "huge"), help="network size")
    parser.add_argument("--rounds", type=int, default=5, help="clicks per project in the pool comparison")


def main(args) -> int:
    if args.rounds < 1:
        print("error: --rounds must be >= 1")
        return 2
    return run(args.data_root, args.size, args.rounds)
