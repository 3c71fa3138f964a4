"""Nuclio entry points of the CVAT interactor: ``init_context`` loads the predictor once, ``handler`` answers a click.

The predictor, limits and polygon settings come from the same environment variables as the Label Studio backend
(``ADAPTIVECLICK_PREDICTOR``, ``DEVICE``, ``ADAPTIVECLICK_THRESHOLD``, ``ADAPTIVECLICK_CACHE_MB``,
``ADAPTIVECLICK_MAX_IMAGE_MB``, ``ADAPTIVECLICK_MAX_IMAGE_PIXELS``, ``ADAPTIVECLICK_POLYGON_TOLERANCE``,
``ADAPTIVECLICK_POLYGON_HOLES``, ``ADAPTIVECLICK_MAX_PROMPTS``, ``ADAPTIVECLICK_REQUEST_DEADLINE``; see
``backend/settings.py``), set in ``function.yaml``. The protocol lives in the installed package,
:mod:`backend.cvat` over :mod:`backend.interactor` (which CVAT's agent shares, :mod:`backend.cvat_agent`); this
file only hands nuclio's context and event to it.
"""

from __future__ import annotations

import time

from adaptiveclick.backend.cvat import handle
from adaptiveclick.backend.interactor import Interactor
from adaptiveclick.backend.settings import Settings


def init_context(context) -> None:
    context.logger.info("loading the AdaptiveClick predictor")
    settings = Settings.from_env()  # a bad variable raises here: nuclio reports the function as failed to start
    interactor = Interactor.from_settings(settings)
    context.user_data.interactor = interactor
    _log(context, "info", "predictor ready", predictor=settings.predictor, model_version=interactor.model_version)


def handler(context, event):
    start = time.perf_counter()
    status, body, result = handle(context.user_data.interactor, event.body)
    fields = {"status": status, "ms": round((time.perf_counter() - start) * 1e3, 1)}
    if result is not None:
        fields.update(
            network_runs=result.network_runs,
            cached_clicks=result.cached_clicks,
            model_ms=round(result.seconds_model * 1e3, 1),
            model_version=result.model_version,
        )
        _log(context, "info", "segmented", **fields)
    else:
        _log(context, "warn", "rejected request", error=body.decode(), **fields)
    return context.Response(body=body, headers={}, content_type="application/json", status_code=status)


def _log(context, level: str, message: str, **fields) -> None:
    """Structured lines through nuclio's logger (``info_with``/``warn_with``), plain ones otherwise."""
    structured = getattr(context.logger, f"{level}_with", None)
    if structured is not None:
        structured(message, **fields)
    else:
        getattr(context.logger, level)(f"{message} {fields}")
