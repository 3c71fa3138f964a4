"""Who may do what: two credentials, and what a caller without one gets.

* The **connection credential** is HTTP Basic auth, ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``: what Label Studio's
  *Connect Model* dialog holds (*Use basic auth*). It covers what Label Studio does: clicks and Retrieve
  Predictions (``POST /predict``), ``POST /setup`` (with a pin through ``extra_params``), ``POST /webhook`` (with
  ``START_TRAINING``), ``GET /versions``, and the health check and metrics. When it is set, every route needs it
  (or the operator token).
* The **operator token** is ``ADAPTIVECLICK_ADMIN_TOKEN``, sent as ``Authorization: Bearer <token>``. It covers what
  operators do: ``POST /versions/<project>`` (pin or unpin), ``POST /jobs/<project>/annotate``, and job details
  (folders and log tails in ``GET /jobs...``); it also opens everything the connection credential does. Unset, the
  operator routes are off (403 naming the setting).

Without a connection credential configured, callers are anonymous: the backend answers clicks, health, metrics,
version listings and job summaries, but refuses (403, naming the setting) whatever starts work or changes what is
served (a pin, ``START_TRAINING``, annotation events that count toward a fine-tune), and an anonymous click gets
none of the backend's own credentials for its image (the Label Studio key, the AWS credentials, the local-files
folder: :class:`labelstudio.media.MediaScope`). ``ADAPTIVECLICK_UNSAFE_ANONYMOUS`` re-opens them for a single-user
laptop: ``changes``, ``media`` or ``all``; it is refused together with ``BASIC_AUTH_*``.

Failed attempts (a wrong password or token) are rate-limited per client address: after :data:`FAILURE_LIMIT` within
:data:`FAILURE_WINDOW_S` an address that has never authenticated gets 429 without its credentials being checked,
while an address that has (Label Studio's) is never locked out by a neighbour's failures.
"""

from __future__ import annotations

import enum
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from adaptiveclick.labelstudio.errors import RequestError

logger = logging.getLogger(__name__)

ADMIN_SETTING = "ADAPTIVECLICK_ADMIN_TOKEN"
UNSAFE_SETTING = "ADAPTIVECLICK_UNSAFE_ANONYMOUS"
CONNECTION_SETTINGS = "BASIC_AUTH_USER and BASIC_AUTH_PASS"
FAILURE_LIMIT = 20  # failed attempts per window from one address before it gets 429
FAILURE_WINDOW_S = 60.0
MAX_CLIENTS = 4096  # addresses remembered (least recently seen dropped first)
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="adaptiveclick"'}
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="adaptiveclick operator"'}


class Need(enum.Enum):
    """What a route (or a part of one) needs."""

    READ = "read"  # Label Studio's clicks and reads: the connection credential when one is configured
    CHANGE = "change"  # starts work or changes what is served: the connection credential, never anonymous
    OPERATOR = "operator"  # the operator token


class Unauthorized(RequestError):
    """No valid credential for what was asked (401, with the challenge of the credential that would do)."""

    status_code = 401


class Forbidden(RequestError):
    """Not allowed with this backend's configuration: the message names the setting that would allow it (403)."""

    status_code = 403


class TooManyFailures(RequestError):
    """Too many failed authentication attempts from one address (429, ``Retry-After``)."""

    status_code = 429


@dataclass(frozen=True)
class Caller:
    """Who sent a request: ``connection`` when it proved the connection credential or the operator token,
    ``operator`` when it proved the operator token; neither: anonymous."""

    connection: bool = False
    operator: bool = False

    @property
    def anonymous(self) -> bool:
        return not (self.connection or self.operator)


OPERATOR = Caller(connection=True, operator=True)


