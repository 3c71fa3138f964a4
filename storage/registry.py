"""The model registry: immutable published versions plus a pointer to the one to serve, per model line.

Written by ``adaptiveclick finetune`` and read by the backend, which polls the pointers; this module imports
neither torch nor training code. A registry is a local directory or an ``s3://bucket/prefix``; its root is the
*base line* and every Label Studio project with its own fine-tunes has a *project line* beside it::

    versions/<version>/manifest.json       version, created_at, sha256, size_bytes, weights, config, metrics, parent
    versions/<version>/<weights file>      the checkpoint ({"state_dict", "config"}, as model.load_adaptiveclick reads)
    current.json                           {"version", "sha256", "weights", "updated_at", "previous"}
    pin.json                               optional: {"version", "line", "source", "pinned_at"} (a rollback)
    project-<id>/...                       the same layout for one project's line

A registry written before project lines existed is a base line as it stands (no migration). Which line and
version serves a project is :mod:`storage.lines`.

A version is complete once its manifest exists and is never changed afterwards: publishing refuses an existing
version name. Locally a version is staged in a hidden folder and renamed into place (atomic, and it fails if the
name exists); the pointer is replaced with ``os.replace``. On S3 the weights go to a content-addressed key first,
then the manifest is created with a conditional PUT (``If-None-Match: *``), and the pointer is one PUT of a small
JSON object, so readers always see either the old or the new pointer, each naming a complete version.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from .files import atomic_write, sha256_of
from .paths import cache_dir

POINTER = "current.json"
PIN = "pin.json"
VERSIONS = "versions"
BASE_LINE = "base"
PROJECT_LINE = re.compile(r"project-(\d{1,18})")  # always fullmatch: "$" would take a trailing newline
MANIFEST = "manifest.json"
FORMAT = 1
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # always fullmatch


class RegistryError(RuntimeError):
    """The registry cannot be read or written, or holds something unexpected."""


class VersionExistsError(RegistryError):
    """Publishing under a version name that is already taken."""


class IntegrityError(RegistryError):
    """Stored weights do not match the sha256 recorded for them."""


@dataclass(frozen=True)
class VersionInfo:
    """A published version. ``weights_uri`` is a path or ``s3://`` URI that :func:`model.load_predictor` reads."""

    version: str
    sha256: str
    size_bytes: int
    created_at: str
    weights_uri: str
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    parent: str | None = None
    line: str = BASE_LINE
    parent_line: str | None = None


def project_line(project: int) -> str:
    """The line name of a Label Studio project: ``project-<id>``."""
    return f"project-{int(project)}"


