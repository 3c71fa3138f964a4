"""NoC metrics as RITM's ``isegm.inference.utils`` computes them, on a per-instance IoU curve.

* IoU over the pixels that are not ignored (``gt == -1``);
* NoC@t: the 1-based index of the first click whose IoU reaches ``t``, ``n_clicks`` when none does; averaged
  over instances;
* NoF@t: the instances whose NoC@t is ``n_clicks`` (RITM's ``over_max``, the ">=20@t" column): those that never
  reach ``t``, and also those that reach it exactly at the last click;
* mIoU@k: mean IoU after ``k`` clicks; seconds per click: wall time of the run over all clicks made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .datasets.base import IGNORE_LABEL

#: thresholds of the results table and results.json
REPORTED_THRESHOLDS = (0.85, 0.90)


def iou(gt: np.ndarray, pred_mask: np.ndarray, ignore_label: int = IGNORE_LABEL) -> float:
    """IoU of ``pred_mask [H, W]`` bool with ``gt [H, W]`` (1 object, 0 background, ``ignore_label`` ignored).

    An empty object predicted empty scores 1.0 (RITM divides 0 by 0 there; no benchmark instance is empty).
    """
    valid = gt != ignore_label
    obj = gt == 1
    union = np.count_nonzero((pred_mask | obj) & valid)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred_mask & obj & valid) / union)


def noc_per_instance(ious: np.ndarray, threshold: float) -> np.ndarray:
    """``[N]`` int: for each IoU curve (a row of ``ious [N, n_clicks]``), the clicks needed to reach ``threshold``.

    Compared in float32, as RITM stores the curves (``np.float32``) and compares them, so that an IoU within
    rounding of the threshold counts the same way here and there.
    """
    ious = np.asarray(ious, dtype=np.float32)
    if ious.ndim != 2:
        raise ValueError(f"expected IoU curves of shape [N, n_clicks], got {ious.shape}")
    reached = ious >= np.float32(threshold)
    return np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, ious.shape[1])


@dataclass
class DatasetResult:
    """The IoU curves of one run over a dataset: ``ious [N, n_clicks]`` and what it took.

    Attributes:
        ious: IoU after each click, one row per instance.
        names: instance names, in the order of ``ious``.
        elapsed_seconds: wall time of the whole run (reading, prediction, clicker), as RITM times it.
    """

    ious: np.ndarray
    names: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.ious = np.asarray(self.ious, dtype=np.float64)
        if self.ious.ndim != 2:
            raise ValueError(f"ious must have shape [N, n_clicks], got {self.ious.shape}")
        if self.names and len(self.names) != len(self.ious):
            raise ValueError(f"{len(self.names)} names for {len(self.ious)} IoU curves")

    @property
    def n_instances(self) -> int:
        return int(self.ious.shape[0])

    @property
    def n_clicks(self) -> int:
        return int(self.ious.shape[1])

    def noc(self, threshold: float) -> float:
        """Mean NoC@threshold (NaN without instances)."""
        return float(noc_per_instance(self.ious, threshold).mean()) if self.n_instances else math.nan

    def nof(self, threshold: float) -> int:
        """NoF@threshold: instances whose NoC is ``n_clicks`` (see the module docstring)."""
        return int((noc_per_instance(self.ious, threshold) == self.n_clicks).sum()) if self.n_instances else 0

    @property
    def miou_per_click(self) -> np.ndarray:
        """``[n_clicks]`` mean IoU after each click."""
        return self.ious.mean(axis=0) if self.n_instances else np.full(self.n_clicks, math.nan)

    @property
    def seconds_per_click(self) -> float:
        clicks = self.ious.size
        return self.elapsed_seconds / clicks if clicks else math.nan

    def to_json(self) -> dict[str, Any]:
        """The results.json entry: NoC/NoF at 85 and 90 %, mIoU per click, the IoU curves, seconds per click."""
        entry: dict[str, Any] = {}
        for t in REPORTED_THRESHOLDS:
            entry[f"noc{round(t * 100)}"] = self.noc(t)
        for t in REPORTED_THRESHOLDS:
            entry[f"nof{round(t * 100)}"] = self.nof(t)
        entry.update(
            {
                "miou_per_click": self.miou_per_click.tolist(),
                "ious": self.ious.tolist(),
                "seconds_per_click": self.seconds_per_click,
                "n_instances": self.n_instances,
                "n_clicks": self.n_clicks,
                "elapsed_seconds": self.elapsed_seconds,
                "names": list(self.names),
            }
        )
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> DatasetResult:
        ious = np.asarray(entry["ious"], dtype=np.float64).reshape(len(entry["ious"]), -1)
        return cls(ious, list(entry.get("names", [])), float(entry.get("elapsed_seconds", 0.0)))
