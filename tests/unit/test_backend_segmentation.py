"""Prompts become pixel clicks in order once the image size is known; a box becomes clicks and cuts the mask."""

from __future__ import annotations

import numpy as np

from adaptiveclick.backend.segmentation import mask_score, prompts_to_clicks
from adaptiveclick.labelstudio.protocol import BoxPrompt, PointPrompt
from adaptiveclick.model.clicks import Click
from adaptiveclick.model.prompts import cut_to_box


def yxp(clicks: list[Click]) -> list[tuple]:
    return [(c.y, c.x, c.is_positive) for c in clicks]


def test_box_and_point_prompts_become_clicks_in_order():
    clicks, box = prompts_to_clicks([BoxPrompt(20, 10, 40, 50), PointPrompt(50, 50, False)], height=100, width=200)
    assert box == (10, 60, 40, 120)
    assert yxp(clicks)[0] == (35, 80, True)  # centre
    assert set(yxp(clicks)[1:-1]) == {(7, 80, False), (63, 80, False), (35, 36, False), (35, 124, False)}
    assert yxp(clicks)[-1] == (50, 100, False)
    assert [c.index for c in clicks] == list(range(len(clicks)))  # the click order the network sees
    # a box touching the border gets no negative click outside the image
    clicks, _ = prompts_to_clicks([BoxPrompt(0, 0, 100, 100)], height=50, width=50)
    assert yxp(clicks) == [(24, 24, True)]


def test_cut_to_box_and_score():
    probs = np.full((10, 10), 0.8, np.float32)
    mask = cut_to_box(probs > 0.5, (2, 4, 3, 6))
    assert mask.sum() == 3 * 4 and mask[2:5, 3:7].all()
    assert mask_score(probs, mask) == 0.8 and mask_score(probs, np.zeros_like(mask)) == 0.0


def test_a_request_holds_only_its_last_steps_map():
    """100 clicks on a large image must not hold 100 full-size maps: each step's map goes to the session cache
    (which charges and bounds it) and the request keeps the last one only."""
    import gc
    import weakref

    from adaptiveclick.backend.served_model import ServedModel
    from adaptiveclick.model import GrabCutPredictor
    from adaptiveclick.model.prediction import Prediction

    class Flat(GrabCutPredictor):
        def _step(self, clicks, prev_mask, prev_roi, box=None):
            return Prediction(np.full((60, 80), len(clicks) / 200, np.float32), (0, 59, 0, 79))

    served = ServedModel(Flat(), "flat")
    alive: list[weakref.ref] = []
    clicks = [Click(10, 10 + k % 50, True, k) for k in range(100)]
    run = served.run_steps(
        "img",
        np.zeros((60, 80, 3), np.uint8),
        clicks,
        0,
        None,
        None,
        lambda done, state: alive.append(weakref.ref(state.probs)),
    )
    gc.collect()
    assert run.steps == 100 and float(run.last.probs[0, 0]) == 100 / 200
    assert sum(ref() is not None for ref in alive) == 1  # only the last step's map is still held
