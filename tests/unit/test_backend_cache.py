"""Session cache: LRU by bytes, longest click prefix, keyed by model version; thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from adaptiveclick.backend.cache import CLICK_BYTES, ENTRY_OVERHEAD, SessionCache, StepState, image_key


def state(value: float, shape=(10, 10)) -> StepState:
    return StepState(np.full(shape, value, np.float32), (0, shape[0] - 1, 0, shape[1] - 1))


def test_longest_prefix():
    cache = SessionCache(1 << 20)
    clicks = [(1, 1, True), (5, 5, False), (7, 2, True)]
    assert cache.longest_prefix("v1", "img", clicks) == (0, None)
    for k in range(1, 3):
        cache.put_step("v1", "img", clicks[:k], state(k))
    n, found = cache.longest_prefix("v1", "img", clicks)
    assert n == 2 and found.probs[0, 0] == 2
    # a changed second click only matches the first
    n, found = cache.longest_prefix("v1", "img", [clicks[0], (6, 6, False)])
    assert n == 1 and found.probs[0, 0] == 1
    # a removed click: the shorter sequence is itself cached
    assert cache.longest_prefix("v1", "img", clicks[:1])[0] == 1
    # other model version, other image: nothing
    assert cache.longest_prefix("v2", "img", clicks) == (0, None)
    assert cache.longest_prefix("v1", "other", clicks) == (0, None)
    assert cache.hits == 3 and cache.misses == 3


def test_lru_by_bytes():
    one = state(0).nbytes + ENTRY_OVERHEAD + CLICK_BYTES  # a step of one click
    cache = SessionCache(3 * one)
    for k in range(3):
        cache.put_step("v", "img", [(k, 0, True)], state(k))
    assert len(cache) == 3 and cache.nbytes == 3 * one
    cache.longest_prefix("v", "img", [(0, 0, True)])  # touch the oldest: it becomes the newest
    cache.put_step("v", "img", [(3, 0, True)], state(3))
    assert cache.longest_prefix("v", "img", [(1, 0, True)]) == (0, None)  # the least recently used went
    assert cache.longest_prefix("v", "img", [(0, 0, True)])[0] == 1
    assert cache.nbytes <= cache.max_bytes and cache.evictions == 1


def test_oversized_and_replaced_entries():
    cache = SessionCache(1000)
    cache.put_image("big", np.zeros((100, 100, 3), np.uint8))
    assert cache.get_image("big") is None and cache.nbytes == 0
    cache.put("k", "a", 100)
    cache.put("k", "b", 200)
    assert cache.get("k") == "b" and cache.nbytes == 200 + ENTRY_OVERHEAD
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(ValueError):
        SessionCache(0)


def test_cached_arrays_are_read_only():
    cache = SessionCache(1 << 20)
    image = np.zeros((4, 4, 3), np.uint8)
    cache.put_image("i", image)
    with pytest.raises(ValueError):
        cache.get_image("i")[0, 0, 0] = 1
    s = state(1)
    cache.put_step("v", "i", [(0, 0, True)], s)
    with pytest.raises(ValueError):
        s.probs[0, 0] = 0


def test_concurrent_use_keeps_the_byte_count_exact():
    one = state(0, (4, 4)).nbytes + ENTRY_OVERHEAD + CLICK_BYTES
    cache = SessionCache(50 * one)

    def work(worker: int):
        for k in range(200):
            cache.put_step("v", worker, [(k, 0, True)], state(k, (4, 4)))
            cache.longest_prefix("v", worker, [(k, 0, True), (1, 1, False)])

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 50 and cache.nbytes == 50 * one


def test_keys_hold_a_digest_of_the_url_and_steps_are_charged_for_their_clicks():
    """A 2 MB data: URI must not ride along in the cache's keys uncharged."""
    url = "data:image/png;base64," + "A" * (2 << 20)
    key = image_key(1, 2, url)
    assert key[:2] == (1, 2) and len(key[2]) == 64 and key == image_key(1, 2, url) != image_key(1, 3, url)
    cache = SessionCache(1 << 20)
    cache.put_step("v", key, [(k, 0, True) for k in range(100)], state(0, (4, 4)))
    assert cache.nbytes == state(0, (4, 4)).nbytes + ENTRY_OVERHEAD + 100 * CLICK_BYTES
