"""Brush RLE: byte-identical to label-studio-sdk's encoder, decoded back by the sdk's decoder, on random and real
masks, including the edge cases of the format (runs of exactly 8/16/256/65536 bytes, byte-aligned streams)."""

from __future__ import annotations

import os
import signal
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from label_studio_sdk.converter import brush

from adaptiveclick.evaluation.datasets import GrabCutDataset
from adaptiveclick.labelstudio import rle
from adaptiveclick.labelstudio.rle import RleError, decode_rle, decode_values, encode_rle


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
    rng = np.random.default_rng(zlib.crc32(repr((shape, kind)).encode()))  # stable across runs (hash() is salted)
    mask = {
        "zeros": np.zeros(shape, bool),
        "ones": np.ones(shape, bool),
        "random": rng.random(shape) > 0.5,
        "checker": (np.indices(shape).sum(0) % 2).astype(bool),
        "block": np.pad(
            np.ones((max(1, shape[0] // 2), max(1, shape[1] // 2)), bool),
            ((0, shape[0] - max(1, shape[0] // 2)), (0, shape[1] - max(1, shape[1] // 2))),
        ),
    }[kind]
    check_roundtrip(mask)


@pytest.mark.parametrize("pixels", [1, 2, 3, 4, 5, 63, 64, 65, 16383, 16384, 16385, 32768, 32769, 70000])
def test_run_length_boundaries(pixels):
    """Byte runs of 4 * pixels cross the 8/16/256 and 65536-chunk boundaries of the format."""
    row = np.zeros((1, pixels + 3), bool)
    row[0, 1 : 1 + pixels] = True
    check_roundtrip(row)
    check_roundtrip(np.ones((1, pixels), bool))


def test_uint8_values_are_kept():
    mask = np.array([[0, 1, 1, 128], [255, 255, 7, 0]], np.uint8)
    check_roundtrip(mask)


@pytest.mark.parametrize("shape", [(2048, 1500), (2047, 1501)])  # whole 64-pixel words, and a ragged tail
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_large_mask_change_search_in_chunks_and_threads(monkeypatch, threads, shape):
    """Several change-search chunks and (with threads > 1) parts searched side by side, with changes right at
    the chunk and part borders: the same bytes as the sdk whichever way the search is split."""
    monkeypatch.setattr(rle, "_search_threads", lambda: threads)
    monkeypatch.setattr(rle, "PARALLEL_MIN_PIXELS", 1)
    monkeypatch.setattr(rle, "BOOL_CHUNK", 1 << 18)
    mask = np.zeros(shape, bool)
    flat = mask.reshape(-1)
    parts = [flat.size * k // threads for k in range(1, threads)]
    borders = [k * rle.BOOL_CHUNK for k in (1, 2)] + parts + [p // 64 * 64 for p in parts] + [flat.size - 64]
    for border in borders:
        flat[border - 1] = True
        flat[border + 1 : border + 9] = True
    flat[-5:] = True
    expected = rle._byte_changes(flat.view(np.uint8))
    np.testing.assert_array_equal(rle._bool_changes(flat), expected)
    check_roundtrip(mask)


def test_forked_worker_gets_its_own_search_threads(monkeypatch):
    """gunicorn forks workers: a child must not wait on helper threads that only exist in its parent."""
    monkeypatch.setattr(rle, "_search_threads", lambda: 2)
    monkeypatch.setattr(rle, "PARALLEL_MIN_PIXELS", 1)
    mask = np.zeros((1024, 1024), bool)
    mask[100:900, 200:700] = True
    expected = encode_rle(mask)  # the parent's pool now exists
    pid = os.fork()
    if pid == 0:  # the child: exit status tells the parent whether it encoded the same bytes
        os._exit(0 if encode_rle(mask) == expected else 1)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung encoding a mask")
    assert os.waitstatus_to_exitcode(done[1]) == 0


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
    data = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    np.testing.assert_array_equal(decode_values(data), np.arange(1, 9))
    np.testing.assert_array_equal(brush.decode_rle(data), np.arange(1, 9))
