"""``GET /jobs`` (every fine-tune and annotate job, the registry, what is served and loaded), ``GET /jobs/<project>``
(a project's latest fine-tune) and ``POST``/``GET /jobs/<project>/annotate`` (:mod:`backend.annotate_jobs`)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from adaptiveclick.labelstudio.errors import BadRequest

from ..annotate_jobs import parse_annotate_request
from ..components import current_backend
from ..jobs import JobRunning
from .edge import json_body

routes = Blueprint("jobs", __name__)


@routes.get("/jobs")
def jobs():
    backend = current_backend()
    launchers = (backend.finetunes, backend.annotate)
    return jsonify(
        {
            "jobs": [launcher.status(p).to_json() for launcher in launchers for p in launcher.projects()],
            "registry": backend.watcher.registry.uri,
            "rejected_versions": backend.watcher.rejected,
            "served": {str(p): key for p, key in backend.holder.served_keys().items()},
            "loaded_models": backend.holder.pool.keys(),
        }
    )


@routes.get("/jobs/<int:project>")
def finetune_job(project: int):
    return jsonify(current_backend().finetunes.status(project).to_json())


@routes.post("/jobs/<int:project>/annotate")
def start_annotate_job(project: int):
    """202 with the job when it started, 409 while one runs for the project."""
    options = parse_annotate_request(json_body() if request.get_data().strip() else None)
    try:
        status = current_backend().annotate.start(project, options)
    except JobRunning as exc:
        raise BadRequest(f"{exc}: see GET /jobs/{project}/annotate", 409) from None
    return jsonify({"status": "started", "job": status.to_json()}), 202


@routes.get("/jobs/<int:project>/annotate")
def annotate_job(project: int):
    return jsonify(current_backend().annotate.status(project).to_json())
