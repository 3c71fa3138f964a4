"""``adaptiveclick serve``: gunicorn configuration (one worker, threads, model built after the fork), argument and
settings errors, and the JSON log format."""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from adaptiveclick.backend.app import backend_of
from adaptiveclick.backend.cli import DEFAULT_HOST, DEFAULT_PORT, add_arguments, gunicorn_application, run
from adaptiveclick.backend.settings import Settings
from adaptiveclick.backend.wsgi_server import StartingApp
from adaptiveclick.cli import build_parser
from adaptiveclick.storage.logs import JsonFormatter


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_match_label_studio_ml():
    args = parse()
    assert (args.host, args.port, args.predictor) == (DEFAULT_HOST, DEFAULT_PORT, None) == ("0.0.0.0", 9090, None)
    assert build_parser("serve").parse_args(["serve", "--port", "9191"]).port == 9191


def test_gunicorn_config_loads_the_model_in_the_worker(tmp_path):
    settings = Settings(threads=6, log_level="WARNING", read_timeout=7, model_dir=tmp_path)
    app = gunicorn_application(settings, "127.0.0.1:9999", timeout=77)
    cfg = app.cfg
    assert cfg.bind == ["127.0.0.1:9999"] and cfg.workers == 1
    assert cfg.worker_class_str == "adaptiveclick.backend.wsgi_server.WaitressWorker" and cfg.preload_app is False
    assert (
        cfg.timeout == 77
        and cfg.logconfig_dict["formatters"]["json"]["()"] == "adaptiveclick.storage.logs.JsonFormatter"
    )
    assert app.waitress_options["threads"] == 6 and app.waitress_options["channel_timeout"] == 7
    starting = app.load()  # what the worker does after the fork: answers "starting" while the app is built
    assert isinstance(starting, StartingApp)
    assert starting.ready.wait(60) and starting.failed is None
    assert backend_of(starting.app).holder.version == "baseline-grabcut-v2"


def test_bad_arguments_and_settings_exit_with_a_message(capsys, monkeypatch):
    assert run(parse("--port", "70000")) == 2
    assert "not a TCP port" in capsys.readouterr().out
    assert run(parse("--predictor", "random:gigantic")) == 2
    assert "ADAPTIVECLICK_PREDICTOR" in capsys.readouterr().out
    monkeypatch.setenv("LABEL_STUDIO_URL", "not-a-url")
    assert run(parse()) == 2
    assert "LABEL_STUDIO_URL" in capsys.readouterr().out


def test_json_log_lines():
    record = logging.LogRecord("adaptiveclick.backend.app", logging.WARNING, __file__, 1, "request %s", ("x",), None)
    record.status = 400
    record.path = "/predict"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["msg"] == "request x" and line["logger"] == "adaptiveclick.backend.app"
    assert line["status"] == 400 and line["path"] == "/predict" and line["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exc"]


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_log_level_is_applied(level):
    from adaptiveclick.storage.logs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(level)
        assert root.level == getattr(logging, level)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert logging.getLogger("gunicorn.access").disabled
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        logging.getLogger("gunicorn.access").disabled = False


def test_requests_wait_for_a_starting_app_and_probes_do_not():
    """A restarted worker: a click that arrives while the app builds waits for it (within the deadline) instead of
    getting 503; /health answers "starting" at once; beyond max_waiting, requests do not wait (threads stay free)."""
    import threading
    import time

    starting = StartingApp(wait_s=5.0, max_waiting=1)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]

    def call(path: str) -> tuple[str, bytes, float]:
        seen = []
        began = time.monotonic()
        body = b"".join(starting({"PATH_INFO": path}, lambda status, headers: seen.append(status)))
        return seen[0], body, time.monotonic() - began

    results: dict[str, tuple] = {}
    waiter = threading.Thread(target=lambda: results.update(click=call("/projects/3/predict")))
    waiter.start()
    time.sleep(0.3)
    for probe in ("/health", "/projects/3/health", "/", "/metrics"):
        status, body, took = call(probe)
        assert status.startswith("503") and b"starting" in body and took < 1.0, probe
    status, _, took = call("/setup")  # a second waiter is one too many: 503 at once
    assert status.startswith("503") and took < 1.0
    threading.Timer(0.5, lambda: starting.build(lambda: app)).start()
    waiter.join(10)
    status, body, took = results["click"]
    assert status.startswith("200") and body == b"served" and 0.5 < took < 5.0
    no_wait = StartingApp()
    assert b"starting" in b"".join(no_wait({"PATH_INFO": "/predict"}, lambda *a: None))
