"""The image's entrypoint without Docker: the Dockerfile's CMD starts the server the way the container would and
the HEALTHCHECK script sees it healthy (with and without Basic auth); the ops scripts (bucket creation, image
build, CVAT deploy) driven with a local S3 and stand-in ``docker``/``nuctl`` commands."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent  # the project's venv, where `adaptiveclick` is installed


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_command() -> list[str]:
    """The CMD of the Dockerfile's runtime stage."""
    lines = (REPO / "Dockerfile").read_text().splitlines()
    return json.loads([line for line in lines if line.startswith("CMD ")][-1][len("CMD ") :])


def image_healthcheck() -> list[str]:
    """The HEALTHCHECK's command (exec form, after its options)."""
    text = (REPO / "Dockerfile").read_text().split("HEALTHCHECK", 1)[1]
    return json.loads(text.split("CMD", 1)[1].split("\n", 1)[0])


@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    """The image's command with the image's state folders (moved under a temporary folder) and Basic auth on; the
    port is the image's 9090 unless that is taken here."""
    state = tmp_path_factory.mktemp("container")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ADAPTIVECLICK_CACHE": str(state / "cache"),
        "MODEL_DIR": str(state / "models"),
        "BASIC_AUTH_USER": "label-studio",
        "BASIC_AUTH_PASS": "s3cret",
        "ADAPTIVECLICK_PREDICTOR": "baseline",
        "MODEL_REGISTRY_POLL_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    log = state / "server.log"
    for attempt in range(2):  # a free port can be taken by another process before the server binds it
        command = image_command()
        port = free_port()
        command[command.index("--port") + 1] = str(port)
        command[command.index("--host") + 1] = "127.0.0.1"  # the container listens on 0.0.0.0; loopback here
        with log.open("w") as out:
            proc = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=state, start_new_session=True
            )
        if wait_for_server(proc, port, timeout=180):
            break
        assert attempt == 0 and "Address already in use" in log.read_text(), log.read_text()[-3000:]
    try:
        yield proc, f"http://127.0.0.1:{port}", log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for_server(proc: subprocess.Popen, port: int, timeout: float) -> bool:
    """True once the port accepts connections, False if the process exits first (its log says why)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            wait_for_port(port, timeout=1.0)
            return True
        except TimeoutError:
            continue
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return False


def test_image_command_serves_and_the_healthcheck_sees_it(image_server):
    proc, url, log = image_server
    check = image_healthcheck()
    assert check[1:] == ["/opt/adaptiveclick/healthcheck.py", "http://127.0.0.1:9090/health"]
    deadline = time.monotonic() + 120
    response = None
    while time.monotonic() < deadline:  # the port opens before the worker has loaded the model
        try:
            response = requests.get(f"{url}/health", auth=("label-studio", "s3cret"), timeout=30)
        except requests.RequestException:
            time.sleep(0.5)
            continue
        if response.status_code == 200:
            break
        time.sleep(0.5)
    assert response is not None and response.json()["status"] == "UP", log.read_text()[-2000:]
    healthcheck = load_script("healthcheck")
    assert healthcheck.check(f"{url}/health", {"BASIC_AUTH_USER": "label-studio", "BASIC_AUTH_PASS": "s3cret"}) == (
        True,
        "up, model baseline-grabcut-v2",
    )
    healthy, why = healthcheck.check(f"{url}/health", {})
    assert not healthy and "answered 401" in why
    # as the HEALTHCHECK runs it: a separate process, credentials from the container's environment
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py"), f"{url}/health"],
        env={"BASIC_AUTH_USER": "label-studio", "BASIC_AUTH_PASS": "s3cret"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and "up" in result.stdout
    # gunicorn's log lines and the app's are JSON (what `docker logs` shows)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line["msg"] == "backend ready" for line in lines)


def test_the_server_stops_cleanly_on_sigterm(image_server):
    """`docker stop` sends SIGTERM to the command (PID 1); gunicorn finishes within its graceful timeout."""
    proc, url, log = image_server
    requests.get(f"{url}/health", auth=("label-studio", "s3cret"), timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0, log.read_text()[-2000:]


def test_healthcheck_fails_when_nothing_listens():
    healthcheck = load_script("healthcheck")
    healthy, why = healthcheck.check(f"http://127.0.0.1:{free_port()}/health", {})
    assert not healthy and "refused" in why.lower()
    assert healthcheck.main(["healthcheck.py", f"http://127.0.0.1:{free_port()}/health"]) == 1


def test_ensure_bucket_creates_the_registry_bucket_once(s3_server):
    ensure = load_script("ensure_bucket")
    uri = "s3://adaptiveclick-models-test/registry"
    assert ensure.ensure_bucket(uri) is True
    assert ensure.ensure_bucket(uri) is False
    import boto3

    assert "adaptiveclick-models-test" in {b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]}
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "ensure_bucket.py")],
        env={**os.environ, "MODEL_REGISTRY": uri},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "already exists" in result.stdout
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "ensure_bucket.py")],
        env={**os.environ, "MODEL_REGISTRY": "/var/lib/adaptiveclick/models/registry"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "nothing to create" in result.stdout
    with pytest.raises(ValueError, match="s3://bucket"):
        ensure.bucket_of("s3:///prefix")


# -- the shell scripts, with stand-in docker / nuctl -------------------------------------------------------------

FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$TOOL_LOG"
case "$1 $2" in
  "info "*) [ "$DOCKER_ENGINE" = up ] || exit 1 ;;
  "run "*) echo c0ffee ;;
  "inspect "*) echo "$HEALTH" ;;
  "port "*) echo 127.0.0.1:49153 ;;
  "logs "*) echo "worker failed to boot" ;;
esac
exit 0
"""


