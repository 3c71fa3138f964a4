"""The backend's own request errors (the parsing and fetching ones are :mod:`labelstudio.errors`): a request that
cannot have the model in time. Both end with 503 and ``Retry-After``, and the model is free for the next request."""

from __future__ import annotations

from adaptiveclick.labelstudio.errors import RequestError

DEADLINE_SETTING = "ADAPTIVECLICK_REQUEST_DEADLINE"


class ModelBusy(RequestError):
    """Other requests held the model for longer than this request's deadline (503)."""

    status_code = 503


class DeadlineExceeded(RequestError):
    """The request's clicks need more model time than its deadline allows (503); the steps done are cached."""

    status_code = 503
