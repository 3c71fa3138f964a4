"""``GET /jobs`` (every fine-tune and annotate job, the registry, what is served and loaded), ``GET /jobs/<project>``
(a project's latest fine-tune) and ``POST``/``GET /jobs/<project>/annotate`` (:mod:`backend.annotate_jobs`).

Starting an annotate job is an operator route (``ADAPTIVECLICK_ADMIN_TOKEN``); the listings answer everyone the
connection credential lets in, with the jobs' folders, log tails and the registry's folder only for the operator
(:meth:`backend.jobs.JobStatus.to_json`).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, jsonify, request

from adaptiveclick.labelstudio.errors import BadRequest
from adaptiveclick.storage.logs import redact

from ..access import Need, needs
from ..annotate_jobs import parse_annotate_request
from ..components import current_backend
from ..jobs import JobRunning, JobStatus
from ..projects import route_project
from .edge import caller, json_body

routes = Blueprint("jobs", __name__)


def shown(status: JobStatus) -> dict:
    """A job as the caller may see it (details for the operator)."""
    return status.to_json(details=caller().operator, secrets=current_backend().settings.secrets)


@routes.get("/jobs")
def jobs():
    backend = current_backend()
    launchers = (backend.finetunes, backend.annotate)
    secrets = backend.settings.secrets
    registry = backend.watcher.registry.uri
    if "://" not in registry and not caller().operator:
        registry = f"a folder ({Path(registry).name}; the operator token shows its path)"
    holder = backend.holder
    return jsonify(
        {
            "jobs": [
                shown(status)
                for launcher in launchers
                for status in map(launcher.status, launcher.projects())
                if status.state != "none"  # a project whose job was refused (429) has a folder but no job
            ],
            "running": {launcher.kind: launcher.running() for launcher in launchers},
            "registry": redact(registry, secrets),
            "rejected_versions": {key: redact(why, secrets) for key, why in backend.watcher.rejected.items()},
            "served": {str(p): holder.display_key(key) for p, key in holder.served_keys().items()},
            "loaded_models": [holder.display_key(key) for key in holder.pool.keys()],
        }
    )


@routes.get("/jobs/<project>")
def finetune_job(project: str):
    return jsonify(shown(current_backend().finetunes.status(route_project(project))))


@routes.post("/jobs/<project>/annotate")
@needs(Need.OPERATOR)
def start_annotate_job(project: str):
    """202 with the job when it started, 409 while one runs for the project, 429 when as many annotate jobs as
    allowed run (``ADAPTIVECLICK_MAX_ANNOTATE_JOBS``)."""
    target = route_project(project)
    options = parse_annotate_request(json_body() if request.get_data().strip() else None)
    try:
        status = current_backend().annotate.start(target, options)
    except JobRunning as exc:
        raise BadRequest(f"{exc}: see GET /jobs/{target}/annotate", 409) from None
    return jsonify({"status": "started", "job": shown(status)}), 202


@routes.get("/jobs/<project>/annotate")
def annotate_job(project: str):
    return jsonify(shown(current_backend().annotate.status(route_project(project))))
