#!/usr/bin/env python3
"""Container health check: exit 0 when the backend's ``GET /health`` answers ``{"status": "UP"}``, 1 otherwise.

Used by the image's HEALTHCHECK (``python /opt/adaptiveclick/healthcheck.py``); standard library only, so it costs
a fraction of a second. It sends the backend's own Basic auth credentials (``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``)
when they are set, since the backend asks for them on every route.

    python healthcheck.py [URL]      # default http://127.0.0.1:9090/health
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9090/health"
TIMEOUT_S = 4.0


def check(url: str = DEFAULT_URL, environ=os.environ) -> tuple[bool, str]:
    """``(healthy, one line saying why)``."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    user, password = environ.get("BASIC_AUTH_USER", "").strip(), environ.get("BASIC_AUTH_PASS", "").strip()
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = json.loads(response.read(1 << 16) or b"{}")
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:  # refused, timed out, not JSON
        return False, f"{url}: {exc}"
    if body.get("status") != "UP":
        return False, f"{url} says {body!r}"
    return True, f"up, model {body.get('model_version')}"


def main(argv: list[str]) -> int:
    healthy, why = check(argv[1] if len(argv) > 1 else DEFAULT_URL)
    print(why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
