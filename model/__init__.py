"""The AdaptiveClick network, its predictor and the click logic.

Typical use::

    from adaptiveclick.model import load_predictor
    predictor = load_predictor("baseline")          # or a checkpoint path / URL / s3:// URI
    predictor.set_image(rgb)                        # [H, W, 3] uint8
    probs = predictor.predict([(120, 200, True)])   # [H, W] float32, threshold PROB_THRESHOLD (0.49)

The names below are imported on first use, so that ``model.spec`` and ``model.prediction`` (read by settings and
command lines) load without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "AdaptiveClick": "adaptiveclick",
    "AdaptiveClickConfig": "build",
    "CONFIGS": "build",
    "SIZES": "build",
    "build_adaptiveclick": "build",
    "BASELINE_VERSION": "baseline",
    "GrabCutPredictor": "baseline",
    "CheckpointError": "checkpoint",
    "load_adaptiveclick": "checkpoint",
    "load_mae_backbone": "checkpoint",
    "read_checkpoint": "checkpoint",
    "Click": "clicks",
    "PROB_THRESHOLD": "prediction",
    "Prediction": "prediction",
    "AdaptiveClickPredictor": "predictor",
    "Predictor": "predictor",
    "PredictorSpec": "spec",
    "parse_spec": "spec",
    "pinned_spec": "spec",
    "load_predictor": "loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
