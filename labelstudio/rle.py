"""Label Studio's brush RLE, vectorised with numpy.

Label Studio stores a brush mask as the ``rle-pack`` encoding (thi.ng/umbrella) of the mask's RGBA bytes, flattened
row-major (``[H, W, 4]`` -> ``4 * H * W`` bytes). The stream is big-endian bits:

* header: 32 bits value count, 5 bits ``word_size - 1`` (7), four 4-bit ``run_size - 1`` fields (3, 4, 8, 16 bits);
* then tokens, one per run of equal bytes: a flag bit (1 repeat, 0 literal), a 2-bit index into the run sizes, the
  run length minus one in that many bits, then the 8-bit value (once for a repeat);
* zero bits up to the next byte; when the stream is already byte-aligned a whole zero byte follows.

The encoder reproduces ``label_studio_sdk.converter.brush.encode_rle`` token for token (runs of 1 as 14-bit
literals; runs of 2..8, 9..16, 17..256 with the 3/4/8-bit sizes; longer runs in 16-bit chunks of 65536 and a final
16-bit chunk for the remainder), so the bytes are identical; the decoder reads any valid rle-pack stream.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

RLE_SIZES = (3, 4, 8, 16)
WORD_SIZE = 8
CHANNELS = 4  # RGBA
MAX_CHUNK = 1 << 16  # the longest run one 16-bit token can hold
BOOL_CHUNK = 1 << 22  # pixels per step of the bool change search (512 KiB packed; a multiple of 64)
LE_WORD = np.dtype("<u8")  # the packed search's 64-pixel words, little-endian whatever the machine
PARALLEL_MIN_PIXELS = 1 << 22  # smaller masks take a fraction of a millisecond: not worth a thread hand-off
MAX_SEARCH_THREADS = 4


class RleError(ValueError):
    """The RLE payload is not a valid Label Studio brush stream (or does not fit the stated size)."""


def _header_bits(count: int) -> str:
    return f"{count:032b}{WORD_SIZE - 1:05b}" + "".join(f"{size - 1:04b}" for size in RLE_SIZES)


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask [H, W], got shape {mask.shape}")
    if mask.dtype != bool and mask.dtype != np.uint8:
        raise ValueError(f"expected a bool or uint8 mask, got {mask.dtype}")
    return mask


def encode_rle(mask: np.ndarray) -> list[int]:
    """Encode ``mask`` ``[H, W]`` as Label Studio brush RLE bytes.

    A bool mask becomes alpha 0/255 (opaque where True); a uint8 mask is written as its values. The bytes equal
    ``label_studio_sdk.converter.brush.mask2rle(values)`` (each pixel value fills all four RGBA channels).
    """
    mask = _check_mask(mask)
    flat = mask.ravel()
    count = flat.size * CHANNELS
    if count >= 1 << 32:
        raise ValueError(f"mask of {flat.size} pixels is too large for the 32-bit RLE header")
    header = np.frombuffer(_header_bits(count).encode(), dtype=np.uint8) - ord("0")
    if flat.size == 0:
        return list(_pack(header).tobytes())
    # runs of equal pixels; every pixel covers 4 equal bytes, so byte runs are pixel runs times 4
    starts = np.concatenate(([0], _bool_changes(flat) if flat.dtype == bool else _byte_changes(flat)))
    lengths = np.diff(np.concatenate((starts, [flat.size]))).astype(np.int64) * CHANNELS
    run_values = flat[starts].astype(np.uint64) * np.uint64(255 if flat.dtype == bool else 1)
    codes, widths = _tokens(lengths, run_values)
    return list(_pack(np.concatenate((header, _bits(codes, widths)))).tobytes())


def _byte_changes(values: np.ndarray) -> np.ndarray:
    """Indices ``i >= 1`` with ``values[i] != values[i - 1]`` (``values`` 1-D uint8)."""
    return np.flatnonzero(values[1:] != values[:-1]) + 1


def _bool_changes(flat: np.ndarray) -> np.ndarray:
    """Like :func:`_byte_changes` for a bool array. The search is most of the encoder's time on a large mask and
    numpy releases the GIL while it runs, so a large mask is split into one contiguous part per core, searched
    side by side."""
    parts = _search_threads() if flat.size >= PARALLEL_MIN_PIXELS else 1
    if parts == 1:
        return _bool_changes_in(flat, 0, flat.size)
    # part borders on whole words of the packed search, so that only the mask's last word needs padding
    bounds = [0] + [flat.size * k // parts // 64 * 64 for k in range(1, parts)] + [flat.size]
    pool = _search_pool(parts)
    found = [pool.submit(_bool_changes_in, flat, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    return np.concatenate([_bool_changes_in(flat, 0, bounds[1])] + [f.result() for f in found])


def _bool_changes_in(flat: np.ndarray, begin: int, end: int) -> np.ndarray:
    """Changes at indices ``begin <= i < end`` (``i >= 1``), in chunks that bound the temporaries' size."""
    found: list[np.ndarray] = [np.empty(0, np.int64)]
    for start in range(begin, end, BOOL_CHUNK):
        if start and flat[start] != flat[start - 1]:  # the change into the chunk's first pixel
            found.append(np.array([start], np.int64))
        found.append(_packed_changes(flat[start : min(start + BOOL_CHUNK, end)]) + start)
    return np.concatenate(found)


