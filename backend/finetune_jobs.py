"""Fine-tune jobs started by the backend: Label Studio's "Start training" or an annotation-count threshold.

A job is the ``adaptiveclick finetune`` command, launched by :class:`~backend.jobs.JobLauncher` in
``MODEL_DIR/jobs/project-<id>/<UTC time>/`` (``ADAPTIVECLICK_TRAINING_RUNNER=local``), or a Kubernetes Job made by
:class:`~backend.cluster_jobs.KubernetesJobs` (``kubernetes``) with the same arguments. It publishes to the
backend's registry; the registry watcher then swaps the new version in if the gate let it through.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from adaptiveclick.model.spec import parse_spec, pinned_spec

from .cluster_jobs import ClusterJobError, KubernetesJobs
from .jobs import JobLauncher, JobLimit, JobRunning, JobStatus
from .projects import ProjectTable
from .settings import Settings
from .webhook import ProjectCounts, WebhookEvent

logger = logging.getLogger(__name__)


class NoStartingWeights(RuntimeError):
    """Nothing to fine-tune from: no registry version, no checkpoint served, no --init in FINETUNE_ARGS."""


class FinetuneLauncher(JobLauncher):
    """Starts and reports fine-tune jobs: local processes, or the Jobs of ``cluster`` when it is given.
    ``command_prefix`` exists for tests."""

    def __init__(
        self,
        settings: Settings,
        has_registry_version=lambda project: False,
        command_prefix: list[str] | None = None,
        cluster: KubernetesJobs | None = None,
    ) -> None:
        super().__init__(
            settings,
            Path(settings.model_dir) / "jobs",
            "finetune",
            "fine-tune",
            settings.max_finetunes,
            "ADAPTIVECLICK_MAX_FINETUNES",
        )
        self.has_registry_version = has_registry_version
        self.cluster = cluster
        self.command_prefix = command_prefix or [sys.executable, "-m", "adaptiveclick", "finetune"]
        # project -> net annotations when its last job started
        self._baseline_annotations: ProjectTable[int] = ProjectTable(settings.max_projects)

    # -- commands -------------------------------------------------------------------------------------------------

    def init_argument(self, project: int) -> list[str]:
        """``--init`` for a new job of ``project``: the registry's version for it (its own line's current version,
        else the base line's), else the served checkpoint."""
        extra = shlex.split(self.settings.finetune_args)
        if "--init" in extra or any(a.startswith("--init=") for a in extra):
            return []
        if self.has_registry_version(project):
            return ["--init", "registry"]
        spec = parse_spec(self.settings.predictor)
        if not spec.is_checkpoint:
            raise NoStartingWeights(
                "no starting weights: the registry has no version yet and the served predictor "
                f"({spec.source}) is not an AdaptiveClick checkpoint; set FINETUNE_ARGS='--init CHECKPOINT' "
                "(or mae:PATH) or serve a checkpoint"
            )
        sha = spec.option("sha256")
        return ["--init", str(pinned_spec(spec.source, sha)) if sha else spec.source]

    def arguments(self, project: int) -> list[str]:
        """What a fine-tune of ``project`` is told wherever it runs: the project, where to start from, FINETUNE_ARGS
        (the output folder and the registry are the runner's)."""
        return ["--ls-project", str(project), *self.init_argument(project), *shlex.split(self.settings.finetune_args)]

    def command(self, project: int, folder: Path) -> list[str]:
        output = ["--output", str(folder / "run"), "--registry", self.settings.registry_uri, "--no-progress"]
        return [*self.command_prefix, *output, *self.arguments(project)]

    def start(self, project: int, reason: str) -> JobStatus:
        """Launch a job for ``project`` (JobRunning if one runs, NoStartingWeights if there is nothing to tune,
        ClusterJobError if the Kubernetes API refuses)."""
        if self.cluster is not None:
            return self.cluster.start(project, self.arguments(project), reason)
        return self.launch(project, reason, lambda folder: self.command(project, folder))

    def status(self, project: int) -> JobStatus:
        return self.cluster.status(project) if self.cluster is not None else super().status(project)

    def projects(self) -> list[int]:
        return self.cluster.projects() if self.cluster is not None else super().projects()

    # -- the webhook handler ---------------------------------------------------------------------------------------

    def handle_event(self, event: WebhookEvent, counts: ProjectCounts) -> dict:
        """START_TRAINING starts a job; annotation events start one when FINETUNE_MIN_ANNOTATIONS new annotations
        have accumulated since the project's last job."""
        if event.action == "START_TRAINING":
            return self._try_start(event.project_id, "START_TRAINING", counts, requested=True)
        threshold = self.settings.finetune_min_annotations
        new = counts.annotations - self._baseline_annotations.get(event.project_id, 0)
        if threshold and new >= threshold:
            return self._try_start(event.project_id, f"{new} new annotations (threshold {threshold})", counts)
        return {"status": "counted", "new_annotations": new, "threshold": threshold}

    def _try_start(self, project: int, reason: str, counts: ProjectCounts, requested: bool = False) -> dict:
        """Start a job; an explicit request (``START_TRAINING``) hears of a full house as 429 (:class:`JobLimit`),
        a threshold trigger gets "not started" and tries again at the next event."""
        try:
            status = self.start(project, reason)
        except JobRunning as exc:
            return {"status": "already running", "message": str(exc)}
        except JobLimit as exc:
            if requested:
                raise
            logger.warning("fine-tune not started", extra={"project": project, "error": exc.message})
            return {"status": "not started", "message": exc.message}
        except (NoStartingWeights, ClusterJobError) as exc:
            logger.warning("fine-tune not started", extra={"project": project, "error": str(exc)})
            return {"status": "not started", "message": str(exc)}
        self._baseline_annotations.put(project, counts.annotations)
        # the job's name, not its folder: absolute paths are for the operator token (GET /jobs with it)
        return {"status": "started", "job": status.cluster_job or Path(status.folder or "").name}
