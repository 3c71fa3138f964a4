"""Helpers shared by the benchmark scripts: timing statistics, tables, dataset location."""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch

# one home for where the datasets live (the evaluation's dataset registry)
from adaptiveclick.evaluation.datasets import DATASETS_ENV, default_datasets_root  # noqa: F401  (re-exported)


def replay_clicks(predictor, image: np.ndarray, clicks) -> list[float]:
    """Seconds per click for one object: the first includes ``set_image``; each step gets its own previous
    probabilities and ROI, as an annotation session would."""
    times, probs, roi = [], None, None
    start = time.perf_counter()
    predictor.set_image(image)
    for k in range(len(clicks)):
        step = predictor.step(clicks[: k + 1], probs, roi)
        probs, roi = step.probs, step.roi
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times


def percentiles(seconds: list[float]) -> dict[str, float]:
    arr = np.asarray(seconds, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "mean": float(arr.mean()),
        "n": int(arr.size),
    }


def machine_line() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
        + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> None:
    """A Markdown table, so the output can be pasted into the README as is."""
    if title:
        print(f"\n{title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
