"""Crops and augmentation for training, with OpenCV/numpy (the reference's albumentations pipeline).

Training (``models/iter_mask/adaptiveclick_base448_sbd_itermask.py``): uniform random resize x0.75..1.25, random
flip (horizontal, vertical or both, p 0.5), random 90-degree rotation (p 0.5), shift +-3% / rotate +-3 degrees
(p 0.75), zero padding up to the crop size, random crop, brightness +-0.25 / contrast -0.15..+0.4 (p 0.75), RGB
shift +-10 (p 0.75). Validation: resize, pad and crop only.

Masks travel as ``[H, W, K]`` uint8 layers (objects and the ignore map) and are resampled with nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    crop_size: int = 448
    scale_range: tuple[float, float] = (0.75, 1.25)
    flip_prob: float = 0.5
    rotate90_prob: float = 0.5
    shift_limit: float = 0.03
    rotate_limit: float = 3.0
    shift_rotate_prob: float = 0.75
    brightness_limit: tuple[float, float] = (-0.25, 0.25)
    contrast_limit: tuple[float, float] = (-0.15, 0.4)
    brightness_contrast_prob: float = 0.75
    rgb_shift_limit: float = 10.0
    rgb_shift_prob: float = 0.75


def _map_layers(layers: np.ndarray, fn) -> np.ndarray:
    """Apply an OpenCV geometric op to ``[H, W, K]`` layers, 4 channels at a time (OpenCV's limit for some ops)."""
    if layers.shape[2] == 0:
        probe = fn(np.zeros(layers.shape[:2], np.uint8))
        return np.zeros(probe.shape[:2] + (0,), np.uint8)
    parts = []
    for start in range(0, layers.shape[2], 4):
        chunk = np.ascontiguousarray(layers[:, :, start : start + 4])
        out = fn(chunk)
        parts.append(out if out.ndim == 3 else out[:, :, None])
    return np.concatenate(parts, axis=2)


def resize(image: np.ndarray, layers: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    layers = _map_layers(layers, lambda m: cv2.resize(m, size, interpolation=cv2.INTER_NEAREST))
    return image, layers


def flip(image: np.ndarray, layers: np.ndarray, code: int) -> tuple[np.ndarray, np.ndarray]:
    """``code``: 1 horizontal, 0 vertical, -1 both (cv2.flip)."""
    return cv2.flip(image, code), _map_layers(layers, lambda m: cv2.flip(m, code))


def rotate90(image: np.ndarray, layers: np.ndarray, times: int) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(np.rot90(image, times)), np.ascontiguousarray(np.rot90(layers, times))


def shift_rotate(image: np.ndarray, layers: np.ndarray, angle: float, dx: float, dy: float):
    """Rotate by ``angle`` degrees about the centre and shift by ``(dx, dy)`` fractions of the size; zero border."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, 1.0)
    matrix[0, 2] += dx * w
    matrix[1, 2] += dy * h

    def warp(a, interpolation):
        return cv2.warpAffine(a, matrix, (w, h), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    return warp(image, cv2.INTER_LINEAR), _map_layers(layers, lambda m: warp(m, cv2.INTER_NEAREST))


def pad_to(image: np.ndarray, layers: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad (centred) so both sides are at least ``size``."""
    h, w = image.shape[:2]
    top, left = max(0, size - h) // 2, max(0, size - w) // 2
    bottom, right = max(0, size - h) - top, max(0, size - w) - left
    if not (top or bottom or left or right):
        return image, layers
    pad = ((top, bottom), (left, right))
    return np.pad(image, pad + ((0, 0),)), np.pad(layers, pad + ((0, 0),))


def crop(image: np.ndarray, layers: np.ndarray, top: int, left: int, size: int):
    return image[top : top + size, left : left + size], layers[top : top + size, left : left + size]


def random_crop_origin(shape: tuple[int, int], size: int, rng: np.random.Generator) -> tuple[int, int]:
    h, w = shape
    return int((h - size + 1) * rng.random()), int((w - size + 1) * rng.random())


def brightness_contrast(image: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """``clip(pixel * alpha + beta * 255)``, through a lookup table."""
    lut = np.clip(np.arange(256, dtype=np.float32) * alpha + beta * 255, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)


def rgb_shift(image: np.ndarray, shifts: tuple[float, float, float]) -> np.ndarray:
    out = image.astype(np.int16)
    for channel, shift in enumerate(shifts):
        out[:, :, channel] += int(shift)
    return np.clip(out, 0, 255).astype(np.uint8)


def crop_origin_around(layer: np.ndarray, size: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """A random crop origin whose ``size`` window holds a random nonzero pixel of ``layer`` (None if empty)."""
    pixels = np.argwhere(layer)
    if not len(pixels):
        return None
    y, x = pixels[int(rng.integers(len(pixels)))]
    h, w = layer.shape
    top = int(rng.integers(max(0, y - size + 1), min(y, h - size) + 1))
    left = int(rng.integers(max(0, x - size + 1), min(x, w - size) + 1))
    return top, left


def augment(
    image: np.ndarray,
    layers: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig,
    train: bool = True,
    focus_layer: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One random view of ``image [H, W, 3]`` uint8 and its ``layers [H, W, K]`` uint8: ``[S, S, 3]``, ``[S, S, K]``.

    ``focus_layer``: place the crop so that it holds part of that layer (when the layer survived the geometry),
    instead of anywhere.
    """
    image, layers = resize(image, layers, rng.uniform(*config.scale_range))
    if train:
        if rng.random() < config.flip_prob:
            image, layers = flip(image, layers, int(rng.integers(-1, 2)))
        if rng.random() < config.rotate90_prob:
            image, layers = rotate90(image, layers, int(rng.integers(0, 4)))
        if rng.random() < config.shift_rotate_prob:
            angle = rng.uniform(-config.rotate_limit, config.rotate_limit)
            dx, dy = rng.uniform(-config.shift_limit, config.shift_limit, size=2)
            image, layers = shift_rotate(image, layers, angle, dx, dy)
    image, layers = pad_to(image, layers, config.crop_size)
    origin = None if focus_layer is None else crop_origin_around(layers[:, :, focus_layer], config.crop_size, rng)
    top, left = origin or random_crop_origin(image.shape[:2], config.crop_size, rng)
    image, layers = crop(image, layers, top, left, config.crop_size)
    if train:
        if rng.random() < config.brightness_contrast_prob:
            alpha = 1 + rng.uniform(*config.contrast_limit)
            beta = rng.uniform(*config.brightness_limit)
            image = brightness_contrast(image, alpha, beta)
        if rng.random() < config.rgb_shift_prob:
            limit = config.rgb_shift_limit
            image = rgb_shift(image, tuple(rng.uniform(-limit, limit, size=3)))
    return np.ascontiguousarray(image), np.ascontiguousarray(layers)
