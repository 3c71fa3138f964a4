"""The real Label Studio for the end-to-end tests: installed into its own virtualenv, started on loopback once per
test session (the ``label_studio`` fixture in conftest.py), driven through its API with a legacy token.

The virtualenv is cached in ``$ADAPTIVECLICK_CACHE`` (default ``~/.cache/adaptiveclick``) under a folder named after
the version, so only the first run installs it (a few minutes).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from adaptiveclick.labelstudio.label_config import recommended_config
from adaptiveclick.storage.paths import cache_dir

LABEL_STUDIO_VERSION = "1.23.2"
INSTALL_TIMEOUT_S = 1200
START_TIMEOUT_S = 300
ADMIN = ("admin@example.com", "e2e-password-123")
LEGACY_TOKEN = "e2elegacytoken0123456789abcdef"


def start_backend(log: Path, label_studio: LabelStudio, api_key: str, basic_auth=None, **env: str):
    """``adaptiveclick serve`` on a free loopback port, talking to ``label_studio`` with ``api_key``; ``env`` adds
    or replaces settings. Returns ``(process, url, log)`` once /health answers."""
    from conftest import REPO, free_port

    port = free_port()
    environ = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": api_key,
        "ADAPTIVECLICK_PREDICTOR": "baseline",
        "LOG_LEVEL": "INFO",
    }
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        environ.pop(name, None)
    if basic_auth:
        environ.update(BASIC_AUTH_USER=basic_auth[0], BASIC_AUTH_PASS=basic_auth[1])
    environ.update(env)
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "adaptiveclick", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=environ,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url + "/health", proc, log, 120, auth=basic_auth)
    return proc, url, log


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
    """A running Label Studio and the API calls the tests make (legacy token, as an admin)."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.legacy = {"Authorization": f"Token {LEGACY_TOKEN}"}

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(method, self.url + path, headers=self.legacy, timeout=300, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response

    def create_project(self, title: str, label_config: str | None = None) -> int:
        body = {"title": title, "label_config": label_config or recommended_config()}
        return self.api("POST", "/api/projects", json=body).json()["id"]

    def project_uid(self, project: int) -> str:
        """``"<id>.<created timestamp>"``, as Label Studio names the project to ML backends."""
        from datetime import datetime

        created = self.api("GET", f"/api/projects/{project}").json()["created_at"]
        return f"{project}.{int(datetime.fromisoformat(created.replace('Z', '+00:00')).timestamp())}"

    def upload(self, project: int, path: Path) -> dict:
        """Upload one image file as a task; returns the task."""
        with path.open("rb") as f:
            self.api("POST", f"/api/projects/{project}/import", files={"file": (path.name, f, "image/jpeg")})
        return max(self.tasks(project), key=lambda t: t["id"])

    def import_tasks(self, project: int, tasks: list[dict]) -> list[dict]:
        """Import task objects (``data``, optional ``annotations`` / ``predictions``); returns the project's tasks."""
        self.api("POST", f"/api/projects/{project}/import", json=tasks)
        return self.tasks(project)

    def tasks(self, project: int) -> list[dict]:
        found, page = [], 1
        while True:
            body = self.api(
                "GET", "/api/tasks", params={"project": project, "page": page, "page_size": 100, "fields": "all"}
            ).json()
            found += body["tasks"]
            if len(found) >= body["total"] or not body["tasks"]:
                return found
            page += 1

    def connect(self, project: int, backend_url: str, basic_auth=None, extra_params=None) -> dict:
        body = _connection(project, backend_url, basic_auth, extra_params)
        return self.api("POST", "/api/ml", json=body).json()

    def authenticate_webhook(self, project: int, backend_url: str, basic_auth) -> dict:
        """Give the webhook Label Studio made for the backend (``<url>/webhook``, all actions, created without
        credentials) the backend's connection credential, as docs/connect.md tells a team to do: Label Studio
        sends the annotation events through it (``START_TRAINING`` goes with the connection's own Basic auth)."""
        import base64

        hooks = self.api("GET", "/api/webhooks/", params={"project": project}).json()
        hook = next(h for h in hooks if h["url"] == backend_url.rstrip("/") + "/webhook")
        token = base64.b64encode(":".join(basic_auth).encode()).decode()
        return self.api(
            "PATCH", f"/api/webhooks/{hook['id']}/", json={"headers": {"Authorization": f"Basic {token}"}}
        ).json()

    def edit_connection(self, ml_id: int, project: int, backend_url: str, basic_auth=None, extra_params=None) -> dict:
        """What the Connect Model dialog's Save sends for an existing connection: the whole form again (Label
        Studio checks /health and /setup with it before saving)."""
        body = _connection(project, backend_url, basic_auth, extra_params)
        return self.api("PATCH", f"/api/ml/{ml_id}", json=body).json()

    def interactive(self, ml_id: int, task_id: int, regions: list[dict]) -> dict:
        return self.api(
            "POST", f"/api/ml/{ml_id}/interactive-annotating", json={"task": task_id, "context": {"result": regions}}
        ).json()


def _connection(project: int, backend_url: str, basic_auth, extra_params) -> dict:
    body = {"project": project, "url": backend_url, "title": "AdaptiveClick", "is_interactive": True}
    if basic_auth:
        body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
    if extra_params is not None:
        body["extra_params"] = extra_params
    return body


def start_label_studio(data: Path) -> tuple[subprocess.Popen, LabelStudio]:
    """Label Studio on a free loopback port with its data in ``data``, an admin with :data:`LEGACY_TOKEN`, and
    local ML backends allowed."""
    from conftest import free_port

    venv = label_studio_venv()
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
    except BaseException:
        stop(proc)
        raise
    return proc, LabelStudio(f"http://127.0.0.1:{port}", data)
