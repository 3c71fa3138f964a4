"""Predictor specs: one string that says which predictor to run and how.

``SOURCE[#option=value,option=value...]`` where SOURCE is

* ``baseline``: the embedded GrabCut predictor (no weights needed);
* a checkpoint path, an ``http(s)://`` URL or an ``s3://bucket/key`` URI (AdaptiveClick weights);
* ``random:base`` / ``random:huge``: an untrained, randomly initialised AdaptiveClick, for benchmarks only; its
  model version says it is untrained.

Options (all optional): ``device`` (``cpu``, ``cuda``, ``cuda:1``, ``auto``), ``mode`` (``cvpr``/``plain``),
``flip`` (``0``/``1``), ``size`` (``base``/``huge``), ``sha256`` (expected hash of the weights file),
``version`` (model version to report instead of the derived one), ``precision`` (``fp32``, ``bf16``, ``int8``: the
arithmetic of the heavy layers, see :mod:`model.fast`; default: the fastest one that runs natively and has shown
parity with fp32, see ``model.fast.optimize.PARITY_MET``; fp32 on GPUs), ``threads`` (CPU threads for torch, default: torch's choice, one per core).
The fragment separator ``#`` never reaches a server, so URLs stay intact.
"""
from __future__ import annotations

import hashlib
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .predictor import EVAL_MODES, Predictor

BASELINE = "baseline"
RANDOM_PREFIX = "random:"
KNOWN_OPTIONS = ("device", "mode", "flip", "size", "sha256", "version", "precision", "threads")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class PredictorSpec:
    source: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        return self.source == BASELINE

    @property
    def is_random(self) -> bool:
        return self.source.startswith(RANDOM_PREFIX)

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def flag(self, name: str, default: bool) -> bool:
        value = self.options.get(name)
        if value is None:
            return default
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise ValueError(f"predictor option {name}={value!r} must be 0 or 1")

    def __str__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.source}#{opts}" if opts else self.source


def parse_spec(spec: str | PredictorSpec) -> PredictorSpec:
    """Parse and validate a spec string (see the module docstring)."""
    if isinstance(spec, PredictorSpec):
        return spec
    spec = (spec or "").strip()
    if not spec:
        raise ValueError("empty predictor spec: use 'baseline' or a checkpoint path/URL/s3 URI")
    source, _, fragment = spec.partition("#")
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in fragment.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not value.strip():
            raise ValueError(f"predictor option {item!r} must look like name=value")
        if key not in KNOWN_OPTIONS:
            raise ValueError(f"unknown predictor option {key!r}; known: {', '.join(KNOWN_OPTIONS)}")
        options[key] = value.strip()
    parsed = PredictorSpec(source.strip(), options)
    mode = parsed.option("mode", "cvpr")
    if mode not in EVAL_MODES:
        raise ValueError(f"predictor option mode={mode!r}: expected one of {', '.join(EVAL_MODES)}")
    if parsed.is_random and parsed.source[len(RANDOM_PREFIX):] not in ("base", "huge"):
        raise ValueError(f"{parsed.source!r}: expected random:base or random:huge")
    from .fast import PRECISIONS

    if parsed.option("precision", "fp32") not in PRECISIONS:
        raise ValueError(f"predictor option precision={parsed.option('precision')!r}: expected one of "
                         f"{', '.join(PRECISIONS)}")
    threads = parsed.option("threads", "1")
    if not threads.isdigit() or int(threads) < 1:
        raise ValueError(f"predictor option threads={threads!r}: expected a whole number >= 1")
    return parsed


def resolve_device(name: str | None) -> torch.device:
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
        from .checkpoint import sha256_of

        return f"{stem}-{sha256_of(source)[:12]}"
    return f"{stem}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def load_predictor(spec: str | PredictorSpec, device: str | None = None) -> Predictor:
    """Build the predictor a spec names. ``device`` overrides the spec's ``device`` option."""
    from .baseline import GrabCutPredictor
    from .build import build_adaptiveclick
    from .checkpoint import load_adaptiveclick
    from .fast import check_precision, default_precision, optimize_for_inference
    from .predictor import AdaptiveClickPredictor

    spec = parse_spec(spec)
    if spec.is_baseline:
        predictor = GrabCutPredictor()
        if spec.option("version"):
            predictor.model_version = spec.option("version")
        return predictor
    torch_device = resolve_device(device or spec.option("device"))
    precision = spec.option("precision") or default_precision(torch_device)
    check_precision(precision, torch_device)  # before loading: a clear error on a CPU that lacks the instructions
    if spec.option("threads"):
        torch.set_num_threads(int(spec.option("threads")))  # process-wide: torch has one CPU thread pool
    if spec.is_random:
        size = spec.source[len(RANDOM_PREFIX):]
        with torch.random.fork_rng(devices=[]):  # deterministic weights without touching the global RNG
            torch.manual_seed(0)
            net = build_adaptiveclick(size)
        version = f"adaptiveclick-{size}-UNTRAINED-random-init"
    else:
        net = load_adaptiveclick(spec.source, sha256=spec.option("sha256"), size=spec.option("size"))
        version = f"adaptiveclick-{net.config.name}-{weights_version(spec.source, spec.option('sha256'))}"
    net = optimize_for_inference(net.to(torch_device), precision, torch_device)
    return AdaptiveClickPredictor(net, spec.option("version") or version, device=torch_device,
                                  mode=spec.option("mode", "cvpr"), with_flip=spec.flag("flip", False))
