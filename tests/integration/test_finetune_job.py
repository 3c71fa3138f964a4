"""finetune.job: Label Studio export -> train -> gate -> S3 registry; kill -9 and resume; refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from adaptiveclick.finetune.config import TrainConfig
from adaptiveclick.finetune.gate import is_better
from adaptiveclick.finetune.job import JobError, JobOptions, run_job
from adaptiveclick.finetune.network import load_network
from adaptiveclick.model.spec import pinned_spec
from adaptiveclick.storage.registry import open_registry

from finetune_runs import finetune_command, grabcut_export

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_options(output: Path, seed: int = 0, **overrides) -> JobOptions:
    train = TrainConfig(batch_size=1, crop_size=96, checkpoint_every=2, val_clicks=2, seed=seed)
    values = dict(
        output=output,
        train=train,
        steps=2,
        init="random:tiny",
        val_fraction=0.3,
        val_max_images=1,
        device="cpu",
        workers=0,
        progress=False,
    )
    values.update(overrides)
    return JobOptions(**values)


def test_label_studio_export_trains_gates_and_publishes_to_s3(data_root, tmp_path, s3_bucket, monkeypatch):
    monkeypatch.setenv("ADAPTIVECLICK_CACHE", str(tmp_path / "cache"))
    export = grabcut_export(data_root, tmp_path / "export.json")
    registry_uri = f"s3://{s3_bucket}/project-1"

    first = run_job(
        small_options(tmp_path / "run1", ls_exports=[export], registry=registry_uri, force=True, version="v1")
    )
    assert first["images"]["train"] + first["images"]["val"] == 8 and first["images"]["val"] >= 1
    assert first["gate"]["published"] == "v1" and first["gate"]["publish"]
    registry = open_registry(registry_uri)
    v1 = registry.current()
    assert v1.version == "v1" and v1.metrics["noc90"] == first["gate"]["candidate"]["noc90"]
    assert v1.metrics["gate"]["compared_with"].startswith("starting weights: random:tiny")
    assert v1.metrics["training"]["steps"] == 2 and v1.config["train"]["crop_size"] == 96
    served = load_network(pinned_spec(v1.weights_uri, v1.sha256))
    trained = torch.load(tmp_path / "run1" / "model.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(served.state_dict()[k], trained[k]) for k in trained)
    status = json.loads((tmp_path / "run1" / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 2
    manifest = json.loads((tmp_path / "run1" / "data" / "manifest.json").read_text())
    assert manifest["report"]["tasks_used"] == 8

    again = run_job(small_options(tmp_path / "run1", resume=True, registry=registry_uri))
    assert again["gate"]["published"] == "v1" and [v.version for v in registry.list_versions()] == ["v1"]

    second = run_job(
        small_options(tmp_path / "run2", ls_exports=[export], registry=registry_uri, init="registry", seed=1)
    )
    gate = second["gate"]
    assert gate["current_name"] == "base/v1"
    assert gate["publish"] == is_better(gate["candidate"], gate["current"])
    expected = gate["published"] if gate["publish"] else "v1"
    assert registry.current().version == expected
    assert json.loads((tmp_path / "run2" / "gate.json").read_text())["current_name"] == "base/v1"


def test_a_run_is_never_overwritten_and_needs_data_and_a_start(data_root, tmp_path):
    with pytest.raises(JobError, match="no training data"):
        run_job(small_options(tmp_path / "a"))
    with pytest.raises(JobError, match="starting point"):
        run_job(small_options(tmp_path / "b", datasets=["GrabCut"], data_root=data_root, init=""))
    run_job(small_options(tmp_path / "c", datasets=["GrabCut"], data_root=data_root, steps=1))
    with pytest.raises(JobError, match="--resume"):
        run_job(small_options(tmp_path / "c", datasets=["GrabCut"], data_root=data_root))
    assert json.loads((tmp_path / "c" / "status.json").read_text())["state"] == "finished"


def test_kill_9_mid_run_then_resume_finishes_like_an_uninterrupted_run(data_root, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    steps = ["--steps", "8", "--checkpoint-every", "2"]
    run = subprocess.Popen(
        finetune_command(*steps, output=tmp_path / "killed", data_root=data_root),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        status = _status(tmp_path / "killed")
        if checkpoint.exists() and status.get("step", 0) >= 3:
            break
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before it could be killed: " + run.stderr.read().decode()[-2000:]
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    killed_at = _status(tmp_path / "killed")["step"]
    assert 3 <= killed_at < 8 and torch.load(checkpoint, weights_only=True)["step"] in (2, 4, 6)

    resumed = subprocess.run(
        finetune_command("--resume", output=tmp_path / "killed", data_root=data_root),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = subprocess.run(
        finetune_command(*steps, output=tmp_path / "straight", data_root=data_root),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    a = torch.load(tmp_path / "killed" / "model.pth", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "straight" / "model.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    entries = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries if e["kind"] == "train"] == list(range(1, 9))
    assert _status(tmp_path / "killed")["state"] == "finished"


def _status(out: Path) -> dict:
    try:
        return json.loads((out / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
