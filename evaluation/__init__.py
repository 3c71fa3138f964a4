"""NoC evaluation (the RITM protocol used by SimpleClick and AdaptiveClick): the simulated annotator (``Clicker``,
``simulate``), the loop, metrics, datasets, plots.

For fine-tuning's validation (or any caller with its own samples)::

    from adaptiveclick.evaluation import evaluate_predictor
    result = evaluate_predictor(predictor, samples, n_clicks=20)   # samples: Sample(name, image, mask, ignore)
    result.noc(0.9), result.nof(0.9), result.miou_per_click, result.to_json()

None of these modules imports torch (the predictor brings its own), so ``adaptiveclick evaluate --help`` stays fast.
"""

from .clicker import Clicker
from .datasets import DATASETS, DatasetError, Sample, open_dataset
from .datasets.base import IGNORE_LABEL
from .metrics import DatasetResult, iou, noc_per_instance
from .noc_loop import DEFAULT_N_CLICKS, evaluate_predictor, evaluate_sample
from .simulation import SimulatedStep, simulate

__all__ = [
    "Clicker",
    "DATASETS",
    "DEFAULT_N_CLICKS",
    "DatasetError",
    "DatasetResult",
    "IGNORE_LABEL",
    "Sample",
    "SimulatedStep",
    "evaluate_predictor",
    "evaluate_sample",
    "iou",
    "noc_per_instance",
    "open_dataset",
    "simulate",
]