def _search_threads() -> int:
    """The cores this process may run on (at most MAX_SEARCH_THREADS)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_SEARCH_THREADS, cores)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _search_pool(parts: int) -> ThreadPoolExecutor:
    """The helper threads (created on first use, so never inherited half-alive by a forked worker)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=parts - 1, thread_name_prefix="rle")
        return _pool


def _forget_pool() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _packed_changes(flat: np.ndarray) -> np.ndarray:
    """Indices ``i >= 1`` with ``flat[i] != flat[i - 1]`` (``flat`` 1-D bool), on the mask packed 64 pixels to a
    word: 8x less memory traffic than comparing bytes, and whole-word shifts that numpy vectorises."""
    packed = np.packbits(flat, bitorder="little")  # pixel 8j+t is bit t of byte j
    if packed.size % 8:
        packed = np.concatenate((packed, np.zeros(8 - packed.size % 8, np.uint8)))  # zero tail
    words = packed.view(LE_WORD)  # pixel 64i+t is bit t of word i
    # XOR every bit with its predecessor: shift the bit stream by one, carrying the top bit into the next word
    diff = words << np.uint64(1)
    diff[1:] |= words[:-1] >> np.uint64(63)
    diff ^= words
    diff[0] &= ~np.uint64(1)  # pixel 0 has no predecessor here
    word_index = np.flatnonzero(diff != 0)  # (a bool array is numpy's fast nonzero path)
    changed = diff[word_index].view(np.uint8)  # byte k of a word holds its pixels 8k..8k+7
    byte_index = np.flatnonzero(changed)
    rows, bit = np.nonzero(np.unpackbits(changed[byte_index], bitorder="little").reshape(-1, 8))
    byte_at = byte_index[rows]
    positions = word_index[byte_at // 8] * 64 + byte_at % 8 * 8 + bit
    return positions[positions < flat.size]  # a change into the zero tail is no change


def _tokens(lengths: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One ``(code, bit width)`` per token, codes right-aligned in uint64, in stream order."""
    long_runs = lengths > 256
    # a run over 256 becomes ceil(L / 65536) 16-bit tokens: full chunks of 65536, then the remainder (1..65536)
    chunks = np.where(long_runs, (lengths + MAX_CHUNK - 1) // MAX_CHUNK, 1)
    token_run = np.repeat(np.arange(lengths.size), chunks)
    first_token = np.cumsum(chunks) - chunks
    chunk_index = np.arange(token_run.size) - first_token[token_run]
    is_last = chunk_index == chunks[token_run] - 1
    run_len = lengths[token_run]
    token_len = np.where(long_runs[token_run], np.where(is_last, run_len - MAX_CHUNK * chunk_index, MAX_CHUNK), run_len)
    value = values[token_run]
    # size index: 3 (16 bits) for every chunk of a run over 256, else 0 (3 bits) for 1..8 (a single byte is a
    # literal with the same layout), 1 for 9..16, 2 for 17..256
    size_index = np.select([long_runs[token_run], token_len <= 8, token_len <= 16], [3, 0, 1], 2)
    size_bits = np.asarray(RLE_SIZES, dtype=np.int64)[size_index]
    repeat = (run_len > 1).astype(np.uint64)  # every chunk of a long run is a repeat, even a 1-byte remainder
    code = repeat
    code = (code << np.uint64(2)) | size_index.astype(np.uint64)
    code = (code << size_bits.astype(np.uint64)) | (token_len - 1).astype(np.uint64)
    code = (code << np.uint64(WORD_SIZE)) | value
    return code, 1 + 2 + size_bits + WORD_SIZE


def _bits(codes: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Concatenate the low ``widths[i]`` bits of each ``codes[i]`` (MSB first) into one 0/1 uint8 array."""
    # left-align every code in 32 bits (tokens are at most 27 bits), unpack, keep the first `width` bits
    aligned = (codes << (32 - widths).astype(np.uint64)).astype(">u4")
    bits = np.unpackbits(aligned.view(np.uint8)).reshape(-1, 32)
    return bits[np.arange(32) < widths[:, None]]


def _pack(bits: np.ndarray) -> np.ndarray:
    # the sdk always appends 8 - (n % 8) zero bits: a full zero byte when already aligned
    padding = 8 - bits.size % 8
    return np.packbits(np.concatenate((bits, np.zeros(padding, np.uint8))))


class _BitReader:
    def __init__(self, data: np.ndarray) -> None:
        self.bits = np.unpackbits(data)
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.bits.size:
            raise RleError("RLE stream ends in the middle of a token")
        value = 0
        for bit in self.bits[self.pos : self.pos + n]:
            value = (value << 1) | int(bit)
        self.pos += n
        return value


def decode_values(rle: Sequence[int]) -> np.ndarray:
    """Decode an rle-pack stream to its flat uint8 values (for a brush mask: ``4 * H * W`` RGBA bytes)."""
    try:
        data = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise RleError(f"RLE must be a list of byte values: {exc}") from None
    if data.ndim != 1 or (data.size and (data.min() < 0 or data.max() > 255)):
        raise RleError("RLE must be a flat list of integers in 0..255")
    reader = _BitReader(data.astype(np.uint8))
    count = reader.read(32)
    word_size = reader.read(5) + 1
    if word_size > 8:
        raise RleError(f"brush RLE uses 8-bit words, this stream says {word_size}")
    sizes = [reader.read(4) + 1 for _ in range(4)]
    if count > 8 * data.size * 65536:  # more values than the stream could possibly describe
        raise RleError(f"RLE header claims {count} values, far more than {data.size} bytes can hold")
    out = np.zeros(count, dtype=np.uint8)
    i = 0
    # a token-level loop: brush masks have few runs, and this is not on the interactive path
    while i < count:
        repeat = reader.read(1)
        j = i + 1 + reader.read(sizes[reader.read(2)])
        if j > count:
            raise RleError("RLE run goes past the number of values in its header")
        if repeat:
            out[i:j] = reader.read(word_size)
        else:
            out[i:j] = [reader.read(word_size) for _ in range(j - i)]
        i = j
    return out


def decode_rle(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Decode Label Studio brush RLE to a ``[H, W]`` bool mask (alpha channel > 0, as Label Studio draws it)."""
    if height <= 0 or width <= 0:
        raise RleError(f"image size must be positive, got {width}x{height}")
    values = decode_values(rle)
    if values.size != height * width * CHANNELS:
        raise RleError(
            f"RLE holds {values.size} values; a {width}x{height} RGBA mask needs {height * width * CHANNELS}"
        )
    return values.reshape(height, width, CHANNELS)[:, :, 3] > 0
