"""AdaptiveClick per-click latency on the CPU: fp32 eager against each optimised variant, side by side.

Each variant (a set of predictor-spec options such as ``precision=int8``) runs in its own worker process, so that
its peak memory (RSS) is its own; the parent replays the same NoC click sequences on GrabCut images through the
workers one at a time, rotating which variant goes first, so that load from other work on the machine spreads over
all variants alike. The first click of an image (``set_image`` + the first network run) is reported apart from the
later clicks. Latency ratios are to the fp32 eager variant of the same run. ``--http`` adds the same measurement
through the HTTP backend (``benchmarks.http_backend``) for fp32 and the fastest variant.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.datasets import GrabCutDataset
from model.fast import cpu_flags, default_precision, precision_support
from model.loading import load_predictor
from model.spec import PRECISIONS, parse_options, parse_spec

from .common import machine_line, percentiles, print_table, replay_clicks
from .http_backend import click_sequences

FIRST_CLICK_TARGET_S = 0.5
LATER_CLICK_TARGET_S = 0.35
BASELINE_VARIANT = "precision=fp32"
REPORTED_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})


def variant_spec(source: str, variant: str) -> str:
    """``random:base`` + ``precision=int8,threads=2`` -> ``random:base#precision=int8,threads=2`` (the source's own
    options are kept; the variant's win)."""
    return str(parse_spec(source).with_options(**parse_options(variant)))


