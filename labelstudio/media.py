"""Fetch a task image the way Label Studio shows it: an RGB uint8 array ``[H, W, 3]``, EXIF orientation applied.

URL kinds (as label-studio-ml resolves them):

* uploads: ``/data/upload/<project>/<file>`` (or ``upload/...``): from Label Studio with the API key, falling back
  to the storage proxy ``/storage-data/uploaded/?filepath=upload/...`` when the first answers 404;
* local storage: ``/data/local-files/?d=PATH``: read from ``LOCAL_FILES_DOCUMENT_ROOT/PATH`` when that is set,
  otherwise from Label Studio with the API key;
* cloud storage ``s3://``, ``gs://``, ``azure-blob://``: through Label Studio's presign endpoint
  ``/tasks/<task id>/presign/?fileuri=<base64url>`` (Label Studio holds the credentials); ``s3://`` falls back to
  boto3 with the backend's own AWS credentials when Label Studio is not configured or the task id is unknown;
* other ``http(s)://`` URLs: fetched directly, only from hosts the URL policy allows (:mod:`labelstudio.netpolicy`);
* ``data:image/...;base64,...`` URIs.

The API key goes only to Label Studio's media paths (:func:`media_path`: uploads, local files, the storage proxy,
the presign call of an integer task id), checked after percent-decoding, with dot segments refused before
anything is sent; redirects are followed one hop at a time (at most :data:`MAX_REDIRECTS`), each checked again, and
the key never follows a redirect off those paths. A download has one deadline for all of it (connect, redirects,
body) and a size cap. Every failure is an :class:`~labelstudio.errors.ImageError` with the HTTP status it maps to
and a message saying why.
"""

from __future__ import annotations

import base64
import binascii
import logging
import posixpath
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urljoin, urlparse

import numpy as np
import requests

from adaptiveclick.storage.logs import redact

from .auth import LabelStudioAuth
from .decode import decode_image
from .errors import ImageError
from .netpolicy import AddressPolicy, BlockedAddress, policy_session
from .settings import ImageLimits, LabelStudioSettings

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
MAX_REDIRECTS = 5
READ_SIZE = 1 << 16
# Label Studio paths that serve media, the only ones the API key is sent to
MEDIA_PREFIXES = ("/data/upload/", "/data/local-files/", "/storage-data/uploaded/")
_PRESIGN_SEGMENTS = 4  # /tasks/<integer id>/presign/


