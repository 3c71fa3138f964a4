"""The NoC evaluation loop, as RITM's ``isegm.inference.evaluation`` (used unchanged by SimpleClick/AdaptiveClick).

Per instance, :func:`~evaluation.simulation.simulate` runs the annotator's session (the
:class:`~evaluation.clicker.Clicker` places each click on the current error, the predictor answers with the previous
step's probabilities and zoom-in region) and the IoU of ``probs > threshold`` after each click makes the curve. All
clicks are always made, so every curve has ``n_clicks`` points (the reference stops at the target IoU unless asked
for IoU analysis; NoC is the same either way).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sized
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from adaptiveclick.model.prediction import PROB_THRESHOLD

from .datasets.base import Sample
from .metrics import REPORTED_THRESHOLDS, DatasetResult, noc_per_instance
from .simulation import simulate

if TYPE_CHECKING:  # the loop needs no torch itself; the predictor brings its own
    from adaptiveclick.model.predictor import Predictor

DEFAULT_N_CLICKS = 20


def evaluate_sample(
    predictor: Predictor, sample: Sample, n_clicks: int = DEFAULT_N_CLICKS, threshold: float = PROB_THRESHOLD
) -> np.ndarray:
    """``[n_clicks]`` IoU after each simulated click on one instance."""
    return np.array([step.iou for step in simulate(predictor, sample, n_clicks, threshold)], dtype=np.float64)


def evaluate_predictor(
    predictor: Predictor,
    samples: Iterable[Sample],
    n_clicks: int = DEFAULT_N_CLICKS,
    progress: bool = False,
    threshold: float = PROB_THRESHOLD,
    limit: int | None = None,
    description: str | None = None,
) -> DatasetResult:
    """Run the NoC protocol on every sample (the first ``limit`` ones if given).

    Args:
        predictor: any :class:`~model.predictor.Predictor`.
        samples: a dataset loader or any iterable of :class:`Sample` (e.g. fine-tuning's validation samples).
        n_clicks: clicks per instance.
        progress: show a tqdm progress bar (on stderr) with the running NoC@85/90.
        threshold: probability above which a pixel is the object (0.49 in the reference).
        limit: evaluate only the first ``limit`` instances.
        description: progress bar label.

    Returns:
        the IoU curves ``[N, n_clicks]`` with the instance names and the wall time of the run.
    """
    if n_clicks < 1:
        raise ValueError(f"n_clicks must be at least 1, got {n_clicks}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    total = _expected_count(samples, limit)
    if limit is not None:
        samples = islice(samples, limit)
    curves: list[np.ndarray] = []
    names: list[str] = []
    noc_sums = np.zeros(len(REPORTED_THRESHOLDS))
    start = time.perf_counter()
    with tqdm(
        samples, total=total, desc=description, unit="inst", disable=not progress, leave=True, dynamic_ncols=True
    ) as bar:
        for sample in bar:
            curve = evaluate_sample(predictor, sample, n_clicks, threshold)
            curves.append(curve)
            names.append(sample.name)
            if progress:
                noc_sums += [noc_per_instance(curve[None], t)[0] for t in REPORTED_THRESHOLDS]
                bar.set_postfix_str(
                    " ".join(
                        f"NoC@{round(t * 100)} {s / len(curves):.2f}" for t, s in zip(REPORTED_THRESHOLDS, noc_sums)
                    ),
                    refresh=False,
                )
    elapsed = time.perf_counter() - start
    if not curves:
        raise ValueError("no samples to evaluate")
    return DatasetResult(np.stack(curves), names, elapsed)


def _expected_count(samples: Iterable[Sample], limit: int | None) -> int | None:
    """How many samples the progress bar should expect, None when unknown.

    With a limit, a loader's length is not asked for: multi-object datasets read every annotation to know it.
    """
    if isinstance(samples, (list, tuple)):
        return len(samples) if limit is None else min(limit, len(samples))
    if limit is not None:
        return limit
    return len(samples) if isinstance(samples, Sized) else None
