"""The whole fine-tune loop across processes: a Label Studio export of GrabCut masks -> ``adaptiveclick finetune``
(train, validate by NoC, publish to an S3 registry on a moto server) -> a running ``adaptiveclick serve`` picks the
new version up while clients keep clicking, none of their requests failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import requests

from adaptiveclick.model import BASELINE_VERSION
from adaptiveclick.storage.registry import open_registry

from conftest import REPO, free_port, wait_for_health
from finetune_runs import finetune_command, grabcut_export
from ls_regions import click_request


def test_export_to_finetune_to_registry_to_hot_swap(data_root, tmp_path, s3_bucket):
    registry_uri = f"s3://{s3_bucket}/project-1"
    export = grabcut_export(data_root, tmp_path / "export.json", count=6)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ADAPTIVECLICK_CACHE": str(tmp_path / "c")}
    port = free_port()
    server_env = {
        **env,
        "MODEL_REGISTRY": registry_uri,
        "MODEL_REGISTRY_POLL_SECONDS": "0.5",
        "MODEL_DIR": str(tmp_path / "models"),
        "ADAPTIVECLICK_PREDICTOR": "baseline",
        "LOCAL_FILES_DOCUMENT_ROOT": str(data_root / "GrabCut" / "data_GT"),
        "LOG_LEVEL": "WARNING",
        "ADAPTIVECLICK_UNSAFE_ANONYMOUS": "media",  # anonymous clicks on local files: one user on one machine
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "adaptiveclick", "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "4"],
        cwd=REPO,
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "wb"),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_health(base, timeout=120)
        assert requests.get(f"{base}/health", timeout=30).json()["model_version"] == BASELINE_VERSION

        body = click_request("106024.jpg")
        failures, versions, stop = [], [], threading.Event()

        def click():
            while not stop.is_set():
                try:
                    response = requests.post(f"{base}/predict", json=body, timeout=120)
                except requests.RequestException as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code == 200 and response.json()["results"]:
                    versions.append(response.json()["results"][0]["model_version"])
                else:
                    failures.append((response.status_code, response.text[:300]))
                time.sleep(0.05)  # an annotator's pace, leaving the CPU to the fine-tune

        clients = [threading.Thread(target=click) for _ in range(2)]
        for c in clients:
            c.start()
        try:
            job = subprocess.run(
                finetune_command(
                    *("--steps", "2", "--val-fraction", "0.3", "--registry", registry_uri),
                    *("--version", "ft-loop", "--force"),
                    output=tmp_path / "run",
                    export=export,
                ),
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert job.returncode == 0, job.stderr[-3000:]
            gate = json.loads((tmp_path / "run" / "gate.json").read_text())
            assert gate["published"] == "ft-loop"
            assert open_registry(registry_uri).current().version == "ft-loop"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and versions.count("ft-loop") < 3:
                time.sleep(0.1)
        finally:
            stop.set()
            for c in clients:
                c.join()
        assert not failures, failures[:3]
        assert versions[0] == BASELINE_VERSION and versions[-1] == "ft-loop"
        assert requests.get(f"{base}/health", timeout=30).json()["model_version"] == "ft-loop"
        metrics = requests.get(f"{base}/metrics", timeout=30).text
        assert "adaptiveclick_model_swaps_total 1.0" in metrics
        print(
            f"requests served during the loop: {len(versions)} "
            f"({versions.count(BASELINE_VERSION)} by the baseline, {versions.count('ft-loop')} by ft-loop), "
            f"failures: {len(failures)}"
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
