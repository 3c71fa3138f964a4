"""How many /predict requests may be in progress at once (``ADAPTIVECLICK_THREADS`` minus the reserved threads).

A request waiting for the model holds its request thread. Without a bound, enough concurrent clicks would take every
thread, and /health (Label Studio waits 1 s) and /setup (3 s) would queue behind them until Label Studio marks the
backend disconnected. Beyond the bound a click is refused at once with 503 and ``Retry-After``: the annotator's
next click goes through as soon as one finishes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import ModelBusy


class Admission:
    def __init__(self, slots: int, why: str) -> None:
        self.slots = slots
        self._why = why  # the settings behind the bound, for the 503 message
        self._lock = threading.Lock()
        self._in_progress = 0

    @property
    def in_progress(self) -> int:
        with self._lock:
            return self._in_progress

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold a slot for the body of the ``with``; :class:`ModelBusy` at once when none is free."""
        with self._lock:
            if self._in_progress >= self.slots:
                raise ModelBusy(f"{self.slots} predictions are in progress already ({self._why}); retry the click")
            self._in_progress += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_progress -= 1
