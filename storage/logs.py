"""Structured logs: one JSON object per line, extra fields passed with ``logger.info(msg, extra={...})``."""

from __future__ import annotations

import json
import logging
import sys
import time

# attributes every LogRecord has; anything else was passed through ``extra`` and goes into the JSON object
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
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
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send the ``backend`` and ``gunicorn`` loggers (and the root) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    error_log = logging.getLogger("gunicorn.error")
    error_log.handlers[:] = []
    error_log.propagate = True
    logging.getLogger("gunicorn.access").disabled = True  # the app logs every request itself, with more fields
