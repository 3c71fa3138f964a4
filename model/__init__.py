"""The AdaptiveClick network, its predictor and the click logic.

Typical use::

    from model import load_predictor
    predictor = load_predictor("baseline")          # or a checkpoint path / URL / s3:// URI
    predictor.set_image(rgb)                        # [H, W, 3] uint8
    probs = predictor.predict([(120, 200, True)])   # [H, W] float32, threshold 0.49
"""
from .adaptiveclick import AdaptiveClick
from .baseline import BASELINE_VERSION, GrabCutPredictor
from .build import CONFIGS, AdaptiveClickConfig, build_adaptiveclick
from .checkpoint import CheckpointError, load_adaptiveclick, load_mae_backbone, read_checkpoint
from .clicker import Clicker
from .clicks import Click
from .predictor import PROB_THRESHOLD, AdaptiveClickPredictor, Prediction, Predictor
from .spec import PredictorSpec, load_predictor, parse_spec

__all__ = [
    "AdaptiveClick", "AdaptiveClickConfig", "AdaptiveClickPredictor", "BASELINE_VERSION", "CONFIGS",
    "CheckpointError", "Click", "Clicker", "GrabCutPredictor", "PROB_THRESHOLD", "Prediction", "Predictor",
    "PredictorSpec", "build_adaptiveclick", "load_adaptiveclick", "load_mae_backbone", "load_predictor",
    "parse_spec", "read_checkpoint",
]
