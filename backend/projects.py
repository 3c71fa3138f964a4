"""Which Label Studio project a request is for, and which projects the backend keeps state for.

Label Studio joins ``predict``, ``setup``, ``versions``, ... to the connection URL after a ``/``, so a project
connected as ``http://backend:9090/projects/12`` sends ``/projects/12/predict``. :class:`ProjectPrefix` strips the
prefix before routing (so every route accepts it) and keeps the id; a body's ``project`` (``"12.1700000000"``)
must then agree with it, and so must a route's own ``<project>`` (:func:`route_project`).

Per-project state (webhook counts, the model each project was last served, their metrics series) is kept only for
:class:`KnownProjects`: those Label Studio has set up (``/setup``) and those with a registry line, at most
``ADAPTIVECLICK_MAX_PROJECTS`` of the first kind (least recently set up dropped first), in :class:`ProjectTable`
(LRU-bounded), so requests naming made-up project ids cannot grow the worker.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from flask import request

from adaptiveclick.labelstudio.errors import BadRequest
from adaptiveclick.labelstudio.protocol import is_id_text


class ForProject(Protocol):
    """A parsed request that names its project (``None``: the base line)."""

    @property
    def project(self) -> int | None: ...


Parsed = TypeVar("Parsed", bound=ForProject)

PREFIX = re.compile(r"/projects/(\d{1,18})(/.*)?", re.DOTALL)
ENVIRON_KEY = "adaptiveclick.project"


class ProjectPrefix:
    """WSGI middleware: ``/projects/<id>/<route>`` becomes ``/<route>`` with the id in the environ."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = PREFIX.fullmatch(environ.get("PATH_INFO", ""))
        if match:
            environ[ENVIRON_KEY] = int(match.group(1))
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + f"/projects/{match.group(1)}"
            environ["PATH_INFO"] = match.group(2) or "/"
        return self.app(environ, start_response)


def url_project() -> int | None:
    """The project the connection URL names, if any."""
    return request.environ.get(ENVIRON_KEY)


def request_project(body_project: int | None) -> int | None:
    """The request's project: the body's and the URL's, which must agree when both are given."""
    from_url = url_project()
    if from_url is not None and body_project is not None and from_url != body_project:
        raise BadRequest(
            f"the connection URL is for project {from_url} but the request is for project "
            f"{body_project}: connect each project with its own /projects/<id> URL"
        )
    return body_project if body_project is not None else from_url


def with_request_project(parsed: Parsed) -> Parsed:
    """``parsed`` (a frozen dataclass) with its project resolved once, at the edge: the URL's and the body's,
    checked to agree (:func:`request_project`). Everything after the route reads ``parsed.project`` only."""
    return dataclasses.replace(parsed, project=request_project(parsed.project))  # type: ignore[type-var]


def route_project(text: str) -> int:
    """A route's ``<project>`` (``/jobs/<project>``): an id of at most 18 ASCII digits that agrees with the
    connection URL's project; 404 for anything else (``/jobs/<300 digits>`` must not reach the file system)."""
    if not is_id_text(text):
        raise BadRequest(f"no such project: {text[:40]!r} is not a project id (up to 18 digits)", 404)
    project = request_project(int(text))
    assert project is not None
    return project


Value = TypeVar("Value")
Default = TypeVar("Default")


class ProjectTable(Generic[Value]):
    """A dict from project id to ``Value`` that keeps the ``limit`` most recently used entries. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[int | None, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, project: int | None, default: Default) -> Value | Default:
        with self._lock:
            if project in self._items:
                self._items.move_to_end(project)
                return self._items[project]
            return default

    def put(self, project: int | None, value: Value) -> None:
        with self._lock:
            self._items.pop(project, None)
            self._items[project] = value
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def snapshot(self) -> dict[int | None, Value]:
        with self._lock:
            return dict(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[int | None]:
        return iter(self.snapshot())


class KnownProjects:
    """The projects the backend keeps state for: set up by Label Studio (``/setup``; the ``limit`` most recent) or
    holding a registry line (``registry_projects()``, read from the watcher's last poll)."""

    def __init__(self, limit: int, registry_projects: Callable[[], Container[int]] = tuple) -> None:
        self._set_up: ProjectTable[bool] = ProjectTable(limit)
        self._registry_projects = registry_projects

    def saw_setup(self, project: int | None) -> None:
        if project is not None:
            self._set_up.put(project, True)

    def __contains__(self, project: object) -> bool:
        if not isinstance(project, int):
            return False
        return self._set_up.get(project, False) or project in self._registry_projects()
