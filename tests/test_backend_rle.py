"""Brush RLE: byte-identical to label-studio-sdk's encoder, decoded back by the sdk's decoder, on random and real
masks, including the edge cases of the format (runs of exactly 8/16/256/65536 bytes, byte-aligned streams)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from label_studio_sdk.converter import brush

from backend.rle import RleError, decode_rle, decode_values, encode_rle
from evaluation.datasets import GrabCutDataset


def sdk_encode(mask: np.ndarray) -> list[int]:
    values = mask.astype(np.uint8) * 255 if mask.dtype == bool else mask
    return brush.mask2rle(values)


def sdk_decode(rle: list[int], height: int, width: int) -> np.ndarray:
    return brush.decode_rle(rle).reshape(height, width, 4)[:, :, 3]


def check_roundtrip(mask: np.ndarray) -> None:
    ours = encode_rle(mask)
    assert ours == sdk_encode(mask)
    h, w = mask.shape
    values = mask.astype(np.uint8) * 255 if mask.dtype == bool else mask
    np.testing.assert_array_equal(sdk_decode(ours, h, w), values)
    np.testing.assert_array_equal(decode_rle(ours, h, w), values > 0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (3, 5), (8, 8), (13, 17), (64, 48)])
@pytest.mark.parametrize("kind", ["zeros", "ones", "random", "checker", "block"])
def test_matches_sdk_on_small_masks(shape, kind):
    rng = np.random.default_rng(hash((shape, kind)) % 2**32)
    mask = {
        "zeros": np.zeros(shape, bool),
        "ones": np.ones(shape, bool),
        "random": rng.random(shape) > 0.5,
        "checker": (np.indices(shape).sum(0) % 2).astype(bool),
        "block": np.pad(np.ones((max(1, shape[0] // 2), max(1, shape[1] // 2)), bool),
                        ((0, shape[0] - max(1, shape[0] // 2)), (0, shape[1] - max(1, shape[1] // 2)))),
    }[kind]
    check_roundtrip(mask)


@pytest.mark.parametrize("pixels", [1, 2, 3, 4, 5, 63, 64, 65, 16383, 16384, 16385, 32768, 32769, 70000])
def test_run_length_boundaries(pixels):
    """Byte runs of 4 * pixels cross the 8/16/256 and 65536-chunk boundaries of the format."""
    row = np.zeros((1, pixels + 3), bool)
    row[0, 1:1 + pixels] = True
    check_roundtrip(row)
    check_roundtrip(np.ones((1, pixels), bool))


def test_uint8_values_are_kept():
    mask = np.array([[0, 1, 1, 128], [255, 255, 7, 0]], np.uint8)
    check_roundtrip(mask)


def test_large_mask_uses_chunked_change_search():
    """Bigger than one 2^19-pixel chunk, with changes right at chunk borders."""
    mask = np.zeros((1024, 1100), bool)
    flat = mask.reshape(-1)
    for border in (1 << 19, 2 << 19):
        flat[border - 1] = True
        flat[border + 1: border + 9] = True
    flat[-5:] = True
    check_roundtrip(mask)


def test_real_masks(data_root):
    dataset = GrabCutDataset(data_root / "GrabCut")
    for i in range(0, len(dataset), 10):
        check_roundtrip(dataset[i].mask)


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_property_matches_sdk(mask):
    check_roundtrip(mask)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros(5, bool))
    with pytest.raises(ValueError, match="bool or uint8"):
        encode_rle(np.zeros((2, 2), np.float32))
    rle = encode_rle(np.ones((4, 4), bool))
    with pytest.raises(RleError, match="needs"):
        decode_rle(rle, 4, 5)
    with pytest.raises(RleError, match="ends in the middle"):
        decode_values(rle[:5])
    with pytest.raises(RleError, match="0..255"):
        decode_values([0, 1, 300])
    with pytest.raises(RleError, match="positive"):
        decode_rle(rle, 0, 4)


def test_decodes_literal_runs_written_by_label_studio_frontend():
    """The frontend's rle-pack writes several literal values in one token; our decoder reads those too."""
    # header: 8 values, word size 8, run sizes 3/4/8/16; one literal token of 8 values 1..8
    bits = f"{8:032b}{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    bits += "0" + "00" + f"{7:03b}" + "".join(f"{v:08b}" for v in range(1, 9))
    bits += "0" * (-len(bits) % 8)
    data = [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]
    np.testing.assert_array_equal(decode_values(data), np.arange(1, 9))
    np.testing.assert_array_equal(brush.decode_rle(data), np.arange(1, 9))
