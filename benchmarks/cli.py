"""Print latency and speed figures. Each benchmark measures its variants side by side in one run.

  predictor  per-click latency of predictors (baseline, AdaptiveClick) on GrabCut images
  http       per-click /predict latency over HTTP vs the bare predictor; brush RLE vs label-studio-sdk
  msda       multi-scale deformable attention: compiled CPU/CUDA kernels vs the PyTorch reference
  cpu        AdaptiveClick per-click latency on the CPU: fp32 eager vs the int8/bf16 variants (+ peak memory)
  cpu-parity optimised CPU variants vs fp32 eager on NoC click sequences (probabilities, masks, IoU curves)
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from .common import default_datasets_root

# name -> module (with add_arguments(parser) and main(args)) under benchmarks/
BENCHMARKS = {
    "predictor": "benchmarks.predictor_latency",
    "http": "benchmarks.http_backend",
    "msda": "benchmarks.msda",
    "cpu": "benchmarks.cpu_inference",
    "cpu-parity": "benchmarks.cpu_parity",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding GrabCut/ and Berkeley/ (default: $ADAPTIVECLICK_DATASETS or "
                             "../shared/datasets)")
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        bench = sub.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0])
        module.add_arguments(bench)
        bench.set_defaults(_bench=module.main)


def run(args: argparse.Namespace) -> int:
    args.data_root = args.data_root or default_datasets_root()
    return args._bench(args)
