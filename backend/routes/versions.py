"""``GET /versions`` (a line's versions, for Label Studio's model settings) and ``POST /versions/<project>`` (pin or
unpin a version: rollback)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from adaptiveclick.labelstudio.errors import BadRequest, RequestError

from ..components import current_backend
from ..projects import request_project, url_project
from ..versions import SOURCE_API, pin_project, version_listing
from .edge import json_body

routes = Blueprint("versions", __name__)


@routes.get("/versions")
def versions():
    backend = current_backend()
    watcher = backend.watcher
    return jsonify(version_listing(watcher.registry, backend.holder, url_project(), watcher.served_spec))


@routes.post("/versions/<project>")
@routes.post("/versions")
def pin(project: str | None = None):
    """``{"version": "<version>"}`` pins (loaded and test-clicked first), ``{"version": null}`` unpins."""
    backend = current_backend()
    if backend.settings.basic_auth is None:
        raise RequestError(
            "pinning a version needs the backend's Basic auth: set BASIC_AUTH_USER and "
            "BASIC_AUTH_PASS (or pin with extra_params in Label Studio's Connect Model dialog)",
            403,
        )
    target = pin_target(project)
    body = json_body()
    if not isinstance(body, dict) or "version" not in body:
        raise BadRequest('pin with {"version": "<version>"} (or {"version": null} to unpin)')
    wanted = body["version"]
    if wanted is not None and not isinstance(wanted, str):
        raise BadRequest("'version' must be a version name or null")
    g.log.update(project=target, pin=wanted)
    return jsonify(pin_project(backend.watcher.registry, backend.watcher, target, wanted, SOURCE_API))


def pin_target(path_project: str | None) -> int | None:
    """``POST /versions/<project>``: a project id or ``base``; ``/projects/<id>/versions`` names it in the URL."""
    if path_project is None:
        return url_project()
    if path_project == "base":
        return None
    if not path_project.isascii() or not path_project.isdigit() or len(path_project) > 18:
        raise BadRequest(f"POST /versions/<project>: expected a project id or 'base', got {path_project[:40]!r}")
    return request_project(int(path_project))
