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
    from collections.abc import Callable, Sequence

    import torch

    from .predictor import Predictor

    #: a torch fp32 predictor of the weights -> ``(image_tokens, maps)`` network inputs of real clicks
    Calibration = Callable[[Predictor], Sequence[tuple[torch.Tensor, torch.Tensor]]]


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
        from adaptiveclick.storage.files import sha256_of

        return f"{stem}-{sha256_of(source)[:12]}"
    return f"{stem}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def load_predictor(
    spec: str | PredictorSpec, device: str | None = None, calibration: Calibration | None = None
) -> Predictor:
    """Build the predictor a spec names. ``device`` overrides the spec's ``device`` option.

    ``calibration`` serves ``engine=openvino,precision=int8-static`` when its calibrated model is not cached yet:
    given a torch fp32 predictor of the same weights, it returns the network inputs of real clicks
    (``benchmarks.openvino_prepare`` drives the NoC clicker on GrabCut with it).
    """
    import torch

    from .baseline import GrabCutPredictor
    from .build import build_adaptiveclick
    from .checkpoint import load_adaptiveclick

    spec = parse_spec(spec)
    if spec.is_baseline:
        predictor = GrabCutPredictor()
        version = spec.option("version")
        if version:
            predictor.model_version = version
        return predictor
    torch_device = resolve_device(device or spec.option("device"))
    named_variant(spec, torch_device)  # before loading: a clear error on a CPU that lacks the instructions
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
    return predictor_for_network(net, spec, spec.option("version") or version, torch_device, calibration=calibration)


def named_variant(spec: PredictorSpec, device: torch.device) -> tuple[str, str] | None:
    """``(engine, precision)`` when the spec names either (the other one defaulted), checked to run natively on
    ``device`` (ValueError with the reason); None when it names neither (the default is chosen per network)."""
    from .fast import default_precision, variant_support

    engine, precision = spec.option("engine"), spec.option("precision")
    if not (engine or precision):
        return None
    engine = engine or "torch"
    precision = precision or ("fp32" if engine == "openvino" else default_precision(device))
    reason = variant_support(engine, precision, device)
    if reason:
        prefix = "engine=openvino," if engine == "openvino" else ""
        raise ValueError(f"{prefix}precision={precision} is not available: {reason}")
    return engine, precision


def predictor_for_network(
    net, spec: PredictorSpec, version: str, device: torch.device, calibration: Calibration | None = None
):
    """The predictor of ``net`` (a float32 :class:`model.AdaptiveClick`, converted in place) run as ``spec`` says:
    engine, precision, threads, mode, flip; without engine and precision, the default variant for the network
    (:func:`model.fast.default_variant`)."""
    from .fast import default_variant, optimize_for_inference
    from .predictor import AdaptiveClickPredictor

    engine, precision = named_variant(spec, device) or default_variant(device, net.config.name)
    options = {"mode": spec.option("mode", "cvpr") or "cvpr", "with_flip": spec.flag("flip", False)}
    if engine != "openvino":
        net = optimize_for_inference(net.to(device), precision, device)
        return AdaptiveClickPredictor(net, version, device=device, **options)
    from .engine import load_openvino_engine
    from .engine.calibration import CALIBRATION_RECIPE

    net = optimize_for_inference(net.to(device), "fp32", device)  # the torch half: image tokens and click maps
    threads = spec.option("threads")
    compiled = load_openvino_engine(
        net,
        weights_key(spec, net),
        precision,
        threads=int(threads) if threads else None,
        calibration=(lambda: calibration(AdaptiveClickPredictor(net, version))) if calibration else None,
        calibration_recipe=CALIBRATION_RECIPE,
    )
    return AdaptiveClickPredictor(net, version, device=device, engine=compiled, **options)


def weights_key(spec: PredictorSpec, net) -> str:
    """What names the weights in the OpenVINO engine's cache: the checkpoint file's sha256; for untrained
    ``random:SIZE`` weights, a hash of the state_dict."""
    if spec.is_random:
        from .engine.ir_cache import state_dict_key

        return state_dict_key(net)
    if spec.option("sha256"):
        return spec.option("sha256").lower()  # checked against the file by load_adaptiveclick
    from adaptiveclick.storage.files import sha256_of

    from .checkpoint import fetch_weights

    return sha256_of(fetch_weights(spec.source))
