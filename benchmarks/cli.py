"""Print latency and speed figures. Each benchmark measures its variants side by side in one run.

predictor  per-click latency of predictors (baseline, AdaptiveClick) on GrabCut images
http       per-click /predict latency over HTTP vs the bare predictor; brush RLE vs label-studio-sdk
msda       multi-scale deformable attention: compiled CPU/CUDA kernels vs the PyTorch reference
cpu        AdaptiveClick per-click latency on the CPU: fp32 eager vs the int8/bf16 variants (+ peak memory)
cpu-parity optimised CPU variants vs fp32 eager on NoC click sequences (probabilities, masks, IoU curves)
load       concurrent clients against the HTTP backend: p50/p95, throughput, memory
polygons   masks as Label Studio polygons: round-trip IoU, vertices and ms per mask on GrabCut and Berkeley
boxes      what a box gives: box-to-mask IoU vs ground truth, ms per box, batching, the annotate job's tasks/min
projects   many projects on one backend: memory per loaded model, swap and rollback times, a pool of 1 vs 2
openvino-prepare  OpenVINO engines made ahead of time (export, int8-static calibration, compile) into the cache
gpu        the GPU check: CUDA kernel build, gpu tests, MSDA, per-click and HTTP latency, sessions, memory, fine-tune
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

# name -> (module under benchmarks/ with add_arguments(parser) and main(args), one-line help); only the chosen
# benchmark's module is imported
BENCHMARKS = {
    "predictor": ("adaptiveclick.benchmarks.predictor_latency", "per-click latency of predictors on GrabCut images"),
    "http": (
        "adaptiveclick.benchmarks.http_backend",
        "per-click /predict latency over HTTP vs the bare predictor; brush RLE",
    ),
    "msda": (
        "adaptiveclick.benchmarks.msda",
        "deformable attention: compiled CPU/CUDA kernels vs the PyTorch reference",
    ),
    "cpu": (
        "adaptiveclick.benchmarks.cpu_inference",
        "AdaptiveClick per-click latency on the CPU: fp32 vs optimised variants",
    ),
    "cpu-parity": (
        "adaptiveclick.benchmarks.cpu_parity",
        "optimised CPU variants vs fp32 eager on NoC click sequences",
    ),
    "load": (
        "adaptiveclick.benchmarks.load",
        "concurrent clients against the HTTP backend: p50/p95, throughput, memory",
    ),
    "polygons": ("adaptiveclick.benchmarks.polygons", "masks as polygons: round-trip IoU, vertices and ms per mask"),
    "boxes": (
        "adaptiveclick.benchmarks.boxes",
        "box-to-mask IoU vs ground truth, ms per box, the annotate job's tasks/min",
    ),
    "projects": (
        "adaptiveclick.benchmarks.projects",
        "many projects: memory per loaded model, swap and rollback times, pool 1 vs 2",
    ),
    "gpu": (
        "adaptiveclick.benchmarks.gpu",
        "the GPU check: kernel build, gpu tests, MSDA, per-click/HTTP latency (fp32/bf16/fp16), sessions, fine-tune",
    ),
    "openvino-prepare": (
        "adaptiveclick.benchmarks.openvino_prepare",
        "export/compress/calibrate and compile OpenVINO engines ahead of time (int8-static: NoC clicks on GrabCut)",
    ),
}


class _LazyBenchmark(argparse.Action):
    """Adds the chosen benchmark's own arguments only once it is named, then parses the rest with them."""

    def __call__(self, parser, namespace, values, option_string=None):
        if not values:
            return  # run() says what is missing
        name, *rest = values
        if name not in BENCHMARKS:
            parser.error(f"argument BENCHMARK: invalid choice: {name!r} (choose from {', '.join(BENCHMARKS)})")
        module_name, help_text = BENCHMARKS[name]
        module = importlib.import_module(module_name)
        bench = argparse.ArgumentParser(prog=f"{parser.prog} {name}", description=help_text)
        module.add_arguments(bench)
        bench.parse_args(rest, namespace)
        namespace.benchmark, namespace._bench = name, module.main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder holding GrabCut/ and Berkeley/ (default: $ADAPTIVECLICK_DATASETS or ../shared/datasets)",
    )
    listing = "; ".join(f"{name}: {text}" for name, (_, text) in BENCHMARKS.items())
    parser.add_argument(
        "benchmark",
        nargs=argparse.REMAINDER,
        action=_LazyBenchmark,
        metavar="BENCHMARK ...",
        help=f"one of {', '.join(BENCHMARKS)} with its options ({listing})",
    )


def run(args: argparse.Namespace) -> int:
    from adaptiveclick.evaluation.datasets.registry import default_datasets_root

    if not getattr(args, "_bench", None):
        print(f"adaptiveclick benchmark: name a benchmark: {', '.join(BENCHMARKS)}")
        return 2
    args.data_root = args.data_root or default_datasets_root()
    return args._bench(args)
