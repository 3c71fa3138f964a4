"""``POST /webhook``: Label Studio's annotation events and "Start training"."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from ..components import current_backend
from ..projects import request_project
from ..webhook import parse_webhook
from .edge import json_body

routes = Blueprint("webhook", __name__)


@routes.post("/webhook")
def webhook():
    backend = current_backend()
    event = parse_webhook(json_body())
    if event is None:
        return jsonify({"status": "ignored"}), 200
    request_project(event.project_id)  # a /projects/<id> connection URL only takes its project's events
    backend.metrics.webhook_events.labels(event.action).inc()
    g.log.update(action=event.action, project=event.project_id)
    result = backend.webhooks.dispatch(event)
    return jsonify({"status": "ok", "result": result}), 201