class ImageFetcher:
    """Turns task image URLs into RGB arrays. Thread-safe; holds one HTTP session.

    Args:
        label_studio: authenticated access to Label Studio, or None when LABEL_STUDIO_URL/API key are unset.
        local_files_root: LOCAL_FILES_DOCUMENT_ROOT, or None.
        limits: the largest file and decoded image accepted (413 beyond).
        timeout: seconds for a whole download (connect, redirects and body).
        policy: the hosts images may come from (by default: none on the backend's own network, Label Studio's
            host excepted).
    """

    def __init__(
        self,
        label_studio: LabelStudioAuth | None = None,
        local_files_root: Path | None = None,
        limits: ImageLimits = ImageLimits(),
        timeout: float = 30.0,
        policy: AddressPolicy | None = None,
    ) -> None:
        self.label_studio = label_studio
        self.local_files_root = None if local_files_root is None else Path(local_files_root).resolve()
        self.limits = limits
        self.timeout = timeout
        self.policy = policy or AddressPolicy.for_urls((), label_studio.base_url if label_studio else None)
        self.session = policy_session(self.policy)
        if label_studio is not None:
            label_studio.session = self.session  # the token refresh goes through the same checked session

    @classmethod
    def from_settings(cls, settings: LabelStudioSettings) -> ImageFetcher:
        auth = None
        if settings.url and settings.api_key:
            auth = LabelStudioAuth(settings.url, settings.api_key, timeout=settings.fetch_timeout)
        return cls(
            auth, settings.local_files_document_root, settings.limits, settings.fetch_timeout, settings.address_policy()
        )

    def fetch(self, url: str, task_id: int | None = None) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB for a task image URL (see the module docstring for the kinds)."""
        return decode_image(self.fetch_bytes(url, task_id), self.limits, source=_redact(url))

    def fetch_bytes(self, url: str, task_id: int | None = None) -> bytes:
        if not isinstance(url, str) or not url.strip():
            raise ImageError("the task has no image URL", 422)
        url = url.strip()
        if "\x00" in url:
            raise ImageError("the image URL contains a NUL byte", 422)
        deadline = time.monotonic() + self.timeout
        if url.startswith("data:"):
            return self._data_uri(url)
        if url.startswith("upload/") or url.startswith("/upload/"):
            url = "/data/" + url.lstrip("/")
        scheme = urlparse(url).scheme
        if scheme in CLOUD_SCHEMES:
            return self._cloud(url, task_id, deadline)
        if scheme in ("http", "https"):
            parsed = urlparse(url)
            if self.label_studio and self.label_studio.owns(url):
                return self._from_label_studio(parsed.path + (f"?{parsed.query}" if parsed.query else ""), deadline)
            return self._download(url, deadline)
        if scheme or not url.startswith("/"):
            raise ImageError(
                f"unsupported image URL {_redact(url)!r}: expected http(s)://, s3://, gs://, "
                "azure-blob://, data: or a Label Studio path (/data/upload/..., /data/local-files/?d=...)",
                422,
            )
        return self._from_label_studio(url, deadline)

    # -- the kinds -------------------------------------------------------------------------------------------

    def _from_label_studio(self, path: str, deadline: float) -> bytes:
        path = media_path(path)
        if path.startswith("/data/local-files") and self.local_files_root is not None:
            return self._local_file(path)
        if self.label_studio is None:
            raise ImageError(
                f"{path} is a Label Studio path: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY so the "
                "backend can fetch it",
                422,
            )
        try:
            return self._download(self.label_studio.base_url + path, deadline, authenticated=True)
        except ImageError as exc:
            # a missing upload answers 404, or 500 from Label Studio's file view on local disk; with cloud-backed
            # default storage uploads are only served by the storage proxy
            if exc.status_code not in (404, 502) or not path.startswith("/data/upload/"):
                raise
            key = path[len("/data/") :].split("?", 1)[0]
            proxy = f"{self.label_studio.base_url}/storage-data/uploaded/?filepath={quote(key)}"
            try:
                return self._download(proxy, deadline, authenticated=True)
            except ImageError:
                raise ImageError(
                    f"Label Studio has no uploaded file {path} ({exc}; the storage proxy has none either)", 404
                ) from None

    def _local_file(self, path: str) -> bytes:
        root = self.local_files_root
        if root is None:
            raise ImageError(f"{path}: LOCAL_FILES_DOCUMENT_ROOT is not set", 422)
        values = parse_qs(urlparse(path).query, keep_blank_values=True).get("d")
        relative = values[-1] if values else ""
        if not relative:
            raise ImageError(f"local-files URL {path!r} has no ?d=PATH", 422)
        # as Label Studio's /data/local-files view: ?d= is relative to the root and may not climb out of it
        target = (root / posixpath.normpath(relative).lstrip("/")).resolve()
        if not target.is_relative_to(root):
            raise ImageError(f"local file {relative!r} lies outside LOCAL_FILES_DOCUMENT_ROOT", 403)
        if not target.is_file():
            raise ImageError(f"local file {relative!r} not found under LOCAL_FILES_DOCUMENT_ROOT", 404)
        if target.stat().st_size > self.limits.max_bytes:
            raise ImageError(
                f"image {relative!r} is larger than {self.limits.max_bytes >> 20} MiB (ADAPTIVECLICK_MAX_IMAGE_MB)", 413
            )
        return target.read_bytes()

    def _cloud(self, uri: str, task_id: int | None, deadline: float) -> bytes:
        if self.label_studio is not None and task_id is not None:
            if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 0:
                raise ImageError(f"cannot presign {uri}: the task id {task_id!r} is not an integer", 422)
            fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
            return self._download(
                f"{self.label_studio.base_url}/tasks/{task_id}/presign/?fileuri={fileuri}", deadline, authenticated=True
            )
        if uri.startswith("s3://"):
            return self._s3(uri)
        raise ImageError(
            f"{uri}: cloud storage images are fetched through Label Studio's presign endpoint; "
            "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY",
            422,
        )

    def _s3(self, uri: str) -> bytes:
        import boto3
        import botocore.exceptions

        parsed = urlparse(uri)
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        if not bucket or not key:
            raise ImageError(f"{uri!r} is not an s3://bucket/key URI", 422)
        try:
            body = boto3.client("s3").get_object(Bucket=bucket, Key=key)
            if body.get("ContentLength", 0) > self.limits.max_bytes:
                raise ImageError(
                    f"{uri} is larger than {self.limits.max_bytes >> 20} MiB (ADAPTIVECLICK_MAX_IMAGE_MB)", 413
                )
            return body["Body"].read(self.limits.max_bytes + 1)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = (
                404 if code in ("NoSuchKey", "NoSuchBucket", "404") else 403 if code in ("AccessDenied", "403") else 502
            )
            raise ImageError(f"cannot read {uri}: {code or exc}", status) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ImageError(f"cannot read {uri}: {exc}", 502) from None

    def _download(self, url: str, deadline: float, authenticated: bool = False) -> bytes:
        """GET ``url`` and its redirects, one checked hop at a time, within ``deadline``."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._get(url, deadline, authenticated)
            if response.status_code not in (301, 302, 303, 307, 308) or "Location" not in response.headers:
                with response:
                    return self._body(response, url, deadline, authenticated)
            response.close()
            target = urljoin(url, response.headers["Location"])
            if urlparse(target).scheme not in ("http", "https"):
                raise ImageError(
                    f"image {_redact(url)} redirects to a {urlparse(target).scheme or 'relative'} URL", 422
                )
            # the key follows a redirect only to another of Label Studio's media paths
            authenticated = (
                authenticated
                and self.label_studio is not None
                and self.label_studio.owns(target)
                and _is_media_path(urlparse(target))
            )
            url = target
        raise ImageError(f"image {_redact(url)}: more than {MAX_REDIRECTS} redirects", 422)

    def _get(self, url: str, deadline: float, authenticated: bool) -> requests.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _too_slow(url, self.timeout)
        try:
            if authenticated and self.label_studio is not None:
                return self.label_studio.get(url, stream=True, timeout=remaining, allow_redirects=False)
            return self.session.get(url, stream=True, timeout=remaining, allow_redirects=False)
        except BlockedAddress:
            raise
        except ImageError:
            raise
        except PermissionError as exc:  # the token refresh was refused
            raise ImageError(str(exc), 403) from None
        except requests.Timeout:
            raise ImageError(
                f"image host of {_redact(url)} did not answer within {self.timeout:g} s (ADAPTIVECLICK_FETCH_TIMEOUT)",
                502,
            ) from None
        except requests.RequestException as exc:
            raise ImageError(f"cannot fetch image {_redact(url)}: {_reason(exc)}", 502) from None

    def _body(self, response: requests.Response, url: str, deadline: float, authenticated: bool) -> bytes:
        if response.status_code != 200:
            status = {401: 403, 403: 403, 404: 404}.get(
                response.status_code, 502 if response.status_code >= 500 else 422
            )
            hint = " (check LABEL_STUDIO_API_KEY)" if response.status_code in (401, 403) and authenticated else ""
            raise ImageError(f"fetching image {_redact(url)} answered {response.status_code}{hint}", status)
        limit = self.limits.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(url, limit)
        chunks, size = [], 0
        try:
            # read1 returns what one read of the socket brings, so a host that trickles bytes meets the deadline
            # (a plain read would wait for a whole chunk, one byte per read timeout at a time)
            while chunk := response.raw.read1(READ_SIZE):
                size += len(chunk)
                if size > limit:
                    raise _too_large(url, limit)
                if time.monotonic() > deadline:
                    raise _too_slow(url, self.timeout)
                chunks.append(chunk)
        except ImageError:
            raise
        except Exception as exc:  # urllib3's ReadTimeoutError, ProtocolError (reset, truncated), socket errors
            raise ImageError(
                f"the download of image {_redact(url)} broke off after {size} bytes: {_reason(exc)}", 422
            ) from None
        return b"".join(chunks)

    def _data_uri(self, url: str) -> bytes:
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise ImageError("only base64 data: URIs are supported", 422)
        if len(payload) * 3 // 4 > self.limits.max_bytes:
            raise ImageError(
                f"data: image is larger than {self.limits.max_bytes >> 20} MiB (ADAPTIVECLICK_MAX_IMAGE_MB)", 413
            )
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            raise ImageError("data: URI is not valid base64", 422) from None


