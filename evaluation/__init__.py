"""NoC evaluation (the RITM protocol used by SimpleClick and AdaptiveClick): the simulated annotator (``Clicker``,
``simulate``), the loop, metrics, datasets, plots.

For fine-tuning's validation (or any caller with its own samples)::

    from evaluation import evaluate_predictor
    result = evaluate_predictor(predictor, samples, n_clicks=20)   # samples: Sample(name, image, mask, ignore)
    result.noc(0.9), result.nof(0.9), result.miou_per_click, result.to_json()

The names below are imported on first use, so that ``adaptiveclick evaluate --help`` loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "Clicker": "clicker",
    "DATASETS": "datasets",
    "DatasetError": "datasets",
    "Sample": "datasets",
    "open_dataset": "datasets",
    "IGNORE_LABEL": "datasets.base",
    "DatasetResult": "metrics",
    "iou": "metrics",
    "noc_per_instance": "metrics",
    "DEFAULT_N_CLICKS": "protocol",
    "evaluate_predictor": "protocol",
    "evaluate_sample": "protocol",
    "SimulatedStep": "simulation",
    "simulate": "simulation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
