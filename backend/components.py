"""The backend's parts, built once per serving process and held by the app as one typed :class:`Backend`.

:func:`build_backend` wires them (what talks to what is decided here and nowhere else); routes reach them with
:func:`current_backend`. Nothing here knows HTTP.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flask import current_app
from prometheus_client.core import GaugeMetricFamily

from adaptiveclick.labelstudio.media import ImageFetcher
from adaptiveclick.model.loading import load_predictor
from adaptiveclick.model.predictor import Predictor
from adaptiveclick.model.spec import parse_spec
from adaptiveclick.storage.registry import open_registry

from .access import AccessPolicy
from .admission import Admission
from .annotate_jobs import AnnotateLauncher, served_spec_now
from .batch import BoxPredictor
from .cache import SessionCache
from .cluster_jobs import KubernetesJobs
from .finetune_jobs import FinetuneLauncher
from .metrics import Metrics
from .model_holder import ModelHolder
from .model_pool import ModelPool
from .projects import KnownProjects
from .registry_watcher import RegistryWatcher
from .segmentation import SegmentationService
from .served_model import CONFIGURED_LINE, ServedModel
from .settings import RESERVED_THREADS, Settings
from .webhook import Handler, WebhookDispatcher

EXTENSION = "adaptiveclick"  # the key of the Backend in Flask's app.extensions


@dataclass
class Backend:
    """Everything a route may use: settings, the served models, the session cache, the services and launchers."""

    settings: Settings
    access: AccessPolicy
    projects: KnownProjects
    holder: ModelHolder
    watcher: RegistryWatcher
    cache: SessionCache
    admission: Admission
    segmentation: SegmentationService
    boxes: BoxPredictor
    webhooks: WebhookDispatcher
    finetunes: FinetuneLauncher
    annotate: AnnotateLauncher
    metrics: Metrics


def current_backend() -> Backend:
    """The :class:`Backend` of the app serving the current request."""
    return current_app.extensions[EXTENSION]


def build_backend(
    settings: Settings,
    predictor: Predictor | None = None,
    fetcher: ImageFetcher | None = None,
    webhook_handler: Handler | None = None,
) -> Backend:
    """The parts, with the registry read and the default model loaded (see :func:`backend.app.create_app`)."""
    device = None if settings.device == "auto" else settings.device
    served_spec = _with_device(settings.predictor, device)
    # the spec may be a URL with a signature or userinfo: the key (shown in /jobs and /metrics) holds its hash
    configured_key = f"{CONFIGURED_LINE}/{spec_digest(served_spec) if predictor is None else predictor.model_version}"

    def configured() -> ServedModel:
        built = predictor or load_predictor(served_spec)
        return ServedModel(built, built.model_version, CONFIGURED_LINE, built.memory_bytes(), configured_key)

    metrics = Metrics()
    projects = KnownProjects(settings.max_projects, lambda: holder.state.projects)
    holder = ModelHolder(
        configured,
        configured_key,
        lambda ref: watcher.build(ref),
        ModelPool(settings.pool_limit),
        known=lambda project: project in projects,
        max_projects=settings.max_projects,
    )
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
    cluster = None
    if settings.training_runner == "kubernetes":
        cluster = KubernetesJobs.in_cluster(settings.training_job_template)
    finetunes = FinetuneLauncher(
        settings, has_registry_version=lambda project: _has_version(holder, project), cluster=cluster
    )
    backend = Backend(
        settings=settings,
        access=AccessPolicy(settings.basic_auth, settings.admin_token, settings.unsafe_anonymous),
        projects=projects,
        holder=holder,
        watcher=watcher,
        cache=cache,
        admission=admission,
        segmentation=SegmentationService(holder, cache, fetcher, settings.threshold, settings.request_deadline),
        boxes=BoxPredictor(
            holder,
            fetcher,
            settings.threshold,
            settings.request_deadline,
            settings.batch_deadline,
            settings.label_studio.polygons,
            settings.max_prompts,
        ),
        webhooks=WebhookDispatcher(webhook_handler or finetunes.handle_event, settings.max_projects),
        finetunes=finetunes,
        annotate=AnnotateLauncher(
            settings, lambda project: served_spec_now(holder.wanted(project)[1], watcher.registry, served_spec)
        ),
        metrics=metrics,
    )
    metrics.add_collector(lambda: scrape_time_metrics(backend))
    return backend


def spec_digest(spec: str) -> str:
    """``spec-<12 hex digits>``: names a predictor spec without showing it (a URL's query or userinfo)."""
    return "spec-" + hashlib.sha256(spec.encode()).hexdigest()[:12]


def _with_device(spec: str, device: str | None) -> str:
    """The served spec with the device the backend was told to use, so new versions land on it too."""
    parsed = parse_spec(spec)
    if device and not parsed.is_baseline:
        return str(parsed.with_options(device=device))
    return spec


def _has_version(holder: ModelHolder, project: int) -> bool:
    """Whether a fine-tune of ``project`` can start from the registry (the version it is served from there)."""
    return holder.state.served_for(project)[0] is not None


def scrape_time_metrics(backend: Backend) -> list[GaugeMetricFamily]:
    """The gauges read when ``/metrics`` is scraped: cache, annotation events, served and loaded models, load."""
    stats = backend.cache.stats()
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
    for project, counts in sorted(backend.webhooks.all_counts().items()):
        for kind in ("created", "updated", "deleted", "annotations", "training_requests"):
            annotations.add_metric([str(project), kind], getattr(counts, kind))
    models = GaugeMetricFamily(
        "adaptiveclick_model_info",
        "The model each project was last served (value 1)",
        labels=["project", "line", "version"],
    )
    holder = backend.holder
    for served_project, key in sorted(holder.served_keys().items(), key=lambda item: str(item[0])):
        line, _, version = holder.display_key(key).partition("/")
        models.add_metric(["" if served_project is None else str(served_project), line, version], 1)
    loaded = GaugeMetricFamily("adaptiveclick_models_loaded", "Models held in memory", value=len(holder.pool.keys()))
    loaded_bytes = GaugeMetricFamily(
        "adaptiveclick_models_loaded_bytes", "Weights of the models held in memory", value=holder.pool.nbytes()
    )
    in_progress = GaugeMetricFamily(
        "adaptiveclick_predictions_in_progress",
        f"/predict requests in progress (at most {backend.admission.slots}; more get 503)",
        value=backend.admission.in_progress,
    )
    return [cache_bytes, cache_entries, hits, annotations, models, loaded, loaded_bytes, in_progress]
