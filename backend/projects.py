"""Which Label Studio project a request is for: the ``/projects/<id>`` prefix of the connection URL, or the body.

Label Studio joins ``predict``, ``setup``, ``versions``, ... to the connection URL after a ``/``, so a project
connected as ``http://backend:9090/projects/12`` sends ``/projects/12/predict``. :class:`ProjectPrefix` strips the
prefix before routing (so every route accepts it) and keeps the id; a body's ``project`` (``"12.1700000000"``)
must then agree with it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from flask import request

from adaptiveclick.labelstudio.errors import BadRequest


class ForProject(Protocol):
    """A parsed request that names its project (``None``: the base line)."""

    @property
    def project(self) -> int | None: ...


Parsed = TypeVar("Parsed", bound=ForProject)

PREFIX = re.compile(r"^/projects/(\d{1,18})(/.*)?$")
ENVIRON_KEY = "adaptiveclick.project"


class ProjectPrefix:
    """WSGI middleware: ``/projects/<id>/<route>`` becomes ``/<route>`` with the id in the environ."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = PREFIX.match(environ.get("PATH_INFO", ""))
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
