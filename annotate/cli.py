"""Masks for a whole Label Studio project from its rectangles: one prediction per task, a brush and/or polygon
region per rectangle (its label), written through Label Studio's API (annotations are never touched).

Label Studio: --ls-url/--ls-api-key, else LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a personal access token or a
legacy token); images are fetched as the backend fetches them (the same LABEL_STUDIO_*, LOCAL_FILES_DOCUMENT_ROOT
and ADAPTIVECLICK_* image settings). The rectangles come from each task's ground-truth annotation, else its latest
one (--from annotations), or from its latest prediction holding rectangles (--from predictions: a detector's).

Examples:

  adaptiveclick annotate --ls-project 3 --output runs/annotate-p3
  adaptiveclick annotate --ls-project 3 --tasks 1-500,733 --predictor weights/adaptiveclick_base448_sbd.pth
  adaptiveclick annotate --ls-project 3 --shard 2/4 --output runs/p3-2of4    # one of 4 processes or machines

Killed or stopped, the same command goes on where it was: the journal in --output lists the tasks done, and a
task that already holds a prediction of the model's version is never done again (so shards and reruns never
duplicate). --shard K/N takes the tasks whose id % N == K - 1. The summary is printed as JSON at the end and kept
in OUTPUT/status.json (with progress, tasks per minute and ETA while it runs). Exit status: 0 done, 1 some
predictions could not be stored (run it again), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from adaptiveclick.labelstudio.boxes import SOURCES
from adaptiveclick.labelstudio.selection import parse_shard, parse_task_ids

DEFAULT_RATE = 10.0
DEFAULT_BOX_DEADLINE = 30.0  # seconds, as a click may take (ADAPTIVECLICK_REQUEST_DEADLINE's default)


def _typed(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.replace("parse_", "")
    return convert


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rate takes calls per second (a number, 0 for no limit), got {text!r}"
        ) from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"--rate must be >= 0 calls per second (0: no limit), got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ls = parser.add_argument_group("Label Studio")
    ls.add_argument("--ls-project", type=int, required=True, help="project id")
    ls.add_argument("--ls-url", help="Label Studio URL (default: $LABEL_STUDIO_URL)")
    ls.add_argument("--ls-api-key", help="personal access token or legacy token (default: $LABEL_STUDIO_API_KEY)")
    ls.add_argument(
        "--from",
        dest="source",
        choices=SOURCES,
        default="annotations",
        help="where the rectangles come from: each task's chosen annotation (default) or latest prediction",
    )
    ls.add_argument("--tasks", type=_typed(parse_task_ids), help="only these task ids, e.g. 1,2,5-9 (default: all)")
    ls.add_argument("--shard", type=_typed(parse_shard), default=None, help="shard K/N: tasks whose id %% N == K-1")
    ls.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULT_RATE,
        help=f"Label Studio calls (and image downloads) per second, at most (default {DEFAULT_RATE:g}; 0: no limit)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--predictor", metavar="SPEC", help="predictor spec (default: $ADAPTIVECLICK_PREDICTOR, baseline)"
    )
    model.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the spec's, else auto)")
    model.add_argument("--batch", type=int, help="boxes per forward pass (default: 8 on a GPU, 1 on a CPU)")
    model.add_argument("--threshold", type=float, help="mask threshold (default: $ADAPTIVECLICK_THRESHOLD or 0.49)")
    model.add_argument(
        "--box-deadline",
        type=float,
        metavar="SECONDS",
        help="model time per box; a task past its boxes' sum is skipped and left for the next run, 0: no limit "
        "(default: $ADAPTIVECLICK_REQUEST_DEADLINE or 30)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--output",
        type=Path,
        help="folder for the journal and status.json (default: annotate/project-N[/shard-K-of-N])",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--log-level", default="INFO")


def options_from_args(args: argparse.Namespace):
    """The job's options; ValueError (or SettingsError) for a bad value."""
    from adaptiveclick.labelstudio.selection import Shard
    from adaptiveclick.labelstudio.settings import EnvReader, LabelStudioSettings
    from adaptiveclick.model.prediction import PROB_THRESHOLD

    from .job import AnnotateOptions

    settings = LabelStudioSettings.from_env().with_connection(args.ls_url, args.ls_api_key)
    if not settings.connected:
        raise ValueError(
            "Label Studio's URL and an API key are needed: --ls-url and --ls-api-key, or LABEL_STUDIO_URL and "
            "LABEL_STUDIO_API_KEY"
        )
    shard = args.shard or Shard()
    output = args.output or Path("annotate") / f"project-{args.ls_project}"
    if args.output is None and shard.count > 1:
        output = output / f"shard-{shard.index}-of-{shard.count}"
    threshold = args.threshold
    if threshold is None:
        threshold = EnvReader().number("ADAPTIVECLICK_THRESHOLD", float) or PROB_THRESHOLD
    if not 0 < threshold < 1:
        raise ValueError(f"--threshold must lie strictly between 0 and 1, got {threshold}")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")
    box_deadline = args.box_deadline
    if box_deadline is None:
        box_deadline = EnvReader().number("ADAPTIVECLICK_REQUEST_DEADLINE", float) or DEFAULT_BOX_DEADLINE
    if not box_deadline >= 0:
        raise ValueError(f"--box-deadline must be >= 0 seconds (0: no limit), got {box_deadline}")
    predictor = args.predictor or os.environ.get("ADAPTIVECLICK_PREDICTOR", "").strip() or "baseline"
    return AnnotateOptions(
        project=args.ls_project,
        output=output,
        settings=settings,
        source=args.source,
        tasks=args.tasks,
        shard=shard,
        predictor=predictor,
        device=args.device,
        batch=args.batch,
        rate=args.rate,
        threshold=threshold,
        box_deadline=box_deadline or None,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    from adaptiveclick.labelstudio.api import LabelStudioError
    from adaptiveclick.labelstudio.settings import SettingsError
    from adaptiveclick.model.spec import parse_spec
    from adaptiveclick.storage.logs import configure_logging, redact

    from .job import JobError, run_annotate
    from .journal import JournalError

    try:
        opts = options_from_args(args)
        parse_spec(opts.predictor)  # a bad spec is bad input, before anything loads
    except (ValueError, SettingsError) as exc:
        print(f"adaptiveclick annotate: error: {exc}", file=sys.stderr)
        return 2
    secrets = (opts.settings.api_key or "",)
    configure_logging(args.log_level, secrets=secrets)
    try:
        summary = run_annotate(opts)
    except (JobError, JournalError, ValueError, FileNotFoundError) as exc:
        print(f"adaptiveclick annotate: error: {redact(str(exc), secrets)}", file=sys.stderr)
        return 2
    except LabelStudioError as exc:
        print(f"adaptiveclick annotate: error: {redact(str(exc), secrets)}", file=sys.stderr)
        return 1 if exc.transient else 2
    print(json.dumps(summary, indent=1))
    return 1 if summary["failed"] else 0
