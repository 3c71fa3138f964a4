"""``GET /`` and ``GET /health`` (Label Studio's connection check and the container's health check) and
``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from ..components import current_backend
from ..projects import url_project
from .edge import naming

routes = Blueprint("health", __name__)


@routes.get("/")
@routes.get("/health")
def health():
    """``{"status": "UP", "model_class", "model_version", "replica"}``: the version the connection URL's project is
    served, and which replica answers (behind a load balancer)."""
    project = url_project()
    backend = current_backend()
    version = backend.holder.version_for(project)
    reply = {
        "status": "UP",
        "model_class": "AdaptiveClick",
        "model_version": version,
        "replica": backend.settings.replica_name,
    }
    return jsonify(naming(project, reply))


@routes.get("/metrics")
def metrics():
    return Response(current_backend().metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)