def unavailable_reason(spec: str) -> str | None:
    """Why a variant cannot run on this machine (an instruction set or a torch feature it needs), else None."""
    precision = parse_spec(spec).option("precision")
    if precision is None:
        return None
    return precision_support(precision, "cpu")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _worker(conn, spec: str) -> None:
    """Holds one predictor; answers (image, clicks) with (seconds per click, peak RSS in MB). A failure is sent
    back as ``("error", message)``."""
    try:
        torch.set_grad_enabled(False)
        start = time.perf_counter()
        predictor = load_predictor(spec)
        conn.send((time.perf_counter() - start, predictor.net.inference_precision, peak_rss_mb()))
        while (job := conn.recv()) is not None:
            conn.send((replay_clicks(predictor, *job), peak_rss_mb()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


class VariantWorker:
    """A worker process for one variant (its own interpreter: no shared torch state, its own RSS)."""

    TIMEOUT_S = 1800

    def __init__(self, spec: str) -> None:
        self.spec = spec
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.proc = context.Process(target=_worker, args=(child, spec), daemon=True)
        self.proc.start()
        self.load_seconds, self.precision, self.rss_mb = self._receive()
        self.first: list[float] = []
        self.later: list[float] = []

    def _receive(self):
        deadline = time.monotonic() + self.TIMEOUT_S
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                raise RuntimeError(f"{self.spec}: the worker exited (code {self.proc.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.spec}: no answer from the worker within {self.TIMEOUT_S} s")
        message = self.conn.recv()
        if isinstance(message, tuple) and message and message[0] == "error":
            raise RuntimeError(f"{self.spec}: {message[1]}")
        return message

    def warm_up(self, image: np.ndarray, clicks) -> None:
        """One untimed session: first-call allocations, lazy kernel builds."""
        self.conn.send((image, clicks))
        self._receive()

    def run(self, image: np.ndarray, clicks) -> None:
        self.conn.send((image, clicks))
        times, self.rss_mb = self._receive()
        self.first.append(times[0])
        self.later.extend(times[1:])

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(
    source: str, variants: list[str], data_root: Path, images: int, clicks: int, rounds: int, warmup: int = 1
) -> list[dict]:
    dataset = GrabCutDataset(data_root / "GrabCut")
    samples = [dataset[i] for i in range(min(images, len(dataset)))]
    specs = [variant_spec(source, v) for v in variants]
    skipped = {s: r for s in specs if (r := unavailable_reason(s))}
    runnable = [s for s in specs if s not in skipped]
    print(f"machine: {machine_line()}")
    print(f"CPU flags used: {', '.join(sorted(cpu_flags() & REPORTED_FLAGS)) or 'none'}")
    print(f"default precision on this CPU: {default_precision('cpu')}")
    print(f"load average at start: {load_average()}")
    if not runnable:
        print_results([], skipped, len(samples), clicks, rounds)
        return []
    sequences = click_sequences(load_predictor(runnable[0]), samples, clicks)  # NoC clicks on the first variant
    workers = []
    try:
        workers = [VariantWorker(s) for s in runnable]
        for worker in workers:
            for _ in range(warmup):
                worker.warm_up(samples[0].image, sequences[0][:2])
        for r in range(rounds):
            for i, (sample, sequence) in enumerate(zip(samples, sequences)):
                shift = (r * len(samples) + i) % len(workers)
                for worker in workers[shift:] + workers[:shift]:
                    worker.run(sample.image, sequence)
    finally:
        for worker in workers:
            worker.close()
    print(f"load average at the end: {load_average()}")
    results = [
        {
            "spec": w.spec,
            "precision": w.precision,
            "first": percentiles(w.first),
            "later": percentiles(w.later),
            "later_min": float(np.min(w.later)),
            "rss_mb": w.rss_mb,
            "load_s": w.load_seconds,
        }
        for w in workers
    ]
    print_results(results, skipped, len(samples), clicks, rounds)
    return results


def print_results(results: list[dict], skipped: dict[str, str], images: int, clicks: int, rounds: int) -> None:
    for spec, reason in skipped.items():
        print(f"{spec}: not run: {reason}")
    if not results:
        return
    base = next((r for r in results if parse_spec(r["spec"]).option("precision") == "fp32"), results[0])
    rows = []
    for r in results:
        rows.append(
            [
                r["spec"],
                r["precision"],
                f"{r['first']['p50']:.3f}",
                f"{r['later']['p50']:.3f}",
                f"{r['later']['p95']:.3f}",
                f"{r['later_min']:.3f}",
                f"{base['later']['p50'] / r['later']['p50']:.2f}x",
                f"{base['first']['p50'] / r['first']['p50']:.2f}x",
                f"{r['rss_mb']:.0f}",
                f"{r['load_s']:.1f}",
            ]
        )
    rows += [
        [spec, "-", "not run: " + reason.replace("|", "/"), "", "", "", "", "", "", ""]
        for spec, reason in skipped.items()
    ]
    print_table(
        [
            "variant",
            "precision",
            "first click p50 (s)",
            "later p50 (s)",
            "later p95 (s)",
            "later min (s)",
            "later speed-up vs fp32",
            "first speed-up vs fp32",
            "peak RSS (MB)",
            "load (s)",
        ],
        rows,
        title=f"AdaptiveClick per-click latency on {images} GrabCut images x {clicks} clicks x {rounds} rounds "
        f"(first click includes set_image; ratios to {base['spec']} of this run)",
    )
    best = min(results, key=lambda r: r["later"]["p50"])
    print(
        f"\nfastest: {best['spec']}: later clicks p50 {best['later']['p50']:.3f} s "
        f"(target {LATER_CLICK_TARGET_S} s: {'met' if best['later']['p50'] <= LATER_CLICK_TARGET_S else 'NOT met'}), "
        f"first click p50 {best['first']['p50']:.3f} s (target {FIRST_CLICK_TARGET_S} s: "
        f"{'met' if best['first']['p50'] <= FIRST_CLICK_TARGET_S else 'NOT met'})"
    )


def add_arguments(parser) -> None:
    parser.add_argument(
        "--source",
        default="random:base",
        help="weights: random:base (default), a checkpoint path/URL/s3 URI, with #options if needed",
    )
    parser.add_argument(
        "--variants",
        default=";".join(f"precision={p}" for p in PRECISIONS),
        help="semicolon-separated predictor options per variant; the fp32 one is the baseline "
        "(default: precision=fp32;precision=bf16;precision=int8)",
    )
    parser.add_argument("--images", type=int, default=5, help="GrabCut images (default 5)")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per image (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of every image (default 2)")
    parser.add_argument(
        "--http", action="store_true", help="also measure through the HTTP backend (fp32 and the fastest variant)"
    )
    parser.add_argument("--http-rounds", type=int, default=1, help="repetitions through HTTP (default 1)")


def main(args) -> int:
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    if not variants or args.images < 1 or args.clicks < 2 or args.rounds < 1:
        print("error: give at least one variant, --images >= 1, --clicks >= 2 and --rounds >= 1")
        return 2
    try:
        specs = [variant_spec(args.source, v) for v in variants]
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    if BASELINE_VARIANT not in variants:
        print(f"note: no {BASELINE_VARIANT} variant: ratios are to {specs[0]}")
    torch.set_grad_enabled(False)
    results = run(args.source, variants, args.data_root, args.images, args.clicks, args.rounds)
    if args.http and results:
        from . import http_backend

        fastest = min(results, key=lambda r: r["later"]["p50"])["spec"]
        http_specs = list(dict.fromkeys([variant_spec(args.source, BASELINE_VARIANT), fastest]))
        print(f"\nThrough the HTTP backend ({', '.join(http_specs)}):")
        http_backend.run(http_specs, args.data_root, args.images, args.clicks, args.http_rounds, rle_repeats=3)
    return 0
