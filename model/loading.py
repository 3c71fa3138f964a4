"""Build the predictor a spec names (:func:`load_predictor`): the baseline, random weights, or a checkpoint.

torch is imported when a predictor is built, not with this module, so command lines can name the function cheaply.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from .spec import PredictorSpec, parse_spec

if TYPE_CHECKING:
    import torch

    from .predictor import Predictor


def resolve_device(name: str | None) -> torch.device:
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def weights_version(source: str, sha256: str | None = None) -> str:
    """``<file stem>-<first 12 hex of sha256>`` for local files; the URL's stem and a hash of the URL otherwise."""
    stem = Path(urllib.parse.urlparse(source).path).stem or "weights"
    if sha256:
        return f"{stem}-{sha256[:12]}"
    if os.path.isfile(source):
        from storage.files import sha256_of

        return f"{stem}-{sha256_of(source)[:12]}"
    return f"{stem}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def load_predictor(spec: str | PredictorSpec, device: str | None = None) -> Predictor:
    """Build the predictor a spec names. ``device`` overrides the spec's ``device`` option."""
    import torch

    from .baseline import GrabCutPredictor
    from .build import build_adaptiveclick
    from .checkpoint import load_adaptiveclick
    from .fast import check_precision, default_precision, optimize_for_inference
    from .predictor import AdaptiveClickPredictor

    spec = parse_spec(spec)
    if spec.is_baseline:
        predictor = GrabCutPredictor()
        version = spec.option("version")
        if version:
            predictor.model_version = version
        return predictor
    torch_device = resolve_device(device or spec.option("device"))
    precision = spec.option("precision") or default_precision(torch_device)
    check_precision(precision, torch_device)  # before loading: a clear error on a CPU that lacks the instructions
    threads = spec.option("threads")
    if threads:
        torch.set_num_threads(int(threads))  # process-wide: torch has one CPU thread pool
    if spec.is_random:
        size = spec.random_size
        with torch.random.fork_rng(devices=[]):  # deterministic weights without touching the global RNG
            torch.manual_seed(0)
            net = build_adaptiveclick(size)
        version = f"adaptiveclick-{size}-UNTRAINED-random-init"
    else:
        net = load_adaptiveclick(spec.source, sha256=spec.option("sha256"), size=spec.option("size"))
        version = f"adaptiveclick-{net.config.name}-{weights_version(spec.source, spec.option('sha256'))}"
    net = optimize_for_inference(net.to(torch_device), precision, torch_device)
    return AdaptiveClickPredictor(
        net,
        spec.option("version") or version,
        device=torch_device,
        mode=spec.option("mode", "cvpr") or "cvpr",
        with_flip=spec.flag("flip", False),
    )
