"""Structured logs: one JSON object per line, extra fields passed with ``logger.info(msg, extra={...})``.

Nothing secret reaches a line, and no value can make a line costly: every string value (the message, each extra
field, keys and items of lists and dicts, the traceback) is redacted *before* the line is serialised, then cut to
:data:`MAX_STRING` characters with its length noted (``... (1048576 characters)``). Redaction replaces the
configured secrets (the Label Studio API key, the Basic auth password, the operator token) with ``***``, drops the
query string of every URL (presigned URLs carry their signature there) and the userinfo of every URL
(``https://user:pass@host`` becomes ``https://***@host``). It is a single left-to-right scan (:func:`redact`, no
regular expression that could backtrack) over at most the first :data:`MAX_STRING` characters plus the longest
secret, so its cost is bounded whatever the input's size: a 1 MB hostile string costs what 1 KiB does. Since values
are redacted before ``json.dumps``, a secret holding quotes or non-ASCII characters is caught too, and every line
stays valid JSON. The HTTP libraries whose debug lines print request URLs and headers (urllib3, botocore) log
warnings only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

# attributes every LogRecord has; anything else was passed through ``extra`` and goes into the JSON object
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
#: libraries that print request URLs (with signatures) and headers (with credentials) at DEBUG
QUIET_LOGGERS = ("urllib3", "botocore", "boto3", "s3transfer", "requests")
REDACTED = "***"
#: the most characters of one logged string (longer ones are cut, their length noted)
MAX_STRING = 1024
#: the most characters of a traceback (its end is kept: the frames nearest the error)
MAX_TRACEBACK = 4096
#: the most items of one logged list or dict, and how deep they are followed
MAX_ITEMS = 50
MAX_DEPTH = 4
#: the URL schemes whose query and userinfo are redacted
URL_SCHEMES = ("http", "https", "s3", "gs", "azure-blob")
_SCHEMES_LONGEST_FIRST = tuple(sorted(URL_SCHEMES, key=len, reverse=True))
_LONGEST_SCHEME = len(_SCHEMES_LONGEST_FIRST[0])
_URL_END = frozenset(" \t\r\n\v\f\"'<>")  # what ends a URL in free text


def cap(text: str, limit: int = MAX_STRING) -> str:
    """``text`` cut to ``limit`` characters, its full length noted when cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def redact(text: str, secrets: Iterable[str] = (), limit: int = MAX_STRING) -> str:
    """``text`` with every secret replaced, every URL's query and userinfo dropped, cut to ``limit`` characters.

    Only the first ``limit`` characters (plus the longest secret, so that none is cut in half) are looked at: the
    rest is cut anyway, so the cost is bounded by ``limit`` however long ``text`` is."""
    secrets = tuple(s for s in secrets if s)
    margin = max((len(s) for s in secrets), default=0) + _LONGEST_SCHEME + 3
    head = text[: limit + margin]
    for secret in secrets:
        head = head.replace(secret, REDACTED)
    head = _redact_urls(head)
    if len(text) <= limit and len(head) <= limit:
        return head
    return f"{head[:limit]}... ({len(text)} characters)"


def _redact_urls(text: str) -> str:
    """One left-to-right pass: every ``scheme://`` of :data:`URL_SCHEMES` starts a URL that runs to whitespace or
    a quote; its userinfo becomes ``***`` and its query ``…``. A ``://`` inside a URL is part of that URL, so each
    character is looked at a bounded number of times (linear in ``len(text)``)."""
    out: list[str] = []
    done = 0  # text[:done] is in out already
    position = 0
    while (found := text.find("://", position)) >= 0:
        scheme = next((s for s in _SCHEMES_LONGEST_FIRST if text[max(0, found - len(s)) : found].lower() == s), None)
        if scheme is None:
            position = found + 3
            continue
        start = found - len(scheme)
        end = found + 3
        while end < len(text) and text[end] not in _URL_END:
            end += 1
        out.append(text[done:start])
        out.append(_redact_url(text[start:end], found - start))
        done = position = end
    out.append(text[done:])
    return "".join(out)


