"""A Label Studio project's tasks and predictions: an exported JSON file, or the project through the REST API.

:func:`fetch_tasks` reads a whole project for fine-tuning: the JSON export endpoint first (one request), then the
paginated tasks API for servers where exporting is not allowed. :class:`LabelStudioAPI` is what batch jobs use:
the paginated task listing (a project's tasks, or the tasks of given ids) with annotations and predictions, a
project's label config, a task's predictions, and creating a prediction (``POST /api/predictions/``; annotations
are never written). Every call of one :class:`LabelStudioAPI` goes through its rate limit, reads are retried
on 429, 5xx and connection errors, and the key goes only to Label Studio (:mod:`labelstudio.auth`: personal access
tokens and legacy tokens).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import requests

from .auth import LabelStudioAuth
from .ratelimit import RateLimit

logger = logging.getLogger(__name__)

PAGE_SIZE = 100
IDS_PER_QUERY = 100  # task ids per listing request: keeps the query string short
TRANSIENT_STATUS = (429, 500, 502, 503, 504)


class LabelStudioError(RuntimeError):
    """Label Studio cannot be read or written (bad URL, key, project id; an answer that is not what it should be).

    ``transient`` says that trying again later may work (429, 5xx, no connection); ``status`` is the HTTP status
    Label Studio answered with, None when there was no answer."""

    def __init__(self, message: str, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


def load_export(path: str | Path) -> list[dict]:
    """Tasks of a Label Studio JSON export file."""
    try:
        content = json.loads(Path(path).read_text())
    except OSError as exc:
        raise LabelStudioError(f"cannot read Label Studio export {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise LabelStudioError(f"{path} is not JSON: {exc}") from None
    return check_tasks(content, str(path))


def check_tasks(content: Any, source: str) -> list[dict]:
    if isinstance(content, dict) and isinstance(content.get("tasks"), list):
        content = content["tasks"]
    if not isinstance(content, list) or not all(isinstance(t, dict) for t in content):
        raise LabelStudioError(f"{source} is not a Label Studio JSON export (expected a list of tasks)")
    return content


def fetch_tasks(url: str, api_key: str, project: int | str, timeout: float = 120.0) -> list[dict]:
    """A project's tasks through the API: the JSON export endpoint, else the paginated tasks API."""
    if not url or not api_key:
        raise LabelStudioError(
            "reading a Label Studio project needs its URL and an API key "
            "(--ls-url/LABEL_STUDIO_URL, --ls-api-key/LABEL_STUDIO_API_KEY)"
        )
    auth = LabelStudioAuth(url, api_key, timeout=timeout)
    base = auth.base_url
    response = _get(auth, f"{base}/api/projects/{project}/export?exportType=JSON&download_all_tasks=false", timeout)
    if response.status_code == 200:
        return check_tasks(response.json(), f"project {project} export")
    if response.status_code not in (404, 405):
        raise _http_error(response, project)
    # older/locked-down servers: the tasks API, a page at a time
    return list(LabelStudioAPI(url, api_key, timeout=timeout, auth=auth).tasks(project))


def _get(auth: LabelStudioAuth, url: str, timeout: float) -> requests.Response:
    try:
        return auth.get(url, timeout=timeout)
    except PermissionError as exc:
        raise LabelStudioError(str(exc)) from None
    except requests.RequestException as exc:
        raise LabelStudioError(
            f"cannot reach Label Studio at {auth.base_url}: {exc.__class__.__name__}", transient=True
        ) from None


def _http_error(response, project, what: str | None = None) -> LabelStudioError:
    hint = {401: " (check the API key)", 403: " (check the API key)"}
    if project is not None:
        hint[404] = f" (is {project} a project id?)"
    status = response.status_code
    return LabelStudioError(
        f"Label Studio answered {status} for {what or f'project {project}'}{hint.get(status, '')}",
        status,
        status in TRANSIENT_STATUS,
    )


