"""Fine-tune AdaptiveClick on project annotations, validate by NoC, publish to a model registry.

Data (any combination): a Label Studio project (--ls-project with --ls-url/--ls-api-key, or LABEL_STUDIO_URL and
LABEL_STUDIO_API_KEY), Label Studio JSON exports (--ls-export), RITM-layout benchmark folders (--dataset).
Tasks are split into training and validation by a stable hash of the task (--val-fraction).

Examples:

  adaptiveclick finetune --ls-project 3 --init weights/adaptiveclick_base448_sbd.pth \\
      --output runs/p3 --registry s3://models/registry --steps 2000   # publishes to the line project-3
  adaptiveclick finetune --output runs/p3 --resume            # after a crash: continue from the last checkpoint
  torchrun --nproc-per-node 4 -m adaptiveclick finetune ...  # 4 GPUs (or --nnodes/--rdzv-endpoint: several nodes)

The candidate is published to the project's model line (a new immutable registry version, made current) only when
its NoC@90 (then NoC@85) on the validation split beats what the project is served today (its pin, its line's
current version, else the base line's; the starting weights if there is none);
--force publishes anyway. The output folder holds checkpoints, metrics.jsonl/png, status.json and gate.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .config import PRECISIONS, TrainConfig


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step numbers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    data = parser.add_argument_group("data")
    data.add_argument("--ls-project", help="Label Studio project id (read through the API)")
    data.add_argument("--ls-url", help="Label Studio URL (default: $LABEL_STUDIO_URL)")
    data.add_argument(
        "--ls-api-key",
        help="Label Studio API key: personal access token or legacy token (default: $LABEL_STUDIO_API_KEY)",
    )
    data.add_argument(
        "--ls-export",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a Label Studio JSON export (repeatable)",
    )
    data.add_argument(
        "--ls-files-root",
        type=Path,
        metavar="DIR",
        help="the folder file:// URLs and plain paths in --ls-export tasks may be read from (default: the folder "
        "of the first export; tasks read from Label Studio never read local files)",
    )
    data.add_argument("--ls-image-key", help="task data key of the image (default: 'image', else the first URL)")
    data.add_argument("--ls-labels", help="comma-separated labels to train on (default: all)")
    data.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME[=PATH]",
        help="a RITM-layout benchmark (GrabCut, Berkeley, SBD, ...), at PATH or found under --data-root (repeatable)",
    )
    data.add_argument("--data-root", type=Path, help="folder holding the benchmark folders")
    data.add_argument("--val-fraction", type=float, default=0.2, help="share of tasks held out (default 0.2)")
    data.add_argument("--val-max-images", type=int, default=0, help="validate on at most this many images (0: all)")

    run = parser.add_argument_group("run")
    run.add_argument("--output", type=Path, required=True, help="run folder (checkpoints, logs, weights)")
    run.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    run.add_argument(
        "--init",
        default="",
        help="starting weights: a checkpoint path/URL/s3 URI, mae:PATH, "
        "random[:base|huge|tiny], or 'registry' (its current version)",
    )
    run.add_argument("--size", choices=("base", "huge", "tiny"), help="network size for mae:/random (default base)")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help=f"optimizer steps (default {defaults.steps})")
    length.add_argument("--epochs", type=float, help="passes over the training images instead of --steps")
    run.add_argument("--batch-size", type=int, default=defaults.batch_size, help="crops per process and micro-batch")
    run.add_argument(
        "--accumulation",
        type=int,
        default=defaults.accumulation,
        help="micro-batches per optimizer step (gradient accumulation)",
    )
    run.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate (default 5e-5)")
    run.add_argument(
        "--lr-milestones",
        type=_csv_ints,
        default=(),
        help="steps where the learning rate drops (default: at 2/3 of the run)",
    )
    run.add_argument("--lr-gamma", type=float, default=defaults.lr_gamma, help="learning-rate drop factor")
    run.add_argument("--input-size", type=int, default=defaults.crop_size, help="training crop size (448)")
    run.add_argument("--max-points", type=int, default=defaults.max_points, help="sampled clicks per sign (24)")
    run.add_argument(
        "--max-extra-clicks",
        type=int,
        default=defaults.max_extra_clicks,
        help="most corrective click rounds before the training pass (3)",
    )
    run.add_argument(
        "--targets",
        choices=("reference", "binary"),
        default=defaults.target_mode,
        help="loss targets as the reference builds them, or one thresholded mask",
    )
    run.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=defaults.precision,
        help="autocast: auto = bf16 (fp16 without bf16) on GPU, fp32 on CPU",
    )
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    run.add_argument("--workers", type=int, default=2, help="data loading processes per training process")
    run.add_argument("--seed", type=int, default=defaults.seed)
    run.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every, help="steps (50)")
    run.add_argument("--val-every", type=int, default=0, help="validate every N steps (0: at the end)")
    run.add_argument("--val-clicks", type=int, default=defaults.val_clicks, help="clicks per instance for NoC")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    publish = parser.add_argument_group("publishing")
    publish.add_argument("--registry", help="model registry: a directory or s3://bucket/prefix")
    publish.add_argument(
        "--project",
        type=int,
        default=None,
        help="the project whose model line is published to and gated against (default: "
        "--ls-project; without either: the base line)",
    )
    publish.add_argument("--force", action="store_true", help="publish even if not better than the current version")
    publish.add_argument("--no-publish", action="store_true", help="validate and decide, but do not publish")
    publish.add_argument("--version", help="name of the published version (default: ft-<time>-<sha256>)")
    publish.add_argument("--log-level", default="INFO")


def options_from_args(args: argparse.Namespace):
    from .job import JobOptions

    train = TrainConfig(
        batch_size=args.batch_size,
        accumulation=args.accumulation,
        lr=args.lr,
        lr_milestones=args.lr_milestones,
        lr_gamma=args.lr_gamma,
        crop_size=args.input_size,
        max_points=args.max_points,
        max_extra_clicks=args.max_extra_clicks,
        target_mode=args.targets,
        precision=args.precision,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        val_clicks=args.val_clicks,
    )
    if args.val_every < 0 or args.val_max_images < 0 or args.workers < 0:
        raise ValueError("--val-every, --val-max-images and --workers cannot be negative")
    if (args.steps is not None and args.steps < 1) or (args.epochs is not None and args.epochs <= 0):
        raise ValueError("--steps/--epochs must be positive")
    return JobOptions(
        output=args.output,
        train=train,
        steps=args.steps,
        epochs=args.epochs,
        resume=args.resume,
        init=args.init,
        size=args.size,
        datasets=args.dataset,
        data_root=args.data_root,
        ls_exports=args.ls_export,
        ls_files_root=args.ls_files_root,
        ls_project=args.ls_project,
        ls_url=args.ls_url,
        ls_api_key=args.ls_api_key,
        ls_image_key=args.ls_image_key,
        ls_labels=[v.strip() for v in args.ls_labels.split(",") if v.strip()] if args.ls_labels else None,
        val_fraction=args.val_fraction,
        val_max_images=args.val_max_images,
        device=args.device,
        workers=args.workers,
        progress=not args.no_progress,
        registry=args.registry,
        force=args.force,
        publish=not args.no_publish,
        version=args.version,
        project=args.project if args.project is not None else _project_of(args.ls_project),
    )


def _project_of(ls_project: str | None) -> int | None:
    if ls_project is None:
        return None
    if not str(ls_project).isdigit():
        raise ValueError(f"--ls-project must be a project id (an integer), got {ls_project!r}")
    return int(ls_project)


def run(args: argparse.Namespace) -> int:
    from adaptiveclick.labelstudio.api import LabelStudioError
    from adaptiveclick.storage.logs import configure_logging, redact
    from adaptiveclick.storage.registry import RegistryError

    from .job import JobError, run_job

    secrets = (args.ls_api_key or "", os.environ.get("LABEL_STUDIO_API_KEY", ""))
    configure_logging(args.log_level, secrets=secrets)
    log = logging.getLogger("adaptiveclick.finetune")
    try:
        summary = run_job(options_from_args(args))
    except (JobError, LabelStudioError, RegistryError, ValueError, FileNotFoundError) as exc:
        log.error("fine-tune failed", extra={"error": str(exc)})
        print(f"adaptiveclick finetune: error: {redact(str(exc), secrets)}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=1, default=str))
    return 0
