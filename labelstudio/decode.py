"""Image bytes to the ``[H, W, 3]`` uint8 RGB array the model sees, as a browser shows the file.

EXIF orientation is applied. Images with more than 8 bits per sample are scaled to 8 bits, not clipped: 16-bit
grey (PIL mode ``I;16``) by ``v / 257``; 32-bit integer grey (``I``) the same when its values fit in 16 bits, else
stretched from its minimum to its maximum; 32-bit float grey (``F``) by ``v * 255`` when it lies in ``[0, 1]``, else
stretched. (16-bit RGB is already scaled to 8 bits by PIL.) The pixel count is read from the header and checked
against the limit before anything is decoded, so a small file that decompresses to a huge image (a "pixel bomb")
is answered 413 without the memory it would take.

Only the formats Label Studio shows in its image tag are opened (:data:`IMAGE_FORMATS`: PNG, JPEG (with the camera
JPEGs PIL reads as MPO), GIF, BMP, TIFF, WebP); every other format PIL knows (and the parsers behind them) is never
reached: such a file is 422 "not a readable image".
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable

import numpy as np
from PIL import (  # the plugins of IMAGE_FORMATS, registered by importing them (no other plugin is needed)
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    MpoImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from .errors import ImageError
from .settings import ImageLimits

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # JPEG's opener also reads cameras' MPO files
_PLUGINS = (
    BmpImagePlugin,
    GifImagePlugin,
    JpegImagePlugin,
    MpoImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
UINT16_MAX = 65535


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), source: str = "image") -> np.ndarray:
    """Decode image bytes to ``[H, W, 3]`` uint8 RGB (see the module docstring); :class:`ImageError` if not."""
    return _decoded(lambda: Image.open(io.BytesIO(data), formats=IMAGE_FORMATS), limits, source)


def image_rgb(image: Image.Image, limits: ImageLimits = ImageLimits(), source: str = "image") -> np.ndarray:
    """:func:`decode_image` for an image PIL has opened already (e.g. a frame CVAT's agent loaded): the same
    limits, EXIF orientation and bit depths."""
    return _decoded(lambda: image, limits, source)


def _decoded(open_image: Callable[[], Image.Image], limits: ImageLimits, source: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = open_image()
            width, height = image.size  # read from the header, before decoding the pixels
            if width * height > limits.max_pixels:
                raise _too_many_pixels(source, f"{width}x{height}", limits)
            return to_rgb8(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        # PIL's own guard fires at open() for images far beyond any sensible limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_many_pixels(source, found.group(1) if found else "too many", limits) from None
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{source} is not a readable image ({exc.__class__.__name__}; formats read: {', '.join(IMAGE_FORMATS)})",
            422,
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{source} is not a readable image: {exc}", 422) from None


def to_rgb8(image: Image.Image) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of a decoded PIL image, high bit depths scaled (see the module docstring)."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        grey = _grey_to_uint8(np.asarray(image), image.mode)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.float64)
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and values.size and values.min() >= 0 and values.max() <= UINT16_MAX):
        scaled = values / 257.0
    elif mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
        scaled = values * 255.0
    else:  # values of unknown range (signed, or floats outside [0, 1]): stretch what is there
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        scaled = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _too_many_pixels(source: str, size: str, limits: ImageLimits) -> ImageError:
    return ImageError(
        f"{source} has {size} pixels, more than the {limits.max_pixels} allowed (ADAPTIVECLICK_MAX_IMAGE_PIXELS)", 413
    )