@pytest.fixture()
def fake_tools(tmp_path):
    """A folder with ``docker`` and ``nuctl`` stand-ins that log their arguments; returns ``(env, log)``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "nuctl"):
        (bin_dir / tool).write_text(FAKE_TOOL)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "tools.log"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "TOOL_LOG": str(log),
        "DOCKER_ENGINE": "up",
        "HEALTH": "healthy",
        "HOME": str(tmp_path),
    }
    return env, log


def run_script(path: Path, *args, env) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", str(path), *args], env=env, capture_output=True, text=True, timeout=60)


def test_build_image_script_builds_and_smoke_tests(fake_tools):
    env, log = fake_tools
    result = run_script(DEPLOY / "build-image.sh", env=env)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert f"docker build --build-arg VARIANT=cpu -t adaptiveclick-backend:cpu {REPO}" in calls
    assert any(c.startswith("docker run -d --rm -p 127.0.0.1::9090 adaptiveclick-backend:cpu") for c in calls)
    assert "docker exec c0ffee python /opt/adaptiveclick/healthcheck.py" in calls
    assert calls[-1].startswith("docker stop")  # the container is removed afterwards
    log.unlink()
    result = run_script(DEPLOY / "build-image.sh", "cuda", "me/ac:1", env=env)
    calls = log.read_text().splitlines()
    assert result.returncode == 0 and f"docker build --build-arg VARIANT=cuda -t me/ac:1 {REPO}" in calls
    assert any("--gpus 1 me/ac:1" in c for c in calls)


def test_build_image_script_reports_an_unhealthy_container(fake_tools):
    env, log = fake_tools
    result = run_script(DEPLOY / "build-image.sh", env={**env, "HEALTH": "unhealthy"})
    assert result.returncode == 1 and "container is unhealthy" in result.stderr
    assert "worker failed to boot" in result.stderr


def test_build_image_script_without_a_docker_engine(fake_tools, tmp_path):
    env, _ = fake_tools
    result = run_script(DEPLOY / "build-image.sh", env={**env, "DOCKER_ENGINE": "down"})
    assert result.returncode == 3 and "no Docker engine answers" in result.stderr
    if not any(Path(folder, "docker").exists() for folder in ("/usr/bin", "/bin")):
        result = run_script(DEPLOY / "build-image.sh", env={**env, "PATH": "/usr/bin:/bin"})
        assert result.returncode == 3 and "docker is not installed" in result.stderr
    result = run_script(DEPLOY / "build-image.sh", "gpu", env=env)
    assert result.returncode == 2 and "usage" in result.stderr


def test_cvat_deploy_script(fake_tools):
    env, log = fake_tools
    spec = "https://example.org/adaptiveclick_base448_sbd.pth#sha256=" + "0" * 64
    result = run_script(DEPLOY / "cvat" / "deploy.sh", "gpu", spec, env=env)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert f"docker build --build-arg VARIANT=cuda -t adaptiveclick-backend:cuda {REPO}" in calls
    deploy = next(c for c in calls if c.startswith("nuctl deploy"))
    assert f"--path {DEPLOY / 'cvat'} --file {DEPLOY / 'cvat' / 'function-gpu.yaml'}" in deploy
    assert f"--env ADAPTIVECLICK_PREDICTOR={spec}" in deploy and "--project-name cvat" in deploy
    assert run_script(DEPLOY / "cvat" / "deploy.sh", "tpu", env=env).returncode == 2