def _redact_url(url: str, scheme_length: int) -> str:
    """``url`` (``scheme://...``, no whitespace) without its userinfo and query."""
    authority_start = scheme_length + 3
    authority_end = len(url)
    for mark in "/?#":
        at = url.find(mark, authority_start)
        if 0 <= at < authority_end:
            authority_end = at
    at_sign = url.rfind("@", authority_start, authority_end)
    if at_sign >= 0:
        url = f"{url[:authority_start]}{REDACTED}{url[at_sign:]}"
    query = url.find("?", authority_start)
    if query >= 0:
        fragment = url.find("#", query)
        url = url[: query + 1] + "…" + ("" if fragment < 0 else url[fragment:])
    return url


def redact_value(value: Any, secrets: Iterable[str] = (), depth: int = 0) -> Any:
    """``value`` ready for a JSON log line: strings redacted and capped (:func:`redact`), lists and dicts followed
    up to :data:`MAX_ITEMS` items and :data:`MAX_DEPTH` levels, numbers, booleans and None kept, anything else
    as its (redacted, capped) ``str``."""
    secrets = tuple(secrets)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, (bytes, bytearray)):
        return redact(bytes(value[: MAX_STRING + 64]).decode("utf-8", "replace"), secrets) + (
            f"... ({len(value)} bytes)" if len(value) > MAX_STRING else ""
        )
    if depth >= MAX_DEPTH:
        return redact(_short_str(value), secrets)
    if isinstance(value, dict):
        items = list(_first(value.items(), MAX_ITEMS))
        result = {redact(str(k), secrets, 128): redact_value(v, secrets, depth + 1) for k, v in items}
        if len(value) > MAX_ITEMS:
            result["..."] = f"{len(value) - MAX_ITEMS} more"
        return result
    if isinstance(value, (list, tuple, set, frozenset)):
        shown = [redact_value(v, secrets, depth + 1) for v in _first(value, MAX_ITEMS)]
        if len(value) > MAX_ITEMS:
            shown.append(f"... {len(value) - MAX_ITEMS} more")
        return shown
    return redact(_short_str(value), secrets)


def _first(items: Iterable, count: int) -> Iterable:
    for k, item in enumerate(items):
        if k >= count:
            return
        yield item


def _short_str(value: Any) -> str:
    try:
        return str(value)
    except Exception as exc:  # noqa: BLE001 - a value that cannot print itself is named, not fatal
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"


class JsonFormatter(logging.Formatter):
    #: values never to print, shared by every instance (gunicorn builds its own from its log config)
    secrets: tuple[str, ...] = ()

    def format(self, record: logging.LogRecord) -> str:
        secrets = self.secrets
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(_message(record), secrets),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[redact(key, secrets, 128)] = redact_value(value, secrets)
        if record.exc_info:
            text = self.formatException(record.exc_info)
            tail = text[-MAX_TRACEBACK:]
            entry["exc"] = redact(tail, secrets, MAX_TRACEBACK) + (
                f" (last {MAX_TRACEBACK} of {len(text)} characters)" if len(text) > MAX_TRACEBACK else ""
            )
        return json.dumps(entry, default=str)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as exc:  # noqa: BLE001 - a bad format string still gives a line
        return f"{record.msg!s:.{MAX_STRING}} (unformattable: {type(exc).__name__})"


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Send the ``backend`` and ``gunicorn`` loggers (and the root) to stderr as JSON lines, with ``secrets``
    redacted from every line."""
    JsonFormatter.secrets = tuple(s for s in secrets if s)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    error_log = logging.getLogger("gunicorn.error")
    error_log.handlers[:] = []
    error_log.propagate = True
    logging.getLogger("gunicorn.access").disabled = True  # the app logs every request itself, with more fields
