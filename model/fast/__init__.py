"""Fast CPU inference for AdaptiveClick: low-precision layers where the CPU has the instructions for them.

``optimize_for_inference(net, precision)`` converts a network; :func:`model.load_predictor` applies it from the
spec's ``precision`` option (default: see :func:`default_precision`). The predictor itself reuses the image half of
the work between clicks (crop, resize, normalisation and patch embedding of the region of interest) whatever the
precision.
"""

from .cpu_features import precision_support
from .optimize import (
    check_precision,
    default_precision,
    default_variant,
    explain_default,
    optimize_for_inference,
    variant_support,
)

__all__ = [
    "check_precision",
    "default_precision",
    "default_variant",
    "explain_default",
    "optimize_for_inference",
    "precision_support",
    "variant_support",
]
