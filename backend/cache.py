"""Session cache: decoded images and the per-click predictor state of interactive sessions, LRU by bytes.

Label Studio sends every click of the object with each request and no object id, so an object's session is its
click sequence. For every click prefix the backend has computed it keeps the step's output (probabilities and
zoom-in ROI), keyed by ``(model version, image key, clicks)``: the next request finds the longest cached prefix of
its clicks and runs the network only for the clicks after it (one run for a new click; a replay from the last
unchanged click when a click was moved or removed). Model versions key the entries, so a swapped model never
reuses its predecessor's masks.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from adaptiveclick.model.clicks import Click
from adaptiveclick.model.prediction import Roi

ENTRY_OVERHEAD = 512  # bytes charged per entry beyond its arrays (keys, dict slots)
CLICK_BYTES = 160  # what one click of a step's key costs (a Click and its tuple slot)


def image_key(project: int | None, task_id: int | None, url: str) -> tuple[int | None, int | None, str]:
    """The key of a task's image in the cache: the URL by its sha256, so a long URL (a ``data:`` URI) is never
    held by the cache, whose charge would not count it."""
    return project, task_id, hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class StepState:
    """What one interaction step leaves for the next: ``probs`` ``[H, W]`` float32 and the zoom-in ROI."""

    probs: np.ndarray
    roi: Roi | None

    @property
    def nbytes(self) -> int:
        return int(self.probs.nbytes)


class SessionCache:
    """Thread-safe LRU cache bounded by the bytes of the arrays it holds.

    Args:
        max_bytes: budget; the least recently used entries are dropped beyond it. An entry larger than the whole
            budget is not stored.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    # -- generic ---------------------------------------------------------------------------------------------

    def get(self, key: Hashable, count: bool = True):
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            if count:
                self.hits += entry is not None
                self.misses += entry is None
            return None if entry is None else entry[0]

    def put(self, key: Hashable, value, nbytes: int) -> None:
        size = int(nbytes) + ENTRY_OVERHEAD
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    # -- images ----------------------------------------------------------------------------------------------

    def get_image(self, image_key: Hashable) -> np.ndarray | None:
        return self.get(("image", image_key))

    def put_image(self, image_key: Hashable, image: np.ndarray) -> None:
        image.setflags(write=False)  # shared between requests: nobody may change it in place
        self.put(("image", image_key), image, image.nbytes)

    # -- interaction steps -----------------------------------------------------------------------------------

    def longest_prefix(
        self, model_version: str, image_key: Hashable, clicks: Sequence[Click]
    ) -> tuple[int, StepState | None]:
        """``(n, state)`` for the longest cached ``clicks[:n]`` (``(0, None)`` when none is cached)."""
        clicks = tuple(clicks)
        for n in range(len(clicks), 0, -1):
            state = self.get(("step", model_version, image_key, clicks[:n]), count=False)
            if state is not None:
                with self._lock:
                    self.hits += 1
                return n, state
        with self._lock:
            self.misses += 1
        return 0, None

    def put_step(self, model_version: str, image_key: Hashable, clicks: Sequence[Click], state: StepState) -> None:
        state.probs.setflags(write=False)
        self.put(("step", model_version, image_key, tuple(clicks)), state, state.nbytes + CLICK_BYTES * len(clicks))

    def stats(self) -> dict[str, int]:
        return {
            "bytes": self._bytes,
            "entries": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }
