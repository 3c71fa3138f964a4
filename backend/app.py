"""The Flask application: thin routes over :mod:`backend.service`, :mod:`backend.versions`, :mod:`backend.webhook`
and friends.

Routes (label-studio-ml 2.x): ``GET /`` and ``GET /health``, ``POST /setup``, ``POST /predict`` (clicks, or the
tasks' rectangles for Retrieve Predictions: :mod:`backend.batch`), ``POST /webhook``, ``GET /versions``, plus
``POST /versions/<project>`` (pin a version, Basic auth), ``GET /jobs`` (fine-tune and annotate jobs),
``/jobs/<project>/annotate`` (:mod:`backend.annotate_jobs`) and ``GET /metrics`` (Prometheus); every route also
answers under ``/projects/<id>/`` (:mod:`backend.projects`). Each request is answered by its project's model
(:class:`~backend.model_holder.ModelHolder`). Errors are JSON ``{"error": message}`` with a 4xx status for
anything the client can fix; the process keeps serving after any of them.
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
from model.loading import load_predictor
from model.predictor import Predictor
from model.spec import parse_spec
from storage.registry import open_registry

from .admission import Admission
from .annotate_jobs import AnnotateLauncher, annotate_routes, served_spec_now
from .batch import BoxPredictor
from .cache import SessionCache
from .metrics import Metrics
from .model_holder import CONFIGURED_LINE, ModelHolder, ServedModel
from .model_pool import ModelPool
from .projects import ProjectPrefix, request_project, url_project
from .registry_watcher import RegistryWatcher
from .service import SegmentationService
from .settings import MAX_BODY_BYTES, RESERVED_THREADS, Settings
from .training import FinetuneLauncher
from .versions import SOURCE_API, apply_setup_pin, pin_project, version_listing
from .webhook import Handler, WebhookDispatcher, parse_webhook

logger = logging.getLogger("backend.app")


def create_app(
    settings: Settings | None = None,
    predictor: Predictor | None = None,
    fetcher: ImageFetcher | None = None,
    webhook_handler: Handler | None = None,
    watch_registry: bool = False,
) -> Flask:
    """Build the app. Without ``predictor`` it loads ``settings.predictor`` when a request needs it (call this in
    the serving process, after any fork); the registry is read first, and the model of a request that names no
    project is loaded before this returns, so the first answer comes from the registry's version when there is
    one. ``fetcher`` and ``webhook_handler`` replace the defaults (tests); the default webhook handler starts
    fine-tune jobs. ``watch_registry`` starts the hot-swap watcher on the model registry."""
    settings = settings or Settings.from_env()
    device = None if settings.device == "auto" else settings.device
    served_spec = _with_device(settings.predictor, device)

    def configured() -> ServedModel:
        built = predictor or load_predictor(served_spec)
        return ServedModel(built, built.model_version, CONFIGURED_LINE, built.memory_bytes(), configured_key)

    configured_key = f"{CONFIGURED_LINE}/{served_spec if predictor is None else predictor.model_version}"
    metrics = Metrics()
    holder = ModelHolder(configured, configured_key, lambda ref: watcher.build(ref), ModelPool(settings.pool_limit))
    watcher = RegistryWatcher(
        holder,
        open_registry(settings.registry_uri),
        served_spec,
        settings.registry_poll_seconds,
        on_swap=metrics.record_swap,
        on_reject=lambda version, reason: metrics.model_rejections.inc(),
    )
    watcher.poll_once()  # the registry's lines and pins, before the first request
    holder.current(None)  # the default model, loaded now (a broken registry version is rejected here)
    cache = SessionCache(settings.cache_bytes)
    admission = Admission(
        settings.prediction_slots,
        f"ADAPTIVECLICK_THREADS={settings.threads}, {RESERVED_THREADS} of them kept for /health and /setup",
    )
    fetcher = fetcher or ImageFetcher.from_settings(settings.label_studio)
    service = SegmentationService(holder, cache, fetcher, settings.threshold, settings.request_deadline)
    launcher = FinetuneLauncher(settings, has_registry_version=lambda project: _has_version(holder, project))
    boxes = BoxPredictor(
        holder,
        fetcher,
        settings.threshold,
        settings.request_deadline,
        settings.batch_deadline,
        settings.label_studio.polygons,
    )
    annotate = AnnotateLauncher(
        settings, lambda project: served_spec_now(holder.wanted(project)[1], watcher.registry, served_spec)
    )
    webhooks = WebhookDispatcher(webhook_handler or launcher.handle_event)
    metrics.add_collector(lambda: _scrape_time_metrics(cache, webhooks, holder, admission))
    if watch_registry:
        watcher.start()

    app = Flask(__name__)
    app.wsgi_app = ProjectPrefix(app.wsgi_app)  # type: ignore[method-assign]
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
        g.log = {} if url_project() is None else {"project": url_project()}
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
        project = url_project()
        reply = {"status": "UP", "model_class": "AdaptiveClick", "model_version": holder.version_for(project)}
        return jsonify(_naming(project, reply))

    @app.post("/setup")
    def setup():
        parsed = parse_setup_request(_json_body())
        project = request_project(parsed.project)
        g.log.update(project=project)
        # Label Studio stamps predictions with this version: it must be the one /predict will report. Nothing is
        # loaded here (Label Studio waits 3 s for /setup); a new pin's version loads in the background
        version = apply_setup_pin(watcher.registry, watcher, project, parsed.model_version, parsed.unpin)
        g.log.update(model_version=version)
        return jsonify({"model_version": version})

    @app.post("/predict")
    def predict():
        with admission.admitted():
            return _predict()

    def _predict():
        parsed = parse_predict_request(_json_body(), settings.max_prompts)
        project = request_project(parsed.project)
        g.log.update(project=project)  # an error's log line names the project too
        if isinstance(parsed, PreannotationRequest) and parsed.has_context:  # an interactive request, no prompt yet
            g.log.update(tasks=len(parsed.tasks))
            return jsonify(_naming(project, {"results": [], "model_version": holder.version_for(project)}))
        if isinstance(parsed, PreannotationRequest):  # Retrieve Predictions: masks from the tasks' rectangles
            answer = boxes.answer(parsed, project)
            g.log.update(model_version=answer.model_version, **answer.log_fields())
            return jsonify(_naming(project, {"results": answer.results, "model_version": answer.model_version}))
        g.log.update(task=parsed.task_id)
        segmentation = service.segment(parsed, project)
        metrics.model_latency.observe(segmentation.seconds_model)
        metrics.network_runs.inc(segmentation.network_runs)
        metrics.cached_clicks.inc(segmentation.cached_clicks)
        g.log.update(
            clicks=segmentation.clicks,
            network_runs=segmentation.network_runs,
            cached_clicks=segmentation.cached_clicks,
            image_cached=segmentation.image_cached,
            model_ms=round(segmentation.seconds_model * 1e3, 1),
            model_version=segmentation.model_version,
            model_line=segmentation.model_line,
        )
        prediction = mask_prediction(
            parsed, segmentation.mask, segmentation.score, segmentation.model_version, settings.label_studio.polygons
        )
        response = jsonify(_naming(project, {"results": [prediction], "model_version": segmentation.model_version}))
        # the predictor's share of the request, so clients can tell model time from server overhead
        response.headers["Server-Timing"] = f"model;dur={segmentation.seconds_model * 1e3:.2f}"
        return response

    @app.get("/versions")
    def versions():
        return jsonify(version_listing(watcher.registry, holder, url_project()))

    @app.post("/versions/<project>")
    @app.post("/versions")
    def pin(project: str | None = None):
        if settings.basic_auth is None:
            raise RequestError(
                "pinning a version needs the backend's Basic auth: set BASIC_AUTH_USER and "
                "BASIC_AUTH_PASS (or pin with extra_params in Label Studio's Connect Model dialog)",
                403,
            )
        target = _pin_target(project)
        body = _json_body()
        if not isinstance(body, dict) or "version" not in body:
            raise BadRequest('pin with {"version": "<version>"} (or {"version": null} to unpin)')
        wanted = body["version"]
        if wanted is not None and not isinstance(wanted, str):
            raise BadRequest("'version' must be a version name or null")
        g.log.update(project=target, pin=wanted)
        return jsonify(pin_project(watcher.registry, watcher, target, wanted, SOURCE_API))

    @app.post("/webhook")
    def webhook():
        event = parse_webhook(_json_body())
        if event is None:
            return jsonify({"status": "ignored"}), 200
        request_project(event.project_id)  # a /projects/<id> connection URL only takes its project's events
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
                "served": {str(p): key for p, key in holder.served_keys().items()},
                "loaded_models": holder.pool.keys(),
            }
        )

    @app.get("/jobs/<int:project>")
    def job(project: int):
        return jsonify(launcher.status(project).to_json())

    @app.get("/metrics")
    def prometheus():
        return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)

    return app


def _naming(project: int | None, reply: dict[str, Any]) -> dict[str, Any]:
    """``reply`` with the project it answers, when the request named one."""
    return reply if project is None else {**reply, "project": project}


def _pin_target(path_project: str | None) -> int | None:
    """``POST /versions/<project>``: a project id or ``base``; ``/projects/<id>/versions`` names it in the URL."""
    if path_project is None:
        return url_project()
    if path_project == "base":
        return None
    if not path_project.isascii() or not path_project.isdigit() or len(path_project) > 18:
        raise BadRequest(f"POST /versions/<project>: expected a project id or 'base', got {path_project[:40]!r}")
    return request_project(int(path_project))


def _with_device(spec: str, device: str | None) -> str:
    """The served spec with the device the backend was told to use, so new versions land on it too."""
    parsed = parse_spec(spec)
    if device and not parsed.is_baseline:
        return str(parsed.with_options(device=device))
    return spec


def _has_version(holder: ModelHolder, project: int) -> bool:
    """Whether a fine-tune of ``project`` can start from the registry (the version it is served from there)."""
    return holder.state.served_for(project)[0] is not None


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


def _scrape_time_metrics(
    cache: SessionCache, webhooks: WebhookDispatcher, holder: ModelHolder, admission: Admission
) -> list[GaugeMetricFamily]:
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
    models = GaugeMetricFamily(
        "adaptiveclick_model_info",
        "The model each project was last served (value 1)",
        labels=["project", "line", "version"],
    )
    for served_project, key in sorted(holder.served_keys().items(), key=lambda item: str(item[0])):
        line, _, version = key.partition("/")
        models.add_metric(["" if served_project is None else str(served_project), line, version], 1)
    loaded = GaugeMetricFamily("adaptiveclick_models_loaded", "Models held in memory", value=len(holder.pool.keys()))
    loaded_bytes = GaugeMetricFamily(
        "adaptiveclick_models_loaded_bytes", "Weights of the models held in memory", value=holder.pool.nbytes()
    )
    in_progress = GaugeMetricFamily(
        "adaptiveclick_predictions_in_progress",
        f"/predict requests in progress (at most {admission.slots}; more get 503)",
        value=admission.in_progress,
    )
    return [cache_bytes, cache_entries, hits, annotations, models, loaded, loaded_bytes, in_progress]
