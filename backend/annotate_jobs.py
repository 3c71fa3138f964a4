"""Annotate jobs started by the backend: ``POST /jobs/<project>/annotate`` runs ``adaptiveclick annotate`` for the
project as a separate process (the backend never imports the annotate package), one per project at a time, in
``MODEL_DIR/jobs/annotate/project-<id>/<UTC time>/`` with its log, the job's own ``run/status.json`` (progress,
tasks per minute, ETA) and ``exit.json``: the launcher of :mod:`backend.jobs`, another kind of job.

The job segments with the model the backend serves the project right now (its pin, its line's or the base line's
current version, pinned by its sha256, or the configured predictor), so its predictions carry the version Retrieve
Predictions uses and Label Studio never asks for a task twice. The body's options: ``from``
(``annotations``/``predictions``), ``tasks`` (``"1,2,5-9"``), ``shard`` (``"K/N"``) and ``rate`` (Label Studio
calls per second); a bad one is a 400 naming it.
The routes are in :mod:`backend.routes.jobs`: ``GET /jobs/<project>/annotate`` is the latest annotate job of a
project; ``GET /jobs`` lists them with the fine-tunes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptiveclick.labelstudio.errors import BadRequest
from adaptiveclick.labelstudio.selection import parse_shard, parse_task_ids
from adaptiveclick.model.spec import parse_spec, pinned_spec
from adaptiveclick.storage.lines import VersionRef
from adaptiveclick.storage.registry import Registry

from .jobs import JobLauncher, JobStatus
from .settings import Settings

SOURCES = ("annotations", "predictions")
DEFAULT_RATE = 10.0


@dataclass(frozen=True)
class AnnotateRequest:
    """The options of one annotate job, checked."""

    source: str = "annotations"
    tasks: str | None = None
    shard: str | None = None
    rate: float = DEFAULT_RATE

    def arguments(self) -> list[str]:
        args = ["--from", self.source, "--rate", f"{self.rate:g}"]
        if self.tasks:
            args += ["--tasks", self.tasks]
        if self.shard:
            args += ["--shard", self.shard]
        return args


def parse_annotate_request(body: Any) -> AnnotateRequest:
    """The job's options from a JSON body (``{}`` or none: every task, from annotations); BadRequest says what
    is wrong."""
    if body is None:
        return AnnotateRequest()
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object such as {"tasks": "1-500", "shard": "1/2"}')
    unknown = sorted(set(body) - {"from", "tasks", "shard", "rate"})
    if unknown:
        raise BadRequest(f"unknown annotate options {', '.join(unknown)}: use from, tasks, shard, rate")
    source = body.get("from", "annotations")
    if source not in SOURCES:
        raise BadRequest(f"'from' must be annotations or predictions, got {source!r}")
    tasks, shard = body.get("tasks"), body.get("shard")
    try:
        if tasks is not None:
            parse_task_ids(str(tasks))
        if shard is not None:
            parse_shard(str(shard))
    except ValueError as exc:
        raise BadRequest(str(exc).replace("--tasks", "'tasks'").replace("--shard", "'shard'")) from None
    rate = body.get("rate", DEFAULT_RATE)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1000:
        raise BadRequest(f"'rate' must be Label Studio calls per second, 0..1000 (0: no limit), got {rate!r}")
    return AnnotateRequest(source, None if tasks is None else str(tasks), None if shard is None else str(shard), rate)


class AnnotateLauncher(JobLauncher):
    """Starts and reports annotate jobs.

    Args:
        served_spec: the spec of the model a project is served now (see :func:`served_spec_now`).
        command_prefix: the command before the job's arguments (tests replace it).
    """

    def __init__(
        self, settings: Settings, served_spec: Callable[[int], str], command_prefix: list[str] | None = None
    ) -> None:
        super().__init__(
            settings,
            Path(settings.model_dir) / "jobs" / "annotate",
            "annotate",
            "annotate job",
            settings.max_annotate_jobs,
            "ADAPTIVECLICK_MAX_ANNOTATE_JOBS",
        )
        self.served_spec = served_spec
        self.command_prefix = command_prefix or [sys.executable, "-m", "adaptiveclick", "annotate"]

    def command(self, project: int, folder: Path, options: AnnotateRequest) -> list[str]:
        return [
            *self.command_prefix,
            "--ls-project",
            str(project),
            "--output",
            str(folder / "run"),
            "--predictor",
            self.served_spec(project),
            "--threshold",
            f"{self.settings.threshold:g}",
            "--box-deadline",
            f"{self.settings.request_deadline:g}",
            "--no-progress",
            *options.arguments(),
        ]

    def start(self, project: int, options: AnnotateRequest) -> JobStatus:
        if not self.settings.label_studio.connected:
            raise BadRequest(
                "annotate jobs write predictions through Label Studio's API: set LABEL_STUDIO_URL and "
                "LABEL_STUDIO_API_KEY for the backend",
                409,
            )
        return self.launch(project, "POST /jobs/annotate", lambda folder: self.command(project, folder, options))


def served_spec_now(ref: VersionRef | None, registry: Registry, configured: str) -> str:
    """The spec of the model a project is served now (``ref``, from :meth:`ModelHolder.wanted`): that registry
    version (hash-pinned, run like the configured spec), else the configured spec (whose model version it is)."""
    if ref is None:
        return configured
    info = registry.line(ref.line).read_version(ref.version)
    return str(pinned_spec(info.weights_uri, info.sha256, ref.version, run_like=parse_spec(configured)))
