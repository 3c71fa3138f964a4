"""finetune.network: starting points, the weights file and atomic saving."""

from __future__ import annotations

import os

import pytest
import torch

from adaptiveclick.finetune.network import (
    UNUSED_PARAMETERS,
    atomic_torch_save,
    build_initial_network,
    freeze_unused,
    load_network,
    save_weights,
)
from adaptiveclick.model import CheckpointError, build_adaptiveclick
from adaptiveclick.model.build import TINY_CONFIG


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_starts_are_seeded():
    a, description = build_initial_network("random:tiny", seed=3)
    b, _ = build_initial_network("random", size="tiny", seed=3)
    c, _ = build_initial_network("random:tiny", seed=4)
    assert a.training and a.config == TINY_CONFIG and description == "random:tiny (seed 3)"
    assert same_weights(a, b) and not same_weights(a, c)
    with pytest.raises(ValueError, match="unknown AdaptiveClick size"):
        build_initial_network("random:giant")
    with pytest.raises(ValueError, match="starting point"):
        build_initial_network("")


def test_weights_file_round_trip_and_hash_pinning(tmp_path):
    from adaptiveclick.storage.files import sha256_of

    net, _ = build_initial_network("random:tiny", seed=1)
    path = save_weights(net, tmp_path / "model.pth", {"finetune": {"steps": 3}})
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # an ordinary file, not mkstemp's private one
    loaded = load_network(path)
    assert not loaded.training and loaded.config == TINY_CONFIG and same_weights(net, loaded)
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["finetune"] == {"steps": 3} and raw["config"]["adaptiveclick_config"]["name"] == "tiny"
    assert same_weights(net, load_network(f"{path}#sha256={sha256_of(path)}"))
    with pytest.raises(CheckpointError, match="sha256"):
        load_network(f"{path}#sha256={'0' * 64}")
    resumed, description = build_initial_network(str(path))
    assert same_weights(net, resumed) and resumed.training and description == str(path)


def test_released_layout_loads_through_the_model_loader(tmp_path):
    """A checkpoint without the recorded architecture (the released files) goes through load_adaptiveclick."""
    net, _ = build_initial_network("random:tiny")
    torch.save({"state_dict": net.state_dict(), "config": {}}, tmp_path / "released.pth")
    with pytest.raises(CheckpointError, match="unknown backbone"):
        load_network(tmp_path / "released.pth")  # tiny is no released size


def test_mismatching_architecture_is_reported(tmp_path):
    net, _ = build_initial_network("random:tiny")
    state = net.state_dict()
    state.pop("backbone.pos_embed")
    torch.save({"state_dict": state, "config": {"adaptiveclick_config": vars(TINY_CONFIG) | {}}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_network(tmp_path / "x.pth")


def test_mae_initialisation_sets_the_backbone(tmp_path):
    donor = build_adaptiveclick(TINY_CONFIG)
    mae = {k: v + 1.0 for k, v in donor.backbone.state_dict().items() if not k.startswith(("head", "fc_norm"))}
    torch.save({"model": mae}, tmp_path / "mae.pth")
    net, description = build_initial_network(f"mae:{tmp_path / 'mae.pth'}", size="tiny")
    assert torch.equal(net.backbone.blocks[0].attn.qkv.weight, mae["blocks.0.attn.qkv.weight"])
    assert description.startswith("mae:") and "4 backbone keys not in MAE" in description


def test_freeze_unused():
    net, _ = build_initial_network("random:tiny")
    freeze_unused(net)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == set(UNUSED_PARAMETERS)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "state.pt"
    atomic_torch_save({"step": 1}, target)

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert os.listdir(tmp_path) == ["state.pt"]


def test_the_backend_loader_serves_fine_tuned_weights(tmp_path):
    """model.load_predictor (what the backend uses) rebuilds the recorded architecture: the full loop can run on
    a tiny network in CI. (Uses the small model/checkpoint.py change that reads ``adaptiveclick_config``.)"""
    import numpy as np

    from adaptiveclick.model import load_predictor

    net, _ = build_initial_network("random:tiny", seed=2)
    path = save_weights(net, tmp_path / "model.pth")
    predictor = load_predictor(f"{path}#version=ft-test,device=cpu")
    assert predictor.model_version == "ft-test" and same_weights(net, predictor.net)
    predictor.set_image(np.zeros((40, 50, 3), np.uint8))
    assert predictor.predict([(10, 10, True)]).shape == (40, 50)