class LabelStudioAPI:
    """The REST calls of a batch job, rate-limited and with retries on reads.

    Args:
        url, api_key: LABEL_STUDIO_URL and a personal access token or legacy token.
        timeout: seconds per call.
        rate: shared by every call (None: no limit).
        retries: further tries of a read after a transient failure, ``backoff_s`` doubling in between.
        auth: an authenticated session to use (built from ``url``/``api_key`` by default).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout: float = 60.0,
        rate: RateLimit | None = None,
        retries: int = 3,
        backoff_s: float = 1.0,
        auth: LabelStudioAuth | None = None,
    ) -> None:
        if not url or not api_key:
            raise LabelStudioError(
                "Label Studio's API needs its URL and an API key "
                "(--ls-url/LABEL_STUDIO_URL, --ls-api-key/LABEL_STUDIO_API_KEY)"
            )
        self.auth = auth or LabelStudioAuth(url, api_key, timeout=timeout)
        self.base = self.auth.base_url
        self.timeout = timeout
        self.rate = rate or RateLimit(None)
        self.retries = retries
        self.backoff_s = backoff_s
        self.calls = 0

    def project(self, project: int | str) -> dict:
        """The project (``title``, ``label_config``, ...)."""
        body = self._read(f"/api/projects/{project}", f"project {project}")
        if not isinstance(body, dict) or not isinstance(body.get("label_config"), str):
            raise LabelStudioError(f"project {project}: Label Studio's answer holds no label_config")
        return body

    def tasks(self, project: int | str, ids: Iterable[int] | None = None, page_size: int = PAGE_SIZE) -> Iterator[dict]:
        """The project's tasks (or those of ``ids`` among them) with their annotations and predictions, a page at
        a time, as the API stores them (image URLs unresolved, as ``/predict`` gets them)."""
        params: dict[str, Any] = {"project": project, "fields": "all", "resolve_uri": "false"}
        if ids is None:
            yield from self._pages(params, page_size, f"project {project} tasks")
            return
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), IDS_PER_QUERY):
            chunk = wanted[start : start + IDS_PER_QUERY]
            query = json.dumps({"selectedItems": {"all": False, "included": chunk}})
            yield from self._pages({**params, "query": query}, len(chunk), f"project {project} tasks {chunk[0]}..")

    def _pages(self, params: dict, page_size: int, what: str) -> Iterator[dict]:
        seen, page = 0, 1
        while True:
            body = self._read("/api/tasks", f"{what} page {page}", {**params, "page": page, "page_size": page_size})
            if body is None:  # a page past the end: 404 "Invalid page"
                return
            batch = body.get("tasks", []) if isinstance(body, dict) else body
            tasks = check_tasks(batch, f"{what} page {page}")
            yield from tasks
            seen += len(tasks)
            total = int(body.get("total", seen)) if isinstance(body, dict) else seen
            if not tasks or seen >= total:
                return
            page += 1

    def task_predictions(self, task: int) -> list[dict]:
        """Every prediction of one task (read fresh, not from a listing)."""
        body = self._read("/api/predictions/", f"task {task} predictions", {"task": task})
        found = body.get("results", []) if isinstance(body, dict) else body
        if not isinstance(found, list):
            raise LabelStudioError(f"task {task} predictions: Label Studio's answer is not a list")
        return [p for p in found if isinstance(p, dict) and p.get("task") in (None, task)]

    def create_prediction(self, task: int, result: list[dict], score: float | None, model_version: str) -> dict:
        """``POST /api/predictions/``: a new prediction of ``task`` (never an annotation); returns it with its id.
        Not retried here: a POST whose answer was lost may have been stored, so the caller checks the task's
        predictions before it tries again."""
        body = {"task": task, "result": result, "score": score, "model_version": model_version}
        response = self._call("POST", f"{self.base}/api/predictions/", json=body)
        if response.status_code not in (200, 201):
            raise _http_error(response, None, f"the new prediction of task {task}: {_detail(response)}")
        created = response.json()
        if not isinstance(created, dict) or "id" not in created:
            raise LabelStudioError(f"task {task}: Label Studio's answer to the new prediction has no id")
        return created

    def _read(self, path: str, what: str, params: dict | None = None) -> Any:
        """GET ``path`` as JSON, retried on transient failures; None for a 404 past the first page."""
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                response = self._call("GET", self.base + path, params=params)
                if response.status_code == 404 and (params or {}).get("page", 1) > 1:
                    return None
                if response.status_code != 200:
                    raise _http_error(response, None, what)
                return response.json()
            except LabelStudioError as exc:
                if not exc.transient or attempt == self.retries:
                    raise
                logger.warning("Label Studio call failed, retrying", extra={"call": what, "error": str(exc)})
                time.sleep(delay)
                delay *= 2
            except ValueError:
                raise LabelStudioError(f"{what}: Label Studio's answer is not JSON") from None
        raise AssertionError("unreachable")

    def _call(self, method: str, url: str, **kwargs) -> requests.Response:
        self.rate.wait()
        self.calls += 1
        try:
            return self.auth.request(method, url, timeout=self.timeout, **kwargs)
        except PermissionError as exc:
            raise LabelStudioError(str(exc), 401) from None
        except requests.RequestException as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.base}: {exc.__class__.__name__}", transient=True
            ) from None


def _detail(response: requests.Response) -> str:
    """The start of an error answer's body (Label Studio's validation message), on one line."""
    return " ".join(response.text[:300].split()) or "no detail"
