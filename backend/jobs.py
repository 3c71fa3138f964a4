"""Background jobs the backend starts: a command of ``adaptiveclick`` run as a separate process (never in a request
thread, and the backend never imports the job's code), at most one per project and kind at a time, in its own folder
``<jobs root>/project-<id>/<UTC time>/`` with its log (``job.log``), the job's own ``status.json`` and, when it
ends, ``exit.json``. "One at a time" holds across worker processes and backend restarts: the job keeps an
exclusive ``flock`` on ``<jobs root>/project-<id>/job.lock`` (inherited from the launcher) for as long as it runs.

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

from adaptiveclick.storage.files import atomic_write

from .settings import Settings

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 40


class JobRunning(RuntimeError):
    """A job of this kind is already running for this project."""


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

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


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

    def __init__(self, settings: Settings, jobs_root: Path, kind: str, noun: str) -> None:
        self.settings = settings
        self.jobs_root = jobs_root
        self.kind = kind
        self.noun = noun

    def launch(self, project: int, reason: str, command_for: Callable[[Path], list[str]]) -> JobStatus:
        """Run ``command_for(folder)`` for ``project`` in a new folder (JobRunning if one of this kind runs)."""
        project_dir = self.jobs_root / f"project-{project}"
        project_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(project_dir / "job.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                article = "an" if self.noun[0] in "aeiou" else "a"
                raise JobRunning(f"{article} {self.noun} of project {project} is already running") from None
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
                    pass_fds=(lock_fd,),
                    start_new_session=True,
                )
        finally:
            os.close(lock_fd)  # the child holds its own copy of the locked descriptor until it exits
        threading.Thread(target=self._reap, args=(process, folder), daemon=True, name=f"{self.kind}-{project}").start()
        logger.info(
            f"{self.noun} started",
            extra={"project": project, "reason": reason, "pid": process.pid, "folder": str(folder)},
        )
        return self.status(project)

    def _reap(self, process: subprocess.Popen, folder: Path) -> None:
        code = process.wait()
        outcome = {"exit_code": code, "finished_at": datetime.now(timezone.utc).isoformat()}
        atomic_write(folder / "exit.json", lambda f: f.write(json.dumps(outcome).encode()))
        log = logger.info if code == 0 else logger.error
        log(f"{self.noun} finished", extra={"folder": str(folder), "exit_code": code})

    # -- status ----------------------------------------------------------------------------------------------------

    def _is_locked(self, project: int) -> bool:
        path = self.jobs_root / f"project-{project}" / "job.lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

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
        return sorted(
            int(p.name.split("-", 1)[1]) for p in self.jobs_root.glob("project-*") if p.name.split("-", 1)[1].isdigit()
        )


def wait_for(launcher: JobLauncher, project: int, timeout: float) -> JobStatus:
    """Poll until the project's latest job has ended (used by tests and scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        status = launcher.status(project)
        if status.state != "running" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
