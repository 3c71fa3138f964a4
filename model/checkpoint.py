"""Loading AdaptiveClick and MAE weights from a path, an http(s) URL or ``s3://bucket/key``.

Files are read with ``torch.load(weights_only=True)``: no code in a checkpoint ever runs. Released AdaptiveClick
checkpoints are ``{"state_dict": ..., "config": ...}`` where the config was pickled with a few helper classes of the
training code (EasyDict, fvcore/yacs CfgNode, pathlib paths); those are read back as plain dicts and strings through
allow-listed stand-ins instead of the original classes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import urllib.parse
import urllib.request
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from adaptiveclick.storage.files import atomic_write, sha256_of
from adaptiveclick.storage.paths import cache_dir

from .adaptiveclick import AdaptiveClick
from .build import CONFIGS, AdaptiveClickConfig, build_adaptiveclick
from .vit import resize_pos_embed

log = logging.getLogger(__name__)

#: key of the checkpoint config under which fine-tuned weights record their architecture (``asdict`` of the config)
ARCHITECTURE_KEY = "adaptiveclick_config"


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the network."""


class _ConfigDict:
    """Stand-in for the dict subclasses found in reference checkpoint configs (EasyDict, CfgNode).

    The restricted unpickler only fills plain dict types, so this "class" creates an OrderedDict.
    """

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


def _path_from_parts(*parts: str) -> str:
    return os.path.join(*parts) if parts else ""


_CONFIG_STAND_INS = [
    (_ConfigDict, "easydict.EasyDict"),
    (_ConfigDict, "fvcore.common.config.CfgNode"),
    (_ConfigDict, "yacs.config.CfgNode"),
    (_ConfigDict, "addict.addict.Dict"),
    (_path_from_parts, "pathlib.PosixPath"),
    (_path_from_parts, "pathlib.WindowsPath"),
    (_path_from_parts, "pathlib.Path"),
]


def fetch_weights(source: str | Path, sha256: str | None = None) -> Path:
    """A local path for ``source`` (downloaded once into the cache for URLs and s3 URIs), checked against
    ``sha256`` when given."""
    source = str(source)
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https", "s3"):
        name = hashlib.sha256(source.encode()).hexdigest()[:16] + "-" + Path(urllib.parse.urlparse(source).path).name
        local = cache_dir() / name
        if local.exists() and sha256 and sha256_of(local) != sha256.lower():
            local.unlink()
        if not local.exists():
            log.info("downloading weights", extra={"source": source, "to": str(local)})
            atomic_write(local, lambda out: _download(source, scheme, out))
    else:
        local = Path(source).expanduser()
        if not local.is_file():
            raise CheckpointError(f"checkpoint {source!r} does not exist or is not a file")
    if sha256:
        actual = sha256_of(local)
        if actual != sha256.lower():
            if scheme in ("http", "https", "s3"):
                local.unlink(missing_ok=True)
            raise CheckpointError(f"sha256 mismatch for {source}: expected {sha256.lower()}, got {actual}")
    return local


def _download(source: str, scheme: str, out) -> None:
    if scheme == "s3":
        import boto3  # only needed for s3:// sources

        parsed = urllib.parse.urlparse(source)
        try:
            boto3.client("s3").download_fileobj(parsed.netloc, parsed.path.lstrip("/"), out)
        except Exception as exc:  # botocore raises many types; the message is what the user needs
            raise CheckpointError(f"cannot download {source}: {exc}") from exc
        return
    try:
        with urllib.request.urlopen(source, timeout=60) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot download {source}: {exc}") from exc


def read_checkpoint(source: str | Path | io.BytesIO, sha256: str | None = None) -> Any:
    """``torch.load(weights_only=True)`` of a path/URL/s3 URI, with reference-config stand-ins allowed."""
    target = source if isinstance(source, io.BytesIO) else fetch_weights(source, sha256)
    try:
        with torch.serialization.safe_globals(_CONFIG_STAND_INS):
            return torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {source}: {exc}") from exc


