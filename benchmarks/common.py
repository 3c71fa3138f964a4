"""Helpers shared by the benchmark scripts: timing statistics, tables, dataset location."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

DATASETS_ENV = "ADAPTIVECLICK_DATASETS"


def default_datasets_root() -> Path:
    """``$ADAPTIVECLICK_DATASETS`` or ``../shared/datasets`` next to the repository."""
    env = os.environ.get(DATASETS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"


def percentiles(seconds: list[float]) -> dict[str, float]:
    arr = np.asarray(seconds, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "mean": float(arr.mean()), "n": int(arr.size)}


def machine_line() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads"
            + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> None:
    """A Markdown table, so the output can be pasted into the README as is."""
    if title:
        print(f"\n{title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
