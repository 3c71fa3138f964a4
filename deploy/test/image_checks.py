"""Host side of ``deploy/test-image.sh``: the requests it sends to the containers and what it compares them with.

Runs with the project's virtualenv (numpy, requests, Pillow, label-studio-sdk from the test extras); it imports no
module of the project: the reference answer comes from the host's own ``adaptiveclick serve``, the click body from
the test suite's ``tests/ls_regions.click_request``, masks are decoded with label-studio-sdk.

    python deploy/test/image_checks.py wait-up URL SECONDS
    python deploy/test/image_checks.py host-reference --images DIR --image NAME --out FILE.npz
    python deploy/test/image_checks.py click URL --image NAME [--reference FILE.npz] [--gt FILE.bmp] [--version V]
    python deploy/test/image_checks.py cvat-containerfile deploy/cvat/function.yaml BASE_IMAGE
    python deploy/test/image_checks.py cvat-env deploy/cvat/function.yaml
    python deploy/test/image_checks.py compose-click --ls URL --token T --backend-url URL --image NAME --gt FILE.bmp

Each command prints what it measured; a failed check exits 1 with a line starting ``FAIL:``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from ls_regions import click_request  # noqa: E402  (the one-click /predict body of the test suite)

# the connection credential the backends under test expect (Basic auth: what Label Studio's Connect Model dialog
# holds); test-image.sh makes one per run and hands it to the containers and to these checks
AUTH_ENV = "IMAGE_TEST_BASIC_AUTH"
AUTH = tuple(os.environ[AUTH_ENV].split(":", 1)) if os.environ.get(AUTH_ENV) else None


class CheckFailed(Exception):
    pass


def fail(message: str):
    raise CheckFailed(message)


# -- masks ---------------------------------------------------------------------------------------------------------


def brush_mask(region: dict) -> np.ndarray:
    """A brushlabels region (RLE of RGBA bytes) as a boolean mask."""
    from label_studio_sdk.converter.brush import decode_rle

    h, w = int(region["original_height"]), int(region["original_width"])
    rgba = np.asarray(decode_rle(region["value"]["rle"]), dtype=np.uint8)[: h * w * 4].reshape(h, w, 4)
    return rgba[:, :, 3] > 127


def ground_truth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """GrabCut's boundary_GT: 255 object, 0 background, 128 the unsure band (ignored). ``(object, valid)``."""
    from PIL import Image

    gt = np.asarray(Image.open(path).convert("L"))
    return gt > 192, (gt < 64) | (gt > 192)


def iou(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    if valid is not None:
        a, b = a & valid, b & valid
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def brush_of(results: list[dict]) -> dict:
    brushes = [r for r in results if r.get("type") == "brushlabels"]
    if not brushes:
        fail(f"no brushlabels region in the answer: {[r.get('type') for r in results]}")
    return brushes[0]


# -- HTTP ----------------------------------------------------------------------------------------------------------


def wait_up(url: str, seconds: float, auth=None) -> float:
    """Seconds until ``GET url`` answers 200 with status UP."""
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < seconds:
        try:
            response = requests.get(url, timeout=5, auth=auth)
            if response.status_code == 200 and response.json().get("status") == "UP":
                return time.monotonic() - start
            last = f"{response.status_code} {response.text[:200]}"
        except (requests.RequestException, ValueError) as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    fail(f"{url} not UP within {seconds:.0f}s (last: {last})")


def post_click(url: str, image: str) -> tuple[dict, float]:
    start = time.monotonic()
    response = requests.post(f"{url}/predict", json=click_request(image), timeout=300, auth=AUTH)
    seconds = time.monotonic() - start
    if response.status_code != 200:
        fail(f"POST {url}/predict answered {response.status_code}: {response.text[:500]}")
    results = response.json()["results"]
    if not results:
        fail(f"POST {url}/predict gave no prediction")
    return results[0], seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- commands ------------------------------------------------------------------------------------------------------


def cmd_wait_up(args) -> None:
    seconds = wait_up(args.url, args.seconds, None if args.anonymous else AUTH)
    print(f"{seconds:.1f}")


def cmd_host_reference(args) -> None:
    """The same click through the host's build: ``adaptiveclick serve`` from this virtualenv, baseline predictor,
    the same images folder as local files."""
    command = Path(sys.executable).parent / "adaptiveclick"
    with tempfile.TemporaryDirectory(prefix="adaptiveclick-host-reference-") as state:
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "ADAPTIVECLICK_PREDICTOR": "baseline",
            "LOCAL_FILES_DOCUMENT_ROOT": str(args.images),
            "ADAPTIVECLICK_CACHE": f"{state}/cache",
            "MODEL_DIR": f"{state}/models",
            "LOG_LEVEL": "WARNING",
        }
        for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
            env.pop(name, None)
        if AUTH:  # the image's backend gets the same credential: the same answer, local files included
            env.update(BASIC_AUTH_USER=AUTH[0], BASIC_AUTH_PASS=AUTH[1])
        log = Path(state) / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(command), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                cwd=state,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_up(f"{url}/health", 120, AUTH)
            except CheckFailed:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise
            region, seconds = post_click(url, args.image)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    mask = brush_mask(brush_of(region["result"]))
    np.savez_compressed(args.out, mask=mask)
    print(f"host reference: {mask.sum()} object pixels of {mask.size}, model {region['model_version']}, {seconds:.2f}s")


