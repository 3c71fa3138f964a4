"""``POST /setup`` (Label Studio connects a project) and ``POST /predict`` (a click, or Retrieve Predictions)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from adaptiveclick.labelstudio.media import MediaScope
from adaptiveclick.labelstudio.predictions import mask_prediction
from adaptiveclick.labelstudio.protocol import (
    ClickRequest,
    PreannotationRequest,
    parse_predict_request,
    parse_setup_request,
)

from ..access import Need
from ..components import current_backend
from ..projects import with_request_project
from ..versions import apply_setup_pin
from .edge import caller, json_body, naming, require

routes = Blueprint("predict", __name__)


@routes.post("/setup")
def setup():
    """Label Studio stamps predictions with the version answered here: the one /predict will report. Nothing is
    loaded here (Label Studio waits 3 s for /setup); a new pin's version loads in the background."""
    backend = current_backend()
    parsed = with_request_project(parse_setup_request(json_body()))
    g.log.update(project=parsed.project)
    backend.projects.saw_setup(parsed.project)  # from now on the backend keeps the project's state
    watcher = backend.watcher
    version = apply_setup_pin(
        watcher.registry,
        watcher,
        parsed.project,
        parsed.model_version,
        parsed.unpin,
        authorize=lambda: require(Need.CHANGE, "pinning a model version (extra_params model_version)"),
    )
    g.log.update(model_version=version)
    return jsonify({"model_version": version})


@routes.post("/predict")
def predict():
    backend = current_backend()
    with backend.admission.admitted():
        parsed = with_request_project(parse_predict_request(json_body(), backend.settings.max_prompts))
        g.log.update(project=parsed.project)  # an error's log line names the project too
        if isinstance(parsed, PreannotationRequest):
            return _preannotate(parsed)
        return _click(parsed)


def media_scope(project: int | None, task_id: int | None = None) -> MediaScope:
    """The credentials the caller's images may use: the request's project and task, and none of the backend's
    own when the caller is anonymous (:meth:`backend.access.AccessPolicy.media_refusal`)."""
    return MediaScope(project, task_id, refusal=current_backend().access.media_refusal(caller()))


def _preannotate(parsed: PreannotationRequest):
    backend = current_backend()
    if parsed.has_context:  # an interactive request with no prompt yet
        g.log.update(tasks=len(parsed.tasks))
        version = backend.holder.version_for(parsed.project)
        return jsonify(naming(parsed.project, {"results": [], "model_version": version}))
    # Retrieve Predictions: masks from the tasks' rectangles
    answer = backend.boxes.answer(parsed, media_scope(parsed.project))
    g.log.update(model_version=answer.model_version, **answer.log_fields())
    return jsonify(naming(parsed.project, {"results": answer.results, "model_version": answer.model_version}))


def _click(parsed: ClickRequest):
    backend = current_backend()
    g.log.update(task=parsed.task_id)
    segmentation = backend.segmentation.segment(parsed, media_scope(parsed.project, parsed.task_id))
    metrics = backend.metrics
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
        parsed,
        segmentation.mask,
        segmentation.score,
        segmentation.model_version,
        backend.settings.label_studio.polygons,
    )
    reply = {"results": [prediction], "model_version": segmentation.model_version}
    response = jsonify(naming(parsed.project, reply))
    # the predictor's share of the request, so clients can tell model time from server overhead
    response.headers["Server-Timing"] = f"model;dur={segmentation.seconds_model * 1e3:.2f}"
    return response
