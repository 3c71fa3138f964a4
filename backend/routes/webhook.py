"""``POST /webhook``: Label Studio's annotation events and "Start training".

Events can start work (a fine-tune), so they count only from a caller that may change what is served (the
connection credential, :mod:`backend.access`) and only for projects the backend knows (set up through ``/setup``
or holding a registry line, :class:`backend.projects.KnownProjects`): ``START_TRAINING`` otherwise gets 403 or
409 saying why, an annotation event is acknowledged and ignored with the reason.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from adaptiveclick.labelstudio.errors import RequestError

from ..access import Forbidden, Need
from ..components import current_backend
from ..projects import request_project
from ..webhook import parse_webhook
from .edge import json_body, require

routes = Blueprint("webhook", __name__)


@routes.post("/webhook")
def webhook():
    backend = current_backend()
    event = parse_webhook(json_body())
    if event is None:
        return jsonify({"status": "ignored"}), 200
    project = request_project(event.project_id)  # a /projects/<id> connection URL only takes its project's events
    g.log.update(action=event.action, project=project)
    training = event.action == "START_TRAINING"
    try:
        require(Need.CHANGE, "starting a fine-tune (START_TRAINING)" if training else "counting annotation events")
    except Forbidden as exc:
        if training:
            raise
        return jsonify({"status": "ignored", "reason": exc.message}), 200
    if project not in backend.projects:
        reason = (
            f"project {project} is not set up with this backend and has no registry line: connect the model to "
            "the project in Label Studio (it calls /setup) and retry"
        )
        if training:
            raise RequestError(reason, 409)
        return jsonify({"status": "ignored", "reason": reason}), 200
    backend.metrics.webhook_events.labels(event.action).inc()
    result = backend.webhooks.dispatch(event)
    return jsonify({"status": "ok", "result": result}), 201
