"""labelstudio.api: export files (the API itself is exercised by the fine-tune import tests)."""

from __future__ import annotations

import json

import pytest

from labelstudio.api import LabelStudioError, load_export

from ls_regions import task


def test_load_export_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LabelStudioError, match="not JSON"):
        load_export(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text('{"a": 1}')
    with pytest.raises(LabelStudioError, match="list of tasks"):
        load_export(tmp_path / "obj.json")
    with pytest.raises(LabelStudioError, match="cannot read"):
        load_export(tmp_path / "missing.json")
    (tmp_path / "ok.json").write_text(json.dumps([task(1, "x.png")]))
    assert load_export(tmp_path / "ok.json")[0]["id"] == 1


class FakeLabelStudio:
    """Label Studio's tasks and predictions API on loopback: 250 tasks, pages, ids, one 503 on request."""

    def __init__(self) -> None:
        import http.server
        import threading
        from urllib.parse import parse_qs, urlparse

        self.tasks = [{"id": i, "data": {"image": f"/data/upload/1/{i}.jpg"}, "annotations": []} for i in range(1, 251)]
        self.predictions: list[dict] = []
        self.fail_next = 0
        self.requests: list[tuple[str, str, str | None]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fake.requests.append(("GET", url.path, self.headers.get("Authorization")))
                if fake.fail_next:
                    fake.fail_next -= 1
                    return self._reply(503, {"detail": "busy"})
                if url.path == "/api/projects/3":
                    return self._reply(200, {"id": 3, "label_config": "<View/>"})
                if url.path == "/api/tasks":
                    tasks = fake.tasks
                    if "query" in query:
                        included = set(json.loads(query["query"])["selectedItems"]["included"])
                        tasks = [t for t in tasks if t["id"] in included]
                    page, size = int(query["page"]), int(query["page_size"])
                    if (page - 1) * size >= len(tasks) and page > 1:
                        return self._reply(404, {"detail": "Invalid page."})
                    chunk = tasks[(page - 1) * size : page * size]
                    return self._reply(200, {"total": len(tasks), "tasks": chunk})
                if url.path == "/api/predictions/":
                    return self._reply(200, [p for p in fake.predictions if p["task"] == int(query["task"])])
                return self._reply(404, {"detail": "Not found."})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(("POST", self.path, self.headers.get("Authorization")))
                if body.get("task") == 999:
                    return self._reply(400, {"task": ['Invalid pk "999" - object does not exist.']})
                created = {**body, "id": len(fake.predictions) + 1}
                fake.predictions.append(created)
                return self._reply(201, created)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def fake_ls():
    fake = FakeLabelStudio()
    yield fake
    fake.server.shutdown()


def test_api_lists_pages_and_ids_and_creates_predictions(fake_ls):
    from labelstudio.api import LabelStudioAPI
    from labelstudio.ratelimit import RateLimit

    api = LabelStudioAPI(fake_ls.url, "legacy-key", rate=RateLimit(1000), backoff_s=0.01)
    assert [t["id"] for t in api.tasks(3)] == list(range(1, 251))
    assert [t["id"] for t in api.tasks(3, ids=[250, 7, 7, 120, 4000])] == [7, 120, 250]
    assert api.project(3)["label_config"] == "<View/>"
    fake_ls.fail_next = 2  # transient: retried
    assert api.task_predictions(7) == []
    created = api.create_prediction(7, [{"type": "brushlabels"}], 0.5, "v1")
    assert created["id"] == 1 and api.task_predictions(7)[0]["model_version"] == "v1"
    with pytest.raises(LabelStudioError, match="400.*does not exist") as refused:
        api.create_prediction(999, [], 0.0, "v1")
    assert not refused.value.transient
    fake_ls.fail_next = 10
    with pytest.raises(LabelStudioError, match="503") as busy:
        api.task_predictions(7)
    assert busy.value.transient
    fake_ls.fail_next = 0
    assert {auth for _, _, auth in fake_ls.requests} == {"Token legacy-key"}
    assert api.calls == len(fake_ls.requests)
    with pytest.raises(LabelStudioError, match="404"):
        api.project(4)
    with pytest.raises(LabelStudioError, match="URL and an API key"):
        LabelStudioAPI("", "")
