"""IoU, NoC and NoF on hand-made masks and synthetic IoU curves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adaptiveclick.evaluation.metrics import DatasetResult, iou, noc_per_instance


def test_iou_ignores_unknown_pixels():
    gt = np.array([[1, 1, 0, 0], [1, 1, -1, -1]], np.int8)
    pred = np.array([[1, 0, 1, 0], [1, 1, 1, 1]], bool)
    # valid pixels: 6; intersection 3 (object hits), union 3 + 1 missed + 1 false = 5; the two -1 never count
    assert iou(gt, pred) == pytest.approx(3 / 5)
    assert iou(gt, gt == 1) == 1.0
    assert iou(gt, np.zeros_like(pred)) == 0.0


def test_iou_of_an_empty_object_predicted_empty_is_one():
    gt = np.zeros((3, 3), np.int8)
    assert iou(gt, np.zeros((3, 3), bool)) == 1.0
    assert iou(gt, np.eye(3, dtype=bool)) == 0.0


CURVES = np.array(
    [
        [0.50, 0.86, 0.91, 0.95, 0.97],  # NoC@85 2, NoC@90 3
        [0.90, 0.92, 0.93, 0.93, 0.94],  # reaches 0.90 exactly at the first click: 1 and 1
        [0.10, 0.20, 0.30, 0.40, 0.50],  # never: 5 and 5, a failure at both
        [0.10, 0.20, 0.30, 0.86, 0.91],  # reaches 0.90 at the last click: NoC 5, and RITM counts it as a failure
        [0.95, 0.80, 0.70, 0.99, 0.99],  # first crossing counts, even if IoU drops later
    ]
)


def test_noc_per_instance_on_synthetic_curves():
    assert noc_per_instance(CURVES, 0.85).tolist() == [2, 1, 5, 4, 1]
    assert noc_per_instance(CURVES, 0.90).tolist() == [3, 1, 5, 5, 1]


def test_noc_compares_in_float32_like_the_reference():
    # 0.8999999999 is 0.9 in float32 (RITM keeps its curves in float32), so it reaches NoC@90
    assert noc_per_instance(np.array([[0.8999999999, 1.0]]), 0.9).tolist() == [1]
    assert noc_per_instance(np.array([[0.8999, 1.0]]), 0.9).tolist() == [2]


def test_dataset_result_metrics():
    result = DatasetResult(CURVES, [f"i{k}" for k in range(5)], elapsed_seconds=5.0)
    assert result.n_instances == 5 and result.n_clicks == 5
    assert result.noc(0.85) == pytest.approx((2 + 1 + 5 + 4 + 1) / 5)
    assert result.noc(0.90) == pytest.approx((3 + 1 + 5 + 5 + 1) / 5)
    assert result.nof(0.85) == 1  # only the curve that never reaches 0.85
    assert result.nof(0.90) == 2  # the one never reaching it and the one reaching it at the last click
    np.testing.assert_allclose(result.miou_per_click, CURVES.mean(axis=0))
    assert result.seconds_per_click == pytest.approx(5.0 / 25)


def test_to_json_has_the_documented_fields_and_round_trips():
    result = DatasetResult(CURVES, [f"i{k}" for k in range(5)], elapsed_seconds=2.5)
    entry = json.loads(json.dumps(result.to_json()))
    assert {"noc85", "noc90", "nof85", "nof90", "miou_per_click", "ious", "seconds_per_click"} <= set(entry)
    assert entry["nof90"] == 2 and entry["noc90"] == pytest.approx(3.0)
    assert len(entry["miou_per_click"]) == 5 and len(entry["ious"]) == 5
    assert all(len(curve) == 5 for curve in entry["ious"])
    again = DatasetResult.from_json(entry)
    np.testing.assert_array_equal(again.ious, result.ious)
    assert again.names == result.names and again.elapsed_seconds == 2.5


def test_bad_shapes_and_empty_results():
    with pytest.raises(ValueError, match="shape"):
        DatasetResult(np.zeros(5))
    with pytest.raises(ValueError, match="names"):
        DatasetResult(np.zeros((2, 3)), ["only one"])
    with pytest.raises(ValueError, match="shape"):
        noc_per_instance(np.zeros(3), 0.9)
    empty = DatasetResult(np.zeros((0, 20)))
    assert math.isnan(empty.noc(0.9)) and empty.nof(0.9) == 0 and math.isnan(empty.seconds_per_click)
