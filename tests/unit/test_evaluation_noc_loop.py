"""The NoC loop: what the predictor is given at each click, and the IoU curves it produces."""

from __future__ import annotations

import numpy as np
import pytest

from adaptiveclick.evaluation import DatasetResult, Sample, evaluate_predictor, evaluate_sample
from adaptiveclick.model.predictor import Prediction, Predictor


def make_sample(name="s", shape=(30, 40), box=(5, 20, 8, 30), ignore_rows=()) -> Sample:
    mask = np.zeros(shape, bool)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = True
    ignore = np.zeros(shape, bool)
    for row in ignore_rows:
        ignore[row] = True
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    return Sample(name, image, mask, ignore)


class ScriptedPredictor(Predictor):
    """Finds the object after ``clicks_needed`` clicks (probability 0.9 inside, 0.2 outside), nothing before;
    records every call and hands out a new ROI each time."""

    def __init__(self, object_mask_of, clicks_needed=3, below=0.0):
        super().__init__()
        self.object_mask_of = object_mask_of
        self.clicks_needed = clicks_needed
        self.below = below
        self.calls = []

    def _step(self, clicks, prev_mask, prev_roi, box):
        self.calls.append((list(clicks), None if prev_mask is None else prev_mask.copy(), prev_roi))
        obj = self.object_mask_of(self._image)
        if len(clicks) >= self.clicks_needed:
            probs = np.where(obj, 0.9, 0.2).astype(np.float32)
        else:
            probs = np.full(obj.shape, self.below, np.float32)
        return Prediction(probs, (len(clicks), 0, 0, 0))


def test_each_step_gets_all_clicks_the_previous_probabilities_and_roi():
    sample = make_sample()
    predictor = ScriptedPredictor(lambda image: sample.mask, clicks_needed=2)
    ious = evaluate_sample(predictor, sample, n_clicks=4)
    assert ious.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert len(predictor.calls) == 4
    first_clicks, first_prev, first_roi = predictor.calls[0]
    assert first_prev is None and first_roi is None  # the first click sees no previous mask, the whole image
    assert [(c.y, c.x, c.is_positive) for c in first_clicks] == [(12, 15, True)]  # the object's deepest pixel
    for k in range(1, 4):
        clicks, prev, roi = predictor.calls[k]
        assert len(clicks) == k + 1 and [c.index for c in clicks] == list(range(k + 1))
        assert roi == (k, 0, 0, 0)  # the ROI the previous step returned
        expected_prev = np.zeros(sample.mask.shape) if k < 2 else np.where(sample.mask, 0.9, 0.2)
        np.testing.assert_allclose(prev, expected_prev)
    # once found, the error is empty: the clicker falls back to (0, 0), negative, as RITM's does
    assert [(c.y, c.x, c.is_positive) for c in predictor.calls[3][0][-2:]] == [(0, 0, False), (0, 0, False)]


def test_threshold_is_strict():
    sample = make_sample()
    below = ScriptedPredictor(lambda image: sample.mask, clicks_needed=99, below=0.49)
    assert evaluate_sample(below, sample, n_clicks=2).tolist() == [0.0, 0.0]  # 0.49 is not > 0.49
    above = ScriptedPredictor(lambda image: sample.mask, clicks_needed=99, below=0.5)
    expected = sample.mask.sum() / sample.mask.size  # everything predicted
    np.testing.assert_allclose(evaluate_sample(above, sample, n_clicks=2), [expected, expected])


def test_ignored_pixels_do_not_count():
    sample = make_sample(ignore_rows=(0, 1, 2))
    # predicting the object plus the ignored rows is still perfect
    predictor = ScriptedPredictor(lambda image: sample.mask | sample.ignore, clicks_needed=1)
    assert evaluate_sample(predictor, sample, n_clicks=2).tolist() == [1.0, 1.0]


def test_evaluate_predictor_runs_all_clicks_and_keeps_names_and_order():
    samples = [make_sample("a"), make_sample("b", box=(0, 10, 0, 10)), make_sample("c", box=(2, 28, 2, 38))]
    predictor = ScriptedPredictor(lambda image: samples[0].mask, clicks_needed=1)
    result = evaluate_predictor(predictor, iter(samples), n_clicks=20)  # any iterable will do
    assert isinstance(result, DatasetResult)
    assert result.names == ["a", "b", "c"] and result.ious.shape == (3, 20)
    assert result.ious[0].tolist() == [1.0] * 20  # found at once, still 20 clicks
    assert result.noc(0.9) == pytest.approx((1 + 20 + 20) / 3) and result.nof(0.9) == 2
    assert result.elapsed_seconds > 0 and len(predictor.calls) == 60


def test_limit_and_progress_bar(capsys):
    samples = [make_sample(str(k)) for k in range(5)]
    predictor = ScriptedPredictor(lambda image: samples[0].mask, clicks_needed=2)
    result = evaluate_predictor(predictor, samples, n_clicks=3, limit=2, progress=True, description="toy")
    assert result.names == ["0", "1"] and result.ious.shape == (2, 3)
    err = capsys.readouterr().err
    assert "toy" in err and "2/2" in err and "NoC@90 2.00" in err


def test_bad_arguments():
    predictor = ScriptedPredictor(lambda image: np.zeros(image.shape[:2], bool))
    with pytest.raises(ValueError, match="no samples"):
        evaluate_predictor(predictor, [])
    with pytest.raises(ValueError, match="n_clicks"):
        evaluate_predictor(predictor, [make_sample()], n_clicks=0)
    with pytest.raises(ValueError, match="limit"):
        evaluate_predictor(predictor, [make_sample()], limit=0)
