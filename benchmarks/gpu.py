"""The GPU check, one command for a machine with a CUDA device (planned for under ~8 minutes on one H100):

1. builds the CUDA deformable-attention kernel (``python -m adaptiveclick.ops.build --cuda yes``);
2. runs the ``gpu``-marked tests (``pytest -m gpu``, from a checkout);
3. MSDA: the CUDA kernel vs the PyTorch reference on the GPU (fp32, fp16, bf16; :mod:`benchmarks.msda`);
4. per-click model latency p50/p95 of AdaptiveClick-B in fp32, bf16 and fp16 (autocast), on NoC click sequences of
   GrabCut images, and the peak GPU memory of each;
5. per-click HTTP latency p50/p95 through ``adaptiveclick serve`` on the GPU (the server runs fp32 on GPUs: the
   spec's ``precision`` is a CPU option), and the latency with 1, 4 and 16 concurrent annotator sessions;
6. fine-tune steps per second in bf16 (``adaptiveclick finetune --precision bf16`` on GrabCut, a few steps).

    adaptiveclick benchmark gpu                              # AdaptiveClick-B's architecture, random weights
    adaptiveclick benchmark gpu --weights /weights/adaptiveclick_base448_sbd.pth --sessions 1,4,16

Random weights time the same network as the released checkpoint (the masks, and so the zoom-in crops, differ). On
a machine without a CUDA device it says so and runs nothing (exit status 0; ``--require-gpu``: 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adaptiveclick.evaluation.cli import positive_int

from .common import machine_line, percentiles, print_table
from .servers import REPO as REPO_ROOT

SKIP_MESSAGE = "SKIPPED: adaptiveclick benchmark gpu needs a CUDA device and torch sees none; nothing was run"
PRECISIONS = ("fp32", "bf16", "fp16")


def session_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sessions takes counts such as 1,4,16, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--sessions takes counts of at least 1, got {text!r}")
    return counts


def add_arguments(parser) -> None:
    parser.add_argument(
        "--weights",
        default="random:base",
        help="AdaptiveClick weights to time (a checkpoint path, URL or s3://; default random:base, the same network)",
    )
    parser.add_argument("--images", type=positive_int, default=3, help="GrabCut images (default 3)")
    parser.add_argument("--clicks", type=positive_int, default=5, help="clicks per image (default 5)")
    parser.add_argument(
        "--rounds", type=positive_int, default=3, help="repetitions of the per-click timing (default 3)"
    )
    parser.add_argument(
        "--sessions", type=session_counts, default=[1, 4, 16], help="concurrent sessions, e.g. 1,4,16 (default)"
    )
    parser.add_argument("--steps", type=positive_int, default=20, help="fine-tune steps timed in bf16 (default 20)")
    parser.add_argument("--skip-build", action="store_true", help="use the kernel already built")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the gpu-marked tests")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 instead of 0 without a CUDA device")


def main(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print(SKIP_MESSAGE)
        return 2 if args.require_gpu else 0
    started = time.monotonic()
    print(f"machine: {machine_line()}")
    failures = []
    if not args.skip_build:
        failures += step("build the CUDA kernel", [sys.executable, "-m", "adaptiveclick.ops.build", "--cpu", "no",
                                                   "--cuda", "yes", "--openvino", "no"])  # fmt: skip
    if not args.skip_tests:
        if (REPO_ROOT / "tests").is_dir():
            failures += step("gpu-marked tests", [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "tests"])
        else:
            print("\ngpu-marked tests: not run (no tests/ folder: an installed package, not a checkout)")
    from . import msda

    msda.run(cpu_dtypes=(), cuda_dtypes=(torch.float32, torch.float16, torch.bfloat16))
    replay, folder = grabcut_sessions(args.data_root, args.images, args.clicks)
    try:
        model_latency(args.weights, args.data_root, replay, args.rounds)
        http_latency(args.weights, folder, replay, args.sessions)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    finetune_speed(args.data_root, args.steps)
    print(f"\nGPU check: {time.monotonic() - started:.0f} s" + (f"; FAILED: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


def step(title: str, command: list[str]) -> list[str]:
    """Run ``command`` in the checkout, its output shown; ``[title]`` when it failed."""
    print(f"\n{title}: {' '.join(command[1:])}", flush=True)
    code = subprocess.run(command, cwd=REPO_ROOT).returncode
    return [] if code == 0 else [title]


def grabcut_sessions(data_root: Path, images: int, clicks: int) -> tuple[list, Path]:
    """The NoC clicker's click sequences on GrabCut images (as the load benchmark replays them), the images copied
    into a folder an image server can serve."""
    from .load import sessions

    replay = sessions(data_root, images, clicks)
    folder = Path(tempfile.mkdtemp(prefix="adaptiveclick-gpu-"))
    for file, _, _ in replay:
        shutil.copy(data_root / "GrabCut" / "data_GT" / file, folder / file)
    return replay, folder


def model_latency(weights: str, data_root: Path, replay: list, rounds: int) -> None:
    """Per-click latency of the bare predictor in fp32, bf16 and fp16 (torch.autocast), and each one's peak memory."""
    import cv2
    import torch

    from adaptiveclick.model.loading import load_predictor

    predictor = load_predictor(f"{weights}#device=cuda")
    images = [cv2.imread(str(data_root / "GrabCut" / "data_GT" / file))[:, :, ::-1].copy() for file, _, _ in replay]
    rows = []
    for precision in PRECISIONS:
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        first, later = [], []
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for r in range(rounds + 1):  # round 0 warms up
            for image, (_, _, clicks) in zip(images, replay):
                context = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
                with context, torch.inference_mode():
                    times = replay_on_gpu(predictor, image, clicks)
                if r:
                    first.append(times[0])
                    later += times[1:]
        peak = torch.cuda.max_memory_allocated() / 2**20
        p_first, p_later = percentiles(first), percentiles(later)
        rows.append([precision, f"{p_first['p50'] * 1e3:.1f}", f"{p_later['p50'] * 1e3:.1f}",
                     f"{p_later['p95'] * 1e3:.1f}", f"{peak:.0f}", p_later["n"]])  # fmt: skip
    print_table(
        [
            "precision",
            "first click p50 (ms)",
            "later clicks p50 (ms)",
            "later clicks p95 (ms)",
            "peak GPU MiB",
            "clicks timed",
        ],  # fmt: skip
        rows,
        title=f"AdaptiveClick-B per click on the GPU, bare predictor ({weights}; first click includes set_image)",
    )


