"""Run the Label Studio ML backend: ``adaptiveclick serve [--host --port --predictor SPEC]``.

gunicorn's master supervises one worker process (restarted if it dies), which serves with waitress
(:mod:`backend.wsgi_server`: whole requests reach the request threads, so slow clients hold no thread) and holds the
model; its threads serve I/O (image downloads, JSON) while predictions take the model's lock. The app, and so the
model, is built in the worker after the fork, never in the master: CUDA does not survive a fork. Settings come from
the environment (see :mod:`backend.settings`); the options here override them.
"""

from __future__ import annotations

import argparse
import logging
import threading

from adaptiveclick.storage.logs import configure_logging

from .settings import MAX_BODY_BYTES, Settings, SettingsError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 9090  # label-studio-ml's default
GRACEFUL_TIMEOUT_S = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--predictor",
        default=None,
        metavar="SPEC",
        help="predictor spec (default: $ADAPTIVECLICK_PREDICTOR or 'baseline')",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: $DEVICE or auto)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="request threads of the worker (default: $ADAPTIVECLICK_THREADS or 16)",
    )
    parser.add_argument(
        "--timeout", type=int, default=120, help="seconds before gunicorn restarts a stuck worker (default 120)"
    )


def json_logconfig(level: str) -> dict:
    """gunicorn's own log lines (start, worker boots, timeouts) as JSON too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "adaptiveclick.storage.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {"gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False}},
        "root": {"level": level, "handlers": ["stderr"]},
    }


def gunicorn_application(settings: Settings, bind: str, timeout: int = 120):
    """A gunicorn application serving :func:`backend.app.create_app` with waitress in its one worker (see
    :mod:`backend.wsgi_server`); the app is built in the worker, after the fork, while the server answers "starting"."""
    from gunicorn.app.base import BaseApplication

    from .wsgi_server import StartingApp, server_options

    class BackendApplication(BaseApplication):
        waitress_options = server_options(settings.threads, settings.read_timeout, MAX_BODY_BYTES)

        def load_config(self):
            options = {
                "bind": bind,
                "workers": 1,
                "worker_class": "adaptiveclick.backend.wsgi_server.WaitressWorker",
                "timeout": timeout,  # the worker's loop reports every half second: this only catches a hung loop
                "graceful_timeout": GRACEFUL_TIMEOUT_S,
                "preload_app": False,
                "accesslog": None,  # the app logs each request itself, as JSON
                "loglevel": settings.log_level.lower(),
                "logconfig_dict": json_logconfig(settings.log_level),
                # gunicorn's control socket sits at one fixed path per user: two servers would fight over it
                "control_socket_disable": True,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            configure_logging(settings.log_level, secrets=settings.secrets)  # in the worker, after gunicorn's
            # clicks that arrive while the app builds (a restarted worker) wait for it, within their deadline
            starting = StartingApp(settings.request_deadline, settings.prediction_slots)
            threading.Thread(target=starting.build, args=(build_app,), name="app-builder", daemon=True).start()
            return starting

    def build_app():
        from .app import backend_of, create_app

        app = create_app(settings, watch_registry=True)
        logger.info(
            "backend ready",
            extra={
                "model_version": backend_of(app).holder.version,
                "bind": bind,
                "threads": settings.threads,
            },
        )
        return app

    return BackendApplication()


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(predictor=args.predictor, device=args.device, threads=args.threads)
    except SettingsError as exc:
        print(f"adaptiveclick serve: {exc}")
        return 2
    if not 0 < args.port < 65536:
        print(f"adaptiveclick serve: --port {args.port} is not a TCP port")
        return 2
    configure_logging(settings.log_level, secrets=settings.secrets)
    bind = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    logger.info("starting gunicorn", extra={"bind": bind, "predictor": settings.predictor})
    for warning in settings.warnings():
        logger.warning(warning)
    gunicorn_application(settings, bind, args.timeout).run()
    return 0