def check_version_name(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise ValueError(
            f"invalid version name {str(version)[:80]!r}: use letters, digits, '.', '_' or '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return version


def new_version_name(sha256: str, prefix: str = "ft") -> str:
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{sha256[:8]}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """Operations shared by both storages; subclasses provide the storage primitives. A registry object is one
    line: the root (the base line), or what :meth:`line` returns for a project's line."""

    uri: str
    line_name: str = BASE_LINE

    def _at(self, folder: str) -> Registry:
        """The same storage at ``folder`` below this one."""
        raise NotImplementedError

    # storage primitives (keys are relative, '/'-separated)
    def _read(self, key: str) -> bytes | None:
        raise NotImplementedError

    def _replace(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def _children(self, key: str) -> list[str]:
        raise NotImplementedError

    def _uri(self, key: str) -> str:
        raise NotImplementedError

    def _download(self, key: str, handle: BinaryIO) -> None:
        raise NotImplementedError

    def _store_version(self, version: str, weights: Path, weights_name: str, manifest: bytes) -> None:
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------------------------------

    def _json(self, key: str) -> dict | None:
        data = self._read(key)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{self._uri(key)} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise RegistryError(f"{self._uri(key)} is not a JSON object")
        return value

    def current_pointer(self) -> dict | None:
        """The pointer object (cheap: one small read), None when nothing was published yet."""
        return self._json(POINTER)

    def current(self) -> VersionInfo | None:
        pointer = self.current_pointer()
        if pointer is None:
            return None
        if not isinstance(pointer.get("version"), str):
            raise RegistryError(f"{self._uri(POINTER)} names no version")
        return self.read_version(pointer["version"])

    def read_version(self, version: str) -> VersionInfo:
        check_version_name(version)
        manifest = self._json(f"{VERSIONS}/{version}/{MANIFEST}")
        if manifest is None:
            raise RegistryError(f"version {version!r} does not exist in {self.uri}")
        try:
            return VersionInfo(
                version=manifest["version"],
                sha256=manifest["sha256"],
                size_bytes=int(manifest["size_bytes"]),
                created_at=manifest["created_at"],
                weights_uri=self._uri(f"{VERSIONS}/{version}/{manifest['weights']}"),
                config=manifest.get("config") or {},
                metrics=manifest.get("metrics") or {},
                parent=manifest.get("parent"),
                line=self.line_name,
                parent_line=manifest.get("parent_line"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"manifest of version {version!r} is incomplete: {exc}") from None

    # -- lines and pins ---------------------------------------------------------------------------------------

    def line(self, name: str) -> Registry:
        """The line ``name`` of this (root) registry: ``base`` is the root itself, ``project-<id>`` a sub-folder."""
        if name == BASE_LINE:
            return self
        if self.line_name != BASE_LINE or not PROJECT_LINE.fullmatch(name):
            raise ValueError(f"no model line {name!r}: expected {BASE_LINE!r} or project-<id> of the root registry")
        sub = self._at(name)
        sub.line_name = name
        return sub

    def project_lines(self) -> list[int]:
        """The ids of the projects that have a line (a version or a pin of their own)."""
        found = (PROJECT_LINE.fullmatch(name) for name in self._children(""))
        return sorted(int(match.group(1)) for match in found if match)

    def pin_record(self) -> dict | None:
        """This line's pin (``{"version", "line", "source", "pinned_at"}``), None when it is not pinned."""
        pin = self._json(PIN)
        if pin is None or pin.get("version") is None:
            return None
        line = pin.get("line")
        valid_line = isinstance(line, str) and (line == BASE_LINE or PROJECT_LINE.fullmatch(line))
        if not isinstance(pin.get("version"), str) or not valid_line or not VERSION_PATTERN.fullmatch(pin["version"]):
            raise RegistryError(f"{self._uri(PIN)} is not a pin record (version and line)")
        return pin

    def set_pin(self, version: str | None, line: str = BASE_LINE, source: str = "api") -> None:
        """Pin this line to ``version`` of ``line`` (None: unpin), one atomic replacement of ``pin.json``."""
        if version is not None:
            check_version_name(version)
        record = {"version": version, "line": line, "source": source, "pinned_at": _now()}
        self._replace(PIN, json.dumps(record, indent=1).encode())

    def list_versions(self) -> list[VersionInfo]:
        """Complete versions, oldest first."""
        infos = []
        for name in self._children(VERSIONS):
            if VERSION_PATTERN.fullmatch(name) and self._read(f"{VERSIONS}/{name}/{MANIFEST}") is not None:
                infos.append(self.read_version(name))
        return sorted(infos, key=lambda v: (v.created_at, v.version))

    def fetch_weights(self, version: str, dest_dir: str | Path | None = None) -> Path:
        """A local, sha256-verified copy of a version's weights (downloaded once into ``dest_dir``)."""
        info = self.read_version(version)
        key = f"{VERSIONS}/{version}/{Path(urlparse(info.weights_uri).path).name}"
        local = self._local_path(key)
        if local is not None:
            return self._verified(local, info)
        folder = Path(dest_dir) if dest_dir else cache_dir() / "registry" / info.sha256[:16]
        target = folder / f"{version}.pth"
        if target.is_file() and sha256_of(target) == info.sha256:
            return target

        def download_verified(handle: BinaryIO) -> None:
            # hashed on the way in, so that a corrupt download never takes the target's name
            writer = _HashingWriter(handle)
            self._download(key, writer)  # type: ignore[arg-type]
            _check_digest(writer.hexdigest(), info)

        return atomic_write(target, download_verified)

    def verify(self, version: str) -> VersionInfo:
        """Check a version's stored weights (read afresh, not from a cache) against its recorded sha256
        (IntegrityError if they differ)."""
        with tempfile.TemporaryDirectory(prefix="adaptiveclick-verify-") as folder:
            self.fetch_weights(version, folder)
        return self.read_version(version)

    def _local_path(self, key: str) -> Path | None:
        return None

    @staticmethod
    def _verified(path: Path, info: VersionInfo) -> Path:
        _check_digest(sha256_of(path), info)
        return path

    # -- writing -------------------------------------------------------------------------------------------------

    def publish(
        self,
        weights: str | Path,
        version: str | None = None,
        config: dict | None = None,
        metrics: dict | None = None,
        make_current: bool = True,
        parent: str | None = None,
        parent_line: str | None = None,
    ) -> VersionInfo:
        """Store ``weights`` as a new immutable version (VersionExistsError if the name is taken) and, by default,
        point ``current`` at it."""
        weights = Path(weights)
        if not weights.is_file():
            raise RegistryError(f"weights file {weights} does not exist")
        digest = sha256_of(weights)
        version = check_version_name(version or new_version_name(digest))
        if self._read(f"{VERSIONS}/{version}/{MANIFEST}") is not None:
            raise VersionExistsError(f"version {version!r} already exists in {self.uri}; versions are immutable")
        weights_name = f"model-{digest[:12]}.pth"
        manifest = {
            "format": FORMAT,
            "version": version,
            "created_at": _now(),
            "sha256": digest,
            "size_bytes": weights.stat().st_size,
            "weights": weights_name,
            "config": config or {},
            "metrics": metrics or {},
            "parent": parent,
            "parent_line": parent_line,
        }
        self._store_version(version, weights, weights_name, json.dumps(manifest, indent=1, default=_jsonable).encode())
        if make_current:
            self.set_current(version)
        return self.read_version(version)

    def set_current(self, version: str) -> VersionInfo:
        """Point ``current`` at an existing version (one atomic replacement of the pointer)."""
        info = self.read_version(version)
        previous = (self.current_pointer() or {}).get("version")
        pointer = {
            "version": info.version,
            "sha256": info.sha256,
            "weights": f"{VERSIONS}/{info.version}/{Path(urlparse(info.weights_uri).path).name}",
            "updated_at": _now(),
            "previous": previous,
        }
        self._replace(POINTER, json.dumps(pointer, indent=1).encode())
        return info


def _check_digest(actual: str, info: VersionInfo) -> None:
    if actual != info.sha256:
        raise IntegrityError(
            f"weights of version {info.version} have sha256 {actual}, the manifest records {info.sha256}"
        )


class _HashingWriter(io.RawIOBase):
    """A binary handle that hashes what goes through it (boto3's download_fileobj and copyfileobj only write)."""

    def __init__(self, handle: BinaryIO) -> None:
        super().__init__()
        self._handle = handle
        self._digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _jsonable(value: Any):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a manifest")


class LocalRegistry(Registry):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _at(self, folder: str) -> Registry:
        return LocalRegistry(self.root / folder)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"cannot read {self._path(key)}: {exc.strerror or exc}") from None

    def _replace(self, key: str, data: bytes) -> None:
        atomic_write(self._path(key), lambda handle: handle.write(data))

    def _children(self, key: str) -> list[str]:
        folder = self._path(key)
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def _uri(self, key: str) -> str:
        return str(self._path(key))

    def _local_path(self, key: str) -> Path | None:
        return self._path(key)

    def _download(self, key: str, handle: BinaryIO) -> None:
        with open(self._path(key), "rb") as source:
            shutil.copyfileobj(source, handle, 1 << 20)

    def _store_version(self, version: str, weights: Path, weights_name: str, manifest: bytes) -> None:
        versions = self._path(VERSIONS)
        versions.mkdir(parents=True, exist_ok=True)
        staging = versions / f".staging-{version}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            shutil.copyfile(weights, staging / weights_name)
            (staging / MANIFEST).write_bytes(manifest)
            for path in (staging / weights_name, staging / MANIFEST):
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
            try:
                os.rename(staging, versions / version)  # fails if the version folder exists
            except OSError:
                raise VersionExistsError(
                    f"version {version!r} already exists in {self.uri}; versions are immutable"
                ) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


class S3Registry(Registry):
    def __init__(self, bucket: str, prefix: str = "", client=None) -> None:
        if not bucket:
            raise ValueError("an s3:// registry needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import boto3  # lazily: local registries need no AWS libraries

            self._client = boto3.client("s3")
        return self._client

    def _at(self, folder: str) -> Registry:
        return S3Registry(self.bucket, f"{self.prefix}/{folder}" if self.prefix else folder, self._client)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _call(self, what: str, fn, *args, **kwargs):
        import botocore.exceptions

        try:
            return fn(*args, **kwargs)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            raise RegistryError(f"{what} failed: {code or exc}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise RegistryError(f"{what} failed: {exc}") from None

    def _read(self, key: str) -> bytes | None:
        import botocore.exceptions

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise RegistryError(f"cannot read {self._uri(key)}: {exc.response.get('Error', {}).get('Code')}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise RegistryError(f"cannot read {self._uri(key)}: {exc}") from None

    def _replace(self, key: str, data: bytes) -> None:
        self._call(
            f"writing {self._uri(key)}",
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ContentType="application/json",
        )

    def _children(self, key: str) -> list[str]:
        folder = self._key(key).strip("/")
        prefix = f"{folder}/" if folder else ""  # the bucket's top level when the registry is the whole bucket
        names = []
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(
            f"listing {self._uri(key)}",
            lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")),
        )
        for page in pages:
            names += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(names)

    def _download(self, key: str, handle: BinaryIO) -> None:
        self._call(f"downloading {self._uri(key)}", self.client.download_fileobj, self.bucket, self._key(key), handle)

    def _store_version(self, version: str, weights: Path, weights_name: str, manifest: bytes) -> None:
        import botocore.exceptions

        base = f"{VERSIONS}/{version}"
        self._call(
            f"uploading {self._uri(base + '/' + weights_name)}",
            self.client.upload_file,
            str(weights),
            self.bucket,
            self._key(f"{base}/{weights_name}"),
        )
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(f"{base}/{MANIFEST}"),
                Body=manifest,
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise VersionExistsError(
                    f"version {version!r} already exists in {self.uri}; versions are immutable"
                ) from None
            raise RegistryError(
                f"writing the manifest of {version!r} failed: {exc.response.get('Error', {}).get('Code') or exc}"
            ) from None


def open_registry(uri: str | Path) -> Registry:
    """A registry at a local directory or an ``s3://bucket/prefix`` URI."""
    text = str(uri).strip()
    if not text:
        raise ValueError("empty registry location: use a directory or s3://bucket/prefix")
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        return S3Registry(parsed.netloc, parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise ValueError(f"unsupported registry location {text!r}: use a directory or s3://bucket/prefix")
    return LocalRegistry(text)
