"""The Flask application: thin routes over :mod:`backend.service`, :mod:`backend.webhook` and friends.

Routes (label-studio-ml 2.x): ``GET /`` and ``GET /health``, ``POST /setup``, ``POST /predict`` (clicks, or the
tasks' rectangles for Retrieve Predictions: :mod:`backend.batch`), ``POST /webhook``, plus ``GET /metrics``
(Prometheus), ``GET /jobs`` (fine-tune and annotate jobs) and ``/jobs/<project>/annotate``
(:mod:`backend.annotate_jobs`). Errors are JSON ``{"error": message}`` with a 4xx status for anything the client
can fix; the process keeps serving after any of them.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from werkzeug.exceptions import HTTPException

from labelstudio.errors import BadRequest, RequestError
from labelstudio.media import ImageFetcher
from labelstudio.protocol import PreannotationRequest, mask_prediction, parse_predict_request, parse_setup_request
from model.predictor import Predictor
from model.spec import parse_spec
from storage.registry import open_registry

from .annotate_jobs import AnnotateLauncher, annotate_routes, served_spec_now
from .batch import BoxPredictor
from .cache import SessionCache
from .metrics import Metrics
from .model_holder import ModelHolder
from .registry_watcher import RegistryWatcher, startup_model
from .service import SegmentationService
from .settings import MAX_BODY_BYTES, Settings
from .training import FinetuneLauncher
from .webhook import Handler, WebhookDispatcher, parse_webhook

logger = logging.getLogger("backend.app")


def create_app(
    settings: Settings | None = None,
    predictor: Predictor | None = None,
    fetcher: ImageFetcher | None = None,
    webhook_handler: Handler | None = None,
    watch_registry: bool = False,
) -> Flask:
    """Build the app. Without ``predictor`` it loads ``settings.predictor`` (call this in the serving process,
    after any fork). ``fetcher`` and ``webhook_handler`` replace the defaults (tests); the default webhook handler
    starts fine-tune jobs. ``watch_registry`` starts the hot-swap watcher on the model registry."""
    settings = settings or Settings.from_env()
    device = None if settings.device == "auto" else settings.device
    served_spec = _with_device(settings.predictor, device)
    registry = open_registry(settings.registry_uri)
    refused = None
    if predictor is None:  # serving: the registry's current version first, if there is a good one
        predictor, _, refused = startup_model(registry, served_spec)
    holder = ModelHolder(predictor)
    cache = SessionCache(settings.cache_bytes)
    service = SegmentationService(
        holder,
        cache,
        fetcher or ImageFetcher.from_settings(settings.label_studio),
        settings.threshold,
        settings.request_deadline,
    )
    boxes = BoxPredictor(
        holder,
        service.fetcher,
        settings.threshold,
        settings.request_deadline,
        settings.batch_deadline,
        settings.label_studio.polygons,
    )
    metrics = Metrics()
    metrics.set_model_version(holder.version)
    watcher = RegistryWatcher(
        holder,
        registry,
        served_spec,
        settings.registry_poll_seconds,
        on_swap=metrics.record_swap,
        on_reject=lambda version, reason: metrics.model_rejections.inc(),
    )
    if refused is not None:
        watcher.reject(refused[0], refused[1], serving=holder.version)
    launcher = FinetuneLauncher(settings, has_registry_version=lambda: _has_current(watcher))
    annotate = AnnotateLauncher(settings, lambda: served_spec_now(holder.version, watcher.registry, served_spec))
    webhooks = WebhookDispatcher(webhook_handler or launcher.handle_event)
    metrics.add_collector(lambda: _scrape_time_metrics(cache, webhooks))
    if watch_registry:
        watcher.start()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["adaptiveclick"] = {
        "settings": settings,
        "holder": holder,
        "cache": cache,
        "service": service,
        "webhooks": webhooks,
        "metrics": metrics,
        "watcher": watcher,
        "launcher": launcher,
        "annotate": annotate,
    }
    app.register_blueprint(annotate_routes(annotate, _json_body))  # POST/GET /jobs/<project>/annotate

    @app.before_request
    def _start():
        g.start = time.perf_counter()
        g.log = {}
        if settings.basic_auth and not _authorized(settings.basic_auth):
            return _error(
                "authentication required: this backend expects HTTP Basic auth",
                401,
                {"WWW-Authenticate": 'Basic realm="adaptiveclick"'},
            )
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        seconds = time.perf_counter() - g.get("start", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(seconds)
        level = logging.WARNING if response.status_code >= 400 else logging.INFO
        if endpoint not in ("/metrics", "/health") or response.status_code >= 400:
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

    @app.errorhandler(RequestError)
    def _request_error(exc: RequestError):
        return _error(exc.message, exc.status_code)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return _error(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error", extra={"path": request.path})
        return _error(f"internal error ({exc.__class__.__name__}); see the backend's log", 500)

    @app.get("/")
    @app.get("/health")
    def health():
        served = holder.current()
        return jsonify({"status": "UP", "model_class": "AdaptiveClick", "model_version": served.version})

    @app.post("/setup")
    def setup():
        parsed = parse_setup_request(_json_body())
        g.log.update(project=parsed.project)
        return jsonify({"model_version": holder.version})

    @app.post("/predict")
    def predict():
        parsed = parse_predict_request(_json_body(), settings.max_prompts)
        if isinstance(parsed, PreannotationRequest) and parsed.has_context:  # an interactive request, no prompt yet
            g.log.update(project=parsed.project, tasks=len(parsed.tasks))
            return jsonify({"results": [], "model_version": holder.version})
        if isinstance(parsed, PreannotationRequest):  # Retrieve Predictions: masks from the tasks' rectangles
            answer = boxes.answer(parsed)
            g.log.update(project=parsed.project, model_version=answer.model_version, **answer.log_fields())
            return jsonify({"results": answer.results, "model_version": answer.model_version})
        segmentation = service.segment(parsed)
        metrics.model_latency.observe(segmentation.seconds_model)
        metrics.network_runs.inc(segmentation.network_runs)
        metrics.cached_clicks.inc(segmentation.cached_clicks)
        g.log.update(
            project=parsed.project,
            task=parsed.task_id,
            clicks=segmentation.clicks,
            network_runs=segmentation.network_runs,
            cached_clicks=segmentation.cached_clicks,
            image_cached=segmentation.image_cached,
            model_ms=round(segmentation.seconds_model * 1e3, 1),
            model_version=segmentation.model_version,
        )
        prediction = mask_prediction(
            parsed, segmentation.mask, segmentation.score, segmentation.model_version, settings.label_studio.polygons
        )
        response = jsonify({"results": [prediction], "model_version": segmentation.model_version})
        # the predictor's share of the request, so clients can tell model time from server overhead
        response.headers["Server-Timing"] = f"model;dur={segmentation.seconds_model * 1e3:.2f}"
        return response

    @app.post("/webhook")
    def webhook():
        event = parse_webhook(_json_body())
        if event is None:
            return jsonify({"status": "ignored"}), 200
        metrics.webhook_events.labels(event.action).inc()
        g.log.update(action=event.action, project=event.project_id)
        result = webhooks.dispatch(event)
        return jsonify({"status": "ok", "result": result}), 201

    @app.get("/jobs")
    def jobs():
        return jsonify(
            {
                "jobs": [job.status(p).to_json() for job in (launcher, annotate) for p in job.projects()],
                "registry": watcher.registry.uri,
                "rejected_versions": watcher.rejected,
            }
        )

    @app.get("/jobs/<int:project>")
    def job(project: int):
        return jsonify(launcher.status(project).to_json())

    @app.get("/metrics")
    def prometheus():
        metrics.set_model_version(holder.version)
        return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)

    return app


def _with_device(spec: str, device: str | None) -> str:
    """The served spec with the device the backend was told to use, so new versions land on it too."""
    parsed = parse_spec(spec)
    if device and not parsed.is_baseline:
        return str(parsed.with_options(device=device))
    return spec


def _has_current(watcher: RegistryWatcher) -> bool:
    try:
        return watcher.registry.current_pointer() is not None
    except Exception:  # an unreadable registry offers no starting point
        return False


def _json_body() -> Any:
    try:
        body = request.get_json(silent=True, force=True)
    except RecursionError:  # json.loads recurses per nesting level
        raise BadRequest("request body is JSON nested too deeply") from None
    if body is None:
        raise BadRequest("request body must be valid JSON (UTF-8, an object)")
    return body


def _authorized(expected: tuple[str, str]) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    user_ok = hmac.compare_digest((auth.username or "").encode(), expected[0].encode())
    pass_ok = hmac.compare_digest((auth.password or "").encode(), expected[1].encode())
    return user_ok and pass_ok


def _error(message: str, status: int, headers: dict | None = None):
    """The JSON error reply; the request's log line carries the same message, so the log says why."""
    g.setdefault("log", {})["error"] = message
    if status == 503:
        headers = {"Retry-After": "2", **(headers or {})}
    return jsonify({"error": message, "status": status}), status, headers or {}


def _scrape_time_metrics(cache: SessionCache, webhooks: WebhookDispatcher) -> list[GaugeMetricFamily]:
    stats = cache.stats()
    cache_bytes = GaugeMetricFamily(
        "adaptiveclick_cache_bytes", "Bytes held by the session cache", value=stats["bytes"]
    )
    cache_entries = GaugeMetricFamily(
        "adaptiveclick_cache_entries", "Entries in the session cache", value=stats["entries"]
    )
    hits = GaugeMetricFamily("adaptiveclick_cache_lookups", "Session cache lookups by outcome", labels=["outcome"])
    hits.add_metric(["hit"], stats["hits"])
    hits.add_metric(["miss"], stats["misses"])
    annotations = GaugeMetricFamily(
        "adaptiveclick_project_annotations", "Annotation events per project since start", labels=["project", "kind"]
    )
    for project, counts in sorted(webhooks.all_counts().items()):
        for kind in ("created", "updated", "deleted", "annotations", "training_requests"):
            annotations.add_metric([str(project), kind], getattr(counts, kind))
    return [cache_bytes, cache_entries, hits, annotations]
