"""finetune.validation: NoC through the evaluation protocol, for any predictor and for training networks."""

from __future__ import annotations

import numpy as np
import pytest

from adaptiveclick.evaluation import Sample
from adaptiveclick.finetune.network import build_initial_network
from adaptiveclick.finetune.validation import network_predictor, noc_metrics, shard
from adaptiveclick.model import Prediction, Predictor


class Oracle(Predictor):
    """Answers every click with the true mask of the image (or nothing at all)."""

    def __init__(self, masks: dict, empty: bool = False) -> None:
        super().__init__()
        self.masks, self.empty = masks, empty

    def _step(self, clicks, prev_mask, prev_roi, box):
        mask = self.masks[self._image.tobytes()]
        return Prediction(np.zeros(mask.shape, np.float32) if self.empty else mask.astype(np.float32))


def samples(n=3):
    out = []
    for i in range(n):
        image = np.full((24, 32, 3), i, np.uint8)
        mask = np.zeros((24, 32), bool)
        mask[4 : 12 + i, 5:20] = True
        out.append(Sample(f"s{i}", image, mask, np.zeros_like(mask)))
    return out


def test_noc_of_perfect_and_useless_predictors():
    items = samples()
    masks = {s.image.tobytes(): s.mask for s in items}
    perfect = noc_metrics(Oracle(masks), items, n_clicks=5)
    assert perfect["noc85"] == perfect["noc90"] == 1.0 and perfect["nof90"] == 0
    assert perfect["instances"] == 3 and perfect["miou_per_click"] == [1.0] * 5
    useless = noc_metrics(Oracle(masks, empty=True), items, n_clicks=5)
    assert useless["noc90"] == 5.0 and useless["nof85"] == 3


def test_each_process_takes_its_share():
    items = list(range(7))
    assert shard(items, 0, 2) == [0, 2, 4, 6] and shard(items, 1, 2) == [1, 3, 5]
    assert sorted(shard(items, 0, 3) + shard(items, 1, 3) + shard(items, 2, 3)) == items
    assert shard(items[:1], 1, 2) == []
    with pytest.raises(ValueError, match="no validation samples"):
        noc_metrics(Oracle({}), [], n_clicks=2)


def test_a_training_network_is_validated_through_the_backend_predictor():
    net, _ = build_initial_network("random:tiny")
    predictor = network_predictor(net.eval(), "candidate", "cpu", 96)
    assert predictor.model_version == "candidate" and predictor.input_size == (96, 96) and predictor.mode == "cvpr"
    metrics = noc_metrics(predictor, samples(1), n_clicks=2)
    assert set(metrics) >= {"noc85", "noc90", "nof85", "nof90", "miou_per_click"} and 1 <= metrics["noc90"] <= 2
