"""The predictor interface: AdaptiveClick (random weights) and the embedded baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveclick.evaluation import Clicker
from adaptiveclick.evaluation.datasets import GrabCutDataset
from adaptiveclick.model import (
    BASELINE_VERSION,
    AdaptiveClickPredictor,
    GrabCutPredictor,
    build_adaptiveclick,
    load_predictor,
    parse_spec,
)
from adaptiveclick.model.zoom_in import next_roi


def iou(sample, pred):
    valid = ~sample.ignore
    return (pred & sample.mask & valid).sum() / max(1, ((pred | sample.mask) & valid).sum())


@pytest.fixture(scope="module")
def random_predictor():
    torch.manual_seed(0)
    return AdaptiveClickPredictor(build_adaptiveclick("base"), "random", mode="cvpr")


def test_any_image_size_and_aspect(random_predictor):
    rng = np.random.default_rng(0)
    for shape in [(100, 300, 3), (517, 211, 3), (448, 448, 3)]:
        image = rng.integers(0, 255, shape, dtype=np.uint8)
        random_predictor.set_image(image)
        probs = random_predictor.predict([(shape[0] // 2, shape[1] // 3, True)])
        assert probs.shape == shape[:2] and probs.dtype == np.float32
        assert 0.0 <= probs.min() and probs.max() <= 1.0


def test_result_depends_only_on_inputs(random_predictor):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    clicks = [(100, 150, True), (30, 30, False)]
    random_predictor.set_image(image)
    first = random_predictor.predict(clicks[:1])
    a = random_predictor.step(clicks, first)
    random_predictor.set_image(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8))  # unrelated work in between
    random_predictor.predict([(10, 10, True)])
    random_predictor.set_image(image)
    b = random_predictor.step(clicks, first)
    assert np.array_equal(a.probs, b.probs) and a.roi == b.roi


def test_flip_averaging_is_symmetric(random_predictor):
    net = random_predictor.net
    flip = AdaptiveClickPredictor(net, "random", mode="plain", with_flip=True)
    image = np.random.default_rng(2).integers(0, 255, (448, 448, 3), dtype=np.uint8)
    flip.set_image(image)
    probs = flip.predict([(200, 100, True)])
    flip.set_image(np.ascontiguousarray(image[:, ::-1]))
    mirrored = flip.predict([(200, 447 - 100, True)])
    np.testing.assert_allclose(probs, mirrored[:, ::-1], atol=1e-5)


def test_zoom_in_roi_follows_the_object():
    probs = np.zeros((600, 800), np.float32)
    probs[100:150, 200:260] = 0.9
    clicks = parse_clicks = [type("C", (), {"y": 120, "x": 230, "is_positive": True})()]
    from adaptiveclick.model.clicks import as_clicks

    clicks = as_clicks(parse_clicks)
    assert next_roi(None, clicks, None, (600, 800)) == (0, 599, 0, 799)
    roi = next_roi(probs, clicks, None, (600, 800))
    # 50x60 box expanded to the 200 px minimum around its centre
    assert roi == (24, 224, 130, 330)
    # kept while it holds the clicks and the new candidate overlaps it
    assert next_roi(probs, clicks, roi, (600, 800)) == roi


def test_bad_input_is_reported(random_predictor):
    with pytest.raises(ValueError, match="RGB image"):
        random_predictor.set_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        random_predictor.set_image(np.zeros((10, 10, 3), np.float32))
    random_predictor.set_image(np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(ValueError, match="outside the 50x40 image"):
        random_predictor.predict([(40, 10, True)])
    with pytest.raises(ValueError, match="at least one click"):
        random_predictor.predict([])
    with pytest.raises(ValueError, match="prev_mask has shape"):
        random_predictor.predict([(1, 1, True)], np.zeros((5, 5)))


def test_specs():
    assert parse_spec("baseline").is_baseline
    spec = parse_spec("s3://bucket/w.pth#device=cpu,flip=1,mode=plain")
    assert spec.source == "s3://bucket/w.pth" and spec.flag("flip", False) and spec.option("mode") == "plain"
    for bad in ["", "x.pth#colour=red", "x.pth#mode=zoom", "x.pth#flip", "x.pth#flip=maybe", "random:gigantic"]:
        with pytest.raises(ValueError):
            parse_spec(bad)
    random = load_predictor("random:base#device=cpu")
    assert "UNTRAINED" in random.model_version
    tiny = load_predictor("random:tiny#device=cpu")  # for tests and smoke runs
    assert tiny.net.config.name == "tiny" and "tiny-UNTRAINED" in tiny.model_version
    assert load_predictor("baseline").model_version == BASELINE_VERSION


def test_baseline_reaches_stated_iou_on_grabcut(data_root):
    """The embedded baseline, driven by the NoC clicker on the first 5 GrabCut images, is deterministic and
    reaches a mean IoU of at least 0.80 after 5 clicks."""
    dataset = GrabCutDataset(data_root / "GrabCut")
    predictor = GrabCutPredictor()
    finals = []
    for index in range(5):
        sample = dataset[index]
        predictor.set_image(sample.image)
        curves = []
        for _ in range(2):
            clicker, probs, ious = Clicker(sample.gt), None, []
            for _ in range(5):
                clicker.make_next_click(probs > 0.49 if probs is not None else np.zeros_like(sample.mask))
                probs = predictor.predict(clicker.get_clicks(), probs)
                ious.append(iou(sample, probs > 0.49))
            curves.append(ious)
        assert curves[0] == curves[1]
        finals.append(curves[0][-1])
    assert np.mean(finals) >= 0.80, finals
