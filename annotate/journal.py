"""The journal of an annotate job: one JSON line per task whose prediction Label Studio holds, appended and
fsync'd once Label Studio has accepted it, so a job killed at any moment resumes without doing a task twice.

Each line is ``{"task": id, "outcome": "predicted" | "found", "prediction": id, "model_version": ..., ...}``
(``found``: the task already held a prediction of this model version, e.g. posted by a run killed before it could
write the line). A last line cut short by the kill is ignored (and overwritten by the next append); any other
unreadable line is an error, since the journal would no longer say what was done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

JOURNAL_FILE = "journal.jsonl"


class JournalError(RuntimeError):
    """The journal cannot be read: a line in its middle is not a journal entry."""


class Journal:
    """An append-only journal at ``path``; :attr:`done` holds the task ids in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: list[dict] = []
        self.done: set[int] = set()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1  # the bytes after the last newline: the line being written when killed
        for number, line in enumerate(data[:cut].split(b"\n")[:-1], 1):
            entry = _entry(line)
            if entry is None:
                if line.strip():
                    raise JournalError(f"{self.path} line {number} is not a journal entry: move the file away")
                continue
            self._add(entry)
        tail = _entry(data[cut:]) if cut < len(data) else None
        if cut < len(data):
            with open(self.path, "r+b") as f:  # a whole entry lacks only its newline; anything less is dropped
                f.truncate(cut)
                if tail is not None:
                    f.seek(cut)
                    f.write(data[cut:] + b"\n")
            if tail is not None:
                self._add(tail)

    def _add(self, entry: dict) -> None:
        self.entries.append(entry)
        self.done.add(int(entry["task"]))

    def append(self, entry: dict) -> None:
        """Add ``entry`` (with its ``task``) and fsync it before returning."""
        line = json.dumps(entry, separators=(",", ":"), default=str).encode() + b"\n"
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._add(entry)

    def __contains__(self, task: int) -> bool:
        return task in self.done

    def __len__(self) -> int:
        return len(self.done)


def _entry(line: bytes) -> dict | None:
    """The journal entry on ``line``, or None when it is not one."""
    try:
        entry = json.loads(line)
        int(entry["task"])
    except (ValueError, KeyError, TypeError):
        return None
    return entry if isinstance(entry, dict) else None
