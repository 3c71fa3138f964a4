"""Typed settings for talking to Label Studio and fetching task images, read from the environment and checked.

| variable | default | meaning |
| --- | --- | --- |
| ``LABEL_STUDIO_URL`` (or ``LABEL_STUDIO_HOST``) | unset | Label Studio's base URL: uploads, local files, presigning |
| ``LABEL_STUDIO_API_KEY`` (or ``LABEL_STUDIO_ACCESS_TOKEN``) | unset | a personal access token or a legacy token |
| ``LOCAL_FILES_DOCUMENT_ROOT`` | unset | read ``/data/local-files/?d=PATH`` from this folder, not via Label Studio |
| ``ADAPTIVECLICK_MAX_IMAGE_MB`` | ``64`` | largest image file accepted (413 beyond) |
| ``ADAPTIVECLICK_MAX_IMAGE_PIXELS`` | ``50000000`` | largest decoded image accepted, width x height (413 beyond) |
| ``ADAPTIVECLICK_FETCH_TIMEOUT`` | ``30`` | seconds for a whole image download (connect, redirects, body) |
| ``ADAPTIVECLICK_ALLOWED_HOSTS`` | empty | internal image hosts allowed: names (``*.corp``), nets (``10.0.0.0/8``) |
| ``ADAPTIVECLICK_S3_BUCKETS`` | empty | buckets whose ``s3://`` image URLs are read with the backend's AWS keys |
| ``ADAPTIVECLICK_POLYGON_TOLERANCE`` | ``1`` | px: simplification tolerance of polygon answers (``0``: exact) |
| ``ADAPTIVECLICK_POLYGON_HOLES`` | ``seam`` | holes in polygon answers: ``seam`` (cut in, kept empty) or ``fill`` |

Always allowed as image hosts, whatever their address: ``LABEL_STUDIO_URL``'s host and boto3's S3 endpoint
(``AWS_ENDPOINT_URL``); see :mod:`labelstudio.netpolicy`.

The backend's settings hold these as ``Settings.label_studio``; fine-tuning reads them with
:meth:`LabelStudioSettings.from_env`, so both apply the same checks. The polygon settings are
:class:`PolygonSettings` (see :mod:`labelstudio.polygons`); the CVAT interactor reads them too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from .netpolicy import ALLOW_SETTING, AddressPolicy
from .polygons import DEFAULT_HOLES, DEFAULT_TOLERANCE, HOLE_MODES

N = TypeVar("N", int, float)

DEFAULT_MAX_IMAGE_BYTES = 64 << 20
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
DEFAULT_FETCH_TIMEOUT_S = 30.0


S3_BUCKETS_SETTING = "ADAPTIVECLICK_S3_BUCKETS"
_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


def is_bucket_name(name: str) -> bool:
    """An S3 bucket name: 3-63 lower-case letters, digits, dots and hyphens, starting and ending alphanumerically."""
    return 3 <= len(name) <= 63 and set(name) <= _BUCKET_CHARS and name[0] not in ".-" and name[-1] not in ".-"


class SettingsError(ValueError):
    """An environment variable has a value that cannot be used; the message names it."""


class EnvReader:
    """Reads typed values from an environment mapping; a bad value is a :class:`SettingsError` naming it."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if environ is None else environ

    def text(self, *names: str) -> str | None:
        """The first of ``names`` that is set to a non-blank value (stripped), else None."""
        for name in names:
            value = self.env.get(name, "").strip()
            if value:
                return value
        return None

    def number(self, name: str, kind: type[N], scale: int = 1) -> N | None:
        """``kind(value) * scale`` (``ADAPTIVECLICK_CACHE_MB=16`` with scale ``1 << 20`` -> bytes)."""
        value = self.text(name)
        if value is None:
            return None
        try:
            parsed = kind(value)
        except ValueError:
            raise SettingsError(f"{name} must be a {kind.__name__}, got {value!r}") from None
        return kind(parsed * scale)

    def words(self, name: str) -> tuple[str, ...] | None:
        """A comma-separated list, lower-cased, blanks dropped (None when unset)."""
        value = self.text(name)
        if value is None:
            return None
        return tuple(word.strip().lower() for word in value.split(",") if word.strip())

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value) if value else None


@dataclass(frozen=True)
class ImageLimits:
    """The largest image the service accepts: file bytes and decoded pixels (width x height)."""

    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise SettingsError("ADAPTIVECLICK_MAX_IMAGE_MB must be positive")
        if self.max_pixels <= 0:
            raise SettingsError("ADAPTIVECLICK_MAX_IMAGE_PIXELS must be positive")


