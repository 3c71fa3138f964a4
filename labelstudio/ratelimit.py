"""A rate limit on calls to Label Studio: a token bucket shared by every call of one job.

A batch job must not hammer the Label Studio that annotators are working in: with ``per_second`` calls per second
(and bursts of at most ``burst``), :meth:`RateLimit.wait` sleeps just long enough before each call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimit:
    """At most ``per_second`` calls per second on average, ``burst`` at once; ``None`` or ``0``: no limit.
    Thread-safe. ``clock`` and ``sleep`` exist for tests."""

    def __init__(
        self,
        per_second: float | None,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second is not None and per_second < 0:
            raise ValueError(f"a rate must be a number of calls per second >= 0, got {per_second!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.per_second = per_second or None
        self.burst = burst
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()
        self.waited_s = 0.0  # in total, for the job's summary

    def wait(self) -> float:
        """Take one call's token, sleeping until there is one; returns the seconds slept."""
        if self.per_second is None:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_second)
            self._last = now
            delay = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.per_second
            # the token is taken now (the balance may go negative), so callers queue up in order
            self._tokens -= 1
            self.waited_s += delay
        if delay:
            self._sleep(delay)
        return delay
