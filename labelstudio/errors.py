"""Typed errors that carry the HTTP status they map to; the backend turns them into ``{"error": message}`` replies.

Every message says what was wrong and, where the client or the operator can fix it, how.
"""

from __future__ import annotations

from collections.abc import Mapping


class RequestError(Exception):
    """An error a request ends with. ``status_code`` is the HTTP status of the reply; ``headers`` go with it
    (``WWW-Authenticate``, ``Retry-After``)."""

    status_code = 400

    def __init__(self, message: str, status_code: int | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.headers = dict(headers or {})

    @property
    def message(self) -> str:
        return str(self)


class BadRequest(RequestError):
    """Malformed or inconsistent request content (400)."""


class LabelConfigError(BadRequest):
    """The label config lacks what interactive segmentation needs, or is not valid XML (400)."""


class ImageError(RequestError):
    """The task image cannot be fetched or decoded.

    404: not found; 413: too large; 422: unreadable/undecodable or unsupported URL; 502: the storage answered with
    an error that is not the client's (5xx). ``403`` when Label Studio refused our credentials.
    """

    status_code = 422