def media_path(path: str) -> str:
    """``path`` (with its query) if it is one of Label Studio's media paths, else a 403 :class:`ImageError`.

    Dot segments (``.``/``..``, percent-encoded or not), backslashes, empty segments and control characters are
    refused, since an HTTP client or Label Studio would collapse them into another path that gets the key.
    """
    if not _is_media_path(urlparse(path)):
        raise ImageError(
            f"{_redact(path)!r} is not a Label Studio media path (/data/upload/..., "
            "/data/local-files/?d=..., /tasks/<id>/presign/): the API key is sent nowhere else",
            403,
        )
    return path


def _is_media_path(parsed) -> bool:
    decoded = parsed.path
    for _ in range(3):  # %252e%252e -> %2e%2e -> ..
        decoded = unquote(decoded)
    if any(ord(ch) < 32 or ch == "\\" for ch in decoded):
        return False
    segments = decoded.split("/")[1:]
    if any(segment in (".", "..") for segment in segments) or "" in segments[:-1]:
        return False
    if parsed.query and any(
        ".." in unquote(v).split("/") for values in parse_qs(parsed.query).values() for v in values
    ):
        return False
    if decoded.startswith(MEDIA_PREFIXES):
        return True
    # /tasks/<integer id>/presign/
    return (
        len(segments) == _PRESIGN_SEGMENTS
        and segments[0] == "tasks"
        and segments[1].isdigit()
        and segments[2] == "presign"
        and segments[3] == ""
    )


def _too_large(url: str, limit: int) -> ImageError:
    return ImageError(f"image {_redact(url)} is larger than {limit >> 20} MiB (ADAPTIVECLICK_MAX_IMAGE_MB)", 413)


def _too_slow(url: str, timeout: float) -> ImageError:
    return ImageError(f"image {_redact(url)} did not arrive within {timeout:g} s (ADAPTIVECLICK_FETCH_TIMEOUT)", 422)


def _reason(exc: BaseException) -> str:
    """The innermost cause (requests wraps urllib3's error, which wraps the socket's), without the request's URL."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None)
        inner = inner if isinstance(inner, BaseException) else exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return _redact(f"{type(exc).__name__}: {exc}" if str(exc).strip() else type(exc).__name__)


def _redact(url: str) -> str:
    """``url`` without the query of any absolute URL in it (presigned URLs carry their signature there)."""
    return redact(url)


def load_image(url: str, settings: LabelStudioSettings | None = None, task_id: int | None = None) -> np.ndarray:
    """Fetch one image as the backend does, outside a request (settings from the environment by default)."""
    return ImageFetcher.from_settings(settings or LabelStudioSettings.from_env()).fetch(url, task_id)
