"""Evaluate a predictor with the NoC protocol (RITM/SimpleClick/AdaptiveClick) on interactive-segmentation benchmarks.

Writes to --out: results.md (the table), results.json (per dataset: noc85, noc90, nof85, nof90, miou_per_click,
ious, seconds_per_click, ...) and miou.png (mIoU versus clicks).

Defaults follow the reference evaluation: 20 clicks, threshold 0.49, "cvpr" zoom-in (448 px; 672 px for DAVIS),
flip averaging on. --mode and --flip/--no-flip override the predictor spec's options; they do not apply to the
baseline predictor. Datasets are found under --data-root (GrabCut/, Berkeley/, DAVIS/, PascalVOC/ or VOC2012/, SBD/,
ssTEM/stack1/, BraTS/ or BraTS20/, OAI-ZIB/, COCO_MVal/), in a --datasets-config file, or via
ADAPTIVECLICK_<NAME>_PATH variables.

example:
  adaptiveclick evaluate --predictor baseline --datasets GrabCut,Berkeley --out runs/baseline
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from adaptiveclick.model.loading import load_predictor
from adaptiveclick.model.prediction import PROB_THRESHOLD
from adaptiveclick.model.spec import EVAL_MODES, PredictorSpec, parse_spec

from .datasets import (
    CONFIG_ENV,
    DATASETS,
    DatasetInfo,
    InstanceDataset,
    load_datasets_config,
    parse_dataset_names,
    resolve_dataset_root,
)
from .metrics import DatasetResult
from .noc_loop import DEFAULT_N_CLICKS, evaluate_predictor

if TYPE_CHECKING:
    from adaptiveclick.model.predictor import Predictor

EXIT_USAGE = 2
DEFAULT_FLIP = True  # get_predictor(with_flip=True) in the reference evaluation


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--predictor",
        required=True,
        metavar="SPEC",
        help="'baseline', a checkpoint path / http(s) URL / s3:// URI, optionally with #options",
    )
    parser.add_argument(
        "--datasets",
        default="GrabCut,Berkeley",
        help=f"comma-separated, from: {', '.join(DATASETS)} (default: GrabCut,Berkeley)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder holding one folder per dataset (default: $ADAPTIVECLICK_DATASETS or ../shared/datasets)",
    )
    parser.add_argument(
        "--datasets-config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"YAML/JSON mapping dataset names to folders (default: ${CONFIG_ENV} if set)",
    )
    parser.add_argument(
        "--mode",
        choices=EVAL_MODES,
        default=None,
        help="'cvpr' (zoom-in, the paper's protocol) or 'plain' (default: the spec's, else cvpr)",
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the mirrored image (default: the spec's flip option, else on)",
    )
    parser.add_argument("--n-clicks", type=positive_int, default=DEFAULT_N_CLICKS, help="clicks per instance (20)")
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="evaluate only the first N instances of each dataset",
    )
    parser.add_argument(
        "--threshold",
        type=probability,
        default=PROB_THRESHOLD,
        help=f"probability threshold of the predicted mask ({PROB_THRESHOLD})",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, auto (default: the spec's, else auto)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the results")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def effective_spec(spec: PredictorSpec, mode: str | None, flip: bool | None) -> tuple[PredictorSpec, list[str]]:
    """The spec with --mode/--flip applied (reference defaults where neither says), and notes for the user."""
    if spec.is_baseline:
        notes = (
            ["--mode and --flip do not apply to the baseline predictor (GrabCut on the whole image)"]
            if mode is not None or flip is not None
            else []
        )
        return spec, notes
    options = dict(spec.options)
    options["mode"] = mode or spec.option("mode", "cvpr")
    options["flip"] = "1" if (spec.flag("flip", DEFAULT_FLIP) if flip is None else flip) else "0"
    return PredictorSpec(spec.source, options), []


@contextmanager
def zoom_in_size(predictor: Predictor, size: int) -> Iterator[None]:
    """Run the "cvpr" zoom-in at ``size`` (the reference uses 672 for DAVIS); other predictors are left alone."""
    from adaptiveclick.model.predictor import AdaptiveClickPredictor

    if not isinstance(predictor, AdaptiveClickPredictor) or predictor.mode != "cvpr":
        yield
        return
    saved = predictor.input_size
    predictor.input_size = (size, size)
    try:
        yield
    finally:
        predictor.input_size = saved


def command_line(args: argparse.Namespace, spec: PredictorSpec) -> str:
    """The command that reproduces this run (with the options it actually used)."""
    parts = ["adaptiveclick", "evaluate", "--predictor", str(spec), "--datasets", args.datasets]
    for flag, value in (
        ("--data-root", args.data_root),
        ("--datasets-config", args.datasets_config),
        ("--mode", args.mode),
        ("--limit", args.limit),
        ("--device", args.device),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.flip is not None:
        parts.append("--flip" if args.flip else "--no-flip")
    if args.n_clicks != DEFAULT_N_CLICKS:
        parts += ["--n-clicks", str(args.n_clicks)]
    if args.threshold != PROB_THRESHOLD:
        parts += ["--threshold", str(args.threshold)]
    return shlex.join(parts + ["--out", str(args.out)])


def run_facts(args: argparse.Namespace, spec: PredictorSpec, predictor: Predictor) -> list[str]:
    import torch

    if spec.is_baseline:
        setting = "mode/flip: not applicable (baseline)"
    else:
        setting = f"mode: {spec.option('mode')}, flip: {'on' if spec.flag('flip', DEFAULT_FLIP) else 'off'}"
    device = getattr(predictor, "device", "cpu")
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}"
    )
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        machine += f" ({torch.cuda.get_device_name(torch.device(device))})"
    return [
        f"predictor: `{spec}` (model version `{predictor.model_version}`)",
        setting,
        f"clicks: {args.n_clicks}, threshold: {args.threshold}, instances: "
        + (f"the first {args.limit} of each dataset" if args.limit else "all"),
        f"machine: {machine}",
        f"finished: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"command: `{command_line(args, spec)}`",
    ]


def open_datasets(args: argparse.Namespace) -> list[tuple[DatasetInfo, InstanceDataset]]:
    """Every requested dataset, opened (layout checked) before any time is spent predicting."""
    config_path = args.datasets_config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    config = load_datasets_config(config_path) if config_path is not None else None
    return [
        (info, info.loader(resolve_dataset_root(info, args.data_root, config)))
        for info in parse_dataset_names(args.datasets)
    ]


def run(args: argparse.Namespace) -> int:
    try:
        return evaluate(args)
    except (ValueError, OSError) as exc:  # DatasetError and CheckpointError are ValueErrors
        print(f"adaptiveclick evaluate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def evaluate(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    spec, notes = effective_spec(parse_spec(args.predictor), args.mode, args.flip)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    from .report import markdown_table, write_report  # matplotlib: only when there is something to plot

    datasets = open_datasets(args)
    predictor = load_predictor(spec, device=args.device)
    results: dict[str, DatasetResult] = {}
    for info, dataset in datasets:
        with zoom_in_size(predictor, info.zoom_in_size):
            results[info.name] = evaluate_predictor(
                predictor,
                dataset,
                n_clicks=args.n_clicks,
                progress=args.progress,
                threshold=args.threshold,
                limit=args.limit,
                description=info.name,
            )
        result = results[info.name]
        print(
            f"{info.name}: {result.n_instances} instances, NoC@85 {result.noc(0.85):.2f}, NoC@90 "
            f"{result.noc(0.90):.2f}, {result.elapsed_seconds:.1f} s",
            file=sys.stderr,
        )
        write_report(args.out, results, run_facts(args, spec, predictor), title=predictor.model_version)
    print(markdown_table(results), end="")
    print(f"results written to {args.out}", file=sys.stderr)
    return 0
