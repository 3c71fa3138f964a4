"""Authenticated requests to Label Studio with either kind of API key.

Label Studio 1.23 has two kinds of key:

* a personal access token (PAT) is a JWT *refresh* token: ``POST /api/token/refresh/ {"refresh": PAT}`` returns
  ``{"access": JWT}``, which is sent as ``Authorization: Bearer <access>`` and expires after minutes;
* a legacy token is an opaque string sent as ``Authorization: Token <key>``.

:class:`LabelStudioAuth` tells them apart, refreshes the access token before it expires and once more when Label
Studio answers 401, and only ever attaches the key to requests for ``LABEL_STUDIO_URL``'s scheme, host and port.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from urllib.parse import urlparse

import requests

logger = logging.getLogger(__name__)

REFRESH_PATH = "/api/token/refresh/"
EXPIRY_MARGIN_S = 30.0


def jwt_claims(token: str) -> dict | None:
    """The (unverified) payload of a JWT, or None when ``token`` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def same_origin(url: str, base_url: str) -> bool:
    a, b = urlparse(url), urlparse(base_url)

    def port(p):
        return p.port or {"http": 80, "https": 443}.get(p.scheme)

    return a.scheme == b.scheme and (a.hostname or "").lower() == (b.hostname or "").lower() and port(a) == port(b)


class LabelStudioAuth:
    """Args:
    base_url: LABEL_STUDIO_URL (no trailing slash needed).
    api_key: a PAT or a legacy token.
    session: the HTTP session to use (tests pass their own).
    timeout: seconds for the token refresh call.
    """

    def __init__(
        self, base_url: str, api_key: str, session: requests.Session | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key.strip()
        self.session = session or requests.Session()
        self.timeout = timeout
        claims = jwt_claims(self.api_key)
        self.kind = "pat" if claims and claims.get("token_type") == "refresh" else "access" if claims else "legacy"
        self._access: str | None = self.api_key if self.kind == "access" else None
        self._access_expiry = float((claims or {}).get("exp", 0)) if self.kind == "access" else 0.0
        self._lock = threading.Lock()

    def owns(self, url: str) -> bool:
        """True when ``url`` points at Label Studio itself (the only place the key may go)."""
        return same_origin(url, self.base_url)

    def headers(self, force_refresh: bool = False) -> dict[str, str]:
        if self.kind == "legacy":
            return {"Authorization": f"Token {self.api_key}"}
        if self.kind == "access":  # nothing to refresh it with: use it until it expires
            return {"Authorization": f"Bearer {self.api_key}"}
        with self._lock:
            if force_refresh or self._access is None or time.time() > self._access_expiry - EXPIRY_MARGIN_S:
                self._refresh()
            return {"Authorization": f"Bearer {self._access}"}

    def _refresh(self) -> None:
        url = self.base_url + REFRESH_PATH
        try:
            response = self.session.post(url, json={"refresh": self.api_key}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise PermissionError(
                f"cannot reach Label Studio at {self.base_url} to refresh the access token: {exc}"
            ) from None
        if response.status_code != 200:
            raise PermissionError(
                f"Label Studio refused LABEL_STUDIO_API_KEY (token refresh answered "
                f"{response.status_code}): use a valid personal access token or legacy token"
            )
        access = response.json().get("access")
        if not access:
            raise PermissionError("Label Studio's token refresh returned no access token")
        self._access = access
        self._access_expiry = float((jwt_claims(access) or {}).get("exp", time.time() + 60))
        logger.info(
            "refreshed Label Studio access token", extra={"expires_in_s": round(self._access_expiry - time.time())}
        )

    def get(self, url: str, **kwargs) -> requests.Response:
        """GET ``url`` (which must be Label Studio's) with the key, retrying once with a fresh token on 401."""
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> requests.Response:
        """POST to ``url`` (which must be Label Studio's) with the key, like :meth:`get`."""
        return self.request("POST", url, **kwargs)

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        """``method`` on ``url`` (which must be Label Studio's) with the key, retrying once with a fresh token on
        401 (a 401 means the request was refused unread, so repeating a POST cannot make it twice)."""
        if not self.owns(url):
            raise ValueError(f"refusing to send the Label Studio API key to {url}")
        response = self.session.request(method, url, headers=self.headers(), **kwargs)
        if response.status_code == 401 and self.kind == "pat":
            response.close()
            response = self.session.request(method, url, headers=self.headers(force_refresh=True), **kwargs)
        return response
