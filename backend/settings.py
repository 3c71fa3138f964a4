"""Typed settings from the environment, with the names label-studio-ml backends conventionally use. Reading them
imports no torch (``adaptiveclick serve --help`` stays fast).

The Label Studio connection and image limits (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``,
``LOCAL_FILES_DOCUMENT_ROOT``, ``ADAPTIVECLICK_MAX_IMAGE_MB``, ``ADAPTIVECLICK_MAX_IMAGE_PIXELS``,
``ADAPTIVECLICK_FETCH_TIMEOUT``, ``ADAPTIVECLICK_S3_BUCKETS``) and the polygon answers
(``ADAPTIVECLICK_POLYGON_TOLERANCE``, ``ADAPTIVECLICK_POLYGON_HOLES``) are
:class:`labelstudio.settings.LabelStudioSettings`, held as ``Settings.label_studio``. Who may do what with the
two credentials (``BASIC_AUTH_*``, the connection credential Label Studio holds, and ``ADAPTIVECLICK_ADMIN_TOKEN``,
the operator's) is :mod:`backend.access`. The rest:

| variable | default | meaning |
| --- | --- | --- |
| ``ADAPTIVECLICK_PREDICTOR`` | ``baseline`` | predictor spec (see ``model.spec``) |
| ``DEVICE`` / ``ADAPTIVECLICK_DEVICE`` | ``auto`` | ``cpu``, ``cuda``, ``cuda:1``, ``auto`` |
| ``MODEL_DIR`` | ``./models`` | working folder: fine-tune jobs (``jobs/``) and the default registry (``registry/``) |
| ``MODEL_REGISTRY`` | ``$MODEL_DIR/registry`` | model registry (folder or ``s3://bucket/prefix``) that is served |
| ``MODEL_REGISTRY_POLL_SECONDS`` | ``10`` | how often the registry pointer is read (``0``: no watcher) |
| ``FINETUNE_MIN_ANNOTATIONS`` | ``0`` | start a fine-tune after this many new annotations (``0``: only on request) |
| ``FINETUNE_ARGS`` | empty | extra arguments for the ``adaptiveclick finetune`` jobs the backend starts |
| ``BASIC_AUTH_USER`` / ``BASIC_AUTH_PASS`` | unset | the connection credential: required on every route when set |
| ``ADAPTIVECLICK_ADMIN_TOKEN`` | unset | the operator token (``Authorization: Bearer``); unset: operator routes off |
| ``ADAPTIVECLICK_UNSAFE_ANONYMOUS`` | empty | UNSAFE: ``media``, ``changes`` or ``all`` for anonymous callers |
| ``ADAPTIVECLICK_MAX_FINETUNES`` | ``1`` | fine-tune processes at once, all projects together (429 beyond) |
| ``ADAPTIVECLICK_MAX_ANNOTATE_JOBS`` | ``2`` | annotate job processes at once, all projects together (429 beyond) |
| ``ADAPTIVECLICK_MAX_PROJECTS`` | ``1000`` | projects whose state is kept (webhook counts, served models, metrics) |
| ``LOG_LEVEL`` | ``INFO`` | ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` |
| ``ADAPTIVECLICK_CACHE_MB`` | ``2048`` | session cache budget (decoded images and per-click masks) |
| ``ADAPTIVECLICK_MODEL_CACHE`` | ``2`` | models kept loaded for the projects: a count (``2``) or a size (``3GB``) |
| ``ADAPTIVECLICK_THREADS`` | ``16`` | request threads of the one worker process (2 of them never run /predict) |
| ``ADAPTIVECLICK_READ_TIMEOUT`` | ``10`` | seconds a connection may send nothing before it is dropped |
| ``ADAPTIVECLICK_MAX_PROMPTS`` | ``100`` | clicks and boxes one request may carry (400 beyond) |
| ``ADAPTIVECLICK_REQUEST_DEADLINE`` | ``30`` | seconds of model time, waiting included, per request (503 beyond) |
| ``ADAPTIVECLICK_BATCH_DEADLINE`` | ``90`` | seconds for a whole Retrieve Predictions request (tasks left get none) |
| ``ADAPTIVECLICK_THRESHOLD`` | ``0.49`` | probability above which a pixel belongs to the mask |
| ``ADAPTIVECLICK_REPLICA_NAME`` | host name | names this process (``/health``, ``X-AdaptiveClick-Replica`` header) |
| ``ADAPTIVECLICK_TRAINING_RUNNER`` | ``local`` | where fine-tunes run: ``local`` (a process), ``kubernetes`` (a Job) |
| ``ADAPTIVECLICK_TRAINING_JOB_TEMPLATE`` | ``/etc/adaptiveclick/finetune-job.yaml`` | the Job ``kubernetes`` creates |
"""

