"""Fetch a task image the way Label Studio shows it: an RGB uint8 array ``[H, W, 3]``, EXIF orientation applied.

URL kinds (as label-studio-ml resolves them):

* uploads: ``/data/upload/<project>/<file>`` (or ``upload/...``): from Label Studio with the API key, falling back
  to the storage proxy ``/storage-data/uploaded/?filepath=upload/...`` when the first answers 404;
* local storage: ``/data/local-files/?d=PATH``: read from ``LOCAL_FILES_DOCUMENT_ROOT/PATH`` when that is set,
  otherwise from Label Studio with the API key;
* cloud storage ``s3://``, ``gs://``, ``azure-blob://``: through Label Studio's presign endpoint
  ``/tasks/<task id>/presign/?fileuri=<base64url>`` (Label Studio holds the credentials); ``s3://`` falls back to
  boto3 with the backend's own AWS credentials when Label Studio is not configured or the task id is unknown;
* other ``http(s)://`` URLs: fetched directly; the API key is only sent to LABEL_STUDIO_URL's origin;
* ``data:image/...;base64,...`` URIs.

Every failure is an :class:`~labelstudio.errors.ImageError` with the HTTP status it maps to.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import posixpath
import warnings
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import numpy as np
import requests
from PIL import Image, ImageOps, UnidentifiedImageError

from .auth import LabelStudioAuth
from .errors import ImageError
from .settings import ImageLimits, LabelStudioSettings

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")


class ImageFetcher:
    """Turns task image URLs into RGB arrays. Thread-safe; holds one HTTP session.

    Args:
        label_studio: authenticated access to Label Studio, or None when LABEL_STUDIO_URL/API key are unset.
        local_files_root: LOCAL_FILES_DOCUMENT_ROOT, or None.
        limits: the largest file and decoded image accepted (413 beyond).
        timeout: seconds for each HTTP request.
    """

    def __init__(
        self,
        label_studio: LabelStudioAuth | None = None,
        local_files_root: Path | None = None,
        limits: ImageLimits = ImageLimits(),
        timeout: float = 30.0,
    ) -> None:
        self.label_studio = label_studio
        self.local_files_root = None if local_files_root is None else Path(local_files_root).resolve()
        self.limits = limits
        self.timeout = timeout
        self.session = label_studio.session if label_studio else requests.Session()

    @classmethod
    def from_settings(cls, settings: LabelStudioSettings) -> ImageFetcher:
        auth = None
        if settings.url and settings.api_key:
            auth = LabelStudioAuth(settings.url, settings.api_key, timeout=settings.fetch_timeout)
        return cls(auth, settings.local_files_document_root, settings.limits, settings.fetch_timeout)

    def fetch(self, url: str, task_id: int | str | None = None) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB for a task image URL (see the module docstring for the kinds)."""
        return decode_image(self.fetch_bytes(url, task_id), self.limits, source=url)

    def fetch_bytes(self, url: str, task_id: int | str | None = None) -> bytes:
        if not isinstance(url, str) or not url.strip():
            raise ImageError("the task has no image URL", 422)
        url = url.strip()
        if url.startswith("data:"):
            return self._data_uri(url)
        if url.startswith("upload/") or url.startswith("/upload/"):
            url = "/data/" + url.lstrip("/")
        scheme = urlparse(url).scheme
        if scheme in CLOUD_SCHEMES:
            return self._cloud(url, task_id)
        if scheme in ("http", "https"):
            parsed = urlparse(url)
            if self.label_studio and self.label_studio.owns(url):
                return self._from_label_studio(parsed.path + (f"?{parsed.query}" if parsed.query else ""))
            return self._download(url, authenticated=False)
        if scheme or not url.startswith("/"):
            raise ImageError(
                f"unsupported image URL {url!r}: expected http(s)://, s3://, gs://, azure-blob://, "
                "data: or a Label Studio path (/data/upload/..., /data/local-files/?d=...)",
                422,
            )
        return self._from_label_studio(url)

    # -- the kinds -------------------------------------------------------------------------------------------

    def _from_label_studio(self, path: str) -> bytes:
        if path.startswith("/data/local-files") and self.local_files_root is not None:
            return self._local_file(path)
        if self.label_studio is None:
            raise ImageError(
                f"{path} is a Label Studio path: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY so the "
                "backend can fetch it",
                422,
            )
        url = self.label_studio.base_url + path
        try:
            return self._download(url, authenticated=True)
        except ImageError as exc:
            # a missing upload answers 404, or 500 from Label Studio's file view on local disk; with cloud-backed
            # default storage uploads are only served by the storage proxy
            if exc.status_code not in (404, 502) or not path.startswith("/data/upload/"):
                raise
            key = path[len("/data/") :].split("?", 1)[0]
            proxy = f"{self.label_studio.base_url}/storage-data/uploaded/?filepath={quote(key)}"
            try:
                return self._download(proxy, authenticated=True)
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
            raise ImageError(f"image {relative!r} is larger than {self.limits.max_bytes >> 20} MiB", 413)
        return target.read_bytes()

    def _cloud(self, uri: str, task_id) -> bytes:
        if self.label_studio is not None and task_id is not None:
            fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
            return self._download(
                f"{self.label_studio.base_url}/tasks/{task_id}/presign/?fileuri={fileuri}", authenticated=True
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
                raise ImageError(f"{uri} is larger than {self.limits.max_bytes >> 20} MiB", 413)
            return body["Body"].read(self.limits.max_bytes + 1)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = (
                404 if code in ("NoSuchKey", "NoSuchBucket", "404") else 403 if code in ("AccessDenied", "403") else 502
            )
            raise ImageError(f"cannot read {uri}: {code or exc}", status) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ImageError(f"cannot read {uri}: {exc}", 502) from None

    def _download(self, url: str, authenticated: bool) -> bytes:
        try:
            if authenticated and self.label_studio is not None:
                response = self.label_studio.get(url, stream=True, timeout=self.timeout)
            else:
                response = self.session.get(url, stream=True, timeout=self.timeout)
        except PermissionError as exc:
            raise ImageError(str(exc), 403) from None
        except requests.RequestException as exc:
            raise ImageError(f"cannot fetch image {_redact(url)}: {exc.__class__.__name__}", 502) from None
        with response:
            if response.status_code != 200:
                status = {401: 403, 403: 403, 404: 404}.get(
                    response.status_code, 502 if response.status_code >= 500 else 422
                )
                hint = " (check LABEL_STUDIO_API_KEY)" if response.status_code in (401, 403) and authenticated else ""
                raise ImageError(f"fetching image {_redact(url)} answered {response.status_code}{hint}", status)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.limits.max_bytes:
                raise ImageError(f"image {_redact(url)} is larger than {self.limits.max_bytes >> 20} MiB", 413)
            chunks, size = [], 0
            for chunk in response.iter_content(1 << 16):
                size += len(chunk)
                if size > self.limits.max_bytes:
                    raise ImageError(f"image {_redact(url)} is larger than {self.limits.max_bytes >> 20} MiB", 413)
                chunks.append(chunk)
        return b"".join(chunks)

    def _data_uri(self, url: str) -> bytes:
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise ImageError("only base64 data: URIs are supported", 422)
        if len(payload) * 3 // 4 > self.limits.max_bytes:
            raise ImageError(f"data: image is larger than {self.limits.max_bytes >> 20} MiB", 413)
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            raise ImageError("data: URI is not valid base64", 422) from None


def _redact(url: str) -> str:
    """The URL without its query (presigned URLs carry credentials there)."""
    parsed = urlparse(url)
    return parsed._replace(query="…" if parsed.query else "").geturl()


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), source: str = "image") -> np.ndarray:
    """Decode image bytes to ``[H, W, 3]`` uint8 RGB with the EXIF orientation applied (as browsers show it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size  # read from the header, before decoding the pixels
            if width * height > limits.max_pixels:
                raise ImageError(
                    f"{_redact(source)} has {width}x{height} pixels, more than the "
                    f"{limits.max_pixels} allowed (ADAPTIVECLICK_MAX_IMAGE_PIXELS)",
                    413,
                )
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(f"{_redact(source)} is not a readable image: {exc.__class__.__name__}", 422) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{_redact(source)} is not a readable image: {exc}", 422) from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def load_image(url: str, settings: LabelStudioSettings | None = None, task_id: int | str | None = None) -> np.ndarray:
    """Fetch one image as the backend does, outside a request (settings from the environment by default)."""
    return ImageFetcher.from_settings(settings or LabelStudioSettings.from_env()).fetch(url, task_id)