def cmd_click(args) -> None:
    region, seconds = post_click(args.url, args.image)
    version = region.get("model_version")
    line = f"{args.url}/predict: 200 in {seconds:.2f}s, model {version}"
    if args.version and version != args.version:
        fail(f"{line}: expected model version {args.version}")
    mask = brush_mask(brush_of(region["result"]))
    line += f", {mask.sum()} object pixels"
    if args.gt:
        gt, valid = ground_truth(args.gt)
        line += f", IoU with ground truth {iou(mask, gt, valid):.4f}"
    if args.reference:
        reference = np.load(args.reference)["mask"]
        if reference.shape != mask.shape:
            fail(f"{line}: mask {mask.shape} but the host's is {reference.shape}")
        differ = int((reference != mask).sum())
        line += f", IoU with the host build's mask {iou(mask, reference):.4f} ({differ} pixels differ)"
        if differ:
            fail(f"{line}: not the host build's mask")
    print(line)


def function_config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def cmd_cvat_containerfile(args) -> None:
    """What nuclio's build makes of function.yaml for the python runtime: FROM spec.build.baseImage (here the image
    just built), the preCopy directives, nuclio's Python SDK and msgpack installed with the image's pip, the
    function folder copied to /opt/nuclio. (nuclio adds its processor binary, which only forwards HTTP events.)"""
    spec = function_config(args.function)["spec"]
    lines = [f"FROM {args.base}"]
    for directive in spec["build"]["directives"].get("preCopy", []):
        lines.append(f"{directive['kind']} {directive['value']}")
    lines += [
        "RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert \\",
        "    python -m pip install --no-cache-dir nuclio-sdk msgpack",
        "COPY main.py /opt/nuclio/main.py",
    ]
    for directive in spec["build"]["directives"].get("postCopy", []):
        lines.append(f"{directive['kind']} {directive['value']}")
    print("\n".join(lines))


def cmd_cvat_env(args) -> None:
    """spec.env as ``-e NAME=VALUE`` arguments (nuclio sets them on the function's container)."""
    spec = function_config(args.function)["spec"]
    print(" ".join(f"-e {item['name']}={item['value']}" for item in spec.get("env", [])))


