"""Servers on loopback for the benchmarks and the reliability tests: ``adaptiveclick serve`` in a subprocess, and a
folder of images over HTTP for it to fetch."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ImageServer:
    """Serves a folder over HTTP on loopback (the images the backend fetches)."""

    def __init__(self, folder: Path) -> None:
        class QuietHandler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        handler = functools.partial(QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class BackendProcess:
    """``adaptiveclick serve`` in a subprocess for one predictor spec, its log in a file (``log_path``).

    Loopback image hosts are allowed (``ADAPTIVECLICK_ALLOWED_HOSTS=127.0.0.1``), since the images come from an
    :class:`ImageServer`; ``env`` adds or overrides variables; ``auth`` is the Basic auth ``env`` sets, for the
    readiness check.
    """

    def __init__(self, spec: str = "baseline", env: dict[str, str] | None = None, wait: bool = True, auth=None) -> None:
        self.auth = auth
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, "LOG_LEVEL": "WARNING", "ADAPTIVECLICK_ALLOWED_HOSTS": "127.0.0.1"}
        for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
            environment.pop(name, None)
        environment.update(env or {})
        self.log = tempfile.NamedTemporaryFile(prefix="adaptiveclick-serve-", suffix=".log", delete=False)
        self.log_path = Path(self.log.name)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adaptiveclick",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--predictor",
                spec,
                "--timeout",
                "600",
            ],
            cwd=REPO,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> float:
        """Seconds until ``/health`` answers 200 (503 "starting" before the model is loaded)."""
        start = time.monotonic()
        while time.monotonic() < start + timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited ({self.proc.returncode}): {self.log_text()[-3000:]}")
            try:
                if requests.get(self.url + "/health", timeout=2, auth=self.auth).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"backend did not start within {timeout:g} s: {self.log_text()[-3000:]}")

    def worker_pid(self) -> int:
        """The pid of gunicorn's worker (the master's child that serves)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        if not children:
            raise RuntimeError("the backend has no worker process right now")
        return int(children[0])

    def worker_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.worker_pid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.log_path.unlink(missing_ok=True)
