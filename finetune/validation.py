"""Validation by NoC: the evaluation module's protocol run on the fine-tune's validation samples.

The samples are split over the processes of a distributed run and the IoU curves gathered, so validating a large
project does not leave the other GPUs waiting (and past NCCL's timeouts) while rank 0 works alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adaptiveclick.model.adaptiveclick import AdaptiveClick
from adaptiveclick.model.predictor import AdaptiveClickPredictor, Predictor

from .distributed import DistributedContext, gather_objects

NOC_THRESHOLDS = (0.85, 0.90)


def network_predictor(net: AdaptiveClick, version: str, device, input_size: int) -> AdaptiveClickPredictor:
    """The predictor the backend would build for these weights (zoom-in "cvpr" mode), at ``input_size``."""
    return AdaptiveClickPredictor(net, version, device=device, mode="cvpr", input_size=input_size)


def shard(samples: Sequence, rank: int, world_size: int) -> list:
    """The samples process ``rank`` of ``world_size`` evaluates: every world_size-th from the rank-th."""
    return list(samples)[rank::world_size]


def noc_metrics(
    predictor: Predictor,
    samples: Sequence,
    n_clicks: int = 20,
    context: DistributedContext | None = None,
    progress: bool = False,
) -> dict:
    """``{"noc85", "noc90", "nof85", "nof90", "miou_per_click", "instances", "n_clicks"}`` over ``samples``
    (each process evaluates ``samples[rank::world]``; every process returns the same result)."""
    from adaptiveclick.evaluation import DatasetResult, evaluate_predictor

    if not samples:
        raise ValueError("no validation samples")
    rank, world = (context.rank, context.world_size) if context is not None else (0, 1)
    mine = shard(samples, rank, world)
    curves = (
        evaluate_predictor(predictor, mine, n_clicks=n_clicks, progress=progress, description="validation NoC").ious
        if mine
        else np.zeros((0, n_clicks))
    )
    gathered = gather_objects(np.asarray(curves), context) if context is not None else [curves]
    result = DatasetResult(np.concatenate([np.asarray(c).reshape(-1, n_clicks) for c in gathered]))
    metrics = {f"noc{round(t * 100)}": result.noc(t) for t in NOC_THRESHOLDS}
    metrics.update({f"nof{round(t * 100)}": result.nof(t) for t in NOC_THRESHOLDS})
    metrics.update(
        {
            "miou_per_click": [round(float(v), 5) for v in result.miou_per_click],
            "instances": result.n_instances,
            "n_clicks": n_clicks,
        }
    )
    return metrics
