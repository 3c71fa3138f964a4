"""The network a fine-tune starts from, and the weights file it produces.

Starting points (``--init``):

* a released/fine-tuned AdaptiveClick checkpoint: a path, ``http(s)://`` URL or ``s3://`` URI (optionally
  ``#sha256=...``), loaded strictly with :func:`model.load_adaptiveclick`;
* ``mae:PATH``: the ViT initialised from an MAE pre-training checkpoint, the rest random (how the paper trains);
* ``random`` (``random:base``/``random:huge``/``random:tiny``): seeded random weights. ``tiny`` is a small
  network with the same architecture for tests and smoke runs only; it is never a useful model.

The weights file is the reference layout ``{"state_dict", "config"}``; ``config["adaptiveclick_config"]`` records
the architecture, so that :func:`model.load_adaptiveclick` (and hence the backend's ``load_predictor``) rebuilds a
``tiny`` (or any non-released) network from the file alone.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from adaptiveclick.model.adaptiveclick import AdaptiveClick
from adaptiveclick.model.build import AdaptiveClickConfig, build_adaptiveclick, get_config
from adaptiveclick.model.checkpoint import (
    ARCHITECTURE_KEY,
    load_adaptiveclick,
    load_mae_backbone,
    recorded_architecture,
)
from adaptiveclick.model.spec import parse_spec
from adaptiveclick.storage.files import atomic_write

#: parameters the segmentation forward pass never uses (kept for checkpoint compatibility, frozen in training)
UNUSED_PARAMETERS = (
    "backbone.cls_token",
    "backbone.fc_norm.weight",
    "backbone.fc_norm.bias",
    "backbone.head.weight",
    "backbone.head.bias",
)


def config_from_dict(values: dict) -> AdaptiveClickConfig:
    """An architecture saved as ``asdict(AdaptiveClickConfig)`` (JSON turns its tuple into a list)."""
    return recorded_architecture({ARCHITECTURE_KEY: values})


def build_adaptiveclick_from(values: dict) -> AdaptiveClick:
    """A randomly initialised network of a recorded configuration (``asdict(AdaptiveClickConfig)``)."""
    return build_adaptiveclick(config_from_dict(values)).train()


def build_initial_network(init: str, size: str | None = None, seed: int = 0) -> tuple[AdaptiveClick, str]:
    """``(network in train mode on CPU, a description of the starting point)``."""
    init = (init or "").strip()
    if not init:
        raise ValueError("no starting point: use --init CHECKPOINT, mae:PATH or random[:SIZE]")
    if init == "random" or init.startswith("random:"):
        size = init.partition(":")[2] or size or "base"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_adaptiveclick(get_config(size))
        return net.train(), f"random:{size} (seed {seed})"
    if init.startswith("mae:"):
        source = init[len("mae:") :]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_adaptiveclick(get_config(size or "base"))
        missing, _ = load_mae_backbone(net, source)
        return net.train(), f"mae:{source} ({len(missing)} backbone keys not in MAE)"
    return load_network(init).train(), init


def load_network(source: str | Path) -> AdaptiveClick:
    """A network from a weights file written by :func:`save_weights` or any released AdaptiveClick checkpoint
    (path/URL/s3, optional ``#sha256=HEX``), in eval mode on CPU."""
    spec = parse_spec(str(source))
    return load_adaptiveclick(spec.source, sha256=spec.option("sha256"))


def freeze_unused(net: AdaptiveClick) -> None:
    """Parameters without gradient must not require one (DistributedDataParallel would wait for them)."""
    params = dict(net.named_parameters())
    for name in UNUSED_PARAMETERS:
        params[name].requires_grad_(False)


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, then rename over it: a crash at any moment
    leaves either the previous file or the new one, never a truncated one."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def save_weights(net: AdaptiveClick, path: str | Path, info: dict | None = None) -> Path:
    """Write the serving weights file ``{"state_dict", "config"}`` atomically."""
    config = {ARCHITECTURE_KEY: asdict(net.config), **(info or {})}
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    atomic_torch_save({"state_dict": state, "config": config}, path)
    return Path(path)
