"""Typed settings from the environment, with the names label-studio-ml backends conventionally use.

| variable | default | meaning |
| --- | --- | --- |
| ``ADAPTIVECLICK_PREDICTOR`` | ``baseline`` | predictor spec (see ``model.spec``) |
| ``DEVICE`` / ``ADAPTIVECLICK_DEVICE`` | ``auto`` | ``cpu``, ``cuda``, ``cuda:1``, ``auto`` |
| ``LABEL_STUDIO_URL`` | unset | Label Studio's base URL, for uploads, local files and presigned cloud URLs |
| ``LABEL_STUDIO_API_KEY`` | unset | a personal access token (JWT refresh token) or a legacy token |
| ``MODEL_DIR`` | ``./models`` | working folder: fine-tune jobs (``jobs/``) and the default registry (``registry/``) |
| ``MODEL_REGISTRY`` | ``$MODEL_DIR/registry`` | model registry (folder or ``s3://bucket/prefix``) whose current version is served |
| ``MODEL_REGISTRY_POLL_SECONDS`` | ``10`` | how often the registry pointer is read (``0`` disables the watcher) |
| ``FINETUNE_MIN_ANNOTATIONS`` | ``0`` | start a fine-tune after this many new annotations of a project (``0``: only on request) |
| ``FINETUNE_ARGS`` | empty | extra arguments for the ``adaptiveclick finetune`` jobs the backend starts |
| ``BASIC_AUTH_USER`` / ``BASIC_AUTH_PASS`` | unset | require HTTP Basic auth on every route when both are set |
| ``LOG_LEVEL`` | ``INFO`` | ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` |
| ``LOCAL_FILES_DOCUMENT_ROOT`` | unset | read ``/data/local-files/?d=PATH`` from this folder, not via Label Studio |
| ``ADAPTIVECLICK_CACHE_MB`` | ``2048`` | session cache budget (decoded images and per-click masks) |
| ``ADAPTIVECLICK_MAX_IMAGE_MB`` | ``64`` | largest image file accepted |
| ``ADAPTIVECLICK_MAX_IMAGE_PIXELS`` | ``50000000`` | largest decoded image accepted (width x height) |
| ``ADAPTIVECLICK_FETCH_TIMEOUT`` | ``30`` | seconds allowed for fetching one image |
| ``ADAPTIVECLICK_THREADS`` | ``4`` | gunicorn threads of the one worker process |
| ``ADAPTIVECLICK_THRESHOLD`` | ``0.49`` | probability above which a pixel belongs to the mask |
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

from model import PROB_THRESHOLD, parse_spec

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """An environment variable has a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    predictor: str = "baseline"
    device: str = "auto"
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    model_dir: Path = Path("models")
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    log_level: str = "INFO"
    local_files_document_root: Path | None = None
    cache_bytes: int = 2048 << 20
    max_image_bytes: int = 64 << 20
    max_image_pixels: int = 50_000_000
    fetch_timeout: float = 30.0
    threads: int = 4
    threshold: float = PROB_THRESHOLD
    model_registry: str | None = None
    registry_poll_seconds: float = 10.0
    finetune_min_annotations: int = 0
    finetune_args: str = ""

    def __post_init__(self) -> None:
        try:
            parse_spec(self.predictor)
        except ValueError as exc:
            raise SettingsError(f"ADAPTIVECLICK_PREDICTOR: {exc}") from None
        if self.label_studio_url:
            parsed = urlparse(self.label_studio_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise SettingsError(f"LABEL_STUDIO_URL must look like http(s)://host[:port], "
                                    f"got {self.label_studio_url!r}")
            object.__setattr__(self, "label_studio_url", self.label_studio_url.rstrip("/"))
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        object.__setattr__(self, "log_level", self.log_level.upper())
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if self.local_files_document_root is not None:
            root = Path(self.local_files_document_root).resolve()
            if root == Path(root.anchor):  # "/" would expose every readable file as a "local file"
                raise SettingsError("LOCAL_FILES_DOCUMENT_ROOT must not be the filesystem root")
            object.__setattr__(self, "local_files_document_root", root)
        for name in ("cache_bytes", "max_image_bytes", "max_image_pixels", "threads"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.fetch_timeout <= 0:
            raise SettingsError("ADAPTIVECLICK_FETCH_TIMEOUT must be positive")
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
        if self.model_registry and "://" in self.model_registry and not self.model_registry.startswith("s3://"):
            raise SettingsError(f"MODEL_REGISTRY must be a folder or s3://bucket/prefix, got {self.model_registry!r}")

    @property
    def registry_uri(self) -> str:
        """Where fine-tunes publish and the watcher looks: MODEL_REGISTRY, else ``MODEL_DIR/registry``."""
        return self.model_registry or str(Path(self.model_dir) / "registry")

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        return (self.basic_auth_user, self.basic_auth_pass) if self.basic_auth_user else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Read the variables in the module docstring; ``overrides`` (field names) win over the environment."""
        env = os.environ if environ is None else environ

        def text(*names: str) -> str | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        def number(name: str, kind, scale=1):
            value = text(name)
            if value is None:
                return None
            try:
                parsed = kind(value)
            except ValueError:
                raise SettingsError(f"{name} must be a {kind.__name__}, got {value!r}") from None
            return kind(parsed * scale)

        root = text("LOCAL_FILES_DOCUMENT_ROOT")
        model_dir = text("MODEL_DIR")
        values = {
            "predictor": text("ADAPTIVECLICK_PREDICTOR"),
            "device": text("ADAPTIVECLICK_DEVICE", "DEVICE"),
            "label_studio_url": text("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST"),
            "label_studio_api_key": text("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"),
            "model_dir": Path(model_dir) if model_dir else None,
            "basic_auth_user": text("BASIC_AUTH_USER"),
            "basic_auth_pass": text("BASIC_AUTH_PASS"),
            "log_level": text("LOG_LEVEL"),
            "local_files_document_root": Path(root) if root else None,
            "cache_bytes": number("ADAPTIVECLICK_CACHE_MB", int, 1 << 20),
            "max_image_bytes": number("ADAPTIVECLICK_MAX_IMAGE_MB", int, 1 << 20),
            "max_image_pixels": number("ADAPTIVECLICK_MAX_IMAGE_PIXELS", int),
            "fetch_timeout": number("ADAPTIVECLICK_FETCH_TIMEOUT", float),
            "threads": number("ADAPTIVECLICK_THREADS", int),
            "threshold": number("ADAPTIVECLICK_THRESHOLD", float),
            "model_registry": text("MODEL_REGISTRY"),
            "registry_poll_seconds": number("MODEL_REGISTRY_POLL_SECONDS", float),
            "finetune_min_annotations": number("FINETUNE_MIN_ANNOTATIONS", int),
            "finetune_args": text("FINETUNE_ARGS"),
        }
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: v for k, v in values.items() if v is not None})
