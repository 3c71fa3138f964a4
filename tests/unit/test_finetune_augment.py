"""finetune.augment: geometry keeps image and masks aligned; photometric changes and crops are as specified."""

from __future__ import annotations

import numpy as np
import pytest

from adaptiveclick.finetune.augment import (
    AugmentConfig,
    augment,
    brightness_contrast,
    crop_origin_around,
    flip,
    pad_to,
    rgb_shift,
    rotate90,
    shift_rotate,
)


def painted(h=120, w=90):
    """A dark image with a red object and its mask, plus a second mask layer (a blue object)."""
    image = np.full((h, w, 3), 20, np.uint8)
    red = np.zeros((h, w), np.uint8)
    red[30:80, 20:60] = 1
    blue = np.zeros((h, w), np.uint8)
    blue[90:110, 60:85] = 1
    image[red > 0] = (220, 10, 10)
    image[blue > 0] = (10, 10, 220)
    return image, np.stack([red, blue], axis=2)


GEOMETRY_ONLY = AugmentConfig(crop_size=96, brightness_contrast_prob=0.0, rgb_shift_prob=0.0)


@pytest.mark.parametrize("seed", range(6))
def test_geometry_keeps_masks_on_their_pixels(seed):
    image, layers = painted()
    out_image, out_layers = augment(image, layers, np.random.default_rng(seed), GEOMETRY_ONLY)
    assert out_image.shape == (96, 96, 3) and out_layers.shape == (96, 96, 2) and out_layers.dtype == np.uint8
    red = out_layers[:, :, 0] > 0
    if red.sum() > 50:
        # nearest-neighbour masks vs bilinear image: agreement everywhere but at a thin boundary
        assert (out_image[red][:, 0] > 150).mean() > 0.9
    reddish = (out_image[:, :, 0] > 150) & (out_image[:, :, 2] < 60)
    assert (red[reddish]).mean() > 0.9 if reddish.sum() > 50 else True


def test_same_seed_same_view_and_validation_only_resizes_pads_crops():
    image, layers = painted()
    a = augment(image, layers, np.random.default_rng(3), AugmentConfig(crop_size=64))
    b = augment(image, layers, np.random.default_rng(3), AugmentConfig(crop_size=64))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    no_resize = AugmentConfig(crop_size=64, scale_range=(1.0, 1.0))
    for seed in range(5):
        val_image, val_layers = augment(image, layers, np.random.default_rng(seed), no_resize, train=False)
        windows = [
            (t, left)
            for t in range(120 - 63)
            for left in range(90 - 63)
            if np.array_equal(image[t : t + 64, left : left + 64], val_image)
        ]
        assert windows, "the validation view is a plain crop of the image"
        t, left = windows[0]
        assert np.array_equal(layers[t : t + 64, left : left + 64], val_layers)


def test_small_images_are_padded_with_zeros_centred():
    image = np.full((10, 20, 3), 7, np.uint8)
    layers = np.ones((10, 20, 1), np.uint8)
    padded, padded_layers = pad_to(image, layers, 16)
    assert padded.shape == (16, 20, 3) and padded[:3].max() == 0 and padded[3:13].min() == 7
    assert padded_layers[:3].max() == 0 and padded_layers[13:].max() == 0


def test_flip_and_rotate_are_exact():
    image, layers = painted(8, 6)
    image[0, 0] = (1, 2, 3)
    flipped, flipped_layers = flip(image, layers, 1)
    assert tuple(flipped[0, -1]) == (1, 2, 3) and np.array_equal(flipped_layers[:, ::-1], layers)
    both, _ = flip(image, layers, -1)
    assert tuple(both[-1, -1]) == (1, 2, 3)
    rotated, rotated_layers = rotate90(image, layers, 1)
    assert rotated.shape == (6, 8, 3) and np.array_equal(rotated_layers, np.rot90(layers, 1))


def test_shift_rotate_without_motion_is_identity():
    image, layers = painted()
    same_image, same_layers = shift_rotate(image, layers, 0.0, 0.0, 0.0)
    assert np.array_equal(same_image, image) and np.array_equal(same_layers, layers)
    moved, moved_layers = shift_rotate(image, layers, 0.0, 0.1, 0.0)  # 9 px to the right
    assert np.array_equal(moved_layers[:, 9:], layers[:, :-9])


def test_photometric_changes():
    image = np.array([[[0, 100, 250]]], np.uint8)
    assert brightness_contrast(image, 1.0, 0.0).tolist() == image.tolist()
    assert brightness_contrast(image, 1.2, 0.1).tolist() == [[[25, 145, 255]]]
    assert rgb_shift(image, (-5.0, 10.0, 9.0)).tolist() == [[[0, 110, 255]]]


def test_crop_origin_around_holds_the_pixel():
    layer = np.zeros((200, 300), np.uint8)
    layer[150, 20] = 1
    for seed in range(10):
        top, left = crop_origin_around(layer, 64, np.random.default_rng(seed))
        assert 0 <= top <= 136 and 0 <= left <= 236
        assert top <= 150 < top + 64 and left <= 20 < left + 64
    assert crop_origin_around(np.zeros((10, 10)), 4, np.random.default_rng(0)) is None


def test_focus_layer_keeps_a_small_object_in_the_crop():
    image = np.zeros((400, 400, 3), np.uint8)
    layers = np.zeros((400, 400, 1), np.uint8)
    layers[300:308, 40:48] = 1
    for seed in range(5):
        _, out = augment(image, layers, np.random.default_rng(seed), AugmentConfig(crop_size=64), focus_layer=0)
        assert out.sum() > 0
