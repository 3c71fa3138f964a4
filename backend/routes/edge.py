"""What every request goes through at the edge: authentication (:mod:`backend.access`), timing, the request's log
line and metrics, JSON bodies parsed once, and errors as JSON ``{"error": message, "status": code}``.

A route records what its log line should carry in ``g.log`` (project, task, model version, ...); the line is written
once, when the response leaves, with the status and the time taken. An error's message is in both the reply and the
log line, so the log says why a request failed (Label Studio does not show it to the annotator). The caller
(:class:`~backend.access.Caller`) is in ``g.caller``; a route whose view is marked with
:func:`~backend.access.needs` is checked before it runs, and a part of a route that needs more (a pin in
``/setup``) asks :func:`require`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from adaptiveclick.labelstudio.errors import BadRequest, RequestError

from ..access import Caller, Need, need_of
from ..components import current_backend
from ..metrics import method_label, status_class
from ..projects import url_project

logger = logging.getLogger("adaptiveclick.backend.requests")
QUIET_ENDPOINTS = ("/metrics", "/health")  # logged only when they fail: probes call them every few seconds
#: names the replica that answered, on every response: behind a load balancer, which one served a project
REPLICA_HEADER = "X-AdaptiveClick-Replica"


def install(app: Flask) -> None:
    """The hooks and error handlers of :mod:`backend.routes.edge` on ``app``."""
    app.before_request(start_request)
    app.after_request(finish_request)
    app.register_error_handler(RequestError, request_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)


def start_request() -> None:
    """Start the clock and the log line; authenticate the caller and check what the route needs (a
    :class:`RequestError` from here is answered like any other)."""
    g.start = time.perf_counter()
    g.log = {} if url_project() is None else {"project": url_project()}
    g.caller = Caller()
    access = current_backend().access
    scheme, credentials = _credentials()
    g.caller = access.authenticate(scheme, credentials, request.remote_addr or "unknown")
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    access.check(g.caller, need_of(view), f"{request.method} {request.path[:100]}")


def caller() -> Caller:
    """Who sent the current request (anonymous before the edge has authenticated it)."""
    return g.get("caller", Caller())


def require(need: Need, what: str) -> None:
    """Raise 401/403 (naming the setting) unless the current caller may do ``what``, which needs ``need``."""
    current_backend().access.check(caller(), need, what)


def _credentials() -> tuple[str | None, tuple[str, str] | str | None]:
    """``(scheme, credentials)`` of the ``Authorization`` header: ``("basic", (user, password))``,
    ``("bearer", token)``, ``(None, None)`` without one; anything else is a credential that fails."""
    header = request.headers.get("Authorization")
    if header is None:
        return None, None
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        return "basic", (auth.username or "", auth.password or "")
    if auth is not None and auth.type == "bearer" and auth.token:
        return "bearer", auth.token
    return (auth.type if auth is not None else "malformed"), None


def finish_request(response: Response) -> Response:
    """Count and time the request, write its log line, and name the replica that answered."""
    seconds = time.perf_counter() - g.get("start", time.perf_counter())
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    backend = current_backend()
    response.headers[REPLICA_HEADER] = backend.settings.replica_name
    metrics = backend.metrics
    metrics.requests.labels(endpoint, method_label(request.method), status_class(response.status_code)).inc()
    metrics.latency.labels(endpoint).observe(seconds)
    level = logging.WARNING if response.status_code >= 400 else logging.INFO
    if endpoint not in QUIET_ENDPOINTS or response.status_code >= 400:
        logger.log(
            level,
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "ms": round(seconds * 1e3, 1),
                **g.get("log", {}),
            },
        )
    return response


def request_error(exc: RequestError):
    return error_reply(exc.message, exc.status_code, exc.headers)


def http_error(exc: HTTPException):
    return error_reply(exc.description or exc.name, exc.code or 500)


def unexpected_error(exc: Exception):
    logger.exception("unhandled error", extra={"path": request.path})
    return error_reply(f"internal error ({exc.__class__.__name__}); see the backend's log", 500)


def json_body() -> Any:
    """The request's JSON body (any JSON value; the parsers check its shape), or a 400 saying what is wrong."""
    try:
        body = request.get_json(silent=True, force=True)
    except RecursionError:  # json.loads recurses per nesting level
        raise BadRequest("request body is JSON nested too deeply") from None
    if body is None:
        raise BadRequest("request body must be valid JSON (UTF-8, an object)")
    return body


def error_reply(message: str, status: int, headers: dict | None = None):
    """The JSON error reply; the request's log line carries the same message, so the log says why."""
    g.setdefault("log", {})["error"] = message
    if status == 503:
        headers = {"Retry-After": "2", **(headers or {})}
    return jsonify({"error": message, "status": status}), status, headers or {}


def naming(project: int | None, reply: dict[str, Any]) -> dict[str, Any]:
    """``reply`` with the project it answers, when the request named one."""
    return reply if project is None else {**reply, "project": project}
