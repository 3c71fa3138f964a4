"""``GET /versions`` (a line's versions, for Label Studio's model settings) and ``POST /versions/<project>`` (pin or
unpin a version: rollback)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from adaptiveclick.labelstudio.errors import BadRequest
from adaptiveclick.labelstudio.protocol import is_id_text

from ..access import Need, needs
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
@needs(Need.OPERATOR)
def pin(project: str | None = None):
    """``{"version": "<version>"}`` pins (loaded and test-clicked first), ``{"version": null}`` unpins. An
    operator route (``ADAPTIVECLICK_ADMIN_TOKEN``); Label Studio pins through ``/setup``'s ``extra_params``."""
    backend = current_backend()
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
    if not is_id_text(path_project):
        raise BadRequest(f"POST /versions/<project>: expected a project id or 'base', got {path_project[:40]!r}")
    return request_project(int(path_project))
