"""Image decoding: high bit depths scaled to 8 bits (not clipped to white), pixel bombs answered 413 from the header
before anything is decoded, unreadable files 422."""

from __future__ import annotations

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from adaptiveclick.labelstudio.decode import decode_image
from adaptiveclick.labelstudio.errors import ImageError
from adaptiveclick.labelstudio.settings import ImageLimits


def encoded(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def ramp(dtype, top: float) -> np.ndarray:
    return (np.linspace(0, top, 64 * 32).reshape(32, 64)).astype(dtype)


def test_16_bit_grey_is_scaled_not_clipped():
    values = ramp(np.uint16, 65535)
    rgb = decode_image(encoded(values))
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 2])  # grey in all three channels
    assert np.abs(rgb[:, :, 0].astype(int) - np.rint(values / 257)).max() <= 1
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 100 < rgb[16, 32, 0] < 160  # not a white image


def test_16_bit_rgb_and_tiff():
    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32768, 257
    for ext in (".png", ".tiff"):
        ok, data = cv2.imencode(ext, rgb16[:, :, ::-1])
        assert ok
        assert decode_image(data.tobytes())[0, 0].tolist() == [255, 128, 1]
    assert decode_image(encoded(ramp(np.uint16, 65535), "TIFF"))[-1, -1, 0] == 255


def test_32_bit_integer_and_float_grey():
    sixteen_in_int32 = ramp(np.int32, 65535)
    assert decode_image(encoded(sixteen_in_int32, "TIFF"))[-1, -1, 0] == 255
    wide = ramp(np.int32, 4_000_000) - 2_000_000  # signed, wider than 16 bits: stretched min..max
    stretched = decode_image(encoded(wide, "TIFF"))[:, :, 0]
    assert stretched.min() == 0 and stretched.max() == 255 and 100 < stretched[16, 32] < 160
    unit = ramp(np.float32, 1.0)
    assert np.abs(decode_image(encoded(unit, "TIFF"))[:, :, 0].astype(int) - np.rint(unit * 255)).max() <= 1
    hdr = ramp(np.float32, 1000.0) - 10  # floats outside [0, 1]: stretched
    assert decode_image(encoded(hdr, "TIFF"))[-1, -1, 0] == 255


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels but carries almost no data (a pixel bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(30000, 30000), (8000, 7000), (100_000, 100_000)])
def test_pixel_bombs_are_413_from_the_header(size):
    start = time.perf_counter()
    with pytest.raises(ImageError, match="ADAPTIVECLICK_MAX_IMAGE_PIXELS") as info:
        decode_image(png_header_only(*size))
    assert info.value.status_code == 413
    assert time.perf_counter() - start < 2  # nothing was decoded


def test_the_limit_applies_after_orientation_and_to_small_limits():
    with pytest.raises(ImageError) as info:
        decode_image(encoded(np.zeros((20, 20, 3), np.uint8)), ImageLimits(max_pixels=399))
    assert info.value.status_code == 413
    assert decode_image(encoded(np.zeros((20, 20, 3), np.uint8)), ImageLimits(max_pixels=400)).shape == (20, 20, 3)


@pytest.mark.parametrize(
    "data", [b"", b"not an image", png_header_only(4, 4)[:30], b"\x89PNG\r\n\x1a\n" + b"\x00" * 40]
)
def test_unreadable_bytes_are_422(data):
    with pytest.raises(ImageError, match="not a readable image") as info:
        decode_image(data)
    assert info.value.status_code == 422


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX", "SGI", "EPS"])
def test_only_the_formats_label_studio_shows_are_opened(fmt):
    """PIL knows dozens of formats (and their parsers); an image tag shows a few: the rest is 422."""
    buffer = io.BytesIO()
    try:
        Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format=fmt)
    except (OSError, KeyError):  # no writer for it here (EPS needs Ghostscript): a few bytes of its magic do
        buffer = io.BytesIO(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    assert Image.open(io.BytesIO(buffer.getvalue())).format or True  # PIL itself would open it
    with pytest.raises(ImageError, match="not a readable image") as info:
        decode_image(buffer.getvalue())
    assert info.value.status_code == 422
    for ok in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        assert decode_image(encoded(np.zeros((4, 5, 3), np.uint8), ok)).shape == (4, 5, 3)
