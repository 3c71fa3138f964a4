"""The baseline's boxes (model.baseline): a box alone is OpenCV's rectangle initialisation, its other clicks keep
that mask, later clicks refine it inside the box with every part kept; a box with no pixel outside it goes by its
clicks; AdaptiveClick goes by the box's clicks whether or not it is given the box."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from adaptiveclick.model import AdaptiveClickPredictor, GrabCutPredictor, build_adaptiveclick
from adaptiveclick.model.clicks import Click
from adaptiveclick.model.grabcut_worker import grabcut
from adaptiveclick.model.predictor import check_box
from adaptiveclick.model.prompts import box_to_clicks

BOX = (30, 109, 20, 149)  # (top, bottom, left, right), inclusive


@pytest.fixture(scope="module")
def image():
    """Grey noise with two red discs inside BOX and a green one outside it."""
    rng = np.random.default_rng(7)
    img = rng.integers(90, 140, (140, 200, 3), dtype=np.uint8)
    cv2.circle(img, (55, 70), 25, (220, 40, 40), -1)
    cv2.circle(img, (115, 70), 22, (210, 50, 30), -1)
    cv2.circle(img, (180, 20), 12, (40, 200, 40), -1)
    return img


def box_session(predictor, box, extra=()):
    """The box's clicks, then ``extra`` clicks, step by step with the box beside them (the interactive path)."""
    h, w = predictor.image_shape
    clicks = [Click(c.y, c.x, c.is_positive, k) for k, c in enumerate([*box_to_clicks(box, h, w), *extra])]
    probs, answers = None, []
    for k in range(len(clicks)):
        probs = predictor.step(clicks[: k + 1], probs, None, box=box).probs
        answers.append(probs)
    return answers


def test_a_box_alone_is_opencvs_rectangle_initialisation(image):
    predictor = GrabCutPredictor()
    predictor.set_image(image)
    answers = box_session(predictor, BOX)
    top, bottom, left, right = BOX
    labels = grabcut(image[:, :, ::-1].copy(), np.zeros(image.shape[:2], np.uint8), 5, (left, top, 150 - left, 80))
    expected = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    assert np.array_equal(answers[0] > 0.49, expected)  # the image is under box_work_size: no scaling
    assert all(a is answers[0] for a in answers[1:])  # the box's other clicks keep its mask
    mask = answers[0] > 0.49
    assert mask[70, 55] and mask[70, 115]  # both discs: every part of the object
    assert not mask[:top].any() and not mask[:, right + 1 :].any()


def test_clicks_added_to_a_box_refine_it_inside_the_box_and_keep_every_part(image):
    predictor = GrabCutPredictor()
    predictor.set_image(image)
    first = box_session(predictor, BOX)[-1] > 0.49
    negative = Click(70, 115, False)  # on the right disc: take it out
    refined = box_session(predictor, BOX, [negative])[-1] > 0.49
    assert first[70, 115] and not refined[70, 115]
    assert refined[70, 55]  # the left disc stays, though no click of the user's holds it
    positive = Click(20, 180, True)  # outside the box: the box says the object is not there
    outside = box_session(predictor, BOX, [positive])[-1] > 0.49
    assert not outside[:, BOX[3] + 1 :].any() and outside[70, 55]


def test_the_box_centre_is_no_seed(image):
    """A box whose centre misses the object (between the discs): the rectangle finds the discs, the centre stays
    background, and a later click does not force it in."""
    predictor = GrabCutPredictor()
    predictor.set_image(image)
    box = (40, 100, 26, 143)
    h, w = image.shape[:2]
    centre = box_to_clicks(box, h, w)[0]
    assert 80 < centre.x < 93  # between the discs (x 30-80 and 93-137)
    answers = box_session(predictor, box, [Click(70, 60, True)])
    assert not (answers[0] > 0.49)[int(centre.y), int(centre.x)]
    assert not (answers[-1] > 0.49)[int(centre.y), int(centre.x)]


def test_a_box_over_the_whole_image_goes_by_its_clicks(image):
    """GrabCut's rectangle needs background outside it; a whole-image box has none, so its clicks answer it."""
    predictor = GrabCutPredictor()
    predictor.set_image(image)
    h, w = image.shape[:2]
    whole = (0, h - 1, 0, w - 1)
    (probs,) = box_session(predictor, whole)  # the negative clicks fall outside the image: one click
    alone = predictor.step(box_to_clicks(whole, h, w)).probs
    assert np.array_equal(probs, alone)


def test_adaptiveclick_goes_by_the_clicks_with_or_without_the_box(image):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_adaptiveclick("tiny")
    predictor = AdaptiveClickPredictor(net, "tiny", input_size=224)
    predictor.set_image(image)
    assert not predictor.takes_box
    clicks = box_to_clicks(BOX, *image.shape[:2])[:2]
    np.testing.assert_array_equal(predictor.step(clicks, box=BOX).probs, predictor.step(clicks).probs)


def test_boxes_are_checked():
    assert check_box(None, (10, 10)) is None
    assert check_box((1, 2, 3, 4), (10, 10)) == (1, 2, 3, 4)
    for bad in [(5, 4, 0, 1), (0, 10, 0, 1), (0, 1, -1, 3)]:
        with pytest.raises(ValueError, match="not an ordered box inside the 10x10 image"):
            check_box(bad, (10, 10))
