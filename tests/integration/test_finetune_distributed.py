"""finetune.distributed: single-process no-ops, and a real 2-process torchrun (gloo on CPU) staying in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaptiveclick.finetune.distributed import (
    DistributedContext,
    gather_objects,
    init_distributed,
    mean_over_processes,
    parameter_fingerprint,
    resolve_device,
)

from finetune_runs import finetune_command

REPO = Path(__file__).resolve().parents[2]


def test_without_torchrun_everything_is_local(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert context == DistributedContext(0, 1, 0, torch.device("cpu")) and context.is_main and not context.enabled
    assert mean_over_processes({"loss": 2.0}, context) == {"loss": 2.0}
    assert gather_objects("x", context) == ["x"]


def test_fingerprint_follows_the_weights():
    net = torch.nn.Linear(3, 2)
    before = parameter_fingerprint(net)
    assert parameter_fingerprint(net) == before
    with torch.no_grad():
        net.bias[0] += 1e-6
    assert parameter_fingerprint(net) != before


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


def test_two_cpu_processes_under_torchrun_stay_in_sync(data_root, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run_options = ["--steps", "3", "--checkpoint-every", "1", "--val-max-images", "2"]
    single = finetune_command(*run_options, output=out, data_root=data_root)
    # torchrun takes the same `-m adaptiveclick finetune ...` that python would run
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *single[1:]]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in entries if e["kind"] == "train"]
    syncs = [e for e in entries if e["kind"] == "sync"]
    assert [e["step"] for e in train] == [1, 2, 3]
    # each process trains on its own crops: different losses, averaged for the log
    assert all(len(e["rank_loss"]) == 2 and e["rank_loss"][0] != e["rank_loss"][1] for e in train)
    assert all(e["loss"] == pytest.approx(sum(e["rank_loss"]) / 2) for e in train)
    # ... and both hold identical weights after every step, weights that do change
    assert [e["step"] for e in syncs] == [1, 2, 3]
    assert all(len(e["fingerprints"]) == 2 and len(set(e["fingerprints"])) == 1 for e in syncs)
    assert len({e["fingerprints"][0] for e in syncs}) == 3
    val = [e for e in entries if e["kind"] == "val"]
    assert len(val) == 1 and val[0]["instances"] == 2  # validation samples split over the two processes
    assert (out / "model.pth").is_file()
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["training"]["world_size"] == 2 and summary["training"]["steps"] == 3
