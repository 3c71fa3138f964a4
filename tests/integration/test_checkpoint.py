"""Checkpoint loading: reference layout, plain state_dicts, URLs with sha256, s3, MAE init, readable errors."""

from __future__ import annotations

import hashlib
import pathlib
import sys
import types

import pytest
import torch

from adaptiveclick.model import (
    CheckpointError,
    build_adaptiveclick,
    load_adaptiveclick,
    load_mae_backbone,
    load_predictor,
)
from adaptiveclick.model.checkpoint import read_checkpoint, split_checkpoint


class EasyDict(dict):
    """Pickles like easydict.EasyDict: a dict subclass whose items are mirrored as attributes."""

    def __init__(self, d=None):
        super().__init__()
        for k, v in (d or {}).items():
            setattr(self, k, v)

    def __setattr__(self, k, v):
        super().__setattr__(k, v)
        super().__setitem__(k, v)


@pytest.fixture(scope="module")
def base_state():
    torch.manual_seed(3)
    return build_adaptiveclick("base").state_dict()


@pytest.fixture()
def reference_layout_file(tmp_path, base_state, monkeypatch):
    """A checkpoint saved the way the reference trainer saves it: {"state_dict", "config"} whose config holds
    EasyDict, pathlib and torch.device objects."""
    module = types.ModuleType("easydict")
    EasyDict.__module__ = "easydict"
    module.EasyDict = EasyDict
    monkeypatch.setitem(sys.modules, "easydict", module)
    cfg = EasyDict(
        {
            "MODEL": EasyDict({"BACKBONE": EasyDict({"EMBED_DIM": 768})}),
            "EXPS_PATH": pathlib.PosixPath("/exps"),
            "device": torch.device("cpu"),
            "crop_size": (448, 448),
        }
    )
    config = {
        "class": "isegm.model.is_adaptiveclick_model.AdaptiveClickModel",
        "params": {"cfg": {"type": "builtin", "value": cfg, "specified": True}},
    }
    path = tmp_path / "adaptiveclick_base448_sbd.pth"
    torch.save({"state_dict": base_state, "config": config}, path)
    return path


def test_reference_layout_loads_strictly_without_unpickling_code(reference_layout_file, base_state):
    net = load_adaptiveclick(reference_layout_file)
    assert net.config.name == "base"
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], base_state[k]) for k in base_state)
    state, config = split_checkpoint(read_checkpoint(reference_layout_file))
    assert config["params"]["cfg"]["value"]["MODEL"]["BACKBONE"]["EMBED_DIM"] == 768
    assert config["params"]["cfg"]["value"]["EXPS_PATH"] == "/exps"


def test_plain_state_dict_loads(tmp_path, base_state):
    path = tmp_path / "plain.pth"
    torch.save(base_state, path)
    assert load_adaptiveclick(path).config.name == "base"


def test_incompatible_checkpoint_names_missing_and_unexpected_keys(tmp_path, base_state):
    broken = dict(base_state)
    broken.pop("click_aware_decoder.class_embed.weight")
    broken["extra.head.weight"] = torch.zeros(1)
    broken["backbone.fc_norm.weight"] = torch.zeros(5)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": broken}, path)
    with pytest.raises(CheckpointError) as info:
        load_adaptiveclick(path)
    message = str(info.value)
    assert "1 missing keys: click_aware_decoder.class_embed.weight" in message
    assert "1 unexpected keys: extra.head.weight" in message
    assert "backbone.fc_norm.weight (5,) != (768,)" in message


def test_code_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pth"

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(path)


def test_not_a_checkpoint_and_missing_file(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError):
        load_adaptiveclick(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_adaptiveclick(tmp_path / "absent.pth")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an AdaptiveClick checkpoint"):
        load_adaptiveclick(tmp_path / "other.pth")


def test_http_url_with_sha256(http_dir, base_state, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTIVECLICK_CACHE", str(tmp_path / "cache"))
    root, url = http_dir
    torch.save({"state_dict": base_state}, root / "w.pth")
    digest = hashlib.sha256((root / "w.pth").read_bytes()).hexdigest()
    predictor = load_predictor(f"{url}/w.pth#sha256={digest}")
    assert predictor.model_version == f"adaptiveclick-base-w-{digest[:12]}"
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_adaptiveclick(f"{url}/w.pth", sha256="0" * 64)
    with pytest.raises(CheckpointError, match="cannot download"):
        load_adaptiveclick(f"{url}/absent.pth")


def test_s3_uri(s3_bucket, base_state, tmp_path, monkeypatch):
    import boto3

    monkeypatch.setenv("ADAPTIVECLICK_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "w.pth"
    torch.save(base_state, path)
    boto3.client("s3").upload_file(str(path), s3_bucket, "models/w.pth")
    net = load_adaptiveclick(f"s3://{s3_bucket}/models/w.pth")
    assert torch.equal(net.state_dict()["backbone.pos_embed"], base_state["backbone.pos_embed"])
    with pytest.raises(CheckpointError, match="cannot download"):
        load_adaptiveclick(f"s3://{s3_bucket}/models/absent.pth")


def test_mae_init_interpolates_position_embedding(tmp_path):
    torch.manual_seed(0)
    mae = {
        k: v
        for k, v in build_adaptiveclick("base").backbone.state_dict().items()
        if not k.startswith(("fc_norm", "head"))
    }
    mae["pos_embed"] = torch.randn(1, 1 + 14 * 14, 768)  # pre-trained at 224 px
    mae["norm.weight"], mae["norm.bias"] = torch.ones(768), torch.zeros(768)  # MAE's final norm, unused here
    torch.save({"model": mae}, tmp_path / "mae_pretrain_vit_base.pth")
    net = build_adaptiveclick("base")
    missing, unexpected = load_mae_backbone(net, tmp_path / "mae_pretrain_vit_base.pth")
    assert sorted(missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert sorted(unexpected) == ["norm.bias", "norm.weight"]
    assert net.backbone.pos_embed.shape == (1, 1 + 28 * 28, 768)
    assert torch.equal(net.backbone.blocks[3].mlp.fc1.weight, mae["blocks.3.mlp.fc1.weight"])
    torch.save({"model": {"pos_embed": torch.zeros(1, 1 + 14 * 14, 1280)}}, tmp_path / "huge.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_mae_backbone(net, tmp_path / "huge.pth")
