"""The Clicker (NoC protocol's simulated annotator) on hand-made masks, and against an independent oracle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from adaptiveclick.evaluation.clicker import Clicker


def box_gt(shape, y0, y1, x0, x1) -> np.ndarray:
    gt = np.zeros(shape, np.int8)
    gt[y0:y1, x0:x1] = 1
    return gt


def test_first_click_is_positive_at_the_first_deepest_object_pixel():
    # object rows 2..8, cols 3..11: depth 4 (to rows 1 and 9) is reached at row 5, cols 6..8; the first wins
    gt = box_gt((12, 16), 2, 9, 3, 12)
    clicker = Clicker(gt)
    assert clicker.make_next_click(np.zeros(gt.shape, bool)) == (5, 6, True)


def test_already_clicked_pixels_are_not_chosen_again():
    gt = box_gt((12, 16), 2, 9, 3, 12)
    clicker = Clicker(gt)
    empty = np.zeros(gt.shape, bool)
    assert [clicker.make_next_click(empty) for _ in range(3)] == [(5, 6, True), (5, 7, True), (5, 8, True)]
    fourth = clicker.make_next_click(empty)
    assert fourth[2] and fourth[:2] not in [(5, 6), (5, 7), (5, 8)]
    assert [(c.y, c.x, c.is_positive, c.index) for c in clicker.get_clicks()][:2] == [(5, 6, True, 0), (5, 7, True, 1)]
    assert len(clicker) == 4


def test_negative_click_when_the_false_positive_region_is_deeper():
    gt = box_gt((20, 20), 2, 6, 2, 6)  # small object, predicted, plus a large false blob
    pred = gt.astype(bool)
    pred[8:19, 8:19] = True
    assert Clicker(gt).make_next_click(pred) == (13, 13, False)


def test_positive_click_when_the_false_negative_region_is_deeper():
    gt = box_gt((20, 20), 6, 19, 6, 19)
    pred = np.zeros(gt.shape, bool)
    pred[0:3, 0:3] = True  # small false positive
    pred[6:9, 6:19] = True  # part of the object found
    y, x, positive = Clicker(gt).make_next_click(pred)
    assert positive and gt[y, x] == 1 and not pred[y, x]


def test_equal_depths_give_a_negative_click():
    # a 3x3 miss and a 3x3 false positive: both depth 2, and "positive" needs strictly more
    gt = box_gt((10, 20), 3, 6, 3, 6)
    pred = np.zeros(gt.shape, bool)
    pred[3:6, 12:15] = True
    assert Clicker(gt).make_next_click(pred) == (4, 13, False)


def test_image_border_counts_as_boundary():
    # the whole image is the object: without the zero padding every pixel would be equally "far" and the click
    # would land in the corner (0, 0); with it, depth 3 is reached at row 2, cols 2..4, and the first wins
    gt = np.ones((5, 7), np.int8)
    assert Clicker(gt).make_next_click(np.zeros(gt.shape, bool)) == (2, 2, True)
    # an object along the left border: unpadded, column 0 would be deepest (3 px from column 3); padded, the
    # border is boundary, column 1 is deepest and so is row 1 (2 px from the top border)
    gt = box_gt((9, 9), 0, 9, 0, 3)
    assert Clicker(gt).make_next_click(np.zeros(gt.shape, bool)) == (1, 1, True)


def test_ignored_pixels_are_neither_error_nor_clicked():
    gt = box_gt((20, 30), 2, 18, 2, 18)
    gt[2:18, 2:18] = -1  # the large region is "unknown"
    gt[5:10, 22:27] = 1  # the real object is small
    y, x, positive = Clicker(gt).make_next_click(np.zeros(gt.shape, bool))
    assert (y, x, positive) == (7, 24, True)
    # predicting over the ignored region is no false positive either
    pred = np.zeros(gt.shape, bool)
    pred[2:18, 2:18] = True
    pred[5:10, 22:27] = True
    pred[0, 29] = True  # one real false-positive pixel
    assert Clicker(gt).make_next_click(pred) == (0, 29, False)


def test_probabilities_are_read_as_a_mask_of_their_nonzero_pixels():
    gt = box_gt((12, 16), 2, 9, 3, 12)
    assert Clicker(gt).make_next_click(np.zeros(gt.shape, np.float32)) == (5, 6, True)


def oracle_click(gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray) -> tuple[int, int, bool]:
    """The protocol written independently: exact EDT (scipy) of the padded error maps."""
    valid = gt != -1
    obj = gt == 1
    fn = obj & ~pred & valid
    fp = ~obj & pred & valid
    fn_dt = ndimage.distance_transform_edt(np.pad(fn, 1))[1:-1, 1:-1] * ~clicked
    fp_dt = ndimage.distance_transform_edt(np.pad(fp, 1))[1:-1, 1:-1] * ~clicked
    positive = fn_dt.max() > fp_dt.max()
    dt = fn_dt if positive else fp_dt
    y, x = np.unravel_index(np.argmax(dt), dt.shape)  # argmax: first maximum in row-major order
    return int(y), int(x), bool(positive)


@pytest.mark.parametrize("seed", range(20))
def test_matches_an_independent_implementation_over_a_click_sequence(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(8, 40, size=2)
    gt = (ndimage.gaussian_filter(rng.random((h, w)), 2) > 0.5).astype(np.int8)
    gt[rng.random((h, w)) < 0.05] = -1
    clicker = Clicker(gt)
    clicked = np.zeros((h, w), bool)
    for _ in range(6):
        pred = ndimage.gaussian_filter(rng.random((h, w)), 2) > 0.5
        expected = oracle_click(gt, pred, clicked)
        assert clicker.make_next_click(pred) == expected
        clicked[expected[:2]] = True


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match="2-D"):
        Clicker(np.zeros((3, 4, 1)))
    with pytest.raises(ValueError, match="shape"):
        Clicker(np.zeros((3, 4))).make_next_click(np.zeros((4, 3), bool))
