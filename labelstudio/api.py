"""A Label Studio project's tasks: an exported JSON file, or the project read through the API.

Through the API the JSON export endpoint is tried first (one request), then the paginated tasks API for servers
where exporting is not allowed. Personal access tokens and legacy tokens both work (:mod:`labelstudio.auth`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from .auth import LabelStudioAuth


class LabelStudioError(RuntimeError):
    """Label Studio cannot be read (bad URL, key, project id) or the export is not Label Studio JSON."""


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
    tasks, page = [], 1
    while True:  # older/locked-down servers: the tasks API, 100 at a time
        response = _get(auth, f"{base}/api/tasks?project={project}&fields=all&page={page}&page_size=100", timeout)
        if response.status_code == 404 and page > 1:
            break
        if response.status_code != 200:
            raise _http_error(response, project)
        body = response.json()
        batch = body.get("tasks", []) if isinstance(body, dict) else body
        tasks += check_tasks(batch, f"project {project} tasks page {page}")
        if not batch or (isinstance(body, dict) and len(tasks) >= int(body.get("total", len(tasks)))):
            break
        page += 1
    return tasks


def _get(auth: LabelStudioAuth, url: str, timeout: float) -> requests.Response:
    try:
        return auth.get(url, timeout=timeout)
    except PermissionError as exc:
        raise LabelStudioError(str(exc)) from None
    except requests.RequestException as exc:
        raise LabelStudioError(f"cannot reach Label Studio at {auth.base_url}: {exc.__class__.__name__}") from None


def _http_error(response, project) -> LabelStudioError:
    hint = {401: " (check the API key)", 403: " (check the API key)", 404: f" (is {project} a project id?)"}
    return LabelStudioError(
        f"Label Studio answered {response.status_code} for project {project}{hint.get(response.status_code, '')}"
    )
