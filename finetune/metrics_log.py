"""What a fine-tune leaves in its output folder besides checkpoints: the metrics log, its plot and a status file.

* ``metrics.jsonl``: one JSON object per line, ``{"kind": "train", "step", "loss", ...}`` every optimizer step and
  ``{"kind": "val", "step", "noc85", "noc90", ...}`` after each validation. On resume, lines past the checkpoint's
  step are dropped (they belong to steps that will be redone).
* ``metrics.png``: training loss and validation NoC@85/90 against the step.
* ``status.json``: ``{"state": "running" | "finished" | "failed", "step", "steps", ...}``, replaced atomically, for
  whoever supervises the job (the backend's status endpoint).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from adaptiveclick.storage.files import atomic_write

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"
STATUS_FILE = "status.json"


def write_json_atomic(path: Path, value: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(value, indent=1, default=str).encode()))


class MetricsLog:
    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, kind: str, step: int, **values: Any) -> None:
        entry = {"kind": kind, "step": int(step), "time": round(time.time(), 3), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, default=float) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return entries

    def truncate_after(self, step: int) -> None:
        """Keep only entries up to ``step`` (resume from a checkpoint taken at ``step``)."""
        kept = [e for e in self.read() if int(e.get("step", 0)) <= step]
        atomic_write(self.path, lambda f: f.write("".join(json.dumps(e) + "\n" for e in kept).encode()))

    def plot(self, path: str | Path | None = None) -> Path:
        """Loss and validation NoC against the step, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        entries = self.read()
        train = [e for e in entries if e.get("kind") == "train" and "loss" in e]
        val = [e for e in entries if e.get("kind") == "val"]
        fig, (ax_loss, ax_noc) = plt.subplots(1, 2, figsize=(11, 4))
        if train:
            ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], lw=1, label="loss")
        ax_loss.set(xlabel="step", ylabel="training loss", title="loss (0.3 CE + 0.3 Dice + 0.4 AFL)")
        ax_loss.grid(alpha=0.3)
        for key in ("noc85", "noc90"):
            points = [(e["step"], e[key]) for e in val if e.get(key) is not None]
            if points:
                ax_noc.plot(*zip(*points), marker="o", label=key.replace("noc", "NoC@"))
        ax_noc.set(xlabel="step", ylabel="clicks", title="validation NoC (lower is better)")
        ax_noc.grid(alpha=0.3)
        if val:
            ax_noc.legend()
        fig.tight_layout()
        target = Path(path) if path else self.path.with_name(PLOT_FILE)
        tmp = target.with_name(f".{target.name}.tmp.png")
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        os.replace(tmp, target)
        return target


def write_status(out_dir: str | Path, state: str, **fields: Any) -> None:
    path = Path(out_dir) / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"state": state, "updated_at": time.time(), "pid": os.getpid(), **fields})


def read_status(out_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(out_dir) / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