from __future__ import annotations

import shlex
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from adaptiveclick.labelstudio.settings import EnvReader, LabelStudioSettings, SettingsError
from adaptiveclick.model.prediction import PROB_THRESHOLD
from adaptiveclick.model.spec import parse_spec

from .model_pool import PoolLimit

__all__ = ["LOG_LEVELS", "Settings", "SettingsError"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: where fine-tunes run (:mod:`backend.finetune_jobs`: a local process; :mod:`backend.cluster_jobs`: a Kubernetes Job)
TRAINING_RUNNERS = ("local", "kubernetes")
#: where the Kubernetes overlay mounts the fine-tune Job (deploy/kubernetes/overlays/gpu/finetune-job.yaml)
DEFAULT_JOB_TEMPLATE = Path("/etc/adaptiveclick/finetune-job.yaml")
#: the largest request body: interactive requests carry the task with its annotations and drafts (brush RLEs)
MAX_BODY_BYTES = 64 << 20
#: request threads /predict never takes: Label Studio gives /health 1 s and /setup 3 s, and a request waiting for the
#: model holds its thread, so without them enough concurrent clicks would make Label Studio drop the connection
RESERVED_THREADS = 2
#: the shortest operator token accepted (a long random one: failed attempts are rate-limited, not refused)
MIN_TOKEN_LENGTH = 24
#: below this the start's log warns about BASIC_AUTH_PASS (kept working: existing deployments set short ones)
MIN_PASSWORD_LENGTH = 16
#: what ``ADAPTIVECLICK_UNSAFE_ANONYMOUS`` may open to anonymous callers (``all``: both); see ``backend.access``
ANONYMOUS_GRANTS = ("changes", "media")


@dataclass(frozen=True)
class Settings:
    predictor: str = "baseline"
    device: str = "auto"
    label_studio: LabelStudioSettings = field(default_factory=LabelStudioSettings)
    model_dir: Path = Path("models")
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    admin_token: str | None = None
    unsafe_anonymous: tuple[str, ...] = ()
    max_finetunes: int = 1
    max_annotate_jobs: int = 2
    max_projects: int = 1000
    log_level: str = "INFO"
    cache_bytes: int = 2048 << 20
    model_cache: str = "2"
    threads: int = 16
    read_timeout: float = 10.0
    max_prompts: int = 100
    request_deadline: float = 30.0
    batch_deadline: float = 90.0  # under Label Studio's own ML_TIMEOUT_PREDICT (100 s), which would store nothing
    threshold: float = PROB_THRESHOLD
    model_registry: str | None = None
    registry_poll_seconds: float = 10.0
    finetune_min_annotations: int = 0
    finetune_args: str = ""
    replica_name: str = field(default_factory=socket.gethostname)
    training_runner: str = "local"
    training_job_template: Path = DEFAULT_JOB_TEMPLATE

    def __post_init__(self) -> None:
        try:
            parse_spec(self.predictor)
        except ValueError as exc:
            raise SettingsError(f"ADAPTIVECLICK_PREDICTOR: {exc}") from None
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        object.__setattr__(self, "log_level", self.log_level.upper())
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if self.admin_token is not None and len(self.admin_token) < MIN_TOKEN_LENGTH:
            raise SettingsError(
                f"ADAPTIVECLICK_ADMIN_TOKEN must be a long random string (at least {MIN_TOKEN_LENGTH} characters, "
                "e.g. `openssl rand -hex 32`): failed attempts are only rate-limited, not refused"
            )
        grants = set(self.unsafe_anonymous)
        if "all" in grants:
            grants = set(ANONYMOUS_GRANTS)
        if not grants <= set(ANONYMOUS_GRANTS):
            raise SettingsError(
                f"ADAPTIVECLICK_UNSAFE_ANONYMOUS takes {', '.join(ANONYMOUS_GRANTS)} or all (comma-separated), got "
                f"{', '.join(sorted(grants - set(ANONYMOUS_GRANTS)))}"
            )
        if grants and self.basic_auth is not None:
            raise SettingsError(
                "ADAPTIVECLICK_UNSAFE_ANONYMOUS applies only to a backend without BASIC_AUTH_USER/BASIC_AUTH_PASS "
                "(with them, every caller must authenticate): unset one or the other"
            )
        object.__setattr__(self, "unsafe_anonymous", tuple(sorted(grants)))
        for name, count in (
            ("ADAPTIVECLICK_MAX_FINETUNES", self.max_finetunes),
            ("ADAPTIVECLICK_MAX_ANNOTATE_JOBS", self.max_annotate_jobs),
            ("ADAPTIVECLICK_MAX_PROJECTS", self.max_projects),
        ):
            if count < 1:
                raise SettingsError(f"{name} must be at least 1, got {count}")
        if self.cache_bytes <= 0:
            raise SettingsError("ADAPTIVECLICK_CACHE_MB must be positive")
        try:
            PoolLimit.parse(self.model_cache)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if self.threads <= RESERVED_THREADS:
            raise SettingsError(
                f"ADAPTIVECLICK_THREADS must be more than {RESERVED_THREADS} ({RESERVED_THREADS} threads are kept "
                f"for /health and /setup), got {self.threads}"
            )
        for name, value in (
            ("ADAPTIVECLICK_READ_TIMEOUT", self.read_timeout),
            ("ADAPTIVECLICK_MAX_PROMPTS", self.max_prompts),
            ("ADAPTIVECLICK_REQUEST_DEADLINE", self.request_deadline),
            ("ADAPTIVECLICK_BATCH_DEADLINE", self.batch_deadline),
        ):
            if not value > 0:
                raise SettingsError(f"{name} must be positive, got {value!r}")
        if not 0.0 < self.threshold < 1.0:
            raise SettingsError("ADAPTIVECLICK_THRESHOLD must lie strictly between 0 and 1")
        if self.registry_poll_seconds < 0:
            raise SettingsError("MODEL_REGISTRY_POLL_SECONDS cannot be negative")
        if self.finetune_min_annotations < 0:
            raise SettingsError("FINETUNE_MIN_ANNOTATIONS cannot be negative")
        try:
            shlex.split(self.finetune_args)
        except ValueError as exc:
            raise SettingsError(f"FINETUNE_ARGS cannot be parsed as shell words: {exc}") from None
        if not self.replica_name.isprintable() or not 0 < len(self.replica_name) <= 253:
            raise SettingsError(
                f"ADAPTIVECLICK_REPLICA_NAME must be 1 to 253 printable characters, got {self.replica_name!r}"
            )
        if self.training_runner not in TRAINING_RUNNERS:
            raise SettingsError(
                f"ADAPTIVECLICK_TRAINING_RUNNER must be one of {', '.join(TRAINING_RUNNERS)}, "
                f"got {self.training_runner!r}"
            )
        if self.model_registry and "://" in self.model_registry and not self.model_registry.startswith("s3://"):
            raise SettingsError(f"MODEL_REGISTRY must be a folder or s3://bucket/prefix, got {self.model_registry!r}")

    @property
    def registry_uri(self) -> str:
        """Where fine-tunes publish and the watcher looks: MODEL_REGISTRY, else ``MODEL_DIR/registry``."""
        return self.model_registry or str(Path(self.model_dir) / "registry")

    @property
    def prediction_slots(self) -> int:
        """How many /predict requests may be in progress at once (the rest get 503 at once)."""
        return self.threads - RESERVED_THREADS

    @property
    def pool_limit(self) -> PoolLimit:
        return PoolLimit.parse(self.model_cache)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line (the logs redact them)."""
        return tuple(v for v in (self.label_studio.api_key, self.basic_auth_pass, self.admin_token) if v)

    def warnings(self) -> list[str]:
        """What the start's log should warn about: a short connection password, an unsafe anonymous grant."""
        found = []
        if self.basic_auth_pass and len(self.basic_auth_pass) < MIN_PASSWORD_LENGTH:
            found.append(
                f"BASIC_AUTH_PASS has {len(self.basic_auth_pass)} characters: use a long random one (at least "
                f"{MIN_PASSWORD_LENGTH}, e.g. `openssl rand -hex 32`); failed attempts are only rate-limited"
            )
        if self.unsafe_anonymous:
            found.append(
                f"ADAPTIVECLICK_UNSAFE_ANONYMOUS={','.join(self.unsafe_anonymous)}: anyone who can reach the port "
                "may do that; for a single-user machine only"
            )
        if self.basic_auth is None and not self.unsafe_anonymous:
            found.append(
                "no connection credential (BASIC_AUTH_USER/BASIC_AUTH_PASS): clicks are answered, but without the "
                "backend's own credentials for images, and nothing that starts work or changes what is served"
            )
        return found

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the variables in the module docstring; ``overrides`` (field names) win over the environment."""
        env = EnvReader(environ)
        values: dict[str, Any] = {
            "predictor": env.text("ADAPTIVECLICK_PREDICTOR"),
            "device": env.text("ADAPTIVECLICK_DEVICE", "DEVICE"),
            "label_studio": LabelStudioSettings.from_env(environ),
            "model_dir": env.path("MODEL_DIR"),
            "basic_auth_user": env.text("BASIC_AUTH_USER"),
            "basic_auth_pass": env.text("BASIC_AUTH_PASS"),
            "admin_token": env.text("ADAPTIVECLICK_ADMIN_TOKEN"),
            "unsafe_anonymous": env.words("ADAPTIVECLICK_UNSAFE_ANONYMOUS"),
            "max_finetunes": env.number("ADAPTIVECLICK_MAX_FINETUNES", int),
            "max_annotate_jobs": env.number("ADAPTIVECLICK_MAX_ANNOTATE_JOBS", int),
            "max_projects": env.number("ADAPTIVECLICK_MAX_PROJECTS", int),
            "log_level": env.text("LOG_LEVEL"),
            "cache_bytes": env.number("ADAPTIVECLICK_CACHE_MB", int, 1 << 20),
            "model_cache": env.text("ADAPTIVECLICK_MODEL_CACHE"),
            "threads": env.number("ADAPTIVECLICK_THREADS", int),
            "read_timeout": env.number("ADAPTIVECLICK_READ_TIMEOUT", float),
            "max_prompts": env.number("ADAPTIVECLICK_MAX_PROMPTS", int),
            "request_deadline": env.number("ADAPTIVECLICK_REQUEST_DEADLINE", float),
            "batch_deadline": env.number("ADAPTIVECLICK_BATCH_DEADLINE", float),
            "threshold": env.number("ADAPTIVECLICK_THRESHOLD", float),
            "model_registry": env.text("MODEL_REGISTRY"),
            "registry_poll_seconds": env.number("MODEL_REGISTRY_POLL_SECONDS", float),
            "finetune_min_annotations": env.number("FINETUNE_MIN_ANNOTATIONS", int),
            "finetune_args": env.text("FINETUNE_ARGS"),
            "replica_name": env.text("ADAPTIVECLICK_REPLICA_NAME"),
            "training_runner": env.text("ADAPTIVECLICK_TRAINING_RUNNER"),
            "training_job_template": env.path("ADAPTIVECLICK_TRAINING_JOB_TEMPLATE"),
        }
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: v for k, v in values.items() if v is not None})