def split_checkpoint(obj: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, config)`` from the reference layout ``{"state_dict", "config"}``, a ``{"model": ...}``
    wrapper, or a plain state_dict."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return dict(obj["state_dict"]), dict(obj.get("config") or {})
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return dict(obj["model"]), {}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), {}
    raise CheckpointError("not a checkpoint: expected a state_dict or a dict with 'state_dict'")


def infer_size(state_dict: dict[str, torch.Tensor]) -> str:
    """Which released configuration a state_dict belongs to, from its backbone width."""
    weight = state_dict.get("backbone.patch_embed.proj.weight")
    if weight is None:
        raise CheckpointError("not an AdaptiveClick checkpoint: no 'backbone.patch_embed.proj.weight'")
    for name, cfg in CONFIGS.items():
        if weight.shape[0] == cfg.embed_dim and weight.shape[-1] == cfg.patch_size:
            return name
    raise CheckpointError(f"unknown backbone: patch embedding of shape {tuple(weight.shape)}")


def describe_mismatch(net: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    """Readable description of missing/unexpected keys and wrong shapes, or None when the state_dict fits."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if not (missing or unexpected or wrong):
        return None

    def show(keys, limit=8):
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {show(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {show(unexpected)}")
    if wrong:
        shapes = [f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}" for k in wrong]
        parts.append(f"{len(wrong)} keys with wrong shapes: {show(shapes, 4)}")
    return "; ".join(parts)


def recorded_architecture(config: dict) -> AdaptiveClickConfig | None:
    """The architecture a checkpoint written by fine-tuning records in its config, None for released ones."""
    values = config.get(ARCHITECTURE_KEY) if isinstance(config, dict) else None
    if not isinstance(values, dict):
        return None
    try:
        return AdaptiveClickConfig(**{**values, "fpn_dims": tuple(values["fpn_dims"])})
    except (TypeError, KeyError) as exc:
        raise CheckpointError(f"unreadable {ARCHITECTURE_KEY} in checkpoint config: {exc}") from None


def load_adaptiveclick(source: str | Path, sha256: str | None = None, size: str | None = None) -> AdaptiveClick:
    """Build the network that fits a checkpoint and load it strictly (eval mode, CPU).

    The architecture is ``size`` if given, else the one recorded in the checkpoint's config by fine-tuning (which
    may be a small test network), else the released configuration the backbone width identifies."""
    state_dict, config = split_checkpoint(read_checkpoint(source, sha256))
    net = build_adaptiveclick(size or recorded_architecture(config) or infer_size(state_dict))
    problem = describe_mismatch(net, state_dict)
    if problem:
        raise CheckpointError(f"checkpoint {source} does not fit AdaptiveClick-{net.config.name}: {problem}")
    net.load_state_dict(state_dict, strict=True)
    return net.eval()


def load_mae_backbone(net: AdaptiveClick, source: str | Path, sha256: str | None = None) -> tuple[list, list]:
    """Initialise the ViT from an MAE pre-training checkpoint (``mae_pretrain_vit_*.pth``).

    The position embedding is resized from the pre-training grid to the network's; keys MAE lacks (``fc_norm``,
    ``head``) keep their initialisation. Returns ``(missing, unexpected)`` key lists.
    """
    state_dict, _ = split_checkpoint(read_checkpoint(source, sha256))
    state_dict = {k.removeprefix("backbone."): v for k, v in state_dict.items()}
    backbone = net.backbone
    if "pos_embed" in state_dict:
        state_dict["pos_embed"] = resize_pos_embed(state_dict["pos_embed"], backbone.grid_size)
    own = backbone.state_dict()
    wrong = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if wrong:
        raise CheckpointError(f"MAE checkpoint {source} does not fit this backbone: wrong shapes for {wrong[:5]}")
    result = backbone.load_state_dict(state_dict, strict=False)
    if not any(k in own for k in state_dict):
        raise CheckpointError(f"MAE checkpoint {source} shares no keys with the ViT backbone")
    return list(result.missing_keys), list(result.unexpected_keys)