def cmd_compose_click(args) -> None:
    """The README's steps through Label Studio's API: a project with labelstudio/label_config.xml, a Local files
    storage at /label-studio/files/<folder> synced, the backend connected at its compose address, then one
    keypoint through Label Studio's interactive-annotating endpoint; the brush mask is scored against the ground
    truth."""
    session = requests.Session()
    session.headers["Authorization"] = f"Token {args.token}"

    def api(method: str, path: str, **kwargs) -> dict:
        response = session.request(method, args.ls + path, timeout=300, **kwargs)
        if response.status_code >= 300:
            fail(f"Label Studio {method} {path}: {response.status_code} {response.text[:800]}")
        return response.json() if response.content else {}

    start = time.monotonic()
    config = (REPO / "labelstudio" / "label_config.xml").read_text()
    project = api("POST", "/api/projects", json={"title": "image tier", "label_config": config})["id"]
    storage = api(
        "POST",
        "/api/storages/localfiles",
        json={
            "project": project,
            "title": "images",
            "path": f"/label-studio/files/{args.folder}",
            "regex_filter": rf"^{args.image.replace('.', '[.]')}$",
            "use_blob_urls": True,
        },
    )
    api("POST", f"/api/storages/localfiles/{storage['id']}/sync")
    tasks = []
    deadline = time.monotonic() + 60
    while not tasks and time.monotonic() < deadline:
        tasks = api("GET", "/api/tasks", params={"project": project, "fields": "all"})["tasks"]
        time.sleep(0.5 if not tasks else 0)
    if not tasks:
        fail("Local files storage sync gave no task")
    task = tasks[0]
    print(f"project {project}: task {task['id']} {task['data']['image']}")
    connection = {"project": project, "url": args.backend_url, "title": "AdaptiveClick", "is_interactive": True}
    if AUTH:  # the compose defaults: Label Studio connects with the backend's Basic auth (deploy/env.example)
        connection.update(auth_method="BASIC_AUTH", basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])
    ml = api("POST", "/api/ml", json=connection)
    backends = api("GET", "/api/ml", params={"project": project})
    state = next((b.get("state") for b in backends if b["id"] == ml["id"]), None)
    print(f"ML backend {ml['id']} at {args.backend_url}: state {state}")
    if state != "CO":
        fail(f"the backend is not connected (state {state}): {backends}")
    keypoint = click_request(args.image)["params"]["context"]["result"][0]
    click_start = time.monotonic()
    body = {"task": task["id"], "context": {"result": [keypoint]}}
    answer = api("POST", f"/api/ml/{ml['id']}/interactive-annotating", json=body)
    click_s = time.monotonic() - click_start
    results = (answer.get("data") or {}).get("result") or []
    if not results:
        fail(f"interactive annotating gave no result: {json.dumps(answer)[:800]}")
    mask = brush_mask(brush_of(results))
    gt, valid = ground_truth(args.gt)
    score = iou(mask, gt, valid)
    print(
        f"one keypoint through Label Studio: brush mask {mask.sum()} pixels, IoU with ground truth {score:.4f}, "
        f"click {click_s:.2f}s, project set-up and click {time.monotonic() - start:.1f}s"
    )
    if score < args.min_iou:
        fail(f"IoU {score:.4f} below {args.min_iou}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("wait-up")
    p.add_argument("url")
    p.add_argument("seconds", type=float)
    p.add_argument("--anonymous", action="store_true", help="send no credential (Label Studio's own /health)")
    p.set_defaults(run=cmd_wait_up)
    p = sub.add_parser("host-reference")
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=cmd_host_reference)
    p = sub.add_parser("click")
    p.add_argument("url")
    p.add_argument("--image", required=True)
    p.add_argument("--reference", type=Path)
    p.add_argument("--gt", type=Path)
    p.add_argument("--version")
    p.set_defaults(run=cmd_click)
    p = sub.add_parser("cvat-containerfile")
    p.add_argument("function", type=Path)
    p.add_argument("base")
    p.set_defaults(run=cmd_cvat_containerfile)
    p = sub.add_parser("cvat-env")
    p.add_argument("function", type=Path)
    p.set_defaults(run=cmd_cvat_env)
    p = sub.add_parser("compose-click")
    p.add_argument("--ls", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--backend-url", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--gt", type=Path, required=True)
    p.add_argument("--folder", default="grabcut", help="the sub-folder of IMAGES_DIR holding the image")
    p.add_argument("--min-iou", type=float, default=0.5)
    p.set_defaults(run=cmd_compose_click)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except CheckFailed as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
