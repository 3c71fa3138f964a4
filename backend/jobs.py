"""Background jobs the backend starts: a command of ``adaptiveclick`` run as a separate process (never in a request
thread, and the backend never imports the job's code), at most one per project and kind at a time, in its own folder
``<jobs root>/project-<id>/<UTC time>/`` with its log (``job.log``), the job's own ``status.json`` and, when it
ends, ``exit.json``. "One at a time" holds across worker processes and backend restarts: the job keeps an
exclusive ``flock`` on ``<jobs root>/project-<id>/job.lock`` (inherited from the launcher) for as long as it runs.
So does the cap across projects (``ADAPTIVECLICK_MAX_FINETUNES``, ``ADAPTIVECLICK_MAX_ANNOTATE_JOBS``): a job also
holds one of that many slot locks, ``<jobs root>/slots/<k>.lock``; with none free a new job is refused with 429
(:class:`JobLimit`), never queued behind a crowd of processes.

What ``GET /jobs`` shows of a job (:meth:`JobStatus.to_json`) depends on who asks: everyone sees its state, times,
reason, exit code, progress and what it published (strings redacted like the logs, absolute paths cut to their last
part); the operator token adds the job's folder and the tail of its log (redacted).

:class:`JobLauncher` is what every kind shares (folders, the lock, reaping, status from the folders); the kinds are
fine-tunes (:mod:`backend.finetune_jobs`, in ``MODEL_DIR/jobs/``) and annotate jobs (:mod:`backend.annotate_jobs`,
in ``MODEL_DIR/jobs/annotate/``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adaptiveclick.labelstudio.errors import RequestError
from adaptiveclick.storage.files import atomic_write
from adaptiveclick.storage.logs import redact, redact_value

from .settings import Settings

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 40


class JobRunning(RuntimeError):
    """A job of this kind is already running for this project."""


class JobLimit(RequestError):
    """As many jobs of this kind as allowed are running (all projects together): 429, retry when one ends."""

    status_code = 429


@dataclass(frozen=True)
class JobStatus:
    project: int
    state: str  # "none", "running", "succeeded", "failed", "interrupted"
    folder: str | None = None
    started_at: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    progress: dict | None = None  # the job's own status.json
    published: dict | None = None  # {"line", "version"} a fine-tune published, from its gate.json
    log_tail: list[str] | None = None
    kind: str = "finetune"
    cluster_job: str | None = None  # ``namespace/name`` of a fine-tune run as a Kubernetes Job (backend.cluster_jobs)

    def to_json(self, details: bool = False, secrets: tuple[str, ...] = ()) -> dict:
        """The job as ``GET /jobs`` shows it: with ``details`` (the operator token) its folder and log tail too;
        every string redacted like the logs (``secrets`` replaced), absolute paths cut to their last part unless
        ``details``."""
        shown: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None or (not details and key in ("folder", "log_tail")):
                continue
            if key == "log_tail":
                shown[key] = [redact(line, secrets) for line in value]
            elif key == "folder":
                shown[key] = value
            else:
                shown[key] = _public(redact_value(value, secrets), details)
        if self.folder is not None:
            shown["job"] = Path(self.folder).name
        return shown


def _public(value: Any, details: bool) -> Any:
    """``value`` without absolute paths (cut to their last part) unless ``details``."""
    if details:
        return value
    if isinstance(value, str):
        return Path(value).name if value.startswith("/") else value
    if isinstance(value, dict):
        return {k: _public(v, details) for k, v in value.items()}
    if isinstance(value, list):
        return [_public(v, details) for v in value]
    return value


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _published(folder: Path) -> dict | None:
    """The line and version a job published (its gate.json), None when it published nothing (yet)."""
    gate = _read_json(folder / "run" / "gate.json")
    if not gate or not gate.get("published"):
        return None
    return {"line": gate.get("line"), "version": gate["published"]}


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return f.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return []


class JobLauncher:
    """Starts ``adaptiveclick <kind> ...`` processes, at most one per project at a time, in
    ``jobs_root/project-<id>/<UTC time>/``, and reports them from those folders (``run/status.json`` is the job's
    own progress), as the module docstring says.

    Args:
        kind: the job's name in :class:`JobStatus` and thread names (``finetune``, ``annotate``).
        noun: what messages and logs call it (``fine-tune``, ``annotate job``).
    """

    def __init__(
        self, settings: Settings, jobs_root: Path, kind: str, noun: str, max_running: int = 1, limit_setting: str = ""
    ) -> None:
        self.settings = settings
        self.jobs_root = jobs_root
        self.kind = kind
        self.noun = noun
        self.max_running = max_running
        self.limit_setting = limit_setting

    def launch(self, project: int, reason: str, command_for: Callable[[Path], list[str]]) -> JobStatus:
        """Run ``command_for(folder)`` for ``project`` in a new folder (JobRunning if one of this kind runs)."""
        project_dir = self.jobs_root / f"project-{project}"
        project_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(project_dir / "job.lock", os.O_RDWR | os.O_CREAT, 0o644)
        slot_fd = -1
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                article = "an" if self.noun[0] in "aeiou" else "a"
                raise JobRunning(f"{article} {self.noun} of project {project} is already running") from None
            slot_fd = self._take_slot()
            folder = project_dir / _utc_stamp()
            folder.mkdir()
            command = command_for(folder)
            (folder / "job.json").write_text(
                json.dumps(
                    {
                        "project": project,
                        "reason": reason,
                        "started_at": datetime.now(timezone.utc).isoformat(),
                        "command": command,
                    },
                    indent=1,
                )
            )
            env = dict(os.environ)
            for name, value in (
                ("LABEL_STUDIO_URL", self.settings.label_studio.url),
                ("LABEL_STUDIO_API_KEY", self.settings.label_studio.api_key),
            ):
                if value:
                    env[name] = value  # by environment, not argv: `ps` must not show the key
            with open(folder / "job.log", "ab") as log:
                process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=os.getcwd(),
                    pass_fds=(lock_fd, slot_fd),
                    start_new_session=True,
                )
        finally:
            os.close(lock_fd)  # the child holds its own copies of the locked descriptors until it exits
            if slot_fd >= 0:
                os.close(slot_fd)
        threading.Thread(target=self._reap, args=(process, folder), daemon=True, name=f"{self.kind}-{project}").start()
        logger.info(
            f"{self.noun} started",
            extra={"project": project, "reason": reason, "pid": process.pid, "folder": str(folder)},
        )
        return self.status(project)

    def _take_slot(self) -> int:
        """A locked descriptor of a free slot (``slots/<k>.lock``, k < ``max_running``); :class:`JobLimit` when
        every slot is held by a running job."""
        slots = self.jobs_root / "slots"
        slots.mkdir(parents=True, exist_ok=True)
        for k in range(self.max_running):
            fd = os.open(slots / f"{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        raise JobLimit(
            f"{self.max_running} {self.noun}{'s are' if self.max_running > 1 else ' is'} running already, all projects "
            f"together ({self.limit_setting}={self.max_running}): retry when one has ended (GET /jobs)",
            headers={"Retry-After": "60"},
        )

    def running(self) -> int:
        """How many jobs of this kind hold a slot now (in any process)."""
        slots = self.jobs_root / "slots"
        return sum(_is_locked(slots / f"{k}.lock") for k in range(self.max_running))

    def _reap(self, process: subprocess.Popen, folder: Path) -> None:
        code = process.wait()
        outcome = {"exit_code": code, "finished_at": datetime.now(timezone.utc).isoformat()}
        atomic_write(folder / "exit.json", lambda f: f.write(json.dumps(outcome).encode()))
        log = logger.info if code == 0 else logger.error
        log(f"{self.noun} finished", extra={"folder": str(folder), "exit_code": code})

    # -- status ----------------------------------------------------------------------------------------------------

    def _is_locked(self, project: int) -> bool:
        return _is_locked(self.jobs_root / f"project-{project}" / "job.lock")

    def status(self, project: int) -> JobStatus:
        """The latest job of a project, from its folder (so it survives backend restarts)."""
        project_dir = self.jobs_root / f"project-{project}"
        folders = sorted(p for p in project_dir.glob("*") if p.is_dir()) if project_dir.is_dir() else []
        if not folders:
            return JobStatus(project, "none", kind=self.kind)
        folder = folders[-1]
        job = _read_json(folder / "job.json") or {}
        done = _read_json(folder / "exit.json")
        progress = _read_json(folder / "run" / "status.json")
        if done is not None:
            state = "succeeded" if done.get("exit_code") == 0 else "failed"
        elif self._is_locked(project):
            state = "running"
        else:  # ended while no backend process was watching: the fine-tune's own status tells how
            reported = str((progress or {}).get("state"))
            state = {"finished": "succeeded", "failed": "failed"}.get(reported, "interrupted")
        return JobStatus(
            project,
            state,
            str(folder),
            job.get("started_at"),
            job.get("reason"),
            None if done is None else done.get("exit_code"),
            progress,
            _published(folder),
            _tail(folder / "job.log"),
            self.kind,
        )

    def projects(self) -> list[int]:
        if not self.jobs_root.is_dir():
            return []
        names = (p.name.split("-", 1)[1] for p in self.jobs_root.glob("project-*"))
        return sorted(int(name) for name in names if name.isascii() and name.isdigit() and len(name) <= 18)


def _is_locked(path: Path) -> bool:
    """Whether a running job holds the ``flock`` of ``path``."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def wait_for(launcher: JobLauncher, project: int, timeout: float) -> JobStatus:
    """Poll until the project's latest job has ended (used by tests and scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        status = launcher.status(project)
        if status.state != "running" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
