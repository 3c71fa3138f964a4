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
body) and a size cap, which applies to the bytes after ``Content-Encoding: gzip``/``deflate`` is undone (a
compressed bomb stops at the cap). Every failure is an :class:`~labelstudio.errors.ImageError` with the HTTP status
it maps to and a message saying why.

Whose keys. Each fetch has a :class:`MediaScope`: the project and task of the request it serves, and whether the
backend's own credentials may be used for it at all. The Label Studio key goes to an upload
(``/data/upload/<project>/<file>``, its storage-proxy form ``?filepath=upload/<project>/...``) only when that
project is the request's, and to a presign call only for the request's task; ``s3://`` URLs are read with the
backend's own AWS credentials only from the buckets in ``ADAPTIVECLICK_S3_BUCKETS``; and a scope that may use no
credential (an anonymous request) gets none of them, nor the local-files folder. Each refusal comes before anything
is sent, with one 403 message whatever the object's state (no existence oracle).

Bounds. URLs other than ``data:`` are at most :data:`MAX_URL_LENGTH` characters (414); ``data:`` URIs must be
strict base64 (400); a control character anywhere in a URL, percent-encoded or not, is 400; at most
:data:`MAX_CONCURRENT_DECODES` images are decoded at once (a 50 MP decode holds hundreds of MB).
"""

from __future__ import annotations

import base64
import binascii
import logging
import posixpath
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import ParseResult, parse_qs, quote, unquote, urljoin, urlparse

import numpy as np
import requests

from adaptiveclick.storage.logs import redact

from .auth import LabelStudioAuth
from .decode import decode_image
from .errors import ImageError
from .netpolicy import AddressPolicy, BlockedAddress, policy_session
from .settings import S3_BUCKETS_SETTING, ImageLimits, LabelStudioSettings

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
MAX_REDIRECTS = 5
READ_SIZE = 1 << 16
# Label Studio paths that serve media, the only ones the API key is sent to
MEDIA_PREFIXES = ("/data/upload/", "/data/local-files/", "/storage-data/uploaded/")
_PRESIGN_SEGMENTS = 4  # /tasks/<integer id>/presign/
#: the longest image URL accepted, ``data:`` URIs aside (their cap is the image size)
MAX_URL_LENGTH = 16 << 10
#: images decoded at once by one fetcher (a decode holds width x height x 3 bytes and more)
MAX_CONCURRENT_DECODES = 2
ACCEPT_ENCODING = "gzip, deflate"  # what the body reader can undo within the size cap


@dataclass(frozen=True)
class MediaScope:
    """Which of the backend's credentials one fetch may use (see the module docstring).

    Attributes:
        project: the request's project: only its uploads get the Label Studio key (None: the request names no
            project, so no upload gets it).
        task_id: the request's task: the only one presigned for.
        all_projects: the operator's own tools (the command line): uploads of every project get the key.
        refusal: None when the backend's credentials (the Label Studio key, the AWS credentials, the local-files
            folder) may be used; otherwise the message of the 403 every such fetch gets (saying how to allow it).
    """

    project: int | None = None
    task_id: int | None = None
    all_projects: bool = False
    refusal: str | None = None

    def for_task(self, task_id: int | None) -> MediaScope:
        return MediaScope(self.project, task_id, self.all_projects, self.refusal)


#: the scope of the operator's own tools (the command line, scripts): every project, every credential
OPERATOR_SCOPE = MediaScope(all_projects=True)


class ImageFetcher:
    """Turns task image URLs into RGB arrays. Thread-safe; holds one HTTP session.

    Args:
        label_studio: authenticated access to Label Studio, or None when LABEL_STUDIO_URL/API key are unset.
        local_files_root: LOCAL_FILES_DOCUMENT_ROOT, or None.
        limits: the largest file and decoded image accepted (413 beyond).
        timeout: seconds for a whole download (connect, redirects and body).
        policy: the hosts images may come from (by default: none on the backend's own network, Label Studio's
            host excepted).
        s3_buckets: the buckets ``s3://`` URLs may be read from with the backend's own AWS credentials.
    """

    def __init__(
        self,
        label_studio: LabelStudioAuth | None = None,
        local_files_root: Path | None = None,
        limits: ImageLimits = ImageLimits(),
        timeout: float = 30.0,
        policy: AddressPolicy | None = None,
        s3_buckets: tuple[str, ...] = (),
    ) -> None:
        self.label_studio = label_studio
        self.local_files_root = None if local_files_root is None else Path(local_files_root).resolve()
        self.limits = limits
        self.timeout = timeout
        self.s3_buckets = frozenset(s3_buckets)
        self.policy = policy or AddressPolicy.for_urls((), label_studio.base_url if label_studio else None)
        self.session = policy_session(self.policy)
        self.session.headers["Accept-Encoding"] = ACCEPT_ENCODING
        if label_studio is not None:
            label_studio.session = self.session  # the token refresh goes through the same checked session
        self._decodes = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)

    @classmethod
    def from_settings(cls, settings: LabelStudioSettings) -> ImageFetcher:
        auth = None
        if settings.url and settings.api_key:
            auth = LabelStudioAuth(settings.url, settings.api_key, timeout=settings.fetch_timeout)
        return cls(
            auth,
            settings.local_files_document_root,
            settings.limits,
            settings.fetch_timeout,
            settings.address_policy(),
            settings.s3_buckets,
        )

    def fetch(self, url: str, task_id: int | None = None, scope: MediaScope = OPERATOR_SCOPE) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB for a task image URL (see the module docstring for the kinds), fetched for
        ``task_id`` within ``scope`` (default: the operator's own tools)."""
        data = self.fetch_bytes(url, task_id, scope)
        if not self._decodes.acquire(timeout=self.timeout):
            raise ImageError(
                f"{MAX_CONCURRENT_DECODES} images were being decoded for longer than {self.timeout:g} s "
                "(ADAPTIVECLICK_FETCH_TIMEOUT); retry",
                503,
            )
        try:
            return decode_image(data, self.limits, source=_redact(url))
        finally:
            self._decodes.release()

    def fetch_bytes(self, url: str, task_id: int | None = None, scope: MediaScope = OPERATOR_SCOPE) -> bytes:
        if not isinstance(url, str) or not url.strip():
            raise ImageError("the task has no image URL", 422)
        url = url.strip()
        scope = scope.for_task(task_id)
        if url.startswith("data:"):
            return self._data_uri(url)
        if len(url) > MAX_URL_LENGTH:
            raise ImageError(
                f"the image URL has {len(url)} characters, more than the {MAX_URL_LENGTH} accepted "
                "(data: URIs aside): use a shorter URL",
                414,
            )
        if _has_control_character(url):
            raise ImageError(
                "the image URL contains a control character (a NUL, a newline...), percent-encoded or not", 400
            )
        deadline = time.monotonic() + self.timeout
        if url.startswith("upload/") or url.startswith("/upload/"):
            url = "/data/" + url.lstrip("/")
        scheme = urlparse(url).scheme
        if scheme in CLOUD_SCHEMES:
            return self._cloud(url, scope, deadline)
        if scheme in ("http", "https"):
            parsed = urlparse(url)
            if self.label_studio and self.label_studio.owns(url):
                path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
                return self._from_label_studio(path, scope, deadline)
            return self._download(url, deadline)
        if scheme or not url.startswith("/"):
            raise ImageError(
                f"unsupported image URL {_redact(url)!r}: expected http(s)://, s3://, gs://, "
                "azure-blob://, data: or a Label Studio path (/data/upload/..., /data/local-files/?d=...)",
                422,
            )
        return self._from_label_studio(url, scope, deadline)

    # -- the kinds -------------------------------------------------------------------------------------------

    def _from_label_studio(self, path: str, scope: MediaScope, deadline: float) -> bytes:
        path = media_path(path, scope)
        if scope.refusal is not None:
            raise ImageError(f"{_redact(path)}: {scope.refusal}", 403)
        if path.startswith("/data/local-files") and self.local_files_root is not None:
            return self._local_file(path)
        if self.label_studio is None:
            raise ImageError(
                f"{path} is a Label Studio path: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY so the "
                "backend can fetch it",
                422,
            )
        try:
            return self._download(self.label_studio.base_url + path, deadline, scope)
        except ImageError as exc:
            # a missing upload answers 404, or 500 from Label Studio's file view on local disk; with cloud-backed
            # default storage uploads are only served by the storage proxy
            if exc.status_code not in (404, 502) or not path.startswith("/data/upload/"):
                raise
            key = path[len("/data/") :].split("?", 1)[0]
            proxy = f"{self.label_studio.base_url}/storage-data/uploaded/?filepath={quote(key)}"
            try:
                return self._download(proxy, deadline, scope)
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
            raise ImageError(f"local-files URL {_redact(path)!r} has no ?d=PATH", 422)
        shown = _redact(relative)
        try:
            # as Label Studio's /data/local-files view: ?d= is relative to the root and may not climb out of it
            target = (root / posixpath.normpath(relative).lstrip("/")).resolve()
            if not target.is_relative_to(root):
                raise ImageError(f"local file {shown!r} lies outside LOCAL_FILES_DOCUMENT_ROOT", 403)
            if not target.is_file():
                raise ImageError(f"local file {shown!r} not found under LOCAL_FILES_DOCUMENT_ROOT", 404)
            if target.stat().st_size > self.limits.max_bytes:
                raise ImageError(
                    f"image {shown!r} is larger than {self.limits.max_bytes >> 20} MiB (ADAPTIVECLICK_MAX_IMAGE_MB)",
                    413,
                )
            with open(target, "rb") as f:
                return f.read(self.limits.max_bytes + 1)
        except (OSError, ValueError) as exc:  # a name too long, a NUL, a folder that vanished...
            raise ImageError(f"local file {shown!r} cannot be read: {type(exc).__name__}", 400) from None

    def _cloud(self, uri: str, scope: MediaScope, deadline: float) -> bytes:
        if scope.refusal is not None:
            raise ImageError(f"{_redact(uri)}: {scope.refusal}", 403)
        task_id = scope.task_id
        if self.label_studio is not None and task_id is not None:
            if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 0:
                raise ImageError(f"cannot presign {_redact(uri)}: the task id {task_id!r} is not an integer", 422)
            fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
            return self._download(
                f"{self.label_studio.base_url}/tasks/{task_id}/presign/?fileuri={fileuri}", deadline, scope
            )
        if uri.startswith("s3://"):
            return self._s3(uri)
        raise ImageError(
            f"{_redact(uri)}: cloud storage images are fetched through Label Studio's presign endpoint; "
            "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY",
            422,
        )

    def _s3(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        if not bucket or not key:
            raise ImageError(f"{_redact(uri)!r} is not an s3://bucket/key URI", 422)
        if bucket not in self.s3_buckets:
            # refused before any call, so the answer is the same whether the bucket or the object exists
            raise ImageError(
                f"s3://{bucket[:63]}/...: the backend reads s3:// images with its own AWS credentials only from the "
                f"buckets in {S3_BUCKETS_SETTING}; add the bucket there, or let Label Studio presign it (cloud "
                "storage connected to the project, LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY set)",
                403,
            )
        import boto3
        import botocore.exceptions

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
            raise ImageError(f"cannot read {_redact(uri)}: {code or exc}", status) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ImageError(f"cannot read {_redact(uri)}: {_redact(str(exc))}", 502) from None

    def _download(self, url: str, deadline: float, scope: MediaScope | None = None) -> bytes:
        """GET ``url`` and its redirects, one checked hop at a time, within ``deadline``; with the Label Studio key
        when ``scope`` is given (a media path of Label Studio, checked against it)."""
        authenticated = scope is not None
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
                and _media_refusal(urlparse(target), scope or OPERATOR_SCOPE) is None
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
        inflate = _decoder(response.headers.get("Content-Encoding", ""), url)
        chunks, size, received = [], 0, 0
        try:
            # read1 returns what one read of the socket brings, so a host that trickles bytes meets the deadline
            # (a plain read would wait for a whole chunk, one byte per read timeout at a time)
            while chunk := response.raw.read1(READ_SIZE, decode_content=False):
                received += len(chunk)
                if received > limit:
                    raise _too_large(url, limit)
                if time.monotonic() > deadline:
                    raise _too_slow(url, self.timeout)
                for part in _inflated(inflate, chunk, limit - size):
                    size += len(part)
                    if size > limit:
                        raise _too_large(url, limit)
                    chunks.append(part)
            if inflate is not None:
                tail = inflate.flush()
                size += len(tail)
                if size > limit:
                    raise _too_large(url, limit)
                chunks.append(tail)
        except ImageError:
            raise
        except zlib.error as exc:
            raise ImageError(f"image {_redact(url)} came with a broken Content-Encoding: {exc}", 422) from None
        except Exception as exc:  # urllib3's ReadTimeoutError, ProtocolError (reset, truncated), socket errors
            raise ImageError(
                f"the download of image {_redact(url)} broke off after {received} bytes: {_reason(exc)}", 422
            ) from None
        return b"".join(chunks)

    def _data_uri(self, url: str) -> bytes:
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise ImageError("only base64 data: URIs are supported (data:image/png;base64,...)", 400)
        if len(payload) * 3 // 4 > self.limits.max_bytes:
            raise ImageError(
                f"data: image is larger than {self.limits.max_bytes >> 20} MiB (ADAPTIVECLICK_MAX_IMAGE_MB)", 413
            )
        return strict_base64(payload, "the data: URI")


def strict_base64(payload: str, what: str) -> bytes:
    """The bytes of ``payload``, standard base64 and nothing else (no whitespace, no junk after the padding);
    a 400 :class:`ImageError` naming ``what`` otherwise (lenient decoders skip junk, which then rides along)."""
    try:
        # validate=True: the whole text must be [A-Za-z0-9+/]*={0,2} (a linear fullmatch), then decode
        return base64.b64decode(payload.encode("ascii", "replace"), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(
            f"{what} is not valid base64: only A-Z, a-z, 0-9, + and /, then = padding, may appear", 400
        ) from None


def _decoder(encoding: str, url: str):
    """A zlib decompressor for the response's ``Content-Encoding`` (None for identity)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise ImageError(
        f"image {_redact(url)} came with Content-Encoding {encoding[:40]!r}: only gzip and deflate are decoded", 422
    )


def _inflated(inflate, chunk: bytes, room: int):
    """The bytes ``chunk`` inflates to, in pieces, stopping once more than ``room`` came out (so a bomb costs at
    most the size cap, never what it would inflate to)."""
    if inflate is None:
        yield chunk
        return
    data = chunk
    while data:
        part = inflate.decompress(data, max(room, 0) + 1)
        room -= len(part)
        yield part
        if room < 0:
            return
        data = inflate.unconsumed_tail


def _decoded(text: str) -> str:
    for _ in range(3):  # %252e%252e -> %2e%2e -> ..
        text = unquote(text)
    return text


def _has_control_character(url: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in _decoded(url))


def media_path(path: str, scope: MediaScope = OPERATOR_SCOPE) -> str:
    """``path`` (with its query) if it is one of Label Studio's media paths that ``scope`` may fetch with the key,
    else a 403 :class:`ImageError` saying why.

    Dot segments (``.``/``..``, percent-encoded or not), backslashes, empty segments and control characters are
    refused, since an HTTP client or Label Studio would collapse them into another path that gets the key; so are
    another project's uploads and another task's presign call.
    """
    refusal = _media_refusal(urlparse(path), scope)
    if refusal is not None:
        raise ImageError(f"{_redact(path)!r} {refusal}", 403)
    return path


NOT_MEDIA = (
    "is not a Label Studio media path (/data/upload/..., /data/local-files/?d=..., /tasks/<id>/presign/): the API "
    "key is sent nowhere else"
)


def _media_refusal(parsed: ParseResult, scope: MediaScope) -> str | None:
    """Why the key may not go to ``parsed`` for ``scope`` (None: it may)."""
    decoded = _decoded(parsed.path)
    if any(ord(ch) < 32 or ch == "\\" for ch in decoded):
        return NOT_MEDIA
    segments = decoded.split("/")[1:]
    if any(segment in (".", "..") for segment in segments) or "" in segments[:-1]:
        return NOT_MEDIA
    query = parse_qs(parsed.query)
    if parsed.query and any(".." in unquote(v).split("/") for values in query.values() for v in values):
        return NOT_MEDIA
    if decoded.startswith("/data/upload/"):
        return _upload_refusal(segments[2] if len(segments) > 2 else "", scope)
    if decoded.startswith("/storage-data/uploaded/"):
        filepath = _decoded((query.get("filepath") or [""])[-1]).lstrip("/").split("/")
        return _upload_refusal(filepath[1] if len(filepath) > 2 and filepath[0] == "upload" else "", scope)
    if decoded.startswith(MEDIA_PREFIXES):
        return None
    # /tasks/<integer id>/presign/, only the request's task
    if (
        len(segments) == _PRESIGN_SEGMENTS
        and segments[0] == "tasks"
        and segments[1].isascii()
        and segments[1].isdigit()
        and segments[2] == "presign"
        and segments[3] == ""
    ):
        if scope.all_projects or (scope.task_id is not None and int(segments[1]) == scope.task_id):
            return None
        return "is the presign call of another task than the request's: the API key presigns only the request's task"
    return NOT_MEDIA


def _upload_refusal(project: str, scope: MediaScope) -> str | None:
    """Why an upload of ``project`` (the path's segment) gets no key in ``scope``."""
    if scope.all_projects:
        return None
    if project.isascii() and project.isdigit() and scope.project is not None and int(project) == scope.project:
        return None
    return (
        "is not an upload of the request's project (/data/upload/<project>/<file>): the API key fetches only the "
        "uploads of the project that asked"
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
