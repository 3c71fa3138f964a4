"""Structured logs: one JSON object per line, extra fields passed with ``logger.info(msg, extra={...})``.

Nothing secret reaches a line: the formatter replaces the configured secrets (the Label Studio API key, the Basic
auth password) with ``***`` and drops the query string of every URL (presigned URLs carry their signature there),
and the HTTP libraries whose debug lines print request URLs and headers (urllib3, botocore) log warnings only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

# attributes every LogRecord has; anything else was passed through ``extra`` and goes into the JSON object
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_URL_QUERY = re.compile(r"((?:https?|s3|gs|azure-blob)://[^\s\"'?]*)\?[^\s\"']*")
#: libraries that print request URLs (with signatures) and headers (with credentials) at DEBUG
QUIET_LOGGERS = ("urllib3", "botocore", "boto3", "s3transfer", "requests")
REDACTED = "***"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret replaced and every URL's query string dropped."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _URL_QUERY.sub(r"\1?…", text)


class JsonFormatter(logging.Formatter):
    #: values never to print, shared by every instance (gunicorn builds its own from its log config)
    secrets: tuple[str, ...] = ()

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str), self.secrets)


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
