"""Concurrent annotators against ``adaptiveclick serve`` on loopback: latency p50/p95, throughput, errors and the
worker's memory for 1, 4 and 8 clients.

Each client is an annotator session replayed over and over: the NoC clicker's clicks on a GrabCut image, every
request carrying all clicks so far (as Label Studio sends them), each client on its own tasks. The first round of a
session runs the model; the rounds after it are answered from the session cache, so the figures are the service's
own cost (HTTP, JSON, cache, RLE) plus the model where it runs. The worker's RSS is read from ``/proc`` before and
after each load, so a leak shows as growth.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from adaptiveclick.evaluation.datasets import GrabCutDataset
from adaptiveclick.evaluation.simulation import simulate
from adaptiveclick.model.loading import load_predictor

from .common import machine_line, percentiles, print_table
from .http_backend import predict_body
from .servers import BackendProcess, ImageServer


@dataclass
class LoadResult:
    clients: int
    requests: int
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def sessions(data_root: Path, images: int, clicks: int) -> list[tuple[str, tuple[int, int], list]]:
    """``(file name, (H, W), clicks)`` per GrabCut image: the NoC clicker's clicks for the baseline."""
    dataset = GrabCutDataset(data_root / "GrabCut")
    predictor = load_predictor("baseline")
    found = []
    for index in range(min(images, len(dataset))):
        sample = dataset[index]
        *_, last = simulate(predictor, sample, clicks)
        file = next((data_root / "GrabCut" / "data_GT").glob(sample.name + ".*")).name
        found.append((file, sample.mask.shape, [(int(c.y), int(c.x), c.is_positive) for c in last.clicks]))
    return found


def run_load(
    backend_url: str, image_url: str, replay: list, clients: int, requests_per_client: int, task_offset: int = 0
) -> LoadResult:
    """``clients`` threads, each sending ``requests_per_client`` requests: its sessions' click prefixes in turn."""
    result = LoadResult(clients, clients * requests_per_client)
    lock = threading.Lock()

    def client(index: int) -> None:
        http = requests.Session()
        bodies = [
            predict_body(f"{image_url}/{file}", task_offset + index * len(replay) + s, clicks[:k], shape)
            for s, (file, shape, clicks) in enumerate(replay)
            for k in range(1, len(clicks) + 1)
        ]
        for n in range(requests_per_client):
            start = time.perf_counter()
            try:
                reply = http.post(f"{backend_url}/predict", json=bodies[n % len(bodies)], timeout=120)
                problem = None if reply.status_code == 200 else f"{reply.status_code}: {reply.text[:200]}"
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - start
            with lock:
                result.latencies.append(seconds)
                if problem:
                    result.errors.append(problem)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - start
    return result


def run(
    data_root: Path,
    client_counts: list[int],
    requests_per_client: int,
    images: int,
    clicks: int,
    spec: str = "baseline",
) -> list[LoadResult]:
    replay = sessions(data_root, images, clicks)
    folder = Path(tempfile.mkdtemp(prefix="adaptiveclick-load-"))
    for file, _, _ in replay:
        shutil.copy(data_root / "GrabCut" / "data_GT" / file, folder / file)
    image_server, backend = ImageServer(folder), BackendProcess(spec)
    results = []
    try:
        for round_index, clients in enumerate(client_counts):
            before = backend.worker_rss_mb()
            result = run_load(
                backend.url, image_server.url, replay, clients, requests_per_client, task_offset=round_index * 10_000
            )
            result.rss_before_mb, result.rss_after_mb = before, backend.worker_rss_mb()
            results.append(result)
    finally:
        backend.close()
        image_server.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"machine: {machine_line()}")
    rows = []
    for r in results:
        stats = percentiles(r.latencies)
        rows.append(
            [
                r.clients,
                r.requests,
                len(r.errors),
                f"{stats['p50'] * 1e3:.1f}",
                f"{stats['p95'] * 1e3:.1f}",
                f"{r.throughput:.1f}",
                f"{r.rss_before_mb:.0f}",
                f"{r.rss_after_mb:.0f}",
            ]
        )
    print_table(
        [
            "clients",
            "requests",
            "errors",
            "p50 (ms)",
            "p95 (ms)",
            "throughput (req/s)",
            "worker RSS before (MB)",
            "worker RSS after (MB)",
        ],
        rows,
        title=f"/predict under load ({spec}, {len(replay)} GrabCut sessions x {clicks} clicks per client, "
        f"replayed; first round runs the model, later rounds hit the session cache)",
    )
    for r in results:
        for error in sorted(set(r.errors))[:5]:
            print(f"{r.clients} clients: {error}")
    return results


def add_arguments(parser) -> None:
    parser.add_argument("--clients", default="1,4,8", help="comma-separated client counts (default 1,4,8)")
    parser.add_argument("--requests", type=int, default=250, help="requests per client (default 250)")
    parser.add_argument("--images", type=int, default=3, help="GrabCut sessions per client (default 3)")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per session (default 5)")
    parser.add_argument("--spec", default="baseline", help="predictor spec served (default baseline)")


def main(args) -> int:
    counts = [int(v) for v in args.clients.split(",") if v.strip()]
    if not counts or min(counts) < 1 or args.requests < 1:
        print("error: --clients needs positive counts and --requests >= 1")
        return 2
    results = run(args.data_root, counts, args.requests, args.images, args.clicks, args.spec)
    return 0 if all(not r.errors for r in results) else 1
