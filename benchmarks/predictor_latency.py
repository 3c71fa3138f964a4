"""Per-click latency of predictors on GrabCut images, clicks placed by the NoC protocol's clicker."""

from __future__ import annotations

import torch

from adaptiveclick.evaluation.datasets import GrabCutDataset
from adaptiveclick.evaluation.simulation import simulate
from adaptiveclick.model.loading import load_predictor

from .common import machine_line, percentiles, print_table


def click_latencies(predictor, samples, clicks_per_image: int) -> tuple[list[float], list[float]]:
    """(first-click seconds incl. set_image, later-click seconds) over the NoC annotator's clicks per image."""
    first, later = [], []
    for sample in samples:
        for step in simulate(predictor, sample, clicks_per_image):
            (first if step.index == 0 else later).append(step.seconds)
    return first, later


def run(specs: list[str], data_root, images: int, clicks: int, warmup: int = 1) -> list[dict]:
    dataset = GrabCutDataset(data_root / "GrabCut")
    samples = [dataset[i] for i in range(min(images, len(dataset)))]
    results = []
    for spec in specs:
        predictor = load_predictor(spec)
        click_latencies(predictor, samples[:1], warmup)  # first-call allocations, lazy builds
        first, later = click_latencies(predictor, samples, clicks)
        results.append(
            {"spec": spec, "version": predictor.model_version, "first": percentiles(first), "later": percentiles(later)}
        )
    print(f"machine: {machine_line()}")
    print_table(
        [
            "predictor",
            "model version",
            "first click p50 (s)",
            "later clicks p50 (s)",
            "later clicks p95 (s)",
            "clicks timed",
        ],
        [
            [
                r["spec"],
                r["version"],
                f"{r['first']['p50']:.3f}",
                f"{r['later']['p50']:.3f}",
                f"{r['later']['p95']:.3f}",
                r["first"]["n"] + r["later"]["n"],
            ]
            for r in results
        ],
        title=f"Per-click latency on {len(samples)} GrabCut images x {clicks} clicks",
    )
    return results


def add_arguments(parser) -> None:
    parser.add_argument(
        "--specs",
        default="baseline,random:base",
        help="comma-separated predictor specs (default: baseline,random:base)",
    )
    parser.add_argument("--images", type=int, default=5, help="GrabCut images to use (default 5)")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per image (default 5)")


def main(args) -> int:
    torch.set_grad_enabled(False)
    run([s for s in args.specs.split(",") if s], args.data_root, args.images, args.clicks)
    return 0
