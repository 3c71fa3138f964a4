"""An annotate job's progress: counts by outcome and reason, tasks per minute and ETA, written to ``status.json``
(atomically, :func:`storage.files.atomic_write`) as the job goes, so ``/jobs`` and a person with ``cat`` see where
it stands; the same object is the job's summary at the end.

``status.json``: ``state`` (``loading``, ``listing``, ``running``, ``finished``, ``failed``), the job's identity
(project, shard, model version, source), ``total`` (tasks of the shard to do, those done by earlier runs included),
``done`` (tasks whose prediction Label Studio holds), ``to_do``, ``predicted`` / ``found`` (this run: posted, or
already there), ``skipped`` (tasks without a prediction, by reason), ``rectangles_skipped`` (by reason),
``failed`` (by reason: Label Studio refused or could not be reached), ``boxes``, ``regions``,
``tasks_per_minute`` and ``eta_s`` (from this run's pace over the tasks it worked on), ``updated_at``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from adaptiveclick.storage.files import atomic_write

STATUS_FILE = "status.json"
WRITE_EVERY_S = 1.0  # between progress writes (state changes are written at once)


class Progress:
    """Counts of one run, and ``status.json`` at ``path``; ``identity`` goes into every write."""

    def __init__(self, path: str | Path, identity: dict, clock=time.monotonic) -> None:
        self.path = Path(path)
        self.identity = identity
        self.clock = clock
        self.state = "loading"
        self.error: str | None = None
        self.total = 0
        self.done_before = 0  # journaled by earlier runs
        self.predicted = 0
        self.found = 0
        self.worked = 0  # tasks of the plan this run looked at (any outcome): the pace
        self.planned = 0  # tasks of the plan (segmented unless something goes wrong)
        self.boxes = 0
        self.regions = 0
        self.skipped: Counter[str] = Counter()
        self.rectangles_skipped: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._began: float | None = None
        self._written = -WRITE_EVERY_S
        self._started_at = datetime.now(timezone.utc).isoformat()

    @property
    def done(self) -> int:
        return self.done_before + self.predicted + self.found

    def begin_work(self) -> None:
        """The pace is counted from here (after the model loaded and the tasks were listed)."""
        self._began = self.clock()

    def tasks_per_minute(self) -> float | None:
        if self._began is None or not self.worked:
            return None
        return self.worked / max(1e-9, self.clock() - self._began) * 60

    def snapshot(self) -> dict:
        rate = self.tasks_per_minute()
        left = max(0, self.planned - self.worked)
        eta = None if rate is None else left / rate * 60
        return {
            "state": self.state,
            **self.identity,
            "total": self.total,
            "done": self.done,
            "to_do": left,
            "predicted": self.predicted,
            "found": self.found,
            "skipped": dict(self.skipped),
            "rectangles_skipped": dict(self.rectangles_skipped),
            "failed": dict(self.failed),
            "boxes": self.boxes,
            "regions": self.regions,
            "tasks_per_minute": None if rate is None else round(rate, 2),
            "eta_s": None if eta is None else round(eta, 1),
            "seconds": None if self._began is None else round(self.clock() - self._began, 2),
            "started_at": self._started_at,
            "updated_at": datetime.now(timezone.utc).isoformat(),
            **({"error": self.error} if self.error else {}),
        }

    def write(self, state: str | None = None, force: bool = False) -> dict:
        """Write ``status.json`` (at most every :data:`WRITE_EVERY_S` unless the state changes or ``force``)."""
        changed = state is not None and state != self.state
        if state is not None:
            self.state = state
        snapshot = self.snapshot()
        now = self.clock()
        if changed or force or now - self._written >= WRITE_EVERY_S:
            data = json.dumps(snapshot, indent=1).encode()
            atomic_write(self.path, lambda f: f.write(data))
            self._written = now
        return snapshot
