"""The loaded models, by registry key, least recently used first out, bounded by a count or by bytes.

One backend serves many Label Studio projects, each possibly with a model of its own, so models are loaded on
demand and kept in a memory-bounded LRU (``ADAPTIVECLICK_MODEL_CACHE``: ``2`` models, or ``3GB`` of weights, as
:meth:`Predictor.memory_bytes` counts them: the fp32 weights, less than the worker's RSS grows once the model has
answered clicks; ``adaptiveclick benchmark projects`` measures both). Dropping a model from the
pool never disturbs a request that holds it: the request keeps its :class:`~backend.served_model.ServedModel` to
the end, and the memory goes when the last holder lets go. A model is loaded once however many requests ask for it
at the same time (one lock per key).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings read PoolLimit without importing torch; the pool holds ServedModels
    from .served_model import ServedModel

SETTING = "ADAPTIVECLICK_MODEL_CACHE"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)  # fullmatch


@dataclass(frozen=True)
class PoolLimit:
    """At most ``models`` models, or at most ``bytes`` of them (the model just asked for always stays)."""

    models: int | None = 2
    bytes: int | None = None

    @classmethod
    def parse(cls, text: str) -> PoolLimit:
        """``"2"`` (models) or ``"3GB"`` / ``"1500MB"`` / ``"2GiB"`` (bytes, 1024-based)."""
        if text.strip().isdigit():
            count = int(text)
            if count < 1:
                raise ValueError(f"{SETTING} must keep at least 1 model, got {text!r}")
            return cls(models=count)
        match = _SIZE.fullmatch(text)
        if not match or not match.group(2) and not match.group(3):
            raise ValueError(f"{SETTING} must be a number of models (2) or a size (3GB, 1500MB), got {text!r}")
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
        if size <= 0:
            raise ValueError(f"{SETTING} must be positive, got {text!r}")
        return cls(models=None, bytes=size)

    def __str__(self) -> str:
        return f"{self.models} models" if self.models is not None else f"{self.bytes} bytes"


class ModelPool:
    """Thread-safe LRU of :class:`ServedModel` by key (``line/version``, or the configured predictor's key)."""

    def __init__(self, limit: PoolLimit = PoolLimit()) -> None:
        self.limit = limit
        self._models: OrderedDict[str, ServedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0
        self.evictions = 0

    def get(self, key: str, load: Callable[[], ServedModel]) -> ServedModel:
        """The model under ``key``, loaded with ``load()`` if it is not in the pool (whatever ``load`` raises
        propagates, and nothing is kept)."""
        with self._lock:
            served = self._touch(key)
            if served is not None:
                return served
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per key; the others wait for it
            with self._lock:
                served = self._touch(key)
                if served is not None:
                    return served
            served = load()
            with self._lock:
                self._models[key] = served
                self.loads += 1
                self._evict(keep=key)
                self._loading.pop(key, None)
            return served

    def peek(self, key: str) -> ServedModel | None:
        """The model under ``key`` if loaded (without making it recently used)."""
        with self._lock:
            return self._models.get(key)

    def keys(self) -> list[str]:
        """Loaded keys, least recently used first."""
        with self._lock:
            return list(self._models)

    def nbytes(self) -> int:
        with self._lock:
            return sum(m.memory_bytes for m in self._models.values())

    def _touch(self, key: str) -> ServedModel | None:
        served = self._models.get(key)
        if served is not None:
            self._models.move_to_end(key)
        return served

    def _evict(self, keep: str) -> None:
        def over() -> bool:
            if self.limit.models is not None and len(self._models) > self.limit.models:
                return True
            total = sum(m.memory_bytes for m in self._models.values())
            return self.limit.bytes is not None and total > self.limit.bytes

        while len(self._models) > 1 and over():
            oldest = next(k for k in self._models if k != keep)
            del self._models[oldest]
            self.evictions += 1
