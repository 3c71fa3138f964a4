"""A fake Label Studio on loopback for the fast tests: the tasks API (pages, ``selectedItems`` ids), a project's
label config, a task's predictions and creating them, with switches for failures. The real one is
tests/ls_server.py (the slow tests)."""

from __future__ import annotations

import http.server
import json
import threading
from urllib.parse import parse_qs, urlparse

from quiet_http import QuietHandler


class FakeLabelStudio:
    """Project 3 with ``tasks`` and ``label_config``. Switches: ``fail_next`` answers the next GETs with 503;
    ``post_failures`` answers the next POSTs with 503, storing the prediction first when ``store_failed_posts``
    (an answer lost on the way back)."""

    def __init__(self, tasks: list[dict], label_config: str, token: str = "legacy-key") -> None:
        self.tasks = tasks
        self.label_config = label_config
        self.predictions: list[dict] = []
        self.fail_next = 0
        self.post_failures = 0
        self.store_failed_posts = False
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(QuietHandler):
            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fake.requests.append(("GET", url.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Token {token}":
                    return self.send_json(401, {"detail": "Invalid token."})
                if fake.fail_next:
                    fake.fail_next -= 1
                    return self.send_json(503, {"detail": "busy"})
                if url.path == "/api/projects/3":
                    return self.send_json(200, {"id": 3, "label_config": fake.label_config})
                if url.path == "/api/tasks" and query.get("project") == "3":
                    tasks = [fake.with_predictions(t) for t in fake.tasks]
                    if "query" in query:
                        included = set(json.loads(query["query"])["selectedItems"]["included"])
                        tasks = [t for t in tasks if t["id"] in included]
                    page, size = int(query["page"]), int(query["page_size"])
                    if (page - 1) * size >= len(tasks) and page > 1:
                        return self.send_json(404, {"detail": "Invalid page."})
                    return self.send_json(200, {"total": len(tasks), "tasks": tasks[(page - 1) * size : page * size]})
                if url.path == "/api/predictions/":
                    with fake.lock:
                        return self.send_json(200, [p for p in fake.predictions if p["task"] == int(query["task"])])
                return self.send_json(404, {"detail": "Not found."})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(("POST", self.path, self.headers.get("Authorization")))
                if body.get("task") not in {t["id"] for t in fake.tasks}:
                    return self.send_json(400, {"task": [f'Invalid pk "{body.get("task")}" - object does not exist.']})
                failing = fake.post_failures > 0
                fake.post_failures -= failing
                if failing and not fake.store_failed_posts:
                    return self.send_json(503, {"detail": "busy"})
                with fake.lock:
                    created = {**body, "id": len(fake.predictions) + 1}
                    fake.predictions.append(created)
                return self.send_json(503 if failing else 201, {"detail": "busy"} if failing else created)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def with_predictions(self, task: dict) -> dict:
        with self.lock:
            return {**task, "predictions": [p for p in self.predictions if p["task"] == task["id"]]}

    def close(self) -> None:
        self.server.shutdown()
