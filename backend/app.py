"""The Flask application: :func:`create_app` builds the backend's parts (:mod:`backend.components`) and mounts the
routes (:mod:`backend.routes`), one module per resource.

Routes (label-studio-ml 2.x): ``GET /`` and ``GET /health``, ``POST /setup``, ``POST /predict`` (clicks, or the
tasks' rectangles for Retrieve Predictions: :mod:`backend.batch`), ``POST /webhook``, ``GET /versions``, plus
``POST /versions/<project>`` (pin a version: the operator token), ``GET /jobs`` (fine-tune and annotate jobs),
``/jobs/<project>/annotate`` (:mod:`backend.annotate_jobs`) and ``GET /metrics`` (Prometheus); every route also
answers under ``/projects/<id>/`` (:mod:`backend.projects`). Who may call what: :mod:`backend.access`. Each
request is answered by its project's model (:class:`~backend.model_holder.ModelHolder`). Errors are JSON
``{"error": message}`` with a 4xx status for anything the client can fix; the process keeps serving after any of
them.
"""

from __future__ import annotations

from flask import Flask

from adaptiveclick.labelstudio.media import ImageFetcher
from adaptiveclick.model.predictor import Predictor

from .components import EXTENSION, Backend, build_backend
from .projects import ProjectPrefix
from .routes import BLUEPRINTS, edge
from .settings import MAX_BODY_BYTES, Settings
from .webhook import Handler


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
    backend = build_backend(settings or Settings.from_env(), predictor, fetcher, webhook_handler)
    if watch_registry:
        backend.watcher.start()
    app = Flask(__name__)
    app.wsgi_app = ProjectPrefix(app.wsgi_app)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions[EXTENSION] = backend
    edge.install(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


def backend_of(app: Flask) -> Backend:
    """The :class:`Backend` an app built by :func:`create_app` holds (for the server and tests)."""
    return app.extensions[EXTENSION]
