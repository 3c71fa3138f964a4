"""The serving stack: gunicorn's master (supervision, signals, restarts) over a worker that serves with waitress.

Why waitress inside the worker: gunicorn's threaded worker hands a connection to a request thread as soon as it is
readable, and the thread then blocks reading the rest of the request, so a handful of clients that send half a
request and wait hold every thread (and the health check with them). Waitress reads requests in one event loop and
hands a request to a thread only once it has arrived whole, so a stalled or slow client costs a socket, not a
thread; a connection that sends nothing for ``ADAPTIVECLICK_READ_TIMEOUT`` seconds is dropped. Its own errors
(oversized headers or bodies, malformed requests) are answered as JSON like the app's.

The app is built in the worker, after the fork (CUDA does not survive a fork), in a background thread while the
server already answers: until it is ready the probes (``/``, ``/health``, ``/metrics``) answer 503
``{"status": "starting"}`` at once, so a health check sees the process alive, and every other request waits for
the app, up to ``ADAPTIVECLICK_REQUEST_DEADLINE`` (then 503 ``starting``): after a worker dies, the clicks that
arrive while its replacement loads (Label Studio does not retry a failed one) are answered, not lost. At most
``ADAPTIVECLICK_THREADS`` minus the reserved threads wait at once, so the probes always find a thread.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.workers.base import Worker
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from .projects import PREFIX

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
WORKER_BOOT_ERROR = 3  # gunicorn's exit code for a worker that cannot start: the master stops instead of looping
LOOP_TICK_S = 0.5  # how often the worker's loop wakes to tell gunicorn it is alive


def json_reply(
    start_response: Callable, status: int, reason: str, payload: dict, headers: list[tuple[str, str]] | None = None
) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(headers or [])],
    )
    return [body]


class JsonErrorTask(ErrorTask):
    """Waitress's own error replies (431 headers too large, 413 body too large, 400 malformed) as JSON."""

    def execute(self) -> None:
        error = self.request.error
        message = f"{error.reason}: {error.body}".strip().rstrip(":")
        body = json.dumps({"error": message, "status": error.code}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        logger.warning(
            "request rejected by the server",
            extra={"status": error.code, "error": message, "client": self.channel.addr[0]},
        )


class JsonChannel(HTTPChannel):
    error_task_class = JsonErrorTask


PROBE_PATHS = ("/", "/health", "/metrics")  # answered at once while starting (after any /projects/<id> prefix)


class StartingApp:
    """Hands every request to the real app once :meth:`build` has made it; until then a probe gets 503
    ``starting`` at once and any other request waits for the app up to ``wait_s`` (at most ``max_waiting`` at a
    time, so the probes keep threads), then gets 503 ``starting``."""

    def __init__(self, wait_s: float = 0.0, max_waiting: int = 0) -> None:
        self.app: WSGIApp | None = None
        self.failed: str | None = None
        self.ready = threading.Event()
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self._waiting = 0
        self._lock = threading.Lock()

    def build(self, factory: Callable[[], WSGIApp]) -> None:
        """Build the app (in the calling thread); a failure is remembered for the worker to exit on."""
        try:
            self.app = factory()
        except BaseException as exc:  # noqa: BLE001 - reported, then the worker exits with gunicorn's boot error
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.exception("the backend could not start", extra={"error": self.failed})
        finally:
            self.ready.set()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.app is None and not _is_probe(environ):
            self._wait()
        if self.app is not None:
            return self.app(environ, start_response)
        return json_reply(
            start_response,
            503,
            "Service Unavailable",
            {"status": "starting", "error": "the backend is starting (loading the model); retry shortly"},
            [("Retry-After", "2")],
        )

    def _wait(self) -> None:
        with self._lock:
            if self._waiting >= self.max_waiting or self.wait_s <= 0:
                return
            self._waiting += 1
        try:
            self.ready.wait(self.wait_s)
        finally:
            with self._lock:
                self._waiting -= 1


def _is_probe(environ: dict) -> bool:
    path = environ.get("PATH_INFO", "")
    match = PREFIX.fullmatch(path)
    return (match.group(2) or "/" if match else path) in PROBE_PATHS


def server_options(threads: int, read_timeout: float, max_body_bytes: int) -> dict[str, Any]:
    """Waitress adjustments for :class:`WaitressWorker`, which reads them from the gunicorn application's
    ``waitress_options`` (see :func:`backend.cli.gunicorn_application`)."""
    return {
        "threads": threads,
        "channel_timeout": read_timeout,
        "cleanup_interval": max(0.5, min(5.0, read_timeout / 4)),
        "connection_limit": 1000,
        "backlog": 2048,
        "max_request_header_size": 64 << 10,
        "max_request_body_size": max_body_bytes,
        "asyncore_use_poll": True,  # select() cannot watch descriptors above 1023
        "ident": "adaptiveclick",
        "expose_tracebacks": False,
    }


class WaitressWorker(Worker):
    """A gunicorn worker that serves its listening sockets with waitress (see the module docstring)."""

    def run(self) -> None:
        socket_map: dict = {}  # every waitress dispatcher (listeners and connections) registers here
        create_server(
            self.wsgi,
            map=socket_map,
            sockets=[s.sock for s in self.sockets],
            **getattr(self.app, "waitress_options", {}),
        )
        listeners = [d for d in socket_map.values() if isinstance(d, BaseWSGIServer)]
        for listener in listeners:
            listener.channel_class = JsonChannel
        starting = self.wsgi if isinstance(self.wsgi, StartingApp) else None
        while self.alive:
            self.notify()
            if starting is not None and starting.failed:
                os._exit(WORKER_BOOT_ERROR)
            if self.ppid != os.getppid():
                logger.warning("the gunicorn master went away; the worker stops")
                break
            wasyncore.loop(timeout=LOOP_TICK_S, map=socket_map, use_poll=True, count=1)
        self._drain(listeners, socket_map)

    def _drain(self, listeners: list[BaseWSGIServer], socket_map: dict) -> None:
        """Stop accepting, let running requests finish (up to gunicorn's graceful timeout), then stop the threads."""
        for listener in listeners:
            listener.accepting = False
            listener.del_channel()
        dispatcher = listeners[0].task_dispatcher
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline and (
            dispatcher.active_count
            or dispatcher.queue
            or any(getattr(channel, "total_outbufs_len", 0) for channel in list(socket_map.values()))
        ):
            self.notify()
            wasyncore.loop(timeout=0.1, map=socket_map, use_poll=True, count=1)
        dispatcher.shutdown(cancel_pending=True, timeout=1)
        wasyncore.close_all(socket_map)