def replay_on_gpu(predictor, image, clicks) -> list[float]:
    """Seconds per click of one object, each step waited for on the GPU."""
    import torch

    times, probs, roi = [], None, None
    torch.cuda.synchronize()
    start = time.perf_counter()
    predictor.set_image(image)
    for k in range(len(clicks)):
        result = predictor.step(clicks[: k + 1], probs, roi)
        probs, roi = result.probs, result.roi
        torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times


def http_latency(weights: str, folder: Path, replay: list, session_counts: list[int]) -> None:
    """Per-click latency through ``adaptiveclick serve`` on the GPU, alone and with concurrent sessions."""
    from .load import run_load
    from .servers import BackendProcess, ImageServer

    image_server = ImageServer(folder)
    backend = BackendProcess(f"{weights}#device=cuda")
    rows = []
    try:
        per_session = sum(len(clicks) for _, _, clicks in replay)  # one pass: every request runs the network once
        run_load(backend.url, image_server.url, replay, 1, per_session, task_offset=10**6)  # warm-up
        for n, count in enumerate(session_counts):
            result = run_load(backend.url, image_server.url, replay, count, per_session, task_offset=(n + 2) * 10**6)
            stats = percentiles(result.latencies)
            rows.append([count, f"{stats['p50'] * 1e3:.1f}", f"{stats['p95'] * 1e3:.1f}",
                         f"{result.throughput:.1f}", len(result.errors), result.requests])  # fmt: skip
    finally:
        backend.close()
        image_server.close()
    print_table(
        ["concurrent sessions", "p50 (ms)", "p95 (ms)", "clicks/s", "errors", "requests"],
        rows,
        title="Per-click /predict latency over HTTP on the GPU (fp32; each request carries every click of its object, "
        "each session its own tasks, so each click runs the network once)",
    )


def finetune_speed(data_root: Path, steps: int) -> None:
    """Steps per second of ``adaptiveclick finetune --precision bf16`` (AdaptiveClick-B, 448 crops) on GrabCut."""
    output = Path(tempfile.mkdtemp(prefix="adaptiveclick-gpu-finetune-")) / "run"
    command = [sys.executable, "-m", "adaptiveclick", "finetune", "--dataset", "GrabCut", "--data-root",
               str(data_root), "--init", "random:base", "--output", str(output), "--steps", str(steps),
               "--precision", "bf16", "--device", "cuda", "--no-publish", "--val-fraction", "0.1",
               "--val-max-images", "1", "--val-clicks", "1", "--no-progress"]  # fmt: skip
    print(f"\nfine-tune in bf16: {' '.join(command[3:])}", flush=True)
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    metrics = output / "metrics.jsonl"
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    shutil.rmtree(output.parent, ignore_errors=True)
    seconds = [line["seconds"] for line in lines if line.get("kind") == "train" and "seconds" in line]
    timed = seconds[2:] or seconds  # the first steps warm up (allocations, cuDNN's choices)
    if done.returncode != 0 or not timed:
        print(f"fine-tune: FAILED (exit {done.returncode}, {len(seconds)} steps logged)\n{done.stderr[-2000:]}")
        return
    print(
        f"fine-tune steps/s in bf16 (AdaptiveClick-B, the default batch): {len(timed) / sum(timed):.2f} "
        f"({len(timed)} steps timed, {sum(timed):.1f} s)"
    )
