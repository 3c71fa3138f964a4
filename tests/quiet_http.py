"""The request handler every fake server of the tests builds on: no access log on stderr, and one way to answer."""

from __future__ import annotations

import http.server
import json


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A handler that logs nothing and answers with :meth:`send_body` / :meth:`send_json`."""

    def log_message(self, *args) -> None:
        pass

    def send_body(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """``body`` with its length and ``headers`` (none for a HEAD request, which gets the headers only)."""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, document) -> None:
        self.send_body(status, json.dumps(document).encode(), {"Content-Type": "application/json"})
