"""Shared fixtures: dataset location, a local HTTP file server and a local S3 (moto server mode); and the tiers: a
test's folder (``tests/unit``, ``tests/integration``, ``tests/e2e``) is its marker, so ``-m unit`` selects a tier."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS_ENV = "ADAPTIVECLICK_DATASETS"
# set by CI (.ci/run): a test that needs the datasets fails instead of skipping, so CI never passes by skipping
REQUIRE_DATASETS_ENV = "ADAPTIVECLICK_REQUIRE_DATASETS"
TIERS = ("unit", "integration", "e2e", "wheel")
# set by the wheel tier (make test-wheel): the tests must import the installed wheel, never the checkout
INSTALLED_ENV = "ADAPTIVECLICK_TEST_INSTALLED"


def pytest_sessionstart(session) -> None:
    """Under the wheel tier, refuse to run unless ``adaptiveclick`` comes from site-packages (a checkout on sys.path,
    e.g. pytest started in it with ``python -m pytest``, would shadow the wheel)."""
    if not os.environ.get(INSTALLED_ENV):
        return
    import adaptiveclick

    where = Path(adaptiveclick.__file__).resolve()
    if REPO in where.parents or where.parent.parent.name != "site-packages":
        raise pytest.UsageError(f"{INSTALLED_ENV} is set but adaptiveclick is imported from {where}")


def pytest_collection_modifyitems(config, items) -> None:
    """Mark each test with its tier, the folder it lives in."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(tier)


def datasets_root() -> Path:
    """Where GrabCut/ and Berkeley/ live: ``$ADAPTIVECLICK_DATASETS`` or ``../shared/datasets``."""
    return Path(os.environ.get(DATASETS_ENV) or REPO.parent / "shared" / "datasets")


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = datasets_root()
    for name in ("GrabCut", "Berkeley"):
        if not (root / name).is_dir():
            message = f"dataset {name} not found at {root / name}; set {DATASETS_ENV} to the folder holding it"
            if os.environ.get(REQUIRE_DATASETS_ENV):
                pytest.fail(message)
            pytest.skip(message)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def wait_for_health(base_url: str, timeout: float = 120.0, auth=None) -> None:
    """Until ``GET /health`` answers 200: the server answers 503 "starting" while it loads the model."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base_url}/health", timeout=5, auth=auth).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base_url}/health did not answer 200 within {timeout}s")


@pytest.fixture()
def one_torch_thread():
    """Tiny test networks gain nothing from threads, and OpenMP threads spinning against other processes on a
    busy 2-core machine slow them down many times over."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def http_dir(tmp_path):
    """Serve ``tmp_path/www`` over HTTP on loopback; yields ``(directory, base_url)``."""
    root = tmp_path / "www"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture()
def serve_samples(http_dir, data_root):
    """``serve(samples)`` puts the GrabCut images of ``samples`` (and an unreadable ``broken.jpg``) on the
    ``http_dir`` server; returns ``(image URLs, base URL)``."""
    root, base = http_dir

    def serve(samples) -> tuple[list[str], str]:
        urls = []
        for sample in samples:
            source = next((data_root / "GrabCut" / "data_GT").glob(sample.name + ".*"))
            shutil.copy(source, root / source.name)
            urls.append(f"{base}/{source.name}")
        (root / "broken.jpg").write_bytes(b"not a jpeg")
        return urls, base

    return serve


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback; sets the AWS_* variables boto3 reads and yields the endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield endpoint
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def s3_bucket(s3_server):
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """The real Label Studio (see tests/ls_server.py), started once for every end-to-end test that asks for it."""
    from ls_server import start_label_studio, stop

    proc, label_studio = start_label_studio(tmp_path_factory.mktemp("label-studio"))
    yield label_studio
    stop(proc)