@dataclass(frozen=True)
class PolygonSettings:
    """How a mask is answered as polygons: the simplification tolerance in pixels and what becomes of holes."""

    tolerance: float = DEFAULT_TOLERANCE
    holes: str = DEFAULT_HOLES

    def __post_init__(self) -> None:
        if not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise SettingsError(
                f"ADAPTIVECLICK_POLYGON_TOLERANCE must be a number of pixels >= 0 (0: exact outlines), "
                f"got {self.tolerance!r}"
            )
        if self.holes not in HOLE_MODES:
            raise SettingsError(
                f"ADAPTIVECLICK_POLYGON_HOLES must be seam (holes cut into the polygon, kept empty) or fill "
                f"(holes filled), got {self.holes!r}"
            )


@dataclass(frozen=True)
class LabelStudioSettings:
    url: str | None = None
    api_key: str | None = None
    local_files_document_root: Path | None = None
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT_S
    limits: ImageLimits = field(default_factory=ImageLimits)
    allowed_hosts: tuple[str, ...] = ()
    s3_endpoint: str | None = None
    s3_buckets: tuple[str, ...] = ()
    polygons: PolygonSettings = field(default_factory=PolygonSettings)

    def __post_init__(self) -> None:
        if self.url:
            parsed = urlparse(self.url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise SettingsError(f"LABEL_STUDIO_URL must look like http(s)://host[:port], got {self.url!r}")
            object.__setattr__(self, "url", self.url.rstrip("/"))
        if self.local_files_document_root is not None:
            root = Path(self.local_files_document_root).resolve()
            if root == Path(root.anchor):  # "/" would expose every readable file as a "local file"
                raise SettingsError("LOCAL_FILES_DOCUMENT_ROOT must not be the filesystem root")
            object.__setattr__(self, "local_files_document_root", root)
        if self.fetch_timeout <= 0:
            raise SettingsError("ADAPTIVECLICK_FETCH_TIMEOUT must be positive")
        for bucket in self.s3_buckets:
            if not is_bucket_name(bucket):
                raise SettingsError(
                    f"ADAPTIVECLICK_S3_BUCKETS: {bucket[:80]!r} is not an S3 bucket name (3-63 characters: lower-case "
                    "letters, digits, dots and hyphens), comma-separated"
                )
        try:
            self.address_policy()
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

    def address_policy(self) -> AddressPolicy:
        """The image-host policy: the allow-list, plus Label Studio's and the S3 endpoint's hosts."""
        return AddressPolicy.for_urls(self.allowed_hosts, self.url, self.s3_endpoint)

    @property
    def connected(self) -> bool:
        """Both the URL and a key are set: the service can read Label Studio's own media."""
        return bool(self.url and self.api_key)

    def with_connection(self, url: str | None, api_key: str | None) -> LabelStudioSettings:
        """These settings with another URL/key where given (command-line options over the environment)."""
        return replace(self, url=url or self.url, api_key=api_key or self.api_key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LabelStudioSettings:
        env = EnvReader(environ)
        limits = {
            "max_bytes": env.number("ADAPTIVECLICK_MAX_IMAGE_MB", int, 1 << 20),
            "max_pixels": env.number("ADAPTIVECLICK_MAX_IMAGE_PIXELS", int),
        }
        polygons: dict[str, Any] = {
            "tolerance": env.number("ADAPTIVECLICK_POLYGON_TOLERANCE", float),
            "holes": (env.text("ADAPTIVECLICK_POLYGON_HOLES") or "").lower() or None,
        }
        values: dict[str, Any] = {
            "url": env.text("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST"),
            "api_key": env.text("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"),
            "local_files_document_root": env.path("LOCAL_FILES_DOCUMENT_ROOT"),
            "fetch_timeout": env.number("ADAPTIVECLICK_FETCH_TIMEOUT", float),
            "allowed_hosts": tuple(h.strip() for h in (env.text(ALLOW_SETTING) or "").split(",") if h.strip()),
            "s3_endpoint": env.text("AWS_ENDPOINT_URL"),
            "s3_buckets": env.words(S3_BUCKETS_SETTING),
            "limits": ImageLimits(**{k: v for k, v in limits.items() if v is not None}),
            "polygons": PolygonSettings(**{k: v for k, v in polygons.items() if v is not None}),
        }
        return cls(**{k: v for k, v in values.items() if v is not None})
