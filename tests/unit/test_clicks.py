from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveclick.model.click_maps import clicks_to_points, disk_maps
from adaptiveclick.model.clicks import Click, as_click, as_clicks


def test_as_click_accepts_tuples_objects_and_ritm_style():
    class Obj:
        y, x, is_positive = 3, 4, False

    class Ritm:
        coords, is_positive = (5, 6), True

    assert as_click((1, 2, True)) == Click(1.0, 2.0, True)
    assert as_click(Obj()) == Click(3.0, 4.0, False)
    assert as_click(Ritm(), index=7) == Click(5.0, 6.0, True, 7)
    assert [c.index for c in as_clicks([(1, 1, True), (2, 2, False)])] == [0, 1]
    with pytest.raises(TypeError):
        as_click("nope")
    with pytest.raises(ValueError):
        as_click((1, 2))


def test_points_put_positive_first_and_pad_with_minus_one():
    points = clicks_to_points([[Click(1, 2, True, 0), Click(3, 4, False, 1), Click(5, 6, True, 2)]])
    assert points.tolist() == [[[1, 2, 0], [5, 6, 2], [3, 4, 1], [-1, -1, -1]]]
    assert clicks_to_points([[]]).tolist() == [[[-1, -1, -1], [-1, -1, -1]]]


def test_disk_maps_for_known_coordinates():
    points = clicks_to_points([[Click(10, 20, True, 0), Click(30, 5, False, 1)]])
    maps = disk_maps(points, 40, 40, radius=5)
    assert maps.shape == (1, 2, 40, 40)
    yy, xx = np.mgrid[:40, :40]
    expected_pos = (yy - 10) ** 2 + (xx - 20) ** 2 <= 25
    expected_neg = (yy - 30) ** 2 + (xx - 5) ** 2 <= 25
    assert np.array_equal(maps[0, 0].numpy().astype(bool), expected_pos)
    assert np.array_equal(maps[0, 1].numpy().astype(bool), expected_neg)
    assert maps[0, 0].sum() == 81  # a radius-5 disk on the integer grid


def test_disk_maps_subpixel_and_padding():
    points = torch.tensor([[[0.5, 0.5, 0.0], [-1.0, -1.0, -1.0]]])
    maps = disk_maps(points, 8, 8, radius=1)
    assert maps[0, 1].sum() == 0
    assert maps[0, 0, :2, :2].all() and maps[0, 0].sum() == 4