class FailedAuthLimiter:
    """At most ``limit`` failed attempts per ``window_s`` from one client address that has never authenticated;
    beyond that its credentials are not even checked until the window has passed. Both tables are LRU-bounded by
    ``max_clients``. Thread-safe; ``clock`` exists for tests."""

    def __init__(
        self,
        limit: int = FAILURE_LIMIT,
        window_s: float = FAILURE_WINDOW_S,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window_s, self.max_clients, self._clock = limit, window_s, max_clients, clock
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # address -> (window start, count)
        self._trusted: OrderedDict[str, None] = OrderedDict()  # addresses that authenticated once
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        with self._lock:
            if client in self._trusted:
                return 0.0
            started, count = self._failures.get(client, (0.0, 0))
            left = started + self.window_s - self._clock()
            return left if count >= self.limit and left > 0 else 0.0

    def failed(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            started, count = self._failures.pop(client, (now, 0))
            if now - started >= self.window_s:
                started, count = now, 0
            self._failures[client] = (started, count + 1)
            _trim(self._failures, self.max_clients)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
            self._trusted.pop(client, None)
            self._trusted[client] = None
            _trim(self._trusted, self.max_clients)


K = TypeVar("K")
View = TypeVar("View", bound=Callable[..., Any])


def needs(need: Need) -> Callable[[View], View]:
    """Mark a route's view function with what it needs (the edge checks it before the view runs; unmarked views
    need :attr:`Need.READ`)."""

    def mark(view: View) -> View:
        view.access_need = need  # type: ignore[attr-defined]
        return view

    return mark


def need_of(view: Callable[..., Any] | None) -> Need:
    return getattr(view, "access_need", Need.READ)


def _trim(table: OrderedDict[K, Any], limit: int) -> None:
    while len(table) > limit:
        table.popitem(last=False)


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


class AccessPolicy:
    """The rules of the module docstring for one backend's settings.

    Args:
        basic_auth: the connection credential ``(user, password)``, or None.
        admin_token: the operator token, or None (operator routes off).
        anonymous_grants: what ``ADAPTIVECLICK_UNSAFE_ANONYMOUS`` opens (``changes``, ``media``); only without
            ``basic_auth``.
    """

    def __init__(
        self,
        basic_auth: tuple[str, str] | None,
        admin_token: str | None,
        anonymous_grants: tuple[str, ...] = (),
        limiter: FailedAuthLimiter | None = None,
    ) -> None:
        self.basic_auth = basic_auth
        self.admin_token = admin_token
        self.anonymous_grants = () if basic_auth else tuple(anonymous_grants)
        self.limiter = limiter or FailedAuthLimiter()

    def authenticate(self, scheme: str | None, credentials: tuple[str, str] | str | None, client: str) -> Caller:
        """The caller a request's ``Authorization`` proves: ``scheme`` ``basic`` with ``(user, password)`` or
        ``bearer`` with the token, None when it sent none. A credential that does not match is 401 (counted as a
        failure of ``client``), 429 once ``client`` failed too often; a kind of credential this backend has none of
        configured proves nothing (anonymous), as Label Studio may send Basic auth to a backend without it."""
        if scheme is None or (scheme == "basic" and self.basic_auth is None):
            return Caller()  # a credential this backend does not have is no credential (as before: not refused)
        if scheme == "bearer" and self.admin_token is None:
            return Caller()
        wait = self.limiter.wait_s(client)
        if wait > 0:
            raise TooManyFailures(
                f"too many failed authentication attempts from {client}: try again in {wait:.0f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        caller = self._check(scheme, credentials)
        if caller is None:
            self.limiter.failed(client)
            logger.warning("authentication failed", extra={"client": client, "scheme": scheme})
            which = (
                f"the operator token ({ADMIN_SETTING})"
                if scheme == "bearer"
                else f"the connection credential ({CONNECTION_SETTINGS})"
            )
            raise Unauthorized(
                f"authentication failed: the {scheme} credential is not {which}",
                headers=BEARER_CHALLENGE if scheme == "bearer" else BASIC_CHALLENGE,
            )
        self.limiter.succeeded(client)
        return caller

    def _check(self, scheme: str, credentials: tuple[str, str] | str | None) -> Caller | None:
        if scheme == "basic" and self.basic_auth is not None and isinstance(credentials, tuple):
            user_ok = _equal(credentials[0], self.basic_auth[0])
            pass_ok = _equal(credentials[1], self.basic_auth[1])
            return Caller(connection=True) if user_ok and pass_ok else None
        if scheme == "bearer" and self.admin_token is not None and isinstance(credentials, str):
            return OPERATOR if _equal(credentials, self.admin_token) else None
        return None

    def check(self, caller: Caller, need: Need, what: str) -> None:
        """Raise :class:`Unauthorized` or :class:`Forbidden` (naming the setting) unless ``caller`` may do
        ``what`` (e.g. "pinning a model version"), which needs ``need``."""
        if need is Need.OPERATOR:
            if self.admin_token is None:
                raise Forbidden(
                    f"{what} is an operator route, and operator routes are off: set {ADMIN_SETTING} (a long random "
                    "string, e.g. `openssl rand -hex 32`) and send it as Authorization: Bearer <token>"
                )
            if not caller.operator:
                raise Unauthorized(
                    f"{what} needs the operator token: send {ADMIN_SETTING} as Authorization: Bearer <token>",
                    headers=BEARER_CHALLENGE,
                )
            return
        if caller.connection:
            return
        if self.basic_auth is not None:
            raise Unauthorized(
                f"authentication required: this backend expects HTTP Basic auth ({CONNECTION_SETTINGS}, as in Label "
                "Studio's Connect Model dialog) or the operator token",
                headers=BASIC_CHALLENGE,
            )
        if need is Need.CHANGE and "changes" not in self.anonymous_grants:
            raise Forbidden(
                f"{what} starts work or changes what is served, which needs the connection credential, and this "
                f"backend has none: set {CONNECTION_SETTINGS} (and the same pair in Label Studio's Connect Model "
                f"dialog, Use basic auth); {UNSAFE_SETTING}=changes opens it to anyone who can reach the port"
            )

    def may_use_backend_credentials(self, caller: Caller) -> bool:
        """Whether ``caller``'s images may be fetched with the backend's own credentials (the Label Studio key,
        the AWS credentials, the local-files folder)."""
        return caller.connection or "media" in self.anonymous_grants

    def media_refusal(self, caller: Caller) -> str | None:
        """None when ``caller``'s images may use the backend's credentials, else the 403 message of every image
        that would need them (:class:`labelstudio.media.MediaScope`)."""
        if self.may_use_backend_credentials(caller):
            return None
        return (
            "this request is anonymous, so its image gets none of the backend's own credentials (the Label Studio "
            f"key, the AWS credentials, the local-files folder): set {CONNECTION_SETTINGS} and the same pair in "
            f"Label Studio's Connect Model dialog (Use basic auth); {UNSAFE_SETTING}=media opens them to anyone"
        )
